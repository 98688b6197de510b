//! Idempotent and transactional producers' state in one partition (Kafka's `ProducerStateManager`):
//! per producer id, its epoch and its last five batches' sequence ranges and offsets, so that a
//! retried batch is answered with its original offsets instead of being appended twice and a gap in
//! sequences is refused; and the transaction it has open here, so that the log knows its last
//! stable offset and which transactions a marker aborted.
//!
//! The batch headers in the log carry producer id, epoch and sequences, and markers say how a
//! transaction ended, so the state is derived from the log: rebuilt at recovery by reading the log
//! from the last snapshot on. Snapshots are taken when a segment rolls and at close
//! (`<offset>.snapshot`, Kafka's name, our layout):
//!
//! ```text
//! version u16 (2) | producers u32 | per producer:
//!   producer_id i64 | epoch i16 | last_timestamp i64 | coordinator_epoch i32 |
//!   open_transaction_first_offset i64 (-1: none) | markers u64 | batches u8 | per batch:
//!     first_sequence i32 | last_sequence i32 | base_offset u64 | last_offset u64
//! crc32c of all the above u32
//! ```
//!
//! all big-endian (version 1, read still, lacks the three transaction fields). A snapshot at offset
//! N is the state after every batch below N; one past the log end (a crash took what followed) or
//! damaged is ignored. Producers expire when their last batch's timestamp is
//! `producer.id.expiration.ms` old, and go when retention or DeleteRecords removed their last batch,
//! as in Kafka, unless a transaction of theirs is open: the map is bounded by the producers active
//! lately.

use super::batch::{crc32c, BatchInfo};
use super::control::Marker;
use super::txn_index::AbortedTxn;
use std::collections::{BTreeMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka keeps 5: a producer has at most
/// 5 requests in flight per connection with idempotence on).
pub const RECENT_BATCHES: usize = 5;
const VERSION: u16 = 2;
/// Producers a snapshot may hold: bounds what a damaged or hostile file makes us allocate.
const SNAPSHOT_PRODUCERS_MAX: usize = 1 << 20;
/// The most bytes a sound snapshot holds: a larger file is damaged, and is not read.
pub const SNAPSHOT_BYTES_MAX: u64 = (6 + SNAPSHOT_PRODUCERS_MAX * (39 + RECENT_BATCHES * 24) + 4) as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recent {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// The last `RECENT_BATCHES`, oldest first.
    recent: VecDeque<Recent>,
    last_timestamp: i64,
    /// The coordinator epoch of its last marker (-1: none): a marker from an older one is refused.
    coordinator_epoch: i32,
    /// Where its transaction open in this partition began.
    txn_first: Option<u64>,
    /// Its markers so far: a batch that opens a transaction must have been checked against the
    /// coordinator since the last one (`TxnGuard`).
    markers: u64,
}

impl Producer {
    fn new(epoch: i16, last_timestamp: i64) -> Producer {
        Producer { epoch, recent: VecDeque::new(), last_timestamp, coordinator_epoch: -1, txn_first: None, markers: 0 }
    }
}

/// What a batch's producer fields mean against the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or next in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets.
    Duplicate { base_offset: u64, last_offset: u64 },
    /// A sequence that does not follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder,
    /// An epoch older than the producer's current one (INVALID_PRODUCER_EPOCH).
    StaleEpoch,
    /// A transactional batch the coordinator did not vouch for, or a plain one from a producer
    /// with a transaction open here (INVALID_TXN_STATE).
    InvalidTxnState,
    /// A marker from an older coordinator epoch than the producer's last (TRANSACTION_COORDINATOR_FENCED).
    CoordinatorFenced,
}

/// What the coordinator vouched for: the producer's marker count here when it was asked whether
/// this partition is in the producer's transaction. A marker since (the transaction ended) voids
/// it, so a late batch cannot open a transaction the coordinator does not know of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnGuard(u64);

/// A transaction a marker ended in this partition, from its first data batch to the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub marker_offset: u64,
    pub aborted: bool,
}

/// One producer as operators see it (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 when it has no batch here (only markers).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// Where its open transaction began here; -1 with none.
    pub txn_start_offset: i64,
}

/// Idempotent and transactional producers of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, Producer>,
    /// Open transactions: first offset → producer.
    ongoing: BTreeMap<u64, i64>,
    /// Changed since the last snapshot.
    dirty: bool,
}

fn last_sequence(info: &BatchInfo) -> i32 {
    // Sequences wrap at i32::MAX to 0, as Kafka's do. By the offsets the batch spans, not its record
    // count: a batch compaction emptied keeps its header, the sequences its producer sent.
    ((i64::from(info.base_sequence) + i64::from(info.offset_count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

impl ProducerState {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// What a transactional batch of `producer_id` needs to open a transaction here: taken before
    /// asking the coordinator, passed to the append.
    pub fn guard(&self, producer_id: i64) -> TxnGuard {
        TxnGuard(self.producers.get(&producer_id).map_or(0, |p| p.markers))
    }

    /// The epoch of `producer_id`'s open transaction here, if one is open.
    pub fn txn_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).filter(|p| p.txn_first.is_some()).map(|p| p.epoch)
    }

    /// Every producer, as DescribeProducers shows them.
    pub fn active(&self) -> Vec<ActiveProducer> {
        self.producers
            .iter()
            .map(|(&producer_id, p)| ActiveProducer {
                producer_id,
                epoch: p.epoch,
                last_sequence: p.recent.back().map_or(-1, |r| r.last_seq),
                last_timestamp: p.last_timestamp,
                coordinator_epoch: p.coordinator_epoch,
                txn_start_offset: p.txn_first.map_or(-1, |o| o as i64),
            })
            .collect()
    }

    /// Whether the batch at `base_offset` is `producer_id`'s last (the cleaner keeps it, emptied if
    /// need be: its sequences are what the producer's next batch is checked against).
    pub fn is_last_batch(&self, producer_id: i64, base_offset: u64) -> bool {
        self.producers.get(&producer_id).and_then(|p| p.recent.back()).is_some_and(|r| r.base_offset == base_offset)
    }

    /// The aborted transactions index entry for `done`, just ended here, if it was aborted; its
    /// stable offset is Kafka's: where the oldest other transaction still open began.
    pub fn aborted_entry(&self, done: &CompletedTxn) -> Option<AbortedTxn> {
        let next = done.marker_offset + 1;
        let last_stable_offset = self.first_open_transaction().map_or(next, |f| f.min(next));
        let (producer_id, first_offset, last_offset) = (done.producer_id, done.first_offset, done.marker_offset);
        done.aborted.then_some(AbortedTxn { producer_id, first_offset, last_offset, last_stable_offset })
    }

    /// The first offset of the oldest transaction open here.
    pub fn first_open_transaction(&self) -> Option<u64> {
        self.ongoing.keys().next().copied()
    }

    /// Kafka's checks of a producer's data batch, in its order: duplicate, epoch, transaction,
    /// sequence. An unknown producer (never seen, expired, or whose batches retention removed) may
    /// start at any sequence.
    pub fn check(&self, info: &BatchInfo, guard: Option<TxnGuard>) -> Check {
        if info.producer_id < 0 {
            return Check::Append;
        }
        let p = self.producers.get(&info.producer_id);
        let last_seq = last_sequence(info);
        if let Some(r) = p
            .filter(|p| p.epoch == info.producer_epoch)
            .and_then(|p| p.recent.iter().rev().find(|r| r.first_seq == info.base_sequence && r.last_seq == last_seq))
        {
            return Check::Duplicate { base_offset: r.base_offset, last_offset: r.last_offset };
        }
        if p.is_some_and(|p| info.producer_epoch < p.epoch) {
            return Check::StaleEpoch;
        }
        let open = p.is_some_and(|p| p.txn_first.is_some());
        if info.is_transactional() && !open && guard != Some(self.guard(info.producer_id)) {
            return Check::InvalidTxnState;
        }
        if !info.is_transactional() && open {
            return Check::InvalidTxnState;
        }
        let Some(p) = p else {
            return Check::Append;
        };
        if info.producer_epoch != p.epoch {
            // A new epoch starts its sequences at 0.
            return if info.base_sequence == 0 { Check::Append } else { Check::OutOfOrder };
        }
        match p.recent.back() {
            Some(r) if !in_sequence(r.last_seq, info.base_sequence) => Check::OutOfOrder,
            // Known by its markers only (or a marker brought a new epoch): sequences start at 0.
            None if info.base_sequence != 0 => Check::OutOfOrder,
            _ => Check::Append,
        }
    }

    /// The verdict on batches appended together: the first duplicate or refusal, else `Append`
    /// (each batch checked against the state as the ones before it would leave it).
    pub fn check_all<'a>(&self, batches: impl Iterator<Item = &'a BatchInfo> + Clone, guard: Option<TxnGuard>) -> Check {
        if batches.clone().filter(|b| b.producer_id >= 0).count() <= 1 {
            return batches.map(|b| self.check(b, guard)).find(|c| *c != Check::Append).unwrap_or(Check::Append);
        }
        let mut scratch = self.clone();
        for b in batches {
            match scratch.check(b, guard) {
                Check::Append => {
                    scratch.record(b, None);
                }
                other => return other,
            }
        }
        Check::Append
    }

    /// Kafka's checks of a marker of `producer_id`'s transaction at `epoch`.
    pub fn check_marker(&self, producer_id: i64, epoch: i16, marker: Marker) -> Check {
        match self.producers.get(&producer_id) {
            Some(p) if epoch < p.epoch => Check::StaleEpoch,
            Some(p) if marker.coordinator_epoch < p.coordinator_epoch => Check::CoordinatorFenced,
            _ => Check::Append,
        }
    }

    /// Records batch `info`, now at offsets from its `base_offset` (`marker`: what it says, if it
    /// is a marker). Returns the transaction a marker ended, if one was open.
    pub fn record(&mut self, info: &BatchInfo, marker: Option<Marker>) -> Option<CompletedTxn> {
        if info.producer_id < 0 {
            return None;
        }
        let base_offset = info.base_offset as u64;
        let p = self.producers.entry(info.producer_id).or_insert_with(|| Producer::new(info.producer_epoch, info.max_timestamp));
        self.dirty = true;
        p.last_timestamp = p.last_timestamp.max(info.max_timestamp);
        if p.epoch != info.producer_epoch {
            // A new epoch (a marker may bring one: a fenced or timed-out transaction) starts afresh.
            p.epoch = info.producer_epoch;
            p.recent.clear();
        }
        if let Some(m) = marker {
            p.coordinator_epoch = m.coordinator_epoch;
            p.markers += 1;
            let first_offset = p.txn_first.take()?;
            self.ongoing.remove(&first_offset);
            return Some(CompletedTxn { producer_id: info.producer_id, first_offset, marker_offset: base_offset, aborted: !m.commit });
        }
        if p.recent.back().is_some_and(|r| r.base_offset >= base_offset) {
            return None; // known already: a snapshot's batch met again by the walk after it
        }
        p.recent.push_back(Recent {
            first_seq: info.base_sequence,
            last_seq: last_sequence(info),
            base_offset,
            last_offset: base_offset + u64::from(info.offset_count) - 1,
        });
        if p.recent.len() > RECENT_BATCHES {
            p.recent.pop_front();
        }
        if info.is_transactional() && p.txn_first.is_none() {
            p.txn_first = Some(base_offset);
            self.ongoing.insert(base_offset, info.producer_id);
        }
        None
    }

    /// Forgets producers with no transaction open here whose last batch is below `log_start`
    /// (retention, DeleteRecords) or whose last timestamp is older than `expire_before_ms`.
    pub fn expire(&mut self, log_start: u64, expire_before_ms: i64) {
        let before = self.producers.len();
        self.producers.retain(|_, p| {
            let retained = p.recent.back().is_none_or(|r| r.last_offset >= log_start);
            p.txn_first.is_some() || (retained && p.last_timestamp >= expire_before_ms)
        });
        self.dirty |= self.producers.len() != before;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The bytes of a snapshot of the state. The state counts as saved from now on.
    pub fn encode(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.producers.len() * 96);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, p) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.last_timestamp.to_be_bytes());
            out.extend_from_slice(&p.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&p.txn_first.map_or(-1, |o| o as i64).to_be_bytes());
            out.extend_from_slice(&p.markers.to_be_bytes());
            out.push(p.recent.len() as u8);
            for r in &p.recent {
                out.extend_from_slice(&r.first_seq.to_be_bytes());
                out.extend_from_slice(&r.last_seq.to_be_bytes());
                out.extend_from_slice(&r.base_offset.to_be_bytes());
                out.extend_from_slice(&r.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        self.dirty = false;
        out
    }

    /// A snapshot's state, if its bytes are sound (version 1, before transactions, too).
    pub fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        let version = r.u16()?;
        if version != 1 && version != VERSION {
            return None;
        }
        let count = r.u32()? as usize;
        if count > SNAPSHOT_PRODUCERS_MAX {
            return None;
        }
        let mut state = ProducerState::default();
        for _ in 0..count {
            let id = r.u64()? as i64;
            let mut p = Producer::new(r.u16()? as i16, r.u64()? as i64);
            if version >= 2 {
                p.coordinator_epoch = r.u32()? as i32;
                p.txn_first = u64::try_from(r.u64()? as i64).ok();
                p.markers = r.u64()?;
            }
            let n = r.u8()? as usize;
            if n > RECENT_BATCHES {
                return None;
            }
            for _ in 0..n {
                let (first_seq, last_seq) = (r.u32()? as i32, r.u32()? as i32);
                let (base_offset, last_offset) = (r.u64()?, r.u64()?);
                p.recent.push_back(Recent { first_seq, last_seq, base_offset, last_offset });
            }
            if let Some(first) = p.txn_first {
                state.ongoing.insert(first, id);
            }
            state.producers.insert(id, p);
        }
        r.0.is_empty().then_some(state)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::ATTR_TRANSACTIONAL;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32, offset: u64) -> BatchInfo {
        BatchInfo {
            leader_epoch: -1,
            bytes: 100,
            base_offset: offset as i64,
            offset_count: count as u32,
            max_timestamp: 1_000,
            records_count: count,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            attributes: 0,
        }
    }

    fn txn(pid: i64, epoch: i16, seq: i32, offset: u64) -> BatchInfo {
        BatchInfo { attributes: ATTR_TRANSACTIONAL, ..batch(pid, epoch, seq, 1, offset) }
    }

    fn marker(pid: i64, epoch: i16, offset: u64) -> BatchInfo {
        BatchInfo { attributes: ATTR_TRANSACTIONAL | crate::storage::batch::ATTR_CONTROL, ..batch(pid, epoch, -1, 1, offset) }
    }

    const COMMIT: Marker = Marker { commit: true, coordinator_epoch: 0 };
    const ABORT: Marker = Marker { commit: false, coordinator_epoch: 0 };

    #[test]
    fn kafkas_sequence_rules() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(&batch(1, 0, 42, 1, 0), None), Check::Append, "an unknown producer starts anywhere");
        s.record(&batch(1, 0, 0, 3, 10), None);
        assert_eq!(s.check(&batch(1, 0, 3, 2, 13), None), Check::Append);
        assert_eq!(s.check(&batch(1, 0, 0, 3, 13), None), Check::Duplicate { base_offset: 10, last_offset: 12 });
        assert_eq!(s.check(&batch(1, 0, 0, 2, 13), None), Check::OutOfOrder, "same first sequence, other last: not the same batch");
        assert_eq!(s.check(&batch(1, 0, 7, 1, 13), None), Check::OutOfOrder);
        assert_eq!(s.check(&batch(1, 1, 0, 1, 13), None), Check::Append, "a bumped epoch restarts at 0");
        assert_eq!(s.check(&batch(1, 1, 5, 1, 13), None), Check::OutOfOrder);
        s.record(&batch(1, 1, 0, 1, 13), None);
        assert_eq!(s.check(&batch(1, 0, 3, 1, 14), None), Check::StaleEpoch);
        s.record(&batch(2, 0, i32::MAX, 1, 14), None);
        assert_eq!(s.check(&batch(2, 0, 0, 1, 15), None), Check::Append, "sequences wrap");
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.record(&batch(9, 0, i, 1, 100 + i as u64), None);
        }
        // A producer with all its batches takes the most bytes `SNAPSHOT_BYTES_MAX` allows for one.
        assert_eq!(s.clone().encode().len() as u64, (SNAPSHOT_BYTES_MAX - 10) / SNAPSHOT_PRODUCERS_MAX as u64 + 10);
        assert_eq!(s.check(&batch(9, 0, 2, 1, 0), None), Check::Duplicate { base_offset: 102, last_offset: 102 });
        assert_eq!(s.check(&batch(9, 0, 1, 1, 0), None), Check::OutOfOrder, "too old to be known a duplicate");
    }

    #[test]
    fn a_transaction_opens_with_the_coordinators_word_and_a_marker_ends_it() {
        let mut s = ProducerState::default();
        let guard = s.guard(5);
        assert_eq!(s.check(&txn(5, 0, 0, 10), None), Check::InvalidTxnState, "not vouched for by the coordinator");
        assert_eq!(s.check(&txn(5, 0, 0, 10), Some(guard)), Check::Append);
        s.record(&txn(5, 0, 0, 10), None);
        s.record(&txn(6, 0, 0, 11), None);
        assert_eq!(s.first_open_transaction(), Some(10));
        assert_eq!(s.check(&txn(5, 0, 1, 12), None), Check::Append, "open: no word needed");
        assert_eq!(s.check(&batch(5, 0, 1, 1, 12), None), Check::InvalidTxnState, "a plain batch inside a transaction");
        let done = s.record(&marker(5, 0, 12), Some(ABORT));
        assert_eq!(done, Some(CompletedTxn { producer_id: 5, first_offset: 10, marker_offset: 12, aborted: true }));
        assert_eq!(s.first_open_transaction(), Some(11));
        assert_eq!(s.check(&txn(5, 0, 1, 13), Some(guard)), Check::InvalidTxnState, "a word given before the marker is void");
        assert_eq!(s.check(&txn(5, 0, 1, 13), Some(s.guard(5))), Check::Append, "the sequence goes on across transactions");
        assert_eq!(s.check(&txn(5, 0, 0, 13), None), Check::Duplicate { base_offset: 10, last_offset: 10 }, "a late retry");
        assert_eq!(s.record(&marker(6, 0, 13), Some(COMMIT)).map(|t| t.aborted), Some(false));
        assert_eq!(s.first_open_transaction(), None);
        assert_eq!(s.record(&marker(6, 0, 14), Some(COMMIT)), None, "a marker of no transaction (a partition without data)");
        // Markers: older epochs and older coordinator epochs are refused; a fence brings a new epoch.
        assert_eq!(s.check_marker(6, 1, Marker { commit: false, coordinator_epoch: 0 }), Check::Append);
        s.record(&marker(6, 1, 15), Some(Marker { commit: false, coordinator_epoch: 2 }));
        assert_eq!(s.check_marker(6, 0, COMMIT), Check::StaleEpoch);
        assert_eq!(s.check_marker(6, 1, Marker { commit: true, coordinator_epoch: 1 }), Check::CoordinatorFenced);
        assert_eq!(s.check(&txn(6, 1, 3, 16), Some(s.guard(6))), Check::OutOfOrder, "a new epoch from a marker restarts at 0");
        assert_eq!(s.check(&txn(6, 0, 1, 16), Some(s.guard(6))), Check::StaleEpoch, "the fenced producer");
    }

    #[test]
    fn expiry_and_snapshots_keep_open_transactions() {
        let mut s = ProducerState::default();
        s.record(&batch(1, 0, 0, 1, 0), None);
        s.record(&batch(1, 0, 1, 1, 1), None);
        s.record(&batch(2, 3, 0, 2, 2), None);
        let g = s.guard(3);
        assert_eq!(s.check(&txn(3, 0, 0, 4), Some(g)), Check::Append);
        s.record(&txn(3, 0, 0, 4), None);
        s.record(&marker(4, 2, 5), Some(Marker { commit: true, coordinator_epoch: 9 }));
        let bytes = s.clone().encode();
        let decoded = ProducerState::decode(&bytes).unwrap();
        assert_eq!((&decoded.producers, &decoded.ongoing), (&s.producers, &s.ongoing));
        let mut damaged = bytes.clone();
        damaged[7] ^= 1;
        assert_eq!(ProducerState::decode(&damaged), None);
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
        assert!(
            s.is_dirty()
                && !{
                    let mut c = s.clone();
                    c.encode();
                    c.is_dirty()
                }
        );
        s.expire(2, 0);
        assert_eq!(s.len(), 3, "producer 1's last batch is below the log start; 3 has a transaction open");
        s.expire(0, 1_001);
        assert_eq!(s.len(), 1, "expired by time, but not producer 3");
        assert_eq!(s.txn_epoch(3), Some(0));
    }

    #[test]
    fn version_1_snapshots_are_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&8i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.extend_from_slice(&1_000i64.to_be_bytes());
        v1.push(1);
        for v in [0u32, 0] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        for v in [7u64, 7] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let s = ProducerState::decode(&v1).unwrap();
        assert_eq!(s.check(&batch(8, 2, 0, 1, 9), None), Check::Duplicate { base_offset: 7, last_offset: 7 });
        assert_eq!(s.txn_epoch(8), None);
    }
}
