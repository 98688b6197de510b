//! A partition's log: an ordered set of segments, a writer task, and a cache of recent batches.
//!
//! Not thread-safe, by design: a `Log` lives on the shard that owns its partition and only that
//! shard touches it (asserted). No `RefCell` borrow is ever held across an `.await`.
//!
//! Appends are synchronous: they validate, assign offsets and queue the batch (O(1)). The writer
//! task takes everything queued since its last write and writes it with one O_DIRECT write (group
//! commit), then fsyncs per the flush policy. Offsets below `written` are on disk, offsets below
//! `durable` also fsynced; readers see up to the high watermark: `durable` under flush-every-batch,
//! `written` otherwise.

use super::batch::{self, BatchError, BatchHeader, BatchInfo};
use super::config::{FlushPolicy, LogConfig};
use super::control::Marker;
use super::leader_epochs::LeaderEpochs;
use super::producer_state::{Check, ProducerState, TxnGuard};
use super::read_cache;
use super::segment::{Handles, Recovered, Segment};
use bytes::{Bytes, BytesMut};
use shards::{fs, Notify};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

mod cache;
mod compact;
mod files;
mod open;
mod producers;
mod read;
mod replica;
mod retention;
mod swap;
mod transactions;
mod writer;

pub use cache::SHARED_BATCH_MIN_BYTES;
use cache::{Cached, Keep};

/// O_DIRECT alignment of writes (the block size of every disk we target).
const BLOCK_BYTES: u64 = 4096;
/// Bytes appended but not yet written, per partition, beyond which producers wait for the writer.
const PENDING_BYTES_MAX: usize = 16 << 20;
/// The recovery point is checkpointed when the durable part of the active segment has grown this
/// much past it (then a restart after a crash validates at most about this much per partition),
/// and at close if it has grown at least `CLOSE_CHECKPOINT_BYTES` (a clean restart validates less
/// than that, and a shutdown writes no checkpoint for a partition that barely moved).
const CHECKPOINT_BYTES: u64 = 16 << 20;
const CLOSE_CHECKPOINT_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("batch of {0} bytes exceeds max.message.bytes")]
    TooLarge(usize),
    #[error("offset {offset} out of range [{start}, {end}]")]
    OutOfRange { offset: u64, start: u64, end: u64 },
    #[error("storage failed: {0}")]
    Storage(String),
    /// The disk (or the user's quota) is full: appends resume once space is freed.
    #[error("no space left for the log: {0}")]
    NoSpace(String),
    #[error("partition deleted")]
    Deleted,
    /// A stored batch that fails its checks where a read needs it.
    #[error("damaged batch: {0}")]
    Corrupt(String),
    /// An idempotent producer's batch does not follow its last one.
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than its current one (a zombie).
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    /// A transactional batch for a transaction the coordinator does not know open here, or a plain
    /// batch from a producer with a transaction open here.
    #[error("not part of an ongoing transaction")]
    InvalidTxnState,
    /// A marker from a coordinator epoch older than the producer's last.
    #[error("marker from an older coordinator epoch")]
    CoordinatorFenced,
    /// A batch a producer may not send.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
}

impl From<shards::RuntimeError> for LogError {
    fn from(e: shards::RuntimeError) -> Self {
        std::io::Error::from(e).into()
    }
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => LogError::NoSpace(e.to_string()),
            _ => LogError::Storage(e.to_string()),
        }
    }
}

impl LogError {
    /// After a failed fsync the kernel may have dropped what it could not write, and a retry can
    /// succeed without it: nothing unsynced can be trusted, so the partition stops taking appends
    /// (as Kafka takes the log directory offline), whatever the error, a full disk included.
    fn fsync(e: std::io::Error) -> LogError {
        LogError::Storage(format!("fsync failed: {e}"))
    }
}

struct State {
    dir: PathBuf,
    cfg: LogConfig,
    segments: Vec<Segment>,
    log_start: u64,
    /// The start a crash cannot move back: checkpointed (retention's starts are not).
    log_start_durable: u64,
    /// Log end offset: the next offset to assign.
    next_offset: u64,
    written: u64,
    durable: u64,
    /// The high watermark its replicas allow (`replica.rs`), for a replicated partition's log;
    /// `None`: this log alone decides (the one replica).
    replicated_hw: Option<u64>,
    /// The replicated high watermark this log last knew: checkpointed at the last clean close, then
    /// each one it was given since (`set_replicated_hw`).
    hw_known: Option<u64>,
    /// The epoch a leader stamps in the batches it appends (`None`: they keep theirs — a
    /// follower's copies, or a log outside replication).
    stamp: Option<i32>,
    /// The epochs the batches were written in (`leader_epochs`), and how many times they changed
    /// in all and as of the last checkpoint written: the writer writes the checkpoint before the
    /// batches of a new epoch, so that one on disk always has its entry.
    epochs: LeaderEpochs,
    epochs_changed: u64,
    epochs_saved: u64,
    /// Where `durable` ends in the files: (segment base, byte position).
    durable_end: (u64, u64),
    /// The last `durable_end` written to the recovery point checkpoint.
    recovery_point: (u64, u64),
    /// Where (segment base, byte position) the last batch the active segment took past a gap in
    /// its offsets ends (a follower copying a compacted leader): recovery takes such a jump only
    /// below the recovery point, so the next one checkpointed covers it whatever it grew.
    gap_end: Option<(u64, u64)>,
    /// The directory holds names a crash may not have made durable (those recovery found): it is
    /// fsynced before the first fsync that makes records durable.
    dir_unsynced: bool,
    /// Recent batches, oldest first. The last `queued` of them are not written yet: they are the
    /// writer's queue, and never evicted.
    cache: VecDeque<Cached>,
    cache_bytes: usize,
    /// Noted as one of the shard's cache holders (`read_cache::note_holder`).
    noted_in_read_cache: bool,
    queued: usize,
    queued_bytes: usize,
    /// Where small batches are copied (see `SLAB_BYTES_MAX`).
    slab: BytesMut,
    /// The active segment's file holds written bytes (data or zeros) up to here, block aligned.
    prealloc_end: u64,
    /// Bytes and writes since `window_start`, and in the window before it (the preallocation rate).
    window_bytes: u64,
    last_window_bytes: u64,
    window_writes: u32,
    last_window_writes: u32,
    window_start: Instant,
    /// Last partial block of the active segment, already on disk, rewritten with the next write.
    tail_block: Vec<u8>,
    unflushed_messages: u64,
    last_flush: Instant,
    /// Producers as appends left them, queued batches included: what new batches are checked against.
    producers: ProducerState,
    /// Producers as the written batches left them: snapshots, open transactions (the last stable
    /// offset) and the aborted ones come from here. A failed write resets `producers` to it.
    producers_written: ProducerState,
    /// Transactions a written marker ended whose marker is not durable yet (first offset → marker
    /// offset): under flush-every-batch the last stable offset waits for it; the cleaner never
    /// cleans from its first offset on (a power loss may take the marker back, and the decision).
    unstable_txns: std::collections::BTreeMap<u64, u64>,
    /// The offset of the newest producer state snapshot (or where the last rebuild began).
    snapshot_at: u64,
    /// Preallocation failed (a full disk): not tried again before this.
    prealloc_paused_until: Option<Instant>,
    failed: Option<String>,
    /// A write failed for another reason than a full disk: the log's disk is not to be trusted.
    disk_failed: bool,
    /// A roll began (the active segment was sealed, perhaps its successor's file created) and did
    /// not complete: nothing more is written to the sealed segment, the roll is finished first.
    rolling: bool,
    /// The writer task has not returned: `close` waits for it, so no file is touched after.
    writer_running: bool,
    /// Writes that failed (`fail`): each dropped the batches queued then.
    failures: u64,
    closing: bool,
    /// Last write or read: files of a partition unused for `files::IDLE_AFTER` are closed.
    last_used: Instant,
    /// Closed segments whose files reads opened, oldest first; at most `READ_FILES_MAX` stay open.
    reading: VecDeque<u64>,
    /// The offset the last read from a file started at: a read starting there again (a consumer
    /// that could not use what it got) checks the batch it starts with.
    last_file_read: Option<u64>,
    /// Damaged batches already reported, (segment base, position): each is logged once.
    reported_damage: Vec<(u64, u64)>,
    /// The cleaner's first dirty offset (`checkpoint::CLEANER_OFFSET`).
    first_dirty: u64,
}

/// One partition's log. Shared on its shard as `Rc<Log>`.
pub use compact::{Budget, Dirt, Outcome as CleanOutcome, Pass as CleanPass};
pub use read::Batches;
pub use replica::ReplicaEnd;

pub struct Log {
    /// This log, for the shard's file cache to close its files (`file_budget`).
    me: std::rc::Weak<Log>,
    shard: Option<usize>,
    state: RefCell<State>,
    /// Fired when `written` moves: new data for readers.
    pub appended: Notify,
    /// Fired when `written` or `durable` moves, a queue drains, or the log fails (the waits of
    /// acks=1, acks=all and `wait_for_room`).
    progressed: Notify,
    writer_wake: Notify,
    /// One checkpoint write at a time (DeleteRecords, the writer and `close` may each write one).
    checkpointing: shards::Turn,
    /// Held by whoever removes or replaces closed segments' files (retention, DeleteRecords, the
    /// cleaner, `close`): a segment one of them dropped is never brought back by another.
    segment_files: shards::Turn,
}

/// What a read returns, in log order. Together the chunks hold whole batches; one chunk may hold
/// part of a batch.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// Recent batches from the cache: reference-counted slices, no copy.
    Memory(Bytes),
    /// Older batches as a range of the segment file, for a zero-copy send.
    File(shards::FileRange),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Memory(b) => b.len(),
            Chunk::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes themselves, read from the file if need be (tools and tests: fetches send file
    /// ranges without reading them).
    pub fn to_bytes(&self) -> Result<Bytes, LogError> {
        match self {
            Chunk::Memory(b) => Ok(b.clone()),
            Chunk::File(r) => Ok(Bytes::from(r.read_to_vec()?)),
        }
    }
}

/// Result of an append: the offsets assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    /// A retried batch the producer had already written: answered with its old offsets, appended
    /// again nothing.
    pub duplicate: bool,
}

/// What an append's producer waits for (`Log::wait_safe`): acks=1, acks=all, acks=all replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safe {
    Written,
    Durable,
    HighWatermark,
}

/// Offsets a reader needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: u64,
    /// What readers see: `durable` under flush-every-batch, the written offset otherwise.
    pub high_watermark: u64,
    /// What read_committed readers see: the high watermark, or where the oldest transaction not
    /// yet ended (and stable) began.
    pub last_stable: u64,
    /// Offsets below this are fsynced (or were on disk when the log was opened).
    pub durable: u64,
    pub log_end: u64,
}

impl Log {
    fn state(&self) -> std::cell::RefMut<'_, State> {
        if let Some(shard) = self.shard {
            shards::assert_on_shard(shard);
        }
        self.state.borrow_mut()
    }

    pub fn offsets(&self) -> Offsets {
        let s = self.state();
        Offsets {
            log_start: s.log_start,
            high_watermark: s.high_watermark(),
            last_stable: s.last_stable_offset(),
            durable: s.durable,
            log_end: s.next_offset,
        }
    }

    /// Bytes of its segments' logs.
    pub fn size_bytes(&self) -> u64 {
        self.state().segments.iter().map(|seg| seg.size).sum()
    }

    pub fn config(&self) -> LogConfig {
        self.state().cfg.clone()
    }

    pub fn set_config(&self, cfg: LogConfig) {
        self.state().cfg = cfg;
    }

    /// Validates `records` (one or more v2 batches), assigns their offsets and queues them for the
    /// writer. Returns at once; `wait_written` / `wait_durable` tell when they are on disk.
    /// `records` is a buffer of its own, never modified: see `append_from`.
    pub fn append(&self, records: Bytes) -> Result<Appended, LogError> {
        let buffer_bytes = records.len();
        self.append_from(records, buffer_bytes)
    }

    /// `append` of records that slice a buffer of `buffer_bytes` (a request). Batches of
    /// `SHARED_BATCH_MIN_BYTES` or more are kept by reference until written and evicted from the
    /// cache, and with them the whole buffer, if the records are at least half of it; otherwise they
    /// are copied too, so that a cached batch never holds more than about twice its size.
    pub fn append_from(&self, records: Bytes, buffer_bytes: usize) -> Result<Appended, LogError> {
        self.append_checked(records, buffer_bytes, None, None)
    }

    /// `append_from` of a producer's records, some of which may open a transaction here: `guard`
    /// is what `txn_guard` said before the coordinator confirmed the partition is in it.
    pub fn append_in_txn(&self, records: Bytes, buffer_bytes: usize, guard: TxnGuard) -> Result<Appended, LogError> {
        self.append_checked(records, buffer_bytes, Some(guard), None)
    }

    fn append_checked(
        &self,
        records: Bytes,
        buffer_bytes: usize,
        guard: Option<TxnGuard>,
        marker: Option<Marker>,
    ) -> Result<Appended, LogError> {
        let share = records.len() * 2 >= buffer_bytes;
        let batches = batch::split(&records)?;
        if marker.is_none() {
            if batches.iter().any(|(_, info)| info.is_control()) {
                return Err(LogError::InvalidRecord("control batches come from the transaction coordinator only"));
            }
            if batches.iter().any(|(_, info)| info.is_transactional() && info.producer_id < 0) {
                return Err(LogError::InvalidRecord("a transactional batch without a producer id"));
            }
        }
        let mut s = self.state();
        if let Some(e) = &s.failed {
            return Err(LogError::Storage(e.clone()));
        }
        if s.closing {
            return Err(LogError::Deleted);
        }
        if let Some((_, big)) = batches.iter().find(|(_, info)| info.bytes > s.cfg.max_message_bytes) {
            return Err(LogError::TooLarge(big.bytes));
        }
        let check = match (marker, batches.first()) {
            (Some(m), Some((_, info))) => s.producers.check_marker(info.producer_id, info.producer_epoch, m),
            _ => s.producers.check_all(batches.iter().map(|(_, info)| info), guard),
        };
        match check {
            Check::Append => {}
            // A retry of what is in the log: its offsets, which the caller waits on as for new ones.
            Check::Duplicate { base_offset, last_offset } => return Ok(Appended { base_offset, last_offset, duplicate: true }),
            Check::OutOfOrder => return Err(LogError::OutOfOrderSequence),
            Check::StaleEpoch => return Err(LogError::InvalidProducerEpoch),
            Check::InvalidTxnState => return Err(LogError::InvalidTxnState),
            Check::CoordinatorFenced => return Err(LogError::CoordinatorFenced),
        }
        let base_offset = s.next_offset;
        let now_ms = read_cache::now_ms();
        for (at, info) in batches {
            let base = s.next_offset;
            let keep = if share { Keep::LargeShared } else { Keep::Copy };
            s.queue(&records, at, BatchInfo { base_offset: base as i64, ..info }, marker, keep, now_ms);
        }
        let last_offset = s.next_offset - 1;
        self.note_cached(&mut s);
        drop(s);
        self.writer_wake.notify_all();
        Ok(Appended { base_offset, last_offset, duplicate: false })
    }

    /// Waits while more than `PENDING_BYTES_MAX` bytes wait for the writer: producers faster than
    /// the disk are slowed down here instead of growing memory without bound.
    pub async fn wait_for_room(&self) -> Result<(), LogError> {
        self.wait_until(|s| s.queued_bytes <= PENDING_BYTES_MAX).await
    }

    /// Waits until every offset ≤ `offset` is written to disk (visible, survives a process crash).
    /// Like `wait_durable`, to be called right after the append it waits for (see `wait_for`).
    pub async fn wait_written(&self, offset: u64) -> Result<(), LogError> {
        self.wait_for(|s| s.written > offset).await
    }

    /// Waits until every offset ≤ `offset` is as durable as the flush policy makes it: fsynced under
    /// `flush.messages=1`, written otherwise.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        self.wait_for(|s| if s.cfg.flush == FlushPolicy::EveryBatch { s.durable > offset } else { s.written > offset }).await
    }

    /// `wait_until` for an append's offsets: a write that fails meanwhile fails the wait, even once
    /// the log accepts appends again (a full disk freed), since it dropped the batches not written
    /// and their offsets go to the next appends, which must not answer for them.
    async fn wait_for(&self, done: impl Fn(&State) -> bool) -> Result<(), LogError> {
        let failures = self.state().failures;
        self.wait_for_since(failures, done).await
    }

    /// How many times a write failed so far: taken right after an append, it lets a wait begun later
    /// (`wait_safe`) still see a failure that dropped the appended batches in between.
    pub fn failures(&self) -> u64 {
        self.state().failures
    }

    /// Waits until every offset ≤ `offset` is as safe as `safe` says, failing if a write failed since
    /// `failures` (`Log::failures`, read right after the append).
    pub async fn wait_safe(&self, offset: u64, safe: Safe, failures: u64) -> Result<(), LogError> {
        self.wait_for_since(failures, |s| match safe {
            Safe::Written => s.written > offset,
            Safe::Durable if s.cfg.flush == FlushPolicy::EveryBatch => s.durable > offset,
            Safe::Durable => s.written > offset,
            Safe::HighWatermark => s.high_watermark() > offset,
        })
        .await
    }

    async fn wait_for_since(&self, failures: u64, done: impl Fn(&State) -> bool) -> Result<(), LogError> {
        self.wait_until(|s| done(s) || s.failures != failures).await?;
        let s = self.state();
        if done(&s) {
            Ok(())
        } else {
            Err(LogError::Storage(s.failed.clone().unwrap_or_else(|| "a write failed; the batch was not written".into())))
        }
    }

    async fn wait_until(&self, done: impl Fn(&State) -> bool) -> Result<(), LogError> {
        loop {
            {
                let s = self.state();
                if done(&s) {
                    return Ok(());
                }
                if let Some(e) = &s.failed {
                    return Err(LogError::Storage(e.clone()));
                }
                if s.closing && s.queued == 0 {
                    return Err(LogError::Deleted);
                }
            }
            self.progressed.notified().await;
        }
    }

    /// Writes what is queued, fsyncs, and stops the writer. Appends fail afterwards.
    pub async fn close(&self) -> Result<(), LogError> {
        self.state().closing = true;
        self.writer_wake.notify_all();
        // A cleaning pass stops at its next step; one replacing a segment finishes that first.
        drop(self.segment_files.take().await);
        // The writer writes what is queued (or fails it) and returns.
        while self.state().writer_running {
            self.progressed.notified().await;
        }
        let (unsynced, active) = {
            let s = self.state();
            (s.durable < s.written, s.segments.last().expect("active segment").base)
        };
        if unsynced {
            self.fsync_active(&self.files_of(active).await?.file).await?;
            let mut s = self.state();
            let end = s.segments.last().expect("active segment").size;
            (s.durable, s.durable_end) = (s.written, (active, end));
            let durable = s.durable;
            s.unstable_txns.retain(|_, marker| *marker >= durable);
        }
        self.checkpoint_recovery_point(CLOSE_CHECKPOINT_BYTES).await?;
        self.checkpoint_high_watermark().await?;
        // The indexes first: a snapshot at the end says the aborted transactions below it are on disk.
        let unsynced: Vec<PathBuf> = {
            let mut s = self.state();
            s.segments
                .iter_mut()
                .flat_map(|seg| {
                    seg.release_files();
                    seg.unsynced_indexes()
                })
                .collect()
        };
        Segment::sync_indexes(unsynced).await?;
        self.snapshot_producers_at_close().await
    }

    /// Closes the log and removes its directory.
    pub async fn delete(&self) -> Result<(), LogError> {
        // The records go either way: a close that failed (a failing disk) does not keep them.
        if let Err(e) = self.close().await {
            tracing::warn!(dir = %self.state().dir.display(), error = %e, "closing a log being deleted failed");
        }
        let dir = self.state().dir.clone();
        fs::remove_dir_all(&dir).await?;
        Ok(())
    }

    /// Totals for tests and metrics: (segments, index entries in all segments, cached bytes).
    pub fn stats(&self) -> (usize, usize, usize) {
        let s = self.state();
        (s.segments.len(), s.segments.iter().map(|seg| seg.index_entries()).sum(), s.cache_bytes)
    }
}

impl State {
    /// What readers may see: under flush-every-batch only what is fsynced, so that a power loss
    /// never takes back a record a consumer read (its offset would later name another record);
    /// under looser policies what is written, which survives a crash of the process.
    /// The bytes of segment `seg` readers may see (see `high_watermark`).
    fn readable_size(&self, seg: &Segment) -> u64 {
        if self.cfg.flush == FlushPolicy::EveryBatch && seg.base == self.durable_end.0 {
            seg.size.min(self.durable_end.1)
        } else {
            seg.size
        }
    }

    /// Forgets producers whose last batch is below the log start or older than `before_ms` (and
    /// have no transaction open), in both views of them.
    fn expire_producers(&mut self, before_ms: i64) {
        let start = self.log_start;
        self.producers.expire(start, before_ms);
        self.producers_written.expire(start, before_ms);
    }

    /// What readers see: what this log holds as its flush policy promises, within what the
    /// partition's replicas hold too.
    fn high_watermark(&self) -> u64 {
        let local = self.local_high_watermark();
        match self.replicated_hw {
            None => local,
            Some(replicated) => local.min(replicated.max(self.log_start)),
        }
    }

    /// The high watermark as this log alone would set it.
    fn local_high_watermark(&self) -> u64 {
        if self.cfg.flush == FlushPolicy::EveryBatch {
            // DeleteRecords may have moved the start past records not yet fsynced.
            self.durable.max(self.log_start)
        } else {
            self.written
        }
    }

    /// The segment starting at `base`; gone (retention, DeleteRecords) is out of range.
    fn segment(&self, base: u64) -> Result<&Segment, LogError> {
        match self.segments.binary_search_by_key(&base, |seg| seg.base) {
            Ok(at) => Ok(&self.segments[at]),
            Err(_) => Err(LogError::OutOfRange { offset: base, start: self.log_start, end: self.next_offset }),
        }
    }
}
