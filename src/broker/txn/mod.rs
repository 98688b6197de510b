//! The transaction coordinator (KIP-98): transactional producers' InitProducerId,
//! AddPartitionsToTxn and EndTxn, and the produce-side check that a transactional batch belongs to
//! a transaction the coordinator knows.
//!
//! A transactional id lives on the shard that owns its transaction-state partition
//! (`store::partition_for`), as a group lives with its offsets partition; requests reaching another
//! shard are forwarded there. `metadata` holds Kafka's state machine, `store` its durable records,
//! `coordinator` the transitions and the markers.

mod admin;
mod coordinator;
mod metadata;
mod store;

pub use admin::{describe_producers, describe_transactions, list_transactions, write_txn_markers};
pub use coordinator::TxnCoordinator;

use super::handlers::respond;
use super::{errors, on_shard, state};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::time::Duration;

/// How often open transactions are checked against their timeout, and idle transactional ids
/// against their expiry (Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms` is
/// 10 s, `transaction.remove.expired.transaction.cleanup.interval.ms` 1 h).
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);

/// The shard coordinating `transactional_id`.
pub fn coordinator_shard(transactional_id: &str) -> usize {
    shards::placement("__transaction_state", store::partition_for(transactional_id), state().shard.count)
}

/// Requests too old to know PRODUCER_FENCED get INVALID_PRODUCER_EPOCH, as Kafka answers them.
fn for_version(code: i16, version: i16, first_knowing_fenced: i16) -> i16 {
    if code == errors::PRODUCER_FENCED && version < first_knowing_fenced {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

pub async fn timeout_loop() {
    loop {
        shards::sleep(TIMEOUT_CHECK).await;
        state().txns.abort_timed_out().await;
        state().txns.expire_ids().await;
    }
}

/// InitProducerId with a transactional id.
pub async fn init_producer_id(req: &Request, q: InitProducerIdRequest, id: String) -> Result<Option<Bytes>, ProtocolError> {
    let mut r = InitProducerIdResponse::default();
    let (pid, epoch) = (q.producer_id.0, q.producer_epoch);
    let outcome = if id.is_empty() || (pid < 0) != (epoch < 0) {
        Err(errors::INVALID_REQUEST)
    } else {
        let requested = (pid >= 0).then_some((pid, epoch));
        let timeout = q.transaction_timeout_ms;
        on_shard(coordinator_shard(&id), move || async move { state().txns.init_producer_id(id, timeout, requested).await }).await
    };
    match outcome {
        Ok((pid, epoch)) => {
            r.producer_id = ProducerId(pid);
            r.producer_epoch = epoch;
        }
        Err(code) => {
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            r.error_code = for_version(code, req.header.request_api_version, 4);
        }
    }
    respond(req, &r)
}

/// One transaction's partitions in an AddPartitionsToTxn request: v0-3 carry one (from its
/// producer), v4+ a batch (from another broker; `verify_only` asks whether each partition is
/// already in the transaction, KIP-890).
struct TxnAdd {
    id: String,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: Vec<add_partitions_to_txn_request::AddPartitionsToTxnTopic>,
}

pub async fn add_partitions_to_txn(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: AddPartitionsToTxnRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let mut r = AddPartitionsToTxnResponse::default();
    if version < 4 {
        let add = TxnAdd {
            id: q.v3_and_below_transactional_id.0.to_string(),
            producer_id: q.v3_and_below_producer_id.0,
            epoch: q.v3_and_below_producer_epoch,
            verify_only: false,
            topics: q.v3_and_below_topics,
        };
        r.results_by_topic_v3_and_below = add_one(add, version).await;
    } else {
        for t in q.transactions {
            let add = TxnAdd {
                id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                epoch: t.producer_epoch,
                verify_only: t.verify_only,
                topics: t.topics,
            };
            let mut result = add_partitions_to_txn_response::AddPartitionsToTxnResult::default();
            result.transactional_id = t.transactional_id;
            result.topic_results = add_one(add, version).await;
            r.results_by_transaction.push(result);
        }
    }
    respond(req, &r)
}

/// Adds (or verifies) one transaction's partitions: all or none, as Kafka does — an unknown
/// partition fails the transaction's request and the others get OPERATION_NOT_ATTEMPTED.
async fn add_one(add: TxnAdd, version: i16) -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let st = state();
    let requested: Vec<(String, i32)> = add.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p))).collect();
    let unknown = |(t, p): &(String, i32)| !st.partition_exists(t, *p);
    let any_unknown = requested.iter().any(unknown);
    let (id, pid, epoch) = (add.id, add.producer_id, add.epoch);
    let codes: Vec<i16> = if any_unknown {
        requested.iter().map(|tp| if unknown(tp) { errors::UNKNOWN_TOPIC_OR_PARTITION } else { errors::OPERATION_NOT_ATTEMPTED }).collect()
    } else if add.verify_only {
        let parts = requested.clone();
        on_shard(
            coordinator_shard(&id),
            move || async move { parts.iter().map(|(t, p)| state().txns.verify(&id, pid, epoch, t, *p)).collect() },
        )
        .await
    } else {
        let parts = requested.clone();
        let outcome =
            on_shard(coordinator_shard(&id), move || async move { state().txns.add_partitions(&id, pid, epoch, &parts).await }).await;
        vec![for_version(outcome.err().unwrap_or(errors::NONE), version, 2); requested.len()]
    };
    let mut codes = codes.into_iter();
    add.topics
        .into_iter()
        .map(|t| {
            let mut result = add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
            for p in t.partitions {
                let mut pr = add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = p;
                pr.partition_error_code = codes.next().unwrap_or(errors::NONE);
                result.results_by_partition.push(pr);
            }
            result.name = t.name;
            result
        })
        .collect()
}

/// AddOffsetsToTxn: the group's offsets partition joins the transaction, so that its marker
/// commits (or drops) the offsets TxnOffsetCommit leaves pending.
pub async fn add_offsets_to_txn(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: AddOffsetsToTxnRequest = protocol::decode_body(req)?;
    let id = q.transactional_id.0.to_string();
    let parts = vec![("__consumer_offsets".to_string(), super::group::offsets_partition(&q.group_id.0))];
    let (pid, epoch) = (q.producer_id.0, q.producer_epoch);
    let outcome = on_shard(coordinator_shard(&id), move || async move { state().txns.add_partitions(&id, pid, epoch, &parts).await }).await;
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = for_version(outcome.err().unwrap_or(errors::NONE), req.header.request_api_version, 2);
    respond(req, &r)
}

pub async fn end_txn(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: EndTxnRequest = protocol::decode_body(req)?;
    let id = q.transactional_id.0.to_string();
    let (pid, epoch, commit) = (q.producer_id.0, q.producer_epoch, q.committed);
    let outcome = on_shard(coordinator_shard(&id), move || async move { state().txns.end_txn(id, pid, epoch, commit).await }).await;
    let mut r = EndTxnResponse::default();
    r.error_code = for_version(outcome.err().unwrap_or(errors::NONE), req.header.request_api_version, 2);
    respond(req, &r)
}

/// Whether `producer_id` at `epoch` may open its transaction in `topic`/`partition`: NONE, or
/// the error for the produce response (Kafka's: a fenced producer gets INVALID_PRODUCER_EPOCH; a
/// transaction being ended NOT_ENOUGH_REPLICAS, which producers retry).
pub async fn verify(transactional_id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> i16 {
    let (id, topic) = (transactional_id.to_string(), topic.to_string());
    let code =
        on_shard(
            coordinator_shard(transactional_id),
            move || async move { state().txns.verify(&id, producer_id, epoch, &topic, partition) },
        )
        .await;
    match code {
        errors::PRODUCER_FENCED => errors::INVALID_PRODUCER_EPOCH,
        errors::CONCURRENT_TRANSACTIONS => errors::NOT_ENOUGH_REPLICAS,
        other => other,
    }
}

/// The node coordinating `transactional_id` (FindCoordinator key type 1).
pub fn coordinator_node(transactional_id: &str) -> i32 {
    state().cfg.node_for(coordinator_shard(transactional_id))
}
