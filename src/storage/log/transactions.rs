//! A log's transactions: the markers the coordinator appends, the last stable offset (what
//! read_committed consumers may read), and the aborted transactions a read_committed fetch names.

use super::*;
use crate::storage::control;
use crate::storage::producer_state::ActiveProducer;

impl Log {
    /// What a transactional batch of `producer_id` needs to open a transaction here, to take before
    /// asking the coordinator whether the partition is in it (`append_in_txn`).
    pub fn txn_guard(&self, producer_id: i64) -> TxnGuard {
        self.state().producers.guard(producer_id)
    }

    /// The epoch of `producer_id`'s open transaction here, if one is open: its batches at that
    /// epoch need no coordinator check.
    pub fn txn_epoch(&self, producer_id: i64) -> Option<i16> {
        self.state().producers.txn_epoch(producer_id)
    }

    /// Its producers, as its written batches left them (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.state().producers_written.active()
    }

    /// Appends the marker ending `producer_id`'s transaction (or none: a partition added to a
    /// transaction that sent it nothing still gets one), as the coordinator at `marker`'s epoch
    /// decided, with the producer's `epoch` (bumped when the coordinator fenced or timed it out).
    pub fn append_marker(&self, producer_id: i64, epoch: i16, marker: Marker, timestamp_ms: i64) -> Result<Appended, LogError> {
        let bytes = control::build(producer_id, epoch, marker, timestamp_ms);
        let len = bytes.len();
        self.append_checked(Bytes::from(bytes), len, None, Some(marker))
    }

    /// (producer id, first offset) of the aborted transactions with data in [`from`, `upper`),
    /// for a read_committed fetch of that range.
    pub fn aborted_transactions(&self, from: u64, upper: u64) -> Vec<(i64, u64)> {
        let s = self.state();
        let mut out = Vec::new();
        let first = s.segments.partition_point(|seg| seg.next_offset <= from);
        for seg in &s.segments[first..] {
            if seg.txns.collect(from, upper, &mut out) {
                break;
            }
        }
        out
    }
}

impl State {
    /// Kafka's last stable offset: where the oldest transaction still open began (or one whose
    /// marker is not below the high watermark yet), at most the high watermark.
    pub(super) fn last_stable_offset(&self) -> u64 {
        let hw = self.high_watermark();
        let open = self.producers_written.first_open_transaction();
        let every_batch = self.cfg.flush == FlushPolicy::EveryBatch;
        let unstable = self.unstable_txns.iter().find(|(_, marker)| every_batch && **marker >= hw).map(|(first, _)| *first);
        open.into_iter().chain(unstable).fold(hw, u64::min).max(self.log_start).min(hw)
    }
}
