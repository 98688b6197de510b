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
use crate::storage::batch::{self, BatchError};
use crate::storage::{LogError, Safe};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use std::future::Future;
use std::pin::Pin;
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

/// Kafka's error for a batch `storage::batch` refused.
pub fn batch_error_code(e: BatchError) -> i16 {
    match e {
        _ if e.is_corruption() => errors::CORRUPT_MESSAGE,
        BatchError::Codec(_) => errors::UNSUPPORTED_COMPRESSION_TYPE,
        _ => errors::INVALID_RECORD,
    }
}

pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::Batch(b) => batch_error_code(*b),
        LogError::Corrupt(_) => errors::CORRUPT_MESSAGE,
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

/// Where phase one put a partition's records, for phase two to wait on.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// The topic's id at the append (`Partition::topic_id`).
    topic_id: u128,
    base_offset: u64,
    last_offset: u64,
    log_start: i64,
    log_append_time: i64,
    /// acks=all on a replicated leader: waits for the high watermark, with this minimum ISR.
    min_insync: Option<usize>,
    /// The log's failed writes right after the append: one after it dropped these batches.
    failures: u64,
}

impl Queued {
    fn outcome(&self) -> Outcome {
        Outcome {
            error: errors::NONE,
            base_offset: self.base_offset as i64,
            log_start: self.log_start,
            log_append_time: self.log_append_time,
            ..refused(errors::NONE)
        }
    }
}

/// Phase one, on the owning shard (the caller's job to be there): checks the records and queues
/// them for the log's writer, which fixes their offsets and their order. `transactional_id`: the
/// request's.
async fn queue_local(
    topic: String,
    partition: i32,
    records: Records,
    acks: i16,
    transactional_id: Option<String>,
) -> Result<Queued, Outcome> {
    let part = partitions::local(&topic, partition).await.map_err(refused)?;
    // Routed here as its leadership moved away: a follower's copy takes only its leader's batches.
    if !part.role.leads() {
        return Err(refused(errors::NOT_LEADER_OR_FOLLOWER));
    }
    if let Err(e) = part.log.wait_for_room().await {
        return Err(refused(log_error_code(&e)));
    }
    let rules = part.rules.get();
    let now_ms = super::unix_ms();
    let records = match batch_rewrite::apply(&records.bytes, &rules, now_ms) {
        Ok(None) => records,
        Ok(Some(bytes)) => Records { request_bytes: bytes.len(), bytes },
        Err(code) => return Err(refused(code)),
    };
    if rules.compacted {
        match batch_rewrite::keyless_records(&records.bytes) {
            Ok(keyless) if keyless.is_empty() => {}
            Ok(keyless) => return Err(keyless_refused(&topic, partition, &keyless)),
            Err(code) => return Err(refused(code)),
        }
    }
    let log_append_time = if rules.log_append_time { now_ms } else { -1 };
    let leader = part.role.leader().filter(|_| acks == -1);
    if let Some(Err(code)) = leader.map(|l| l.check_enough(rules.min_insync_replicas)) {
        return Err(refused(code));
    }
    let bytes = records.bytes.len() as u64;
    let a = append_checked(&part.log, &topic, partition, records, transactional_id.as_deref()).await?;
    let failures = part.log.failures();
    if !a.duplicate {
        part.traffic.appended(a.last_offset - a.base_offset + 1, bytes);
    }
    Ok(Queued {
        topic_id: part.topic_id,
        base_offset: a.base_offset,
        last_offset: a.last_offset,
        log_start: part.log.offsets().log_start as i64,
        log_append_time,
        min_insync: leader.map(|_| rules.min_insync_replicas),
        failures,
    })
}

/// Phase two, on the owning shard: waits until the queued records are as safe as `acks` asks.
/// acks=1: written to disk (survives a crash of the process, as Kafka's page-cache write does);
/// acks=all: also fsynced when the topic's flush policy asks it, and on a replicated partition in
/// every in-sync replica's copy (the high watermark).
async fn await_local(topic: String, partition: i32, queued: Queued, acks: i16, timeout: Duration) -> Outcome {
    if acks == 0 {
        return queued.outcome();
    }
    let part = match partitions::local(&topic, partition).await {
        // Deleted and created again between the phases: the records went with the old log.
        Ok(p) if p.topic_id != queued.topic_id => return refused(errors::UNKNOWN_TOPIC_OR_PARTITION),
        Ok(p) => p,
        Err(code) => return refused(code),
    };
    let leader = part.role.leader();
    if queued.min_insync.is_some() && leader.is_none() {
        return refused(errors::NOT_LEADER_OR_FOLLOWER);
    }
    let safe = match queued.min_insync {
        Some(_) => Safe::HighWatermark,
        None if acks == -1 => Safe::Durable,
        None => Safe::Written,
    };
    // From the failures counted at the append: a write that failed in between (a full disk, say)
    // dropped these batches, and their offsets may hold other records by now.
    match shards::within(timeout, part.log.wait_safe(queued.last_offset, safe, queued.failures)).await {
        None => return refused(errors::REQUEST_TIMED_OUT),
        Some(Err(e)) => return refused(log_error_code(&e)),
        Some(Ok(())) => {}
    }
    // The ISR shrank below the minimum while the records were copied (Kafka's answer too).
    if let (Some(min), Some(l)) = (queued.min_insync, leader) {
        if l.check_enough(min).is_err() {
            return refused(errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
        }
    }
    queued.outcome()
}

/// Appends `records`; a transactional producer's first batch here in a transaction is first
/// checked with its coordinator: the partition must be in the transaction (KIP-890 part 1), or a
/// late batch would open a transaction nobody ends. So is a batch at another epoch than the open
/// transaction's: a higher one, unchecked, would take the partition's epoch for the producer, the
/// coordinator's marker at the real epoch would then be refused as stale, and the transaction
/// would stay open for good (a client knowing only the producer id could do it).
async fn append_checked(
    log: &crate::storage::Log,
    topic: &str,
    partition: i32,
    records: Records,
    transactional_id: Option<&str>,
) -> Result<crate::storage::Appended, Outcome> {
    let transactional = batch::header_info(&records.bytes).ok().filter(|info| info.is_transactional());
    let appended = match transactional {
        Some(info) if log.txn_epoch(info.producer_id) != Some(info.producer_epoch) => {
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

/// A produce request's answer once phase one is over: phase two's waits, then the response (none
/// for acks=0).
pub type Answer = Pin<Box<dyn Future<Output = Result<Option<Bytes>, ProtocolError>>>>;

/// Phase one of a produce request: every partition's records checked and queued for its log's
/// writer (partitions on other shards in parallel). Once it returns, the order of this request's
/// batches against the connection's next request is fixed, so the connection may read and queue
/// that one while this one's writes complete (`conn`): their batches share the writes.
pub async fn queue(req: &Request) -> Result<Answer, ProtocolError> {
    let version = req.header.request_api_version;
    if protocol::versions::answered_unsupported(req.api, version) {
        let acks = protocol::legacy::Reader::new(&req.body).i16()?;
        let body = protocol::legacy::produce_unsupported(&req.body, version, errors::UNSUPPORTED_VERSION)?;
        crate::metrics::recorder::error(req.api as i16, errors::UNSUPPORTED_VERSION);
        let answer = if acks == 0 { Ok(None) } else { super::handlers::respond_legacy(req, &body) };
        return Ok(Box::pin(std::future::ready(answer)));
    }
    let produce: ProduceRequest = protocol::decode_body(req)?;
    let st = state();
    let acks = produce.acks;
    let transactional_id = produce.transactional_id.as_ref().map(|t| t.0.to_string());
    let timeout = Duration::from_millis(produce.timeout_ms.max(0) as u64);
    let mut queueing = Vec::new();
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
            // Kafka's rule since v3 (the oldest answered): exactly one batch per partition. A second
            // would pass unchecked by what checks the first (its producer's transaction, say).
            if batch::framed_len(&records.bytes).ok() != Some(records.bytes.len()) {
                parts.push((index, Err(refused(errors::INVALID_RECORD))));
                continue;
            }
            if version < ZSTD_PRODUCE_VERSION_MIN && has_zstd(&records.bytes) {
                parts.push((index, Err(refused(errors::UNSUPPORTED_COMPRESSION_TYPE))));
                continue;
            }
            let owner = st.owner(&meta.name, index);
            let (n, txn) = (name.clone(), transactional_id.clone());
            // Every partition starts now, so partitions on other shards proceed in parallel.
            let task = spawn_on(owner, move || queue_local(n, index, records, acks, txn));
            parts.push((index, Ok((owner, task))));
        }
        queueing.push((topic.name, parts));
    }
    // Phase two starts for each partition as soon as all are queued.
    let mut waiting = Vec::with_capacity(queueing.len());
    for (name, parts) in queueing {
        let mut outcomes = Vec::with_capacity(parts.len());
        for (index, started) in parts {
            let outcome = match started {
                Err(o) => Err(o),
                Ok((owner, task)) => match task.await {
                    Err(o) => Err(o),
                    Ok(queued) if acks == 0 => Err(queued.outcome()),
                    Ok(queued) => {
                        let n = name.0.to_string();
                        Ok(spawn_on(owner, move || await_local(n, index, queued, acks, timeout)))
                    }
                },
            };
            outcomes.push((index, outcome));
        }
        waiting.push((name, outcomes));
    }
    let answering = Request { api: req.api, header: req.header.clone(), body: Bytes::new(), peer: String::new() };
    Ok(Box::pin(async move {
        let mut response = ProduceResponse::default();
        for (name, parts) in waiting {
            let mut t = TopicProduceResponse::default();
            t.name = name;
            for (index, outcome) in parts {
                let o = match outcome {
                    Ok(task) => task.await,
                    Err(o) => o,
                };
                t.partition_responses.push(partition_response(index, o, version));
            }
            response.responses.push(t);
        }
        if acks == 0 {
            // Kafka closes the connection when an acks=0 produce fails in any partition: the
            // producer cannot be told otherwise, and reconnecting makes it refresh its metadata (a
            // deleted topic, a moved leader).
            let failed =
                response.responses.iter().flat_map(|t| t.partition_responses.iter().map(move |p| (t, p))).find(|(_, p)| p.error_code != 0);
            return match failed {
                Some((t, p)) => Err(ProtocolError::CloseConnection(format!(
                    "acks=0 produce to {}-{} failed with error {}",
                    t.name.0.as_str(),
                    p.index,
                    p.error_code
                ))),
                None => Ok(None),
            };
        }
        super::handlers::respond(&answering, &response)
    }))
}

/// Starts `f` on shard `owner` and returns at once (unlike `State::on_owner`, which waits, and
/// looks the partition up first): on this shard as a task of its own, on another through its
/// mailbox.
fn spawn_on<F, Fut, R>(owner: usize, f: F) -> shards::Task<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let st = state();
    if owner == st.shard.id {
        shards::spawn_local(f())
    } else {
        let shard = st.shard.clone();
        shards::spawn_local(async move { shard.submit_to(owner, f).await })
    }
}

fn partition_response(index: i32, o: Outcome, version: i16) -> PartitionProduceResponse {
    let mut r = PartitionProduceResponse::default();
    r.index = index;
    r.error_code = o.error;
    r.base_offset = o.base_offset;
    if version >= 5 {
        r.log_start_offset = o.log_start;
    }
    r.log_append_time_ms = o.log_append_time;
    if version >= 8 {
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
    r
}
