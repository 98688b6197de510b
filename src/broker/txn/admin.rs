//! The operators' view of transactions (KIP-664, what `kafka-transactions.sh` uses):
//! DescribeTransactions and ListTransactions from the coordinators, DescribeProducers from the
//! partitions.

use super::metadata::TxnState;
use super::{coordinator_shard, on_shard, state};
use crate::broker::errors;
use crate::broker::handlers::{respond, text};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::collections::BTreeMap;

pub async fn describe_transactions(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeTransactionsRequest = protocol::decode_body(req)?;
    let mut r = DescribeTransactionsResponse::default();
    for id in q.transactional_ids {
        let name = id.0.to_string();
        let mut t = describe_transactions_response::TransactionState::default();
        t.transactional_id = id;
        let found = if name.is_empty() {
            Err(errors::INVALID_REQUEST)
        } else {
            let key = name.clone();
            on_shard(coordinator_shard(&name), move || async move { state().txns.txns.borrow().get(&key).cloned() })
                .await
                .filter(|m| m.state != TxnState::Dead)
                .ok_or(errors::TRANSACTIONAL_ID_NOT_FOUND)
        };
        match found {
            Err(code) => t.error_code = code,
            Ok(m) => {
                t.transaction_state = text(m.state.name());
                t.transaction_timeout_ms = m.timeout_ms;
                t.transaction_start_time_ms = m.start_ms;
                t.producer_id = ProducerId(m.producer_id);
                t.producer_epoch = m.epoch;
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, p) in m.partitions {
                    by_topic.entry(topic).or_default().push(p);
                }
                for (topic, partitions) in by_topic {
                    let mut d = describe_transactions_response::TopicData::default();
                    d.topic = TopicName(text(topic));
                    d.partitions = partitions;
                    t.topics.push(d);
                }
            }
        }
        r.transaction_states.push(t);
    }
    respond(req, &r)
}

/// ListTransactions: those the asked broker coordinates (every shard's with `--single-port`),
/// filtered by state name, producer id and (v1) how long they have run.
pub async fn list_transactions(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: ListTransactionsRequest = protocol::decode_body(req)?;
    let st = state();
    let shards: Vec<usize> = if st.cfg.single_port { (0..st.shard.count).collect() } else { vec![st.shard.id] };
    let known = |f: &str| (0..8).filter_map(TxnState::from_id).any(|s| s.name() == f);
    let mut r = ListTransactionsResponse::default();
    r.unknown_state_filters = q.state_filters.iter().filter(|f| !known(f)).cloned().collect();
    let now = crate::broker::unix_ms();
    for s in shards {
        let listed = on_shard(s, || async {
            state().txns.txns.borrow().iter().map(|(id, m)| (id.clone(), m.producer_id, m.state, m.start_ms)).collect::<Vec<_>>()
        })
        .await;
        for (id, producer_id, txn_state, start_ms) in listed {
            let by_state = q.state_filters.is_empty() || q.state_filters.iter().any(|f| f.as_str() == txn_state.name());
            let by_producer = q.producer_id_filters.is_empty() || q.producer_id_filters.iter().any(|p| p.0 == producer_id);
            // Kafka's: a transaction's age counts from its start (-1 when none, so all of them match).
            let by_duration = q.duration_filter < 0 || now - start_ms > q.duration_filter;
            if txn_state == TxnState::Dead || !(by_state && by_producer && by_duration) {
                continue;
            }
            let mut t = list_transactions_response::TransactionState::default();
            t.transactional_id = TransactionalId(text(id));
            t.producer_id = ProducerId(producer_id);
            t.transaction_state = text(txn_state.name());
            r.transaction_states.push(t);
        }
    }
    respond(req, &r)
}

/// DescribeProducers: each partition's producers, as its written batches left them.
pub async fn describe_producers(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeProducersRequest = protocol::decode_body(req)?;
    let st = state();
    let mut r = DescribeProducersResponse::default();
    for t in q.topics {
        let mut rt = describe_producers_response::TopicResponse::default();
        for p in t.partition_indexes {
            let mut rp = describe_producers_response::PartitionResponse::default();
            rp.partition_index = p;
            match st.on_owner(&t.name.0, p, |part| async move { part.log.active_producers() }).await {
                Err(code) => rp.error_code = code,
                Ok(active) => {
                    for a in active {
                        let mut s = describe_producers_response::ProducerState::default();
                        s.producer_id = ProducerId(a.producer_id);
                        s.producer_epoch = i32::from(a.epoch);
                        s.last_sequence = a.last_sequence;
                        s.last_timestamp = a.last_timestamp;
                        s.coordinator_epoch = a.coordinator_epoch;
                        s.current_txn_start_offset = a.txn_start_offset;
                        rp.active_producers.push(s);
                    }
                }
            }
            rt.partitions.push(rp);
        }
        rt.name = t.name;
        r.topics.push(rt);
    }
    respond(req, &r)
}

/// WriteTxnMarkers, as the admin client's `abortTransaction` sends it to a partition's leader to
/// end a hanging transaction: each marker appended on the partition's shard and waited for until
/// durable, with the partition's checks (an older epoch or coordinator epoch is refused).
pub async fn write_txn_markers(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: WriteTxnMarkersRequest = protocol::decode_body(req)?;
    let mut r = WriteTxnMarkersResponse::default();
    for m in q.markers {
        let marker = crate::storage::control::Marker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
        let (producer_id, epoch) = (m.producer_id.0, m.producer_epoch);
        let mut result = write_txn_markers_response::WritableTxnMarkerResult::default();
        result.producer_id = m.producer_id;
        for t in m.topics {
            let mut rt = write_txn_markers_response::WritableTxnMarkerTopicResult::default();
            for p in t.partition_indexes {
                let written = super::coordinator::write_marker(&t.name.0, p, producer_id, epoch, marker).await;
                let mut rp = write_txn_markers_response::WritableTxnMarkerPartitionResult::default();
                rp.partition_index = p;
                rp.error_code = written.err().unwrap_or(errors::NONE);
                rt.partitions.push(rp);
            }
            rt.name = t.name;
            result.topics.push(rt);
        }
        r.markers.push(result);
    }
    respond(req, &r)
}
