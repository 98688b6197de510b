//! Log tests against a simple in-memory model: appends, reads, rolls, retention, crash recovery.

use super::batch;
use super::{read_cache, FlushPolicy, Log, LogConfig};
use bytes::Bytes;
use proptest::prelude::*;
use std::path::Path;

mod compacted;
mod power_loss;
mod replica;
mod shard_cache;
mod transactions;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data").join(format!(
        "weir-test-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Opens the log in `dir` and waits until what recovery found is durable (readers see it then,
/// under flush-every-batch, once the writer's first turn fsynced it).
async fn open(dir: &Path, cfg: LogConfig) -> std::rc::Rc<Log> {
    let log = Log::open(dir, cfg).await.expect("open");
    let end = log.offsets().log_end;
    if end > 0 {
        log.wait_durable(end - 1).await.expect("recovered tail fsynced");
    }
    log
}

/// Small segments and index intervals; and a 4 KiB cache budget for this thread's logs, so that
/// reads go to the files.
fn small_cfg() -> LogConfig {
    read_cache::set_budget(4 << 10);
    LogConfig { segment_bytes: 8 << 10, index_interval_bytes: 512, flush: FlushPolicy::EveryBatch, ..LogConfig::default() }
}

/// Reads every batch from `from` to the high watermark, returning (base offset, record count) per batch.
async fn read_all(log: &Log, mut from: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let hw = log.offsets().high_watermark;
    while from < hw {
        let bytes = read_bytes(log, from, 3000).await;
        assert!(!bytes.is_empty(), "read below the high watermark returns data");
        for (_, info) in batch::split(&bytes).expect("stored batches are valid") {
            if (info.base_offset as u64) + u64::from(info.offset_count) <= from {
                continue;
            }
            out.push((info.base_offset as u64, info.offset_count));
            from = info.base_offset as u64 + u64::from(info.offset_count);
        }
    }
    out
}

/// One read's chunks, joined: whole batches.
async fn read_bytes(log: &Log, offset: u64, max_bytes: usize) -> Vec<u8> {
    let read = log.read(offset, max_bytes).await.expect("read");
    read.chunks.iter().flat_map(|c| c.to_bytes().expect("chunk bytes")).collect()
}

fn append_all(log: &Log, sizes: &[(i32, usize)]) -> Vec<(u64, u32)> {
    sizes
        .iter()
        .map(|&(count, bytes)| {
            let a = log.append(batch::build(count, bytes, 1_000).into()).expect("append");
            assert_eq!(a.last_offset - a.base_offset + 1, count as u64);
            (a.base_offset, count as u32)
        })
        .collect()
}

/// `batch` as the idempotent producer `producer_id`'s (epoch 0), starting at sequence `seq`.
fn as_idempotent(batch: Vec<u8>, producer_id: i64, seq: i32) -> Vec<u8> {
    as_producer(batch, producer_id, 0, seq, false)
}

/// `batch` as producer `producer_id`'s at `epoch` from sequence `seq`, in a transaction or not.
fn as_producer(mut batch: Vec<u8>, producer_id: i64, epoch: i16, seq: i32, transactional: bool) -> Vec<u8> {
    batch::set_producer(&mut batch, producer_id, epoch, seq, transactional);
    batch
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn append_read_roll_reopen_matches_model(sizes in proptest::collection::vec((1i32..20, 1usize..400), 1..60)) {
        let dir = temp_dir("model");
        let expected = shards::run_local(async {
            let log = open(&dir, small_cfg()).await;
            let model = append_all(&log, &sizes);
            let last = model.last().map(|&(b, c)| b + u64::from(c) - 1).unwrap();
            log.wait_durable(last).await.unwrap();
            // Offsets are contiguous from 0.
            let mut next = 0;
            for &(b, c) in &model { prop_assert_eq!(b, next); next = b + u64::from(c); }
            prop_assert_eq!(read_all(&log, 0).await, model.clone());
            // Reads from the middle start at the batch holding the offset.
            let mid = next / 2;
            let got = read_all(&log, mid).await;
            prop_assert!(got.first().is_some_and(|&(b, c)| b <= mid && mid < b + u64::from(c)));
            log.close().await.unwrap();
            Ok(model)
        })?;
        shards::run_local(async {
            let log = open(&dir, small_cfg()).await;
            prop_assert_eq!(read_all(&log, 0).await, expected);
            Ok(())
        })?;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn active_log_file(dir: &Path) -> std::path::PathBuf {
    files_with(dir, "log").pop().unwrap()
}

#[test]
fn torn_tail_is_cut_to_the_longest_valid_prefix() {
    let dir = temp_dir("torn");
    let sizes: Vec<(i32, usize)> = (0..40).map(|i| (1 + i % 5, 50 + (i as usize * 37) % 300)).collect();
    let model = shards::run_local(async {
        let log = open(&dir, LogConfig { segment_bytes: 1 << 20, ..small_cfg() }).await;
        let model = append_all(&log, &sizes);
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        log.close().await.unwrap();
        model
    });
    let path = active_log_file(&dir);
    let pristine = std::fs::read(&path).unwrap();
    // Batch boundaries, to know the longest valid prefix for each cut.
    let mut ends = vec![0usize];
    for (at, info) in batch::split(&pristine[..ends_len(&pristine)]).unwrap() {
        ends.push(at + info.bytes);
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..30 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cut = (rng as usize) % *ends.last().unwrap();
        let mut bytes = pristine[..cut].to_vec();
        if round % 2 == 1 {
            // Garble instead of truncating: flip a byte in the middle of the tail batch.
            bytes = pristine.clone();
            bytes[cut] ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let valid = ends.iter().filter(|&&e| e <= cut).count() - 1;
        let got = shards::run_local(async {
            let log = open(&dir, LogConfig { segment_bytes: 1 << 20, ..small_cfg() }).await;
            let got = read_all(&log, 0).await;
            // The log accepts appends after recovery, at the next contiguous offset.
            let a = log.append(batch::build(1, 10, 5).into()).unwrap();
            assert_eq!(a.base_offset, got.last().map_or(0, |&(b, c)| b + u64::from(c)));
            log.close().await.unwrap();
            got
        });
        assert_eq!(got, model[..valid].to_vec(), "cut at {cut} (round {round})");
        std::fs::write(&path, &pristine).unwrap();
        // Drop the appended batch's index entries from the pristine state too.
        for ext in ["index", "timeindex"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Length of the valid batch bytes at the front of `bytes` (the rest is block padding).
fn ends_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Ok(info) = batch::validate(&bytes[at..]) {
        at += info.bytes;
    }
    at
}

#[test]
fn retention_deletes_oldest_segments_and_advances_start() {
    let dir = temp_dir("retention");
    shards::run_local(async {
        let cfg = LogConfig { retention_bytes: 20 << 10, ..small_cfg() };
        let log = open(&dir, cfg).await;
        append_all(&log, &vec![(4, 250); 200]);
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let (segments_before, _, _) = log.stats();
        let removed = log.enforce_retention(i64::MAX).await.unwrap();
        assert!(removed > 0);
        let (segments_after, _, _) = log.stats();
        assert_eq!(segments_before - removed, segments_after);
        let start = log.offsets().log_start;
        assert!(start > 0);
        assert!(matches!(log.read(0, 100).await, Err(super::LogError::OutOfRange { .. })));
        assert_eq!(read_all(&log, start).await.first().unwrap().0, start);
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lookups_at_every_segment_boundary() {
    let dir = temp_dir("boundaries");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        let model = append_all(&log, &vec![(3, 200); 150]);
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let bases: Vec<u64> =
            std::fs::read_dir(&dir).unwrap().filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok()).collect();
        assert!(bases.len() > 3, "the test rolls segments");
        for base in bases.into_iter().filter(|&b| b > 0) {
            for offset in [base - 1, base, base + 1] {
                let info = batch::validate(&read_bytes(&log, offset, 1).await).unwrap();
                let b = info.base_offset as u64;
                assert!(b <= offset && offset < b + u64::from(info.offset_count), "offset {offset} at boundary {base}");
                assert!(model.contains(&(b, info.offset_count)));
            }
        }
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_batches_are_refused_and_leave_the_log_intact() {
    let dir = temp_dir("bad");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        let mut b = batch::build(2, 10, 1);
        b[30] ^= 1;
        assert!(matches!(log.append(b.into()), Err(super::LogError::Batch(batch::BatchError::Crc { .. }))));
        assert!(log.append(Bytes::from_static(&[1, 2, 3])).is_err());
        let big = batch::build(1, 2 << 20, 1);
        assert!(matches!(log.append(big.into()), Err(super::LogError::TooLarge(_))));
        assert_eq!(log.offsets().log_end, 0);
        log.append(batch::build(1, 1, 1).into()).unwrap();
        assert_eq!(log.offsets().log_end, 1);
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lookup_by_timestamp_finds_first_batch_at_or_after() {
    let dir = temp_dir("time");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        for ts in 0..100i64 {
            log.append(batch::build(2, 100, 1000 + ts * 10).into()).unwrap();
        }
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let at =
            |b: Option<Bytes>| b.map(|b| (batch::header(&b).unwrap().base_offset.get(), batch::header(&b).unwrap().max_timestamp.get()));
        assert_eq!(at(log.batch_at_timestamp(0).await.unwrap()), Some((0, 1000)));
        assert_eq!(at(log.batch_at_timestamp(1000 + 50 * 10).await.unwrap()), Some((100, 1500)));
        assert_eq!(at(log.batch_at_timestamp(1000 + 50 * 10 - 5).await.unwrap()), Some((100, 1500)));
        assert_eq!(at(log.batch_at_timestamp(99_999).await.unwrap()), None);
        assert_eq!(at(log.batch_with_max_timestamp().await.unwrap()), Some((198, 1990)));
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_after_reopen_come_from_cache_then_file() {
    let dir = temp_dir("reopen-read");
    shards::run_local(async {
        read_cache::set_budget(64 << 20);
        let cfg = LogConfig { flush: FlushPolicy::Never, ..LogConfig::default() };
        let log = open(&dir, cfg.clone()).await;
        append_all(&log, &vec![(16, 1000); 600]);
        log.wait_written(log.offsets().log_end - 1).await.unwrap();
        log.close().await.unwrap();
        let log = open(&dir, cfg).await;
        let before = log.offsets().high_watermark;
        append_all(&log, &vec![(16, 1000); 300]);
        log.wait_written(log.offsets().log_end - 1).await.unwrap();
        assert_eq!(read_all(&log, before).await.len(), 300, "hot tail from the cache");
        assert_eq!(read_all(&log, 0).await.len(), 900, "cold start from the file, then the cache");
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_ranges_hold_whole_batches_within_max_bytes() {
    let dir = temp_dir("file-ranges");
    shards::run_local(async {
        // Tiny cache: nearly everything is read as file ranges; mixed sizes, some above max_bytes.
        let cfg = small_cfg();
        read_cache::set_budget(1);
        let log = open(&dir, cfg).await;
        let sizes: Vec<(i32, usize)> = (0..200).map(|i| (1 + i % 7, [50, 700, 2500, 40][i as usize % 4])).collect();
        let model = append_all(&log, &sizes);
        let end = log.offsets().log_end;
        log.wait_written(end - 1).await.unwrap();
        for offset in (0..end).step_by(3) {
            for max_bytes in [1, 900, 3000] {
                let read = log.read(offset, max_bytes).await.unwrap();
                let [super::Chunk::File(range)] = &read.chunks[..] else {
                    panic!("offset {offset}: one file range expected, got {read:?}");
                };
                let bytes = read.chunks[0].to_bytes().unwrap();
                assert_eq!(bytes.len(), range.len);
                let batches = batch::split(&bytes).expect("whole, valid batches");
                let first = batches[0].1;
                assert!(first.base_offset as u64 <= offset && offset < first.base_offset as u64 + u64::from(first.offset_count));
                assert!(batches.len() == 1 || bytes.len() <= max_bytes, "over max_bytes only by a single first batch");
                for (_, info) in &batches {
                    assert!(model.contains(&(info.base_offset as u64, info.offset_count)));
                }
                let last = batches[batches.len() - 1].1;
                assert_eq!(read.next, last.base_offset as u64 + u64::from(last.offset_count), "where the read at {offset} ends");
            }
        }
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn large_batches_are_kept_by_reference_and_read_back_with_their_offsets() {
    let dir = temp_dir("shared");
    shards::run_local(async {
        read_cache::set_budget(64 << 20);
        let cfg = LogConfig { segment_bytes: 1 << 20, flush: FlushPolicy::Never, ..LogConfig::default() };
        let log = open(&dir, cfg.clone()).await;
        // One request buffer appended again and again (the log must not write into it), with
        // small batches between, across segment rolls.
        let large = Bytes::from(batch::build(3, super::log::SHARED_BATCH_MIN_BYTES, 7));
        let pristine = large.to_vec();
        let small = batch::build(2, 500, 7);
        // Several batches in one buffer, the large one in the middle.
        let mixed = Bytes::from([&small[..], &large[..], &small[..]].concat());
        let mut model = Vec::new();
        for i in 0..12 {
            let records = match i % 3 {
                0 => large.clone(),
                1 => mixed.clone(),
                _ => Bytes::from(small.clone()),
            };
            let a = log.append(records.clone()).unwrap();
            let mut base = a.base_offset;
            for (_, info) in batch::split(&records).unwrap() {
                model.push((base, info.offset_count));
                base += u64::from(info.offset_count);
            }
        }
        assert_eq!(&large[..], &pristine[..], "appending leaves the caller's bytes alone");
        log.wait_written(log.offsets().log_end - 1).await.unwrap();
        let mut from_cache = Vec::new();
        for &(base, _) in &model {
            let read = log.read(base, 1).await.unwrap();
            assert!(read.chunks.iter().all(|c| matches!(c, super::Chunk::Memory(_))), "offset {base} from the cache");
            let count = model.iter().find(|m| m.0 == base).map(|m| u64::from(m.1));
            assert_eq!(Some(read.next - base), count, "the cached read at {base} ends after its batch");
            from_cache.push(read_bytes(&log, base, 1).await);
        }
        assert_eq!(read_all(&log, 0).await, model, "from the cache");
        // max_bytes counts whole batches, a shared one included: a small batch and not the large
        // one after it, then the large one alone although it is over max_bytes.
        let (small_base, _) = model[1];
        let got = read_bytes(&log, small_base, small.len() + 1).await;
        assert_eq!(batch::split(&got).unwrap().len(), 1);
        let (large_base, _) = model[2];
        let got = read_bytes(&log, large_base, 1).await;
        assert_eq!((got.len(), batch::split(&got).unwrap().len()), (large.len(), 1));
        log.close().await.unwrap();
        let log = open(&dir, cfg).await;
        assert_eq!(read_all(&log, 0).await, model, "from the files after reopening");
        for (&(base, _), cached) in model.iter().zip(&from_cache) {
            assert_eq!(&read_bytes(&log, base, 1).await, cached, "file and cache hold the same bytes at {base}");
        }
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn delete_records_moves_the_start_durably_and_drops_whole_segments() {
    let dir = temp_dir("delete-records");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        for ts in 0..100i64 {
            log.append(batch::build(2, 100, ts).into()).unwrap();
        }
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let (segments_before, _, _) = log.stats();
        assert!(matches!(log.delete_records(201).await, Err(super::LogError::OutOfRange { .. })), "past the high watermark");
        assert_eq!(log.delete_records(121).await.unwrap(), 121);
        assert_eq!(log.delete_records(50).await.unwrap(), 121, "the start never moves back");
        assert_eq!(log.offsets().log_start, 121);
        assert!(log.stats().0 < segments_before, "segments wholly below the start are deleted");
        assert!(matches!(log.read(120, 1 << 20).await, Err(super::LogError::OutOfRange { .. })));
        let first = read_all(&log, 121).await;
        assert!(first[0].0 <= 121 && first[0].0 + u64::from(first[0].1) > 121, "reads start at the batch holding the start");
        log.close().await.unwrap();
        let log = open(&dir, small_cfg()).await;
        assert_eq!(log.offsets().log_start, 121, "the start survives a restart");
        log.close().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits (20 s at most) until the active segment file's length satisfies `cond`.
async fn wait_for_len(dir: &Path, what: &str, cond: impl Fn(u64) -> bool) {
    let len = || std::fs::metadata(active_log_file(dir)).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond(len()) {
        assert!(std::time::Instant::now() < deadline, "{what}: the file is {} bytes", len());
        shards::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn preallocation_follows_the_write_rate_and_is_given_back_when_idle() {
    let dir = temp_dir("prealloc");
    let cfg = LogConfig { segment_bytes: 64 << 20, ..small_cfg() };
    shards::run_local(async {
        let log = open(&dir, cfg).await;
        let file_len = || std::fs::metadata(active_log_file(&dir)).unwrap().len();
        // One small batch: a few blocks ahead at most, where a fixed 2 MiB used to be written.
        let a = log.append(batch::build(1, 100, 1_000).into()).unwrap();
        log.wait_written(a.last_offset).await.unwrap();
        for _ in 0..20 {
            shards::sleep(std::time::Duration::from_millis(10)).await;
            assert!(file_len() <= 16 << 10, "{} bytes for one small batch", file_len());
        }
        // Written to fast, again and again, it preallocates up to the most ahead of its tail.
        for _ in 0..4 {
            let mut last = 0;
            for _ in 0..16 {
                last = log.append(batch::build(1, 64 << 10, 1_000).into()).unwrap().last_offset;
            }
            log.wait_written(last).await.unwrap();
        }
        wait_for_len(&dir, "preallocated ahead of a busy tail", |len| len >= (4 << 20) + (1 << 20)).await;
        // Idle, it gives the zeros back.
        wait_for_len(&dir, "zeros given back when idle", |len| len < (4 << 20) + (128 << 10)).await;
        let again = log.append(batch::build(1, 100, 1_000).into()).unwrap();
        log.wait_durable(again.last_offset).await.unwrap();
        assert_eq!(read_all(&log, 0).await.len(), 66, "every batch reads back after the trim");
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_never_idle_writes_zeros_ahead_with_its_data() {
    let dir = temp_dir("prealloc-busy");
    let cfg = LogConfig { segment_bytes: 64 << 20, flush: FlushPolicy::Never, ..small_cfg() };
    shards::run_local(async {
        let log = open(&dir, cfg).await;
        let file_len = || std::fs::metadata(active_log_file(&dir)).unwrap().len();
        // One batch always queued while the one before is written: the writer is never idle, so
        // only the data writes can put zeros ahead of the tail.
        let mut prev = log.append(batch::build(1, 1000, 1_000).into()).unwrap().last_offset;
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let next = log.append(batch::build(1, 1000, 1_000).into()).unwrap().last_offset;
            log.wait_written(prev).await.unwrap();
            lengths.insert(file_len());
            prev = next;
        }
        log.wait_written(prev).await.unwrap();
        // ~210 KB of data: a write that extended the file by each block it crossed grew it ~50
        // times; one that writes the zeros ahead with its data, a few.
        assert!(lengths.len() < 20, "the file grew {} times: {lengths:?}", lengths.len());
        assert_eq!(read_all(&log, 0).await.len(), 201);
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_named_like_segments_but_not_as_the_log_names_them_are_ignored() {
    let dir = temp_dir("stray-names");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        let a = log.append(batch::build(3, 100, 1_000).into()).unwrap();
        log.wait_durable(a.last_offset).await.unwrap();
        log.close().await.unwrap();
        // `250.log` and `+5.log` parse as offsets: they used to take the partition offline
        // (opening `00000000000000000250.log`, which does not exist).
        for name in ["250.log", "+5.log", "00000000000000000007.log.bak", "0000000000000000000x.log", "250.snapshot"] {
            std::fs::write(dir.join(name), b"stray").unwrap();
        }
        let reopened = open(&dir, small_cfg()).await;
        assert_eq!(read_all(&reopened, 0).await, vec![(0, 3)]);
        let b = reopened.append(batch::build(1, 100, 1_000).into()).unwrap();
        reopened.wait_durable(b.last_offset).await.unwrap();
        assert_eq!(reopened.offsets().log_end, 4);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn index_files_longer_than_their_segment_are_damaged_and_not_read() {
    let dir = temp_dir("huge-index");
    let cfg = LogConfig { segment_bytes: 4 << 10, ..small_cfg() };
    shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        for _ in 0..20 {
            let a = log.append(batch::build(2, 300, 1_000).into()).unwrap();
            log.wait_durable(a.last_offset).await.unwrap();
        }
        let before = read_all(&log, 0).await;
        log.close().await.unwrap();
        // Sparse files claiming 64 GiB: reading them whole would take that much memory.
        let mut grown = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if [".index", ".timeindex", ".txnindex", ".snapshot"].iter().any(|s| name.ends_with(s)) {
                std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(64 << 30).unwrap();
                grown += 1;
            }
        }
        assert!(grown >= 3, "{grown} index files");
        let reopened = open(&dir, cfg).await;
        assert_eq!(read_all(&reopened, 0).await, before);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_active_segment_that_looks_closed_is_not_served_with_its_zeros() {
    let dir = temp_dir("looks-closed");
    let cfg = LogConfig { segment_bytes: 64 << 10, flush: FlushPolicy::Never, ..small_cfg() };
    shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let written = append_all(&log, &[(2, 300); 6]);
        log.wait_written(11).await.unwrap();
        log.close().await.unwrap();
        // A later segment's file appears beside it (copied in, or a roll's file that outlived the
        // seal of this one): the active segment, block padding and all, is now a closed one.
        std::fs::write(dir.join("00000000000000001000.log"), b"").unwrap();
        let reopened = open(&dir, cfg).await;
        let bytes = read_bytes(&reopened, 0, 1 << 20).await;
        let batches = batch::split_stored(&bytes).expect("whole sound batches, no zeros after them");
        let read: Vec<(u64, u32)> = batches.iter().map(|(_, b)| (b.base_offset as u64, b.offset_count)).collect();
        assert_eq!(read, written);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Descriptors this process holds on files under `dir`.
fn files_open_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

fn index_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("index")).count()
}

#[test]
fn an_idle_log_closes_its_files_and_a_few_records_need_no_index_file() {
    let dir = temp_dir("idle-files");
    let cfg = LogConfig { segment_bytes: 64 << 20, ..small_cfg() };
    shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let a = log.append(batch::build(1, 100, 1_000).into()).unwrap();
        log.wait_written(a.last_offset).await.unwrap();
        assert!(files_open_under(&dir) >= 1, "the writer holds the active segment open");
        assert_eq!(index_files(&dir), 0, "one batch: its index entry is implied, no index file");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files_open_under(&dir) > 0 {
            assert!(std::time::Instant::now() < deadline, "{} files still open after idling", files_open_under(&dir));
            shards::sleep(std::time::Duration::from_millis(50)).await;
        }
        // A read and an append open what they need again.
        assert_eq!(read_all(&log, 0).await, vec![(0, 1)]);
        let b = log.append(batch::build(2, 100, 1_000).into()).unwrap();
        log.wait_durable(b.last_offset).await.unwrap();
        // Past `index.interval.bytes` the segment gets its index files.
        let mut last = 0;
        for _ in 0..8 {
            last = log.append(batch::build(1, 200, 1_000).into()).unwrap().last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert_eq!(index_files(&dir), 2);
        log.close().await.unwrap();
        // The writer task lets go of the last handle when it ends, next time it is polled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while files_open_under(&dir) > 0 {
            assert!(std::time::Instant::now() < deadline, "a closed log still holds {} files", files_open_under(&dir));
            shards::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    // Reopened, the indexes written are trusted and extended, the batches all there.
    shards::run_local(async {
        let log = Log::open(&dir, cfg).await.unwrap();
        assert_eq!(files_open_under(&dir), 0, "opening a log opens no file until it is used");
        // Under flush-every-batch what recovery found past the recovery point is fsynced first.
        log.wait_durable(log.offsets().log_end - 1).await.unwrap();
        let batches = read_all(&log, 0).await;
        assert_eq!(batches.len(), 10);
        assert_eq!(batches[..2], [(0, 1), (1, 2)]);
        let (_, entries, _) = log.stats();
        assert!(entries >= 2, "{entries} index entries");
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shard_file_budget_closes_the_least_recently_used_logs_files() {
    use super::file_budget;
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("budget-{i}"))).collect();
    shards::run_local(async {
        file_budget::set_limit(8);
        let mut logs = Vec::new();
        for dir in &dirs {
            let log = open(dir, small_cfg()).await;
            let a = log.append(batch::build(1, 100, 1_000).into()).unwrap();
            log.wait_written(a.last_offset).await.unwrap();
            logs.push(log);
            assert!(file_budget::held() <= 8, "{} files held over a budget of 8", file_budget::held());
        }
        assert!(files_open_under(&dirs[0]) == 0, "the least recently used log gave its files up");
        // Every log still reads and writes: it opens its files again, closing another's.
        for log in &logs {
            let b = log.append(batch::build(2, 100, 1_000).into()).unwrap();
            log.wait_durable(b.last_offset).await.unwrap();
            assert_eq!(read_all(log, 0).await, vec![(0, 1), (1, 2)]);
            assert!(file_budget::held() <= 8, "{} files held over a budget of 8", file_budget::held());
        }
        for log in &logs {
            log.close().await.unwrap();
        }
        file_budget::set_limit(usize::MAX);
    });
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn under_flush_every_batch_readers_see_only_fsynced_records() {
    let dir = temp_dir("hw-durable");
    shards::run_local(async {
        let cfg = LogConfig { flush: FlushPolicy::EveryBatch, segment_bytes: 256 << 10, ..small_cfg() };
        read_cache::set_budget(0);
        let log = open(&dir, cfg).await;
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let (watched, stop) = (log.clone(), done.clone());
        // Looks between every step of the writer: written and not yet fsynced must never be visible.
        let watcher = shards::spawn_local(async move {
            let (mut looks, mut pending_seen) = (0, 0);
            while !stop.get() {
                let o = watched.offsets();
                assert!(o.high_watermark <= o.durable, "high watermark {} past the durable offset {}", o.high_watermark, o.durable);
                if o.high_watermark < o.log_end {
                    pending_seen += 1;
                    let visible = read_bytes(&watched, o.log_start, 1 << 20).await;
                    if let Some((_, last)) = batch::split(&visible).unwrap().last() {
                        let end = last.base_offset as u64 + u64::from(last.offset_count);
                        assert!(end <= watched.offsets().durable, "a read returned offsets up to {end}, past the durable offset");
                    }
                }
                looks += 1;
                futures_lite::future::yield_now().await;
            }
            (looks, pending_seen)
        });
        let mut last = 0;
        for i in 0..300 {
            last = log.append(batch::build(1 + i % 3, 900, 1_000).into()).unwrap().last_offset;
            if i % 7 == 0 {
                futures_lite::future::yield_now().await;
            }
        }
        log.wait_durable(last).await.unwrap();
        assert_eq!(log.offsets().high_watermark, last + 1, "everything fsynced is visible");
        done.set(true);
        let (looks, pending_seen) = watcher.await;
        assert!(looks > 10 && pending_seen > 0, "the watcher looked {looks} times, {pending_seen} with records pending");
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The files in `dir` named `*.<ext>`, in name order (segment files: offset order).
fn files_with(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == ext)).collect();
    files.sort();
    files
}

/// Byte positions and offsets of the batches in a segment file.
fn batches_in(path: &Path) -> Vec<(usize, u64, usize)> {
    let bytes = std::fs::read(path).unwrap();
    batch::split(&bytes[..ends_len(&bytes)]).unwrap().into_iter().map(|(at, info)| (at, info.base_offset as u64, info.bytes)).collect()
}

#[test]
fn damage_in_closed_segments_is_skipped_and_answered_corrupt_not_cut() {
    let dir = temp_dir("damage");
    let cfg = LogConfig { segment_bytes: 8 << 10, ..small_cfg() };
    let end = shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let a = append_all(&log, &vec![(1, 300); 80]);
        log.wait_durable(a.last().unwrap().0).await.unwrap();
        log.close().await.unwrap();
        log.offsets().log_end
    });
    let segments = files_with(&dir, "log");
    assert!(segments.len() >= 4, "{} segments", segments.len());
    // Segment 1: four bytes flipped inside a batch's records. Segment 2: a batch's length field.
    // Both with their index garbled, so recovery scans them.
    let body = batches_in(&segments[1])[5];
    let length = batches_in(&segments[2])[4];
    for (path, at) in [(&segments[1], body.0 + 100), (&segments[2], length.0 + 8)] {
        let mut bytes = std::fs::read(path).unwrap();
        for b in &mut bytes[at..at + 4] {
            *b ^= 0x5a;
        }
        std::fs::write(path, bytes).unwrap();
        std::fs::write(path.with_extension("index"), [1, 2, 3]).unwrap();
    }
    // No producer snapshot either: rebuilding the producers' state walks the damaged headers too.
    files_with(&dir, "snapshot").into_iter().for_each(|p| std::fs::remove_file(p).unwrap());
    shards::run_local(async {
        let log = open(&dir, cfg).await;
        assert_eq!(log.offsets().log_end, end, "nothing after the damage was cut");
        for damaged in [body.1, length.1] {
            // The first read may hand the batch out (its bytes are not read to plan a read); a
            // consumer that asks again, having got nothing it could use, gets an error.
            let first = log.read(damaged, 1 << 20).await;
            if let Ok(read) = &first {
                let bytes: Vec<u8> = read.chunks.iter().flat_map(|c| c.to_bytes().unwrap()).collect();
                assert!(batch::split(&bytes).is_err(), "the damaged batch at {damaged} came back sound");
                let again = log.read(damaged, 1 << 20).await;
                assert!(matches!(again, Err(super::LogError::Corrupt(_))), "read again at {damaged}: {again:?}");
            } else {
                assert!(matches!(first, Err(super::LogError::Corrupt(_))), "read at {damaged}: {first:?}");
            }
            // Past it, the batches are there.
            let after = read_bytes(&log, damaged + 1, 1).await;
            let first = batch::split(&after).unwrap().first().map(|(_, info)| info.base_offset as u64);
            assert_eq!(first, Some(damaged + 1), "reading on after the damage at {damaged}");
        }
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn producer_state_is_rebuilt_past_a_damaged_batch_header() {
    let dir = temp_dir("producer-damage");
    let cfg = small_cfg();
    // One producer's batches until the log has rolled twice, then one more: the producer's last
    // five batches are the closed segment's last three and the active segment's two.
    let (batches, segments) = shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let mut batches = Vec::new();
        let mut rolled_twice_at = None;
        for seq in 0.. {
            let bytes = as_idempotent(batch::build(1, 300, 1_000), 9, seq);
            let a = log.append(bytes.clone().into()).unwrap();
            log.wait_durable(a.last_offset).await.unwrap();
            batches.push((bytes, a.base_offset));
            if rolled_twice_at.is_none() && log.stats().0 == 3 {
                rolled_twice_at = Some(seq);
            } else if rolled_twice_at.is_some() {
                break;
            }
        }
        log.close().await.unwrap();
        (batches, log.stats().0)
    });
    assert_eq!(segments, 3);
    let logs = files_with(&dir, "log");
    let closed = batches_in(&logs[1]);
    // The length of the closed segment's third batch from the end, damaged; no snapshot to start from.
    let (at, damaged, _) = closed[closed.len() - 3];
    let mut bytes = std::fs::read(&logs[1]).unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&0x2000_0000i32.to_be_bytes());
    std::fs::write(&logs[1], bytes).unwrap();
    files_with(&dir, "snapshot").into_iter().for_each(|p| std::fs::remove_file(p).unwrap());
    shards::run_local(async {
        let log = open(&dir, cfg).await;
        let end = log.offsets().log_end;
        // Retries of the batches after the damaged one get their offsets back and append nothing.
        for (bytes, base) in batches.iter().filter(|(_, base)| *base > damaged) {
            let a = log.append(bytes.clone().into());
            assert_eq!(a.map(|a| a.base_offset).ok(), Some(*base), "a retry of the batch at {base}");
        }
        assert_eq!(log.offsets().log_end, end);
        log.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
