//! Idempotent producers' state in one partition (Kafka's `ProducerStateManager`): per producer id,
//! its epoch and its last five batches' sequence ranges and offsets, so that a retried batch is
//! answered with its original offsets instead of being appended twice, and a gap in sequences is
//! refused.
//!
//! The batch headers in the log carry producer id, epoch and sequences, so the state is derived
//! from the log: rebuilt at recovery by reading the headers from the last snapshot on. Snapshots
//! are taken when a segment rolls and at close (`<offset>.snapshot`, Kafka's name, our layout):
//!
//! ```text
//! version u16 (1) | producers u32 | per producer:
//!   producer_id i64 | epoch i16 | last_timestamp i64 | batches u8 | per batch:
//!     first_sequence i32 | last_sequence i32 | base_offset u64 | last_offset u64
//! crc32c of all the above u32
//! ```
//!
//! all big-endian. A snapshot at offset N is the state after every batch below N; one past the log
//! end (a crash took what followed) or damaged is ignored. Producers expire when their last batch's
//! timestamp is `producer.id.expiration.ms` old, and go when retention or DeleteRecords removed
//! their last batch, as in Kafka: the map is bounded by the producers active lately.

use super::batch::{crc32c, BatchInfo};
use std::collections::{BTreeMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka keeps 5: a producer has at most
/// 5 requests in flight per connection with idempotence on).
pub const RECENT_BATCHES: usize = 5;
const VERSION: u16 = 1;
/// Producers a snapshot may hold: bounds what a damaged or hostile file makes us allocate.
const SNAPSHOT_PRODUCERS_MAX: usize = 1 << 20;

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
    /// Oldest first: the last `RECENT_BATCHES` written, and those queued after them (a snapshot
    /// taken while batches are queued holds the five below it).
    recent: VecDeque<Recent>,
    last_timestamp: i64,
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
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, Producer>,
    /// Changed since the last snapshot.
    dirty: bool,
}

fn last_sequence(info: &BatchInfo) -> i32 {
    // Sequences wrap at i32::MAX to 0, as Kafka's do.
    ((i64::from(info.base_sequence) + i64::from(info.records_count) - 1) % (i64::from(i32::MAX) + 1)) as i32
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

    /// Kafka's checks, in its order: epoch, duplicate, sequence. An unknown producer (never seen,
    /// expired, or whose batches retention removed) may start at any sequence.
    pub fn check(&self, info: &BatchInfo) -> Check {
        if info.producer_id < 0 {
            return Check::Append;
        }
        let Some(p) = self.producers.get(&info.producer_id) else {
            return Check::Append;
        };
        if info.producer_epoch < p.epoch {
            return Check::StaleEpoch;
        }
        if info.producer_epoch != p.epoch {
            // A new epoch starts its sequences at 0.
            return if info.base_sequence == 0 { Check::Append } else { Check::OutOfOrder };
        }
        let last_seq = last_sequence(info);
        if let Some(r) = p.recent.iter().rev().take(RECENT_BATCHES).find(|r| r.first_seq == info.base_sequence && r.last_seq == last_seq) {
            return Check::Duplicate { base_offset: r.base_offset, last_offset: r.last_offset };
        }
        match p.recent.back() {
            Some(r) if !in_sequence(r.last_seq, info.base_sequence) => Check::OutOfOrder,
            None if info.base_sequence != 0 => Check::OutOfOrder,
            _ => Check::Append,
        }
    }

    /// The verdict on batches appended together: the first duplicate or refusal, else `Append`
    /// (each batch checked against the state as the ones before it would leave it).
    pub fn check_all<'a>(&self, batches: impl Iterator<Item = &'a BatchInfo> + Clone) -> Check {
        if batches.clone().filter(|b| b.producer_id >= 0).count() <= 1 {
            return batches.map(|b| self.check(b)).find(|c| *c != Check::Append).unwrap_or(Check::Append);
        }
        let mut scratch = self.clone();
        for b in batches {
            match scratch.check(b) {
                Check::Append => scratch.record(b, 0),
                other => return other,
            }
        }
        Check::Append
    }

    /// Records batch `info`, now at offsets from its `base_offset`; offsets below `written` are
    /// in the log's files.
    pub fn record(&mut self, info: &BatchInfo, written: u64) {
        if info.producer_id < 0 {
            return;
        }
        let base_offset = info.base_offset as u64;
        let recent = Recent {
            first_seq: info.base_sequence,
            last_seq: last_sequence(info),
            base_offset,
            last_offset: base_offset + u64::from(info.offset_count) - 1,
        };
        let p = self.producers.entry(info.producer_id).or_insert(Producer {
            epoch: info.producer_epoch,
            recent: VecDeque::new(),
            last_timestamp: info.max_timestamp,
        });
        if p.recent.back().is_some_and(|r| r.base_offset >= base_offset) {
            return; // known already: a snapshot taken while it was queued, then the walk after it
        }
        if p.epoch != info.producer_epoch {
            p.epoch = info.producer_epoch;
            p.recent.clear();
        }
        p.recent.push_back(recent);
        while p.recent.len() > RECENT_BATCHES && p.recent.partition_point(|r| r.base_offset < written) > RECENT_BATCHES {
            p.recent.pop_front();
        }
        p.last_timestamp = p.last_timestamp.max(info.max_timestamp);
        self.dirty = true;
    }

    /// Forgets batches at or past `offset` (they were never written: a failed write dropped them);
    /// a producer left with none is forgotten.
    pub fn truncate_to(&mut self, offset: u64) {
        self.producers.retain(|_, p| {
            while p.recent.back().is_some_and(|r| r.base_offset >= offset) {
                p.recent.pop_back();
            }
            !p.recent.is_empty()
        });
        self.dirty = true;
    }

    /// Forgets producers whose last batch is below `log_start` (retention, DeleteRecords) or whose
    /// last timestamp is older than `expire_before_ms`.
    pub fn expire(&mut self, log_start: u64, expire_before_ms: i64) {
        let before = self.producers.len();
        self.producers.retain(|_, p| p.recent.back().is_some_and(|r| r.last_offset >= log_start) && p.last_timestamp >= expire_before_ms);
        self.dirty |= self.producers.len() != before;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The bytes of a snapshot at `offset`: the state without the batches at or past it (queued,
    /// not written yet). The state counts as saved from now on.
    pub fn encode_below(&mut self, offset: u64) -> Vec<u8> {
        let below = |p: &Producer| p.recent.iter().filter(|r| r.base_offset < offset).count().min(RECENT_BATCHES);
        let producers: Vec<(&i64, &Producer)> = self.producers.iter().filter(|(_, p)| below(p) > 0).collect();
        let mut out = Vec::with_capacity(6 + producers.len() * 64);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (id, p) in producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.last_timestamp.to_be_bytes());
            out.push(below(p) as u8);
            let kept = p.recent.iter().filter(|r| r.base_offset < offset);
            for r in kept.clone().skip(kept.count() - below(p)) {
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

    /// A snapshot's state, if its bytes are sound.
    pub fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.u16()? != VERSION {
            return None;
        }
        let count = r.u32()? as usize;
        if count > SNAPSHOT_PRODUCERS_MAX {
            return None;
        }
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let id = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let last_timestamp = r.u64()? as i64;
            let n = r.u8()? as usize;
            if n > RECENT_BATCHES {
                return None;
            }
            let mut recent = VecDeque::with_capacity(n);
            for _ in 0..n {
                let (first_seq, last_seq) = (r.u32()? as i32, r.u32()? as i32);
                let (base_offset, last_offset) = (r.u64()?, r.u64()?);
                recent.push_back(Recent { first_seq, last_seq, base_offset, last_offset });
            }
            producers.insert(id, Producer { epoch, recent, last_timestamp });
        }
        r.0.is_empty().then_some(ProducerState { producers, dirty: false })
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

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32, offset: u64) -> BatchInfo {
        BatchInfo {
            bytes: 100,
            base_offset: offset as i64,
            offset_count: count as u32,
            max_timestamp: 1_000,
            records_count: count,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn kafkas_sequence_rules() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(&batch(1, 0, 42, 1, 0)), Check::Append, "an unknown producer starts anywhere");
        s.record(&batch(1, 0, 0, 3, 10), u64::MAX);
        assert_eq!(s.check(&batch(1, 0, 3, 2, 13)), Check::Append);
        assert_eq!(s.check(&batch(1, 0, 0, 3, 13)), Check::Duplicate { base_offset: 10, last_offset: 12 });
        assert_eq!(s.check(&batch(1, 0, 0, 2, 13)), Check::OutOfOrder, "same first sequence, other last: not the same batch");
        assert_eq!(s.check(&batch(1, 0, 7, 1, 13)), Check::OutOfOrder);
        assert_eq!(s.check(&batch(1, 1, 0, 1, 13)), Check::Append, "a bumped epoch restarts at 0");
        assert_eq!(s.check(&batch(1, 1, 5, 1, 13)), Check::OutOfOrder);
        s.record(&batch(1, 1, 0, 1, 13), u64::MAX);
        assert_eq!(s.check(&batch(1, 0, 3, 1, 14)), Check::StaleEpoch);
        s.record(&batch(2, 0, i32::MAX, 1, 14), u64::MAX);
        assert_eq!(s.check(&batch(2, 0, 0, 1, 15)), Check::Append, "sequences wrap");
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.record(&batch(9, 0, i, 1, 100 + i as u64), u64::MAX);
        }
        assert_eq!(s.check(&batch(9, 0, 2, 1, 0)), Check::Duplicate { base_offset: 102, last_offset: 102 });
        assert_eq!(s.check(&batch(9, 0, 1, 1, 0)), Check::OutOfOrder, "too old to be known a duplicate");
    }

    #[test]
    fn truncation_expiry_and_snapshots() {
        let mut s = ProducerState::default();
        s.record(&batch(1, 0, 0, 1, 0), u64::MAX);
        s.record(&batch(1, 0, 1, 1, 1), u64::MAX);
        s.record(&batch(2, 3, 0, 2, 2), u64::MAX);
        let mut copy = s.clone();
        let bytes = copy.encode_below(u64::MAX);
        let mut partial = s.clone();
        assert_eq!(ProducerState::decode(&partial.encode_below(2)).map(|d| d.len()), Some(1), "producer 2's batch is at 2");
        assert!(!copy.is_dirty());
        assert_eq!(ProducerState::decode(&bytes).map(|d| d.producers), Some(s.producers.clone()));
        let mut damaged = bytes.clone();
        damaged[7] ^= 1;
        assert_eq!(ProducerState::decode(&damaged), None);
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
        s.truncate_to(1);
        assert_eq!(s.len(), 1, "producer 1 kept its batch at 0; producer 2's only batch was dropped");
        assert_eq!(s.check(&batch(1, 0, 1, 1, 1)), Check::Append);
        s.expire(1, 0);
        assert!(s.is_empty(), "its last batch is below the log start");
        s.record(&batch(3, 0, 0, 1, 5), u64::MAX);
        s.expire(0, 1_001);
        assert!(s.is_empty(), "expired by time");
    }
}
