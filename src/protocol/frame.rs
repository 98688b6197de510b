//! Reading size-prefixed frames from a byte stream, with a bound on frame size.

use super::ProtocolError;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

/// Bytes read from the socket per call when more are needed.
const READ_CHUNK_BYTES: usize = 64 << 10;

pub struct FrameReader {
    /// Bytes `[0, filled)` came from the socket; the rest is zeroed room to read into. Keeping the
    /// room across reads means each byte is zeroed once, not once per read (a 100 MiB frame read in
    /// 64 KiB steps would otherwise zero gigabytes).
    buf: BytesMut,
    filled: usize,
    max_frame_bytes: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { buf: BytesMut::new(), filled: 0, max_frame_bytes }
    }

    /// The next frame's bytes (without the size prefix); `None` at a clean end of stream.
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            let mut need = 4;
            if self.filled >= 4 {
                let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if size < 0 || size as usize > self.max_frame_bytes {
                    return Err(ProtocolError::FrameTooLarge(i64::from(size)));
                }
                need = 4 + size as usize;
                if self.filled >= need {
                    let mut frame = self.buf.split_to(need);
                    self.filled -= need;
                    let _ = frame.split_to(4);
                    return Ok(Some(frame.freeze()));
                }
            }
            // Room for the rest of this frame, and at least a chunk so small frames batch up.
            let room = need.max(self.filled + READ_CHUNK_BYTES);
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            let n = stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return if self.filled == 0 { Ok(None) } else { Err(ProtocolError::Malformed("connection closed mid-frame".into())) };
            }
            self.filled += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| (p.len() as i32).to_be_bytes().into_iter().chain(p.iter().copied())).collect()
    }

    #[test]
    fn splits_frames_across_and_within_reads() {
        let big = vec![7u8; 300_000];
        let data = frames(&[b"abc", &big, b"", b"xyz"]);
        let mut reader = FrameReader::new(1 << 20);
        // A reader that returns at most 1000 bytes per call.
        let mut src = futures_lite::io::BufReader::with_capacity(1000, futures_lite::io::Cursor::new(data));
        let got: Vec<Bytes> = futures_lite::future::block_on(async {
            let mut out = Vec::new();
            while let Some(f) = reader.next(&mut src).await.unwrap() {
                out.push(f);
            }
            out
        });
        assert_eq!(got.len(), 4);
        assert_eq!(&got[0][..], b"abc");
        assert_eq!(got[1].len(), 300_000);
        assert!(got[2].is_empty());
        assert_eq!(&got[3][..], b"xyz");
    }

    #[test]
    fn oversized_and_negative_sizes_are_refused() {
        for size in [2_000_000i32, -1] {
            let mut reader = FrameReader::new(1 << 20);
            let mut src = futures_lite::io::Cursor::new(size.to_be_bytes().to_vec());
            let r = futures_lite::future::block_on(reader.next(&mut src));
            assert!(matches!(r, Err(ProtocolError::FrameTooLarge(_))));
        }
    }
}
