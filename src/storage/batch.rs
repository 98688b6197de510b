//! Kafka v2 record batches, validated in place and never re-encoded.
//!
//! Byte layout of the 61-byte batch header (big-endian), as on the wire and on disk:
//!
//! ```text
//! 0  baseOffset i64        | 8  batchLength i32 (bytes after this field) | 12 partitionLeaderEpoch i32
//! 16 magic i8 (= 2)        | 17 crc u32 (CRC-32C of bytes 21..end)       | 21 attributes i16
//! 23 lastOffsetDelta i32   | 27 baseTimestamp i64 | 35 maxTimestamp i64  | 43 producerId i64
//! 51 producerEpoch i16     | 53 baseSequence i32  | 57 recordsCount i32  | 61 records...
//! ```
//!
//! The CRC does not cover `baseOffset` (nor `batchLength` and the leader epoch), so the broker
//! assigns offsets by patching those 8 bytes and stores the batch exactly as produced, compressed or not.

mod records;

pub use self::records::{encode_records, put_varint, record_spans, records_in, NewRecord, ReadRecord};
use crate::protocol::compression::Codec;
use std::borrow::Cow;
use zerocopy::byteorder::{BigEndian, I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Bytes of a v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD_BYTES: usize = 12;
const CRC_START: usize = 21;

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64<BigEndian>,
    pub batch_length: I32<BigEndian>,
    pub partition_leader_epoch: I32<BigEndian>,
    pub magic: u8,
    pub crc: U32<BigEndian>,
    pub attributes: I16<BigEndian>,
    pub last_offset_delta: I32<BigEndian>,
    pub base_timestamp: I64<BigEndian>,
    pub max_timestamp: I64<BigEndian>,
    pub producer_id: I64<BigEndian>,
    pub producer_epoch: I16<BigEndian>,
    pub base_sequence: I32<BigEndian>,
    pub records_count: I32<BigEndian>,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_BYTES);

/// Why a batch was refused. The broker maps `Crc`, `Truncated`, `Length` and `Inflate` to CORRUPT_MESSAGE,
/// `Codec` to UNSUPPORTED_COMPRESSION_TYPE and the rest to INVALID_RECORD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("batch length {0} out of range")]
    Length(i64),
    #[error("unsupported magic {0} (only v2 record batches)")]
    Magic(u8),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    Counts { count: i32, last_offset_delta: i32 },
    #[error("compression codec {0} is not one Kafka defines")]
    Codec(i16),
    #[error("records do not match their batch: {0}")]
    Records(&'static str),
    #[error("compressed records do not inflate")]
    Inflate,
}

impl BatchError {
    /// True for damage to the bytes themselves, as opposed to well-formed but unacceptable content.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Truncated { .. } | Self::Length(_) | Self::Crc { .. } | Self::Inflate)
    }
}

/// What the log needs to know of one valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Total bytes of the batch, header included.
    pub bytes: usize,
    pub base_offset: i64,
    /// Offsets the batch spans: lastOffsetDelta + 1.
    pub offset_count: u32,
    pub max_timestamp: i64,
    pub records_count: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub attributes: i16,
    /// `partitionLeaderEpoch`: the epoch of the leader that appended it (−1 from a producer).
    pub leader_epoch: i32,
}

impl BatchInfo {
    /// Part of a transaction (data or its commit/abort marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch: a transaction's commit or abort marker (`storage::control`).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Reads the header at the start of `bytes` without copying.
pub fn header(bytes: &[u8]) -> Result<&BatchHeader, BatchError> {
    BatchHeader::ref_from_prefix(bytes).map(|(h, _)| h).map_err(|_| BatchError::Truncated { have: bytes.len(), need: HEADER_BYTES })
}

/// Total size of the batch starting at `bytes`, from its header alone (no CRC check).
pub fn framed_len(bytes: &[u8]) -> Result<usize, BatchError> {
    let h = header(bytes)?;
    let length = i64::from(h.batch_length.get());
    if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 || length > i64::from(i32::MAX) {
        return Err(BatchError::Length(length));
    }
    Ok(LOG_OVERHEAD_BYTES + length as usize)
}

/// Validates a producer's batch at the start of `bytes` (which may hold more after it): its frame
/// (`validate_frame`) and its records (`records::check`), inflated first when compressed, as
/// Kafka's LogValidator does: a record a consumer cannot read stops it at that offset for good
/// (librdkafka stalls there without an error). Never panics, whatever the input.
pub fn validate(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let info = validate_frame(bytes)?;
    // A control batch's one record is the broker's to write (a producer's is refused as such).
    if !info.is_control() {
        let (_, body) = records_section(&bytes[..info.bytes])?;
        records::check(&body, info.records_count).map_err(BatchError::Records)?;
    }
    Ok(info)
}

/// The codec of a whole batch and its records section, inflated when compressed.
pub fn records_section(batch: &[u8]) -> Result<(Codec, Cow<'_, [u8]>), BatchError> {
    let h = header(batch)?;
    let end = framed_len(batch)?.min(batch.len());
    let codec = Codec::from_attributes(h.attributes.get()).ok_or(BatchError::Codec(h.attributes.get() & ATTR_CODEC_MASK))?;
    let stored = &batch[HEADER_BYTES..end];
    let body =
        if codec == Codec::None { Cow::Borrowed(stored) } else { Cow::Owned(codec.decompress(stored).map_err(|_| BatchError::Inflate)?) };
    Ok((codec, body))
}

/// A producer's batch checked short of its records: lengths, magic, CRC, dense counts (a record
/// at every offset it spans) and a codec Kafka defines. For a batch `validate` will see again.
pub fn validate_frame(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let info = validate_stored(bytes)?;
    // Producers write dense batches; a gap or an empty batch would break offset contiguity.
    if info.records_count <= 0 || info.offset_count as i64 != i64::from(info.records_count) {
        return Err(BatchError::Counts { count: info.records_count, last_offset_delta: info.offset_count as i32 - 1 });
    }
    if Codec::from_attributes(info.attributes).is_none() {
        return Err(BatchError::Codec(info.attributes & ATTR_CODEC_MASK));
    }
    Ok(info)
}

/// `validate` for a batch as the log may hold it: compaction may have removed records from it (its
/// offsets keep their span), all of them even.
pub fn validate_stored(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let len = framed_len(bytes)?;
    if bytes.len() < len {
        return Err(BatchError::Truncated { have: bytes.len(), need: len });
    }
    let info = header_info(bytes)?;
    let computed = crc32c(&bytes[CRC_START..len]);
    let stored = header(bytes)?.crc.get();
    if computed != stored {
        return Err(BatchError::Crc { stored, computed });
    }
    Ok(info)
}

/// What the header at the start of `bytes` says of its batch, checked for sense (length, magic,
/// counts: at most one record per offset it spans) but not against the batch's bytes: for walking
/// batches already validated once.
pub fn header_info(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let len = framed_len(bytes)?;
    let h = header(bytes)?;
    if h.magic != 2 {
        return Err(BatchError::Magic(h.magic));
    }
    let count = h.records_count.get();
    let last_offset_delta = h.last_offset_delta.get();
    if count < 0 || last_offset_delta < 0 || count > last_offset_delta.saturating_add(1) {
        return Err(BatchError::Counts { count, last_offset_delta });
    }
    Ok(BatchInfo {
        bytes: len,
        base_offset: h.base_offset.get(),
        offset_count: last_offset_delta as u32 + 1,
        max_timestamp: h.max_timestamp.get(),
        records_count: count,
        producer_id: h.producer_id.get(),
        producer_epoch: h.producer_epoch.get(),
        base_sequence: h.base_sequence.get(),
        attributes: h.attributes.get(),
        leader_epoch: h.partition_leader_epoch.get(),
    })
}

/// Splits a produce request's record set into validated batches, in order.
pub fn split(bytes: &[u8]) -> Result<Vec<(usize, BatchInfo)>, BatchError> {
    split_with(bytes, validate)
}

/// Splits batches as the log holds them (`validate_stored`: compaction may have left fewer records
/// than offsets), with their positions.
pub fn split_stored(bytes: &[u8]) -> Result<Vec<(usize, BatchInfo)>, BatchError> {
    split_with(bytes, validate_stored)
}

fn split_with(mut bytes: &[u8], check: fn(&[u8]) -> Result<BatchInfo, BatchError>) -> Result<Vec<(usize, BatchInfo)>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0;
    while !bytes.is_empty() {
        let info = check(bytes)?;
        out.push((at, info));
        at += info.bytes;
        bytes = &bytes[info.bytes..];
    }
    Ok(out)
}

/// The base offset of the batch `bytes` begin with, if they hold its first 8 bytes.
pub fn base_offset(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Writes the assigned base offset into the batch header (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Bytes of a batch's header up to and including `partitionLeaderEpoch` (outside the CRC).
pub const LEADER_EPOCH_END: usize = 16;

/// Stamps the epoch of the leader appending the batch (the CRC does not cover it).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..LEADER_EPOCH_END].copy_from_slice(&epoch.to_be_bytes());
}

/// Makes the batch producer `producer_id`'s at `epoch` from sequence `base_sequence` (a
/// transactional one's if `transactional`), and its CRC right again.
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32, transactional: bool) {
    assert!(batch.len() >= HEADER_BYTES);
    if transactional {
        let attributes = i16::from_be_bytes([batch[21], batch[22]]) | ATTR_TRANSACTIONAL;
        batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    }
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    set_crc(batch);
}

/// Batch attribute bits: the codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), and "every record's
/// timestamp is the log's append time" (`message.timestamp.type=LogAppendTime`).
pub const ATTR_CODEC_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// The batch belongs to a transaction; a control batch is a transaction marker.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// Compression codec from a batch's attributes.
pub fn compression(bytes: &[u8]) -> Result<u8, BatchError> {
    Ok((header(bytes)?.attributes.get() & ATTR_CODEC_MASK) as u8)
}

/// Encodes an uncompressed v2 batch (base offset 0, no producer id) holding `records`, all with
/// timestamp `timestamp_ms`.
pub fn encode(records: &[NewRecord<'_>], timestamp_ms: i64) -> Vec<u8> {
    frame(&encode_records(records), records.len() as i32, timestamp_ms, 0)
}

/// Wraps a records section (compressed per `attributes`' codec bits, or not) into a v2 batch.
pub fn frame(body: &[u8], count: i32, timestamp_ms: i64, attributes: i16) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(body);
    set_crc(&mut b);
    b
}

/// CRC-32C (Castagnoli), Kafka's batch checksum. `crc-fast` folds with VPCLMULQDQ where the CPU has
/// it: 66 GB/s vs 32 GB/s for the `crc32c` crate on 1 MiB here, and on the append path (validating
/// 1 MiB batches from memory) its share of CPU fell from 20% to 11%.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Recomputes the CRC of a batch whose bytes after the CRC field were changed in place.
pub fn set_crc(batch: &mut [u8]) {
    let crc = crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Builds a valid uncompressed batch of `count` records of `value_bytes` each (tests, benchmarks).
pub fn build(count: i32, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    let records: Vec<NewRecord<'_>> = (0..count).map(|_| NewRecord { key: None, value: Some(&value), headers: &[] }).collect();
    encode(&records, timestamp_ms)
}

/// The records of one validated, uncompressed batch (`None` if compressed or malformed).
pub fn records(batch: &[u8]) -> Option<Vec<ReadRecord<'_>>> {
    let h = header(batch).ok()?;
    if h.attributes.get() & ATTR_CODEC_MASK != 0 {
        return None;
    }
    let end = framed_len(batch).ok()?.min(batch.len());
    records_in(&batch[HEADER_BYTES..end], h.base_offset.get(), h.base_timestamp.get(), h.records_count.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_producers_records_are_read_through_whatever_the_codec() {
        let record = || NewRecord { key: Some(b"k"), value: Some(b"v"), headers: &[("h", b"x")] };
        let good = encode_records(&[record(), record(), record()]);
        let mut wrong = good.clone();
        wrong[3] = 5 << 1; // the first record's offset delta
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let batch = |body: &[u8], count| frame(&codec.compress(body), count, 1, codec as i16);
            assert!(validate(&batch(&good, 3)).is_ok(), "{codec:?}");
            assert_eq!(validate(&batch(&good, 2)), Err(BatchError::Records("bytes past the last record")), "{codec:?}");
            assert_eq!(validate(&batch(&wrong, 3)), Err(BatchError::Records("offset deltas not 0, 1, 2…")), "{codec:?}");
            assert_eq!(validate(&batch(&[7; 40], 1)), Err(BatchError::Records("a record's length")), "{codec:?}");
            // The frame alone is sound: what the checks of a batch to be rewritten see.
            assert!(validate_frame(&batch(&wrong, 3)).is_ok(), "{codec:?}");
            if codec != Codec::None {
                let damaged = frame(&[0xff; 40], 3, 1, codec as i16);
                assert_eq!(validate(&damaged), Err(BatchError::Inflate), "{codec:?}");
                assert!(BatchError::Inflate.is_corruption());
            }
        }
        assert_eq!(validate(&frame(&good, 3, 1, 7)), Err(BatchError::Codec(7)));
    }

    #[test]
    fn valid_batch_round_trips() {
        let b = build(3, 10, 1000);
        let info = validate(&b).unwrap();
        assert_eq!(info.bytes, b.len());
        assert_eq!(info.offset_count, 3);
        assert_eq!(info.max_timestamp, 1000);
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C, and the empty input.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn patching_offset_keeps_crc() {
        let mut b = build(2, 5, 1);
        set_base_offset(&mut b, 42);
        assert_eq!(validate(&b).unwrap().base_offset, 42);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let b = build(2, 5, 1);
        assert!(matches!(validate(&b[..30]), Err(BatchError::Truncated { .. })));
        assert!(matches!(validate(&b[..b.len() - 1]), Err(BatchError::Truncated { .. })));
        let mut bad = b.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(validate(&bad), Err(BatchError::Crc { .. })));
        let mut bad = b.clone();
        bad[16] = 1;
        assert!(matches!(validate(&bad), Err(BatchError::Magic(1))));
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(validate(&bad), Err(BatchError::Truncated { .. })));
        let mut bad = b;
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(validate(&bad), Err(BatchError::Length(-5))));
        assert!(matches!(validate(&[0u8; 61]), Err(BatchError::Length(0))));
    }

    #[test]
    fn split_finds_every_batch() {
        let mut set = build(2, 5, 1);
        set.extend(build(4, 7, 2));
        let parts = split(&set).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].1.offset_count, 4);
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            NewRecord { key: Some(b"k"), value: Some(b"v1"), headers: &[("h", b"x")] },
            NewRecord { key: None, value: None, headers: &[] },
        ];
        let mut b = encode(&recs, 77);
        set_base_offset(&mut b, 10);
        validate(&b).unwrap();
        let back = records(&b).unwrap();
        assert_eq!(
            back,
            vec![
                ReadRecord { offset: 10, timestamp_ms: 77, key: Some(b"k"), value: Some(b"v1") },
                ReadRecord { offset: 11, timestamp_ms: 77, key: None, value: None }
            ]
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes);
            let _ = records(&bytes);
            let _ = split(&bytes);
        }
    }
}
