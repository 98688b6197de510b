//! Batches rewritten on the way in, as their topic's configs ask: recompressed into
//! `compression.type`, stamped with the broker's clock for `message.timestamp.type=LogAppendTime`,
//! and refused when a record's CreateTime is further from the clock than `message.timestamp.*.max.ms`,
//! or a producer marked its batch LogAppendTime (`check_timestamps`), or
//! when a record without a key is sent to a compacted topic (`keyless_records`).
//!
//! Off by default (`compression.type=producer`, CreateTime, unbounded): then nothing here copies or
//! inflates anything, and batches reach the log as produced. A rewrite checks the batch's frame
//! first (a new CRC must never bless damaged bytes; the log checks the records it is given), keeps
//! every header field but the length, the codec and timestamp-type bits, the max timestamp and the
//! CRC, and costs one copy of the batch.

use super::config::ProduceRules;
use super::errors;
use super::produce::batch_error_code;
use crate::protocol::compression::Codec;
use crate::storage::batch::{self, ATTR_CODEC_MASK, ATTR_LOG_APPEND_TIME, HEADER_BYTES, LOG_OVERHEAD_BYTES};
use bytes::Bytes;

/// Byte positions in the batch header.
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

/// The records as they must be stored, or `None` if they stay as produced. `Err` is the Kafka error
/// for the partition.
pub fn apply(records: &Bytes, rules: &ProduceRules, now_ms: i64) -> Result<Option<Bytes>, i16> {
    check_timestamps(records, rules, now_ms)?;
    if rules.recompress.is_none() && !rules.log_append_time {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    let mut rest = &records[..];
    while !rest.is_empty() {
        let info = batch::validate_frame(rest).map_err(batch_error_code)?;
        rewrite_one(&rest[..info.bytes], rules, now_ms, &mut out)?;
        rest = &rest[info.bytes..];
    }
    Ok(Some(Bytes::from(out)))
}

/// The records without a key in `records`, by batch: (index of the batch, index of the record in
/// it). A compacted topic refuses them (Kafka's INVALID_RECORD with per-record errors). `Err` is the
/// Kafka error when the batches themselves are unsound.
pub fn keyless_records(records: &[u8]) -> Result<Vec<(usize, i32)>, i16> {
    let mut out = Vec::new();
    let mut rest = records;
    let mut batch_no = 0;
    while !rest.is_empty() {
        let info = batch::validate_frame(rest).map_err(batch_error_code)?;
        let one = &rest[..info.bytes];
        if !info.is_control() {
            let (_, body) = batch::records_section(one).map_err(|_| errors::CORRUPT_MESSAGE)?;
            let h = batch::header(one).map_err(|_| errors::CORRUPT_MESSAGE)?;
            let parsed =
                batch::records_in(&body, info.base_offset, h.base_timestamp.get(), info.records_count).ok_or(errors::CORRUPT_MESSAGE)?;
            out.extend(parsed.iter().enumerate().filter(|(_, r)| r.key.is_none()).map(|(i, _)| (batch_no, i as i32)));
        }
        rest = &rest[info.bytes..];
        batch_no += 1;
    }
    Ok(out)
}

/// Kafka's timestamp checks (LogValidator), record by record: on a CreateTime topic a record with a
/// timestamp (not −1) must be within `message.timestamp.before/after.max.ms` of the clock, and a
/// record without one may not come in a batch marked LogAppendTime; on a LogAppendTime topic no
/// batch may come marked so ("Producer should not set timestamp type to LogAppendTime"). Records
/// are read (inflated if compressed) only for a bounded topic or a batch marked LogAppendTime, and
/// the rest walks headers only: the log checks each batch's CRC once, when it appends it.
fn check_timestamps(mut rest: &[u8], rules: &ProduceRules, now_ms: i64) -> Result<(), i16> {
    let bounded = rules.timestamp_before_max_ms != i64::MAX || rules.timestamp_after_max_ms != i64::MAX;
    let (low, high) = (now_ms.saturating_sub(rules.timestamp_before_max_ms), now_ms.saturating_add(rules.timestamp_after_max_ms));
    while let (Ok(h), Ok(len)) = (batch::header(rest), batch::framed_len(rest)) {
        let one = &rest[..len.min(rest.len())];
        rest = &rest[one.len()..];
        let marked = h.attributes.get() & ATTR_LOG_APPEND_TIME != 0;
        if rules.log_append_time {
            if marked {
                return Err(errors::INVALID_TIMESTAMP);
            }
            continue;
        }
        if !bounded && !marked {
            continue;
        }
        let (_, body) = batch::records_section(one).map_err(|_| errors::CORRUPT_MESSAGE)?;
        let records =
            batch::records_in(&body, h.base_offset.get(), h.base_timestamp.get(), h.records_count.get()).ok_or(errors::CORRUPT_MESSAGE)?;
        let wrong = |ts: i64| if ts == -1 { marked } else { ts < low || ts > high };
        if records.iter().any(|r| wrong(r.timestamp_ms)) {
            return Err(errors::INVALID_TIMESTAMP);
        }
    }
    Ok(())
}

fn rewrite_one(stored: &[u8], rules: &ProduceRules, now_ms: i64, out: &mut Vec<u8>) -> Result<(), i16> {
    let h = batch::header(stored).map_err(|_| errors::CORRUPT_MESSAGE)?;
    let attributes = h.attributes.get();
    let codec = Codec::from_attributes(attributes).ok_or(errors::UNSUPPORTED_COMPRESSION_TYPE)?;
    let target = rules.recompress.unwrap_or(codec);
    let start = out.len();
    out.extend_from_slice(&stored[..HEADER_BYTES]);
    if target == codec {
        out.extend_from_slice(&stored[HEADER_BYTES..]);
    } else {
        let body = codec.decompress(&stored[HEADER_BYTES..]).map_err(|_| errors::CORRUPT_MESSAGE)?;
        out.extend_from_slice(&target.compress_level(&body, rules.gzip_level));
    }
    let b = &mut out[start..];
    let length = i32::try_from(b.len() - LOG_OVERHEAD_BYTES).map_err(|_| errors::MESSAGE_TOO_LARGE)?;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let mut attributes = (attributes & !ATTR_CODEC_MASK) | target as i16;
    if rules.log_append_time {
        attributes |= ATTR_LOG_APPEND_TIME;
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    }
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch::set_crc(b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ProduceRules {
        ProduceRules::default()
    }

    #[test]
    fn records_without_keys_are_found_in_every_codec() {
        let (k, v) = (b"k".to_vec(), b"v".to_vec());
        let records = [
            batch::NewRecord { key: Some(&k), value: Some(&v), headers: &[] },
            batch::NewRecord { key: None, value: Some(&v), headers: &[] },
            batch::NewRecord { key: Some(&k), value: None, headers: &[] },
        ];
        let mut two = Vec::new();
        for codec in [Codec::None, Codec::Lz4] {
            two.extend(batch::frame(&codec.compress(&batch::encode_records(&records)), 3, 1_000, codec as i16));
        }
        assert_eq!(keyless_records(&two), Ok(vec![(0, 1), (1, 1)]));
        assert_eq!(keyless_records(&two[..two.len() - 1]), Err(errors::CORRUPT_MESSAGE));
    }

    #[test]
    fn nothing_happens_by_default() {
        let b = Bytes::from(batch::build(10, 50, 1_000));
        assert_eq!(apply(&b, &rules(), 5_000), Ok(None));
    }

    #[test]
    fn recompresses_into_the_topics_codec_keeping_the_records() {
        let plain = batch::build(10, 50, 1_000);
        let records = batch::records(&plain).unwrap();
        let mut two = plain.clone();
        two.extend_from_slice(&plain);
        for target in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let r = ProduceRules { recompress: Some(target), ..rules() };
            let out = apply(&Bytes::from(two.clone()), &r, 5_000).unwrap().unwrap();
            let first = batch::validate(&out).unwrap();
            let h = batch::header(&out).unwrap();
            assert_eq!(h.attributes.get() & ATTR_CODEC_MASK, target as i16);
            let body = target.decompress(&out[HEADER_BYTES..first.bytes]).unwrap();
            let again = batch::records_in(&body, h.base_offset.get(), h.base_timestamp.get(), h.records_count.get()).unwrap();
            assert_eq!(again, records, "{target:?}");
            assert!(batch::validate(&out[first.bytes..]).is_ok(), "the second batch too");
            // And back to none.
            let back = apply(&out.clone(), &ProduceRules { recompress: Some(Codec::None), ..rules() }, 5_000).unwrap().unwrap();
            assert_eq!(&back[..plain.len()], &plain[..]);
        }
    }

    #[test]
    fn log_append_time_stamps_the_batch() {
        let b = Bytes::from(batch::build(3, 10, 1_000));
        let out = apply(&b, &ProduceRules { log_append_time: true, ..rules() }, 77_000).unwrap().unwrap();
        let info = batch::validate(&out).unwrap();
        assert_eq!(info.max_timestamp, 77_000);
        assert_ne!(batch::header(&out).unwrap().attributes.get() & ATTR_LOG_APPEND_TIME, 0);
    }

    #[test]
    fn damaged_batches_are_not_blessed_with_a_new_crc() {
        let mut b = batch::build(3, 10, 1_000);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let r = ProduceRules { recompress: Some(Codec::Gzip), ..rules() };
        assert_eq!(apply(&Bytes::from(b), &r, 5_000), Err(errors::CORRUPT_MESSAGE));
    }

    #[test]
    fn create_times_too_far_from_the_clock_are_refused() {
        let b = Bytes::from(batch::build(3, 10, 1_000));
        let r = ProduceRules { timestamp_before_max_ms: 60_000, ..rules() };
        assert_eq!(apply(&b, &r, 1_000_000), Err(errors::INVALID_TIMESTAMP));
        assert_eq!(apply(&b, &r, 30_000), Ok(None));
        let r = ProduceRules { timestamp_after_max_ms: 10, ..rules() };
        assert_eq!(apply(&b, &r, 500), Err(errors::INVALID_TIMESTAMP));
    }

    #[test]
    fn every_record_is_judged_not_the_batch_header() {
        // Header timestamps (base and max) say 1 000 000; the second record is an hour older.
        let record = |offset_delta: i64, timestamp_delta: i64| {
            let mut body = vec![0u8];
            batch::put_varint(&mut body, timestamp_delta);
            batch::put_varint(&mut body, offset_delta);
            for field in [b"k", b"v"] {
                batch::put_varint(&mut body, 1);
                body.extend_from_slice(field);
            }
            batch::put_varint(&mut body, 0);
            let mut r = Vec::new();
            batch::put_varint(&mut r, body.len() as i64);
            r.extend_from_slice(&body);
            r
        };
        let b = batch::frame(&[record(0, 0), record(1, -3_600_000)].concat(), 2, 1_000_000, 0);
        let rules = ProduceRules { timestamp_before_max_ms: 60_000, ..rules() };
        assert_eq!(apply(&Bytes::from(b), &rules, 1_000_000), Err(errors::INVALID_TIMESTAMP));
        // Without a timestamp (−1), a record is not judged by the bounds.
        let none = Bytes::from(batch::build(3, 10, -1));
        assert_eq!(apply(&none, &rules, 1_000_000), Ok(None));
    }

    #[test]
    fn a_producer_may_not_mark_its_batch_log_append_time() {
        let mut b = batch::build(3, 10, 1_000);
        let attributes = batch::header(&b).unwrap().attributes.get() | ATTR_LOG_APPEND_TIME;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        batch::set_crc(&mut b);
        let b = Bytes::from(b);
        assert_eq!(apply(&b, &ProduceRules { log_append_time: true, ..rules() }, 5_000), Err(errors::INVALID_TIMESTAMP));
        // On a CreateTime topic only a record without a timestamp is refused for it.
        assert_eq!(apply(&b, &rules(), 5_000), Ok(None));
    }
}
