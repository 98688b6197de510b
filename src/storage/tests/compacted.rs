//! A log whose closed segments compaction rewrote (offset gaps inside and between segments, a
//! segment left empty, indexes to rebuild) recovers without cutting anything and reads across the gaps.

use super::super::batch::{self, NewRecord};
use super::super::compaction::{clean, offset_map::OffsetMap};
use super::super::segment::{file_stem, Segment};
use super::super::LogConfig;
use super::{open, read_bytes, small_cfg, temp_dir};
use std::collections::BTreeMap;

fn keyed(key: u32, value: u64) -> bytes::Bytes {
    let (k, v) = (format!("key-{key}"), format!("value-{value}-{}", "x".repeat(200)));
    let r = [NewRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()), headers: &[] }];
    batch::frame(&batch::encode_records(&r), 1, 1_000, 0).into()
}

/// (offset, key) of every record from the log start to the high watermark, reading on from the end
/// of each read's last batch.
async fn records(log: &super::super::Log) -> Vec<(u64, Vec<u8>)> {
    let (mut next, hw, mut out) = (log.offsets().log_start, log.offsets().high_watermark, Vec::new());
    while next < hw {
        let bytes = read_bytes(log, next, 2000).await;
        assert!(!bytes.is_empty(), "a read at {next}, below the high watermark {hw}, returned nothing");
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let info = batch::validate_stored(rest).expect("valid stored batches");
            for r in batch::records(&rest[..info.bytes]).expect("uncompressed") {
                if r.offset as u64 >= next {
                    out.push((r.offset as u64, r.key.expect("keyed").to_vec()));
                }
            }
            next = next.max(info.base_offset as u64 + u64::from(info.offset_count));
            rest = &rest[info.bytes..];
        }
    }
    out
}

#[test]
fn compacted_segments_recover_whole_and_read_across_their_gaps() {
    let dir = temp_dir("compacted");
    let cfg = LogConfig { segment_bytes: 4096, ..small_cfg() };
    // Keys 0-3 once, then 4-5 many times, then 0-3 again: the first segment's records are all superseded.
    let appended = shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let mut keys = Vec::new();
        for i in 0..120u64 {
            let key = if i < 4 { i as u32 } else { 4 + (i % 2) as u32 };
            let a = log.append(keyed(key, i)).unwrap();
            keys.push((a.base_offset, key));
        }
        for key in 0..4 {
            keys.push((log.append(keyed(key, 1000)).unwrap().base_offset, key));
        }
        // Enough after them that they are in a closed segment too.
        for i in 0..30u64 {
            let key = 4 + (i % 2) as u32;
            keys.push((log.append(keyed(key, 2000 + i)).unwrap().base_offset, key));
        }
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        log.close().await.unwrap();
        keys
    });
    // Compact every closed segment in place, as the cleaner will.
    let mut bases: Vec<u64> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok()).collect();
    bases.sort_unstable();
    assert!(bases.len() >= 4, "several segments: {bases:?}");
    let closed = &bases[..bases.len() - 1];
    let log_path = |base: u64| dir.join(format!("{}.log", file_stem(base)));
    let mut map = OffsetMap::with_memory(1 << 16);
    let mut indexed_to = 0;
    for (i, &base) in closed.iter().enumerate() {
        indexed_to = clean::index(&std::fs::read(log_path(base)).unwrap(), &mut map, &[]).unwrap().unwrap_or(bases[i + 1]);
    }
    for &base in closed {
        let mut out = Vec::new();
        let rules = clean::Rules { map: &map, indexed_to, aborted: &[], tombstones_before_ms: 0, last_of_producer: &|_, _| false };
        clean::clean(&std::fs::read(log_path(base)).unwrap(), &rules, &mut clean::Transactions::default(), &mut out).unwrap();
        std::fs::write(log_path(base), out).unwrap();
        // Indexes that do not make sense: recovery scans the segment and writes them again.
        std::fs::write(dir.join(format!("{}.index", file_stem(base))), [7u8; 3]).unwrap();
    }
    assert_eq!(std::fs::metadata(log_path(closed[0])).unwrap().len(), 0, "the first segment is emptied");
    // Recovery scans each rewritten segment whole (gaps are no damage in a closed one), and then
    // trusts the index it wrote, whose first entry may be past the segment's base.
    shards::run_local(async {
        for (i, &base) in closed.iter().enumerate() {
            let next = Some(bases[i + 1]);
            let (mut seg, report) = Segment::recover(&dir, base, next, cfg.index_interval_bytes, 0).await.unwrap();
            assert_eq!((report.bytes_damaged, report.bytes_cut), (0, 0), "segment {base}: {report:?}");
            seg.persist_indexes(true).unwrap();
            let (_, again) = Segment::recover(&dir, base, next, cfg.index_interval_bytes, 0).await.unwrap();
            assert!(!again.index_rebuilt && again.batches_scanned == 0, "segment {base}: its index is trusted: {again:?}");
        }
    });
    for &base in closed {
        std::fs::write(dir.join(format!("{}.index", file_stem(base))), [7u8; 3]).unwrap();
    }
    let mut latest: BTreeMap<u32, u64> = BTreeMap::new();
    for &(offset, key) in appended.iter().filter(|(o, _)| *o < indexed_to) {
        latest.insert(key, offset);
    }
    let expected: Vec<(u64, Vec<u8>)> = appended
        .iter()
        .filter(|(o, k)| *o >= indexed_to || latest.get(k) == Some(o))
        .map(|&(o, k)| (o, format!("key-{k}").into_bytes()))
        .collect();
    // Twice: once rebuilding the indexes (the scan must accept the gaps), once trusting them.
    for round in 0..2 {
        shards::run_local(async {
            let log = open(&dir, cfg.clone()).await;
            assert_eq!(log.offsets().log_end, appended.last().unwrap().0 + 1, "round {round}: nothing cut");
            assert_eq!(records(&log).await, expected, "round {round}");
            log.close().await.unwrap();
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cleaning_pass_leaves_the_latest_record_of_each_key_for_reads_at_once_and_after_a_restart() {
    use super::super::compaction::throttle::Throttle;
    use super::super::log::{Budget, CleanOutcome};
    let dir = temp_dir("cleaning-pass");
    let cleanup = super::super::Cleanup { compact: true, ..super::super::Cleanup::default() };
    // A cache larger than the log: reads of the cleaned segments must not come from it.
    let cfg = LogConfig { segment_bytes: 4096, cleanup, ..small_cfg() };
    super::read_cache::set_budget(1 << 20);
    shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let mut appended = Vec::new();
        for i in 0..150u64 {
            let key = (i * 7 % 10) as u32;
            appended.push((log.append(keyed(key, i)).unwrap().base_offset, key));
        }
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let mut throttle = Throttle::new(f64::INFINITY);
        let pass = match log.compact(i64::MAX / 2, Budget { map_bytes: 1 << 20, throttle: &mut throttle }).await.unwrap() {
            CleanOutcome::Cleaned(pass) => pass,
            other => panic!("{other:?}"),
        };
        assert!(pass.segments_replaced > 3 && pass.stats.bytes_out * 4 < pass.stats.bytes_in, "{pass:?}");
        let mut latest: BTreeMap<u32, u64> = BTreeMap::new();
        for &(offset, key) in appended.iter().filter(|(o, _)| *o < pass.cleaned_to) {
            latest.insert(key, offset);
        }
        let expected: Vec<(u64, Vec<u8>)> = appended
            .iter()
            .filter(|(o, k)| *o >= pass.cleaned_to || latest.get(k) == Some(o))
            .map(|&(o, k)| (o, format!("key-{k}").into_bytes()))
            .collect();
        assert_eq!(records(&log).await, expected, "read right after the pass");
        let again = log.compact(i64::MAX / 2, Budget { map_bytes: 1 << 20, throttle: &mut throttle }).await.unwrap();
        assert_eq!(again, CleanOutcome::Idle, "nothing dirty is left below the active segment");
        log.close().await.unwrap();
        let log = open(&dir, cfg.clone()).await;
        assert_eq!(records(&log).await, expected, "after a restart");
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
