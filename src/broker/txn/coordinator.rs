//! The transactions one shard coordinates (those whose transactional id hashes to a
//! transaction-state partition it owns), their durable state, and the markers that end them.
//! Lives in the shard's `ShardState`; touched by that shard only (requests reach it through
//! `super::on_coordinator`).
//!
//! Every transition is persisted (fsynced) before it is applied and answered. Ending a
//! transaction is Kafka's two phases: PrepareCommit/PrepareAbort persisted, a marker appended to
//! each of its partitions on the shard owning it (durably), then CompleteCommit/CompleteAbort
//! persisted. EndTxn is answered after the markers, so a client's next transaction never meets
//! CONCURRENT_TRANSACTIONS; if a partition cannot take its marker, the decision stands and the
//! markers are retried in the background (and after a restart: a prepared state is finished when
//! the coordinator loads).

use super::metadata::{End, Init, TxnMetadata, TxnState};
use super::store::{self, Record, TXN_PARTITIONS};
use crate::broker::record_file::RecordFile;
use crate::broker::{errors, state, unix_ms};
use crate::storage::control::Marker;
use crate::storage::LogError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// The coordinator epoch markers carry. One node, one coordinator that never moves: it never
/// changes, and so never goes down across restarts (a partition refuses a marker from an older one).
const COORDINATOR_EPOCH: i32 = 0;
/// Kafka's `transaction.max.timeout.ms`.
pub const MAX_TIMEOUT_MS: i32 = 900_000;
const MARKER_RETRY: Duration = Duration::from_millis(500);

pub struct TxnCoordinator {
    shard: usize,
    /// `transactional.id.expiration.ms`.
    id_expiration_ms: i64,
    pub(super) txns: RefCell<HashMap<String, TxnMetadata>>,
    files: RefCell<HashMap<u32, RecordFile>>,
    /// One transition at a time: each reads, decides, persists and applies under it.
    writing: shards::Turn,
}

impl TxnCoordinator {
    pub fn new(shard: usize, id_expiration_ms: u64) -> TxnCoordinator {
        let id_expiration_ms = i64::try_from(id_expiration_ms).unwrap_or(i64::MAX);
        TxnCoordinator { shard, id_expiration_ms, txns: RefCell::default(), files: RefCell::default(), writing: shards::Turn::default() }
    }

    /// Replays the transaction-state partitions this shard owns, then finishes the transactions
    /// a crash left prepared.
    pub async fn recover(&self) -> std::io::Result<()> {
        let st = state();
        let dir = st.cfg.data_dir.join("__transaction_state");
        shards::fs::create_dir_all(&dir).await?;
        for n in 0..TXN_PARTITIONS {
            if shards::placement("__transaction_state", n, st.shard.count) != self.shard {
                continue;
            }
            let (mut file, records, damaged) =
                RecordFile::open(dir.join(format!("{n}.log")), true, "transaction state", store::decode).await?;
            let mut mine = HashMap::new();
            records.into_iter().for_each(|r| store::apply(&mut mine, r));
            if damaged {
                file.replace_with(live_records(&mine)?).await?;
            }
            self.txns.borrow_mut().extend(mine);
            self.files.borrow_mut().insert(n, file);
        }
        let prepared: Vec<(String, TxnMetadata)> =
            self.txns.borrow().iter().filter(|(_, m)| m.is_prepared()).map(|(id, m)| (id.clone(), m.clone())).collect();
        for (id, m) in prepared {
            tracing::info!(transactional_id = %id, state = m.state.name(), "finishing a transaction prepared before the restart");
            shards::spawn_local(finish(id, m)).detach();
        }
        Ok(())
    }

    /// Persists `next` as `id`'s state, then applies it. The caller holds `writing`.
    async fn persist(&self, id: &str, next: TxnMetadata) -> Result<(), i16> {
        let durable = must_fsync(&next);
        self.persist_record(id, Record::State(id.to_string(), next), durable).await
    }

    /// Persists `record` (of `id`), fsynced if `durable`, then applies it. The caller holds
    /// `writing`.
    async fn persist_record(&self, id: &str, record: Record, durable: bool) -> Result<(), i16> {
        let n = store::partition_for(id);
        let mut buf = Vec::new();
        store::encode(&record, &mut buf).map_err(|_| errors::INVALID_REQUEST)?;
        let Some(mut file) = self.files.borrow_mut().remove(&n) else {
            return Err(errors::NOT_COORDINATOR);
        };
        let written = if durable { file.append(&buf).await } else { file.append_unsynced(&buf) };
        let compact = written.is_ok() && file.compaction_due();
        if written.is_ok() {
            store::apply(&mut self.txns.borrow_mut(), record);
        }
        if compact {
            let live: HashMap<String, TxnMetadata> =
                self.txns.borrow().iter().filter(|(t, _)| store::partition_for(t) == n).map(|(t, m)| (t.clone(), m.clone())).collect();
            if let Err(e) = async { file.compact(live_records(&live)?).await }.await {
                tracing::warn!(partition = n, error = %e, "rewriting the transaction state failed");
            }
        }
        self.files.borrow_mut().insert(n, file);
        written.map_err(|e| {
            tracing::error!(transactional_id = %id, error = %e, "persisting a transaction's state failed");
            errors::COORDINATOR_NOT_AVAILABLE
        })
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn init_producer_id(&self, id: String, timeout_ms: i32, requested: Option<(i64, i16)>) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(errors::INVALID_TRANSACTION_TIMEOUT);
        }
        let fence = {
            let _turn = self.writing.take().await;
            let now = unix_ms();
            let current = self.txns.borrow().get(&id).cloned();
            let current = current.unwrap_or_else(|| TxnMetadata::new(crate::broker::handlers::new_producer_id(), timeout_ms, now));
            match current.init(requested, timeout_ms, now, crate::broker::handlers::new_producer_id)? {
                Init::Ready(next) => {
                    let answer = (next.producer_id, next.epoch);
                    self.persist(&id, next).await?;
                    return Ok(answer);
                }
                Init::Fence(aborting) => {
                    self.persist(&id, aborting.clone()).await?;
                    aborting
                }
            }
        };
        tracing::info!(transactional_id = %id, epoch = fence.epoch, "a new producer fenced the open transaction: aborting it");
        finish(id, fence).await;
        Err(errors::CONCURRENT_TRANSACTIONS)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn.
    pub async fn add_partitions(&self, id: &str, producer_id: i64, epoch: i16, partitions: &[(String, i32)]) -> Result<(), i16> {
        let _turn = self.writing.take().await;
        let current = self.txns.borrow().get(id).cloned().ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
        match current.add_partitions(producer_id, epoch, partitions, unix_ms())? {
            None => Ok(()),
            Some(next) => self.persist(id, next).await,
        }
    }

    /// EndTxn: answered once the markers are written (or, if a partition cannot take one now, once
    /// the decision is durable: the markers follow).
    pub async fn end_txn(&self, id: String, producer_id: i64, epoch: i16, commit: bool) -> Result<(), i16> {
        let prepared = {
            let _turn = self.writing.take().await;
            let current = self.txns.borrow().get(&id).cloned().ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
            match current.end(producer_id, epoch, commit, unix_ms())? {
                End::Done => return Ok(()),
                End::Prepare(next) => {
                    self.persist(&id, next.clone()).await?;
                    next
                }
            }
        };
        finish(id, prepared).await;
        Ok(())
    }

    /// Whether `producer_id` at `epoch` may write to `topic`/`partition` in its transaction (Kafka's
    /// produce-side verification, KIP-890 part 1): NONE, or the error for the producer.
    pub fn verify(&self, id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> i16 {
        let txns = self.txns.borrow();
        let Some(m) = txns.get(id) else { return errors::INVALID_PRODUCER_ID_MAPPING };
        if let Err(code) = m.check_producer(producer_id, epoch) {
            return code;
        }
        match m.state {
            TxnState::Ongoing if m.partitions.iter().any(|(t, p)| t == topic && *p == partition) => errors::NONE,
            TxnState::PrepareCommit | TxnState::PrepareAbort => errors::CONCURRENT_TRANSACTIONS,
            _ => errors::INVALID_TXN_STATE,
        }
    }

    async fn complete(&self, id: &str, prepared: &TxnMetadata) {
        let _turn = self.writing.take().await;
        if self.txns.borrow().get(id) != Some(prepared) {
            return; // completed meanwhile (a retry's turn)
        }
        // Not fsynced (the next transition's fsync takes it along): a power loss taking it leaves
        // the transaction prepared, and the start writes its markers again, which end nothing twice.
        let completed = Record::State(id.to_string(), prepared.completed(unix_ms()));
        if let Err(code) = self.persist_record(id, completed, false).await {
            tracing::warn!(transactional_id = %id, code, "completing a transaction failed; it stays prepared until the next start");
        }
    }

    /// Aborts the open transactions past their timeout, at a bumped epoch that fences their
    /// producer (Kafka's `transaction.abort.timed.out.transaction.cleanup`).
    pub async fn abort_timed_out(&self) {
        let now = unix_ms();
        let due: Vec<String> = self.txns.borrow().iter().filter(|(_, m)| m.timed_out(now)).map(|(id, _)| id.clone()).collect();
        for id in due {
            let fence = {
                let _turn = self.writing.take().await;
                let Some(m) = self.txns.borrow().get(&id).cloned().filter(|m| m.timed_out(now)) else { continue };
                let fence = m.fenced(now);
                if self.persist(&id, fence.clone()).await.is_err() {
                    continue;
                }
                fence
            };
            tracing::info!(transactional_id = %id, "transaction timed out: aborting it");
            finish(id, fence).await;
        }
    }

    /// Forgets the transactional ids with no transaction whose last change is older than
    /// `transactional.id.expiration.ms`, durably (Kafka's expiry of idle ids).
    pub async fn expire_ids(&self) {
        let cutoff = unix_ms().saturating_sub(self.id_expiration_ms);
        let idle = |m: &TxnMetadata| {
            matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort) && m.last_update_ms < cutoff
        };
        let due: Vec<String> = self.txns.borrow().iter().filter(|(_, m)| idle(m)).map(|(id, _)| id.clone()).collect();
        for id in due {
            let _turn = self.writing.take().await;
            if self.txns.borrow().get(&id).is_some_and(idle) && self.persist_record(&id, Record::Removed(id.clone()), true).await.is_ok() {
                tracing::debug!(transactional_id = %id, "transactional id expired");
            }
        }
    }

    pub async fn close(&self) {
        let _turn = self.writing.take().await;
        // Records written without an fsync (`must_fsync`) are made durable by a clean stop.
        let files = std::mem::take(&mut *self.files.borrow_mut());
        for file in files.values() {
            if let Err(e) = file.sync().await {
                tracing::error!(error = %e, "fsync of the transaction state failed");
            }
        }
    }
}

/// Writes the markers of a prepared end and completes it; if a partition cannot take its marker
/// now, retries in the background until it can.
async fn finish(id: String, prepared: TxnMetadata) {
    if write_markers(&prepared).await {
        state().txns.complete(&id, &prepared).await;
        return;
    }
    shards::spawn_local(async move {
        loop {
            shards::sleep(MARKER_RETRY).await;
            if write_markers(&prepared).await {
                state().txns.complete(&id, &prepared).await;
                return;
            }
        }
    })
    .detach();
}

/// Whether a transition is fsynced before it is applied or answered. One that hands out producer
/// ids and epochs always is: fencing must survive anything. One that decides about partitions'
/// data (Ongoing, PrepareCommit, PrepareAbort) is when one of them fsyncs every batch: a power loss
/// keeps their data, so it must keep the decision (half a commit otherwise). When none does, what
/// they acknowledge survives a process crash but not a power loss, and so does the decision: it is
/// written (the page cache survives a crash) and fsynced with the next record that is. An fsync
/// here flushes the disk's whole write cache — under load, tens of MB of partition data that never
/// asked for it (80 ms per commit, half the producer's throughput, measured).
fn must_fsync(next: &TxnMetadata) -> bool {
    match next.state {
        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort => {
            let st = state();
            next.partitions.iter().any(|(topic, _)| crate::broker::config::flushes_every_batch(&st, topic))
        }
        _ => true,
    }
}

/// The records that restore `live`.
fn live_records(live: &HashMap<String, TxnMetadata>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for (id, m) in live {
        store::encode(&Record::State(id.clone(), m.clone()), &mut buf)?;
    }
    Ok(buf)
}

/// Appends `producer_id`'s `marker` at `epoch` to `topic`/`partition` on the shard owning it and
/// waits until it is durable; an offsets partition's "marker" ends the producer's pending offsets
/// there instead. The error code the partition answers, if any.
pub(super) async fn write_marker(topic: &str, partition: i32, producer_id: i64, epoch: i16, marker: Marker) -> Result<(), i16> {
    if topic == "__consumer_offsets" {
        return crate::broker::group::end_offsets_txn(partition, producer_id, marker.commit).await.map_err(|e| {
            tracing::warn!(partition, producer_id, error = %e, "ending transactional offsets failed");
            errors::KAFKA_STORAGE_ERROR
        });
    }
    let written = state()
        .on_owner(topic, partition, move |part| async move {
            let a = part.log.append_marker(producer_id, epoch, marker, unix_ms())?;
            part.log.wait_durable(a.last_offset).await
        })
        .await?;
    written.map_err(|e: LogError| crate::broker::produce::log_error_code(&e))
}

/// Appends `prepared`'s marker to each of its partitions, on the shards owning them, and waits
/// until each is durable; `false` if one could not be written (to try again).
async fn write_markers(prepared: &TxnMetadata) -> bool {
    let marker = Marker { commit: prepared.state == TxnState::PrepareCommit, coordinator_epoch: COORDINATOR_EPOCH };
    let (producer_id, epoch) = (prepared.producer_id, prepared.epoch);
    let tasks: Vec<_> = prepared
        .partitions
        .iter()
        .map(|(topic, partition)| {
            let (topic, partition) = (topic.clone(), *partition);
            shards::spawn_local(async move {
                match write_marker(&topic, partition, producer_id, epoch, marker).await {
                    Ok(()) => true,
                    // The topic is gone: nothing to end there.
                    Err(errors::UNKNOWN_TOPIC_OR_PARTITION) => true,
                    // Refused for good (a newer epoch or coordinator there): Kafka drops it too.
                    Err(code @ (errors::INVALID_PRODUCER_EPOCH | errors::TRANSACTION_COORDINATOR_FENCED)) => {
                        tracing::error!(%topic, partition, producer_id, code, "a transaction marker was refused");
                        true
                    }
                    Err(code) => {
                        tracing::warn!(%topic, partition, producer_id, code, "writing a transaction marker failed; retrying");
                        false
                    }
                }
            })
        })
        .collect();
    let mut all = true;
    for t in tasks {
        all &= t.await;
    }
    all
}
