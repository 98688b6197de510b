//! The transaction coordinator's durable state: one `record_file` per transaction-state partition,
//! `<data-dir>/__transaction_state/<N>.log`, like Kafka's `__transaction_state`. Each record is a
//! transactional id's whole state after a transition (the last one wins at replay), or its removal:
//!
//! ```text
//! kind u8 (0 state, 1 removed) | transactional_id (u16 len + UTF-8) | then, for a state:
//! producer_id i64 | previous_producer_id i64 | epoch i16 | last_epoch i16 | timeout_ms i32 |
//! state u8 (Kafka's ids: 0 Empty … 5 CompleteAbort) | start_ms i64 | last_update_ms i64 |
//! partitions u32 | per partition: topic (u16 len + UTF-8) | partition i32
//! ```
//!
//! big-endian. Every record is written before the transition is applied or answered, and fsynced
//! first when a power loss must keep it (`coordinator::must_fsync`, `docs/transactions.md`).

use super::metadata::{TxnMetadata, TxnState};
use crate::broker::record_file;
use std::collections::{BTreeSet, HashMap};

pub const TXN_PARTITIONS: u32 = 16;

pub fn partition_for(transactional_id: &str) -> u32 {
    (shards::stable_hash(transactional_id.as_bytes()) % u64::from(TXN_PARTITIONS)) as u32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    State(String, TxnMetadata),
    Removed(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "name too long for a transaction record"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends `record` to `out`, framed.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut p = Vec::with_capacity(64);
    match record {
        Record::Removed(id) => {
            p.push(1);
            put_str(&mut p, id)?;
        }
        Record::State(id, m) => {
            p.push(0);
            put_str(&mut p, id)?;
            p.extend_from_slice(&m.producer_id.to_be_bytes());
            p.extend_from_slice(&m.previous_producer_id.to_be_bytes());
            p.extend_from_slice(&m.epoch.to_be_bytes());
            p.extend_from_slice(&m.last_epoch.to_be_bytes());
            p.extend_from_slice(&m.timeout_ms.to_be_bytes());
            p.push(m.state as u8);
            p.extend_from_slice(&m.start_ms.to_be_bytes());
            p.extend_from_slice(&m.last_update_ms.to_be_bytes());
            p.extend_from_slice(&(m.partitions.len() as u32).to_be_bytes());
            for (topic, partition) in &m.partitions {
                put_str(&mut p, topic)?;
                p.extend_from_slice(&partition.to_be_bytes());
            }
        }
    }
    record_file::frame(&p, out);
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(u16::from_be_bytes(self.take()?));
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }
}

pub fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let [kind] = c.take()?;
    let id = c.str()?;
    if kind == 1 {
        return c.0.is_empty().then_some(Record::Removed(id));
    }
    let producer_id = i64::from_be_bytes(c.take()?);
    let previous_producer_id = i64::from_be_bytes(c.take()?);
    let epoch = i16::from_be_bytes(c.take()?);
    let last_epoch = i16::from_be_bytes(c.take()?);
    let timeout_ms = i32::from_be_bytes(c.take()?);
    let state = TxnState::from_id(c.take::<1>()?[0])?;
    let start_ms = i64::from_be_bytes(c.take()?);
    let last_update_ms = i64::from_be_bytes(c.take()?);
    let count = u32::from_be_bytes(c.take()?);
    let mut partitions = BTreeSet::new();
    for _ in 0..count {
        let topic = c.str()?;
        partitions.insert((topic, i32::from_be_bytes(c.take()?)));
    }
    let m = TxnMetadata { producer_id, previous_producer_id, epoch, last_epoch, timeout_ms, state, partitions, start_ms, last_update_ms };
    (kind == 0 && c.0.is_empty()).then_some(Record::State(id, m))
}

pub fn apply(txns: &mut HashMap<String, TxnMetadata>, record: Record) {
    match record {
        Record::State(id, m) => {
            txns.insert(id, m);
        }
        Record::Removed(id) => {
            txns.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_the_last_state_wins() {
        let mut m = TxnMetadata::new(7, 60_000, 5);
        m.partitions.insert(("t".into(), 3));
        m.state = TxnState::PrepareCommit;
        let records =
            [Record::State("a".into(), TxnMetadata::new(7, 1, 1)), Record::State("a".into(), m.clone()), Record::Removed("b".into())];
        let mut bytes = Vec::new();
        for r in &records {
            encode(r, &mut bytes).unwrap();
        }
        let replayed = record_file::replay(&bytes, decode);
        assert_eq!(replayed.records, records);
        let mut txns = HashMap::new();
        replayed.records.into_iter().for_each(|r| apply(&mut txns, r));
        assert_eq!(txns.get("a"), Some(&m));
    }
}
