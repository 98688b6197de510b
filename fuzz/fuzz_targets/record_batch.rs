//! Record-batch parsing never panics, and what it accepts is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::storage::batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = batch::validate(data) {
        assert!(info.bytes <= data.len());
        assert!(info.bytes >= batch::HEADER_BYTES);
        assert_eq!(batch::framed_len(data).ok(), Some(info.bytes));
    }
    if let Ok(parts) = batch::split(data) {
        let total: usize = parts.iter().map(|(_, i)| i.bytes).sum();
        assert_eq!(total, data.len(), "split covers the whole record set");
    }
    let _ = batch::records(data);
});
