//! Control batches: the commit and abort markers that end a transaction in each of its partitions,
//! as Kafka writes them (KIP-98). One uncompressed v2 batch of one record, 78 bytes:
//!
//! ```text
//! header: attributes 0x0030 (transactional | control), lastOffsetDelta 0, both timestamps the
//!         coordinator's clock, producerId and producerEpoch of the transaction, baseSequence -1,
//!         recordsCount 1
//! record: key   = version i16 (0) | type i16 (0 abort, 1 commit)
//!         value = version i16 (0) | coordinator epoch i32
//! ```
//!
//! Clients never send control batches (the log refuses them from producers); consumers skip them
//! and read_committed ones use them to know where an aborted transaction ends.

use super::batch::{self, NewRecord, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use std::collections::HashSet;

/// What a marker says: how the transaction ended, and the coordinator epoch that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// The marker batch ending producer `producer_id`'s transaction at `epoch` (base offset 0, for the
/// log to assign).
pub fn build(producer_id: i64, epoch: i16, marker: Marker, timestamp_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(if marker.commit { COMMIT } else { ABORT }).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = NewRecord { key: Some(&key), value: Some(&value), headers: &[] };
    let mut b = batch::frame(&batch::encode_records(&[record]), 1, timestamp_ms, ATTR_TRANSACTIONAL | ATTR_CONTROL);
    // Markers carry no sequence (-1, as `frame` left it).
    batch::set_producer(&mut b, producer_id, epoch, -1, true);
    b
}

/// The marker a control batch holds; `None` for a control record of another kind (Kafka's KRaft
/// types, which consumers skip) or one that does not parse.
pub fn parse(batch_bytes: &[u8]) -> Option<Marker> {
    let records = batch::records(batch_bytes)?;
    let record = records.first()?;
    let key = record.key?;
    if key.len() != 4 || i16::from_be_bytes([key[0], key[1]]) != 0 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        COMMIT => true,
        ABORT => false,
        _ => return None,
    };
    // Later value versions only add fields after these.
    let value = record.value?;
    let coordinator_epoch = i32::from_be_bytes(value.get(2..6)?.try_into().ok()?);
    Some(Marker { commit, coordinator_epoch })
}

/// What a consumer shows of one fetch response's batches, as Kafka's consumer and librdkafka do:
/// never a control batch, and under read_committed no batch of a producer named in the response's
/// aborted transactions from that entry's first offset up to the producer's abort marker.
pub struct ConsumerFilter {
    /// (producer id, first offset) not reached yet, the lowest first offset last.
    aborted: Vec<(i64, u64)>,
    skipping: HashSet<i64>,
}

impl ConsumerFilter {
    /// For a response with `aborted` transactions (empty under read_uncommitted).
    pub fn new(mut aborted: Vec<(i64, u64)>) -> ConsumerFilter {
        aborted.sort_unstable_by_key(|&(_, first)| std::cmp::Reverse(first));
        ConsumerFilter { aborted, skipping: HashSet::new() }
    }

    /// Whether the batch `bytes` (whole; `info` its header), next in the response, is shown.
    pub fn shows(&mut self, bytes: &[u8], info: &batch::BatchInfo) -> bool {
        let last = info.base_offset as u64 + u64::from(info.offset_count) - 1;
        while self.aborted.last().is_some_and(|&(_, first)| first <= last) {
            self.skipping.extend(self.aborted.pop().map(|(producer, _)| producer));
        }
        if info.is_control() {
            if parse(bytes).is_some_and(|m| !m.commit) {
                self.skipping.remove(&info.producer_id);
            }
            return false;
        }
        !(info.is_transactional() && self.skipping.contains(&info.producer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_kafkas_78_byte_control_batch_and_parses_back() {
        for commit in [true, false] {
            let marker = Marker { commit, coordinator_epoch: 7 };
            let b = build(42, 3, marker, 1_700_000_000_000);
            assert_eq!(b.len(), 78);
            let info = batch::validate(&b).unwrap();
            assert!(info.is_control() && info.is_transactional());
            assert_eq!((info.producer_id, info.producer_epoch, info.base_sequence, info.records_count), (42, 3, -1, 1));
            assert_eq!(parse(&b), Some(marker));
        }
    }

    #[test]
    fn a_consumer_skips_an_aborted_transaction_up_to_its_marker_and_never_shows_markers() {
        let data = |pid: i64, base: u64| {
            let mut b = batch::build(2, 10, 1_000);
            batch::set_producer(&mut b, pid, 0, 0, true);
            batch::set_base_offset(&mut b, base);
            b
        };
        let mut abort = build(1, 0, Marker { commit: false, coordinator_epoch: 0 }, 1_000);
        batch::set_base_offset(&mut abort, 6);
        // Producer 1's transaction from offset 2 was aborted at 6; producer 2's (at 4) committed;
        // producer 1's next one (at 7) is not in the list.
        let batches = [data(1, 0), data(1, 2), data(2, 4), abort, data(1, 7)];
        let mut filter = ConsumerFilter::new(vec![(1, 2)]);
        let shown: Vec<bool> = batches.iter().map(|b| filter.shows(b, &batch::validate(b).unwrap())).collect();
        assert_eq!(shown, [true, false, true, false, true]);
        let mut uncommitted = ConsumerFilter::new(Vec::new());
        let shown: Vec<bool> = batches.iter().map(|b| uncommitted.shows(b, &batch::validate(b).unwrap())).collect();
        assert_eq!(shown, [true, true, true, false, true]);
    }
}
