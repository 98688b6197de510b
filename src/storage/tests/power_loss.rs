//! The log on a simulated disk that loses, keeps or tears what was not fsynced, crashed at random
//! file operations, recovered, and checked against what was promised (`shards::fs::SimDisk`).
//!
//! One seed is one scenario: a random log configuration, then incarnations of the log, each running
//! a random workload (appends, waits, reads, retention, DeleteRecords) until the process dies at a
//! random file operation (or, sometimes, closes cleanly), followed by a kill or a power loss and
//! recovery. In one incarnation of four, one file operation fails first (EIO or ENOSPC): the log
//! refuses or retries as it must, and keeps every promise made before.
//! After every recovery:
//! * everything acknowledged as durable is there, byte for byte;
//! * the log is a contiguous prefix of what was appended: every batch read back is the one appended
//!   at its offset, and reads from the log start reach the high watermark with no hole;
//! * under flush-every-batch, no offset a reader could see is lost (the high watermark never moves
//!   back across a crash), so no offset ever names two records;
//! * the log start is at least where an acknowledged DeleteRecords put it;
//! * a read_committed reader never sees a batch of an aborted or undecided transaction and never
//!   misses one of a committed transaction (`transactions`);
//! * in a compacted log, every batch read is the one appended or a cleaning of it, and the latest
//!   record of every key is there (`compaction`).
//!
//! A failing seed reproduces alone: `WEIR_SEEDS=<seed> cargo test --release --lib power_loss -- --ignored`
//! (`WEIR_TRACE=1` prints each incarnation's end and recovery).

mod compaction;
mod transactions;

use super::super::batch::{self, NewRecord};
use super::super::{Appended, FlushPolicy, Log, LogConfig, LogError};
use shards::fs::{seeds_from_env, Rng, SimDisk};
use std::path::Path;
use std::rc::Rc;

/// The idempotent producer of the workloads.
const PRODUCER_ID: i64 = 7;

/// What the workloads promised and observed, carried across crashes.
#[derive(Default)]
struct Model {
    /// The idempotent producer's batches in the log, oldest first, as (first sequence, bytes as
    /// produced, base offset, last offset).
    idempotent: Vec<(i32, Vec<u8>, u64, u64)>,
    /// Every batch appended and not known lost, by base offset: (record count, bytes as stored).
    batches: std::collections::BTreeMap<u64, (u32, Vec<u8>)>,
    /// Offsets below this were acknowledged durable (fsynced) before the crash.
    durable: u64,
    /// The highest high watermark a reader saw: what a crash of the process must keep, and under
    /// flush-every-batch what a power loss must keep too.
    visible: u64,
    visible_durable: u64,
    /// Where an acknowledged DeleteRecords put the start.
    deleted_to: u64,
    txns: transactions::Txns,
    /// The log is compacted: its records have keys, and the cleaner runs.
    compact: bool,
}

impl Model {
    /// Batch `bytes` was appended at `a`: whatever the model held from there on was given back by
    /// a failed write.
    fn appended(&mut self, a: &Appended, bytes: Vec<u8>) {
        self.idempotent.retain(|&(_, _, base, _)| base < a.base_offset);
        self.txns.forget_from(a.base_offset);
        let mut stored = bytes;
        batch::set_base_offset(&mut stored, a.base_offset);
        let count = (a.last_offset - a.base_offset + 1) as u32;
        self.batches.split_off(&a.base_offset);
        self.batches.insert(a.base_offset, (count, stored));
    }
}

/// Totals of a run, to show the harness does what it claims.
#[derive(Default, Debug)]
pub struct Totals {
    pub cycles: u64,
    pub crashes_mid_workload: u64,
    pub power_losses: u64,
    pub duplicates_refused: u64,
    pub batches_appended: u64,
    pub batches_lost_unsynced: u64,
    pub faults_injected: u64,
    pub file_ops: u64,
    pub txns_committed: u64,
    pub txns_aborted: u64,
    /// Transactional batches a read_committed reader was checked against.
    pub read_committed_batches: u64,
    pub cleaning_passes: u64,
    pub segments_cleaned: u64,
    pub markers_removed: u64,
}

/// A scenario's settings; and its cache budget (0, 4 or 8 KiB) for this thread's logs.
fn config(rng: &mut Rng) -> (LogConfig, bool) {
    super::read_cache::set_budget((rng.below(3) * 4096) as usize);
    let flush = match rng.below(3) {
        0 => FlushPolicy::EveryBatch,
        1 => FlushPolicy::Messages(1 + rng.below(8)),
        _ => FlushPolicy::Never,
    };
    let mut cfg = LogConfig {
        segment_bytes: 4096 * (1 + rng.below(4)),
        index_interval_bytes: 256 << rng.below(3),
        retention_bytes: if rng.below(2) == 0 { -1 } else { (8192 + rng.below(16384)) as i64 },
        retention_ms: -1,
        flush,
        ..LogConfig::default()
    };
    let compact = compaction::configure(rng, &mut cfg);
    (cfg, compact)
}

/// A batch of one to four records; keyed ones (some tombstones) for a compacted log.
fn new_batch(rng: &mut Rng, id: u64, keyed: bool) -> Vec<u8> {
    let count = 1 + rng.below(4) as usize;
    let len = rng.below(700) as usize;
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("{id}.{i}.").bytes().chain(std::iter::repeat(b'a' + (id % 26) as u8)).take(len.max(8)).collect())
        .collect();
    if keyed {
        return compaction::keyed_batch(rng, &values, 1_000 + id as i64);
    }
    let records: Vec<NewRecord<'_>> = values.iter().map(|v| NewRecord { key: None, value: Some(v), headers: &[] }).collect();
    batch::encode(&records, 1_000 + id as i64)
}

/// Runs scenario `seed` on the calling executor: returns its totals, or the first broken promise.
async fn run_seed(seed: u64) -> Result<Totals, String> {
    let disk = SimDisk::new();
    let _sim = shards::fs::simulate(disk.clone());
    let dir = Path::new("/data/topic-0");
    let mut rng = Rng(seed);
    let (cfg, compact) = config(&mut rng);
    let mut model = Model { compact, ..Model::default() };
    let mut totals = Totals::default();
    let incarnations = 2 + rng.below(5);
    {
        for _ in 0..incarnations {
            let log = Log::open(dir, cfg.clone()).await.map_err(|e| format!("open failed without a fault: {e}"))?;
            check(&log, &disk, &mut model, &mut totals).await?;
            // How this incarnation ends: closed, killed, or in a power loss.
            let end = rng.below(8);
            let (clean, power_loss) = (end == 0, end >= 4);
            if !clean {
                disk.crash_after(1 + rng.below(80));
            }
            // Sometimes one file operation fails (EIO, or a full disk) before the crash.
            if rng.below(4) == 0 {
                let kind = if rng.below(2) == 0 { std::io::ErrorKind::StorageFull } else { std::io::ErrorKind::Other };
                disk.fail_after(1 + rng.below(60), kind);
            }
            workload(&log, &disk, &mut rng, &mut model, &mut totals).await?;
            if disk.is_down() {
                totals.crashes_mid_workload += 1;
            } else if clean {
                match log.close().await {
                    Ok(()) => model.durable = model.durable.max(log.offsets().log_end),
                    Err(_) if disk.faults_injected() > 0 => {}
                    Err(e) => return Err(format!("clean close failed without a fault: {e}")),
                }
            }
            if !disk.is_down() {
                disk.crash_after(1); // the process dies now, if it has not already
            }
            let _ = log.close().await; // the dead process's log: stops its writer
            let appended_end = model.batches.last_key_value().map_or(0, |(b, (c, _))| b + u64::from(*c));
            totals.faults_injected += disk.faults_injected();
            if power_loss {
                disk.crash(rng.next_u64());
                totals.power_losses += 1;
                model.visible = model.visible_durable;
            } else {
                disk.kill();
            }
            totals.file_ops += disk.ops();
            totals.cycles += 1;
            // The next open recovers and `check` compares; count what the crash took.
            let survivor = match Log::open(dir, cfg.clone()).await {
                Ok(log) => log,
                Err(e) => return Err(format!("recovery failed: {e}")),
            };
            let end = survivor.offsets().log_end;
            if std::env::var_os("WEIR_TRACE").is_some() {
                for f in disk.files().iter().filter(|f| f.extension().is_some_and(|e| e == "snapshot")) {
                    eprintln!("{}: {:?}", f.display(), super::super::producer_state::ProducerState::decode(&disk.file(f).unwrap()));
                }
                let o = survivor.offsets();
                eprintln!(
                    "clean {clean}, power loss {power_loss}: durable was {}, recovered {o:?}, files {:?}",
                    model.durable,
                    disk.files()
                );
            }
            totals.batches_lost_unsynced += model.batches.range(end..appended_end).count() as u64;
            check(&survivor, &disk, &mut model, &mut totals).await?;
            survivor.close().await.map_err(|e| format!("close after recovery failed: {e}"))?;
        }
    }
    Ok(totals)
}

/// One incarnation's work, until it is done or the process dies.
async fn workload(log: &Rc<Log>, disk: &SimDisk, rng: &mut Rng, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
    let steps = 5 + rng.below(40);
    for _ in 0..steps {
        if disk.is_down() {
            return Ok(());
        }
        match rng.below(13) {
            0..=4 => {
                for _ in 0..1 + rng.below(3) {
                    let id = rng.next_u64() >> 16;
                    let mut bytes = new_batch(rng, id, model.compact);
                    let seq = model.idempotent.last().map(|(seq, b, _, _)| seq + batch::validate(b).map_or(0, |i| i.records_count));
                    let idempotent = rng.below(2) == 0;
                    if idempotent {
                        bytes = super::as_idempotent(bytes, PRODUCER_ID, seq.unwrap_or(0));
                    }
                    match log.append(bytes.clone().into()) {
                        Ok(a) => {
                            model.appended(&a, bytes.clone());
                            if idempotent {
                                model.idempotent.push((seq.unwrap_or(0), bytes, a.base_offset, a.last_offset));
                            }
                            totals.batches_appended += 1;
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
            5 | 6 => {
                let end = log.offsets().log_end;
                if end > 0 && log.wait_durable(end - 1).await.is_ok() && log.config().flush == FlushPolicy::EveryBatch {
                    model.durable = model.durable.max(end);
                }
            }
            7 => {
                let o = log.offsets();
                model.visible = model.visible.max(o.high_watermark);
                if log.config().flush == FlushPolicy::EveryBatch {
                    model.visible_durable = model.visible_durable.max(o.high_watermark);
                }
                model.durable = model.durable.max(o.durable);
                if o.high_watermark > o.log_start {
                    let from = o.log_start + rng.below(o.high_watermark - o.log_start);
                    let max_bytes = 1 + rng.below(4000) as usize;
                    if rng.below(2) == 0 {
                        match transactions::read_committed(log, model, from, max_bytes, totals).await {
                            Ok(()) => {}
                            Err(_) if disk.is_down() || disk.faults_injected() > 0 => return Ok(()),
                            Err(e) => return Err(format!("while running ({:?}): {e}", log.offsets())),
                        }
                        continue;
                    }
                    match log.read(from, max_bytes).await {
                        Ok(read) => {
                            compare_read(model, from, &read.chunks).map_err(|e| format!("while running ({:?}): {e}", log.offsets()))?
                        }
                        Err(_) if disk.is_down() || disk.faults_injected() > 0 => return Ok(()),
                        Err(e) => return Err(format!("read at {from} failed without a fault: {e}")),
                    }
                }
            }
            // Time 0: retention by size only, and no producer expires.
            8 => match log.enforce_retention(0).await {
                Ok(_) => {}
                Err(_) if disk.is_down() || disk.faults_injected() > 0 => return Ok(()),
                Err(e) => return Err(format!("retention failed without a fault: {e}")),
            },
            10 | 11 => {
                for _ in 0..1 + rng.below(3) {
                    if !transactions::step(log, disk, rng, model, totals).await? {
                        return Ok(());
                    }
                }
            }
            12 if model.compact => {
                if !compaction::step(log, disk, rng, totals).await? {
                    return Ok(());
                }
            }
            _ => {
                let o = log.offsets();
                let to = o.log_start + rng.below(o.high_watermark - o.log_start + 1);
                match log.delete_records(to).await {
                    Ok(start) => model.deleted_to = model.deleted_to.max(start),
                    Err(_) if disk.is_down() || disk.faults_injected() > 0 => return Ok(()),
                    Err(e) => return Err(format!("DeleteRecords to {to} failed without a fault: {e}")),
                }
            }
        }
        for _ in 0..rng.below(3) {
            futures_lite::future::yield_now().await;
        }
    }
    Ok(())
}

/// Whole batches of one read must be the ones appended at their offsets, starting with the one
/// holding `from`.
fn compare_read(model: &Model, from: u64, chunks: &[super::super::Chunk]) -> Result<(), String> {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(&c.to_bytes().map_err(|e| e.to_string())?);
    }
    let batches = split_stored(&bytes).map_err(|e| format!("read at {from} returned invalid batches: {e}"))?;
    let Some((_, first)) = batches.first() else {
        return Err(format!("read at {from}, below the high watermark, returned nothing"));
    };
    // Cleaning may have removed the batch holding `from`: the read starts with the next one left.
    let first_base = first.base_offset as u64;
    if first_base > from && !model.compact || first_base + u64::from(first.offset_count) <= from {
        return Err(format!("read at {from} started with the batch at {first_base}"));
    }
    for (at, info) in batches {
        let base = info.base_offset as u64;
        let read = &bytes[at..at + info.bytes];
        match model.batches.get(&base) {
            Some((_, stored)) if stored[..] == *read => {}
            Some((_, stored)) if model.compact => compaction::same_or_cleaned(stored, read)?,
            Some(_) => return Err(format!("the batch at offset {base} differs from the one appended there")),
            None => return Err(format!("a batch at offset {base} that was never appended there")),
        }
    }
    Ok(())
}

/// Stored batches (compaction leaves some with fewer records than offsets), with their positions.
fn split_stored(bytes: &[u8]) -> Result<Vec<(usize, batch::BatchInfo)>, String> {
    batch::split_stored(bytes).map_err(|e| e.to_string())
}

/// The promises, checked on a freshly recovered log; then the model forgets what the crash took.
async fn check(log: &Log, disk: &SimDisk, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
    let o = log.offsets();
    if o.log_end < model.durable {
        return Err(format!("log end {} after recovery, below the {} acknowledged durable", o.log_end, model.durable));
    }
    if o.log_end < model.visible {
        return Err(format!("log end {} after recovery, below the high watermark {} readers saw", o.log_end, model.visible));
    }
    let every_batch = log.config().flush == FlushPolicy::EveryBatch;
    let expected_hw = if every_batch { o.durable.max(o.log_start) } else { o.log_end };
    if o.high_watermark != expected_hw {
        return Err(format!("high watermark {} after recovery; expected {expected_hw} ({o:?})", o.high_watermark));
    }
    if every_batch && o.durable < o.log_end {
        // What recovery found past the recovery point becomes visible once the writer fsynced it.
        log.wait_durable(o.log_end - 1).await.map_err(|e| format!("fsync of the recovered tail: {e}"))?;
    }
    let o = log.offsets();
    if o.high_watermark != o.log_end || o.durable != o.log_end && every_batch {
        return Err(format!("after the recovered tail's fsync: {o:?}"));
    }
    if o.log_start < model.deleted_to.min(o.log_end) || o.log_start > o.log_end {
        return Err(format!(
            "log start {} after recovery; DeleteRecords acknowledged {}, log end {}",
            o.log_start, model.deleted_to, o.log_end
        ));
    }
    // Read everything from the start: contiguous, no hole, every batch the one appended there.
    let mut next = o.log_start;
    let mut everything = Vec::new();
    while next < o.log_end {
        let read = log.read(next, 1 << 16).await.map_err(|e| format!("read at {next} after recovery: {e}"))?;
        compare_read(model, next, &read.chunks).map_err(|e| format!("after recovery ({o:?}): {e}"))?;
        let mut bytes = Vec::new();
        for c in &read.chunks {
            bytes.extend_from_slice(&c.to_bytes().map_err(|e: LogError| e.to_string())?);
        }
        let (_, last) = *split_stored(&bytes)?.last().expect("compare_read saw a batch");
        let after = last.base_offset as u64 + u64::from(last.offset_count);
        // Compaction leaves gaps: the next batch may start past the offset after this one.
        if read.next < after || (!model.compact && read.next != after) {
            return Err(format!("a read at {next} ended with the batch before {after} but says it ends at {}", read.next));
        }
        next = read.next;
        everything.extend_from_slice(&bytes);
    }
    if next != o.log_end {
        return Err(format!("reads ended at {next}, the log end is {}", o.log_end));
    }
    if model.compact {
        compaction::check_keys(model, &o, &everything)?;
    }
    model.batches.split_off(&o.log_end);
    model.txns.forget_from(o.log_end);
    // The producer's last batches in the log are known: a retry of each gets its offsets back.
    model.idempotent.retain(|&(_, _, base, _)| base < o.log_end);
    // A compacted log keeps a producer's last batch only (as Kafka's does): only its retry is known.
    let known = if model.compact { 1 } else { super::super::producer_state::RECENT_BATCHES };
    let recent = model.idempotent.len().saturating_sub(known);
    let mut retried = 0;
    for (seq, bytes, base, last) in &model.idempotent[recent..] {
        if *base < o.log_start {
            continue;
        }
        retried += 1;
        match log.append(bytes.clone().into()) {
            Ok(a) if (a.base_offset, a.last_offset) == (*base, *last) => {}
            other => {
                let known: Vec<_> = model.idempotent.iter().map(|(s, _, b, l)| (*s, *b, *l)).collect();
                return Err(format!(
                    "a retry of sequence {seq} (offsets {base}..={last}) after recovery: {other:?}; the producer's batches: {known:?}"
                ));
            }
        }
    }
    if log.offsets().log_end != o.log_end {
        return Err(format!("retries after recovery appended: log end {} then {}", o.log_end, log.offsets().log_end));
    }
    totals.duplicates_refused += retried;
    transactions::recovered(log, disk, model, totals).await?;
    // What recovery found may not be fsynced yet (after a kill): only what the log says is durable.
    model.durable = o.durable;
    model.visible = o.log_end;
    model.visible_durable = o.durable;
    Ok(())
}

/// Runs `seeds` one after the other on one executor (an executor per seed would cost more than
/// the seed).
fn run_seeds(seeds: std::ops::Range<u64>) -> Totals {
    shards::run_local(run_seeds_here(seeds))
}

async fn run_seeds_here(seeds: std::ops::Range<u64>) -> Totals {
    let started = std::time::Instant::now();
    let mut sum = Totals::default();
    for seed in seeds.clone() {
        match run_seed(seed).await {
            Ok(t) => {
                sum.cycles += t.cycles;
                sum.crashes_mid_workload += t.crashes_mid_workload;
                sum.power_losses += t.power_losses;
                sum.duplicates_refused += t.duplicates_refused;
                sum.batches_appended += t.batches_appended;
                sum.batches_lost_unsynced += t.batches_lost_unsynced;
                sum.faults_injected += t.faults_injected;
                sum.file_ops += t.file_ops;
                sum.txns_committed += t.txns_committed;
                sum.txns_aborted += t.txns_aborted;
                sum.read_committed_batches += t.read_committed_batches;
                sum.cleaning_passes += t.cleaning_passes;
                sum.segments_cleaned += t.segments_cleaned;
                sum.markers_removed += t.markers_removed;
            }
            Err(e) => {
                panic!("seed {seed}: {e}\nreproduce: WEIR_SEEDS={seed} cargo test --release --lib power_loss -- --ignored --nocapture")
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "power loss: seeds {seeds:?}: {} crash-recover cycles in {secs:.1} s ({:.0}/min), {} power losses, {} mid-workload, {} batches appended, {} lost unsynced, {} retries deduplicated, {} file operations ({} failed on purpose), transactions {} committed {} aborted, {} transactional batches read_committed, {} cleaning passes replaced {} segments and removed {} markers",
        sum.cycles,
        sum.cycles as f64 / secs * 60.0,
        sum.power_losses,
        sum.crashes_mid_workload,
        sum.batches_appended,
        sum.batches_lost_unsynced,
        sum.duplicates_refused,
        sum.file_ops,
        sum.faults_injected,
        sum.txns_committed,
        sum.txns_aborted,
        sum.read_committed_batches,
        sum.cleaning_passes,
        sum.segments_cleaned,
        sum.markers_removed
    );
    sum
}

#[test]
fn power_loss_keeps_every_promise() {
    let totals = run_seeds(seeds_from_env(0..20_000));
    assert!(totals.crashes_mid_workload > 0 && totals.batches_lost_unsynced > 0, "the crashes hit something: {totals:?}");
    assert!(totals.txns_committed > 0 && totals.txns_aborted > 0 && totals.read_committed_batches > 0, "transactions ran: {totals:?}");
    assert!(totals.segments_cleaned > 0 && totals.markers_removed > 0, "the cleaner replaced segments, removed markers: {totals:?}");
}

/// The long run: `WEIR_SEEDS=0..200000 cargo test --release --lib power_loss_long -- --ignored --nocapture`.
#[test]
#[ignore]
fn power_loss_long() {
    run_seeds(seeds_from_env(0..200_000));
}
