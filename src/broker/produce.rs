//! Produce: append each partition's batches on its owning shard, answer per `acks`.
//!
//! acks=0 gets no response; acks=1 is answered once offsets are assigned (the write is in flight);
//! acks=all once the batches are written and, under `flush.messages=1`, fsynced.
//! Idempotent producers (producer id ≥ 0) get Kafka's sequence checks per (producer, partition),
//! made by the log (`storage::producer_state`, rebuilt from the log at restart): a retried batch is
//! answered with its original offset, a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch with
//! INVALID_PRODUCER_EPOCH.

use super::{batch_rewrite, errors, partitions, state, topics};
use crate::protocol::{self, ProtocolError, Request};
use crate::storage::batch;
use crate::storage::LogError;
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use std::time::Duration;

/// Outcome for one partition, sent back across shards.
#[derive(Debug, Clone)]
struct Outcome {
    error: i16,
    base_offset: i64,
    log_start: i64,
    /// The broker's stamp for `LogAppendTime` topics, else −1.
    log_append_time: i64,
    /// Produce v8+: the records that failed (index in their batch, why), and a message.
    record_errors: Vec<(i32, String)>,
    error_message: Option<String>,
}

fn refused(error: i16) -> Outcome {
    Outcome { error, base_offset: -1, log_start: -1, log_append_time: -1, record_errors: Vec::new(), error_message: None }
}

/// Kafka's answer to records without a key for a compacted topic: INVALID_RECORD, each named.
fn keyless_refused(topic: &str, partition: i32, keyless: &[(usize, i32)]) -> Outcome {
    let why = format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}.");
    let shown: Vec<String> = keyless.iter().take(3).map(|(_, i)| format!("record {i}: {why}")).collect();
    Outcome {
        record_errors: keyless.iter().map(|&(_, i)| (i, why.clone())).collect(),
        error_message: Some(format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            keyless.len(),
            shown.join(", ")
        )),
        ..refused(errors::INVALID_RECORD)
    }
}

pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::Batch(b) if b.is_corruption() => errors::CORRUPT_MESSAGE,
        LogError::Corrupt(_) => errors::CORRUPT_MESSAGE,
        LogError::Batch(_) => errors::INVALID_RECORD,
        LogError::TooLarge(_) => errors::MESSAGE_TOO_LARGE,
        LogError::OutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
        LogError::Storage(_) | LogError::NoSpace(_) => errors::KAFKA_STORAGE_ERROR,
        LogError::Deleted => errors::UNKNOWN_TOPIC_OR_PARTITION,
        LogError::OutOfOrderSequence => errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::InvalidProducerEpoch => errors::INVALID_PRODUCER_EPOCH,
        LogError::InvalidTxnState => errors::INVALID_TXN_STATE,
        LogError::CoordinatorFenced => errors::TRANSACTION_COORDINATOR_FENCED,
        LogError::InvalidRecord(_) => errors::INVALID_RECORD,
    }
}

/// Appends on the owning shard (the caller's job to be there). `transactional_id`: the request's.
async fn append_local(
    topic: String,
    partition: i32,
    records: Records,
    acks: i16,
    timeout: Duration,
    transactional_id: Option<String>,
) -> Outcome {
    let part = match partitions::local(&topic, partition).await {
        Ok(p) => p,
        Err(code) => return refused(code),
    };
    // Routed here as its leadership moved away: a follower's copy takes only its leader's batches.
    if !part.role.leads() {
        return refused(errors::NOT_LEADER_OR_FOLLOWER);
    }
    if let Err(e) = part.log.wait_for_room().await {
        return refused(log_error_code(&e));
    }
    let rules = part.rules.get();
    let now_ms = super::unix_ms();
    let records = match batch_rewrite::apply(&records.bytes, &rules, now_ms) {
        Ok(None) => records,
        Ok(Some(bytes)) => Records { request_bytes: bytes.len(), bytes },
        Err(code) => return refused(code),
    };
    if rules.compacted {
        match batch_rewrite::keyless_records(&records.bytes) {
            Ok(keyless) if keyless.is_empty() => {}
            Ok(keyless) => return keyless_refused(&topic, partition, &keyless),
            Err(code) => return refused(code),
        }
    }
    let log_append_time = if rules.log_append_time { now_ms } else { -1 };
    let leader = part.role.leader().filter(|_| acks == -1);
    if let Some(Err(code)) = leader.map(|l| l.check_enough(rules.min_insync_replicas)) {
        return refused(code);
    }
    let bytes = records.bytes.len() as u64;
    let appended = match append_checked(&part.log, &topic, partition, records, transactional_id.as_deref()).await {
        Ok(a) => {
            if !a.duplicate {
                part.traffic.appended(a.last_offset - a.base_offset + 1, bytes);
            }
            (a.base_offset, a.last_offset)
        }
        Err(refusal) => return refusal,
    };
    let log_start = part.log.offsets().log_start as i64;
    if acks != 0 {
        // acks=1: written to disk (survives a crash of the process, as Kafka's page-cache write does);
        // acks=all: also fsynced when the topic's flush policy asks it.
        // A replicated partition's acks=all: in every in-sync replica's copy (the high watermark).
        let done = async {
            match (acks, leader) {
                (-1, Some(_)) => part.log.wait_high_watermark(appended.1).await,
                (-1, None) => part.log.wait_durable(appended.1).await,
                _ => part.log.wait_written(appended.1).await,
            }
        };
        let waited = shards::within(timeout, done).await;
        match waited {
            None => return refused(errors::REQUEST_TIMED_OUT),
            Some(Err(e)) => return refused(log_error_code(&e)),
            Some(Ok(())) => {}
        }
        // The ISR shrank below the minimum while the records were copied (Kafka's answer too).
        if let Some(Err(_)) = leader.map(|l| l.check_enough(rules.min_insync_replicas)) {
            return refused(errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
        }
    }
    Outcome { error: errors::NONE, base_offset: appended.0 as i64, log_start, log_append_time, ..refused(errors::NONE) }
}

/// Appends `records`; a transactional producer's first batch here in a transaction is first
/// checked with its coordinator: the partition must be in the transaction (KIP-890 part 1), or a
/// late batch would open a transaction nobody ends.
async fn append_checked(
    log: &crate::storage::Log,
    topic: &str,
    partition: i32,
    records: Records,
    transactional_id: Option<&str>,
) -> Result<crate::storage::Appended, Outcome> {
    let transactional = batch::header_info(&records.bytes).ok().filter(|info| info.is_transactional());
    let appended = match transactional {
        Some(info) if !log.in_transaction(info.producer_id) => {
            let Some(id) = transactional_id else {
                return Err(refused(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
            };
            let guard = log.txn_guard(info.producer_id);
            let code = super::txn::verify(id, info.producer_id, info.producer_epoch, topic, partition).await;
            if code != errors::NONE {
                return Err(refused(code));
            }
            log.append_in_txn(records.bytes, records.request_bytes, guard)
        }
        _ => log.append_from(records.bytes, records.request_bytes),
    };
    appended.map_err(|e| {
        tracing::debug!(%topic, partition, error = %e, "produce refused");
        refused(log_error_code(&e))
    })
}

/// Produce versions before this cannot carry zstd batches (KIP-110), as Kafka checks.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

/// Does any batch in `records` use zstd? Headers only.
fn has_zstd(mut records: &[u8]) -> bool {
    while let (Ok(h), Ok(len)) = (batch::header(records), batch::framed_len(records)) {
        if h.attributes.get() & batch::ATTR_CODEC_MASK == crate::protocol::compression::Codec::Zstd as i16 {
            return true;
        }
        records = &records[len.min(records.len())..];
    }
    false
}

/// One partition's records, a slice of a request of `request_bytes` (the log may keep large batches
/// by reference to it: a frame that large is read into a buffer of its own, `frame::OWN_BUFFER_FRAME_BYTES`).
struct Records {
    bytes: Bytes,
    request_bytes: usize,
}

pub async fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    if protocol::versions::answered_unsupported(req.api, version) {
        let acks = protocol::legacy::Reader::new(&req.body).i16()?;
        let body = protocol::legacy::produce_unsupported(&req.body, version, errors::UNSUPPORTED_VERSION)?;
        crate::metrics::recorder::error(req.api as i16, errors::UNSUPPORTED_VERSION);
        return if acks == 0 { Ok(None) } else { super::handlers::respond_legacy(req, &body) };
    }
    let produce: ProduceRequest = protocol::decode_body(req)?;
    let st = state();
    let acks = produce.acks;
    let transactional_id = produce.transactional_id.as_ref().map(|t| t.0.to_string());
    let timeout = Duration::from_millis(produce.timeout_ms.max(0) as u64);
    let mut pending = Vec::new();
    for topic in produce.topic_data {
        let name = topic.name.0.to_string();
        let known = match st.topic(&name) {
            _ if ![0, 1, -1].contains(&acks) => Err(errors::INVALID_REQUIRED_ACKS),
            Some(meta) => Ok(meta),
            None if st.cfg.auto_create_topics => topics::ensure(name.clone()).await.map_err(|(code, _)| code),
            None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
        };
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let index = p.index;
            let meta = match &known {
                Ok(meta) if index >= 0 && index < meta.partitions => meta,
                Ok(_) => {
                    parts.push((index, Err(refused(errors::UNKNOWN_TOPIC_OR_PARTITION))));
                    continue;
                }
                Err(code) => {
                    parts.push((index, Err(refused(*code))));
                    continue;
                }
            };
            let records = Records { bytes: p.records.unwrap_or_default(), request_bytes: req.body.len() };
            if version < ZSTD_PRODUCE_VERSION_MIN && has_zstd(&records.bytes) {
                parts.push((index, Err(refused(errors::UNSUPPORTED_COMPRESSION_TYPE))));
                continue;
            }
            let owner = st.owner(&meta.name, index);
            let n = name.clone();
            let txn = transactional_id.clone();
            // Every partition starts now, so partitions on other shards proceed in parallel.
            let task = if owner == st.shard.id {
                shards::spawn_local(append_local(n, index, records, acks, timeout, txn))
            } else {
                let shard = st.shard.clone();
                shards::spawn_local(
                    async move { shard.submit_to(owner, move || append_local(n, index, records, acks, timeout, txn)).await },
                )
            };
            parts.push((index, Ok(task)));
        }
        pending.push((topic.name, parts));
    }
    let mut response = ProduceResponse::default();
    for (name, parts) in pending {
        let mut t = TopicProduceResponse::default();
        t.name = name;
        for (index, outcome) in parts {
            let o = match outcome {
                Ok(task) => task.await,
                Err(o) => o,
            };
            let mut r = PartitionProduceResponse::default();
            r.index = index;
            r.error_code = o.error;
            r.base_offset = o.base_offset;
            if req.header.request_api_version >= 5 {
                r.log_start_offset = o.log_start;
            }
            r.log_append_time_ms = o.log_append_time;
            if req.header.request_api_version >= 8 {
                r.record_errors = o
                    .record_errors
                    .into_iter()
                    .map(|(index, message)| {
                        kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage::default()
                            .with_batch_index(index)
                            .with_batch_index_error_message(Some(message.into()))
                    })
                    .collect();
                r.error_message = o.error_message.map(Into::into);
            }
            t.partition_responses.push(r);
        }
        response.responses.push(t);
    }
    if acks == 0 {
        return Ok(None);
    }
    super::handlers::respond(req, &response)
}
