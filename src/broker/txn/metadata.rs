//! One transactional id's state, and Kafka's transitions of it (`TransactionMetadata` and
//! `TransactionCoordinator` in Kafka's source): which request may do what in which state, and
//! with which error code it is refused. Pure: the coordinator persists the state a transition
//! returns before it applies it.

use crate::broker::errors;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn from_id(id: u8) -> Option<TxnState> {
        use TxnState::*;
        [Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence].get(usize::from(id)).copied()
    }

    /// Kafka's name (DescribeTransactions, ListTransactions and its filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// An epoch this high is not handed out: a producer reaching it gets a new producer id, so that
/// the coordinator can always fence once more.
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The id an exhausted epoch replaced (-1: none): a producer retrying with it is not fenced.
    pub previous_producer_id: i64,
    /// -1 until the first InitProducerId completes.
    pub epoch: i16,
    /// The epoch before the last bump (-1: none): a retry of that bump gets the current one back.
    /// Kafka keeps this in memory only; persisting it spares a recovering producer a fence.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions in the transaction (the offsets partition too, after AddOffsetsToTxn).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the transaction began (its first AddPartitionsToTxn); -1 with none.
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What InitProducerId leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Init {
    /// Persist this, then answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// A transaction is open: persist this (its abort, at a bumped epoch that fences the old
    /// producer), write its markers, and answer CONCURRENT_TRANSACTIONS (the client retries).
    Fence(TxnMetadata),
}

/// What EndTxn leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Persist this, write the markers, then persist `completed()`.
    Prepare(TxnMetadata),
    /// A retry of an end already complete: answer NONE.
    Done,
}

impl TxnMetadata {
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            previous_producer_id: -1,
            epoch: -1,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// InitProducerId with this transactional id. `requested`: the producer id and epoch of a
    /// producer recovering from an error (KIP-360), or none; `new_id` gives a fresh producer id.
    pub fn init(&self, requested: Option<(i64, i16)>, timeout_ms: i32, now_ms: i64, new_id: impl FnOnce() -> i64) -> Result<Init, i16> {
        if let Some((id, epoch)) = requested {
            let known = self.epoch == -1 || id == self.producer_id || (id == self.previous_producer_id && epoch >= EPOCH_EXHAUSTED);
            if !known {
                return Err(errors::PRODUCER_FENCED);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence | TxnState::Dead => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing => Ok(Init::Fence(self.fenced(now_ms))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = TxnMetadata {
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now_ms,
                    ..self.clone()
                };
                let expected = requested.map(|(_, e)| e);
                if self.epoch >= EPOCH_EXHAUSTED && expected.is_none_or(|e| e == self.epoch) {
                    next.previous_producer_id = self.producer_id;
                    next.producer_id = new_id();
                    next.last_epoch = if requested.is_some() { self.epoch } else { -1 };
                    next.epoch = 0;
                } else {
                    match expected {
                        None => (next.epoch, next.last_epoch) = (self.epoch + 1, -1),
                        Some(e) if e == self.epoch || self.epoch == -1 => (next.epoch, next.last_epoch) = (self.epoch + 1, self.epoch),
                        // The producer retries a bump that succeeded: it gets the current epoch.
                        Some(e) if e == self.last_epoch => return Ok(Init::Ready(self.clone())),
                        Some(_) => return Err(errors::PRODUCER_FENCED),
                    }
                }
                Ok(Init::Ready(next))
            }
        }
    }

    /// The abort that fences this transaction's producer: its epoch bumped (the markers carry it).
    /// InitProducerId hands out at most `EPOCH_EXHAUSTED`, so the bump fits; at `i16::MAX` it stays
    /// (a wrapped epoch would make every partition refuse the markers as stale, and the
    /// transaction would never end).
    pub fn fenced(&self, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            epoch: self.epoch.saturating_add(1),
            last_epoch: -1,
            state: TxnState::PrepareAbort,
            last_update_ms: now_ms,
            ..self.clone()
        }
    }

    /// The request's producer is this transaction's current one. `i16::MAX` is only ever a fence's
    /// epoch, never handed out: a producer using it guessed it.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        } else if epoch != self.epoch || epoch == i16::MAX {
            Err(errors::PRODUCER_FENCED)
        } else {
            Ok(())
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the offsets partition): `None` when they are
    /// all in the transaction already (nothing to persist).
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, i16> {
        self.check_producer(producer_id, epoch)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence | TxnState::Dead => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => Ok(None),
            state => {
                let mut next = self.clone();
                next.partitions.extend(partitions.iter().cloned());
                if state != TxnState::Ongoing {
                    next.start_ms = now_ms;
                }
                next.state = TxnState::Ongoing;
                next.last_update_ms = now_ms;
                Ok(Some(next))
            }
        }
    }

    /// EndTxn: commit or abort.
    pub fn end(&self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Result<End, i16> {
        self.check_producer(producer_id, epoch)?;
        let prepare = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(End::Prepare(TxnMetadata { state: prepare, last_update_ms: now_ms, ..self.clone() })),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(End::Done),
            (s, _) if s == prepare => Err(errors::CONCURRENT_TRANSACTIONS),
            (TxnState::PrepareEpochFence | TxnState::Dead, _) => Err(errors::CONCURRENT_TRANSACTIONS),
            _ => Err(errors::INVALID_TXN_STATE),
        }
    }

    /// Once every marker of a prepared end is written: the transaction is complete.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let state = if self.state == TxnState::PrepareCommit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        TxnMetadata { state, partitions: BTreeSet::new(), last_update_ms: now_ms, ..self.clone() }
    }

    /// Whether the coordinator owes markers (a prepared end not completed: after a restart too).
    pub fn is_prepared(&self) -> bool {
        self.state.is_prepare()
    }

    /// An open transaction past its timeout: the coordinator aborts it.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && self.start_ms + i64::from(self.timeout_ms) < now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, n: i32) -> (String, i32) {
        (topic.to_string(), n)
    }

    fn ready(i: Result<Init, i16>) -> TxnMetadata {
        match i {
            Ok(Init::Ready(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_from_init_to_commit_with_kafkas_errors() {
        let m = TxnMetadata::new(100, 60_000, 0);
        let m = ready(m.init(None, 60_000, 1, || unreachable!()));
        assert_eq!((m.producer_id, m.epoch, m.state), (100, 0, TxnState::Empty));
        assert_eq!(m.end(100, 0, true, 2), Err(errors::INVALID_TXN_STATE), "nothing to end");
        assert_eq!(m.add_partitions(101, 0, &[p("t", 0)], 2), Err(errors::INVALID_PRODUCER_ID_MAPPING));
        assert_eq!(m.add_partitions(100, 1, &[p("t", 0)], 2), Err(errors::PRODUCER_FENCED));
        let m = m.add_partitions(100, 0, &[p("t", 0)], 2).unwrap().unwrap();
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 2));
        assert_eq!(m.add_partitions(100, 0, &[p("t", 0)], 3), Ok(None), "already in");
        let m = m.add_partitions(100, 0, &[p("t", 1)], 3).unwrap().unwrap();
        assert_eq!((m.partitions.len(), m.start_ms), (2, 2), "the start stays");
        let End::Prepare(prepared) = m.end(100, 0, true, 4).unwrap() else { panic!() };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(prepared.end(100, 0, true, 5), Err(errors::CONCURRENT_TRANSACTIONS), "a retry while markers go out");
        assert_eq!(prepared.end(100, 0, false, 5), Err(errors::INVALID_TXN_STATE));
        assert_eq!(prepared.add_partitions(100, 0, &[p("t", 2)], 5), Err(errors::CONCURRENT_TRANSACTIONS));
        let done = prepared.completed(6);
        assert_eq!((done.state, done.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(done.end(100, 0, true, 7), Ok(End::Done), "a retry of the commit");
        assert_eq!(done.end(100, 0, false, 7), Err(errors::INVALID_TXN_STATE));
        let next = done.add_partitions(100, 0, &[p("t", 0)], 8).unwrap().unwrap();
        assert_eq!((next.state, next.start_ms), (TxnState::Ongoing, 8), "the next transaction");
        assert!(next.timed_out(8 + 60_001) && !next.timed_out(8 + 60_000));
    }

    #[test]
    fn init_bumps_fences_and_rotates_like_kafka() {
        let m = ready(TxnMetadata::new(100, 60_000, 0).init(None, 60_000, 0, || unreachable!()));
        let open = m.add_partitions(100, 0, &[p("t", 0)], 1).unwrap().unwrap();
        // A second instance with the same transactional id: the open transaction is aborted at a
        // bumped epoch, which fences the first.
        let Ok(Init::Fence(fence)) = open.init(None, 60_000, 2, || unreachable!()) else { panic!() };
        assert_eq!((fence.epoch, fence.state), (1, TxnState::PrepareAbort));
        assert_eq!(fence.init(None, 60_000, 3, || unreachable!()), Err(errors::CONCURRENT_TRANSACTIONS));
        let aborted = fence.completed(3);
        let again = ready(aborted.init(None, 60_000, 4, || unreachable!()));
        assert_eq!(again.epoch, 2, "the new instance gets E+2");
        assert_eq!(again.add_partitions(100, 0, &[p("t", 0)], 5), Err(errors::PRODUCER_FENCED), "the old one is fenced");
        // KIP-360: the producer names its id and epoch; a retry of a bump that succeeded gets it back.
        let bumped = ready(again.init(Some((100, 2)), 60_000, 6, || unreachable!()));
        assert_eq!((bumped.epoch, bumped.last_epoch), (3, 2));
        assert_eq!(ready(bumped.init(Some((100, 2)), 60_000, 7, || unreachable!())).epoch, 3);
        assert_eq!(bumped.init(Some((100, 1)), 60_000, 7, || unreachable!()), Err(errors::PRODUCER_FENCED));
        assert_eq!(bumped.init(Some((555, 3)), 60_000, 7, || unreachable!()), Err(errors::PRODUCER_FENCED));
        // An exhausted epoch gets a new producer id at epoch 0.
        let worn = TxnMetadata { epoch: EPOCH_EXHAUSTED, ..bumped.clone() };
        let rotated = ready(worn.init(None, 60_000, 8, || 200));
        assert_eq!((rotated.producer_id, rotated.previous_producer_id, rotated.epoch), (200, 100, 0));
        // A transaction at the last epoch handed out is fenced at i16::MAX, which no one may use
        // after, and a fence there cannot wrap.
        let last = TxnMetadata { epoch: EPOCH_EXHAUSTED, state: TxnState::Ongoing, ..bumped.clone() };
        let Ok(Init::Fence(fence)) = last.init(None, 60_000, 9, || unreachable!()) else { panic!() };
        assert_eq!(fence.epoch, i16::MAX);
        let aborted = fence.completed(10);
        assert_eq!(aborted.add_partitions(100, i16::MAX, &[p("t", 0)], 11), Err(errors::PRODUCER_FENCED), "a guessed epoch");
        assert_eq!(TxnMetadata { state: TxnState::Ongoing, ..aborted }.fenced(12).epoch, i16::MAX);
    }
}
