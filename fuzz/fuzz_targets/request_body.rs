//! Request bodies of every API and version from arbitrary bytes: the first four bytes choose the
//! API key and version, the rest is the body. Errors, never panics, and never a reservation made
//! from a claimed length: run with `-malloc_limit_mb`, so that one is a finding.
#![no_main]

use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;
use weir::protocol::legacy;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let body = &data[4..];
    if let Ok(api) = ApiKey::try_from(key) {
        let _ = RequestKind::decode(api, &mut bytes::Bytes::copy_from_slice(body), version);
    }
    // The versions Weir reads with its own code.
    let _ = legacy::offset_commit_request(body, version);
    let _ = legacy::list_offsets_v0_request(body);
});
