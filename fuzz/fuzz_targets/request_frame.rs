//! Frames and request headers from arbitrary bytes: errors, never panics, and no frame over the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::protocol::{self, frame::FrameReader};

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new(LIMIT);
    let mut src = futures_lite::io::Cursor::new(data.to_vec());
    futures_lite::future::block_on(async {
        while let Ok(Some(frame)) = reader.next(&mut src).await {
            assert!(frame.len() <= LIMIT);
            let _ = protocol::decode_header(frame);
        }
    });
    let _ = protocol::decode_header(bytes::Bytes::copy_from_slice(data));
});
