//! One batch with some of its records: what the cleaner writes back in its place.

use crate::protocol::compression::Codec;
use crate::storage::batch::{self, ReadRecord, HEADER_BYTES};

#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record stays: the batch is copied as it is.
    Unchanged,
    /// No record stays.
    Emptied,
    /// The batch with only the records kept.
    Kept(Vec<u8>),
}

/// `batch` (whole and valid) with only the records `keep` accepts. Each kept record is byte for
/// byte what it was (its offset and timestamp deltas, key, value, headers), and the header keeps
/// its base offset, last offset delta (so the batch still ends where it did: its producer's
/// sequences stay right), both timestamps, producer fields and attributes, the records compressed
/// again with the batch's codec; record count, length and CRC are recomputed.
pub fn filter_batch(batch: &[u8], mut keep: impl FnMut(&ReadRecord<'_>) -> bool) -> Result<Filtered, String> {
    let h = batch::header(batch).map_err(|e| e.to_string())?;
    let (codec, body) = batch::records_section(batch).map_err(|e| e.to_string())?;
    let body = &body[..];
    let spans =
        batch::record_spans(body, h.base_offset.get(), h.base_timestamp.get(), h.records_count.get()).ok_or("records that do not parse")?;
    let kept: Vec<_> = spans.iter().filter(|(_, r)| keep(r)).map(|(span, _)| span.clone()).collect();
    if kept.len() == spans.len() {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Emptied);
    }
    let mut records = Vec::with_capacity(kept.iter().map(|s| s.len()).sum());
    for span in &kept {
        records.extend_from_slice(&body[span.clone()]);
    }
    let records = if codec == Codec::None { records } else { codec.compress(&records) };
    let mut out = Vec::with_capacity(HEADER_BYTES + records.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.extend_from_slice(&records);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    batch::set_crc(&mut out);
    Ok(Filtered::Kept(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::NewRecord;

    fn keyed(codec: Codec) -> Vec<u8> {
        let keys: Vec<Vec<u8>> = (0..6).map(|i| format!("k{}", i % 3).into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..6).map(|i| format!("value {i}").into_bytes()).collect();
        let records: Vec<NewRecord<'_>> =
            keys.iter().zip(&values).map(|(k, v)| NewRecord { key: Some(k), value: Some(v), headers: &[] }).collect();
        let body = batch::encode_records(&records);
        let mut b = batch::frame(&codec.compress(&body), 6, 5_000, codec as i16);
        batch::set_base_offset(&mut b, 100);
        batch::set_producer(&mut b, 9, 2, 40, false);
        b
    }

    #[test]
    fn kept_records_keep_their_offsets_timestamps_and_the_batch_its_end() {
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let b = keyed(codec);
            let Filtered::Kept(out) = filter_batch(&b, |r| r.offset >= 103).unwrap() else { panic!("{codec:?}: records kept") };
            let info = batch::validate_stored(&out).unwrap();
            assert_eq!((info.base_offset, info.offset_count, info.records_count), (100, 6, 3), "{codec:?}");
            assert_eq!((info.producer_id, info.producer_epoch, info.base_sequence), (9, 2, 40));
            assert_eq!(batch::compression(&out).unwrap(), codec as u8);
            let h = batch::header(&out).unwrap();
            let body = codec.decompress(&out[HEADER_BYTES..]).unwrap();
            let got = batch::records_in(&body, 100, h.base_timestamp.get(), 3).unwrap();
            let got: Vec<(i64, &[u8], &[u8])> = got.iter().map(|r| (r.offset, r.key.unwrap(), r.value.unwrap())).collect();
            assert_eq!(got, vec![(103, &b"k0"[..], &b"value 3"[..]), (104, b"k1", b"value 4"), (105, b"k2", b"value 5")]);
            assert_eq!(filter_batch(&b, |_| true).unwrap(), Filtered::Unchanged);
            assert_eq!(filter_batch(&b, |_| false).unwrap(), Filtered::Emptied);
        }
    }
}
