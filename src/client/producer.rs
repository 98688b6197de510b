//! An idempotent or transactional producer's side of the protocol (KIP-98): its producer id and
//! epoch from InitProducerId, its sequence per partition stamped into each batch, and, with a
//! transactional id, AddPartitionsToTxn and EndTxn with its transaction coordinator.

use super::{check, Cluster, Connection, Result};
use crate::storage::batch;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Errors a coordinator answers while it is busy (ending a transaction, loading): asked again.
const RETRIABLE: [i16; 3] =
    [51 /* CONCURRENT_TRANSACTIONS */, 14 /* COORDINATOR_LOAD_IN_PROGRESS */, 15 /* COORDINATOR_NOT_AVAILABLE */];
const RETRY_FOR: Duration = Duration::from_secs(30);

pub struct Producer {
    pub id: i64,
    pub epoch: i16,
    /// The next sequence of each partition.
    sequences: HashMap<i32, i32>,
    txn: Option<Transactional>,
}

struct Transactional {
    id: String,
    coordinator: Connection,
    /// The partitions of the transaction open, if one is.
    open: Option<Vec<i32>>,
}

impl Producer {
    /// An idempotent producer, or a transactional one with `transactional_id` (whose previous
    /// instance is fenced, its open transaction aborted).
    pub fn init(cluster: &mut Cluster, transactional_id: Option<&str>, transaction_timeout_ms: i32) -> Result<Producer> {
        let mut txn = match transactional_id {
            Some(id) => Some(Transactional { id: id.to_string(), coordinator: cluster.coordinator(1, id)?, open: None }),
            None => None,
        };
        let conn = match &mut txn {
            Some(t) => &mut t.coordinator,
            None => cluster.conn(-1)?,
        };
        let r = retrying(conn, "init producer id", |conn| {
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string())));
            req.transaction_timeout_ms = transaction_timeout_ms;
            call(conn, req, 4).map(|r| (r.error_code, r))
        })?;
        Ok(Producer { id: r.producer_id.0, epoch: r.producer_epoch, sequences: HashMap::new(), txn })
    }

    /// `records` (one batch of `count` records) as this producer's next batch to `partition`.
    pub fn stamp(&mut self, records: &[u8], partition: i32, count: i32) -> Bytes {
        let seq = self.sequences.entry(partition).or_insert(0);
        let mut b = records.to_vec();
        batch::set_producer(&mut b, self.id, self.epoch, *seq, self.txn.is_some());
        *seq = seq.wrapping_add(count) & i32::MAX;
        Bytes::from(b)
    }

    /// Its transactional id, which its Produce requests name.
    pub fn transactional_id(&self) -> Option<TransactionalId> {
        self.txn.as_ref().map(|t| TransactionalId(StrBytes::from_string(t.id.clone())))
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.open.is_some())
    }

    /// Opens a transaction writing to `partitions` of `topic` (AddPartitionsToTxn).
    pub fn begin(&mut self, topic: &str, partitions: &[i32]) -> Result<()> {
        let (id, epoch) = (self.id, self.epoch);
        let Some(t) = &mut self.txn else { return Ok(()) };
        let transactional_id = t.id.clone();
        retrying(&mut t.coordinator, "add partitions to transaction", |conn| {
            let mut topic_req = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
            topic_req.name = TopicName(StrBytes::from_string(topic.to_string()));
            topic_req.partitions = partitions.to_vec();
            let mut req = AddPartitionsToTxnRequest::default();
            req.v3_and_below_transactional_id = TransactionalId(StrBytes::from_string(transactional_id.clone()));
            req.v3_and_below_producer_id = ProducerId(id);
            req.v3_and_below_producer_epoch = epoch;
            req.v3_and_below_topics = vec![topic_req];
            let r = call(conn, req, 3)?;
            let code = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|&c| c != 0);
            Ok((code.unwrap_or(0), ()))
        })?;
        t.open = Some(partitions.to_vec());
        Ok(())
    }

    /// Commits (or aborts) the open transaction: every batch of it must have been acknowledged.
    pub fn end(&mut self, commit: bool) -> Result<()> {
        let (id, epoch) = (self.id, self.epoch);
        let Some(t) = &mut self.txn else { return Ok(()) };
        if t.open.is_none() {
            return Ok(());
        }
        let transactional_id = t.id.clone();
        retrying(&mut t.coordinator, "end transaction", |conn| {
            let mut req = EndTxnRequest::default();
            req.transactional_id = TransactionalId(StrBytes::from_string(transactional_id.clone()));
            req.producer_id = ProducerId(id);
            req.producer_epoch = epoch;
            req.committed = commit;
            call(conn, req, 3).map(|r| (r.error_code, ()))
        })?;
        t.open = None;
        Ok(())
    }
}

fn call<R: Request>(conn: &mut Connection, req: R, ours: i16) -> Result<R::Response> {
    let v = conn.version::<R>(ours);
    conn.call(req, v)
}

/// Sends a request until its error code is not a retriable one (for up to `RETRY_FOR`).
fn retrying<T>(conn: &mut Connection, what: &str, mut attempt: impl FnMut(&mut Connection) -> Result<(i16, T)>) -> Result<T> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let (code, out) = attempt(conn)?;
        if RETRIABLE.contains(&code) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        check(code, what)?;
        return Ok(out);
    }
}
