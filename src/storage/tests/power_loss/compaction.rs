//! Compaction in the power-loss harness. In one scenario of three the log is compacted (`compact`, or
//! `compact,delete`), its records carry keys from a small set and some are tombstones, and cleaning
//! passes run among the other steps with maps of one to a few dozen keys, so that many stop part
//! way; the crashes fall on every file operation of a pass. After every recovery, besides what any
//! log promises:
//! * every batch read back is the one appended at its offset or a cleaning of it: the same header
//!   fields, a subset of its records, each as it was at its offset;
//! * the latest record of every key is there, unless it is a tombstone; a key whose tombstone went
//!   has no record left (nothing deleted comes back).

use super::super::super::batch::{self, NewRecord};
use super::super::super::compaction::offset_map::ENTRY_BYTES;
use super::super::super::compaction::throttle::Throttle;
use super::super::super::log::{Budget, CleanOutcome};
use super::super::super::{Cleanup, Log, LogConfig, Offsets};
use super::{Model, Totals};
use shards::fs::{Rng, SimDisk};
use std::collections::BTreeMap;

/// The cleaner's clock: every batch (stamped 1,000 + its id) is older than any horizon.
const NOW_MS: i64 = i64::MAX / 2;
/// Keys the records are drawn from: few, so that most records are superseded.
const KEYS: u64 = 10;

/// Makes one scenario of three compacted; returns whether it is.
pub fn configure(rng: &mut Rng, cfg: &mut LogConfig) -> bool {
    if rng.below(3) != 0 {
        return false;
    }
    cfg.cleanup = Cleanup {
        compact: true,
        delete: rng.below(2) == 0,
        min_cleanable_dirty_ratio: 0.0,
        // Tombstones go in their second pass, or never.
        delete_retention_ms: if rng.below(2) == 0 { 0 } else { i64::MAX },
        ..Cleanup::default()
    };
    true
}

/// A batch of `values` whose records have keys, one in six a tombstone.
pub fn keyed_batch(rng: &mut Rng, values: &[Vec<u8>], timestamp: i64) -> Vec<u8> {
    let keys: Vec<Vec<u8>> = values.iter().map(|_| format!("key-{}", rng.below(KEYS)).into_bytes()).collect();
    let tombstones: Vec<bool> = values.iter().map(|_| rng.below(6) == 0).collect();
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .zip(&keys)
        .zip(&tombstones)
        .map(|((v, k), &tomb)| NewRecord { key: Some(k), value: (!tomb).then_some(&v[..]), headers: &[] })
        .collect();
    batch::encode(&records, timestamp)
}

/// One cleaning pass with a small map; `Ok(false)` when the process died or a fault hit it.
pub async fn step(log: &Log, disk: &SimDisk, rng: &mut Rng, totals: &mut Totals) -> Result<bool, String> {
    let mut throttle = Throttle::new(f64::INFINITY);
    let map_bytes = ENTRY_BYTES * (1 + rng.below(40)) as usize;
    match log.compact(NOW_MS, Budget { map_bytes, throttle: &mut throttle }).await {
        Ok(CleanOutcome::Cleaned(pass)) => {
            super::transactions::trace(|| format!("cleaned ({} keys): {pass:?}", map_bytes / ENTRY_BYTES));
            totals.cleaning_passes += 1;
            totals.segments_cleaned += pass.segments_replaced as u64;
            totals.markers_removed += pass.stats.markers_removed;
            Ok(true)
        }
        Ok(_) => Ok(true),
        Err(_) if disk.is_down() || disk.faults_injected() > 0 => Ok(false),
        Err(e) => Err(format!("cleaning failed without a fault: {e}")),
    }
}

/// (offset, key, value) of the records of a stored batch.
type Rec = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

fn records_of(stored: &[u8]) -> Result<Vec<Rec>, String> {
    let info = batch::validate_stored(stored).map_err(|e| e.to_string())?;
    let (_, body) = batch::records_section(stored).map_err(|e| e.to_string())?;
    let h = batch::header(stored).map_err(|e| e.to_string())?;
    let records =
        batch::records_in(&body, info.base_offset, h.base_timestamp.get(), info.records_count).ok_or("records that do not parse")?;
    Ok(records.iter().map(|r| (r.offset as u64, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))).collect())
}

/// `read` is `original`, or a cleaning of it.
pub fn same_or_cleaned(original: &[u8], read: &[u8]) -> Result<(), String> {
    if original == read {
        return Ok(());
    }
    let (a, b) = (batch::validate_stored(original).map_err(|e| e.to_string())?, batch::validate_stored(read).map_err(|e| e.to_string())?);
    let header =
        |i: &batch::BatchInfo| (i.base_offset, i.offset_count, i.producer_id, i.producer_epoch, i.base_sequence, i.is_transactional());
    if header(&a) != header(&b) || a.is_control() || b.is_control() {
        return Err(format!("the batch at {} is neither the one appended nor a cleaning of it", a.base_offset));
    }
    let kept = records_of(original)?;
    for r in records_of(read)? {
        if !kept.contains(&r) {
            return Err(format!("the cleaned batch at {} holds a record that was not appended: offset {}", a.base_offset, r.0));
        }
    }
    Ok(())
}

/// The records the log holds from its start (`present`, read back whole) against those appended:
/// the latest of each key stays unless it is a tombstone, and a key whose tombstone went has nothing left.
pub fn check_keys(model: &Model, o: &Offsets, present: &[u8]) -> Result<(), String> {
    let mut latest: BTreeMap<Vec<u8>, (u64, bool)> = BTreeMap::new();
    let batches: Vec<(&u64, &(u32, Vec<u8>))> = model.batches.range(..o.log_end).collect();
    for (i, &(&base, (_, stored))) in batches.iter().enumerate() {
        let info = batch::validate_stored(stored).map_err(|e| e.to_string())?;
        if info.is_control() || model.txns.committed(base) == Some(false) {
            continue; // markers are not cleaned; aborted records go
        }
        // A log that started again past a crash's loss replaced the end of a batch from before it.
        let end = batches.get(i + 1).map_or(o.log_end, |(next, _)| **next).min(o.log_end);
        for (offset, key, value) in records_of(stored)? {
            if let (Some(key), true) = (key, (o.log_start..end).contains(&offset)) {
                latest.insert(key, (offset, value.is_none()));
            }
        }
    }
    let mut held: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (at, info) in batch::split_stored(present).map_err(|e| e.to_string())? {
        if !info.is_control() && model.txns.committed(info.base_offset as u64) != Some(false) {
            for (offset, key, _) in records_of(&present[at..at + info.bytes])? {
                if let (Some(key), true) = (key, offset >= o.log_start) {
                    held.entry(key).or_default().push(offset);
                }
            }
        }
    }
    for (key, (offset, tombstone)) in latest {
        let offsets = held.get(&key).map_or(&[][..], |v| &v[..]);
        let name = String::from_utf8_lossy(&key);
        if !tombstone && !offsets.contains(&offset) {
            return Err(format!("the latest record of {name}, at {offset}, is gone (the log holds {offsets:?}; {o:?})"));
        }
        if tombstone && !offsets.is_empty() && !offsets.contains(&offset) {
            return Err(format!("{name}'s tombstone at {offset} went, yet its records at {offsets:?} stay ({o:?})"));
        }
    }
    Ok(())
}
