//! The harness's transactional producers. The harness is their coordinator: it decides commit or
//! abort (durably at once, as the coordinator's log would) and appends the markers; after a crash
//! it writes again the markers the crash took, and aborts, at a bumped epoch, what a producer can no
//! longer finish (its batches or sequences lost) — the coordinator's fencing.
//!
//! A read_committed reader filtering as clients do (`control::ConsumerFilter`) must see every batch
//! of a committed transaction and none of an aborted one, and be given no batch of an undecided one; after recovery the last stable offset is where the oldest open
//! transaction begins, and once the coordinator has finished what it decided, nothing stays held.

use super::super::super::control::{self, ConsumerFilter, Marker};
use super::super::super::{Appended, Log, LogError};
use super::super::as_producer;
use super::{compare_read, new_batch, Model, Totals};
use shards::fs::{Rng, SimDisk};
use std::collections::BTreeMap;

const PRODUCER_IDS: [i64; 2] = [100, 101];
const MARKER_TIMESTAMP: i64 = 5_000;

/// What the transactional producers did, carried across crashes.
#[derive(Default)]
pub struct Txns {
    producers: Vec<Producer>,
    txns: Vec<Txn>,
    /// The transaction of each transactional batch and marker in the model, by base offset.
    at: BTreeMap<u64, usize>,
}

#[derive(Clone, Copy)]
struct Producer {
    id: i64,
    epoch: i16,
    next_seq: i32,
    /// Its last batch at this epoch.
    last_batch: Option<u64>,
    /// A failed write or a crash took some of its batches or markers: its sequences and its
    /// transaction are no longer the log's, and the coordinator must fence it before it goes on.
    lost: bool,
}

struct Txn {
    producer: usize,
    batches: Vec<u64>,
    /// The coordinator's decision: commit (true) or abort.
    decision: Option<bool>,
    marker: Option<u64>,
}

impl Txn {
    fn open(&self) -> bool {
        self.marker.is_none() && (self.decision.is_some() || !self.batches.is_empty())
    }
}

impl Txns {
    fn producers(&mut self) -> &mut Vec<Producer> {
        if self.producers.is_empty() {
            self.producers = PRODUCER_IDS.iter().map(|&id| Producer { id, epoch: 0, next_seq: 0, last_batch: None, lost: false }).collect();
        }
        &mut self.producers
    }

    /// The transaction `producer` has open, if any (an older one whose marker a crash took, its
    /// later ones gone with it).
    fn open_of(&self, producer: usize) -> Option<usize> {
        self.txns.iter().rposition(|t| t.producer == producer && t.open())
    }

    /// Offsets from `end` on are gone (a failed write gave them back, or a crash took them).
    pub fn forget_from(&mut self, end: u64) {
        if self.at.range(end..).next().is_some() {
            trace(|| format!("transactional batches and markers from {end} on are gone"));
        }
        for (_, t) in self.at.split_off(&end) {
            let txn = &mut self.txns[t];
            txn.batches.retain(|&b| b < end);
            txn.marker = txn.marker.filter(|&m| m < end);
            if txn.batches.is_empty() && txn.marker.is_none() {
                txn.decision = None; // nothing of it is left to decide
            }
            self.producers[txn.producer].lost = true;
        }
    }

    /// Whether the transaction of the batch at `base` committed: `None` if it is undecided or not a
    /// transactional batch the producers appended.
    pub fn committed(&self, base: u64) -> Option<bool> {
        let txn = &self.txns[*self.at.get(&base)?];
        txn.marker.and(txn.decision)
    }
}

/// One step of a random transactional producer: a batch (opening a transaction if it has none), or
/// the coordinator's decision and marker. `Ok(false)`: a fault ended the incarnation.
pub async fn step(log: &Log, disk: &SimDisk, rng: &mut Rng, model: &mut Model, totals: &mut Totals) -> Result<bool, String> {
    let k = rng.below(PRODUCER_IDS.len() as u64) as usize;
    if model.txns.producers()[k].lost {
        return fence(log, disk, model, k, totals).await;
    }
    let open = model.txns.open_of(k);
    match open.map(|t| model.txns.txns[t].decision) {
        Some(Some(commit)) => end(log, disk, model, k, commit, totals).await,
        Some(None) if rng.below(3) == 0 => end(log, disk, model, k, rng.below(3) != 0, totals).await,
        _ => send(log, disk, rng, model, k),
    }
}

fn send(log: &Log, disk: &SimDisk, rng: &mut Rng, model: &mut Model, k: usize) -> Result<bool, String> {
    let p = model.txns.producers()[k];
    let id = rng.next_u64() >> 16;
    let bytes = as_producer(new_batch(rng, id, model.compact), p.id, p.epoch, p.next_seq, true);
    let guard = log.txn_guard(p.id);
    let appended = match log.append_in_txn(bytes.clone().into(), bytes.len(), guard) {
        Ok(a) => a,
        // Retention removed its batches, and a marker then made it known again without
        // sequences: Kafka refuses its next sequence too, and the producer starts a new epoch.
        Err(LogError::OutOfOrderSequence) if p.last_batch.is_some_and(|b| b < log.offsets().log_start) => {
            model.txns.producers[k].lost = true;
            return Ok(true);
        }
        Err(e) => return failed(disk, format!("a transactional batch of producer {} failed without a fault: {e}", p.id)),
    };
    model.appended(&appended, bytes);
    let txns = &mut model.txns;
    let t = match txns.open_of(k) {
        Some(t) => t,
        None => {
            txns.txns.push(Txn { producer: k, batches: Vec::new(), decision: None, marker: None });
            txns.txns.len() - 1
        }
    };
    txns.txns[t].batches.push(appended.base_offset);
    trace(|| format!("producer {} epoch {} sequence {}: transaction {t}'s batch at {appended:?}", p.id, p.epoch, p.next_seq));
    txns.at.insert(appended.base_offset, t);
    txns.producers[k].next_seq += (appended.last_offset - appended.base_offset + 1) as i32;
    txns.producers[k].last_batch = Some(appended.base_offset);
    Ok(true)
}

/// The coordinator decides (if it had not) and appends the marker of `k`'s open transaction at the
/// producer's epoch; the transaction is over once the marker is durable, as the broker's
/// coordinator waits for it (until then a failed write may give its offset back).
async fn end(log: &Log, disk: &SimDisk, model: &mut Model, k: usize, commit: bool, totals: &mut Totals) -> Result<bool, String> {
    let Some(t) = model.txns.open_of(k) else { return Ok(true) };
    let decision = *model.txns.txns[t].decision.get_or_insert(commit);
    let p = model.txns.producers[k];
    let marker = Marker { commit: decision, coordinator_epoch: 0 };
    let appended = match log.append_marker(p.id, p.epoch, marker, MARKER_TIMESTAMP) {
        Ok(a) => a,
        Err(e) => return failed(disk, format!("producer {}'s marker failed without a fault: {e}", p.id)),
    };
    trace(|| format!("producer {} epoch {}: transaction {t}'s marker (commit {decision}) at {appended:?}", p.id, p.epoch));
    marker_appended(model, t, &appended, control::build(p.id, p.epoch, marker, MARKER_TIMESTAMP));
    if let Err(e) = log.wait_durable(appended.last_offset).await {
        return failed(disk, format!("producer {}'s marker was not made durable without a fault: {e}", p.id));
    }
    if decision {
        totals.txns_committed += 1;
    } else {
        totals.txns_aborted += 1;
    }
    Ok(true)
}

fn marker_appended(model: &mut Model, t: usize, a: &Appended, bytes: Vec<u8>) {
    model.appended(a, bytes);
    model.txns.txns[t].marker = Some(a.base_offset);
    model.txns.at.insert(a.base_offset, t);
}

/// What InitProducerId does for a producer whose state the log lost: the coordinator ends its open
/// transaction (as decided, or aborted if undecided) at a bumped epoch, and the producer goes on at
/// that epoch from sequence 0.
async fn fence(log: &Log, disk: &SimDisk, model: &mut Model, k: usize, totals: &mut Totals) -> Result<bool, String> {
    let p = &mut model.txns.producers[k];
    p.epoch += 1;
    p.next_seq = 0;
    p.last_batch = None;
    p.lost = false;
    match model.txns.open_of(k) {
        Some(t) => {
            let decision = model.txns.txns[t].decision.unwrap_or(false);
            end(log, disk, model, k, decision, totals).await
        }
        None => Ok(true),
    }
}

/// A refused append is a fault's doing (the incarnation ends), or a broken promise.
fn failed(disk: &SimDisk, message: String) -> Result<bool, String> {
    if disk.is_down() || disk.faults_injected() > 0 {
        Ok(false)
    } else {
        Err(message)
    }
}

/// After recovery: the model forgets what the crash took; the log must know the same open
/// transactions and hold read_committed readers where the oldest begins; then the coordinator
/// finishes what it decided (and what the crash left a producer unable to finish), after which no
/// transaction holds the readers back.
pub async fn recovered(log: &Log, disk: &SimDisk, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
    let o = log.offsets();
    model.txns.producers();
    let txns = &model.txns;
    // Where the oldest open transaction begins, or, if it began before the log start, anywhere from
    // the log start to its first batch left: a recovery that lost its snapshots learns where a
    // transaction began from the batches it finds (Kafka's does the same).
    let (mut lowest, mut highest) = (o.high_watermark, o.high_watermark);
    for (k, p) in txns.producers.iter().enumerate() {
        let open = txns.open_of(k).map(|t| &txns.txns[t]).filter(|t| !t.batches.is_empty());
        let first_left = open.and_then(|t| t.batches.iter().find(|&&b| b >= o.log_start).copied());
        match (open, log.txn_epoch(p.id).is_some()) {
            (Some(t), true) => {
                lowest = lowest.min(t.batches[0].max(o.log_start));
                highest = highest.min(first_left.unwrap_or(o.high_watermark));
            }
            // Retention may have removed all of its batches, and with them what recovery could learn.
            (Some(_), false) if first_left.is_none() => {}
            (None, false) => {}
            (open, known) => {
                let first = open.map(|t| t.batches[0]);
                return Err(format!("producer {}: open transaction from {first:?} in the model, in the log {known} ({o:?})", p.id));
            }
        }
    }
    if o.last_stable < lowest || o.last_stable > highest {
        return Err(format!("last stable offset {} after recovery; expected {lowest}..={highest} ({o:?})", o.last_stable));
    }
    read_committed(log, model, o.log_start, 1 << 16, totals).await?;
    for (k, pid) in PRODUCER_IDS.into_iter().enumerate() {
        let decided = model.txns.open_of(k).and_then(|t| model.txns.txns[t].decision);
        let done = if model.txns.producers[k].lost {
            fence(log, disk, model, k, totals).await?
        } else if let Some(commit) = decided {
            end(log, disk, model, k, commit, totals).await?
        } else {
            true
        };
        if !done {
            return Err(format!("finishing producer {pid}'s transaction after recovery failed"));
        }
    }
    let end = log.offsets().log_end;
    if end > 0 && (0..PRODUCER_IDS.len()).all(|k| model.txns.open_of(k).is_none()) {
        log.wait_durable(end - 1).await.map_err(|e| format!("fsync of the coordinator's markers: {e}"))?;
        let o = log.offsets();
        if o.last_stable != o.high_watermark {
            return Err(format!("every transaction ended, yet the last stable offset is held: {o:?}"));
        }
    }
    Ok(())
}

/// Reads from `from` to the last stable offset as a read_committed client does, checking every
/// batch against the model.
pub async fn read_committed(log: &Log, model: &Model, from: u64, max_bytes: usize, totals: &mut Totals) -> Result<(), String> {
    let mut next = from;
    loop {
        let (read, aborted) = log.read_committed(next, max_bytes).await.map_err(|e| format!("read_committed at {next}: {e}"))?;
        let last_stable = log.offsets().last_stable;
        if read.chunks.is_empty() {
            // Cleaning may have left nothing from `next` to the last stable offset.
            if next < last_stable && !model.compact {
                return Err(format!("read_committed at {next} returned nothing, below the last stable offset {last_stable}"));
            }
            return Ok(());
        }
        compare_read(model, next, &read.chunks).map_err(|e| format!("read_committed: {e}"))?;
        let mut bytes = Vec::new();
        for c in &read.chunks {
            bytes.extend_from_slice(&c.to_bytes().map_err(|e| e.to_string())?);
        }
        let batches = super::split_stored(&bytes)?;
        let mut filter = ConsumerFilter::new(aborted);
        for (at, info) in &batches {
            let visible = filter.shows(&bytes[*at..*at + info.bytes], info);
            let (base, last) = (info.base_offset as u64, info.base_offset as u64 + u64::from(info.offset_count) - 1);
            if last >= last_stable {
                return Err(format!(
                    "read_committed at {next} returned the batch at {base}..={last}, past the last stable offset {last_stable}"
                ));
            }
            next = last + 1;
            if info.is_control() {
                continue;
            }
            if !info.is_transactional() {
                if !visible {
                    return Err(format!("read_committed hid the batch at {base}, in no transaction"));
                }
                continue;
            }
            totals.read_committed_batches += 1;
            match model.txns.committed(base) {
                Some(committed) if committed == visible => {}
                Some(committed) => {
                    let (was, shown) = (if committed { "committed" } else { "aborted" }, if visible { "shown" } else { "hidden" });
                    return Err(format!("read_committed: the batch at {base} of a transaction {was} was {shown}"));
                }
                None => return Err(format!("read_committed returned the batch at {base} of an undecided transaction")),
            }
        }
    }
}

/// `WEIR_TRACE=1` prints the transactional producers' steps too.
pub(super) fn trace(line: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WEIR_TRACE").is_some()) {
        eprintln!("{}", line());
    }
}
