//! One cleaning pass over batches as the log holds them (Kafka's `Cleaner`): `index` puts each key's
//! latest offset into the map, as far as the map holds; `clean` then keeps, of every record below
//! that point, only the latest of its key, with its offset.
//!
//! Kafka's rules, as far as they are built: a record without a key goes (a compacted topic refuses
//! them, so they come from before its policy changed); a tombstone (a key without a value) stays as
//! the latest of its key until its batch is `delete.retention.ms` old, then goes; an aborted
//! transaction's records go; markers stay (a marker removed while its transaction's records stay
//! would reopen the transaction for recovery's walk); a batch left without records stays, empty, if it
//! is its producer's last in the pass (its sequences are what an idempotent retry is checked against).

use super::filter::{filter_batch, Filtered};
use super::offset_map::OffsetMap;
use crate::storage::batch::{self, BatchInfo, ReadRecord, ATTR_CODEC_MASK, HEADER_BYTES};
use std::collections::HashSet;

/// An aborted transaction's data in the log: its producer and offsets from its first batch to its
/// marker (the aborted-transactions index's entries).
#[derive(Debug, Clone, Copy)]
pub struct Aborted {
    pub producer_id: i64,
    pub first: u64,
    pub marker: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub records_in: u64,
    pub records_kept: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub markers_removed: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.batches += other.batches;
        self.records_in += other.records_in;
        self.records_kept += other.records_kept;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.markers_removed += other.markers_removed;
    }
}

/// One batch of `bytes` as the log holds it, with its header.
fn batches(bytes: &[u8]) -> impl Iterator<Item = Result<(&[u8], BatchInfo), String>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        Some(match batch::validate_stored(rest) {
            Ok(info) => {
                let (this, after) = rest.split_at(info.bytes);
                rest = after;
                Ok((this, info))
            }
            Err(e) => {
                rest = &[];
                Err(e.to_string())
            }
        })
    })
}

fn in_aborted(info: &BatchInfo, aborted: &[Aborted]) -> bool {
    let base = info.base_offset as u64;
    info.is_transactional() && aborted.iter().any(|a| a.producer_id == info.producer_id && a.first <= base && base <= a.marker)
}

/// The records of a batch, inflated.
fn with_records<T>(bytes: &[u8], info: &BatchInfo, f: impl FnOnce(&[ReadRecord<'_>]) -> T) -> Result<T, String> {
    let (_, body) = batch::records_section(bytes).map_err(|e| e.to_string())?;
    let h = batch::header(bytes).map_err(|e| e.to_string())?;
    let records =
        batch::records_in(&body, info.base_offset, h.base_timestamp.get(), info.records_count).ok_or("records that do not parse")?;
    Ok(f(&records))
}

/// Puts the keyed records of `bytes` (whole batches, in offset order) into `map`, skipping markers
/// and aborted transactions. Returns the base offset of the first batch whose keys no longer fit
/// (the map knows every key below it), or `None` if all did.
pub fn index(bytes: &[u8], map: &mut OffsetMap, aborted: &[Aborted]) -> Result<Option<u64>, String> {
    for item in batches(bytes) {
        let (b, info) = item?;
        if !info.is_control() && !in_aborted(&info, aborted) {
            let fitted = with_records(b, &info, |records| {
                let keyed: Vec<(&[u8], u64)> = records.iter().filter_map(|r| Some((r.key?, r.offset as u64))).collect();
                map.put_all(&keyed)
            })?;
            if !fitted {
                return Ok(Some(info.base_offset as u64));
            }
        }
    }
    Ok(None)
}

/// What stays of the batches a pass cleans.
pub struct Rules<'a> {
    pub map: &'a OffsetMap,
    /// Below this the map knows every key; from it on, every record stays.
    pub indexed_to: u64,
    pub aborted: &'a [Aborted],
    /// Tombstones and markers in batches older than this may go (`i64::MIN`: none).
    pub tombstones_before_ms: i64,
    /// Whether the batch at (producer id, base offset) is its producer's last.
    pub last_of_producer: &'a dyn Fn(i64, u64) -> bool,
}

/// The transactions a pass met, from the log start on. A marker goes only when the log holds no
/// batch of its transaction any more, from an earlier pass on: else recovery's walk of the log
/// would find the transaction open again, and the aborted-transactions index must lose the
/// marker's entry before the marker goes (`removed`; see `log::compact`).
#[derive(Debug, Default)]
pub struct Transactions {
    /// Producers with a data batch of their current transaction in what the pass read.
    with_data: HashSet<i64>,
    /// Offsets of the markers removed, for the caller to drop from the index.
    pub removed: Vec<u64>,
}

/// Appends to `out` the batches of `bytes` (whole, in offset order, following those of earlier
/// calls with the same `txns`) as cleaning leaves them: below `indexed_to` a keyed record stays if
/// it is the latest of its key in the map (or its key is not there), a tombstone only while its
/// batch is younger than the horizon; from `indexed_to` on, every record stays. A batch left
/// without records stays, empty, if it is its producer's last; a marker stays unless its batch is
/// older than the horizon and no batch of its transaction stayed.
pub fn clean(bytes: &[u8], rules: &Rules<'_>, txns: &mut Transactions, out: &mut Vec<u8>) -> Result<Stats, String> {
    let Rules { map, indexed_to, aborted, tombstones_before_ms, last_of_producer } = *rules;
    let start = out.len();
    let mut stats = Stats::default();
    for item in batches(bytes) {
        let (b, info) = item?;
        stats.batches += 1;
        stats.bytes_in += b.len() as u64;
        stats.records_in += info.records_count as u64;
        let base = info.base_offset as u64;
        let aborted_batch = in_aborted(&info, aborted);
        let keep = |r: &ReadRecord<'_>| {
            let offset = r.offset as u64;
            let Some(key) = r.key else { return false };
            if aborted_batch {
                return false;
            }
            if offset >= indexed_to {
                return true;
            }
            let latest = map.get(key).is_none_or(|l| offset >= l);
            latest && (r.value.is_some() || info.max_timestamp >= tombstones_before_ms)
        };
        let filtered = if info.is_control() {
            let had_data = txns.with_data.remove(&info.producer_id);
            if !had_data && info.max_timestamp < tombstones_before_ms {
                txns.removed.push(base);
                stats.markers_removed += 1;
                Filtered::Emptied
            } else {
                Filtered::Unchanged
            }
        } else {
            if info.is_transactional() {
                txns.with_data.insert(info.producer_id);
            }
            filter_batch(b, keep)?
        };
        let written = match filtered {
            Filtered::Unchanged => {
                out.extend_from_slice(b);
                info.records_count as u64
            }
            Filtered::Kept(kept) => {
                out.extend_from_slice(&kept);
                batch::header(&kept).map_err(|e| e.to_string())?.records_count.get() as u64
            }
            Filtered::Emptied if info.is_control() => 0,
            Filtered::Emptied if info.producer_id >= 0 && last_of_producer(info.producer_id, base) => {
                out.extend_from_slice(&emptied(b));
                0
            }
            Filtered::Emptied => 0,
        };
        stats.records_kept += written;
    }
    stats.bytes_out = (out.len() - start) as u64;
    Ok(stats)
}

/// `batch` without any record: its header, uncompressed (there is nothing to inflate).
fn emptied(batch: &[u8]) -> Vec<u8> {
    let mut out = batch[..HEADER_BYTES].to_vec();
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !ATTR_CODEC_MASK;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[8..12].copy_from_slice(&((HEADER_BYTES - 12) as i32).to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    batch::set_crc(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compression::Codec;
    use crate::storage::batch::NewRecord;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A record as the model sees it: offset, key, value, its batch's timestamp.
    type Rec = (u64, Option<Vec<u8>>, Option<Vec<u8>>, i64);
    /// A record read back: offset, key, value.
    type Read = (u64, Option<Vec<u8>>, Option<Vec<u8>>);
    /// A batch to write: codec index, timestamp, and (key index or none, tombstone?) per record.
    type Spec = (u8, i64, Vec<(Option<u8>, bool)>);

    /// The batches of `spec` at consecutive offsets.
    fn log(spec: &[Spec]) -> (Vec<u8>, Vec<Rec>) {
        let (mut bytes, mut model, mut offset) = (Vec::new(), Vec::new(), 0u64);
        for (codec, ts, recs) in spec {
            let codec = [Codec::None, Codec::Gzip, Codec::Lz4][*codec as usize % 3];
            let keys: Vec<Option<Vec<u8>>> = recs.iter().map(|(k, _)| k.map(|k| format!("key-{k}").into_bytes())).collect();
            let values: Vec<Option<Vec<u8>>> =
                recs.iter().enumerate().map(|(i, (_, tomb))| (!tomb).then(|| format!("v{}", offset + i as u64).into_bytes())).collect();
            let records: Vec<NewRecord<'_>> =
                keys.iter().zip(&values).map(|(k, v)| NewRecord { key: k.as_deref(), value: v.as_deref(), headers: &[] }).collect();
            let mut b = batch::frame(&codec.compress(&batch::encode_records(&records)), records.len() as i32, *ts, codec as i16);
            batch::set_base_offset(&mut b, offset);
            for (i, (k, v)) in keys.into_iter().zip(values).enumerate() {
                model.push((offset + i as u64, k, v, *ts));
            }
            offset += recs.len() as u64;
            bytes.extend_from_slice(&b);
        }
        (bytes, model)
    }

    fn read_back(bytes: &[u8]) -> Vec<Read> {
        let mut out = Vec::new();
        for item in batches(bytes) {
            let (b, info) = item.expect("valid batches");
            with_records(b, &info, |rs| {
                out.extend(rs.iter().map(|r| (r.offset as u64, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))))
            })
            .expect("records");
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn the_latest_record_of_each_key_stays_at_its_offset(
            spec in proptest::collection::vec((0u8..3, 0i64..2, proptest::collection::vec((proptest::option::weighted(0.9, 0u8..6), proptest::bool::weighted(0.2)), 1..5)), 1..30),
            map_keys in 1usize..8,
        ) {
            let (bytes, model) = log(&spec);
            let mut map = OffsetMap::with_memory(map_keys * super::super::offset_map::ENTRY_BYTES);
            let indexed_to = index(&bytes, &mut map, &[]).unwrap().unwrap_or(model.len() as u64);
            let mut out = Vec::new();
            // Tombstones in batches stamped 0 are past the horizon (1), those stamped 1 are not.
            let rules = Rules { map: &map, indexed_to, aborted: &[], tombstones_before_ms: 1, last_of_producer: &|_, _| false };
            let stats = clean(&bytes, &rules, &mut Transactions::default(), &mut out).unwrap();
            let mut latest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            for (offset, key, _, _) in model.iter().filter(|r| r.0 < indexed_to) {
                if let Some(k) = key {
                    latest.insert(k.clone(), *offset);
                }
            }
            let expected: Vec<_> = model
                .iter()
                .filter(|(offset, key, value, ts)| match key {
                    None => false,
                    Some(_) if *offset >= indexed_to => true,
                    Some(k) => latest.get(k) == Some(offset) && (value.is_some() || *ts >= 1),
                })
                .map(|(o, k, v, _)| (*o, k.clone(), v.clone()))
                .collect();
            let kept = expected.len();
            prop_assert_eq!(read_back(&out), expected);
            prop_assert_eq!((stats.records_in as usize, stats.records_kept as usize), (model.len(), kept));
        }
    }

    #[test]
    fn aborted_records_go_markers_stay_and_a_producers_last_batch_stays_empty() {
        let mut bytes = Vec::new();
        let batch_at = |offset: u64, key: &str, producer: i64, transactional: bool| {
            let v = b"value".to_vec();
            let r = [NewRecord { key: Some(key.as_bytes()), value: Some(&v), headers: &[] }];
            let mut b = batch::frame(&batch::encode_records(&r), 1, 10, 0);
            batch::set_base_offset(&mut b, offset);
            if producer >= 0 {
                batch::set_producer(&mut b, producer, 0, offset as i32, transactional);
            }
            b
        };
        bytes.extend(batch_at(0, "a", 7, false)); // superseded at 2; producer 7's batch at 3 is its last
        bytes.extend(batch_at(1, "b", 8, true)); // aborted by the marker at 4; producer 8's last
        bytes.extend(batch_at(2, "a", 7, false));
        bytes.extend(batch_at(3, "a", 7, false));
        let mut marker = crate::storage::control::build(8, 0, crate::storage::control::Marker { commit: false, coordinator_epoch: 0 }, 10);
        batch::set_base_offset(&mut marker, 4);
        bytes.extend(&marker);
        bytes.extend(batch_at(5, "a", 9, false)); // supersedes producer 7's last batch
        let aborted = [Aborted { producer_id: 8, first: 1, marker: 4 }];
        let mut map = OffsetMap::with_memory(1 << 10);
        assert_eq!(index(&bytes, &mut map, &aborted).unwrap(), None);
        assert_eq!((map.get(b"a"), map.get(b"b")), (Some(5), None), "aborted keys are not indexed");
        // The producers' last batches, as the log's producer state knows them.
        let last = |producer: i64, base: u64| matches!((producer, base), (7, 3) | (8, 1) | (9, 5));
        let kept = |horizon: i64, last: &dyn Fn(i64, u64) -> bool| {
            let rules = Rules { map: &map, indexed_to: 6, aborted: &aborted, tombstones_before_ms: horizon, last_of_producer: last };
            let mut out = Vec::new();
            clean(&bytes, &rules, &mut Transactions::default(), &mut out).unwrap();
            batches(&out).map(|b| b.unwrap().1).map(|i| (i.base_offset, i.records_count, i.is_control())).collect::<Vec<_>>()
        };
        assert_eq!(kept(0, &last), vec![(1, 0, false), (3, 0, false), (4, 1, true), (5, 1, false)]);
        // Past the horizon a marker stays while the log held a batch of its transaction when the
        // pass began, and goes in a pass after the last of them went.
        assert_eq!(kept(100, &last), vec![(1, 0, false), (3, 0, false), (4, 1, true), (5, 1, false)]);
        let only_7 = |producer: i64, base: u64| (producer, base) == (7, 3);
        assert_eq!(kept(100, &only_7), vec![(3, 0, false), (4, 1, true), (5, 1, false)]);
        let without_data: Vec<u8> =
            batches(&bytes).map(|b| b.unwrap()).filter(|(_, i)| i.base_offset != 1).flat_map(|(b, _)| b.to_vec()).collect();
        let rules = Rules { map: &map, indexed_to: 6, aborted: &aborted, tombstones_before_ms: 100, last_of_producer: &only_7 };
        let (mut txns, mut out) = (Transactions::default(), Vec::new());
        clean(&without_data, &rules, &mut txns, &mut out).unwrap();
        assert_eq!(txns.removed, vec![4], "the marker of a transaction with no batch left");
        assert!(batches(&out).all(|b| !b.unwrap().1.is_control()));
    }
}
