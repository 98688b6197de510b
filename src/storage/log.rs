//! A partition's log: an ordered set of segments, a writer task, and a cache of recent batches.
//!
//! Not thread-safe, by design: a `Log` lives on the shard that owns its partition and only that
//! shard touches it (asserted). No `RefCell` borrow is ever held across an `.await`.
//!
//! Appends are synchronous: they validate, assign offsets and queue the batch (O(1)). The writer
//! task takes everything queued since its last write and writes it with one O_DIRECT write (group
//! commit), then fsyncs per the flush policy. Offsets below `written` are on disk and visible to
//! readers (the high watermark); offsets below `durable` are also fsynced when the policy asks it.

use super::batch::{self, BatchError, BatchHeader, BatchInfo};
use super::config::{FlushPolicy, LogConfig};
use super::segment::{Recovered, Segment};
use bytes::{Bytes, BytesMut};
use shards::Notify;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// O_DIRECT alignment of writes (the block size of every disk we target).
const BLOCK_BYTES: u64 = 4096;
/// Largest single write the writer issues; more waits for the next turn.
const WRITE_BYTES_MAX: usize = 8 << 20;
/// How far ahead of the tail an idle writer writes zeros at most, and in what steps (a step delays
/// a data write that arrives meanwhile by its duration, so it is small). Below the most, a
/// partition preallocates twice what it wrote in the last `RATE_WINDOW`: a partition written to
/// slowly costs KiB of zeros, not MiB.
const PREALLOC_AHEAD_BYTES: u64 = 2 << 20;
const PREALLOC_CHUNK_BYTES: u64 = 256 << 10;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A writer with nothing to write for this long gives preallocated zeros back to the disk.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(5);
/// Bytes appended but not yet written, per partition, beyond which producers wait for the writer.
const PENDING_BYTES_MAX: usize = 16 << 20;
/// Most bytes one read returns (more than one batch only up to this); bounds memory per fetch.
const READ_BYTES_MAX: usize = 16 << 20;
/// Read size when looking for a batch by its header (the index points within 4 KiB of it).
const HEADER_SCAN_BYTES: u64 = 16 << 10;
/// Batches at least this big are kept by reference to the appender's buffer rather than copied:
/// a copy of a large batch costs as much as writing it (measured: one copy fewer took 1 MiB
/// appends from 66% of fio's write rate to 84–113%). Smaller ones are copied, so that a small
/// batch never holds a large request buffer in memory.
pub const SHARED_BATCH_MIN_BYTES: usize = 256 << 10;
/// Small batches are copied into slabs of this size or less (a share of the cache budget): one
/// allocation, and one shared reference count, for many batches. Per-batch allocations and
/// reference counts took a third of the time of 1 KiB appends. A batch over a quarter of the slab
/// gets an allocation of its own, so an abandoned slab's unused end is under a quarter of it.
const SLAB_BYTES_MAX: usize = 256 << 10;
const SLAB_BYTES_MIN: usize = 4 << 10;

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
    #[error("partition deleted")]
    Deleted,
}

impl From<shards::RuntimeError> for LogError {
    fn from(e: shards::RuntimeError) -> Self {
        LogError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Storage(e.to_string())
    }
}

/// A batch in memory, with its assigned base offset.
#[derive(Clone)]
enum Held {
    /// A copy, the base offset patched in.
    Copied(Bytes),
    /// The appender's bytes by reference, which stay as they came: the assigned base offset
    /// replaces their first 8 bytes wherever the batch goes.
    Shared { base_offset: Bytes, rest: Bytes },
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::Copied(b) => b.len(),
            Held::Shared { base_offset, rest } => base_offset.len() + rest.len(),
        }
    }

    /// The batch's bytes in order, as reference-counted slices.
    fn parts(&self) -> impl Iterator<Item = &Bytes> {
        let (first, second) = match self {
            Held::Copied(b) => (b, None),
            Held::Shared { base_offset, rest } => (base_offset, Some(rest)),
        };
        std::iter::once(first).chain(second)
    }
}

/// A recent batch kept in memory, with its assigned offsets in `info`.
struct Cached {
    held: Held,
    info: BatchInfo,
}

impl Cached {
    fn base(&self) -> u64 {
        self.info.base_offset as u64
    }

    /// The offset after the batch.
    fn next(&self) -> u64 {
        self.base() + u64::from(self.info.offset_count)
    }
}

struct State {
    dir: PathBuf,
    cfg: LogConfig,
    segments: Vec<Segment>,
    log_start: u64,
    /// Log end offset: the next offset to assign.
    next_offset: u64,
    written: u64,
    durable: u64,
    /// Recent batches, oldest first. The last `queued` of them are not written yet: they are the
    /// writer's queue, and never evicted.
    cache: VecDeque<Cached>,
    cache_bytes: usize,
    queued: usize,
    queued_bytes: usize,
    /// Where small batches are copied (see `SLAB_BYTES_MAX`).
    slab: BytesMut,
    /// The active segment's file holds written bytes (data or zeros) up to here, block aligned.
    prealloc_end: u64,
    /// Bytes written since `window_start`, and in the window before it (the preallocation rate).
    window_bytes: u64,
    last_window_bytes: u64,
    window_start: Instant,
    /// Last partial block of the active segment, already on disk, rewritten with the next write.
    tail_block: Vec<u8>,
    unflushed_messages: u64,
    last_flush: Instant,
    failed: Option<String>,
    closing: bool,
}

/// One partition's log. Shared on its shard as `Rc<Log>`.
pub struct Log {
    shard: Option<usize>,
    state: RefCell<State>,
    /// Fired when `written` moves: new data for readers.
    pub appended: Notify,
    /// Fired when `written` or `durable` moves, a queue drains, or the log fails (the waits of
    /// acks=1, acks=all and `wait_for_room`).
    progressed: Notify,
    writer_wake: Notify,
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
}

/// Offsets a reader needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: u64,
    pub high_watermark: u64,
    pub log_end: u64,
}

impl Log {
    /// Opens (recovering) or creates the log in `dir` and starts its writer task on this shard.
    pub async fn open(dir: &Path, cfg: LogConfig) -> Result<Rc<Log>, LogError> {
        assert!(cfg.segment_bytes <= u64::from(u32::MAX), "positions are u32 in the index");
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                super::segment::sync_dir(parent)?;
            }
        }
        shards::prime_direct_io(dir).await?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut total = Recovered::default();
        for (i, &base) in bases.iter().enumerate() {
            let (seg, report) = Segment::recover(dir, base, bases.get(i + 1).copied(), cfg.index_interval_bytes).await?;
            if report.bytes_cut > 0 {
                tracing::warn!(dir = %dir.display(), segment = base, bytes_cut = report.bytes_cut, "recovery cut an invalid tail");
            }
            total.batches_scanned += report.batches_scanned;
            total.bytes_cut += report.bytes_cut;
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0).await?);
        }
        let active = segments.last().expect("at least one segment");
        let next_offset = active.next_offset;
        // DeleteRecords may have moved the start past the first segment's base.
        let log_start = super::log_start::read(dir).unwrap_or(0).clamp(segments[0].base, next_offset);
        let tail_block = read_tail_block(active).await?;
        let next_prealloc_end = active.size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        tracing::debug!(dir = %dir.display(), segments = segments.len(), next_offset, scanned = total.batches_scanned, "log opened");
        let log = Rc::new(Log {
            shard: shards::current_shard(),
            state: RefCell::new(State {
                dir: dir.to_path_buf(),
                log_start,
                cfg,
                segments,
                next_offset,
                written: next_offset,
                durable: next_offset,
                cache: VecDeque::new(),
                cache_bytes: 0,
                queued: 0,
                queued_bytes: 0,
                slab: BytesMut::new(),
                prealloc_end: next_prealloc_end,
                window_bytes: 0,
                last_window_bytes: 0,
                window_start: Instant::now(),
                tail_block,
                unflushed_messages: 0,
                last_flush: Instant::now(),
                failed: None,
                closing: false,
            }),
            appended: Notify::default(),
            progressed: Notify::default(),
            writer_wake: Notify::default(),
        });
        let writer = log.clone();
        shards::spawn_local(async move { writer.write_loop().await }).detach();
        Ok(log)
    }

    fn state(&self) -> std::cell::RefMut<'_, State> {
        if let Some(shard) = self.shard {
            shards::assert_on_shard(shard);
        }
        self.state.borrow_mut()
    }

    pub fn offsets(&self) -> Offsets {
        let s = self.state();
        Offsets { log_start: s.log_start, high_watermark: s.written, log_end: s.next_offset }
    }

    pub fn config(&self) -> LogConfig {
        self.state().cfg.clone()
    }

    /// Applies new settings; a smaller cache budget takes effect at once.
    pub fn set_config(&self, cfg: LogConfig) {
        let mut s = self.state();
        s.cfg = cfg;
        s.evict_cache();
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
        let share = records.len() * 2 >= buffer_bytes;
        let batches = batch::split(&records)?;
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
        let base_offset = s.next_offset;
        for (at, info) in batches {
            let base = s.next_offset;
            let held = if share && info.bytes >= SHARED_BATCH_MIN_BYTES {
                let base_offset = Bytes::copy_from_slice(&base.to_be_bytes());
                Held::Shared { base_offset, rest: records.slice(at + 8..at + info.bytes) }
            } else {
                Held::Copied(s.copy_to_slab(&records[at..at + info.bytes], base))
            };
            let info = BatchInfo { base_offset: base as i64, ..info };
            s.next_offset = base + u64::from(info.offset_count);
            s.cache_bytes += info.bytes;
            s.queued += 1;
            s.queued_bytes += info.bytes;
            s.cache.push_back(Cached { held, info });
        }
        let last_offset = s.next_offset - 1;
        drop(s);
        self.writer_wake.notify_all();
        Ok(Appended { base_offset, last_offset })
    }

    /// Waits while more than `PENDING_BYTES_MAX` bytes wait for the writer: producers faster than
    /// the disk are slowed down here instead of growing memory without bound.
    pub async fn wait_for_room(&self) -> Result<(), LogError> {
        self.wait_until(|s| s.queued_bytes <= PENDING_BYTES_MAX).await
    }

    /// Waits until every offset ≤ `offset` is written to disk (visible, survives a process crash).
    pub async fn wait_written(&self, offset: u64) -> Result<(), LogError> {
        self.wait_until(|s| s.written > offset).await
    }

    /// Waits until every offset ≤ `offset` is as durable as the flush policy makes it: fsynced under
    /// `flush.messages=1`, written otherwise.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        self.wait_until(|s| if s.cfg.flush == FlushPolicy::EveryBatch { s.durable > offset } else { s.written > offset }).await
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

    /// Whole batches from the one containing `offset`, up to `max_bytes` (at least one batch), never
    /// past the high watermark. Empty when `offset` is the high watermark.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Chunk>, LogError> {
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        let (file, reader, direct, seg_base, entry, size) = {
            let s = self.state();
            if offset < s.log_start || offset > s.next_offset {
                return Err(LogError::OutOfRange { offset, start: s.log_start, end: s.next_offset });
            }
            let hw = s.written;
            if offset >= hw {
                return Ok(Vec::new());
            }
            if s.cache.front().is_some_and(|c| c.base() <= offset) {
                return Ok(s.read_cache(offset, max_bytes, hw));
            }
            let seg_at = s.segments.partition_point(|seg| seg.base <= offset).max(1) - 1;
            let seg = &s.segments[seg_at];
            (seg.file.clone(), seg.reader.clone(), seg.direct_reader.clone(), seg.base, seg.lookup_entry(offset), seg.size)
        };
        // The batch holding `offset`: an indexed batch is known without a read (the usual case for a
        // consumer reading on, since reads end on indexed batches); another is found by its header.
        let (start, first_end) = if entry.0 == offset {
            (entry.1, None)
        } else {
            let holds = |h: &BatchHeader| h.base_offset.get() as u64 + h.last_offset_delta.get() as u64 >= offset;
            match find_batch(&file, entry.1, size, holds).await? {
                Some(found) => (found.pos, Some(found.pos + found.len as u64)),
                None => return Ok(Vec::new()),
            }
        };
        // End on a known boundary within `max_bytes`, or after the first batch if none is that close.
        let end = match (self.boundary_within(seg_base, start, start + max_bytes as u64)?, first_end) {
            (Some(end), _) | (None, Some(end)) => end,
            (None, None) => match find_batch(&file, start, size, |_| true).await? {
                Some(found) => found.pos + found.len as u64,
                None => return Ok(Vec::new()),
            },
        };
        Ok(vec![Chunk::File(shards::FileRange { file: reader, direct, pos: start, len: (end - start) as usize })])
    }

    fn boundary_within(&self, seg_base: u64, after: u64, limit: u64) -> Result<Option<u64>, LogError> {
        let s = self.state();
        match s.segments.binary_search_by_key(&seg_base, |seg| seg.base) {
            Ok(at) => Ok(s.segments[at].boundary_within(after, limit)),
            // Deleted by retention while we read its headers.
            Err(_) => Err(LogError::OutOfRange { offset: seg_base, start: s.log_start, end: s.next_offset }),
        }
    }

    /// The first written batch at or past the log start whose max timestamp is ≥ `ts` (`None` past
    /// the end), whole: the record itself is found inside it by the caller (it may be compressed).
    pub async fn batch_at_timestamp(&self, ts: i64) -> Result<Option<Bytes>, LogError> {
        let (file, pos, size, log_start) = {
            let s = self.state();
            let log_start = s.log_start;
            let Some(seg) = s.segments.iter().find(|seg| seg.max_timestamp >= ts && seg.next_offset > log_start) else {
                return Ok(None);
            };
            (seg.file.clone(), seg.lookup_time(ts), seg.size, log_start)
        };
        let holds = |h: &BatchHeader| h.max_timestamp.get() >= ts && last_offset(h) >= log_start;
        read_found(&file, find_batch(&file, pos, size, holds).await?).await
    }

    /// The first written batch holding the log's greatest timestamp (ListOffsets MAX_TIMESTAMP).
    pub async fn batch_with_max_timestamp(&self) -> Result<Option<Bytes>, LogError> {
        let (file, pos, size, max) = {
            let s = self.state();
            let log_start = s.log_start;
            let live = s.segments.iter().filter(|seg| seg.next_offset > log_start && seg.max_timestamp >= 0);
            // The first segment holding the greatest timestamp.
            let Some(seg) = live.rev().max_by_key(|seg| seg.max_timestamp) else {
                return Ok(None);
            };
            (seg.file.clone(), seg.lookup_time(seg.max_timestamp), seg.size, seg.max_timestamp)
        };
        read_found(&file, find_batch(&file, pos, size, |h| h.max_timestamp.get() == max).await?).await
    }

    /// DeleteRecords: moves the log start up to `offset` (at most the high watermark), durably, and
    /// deletes the closed segments wholly below it. Returns the new log start (the low watermark).
    pub fn delete_records(&self, offset: u64) -> Result<u64, LogError> {
        let mut s = self.state();
        if offset > s.written {
            return Err(LogError::OutOfRange { offset, start: s.log_start, end: s.written });
        }
        if offset <= s.log_start {
            return Ok(s.log_start);
        }
        super::log_start::write(&s.dir, offset)?;
        s.log_start = offset;
        while s.segments.len() > 1 && s.segments[0].next_offset <= offset {
            let seg = s.segments.remove(0);
            seg.remove_files()?;
        }
        s.drop_cache_below_start();
        Ok(offset)
    }

    /// Deletes whole oldest segments beyond `retention.bytes` or older than `retention.ms`; the
    /// active segment is never deleted. Returns how many segments went.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut s = self.state();
        let mut removed = 0;
        let mut total: u64 = s.segments.iter().map(|seg| seg.size).sum();
        while s.segments.len() > 1 {
            let oldest = &s.segments[0];
            let by_size = s.cfg.retention_bytes >= 0 && total - oldest.size >= s.cfg.retention_bytes as u64;
            let by_time = s.cfg.retention_ms >= 0 && oldest.max_timestamp >= 0 && oldest.max_timestamp < now_ms - s.cfg.retention_ms;
            if !(by_size || by_time) || oldest.next_offset > s.written {
                break;
            }
            let seg = s.segments.remove(0);
            total -= seg.size;
            seg.remove_files()?;
            s.log_start = s.log_start.max(s.segments[0].base);
            removed += 1;
        }
        s.drop_cache_below_start();
        Ok(removed)
    }

    /// Writes what is queued, fsyncs, and stops the writer. Appends fail afterwards.
    pub async fn close(&self) -> Result<(), LogError> {
        self.state().closing = true;
        self.writer_wake.notify_all();
        self.wait_until(|s| s.queued == 0).await.or_else(|e| if matches!(e, LogError::Deleted) { Ok(()) } else { Err(e) })?;
        let file = self.state().segments.last().expect("active segment").file.clone();
        file.fdatasync().await?;
        let s = self.state();
        for seg in &s.segments {
            seg.sync_indexes()?;
        }
        Ok(())
    }

    /// Closes the log and removes its directory.
    pub async fn delete(&self) -> Result<(), LogError> {
        self.close().await?;
        let dir = self.state().dir.clone();
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// Totals for tests and metrics: (segments, index entries in all segments, cached bytes).
    pub fn stats(&self) -> (usize, usize, usize) {
        let s = self.state();
        (s.segments.len(), s.segments.iter().map(|seg| seg.index_entries()).sum(), s.cache_bytes)
    }

    async fn write_loop(self: Rc<Self>) {
        loop {
            // Producers woken by the last write append right away: let them run before deciding
            // the writer is idle, so zeroing never delays the next group of data.
            futures_lite::future::yield_now().await;
            match self.preallocate_if_idle().await {
                // More may be due: look again (pending data first) before sleeping.
                Ok(true) => continue,
                Ok(false) => {}
                // Only an optimisation: data writes extend the file themselves.
                Err(e) => tracing::warn!(error = %e, "preallocating the active segment failed"),
            }
            let wait = {
                let s = self.state();
                if s.queued == 0 {
                    if s.closing {
                        self.progressed.notify_all();
                        return;
                    }
                    match s.cfg.flush {
                        FlushPolicy::Interval(ms) if s.unflushed_messages > 0 => {
                            Some(Duration::from_millis(ms).saturating_sub(s.last_flush.elapsed()))
                        }
                        _ => None,
                    }
                } else {
                    Some(Duration::ZERO)
                }
            };
            match wait {
                None => {
                    let trimmable = {
                        let s = self.state();
                        s.prealloc_end > s.written_blocks_end()
                    };
                    if !trimmable {
                        self.writer_wake.notified().await;
                    } else if shards::within(IDLE_TRIM_AFTER, self.writer_wake.notified()).await.is_none() {
                        // Appends made while trimming are written below: the turn goes on.
                        if let Err(e) = self.trim_preallocation().await {
                            tracing::warn!(error = %e, "giving back preallocated space failed");
                        }
                    }
                }
                Some(d) if !d.is_zero() => {
                    futures_lite::future::or(self.writer_wake.notified(), async {
                        shards::sleep(d).await;
                    })
                    .await
                }
                Some(_) => {}
            }
            if let Err(e) = self.write_once().await {
                tracing::error!(error = %e, "log write failed; partition is now read-only");
                self.state().failed = Some(e.to_string());
                self.progressed.notify_all();
                return;
            }
        }
    }

    /// While nothing waits to be written, writes zeros ahead of the tail (up to
    /// `PREALLOC_AHEAD_BYTES`), one small chunk per call. Data writes then overwrite written blocks:
    /// on ext4 an O_DIRECT write that extends the file cannot complete inline and is handed to an
    /// io-wq worker thread, and making it durable costs ~4 ms instead of ~0.2 ms (MEASURED.md).
    /// Recovery reads the zeros as the end of the log.
    async fn preallocate_if_idle(&self) -> Result<bool, LogError> {
        let (file, at, len) = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            // A partition nobody writes to preallocates nothing (a thousand idle partitions would
            // otherwise write gigabytes of zeros), one written slowly little.
            let ahead = (2 * s.window_bytes.max(s.last_window_bytes)).next_multiple_of(BLOCK_BYTES).min(PREALLOC_AHEAD_BYTES);
            let end = (active.size + ahead).next_multiple_of(BLOCK_BYTES).min(s.cfg.segment_bytes / BLOCK_BYTES * BLOCK_BYTES);
            if s.queued > 0 || active.size == 0 || s.closing || s.prealloc_end >= end {
                return Ok(false);
            }
            (active.file.clone(), s.prealloc_end, (end - s.prealloc_end).min(PREALLOC_CHUNK_BYTES) as usize)
        };
        let mut zeros = file.alloc_dma_buffer(len);
        zeros.as_bytes_mut().fill(0);
        // The writer task is the only one writing or rolling, so the file is still the active one.
        let wrote = file.write_at(zeros, at).await?;
        if wrote != len {
            return Ok(false);
        }
        let mut s = self.state();
        s.prealloc_end = s.prealloc_end.max(at + wrote as u64);
        Ok(true)
    }

    /// Cuts the active segment's file back to its last written block: a partition that stopped
    /// being written to keeps no zeros ahead of its tail. Run by the writer task, the only one that
    /// writes or rolls, while nothing is queued.
    async fn trim_preallocation(&self) -> Result<(), LogError> {
        let (file, keep) = {
            let mut s = self.state();
            (s.window_bytes, s.last_window_bytes) = (0, 0);
            let keep = s.written_blocks_end();
            if s.queued > 0 || s.closing || s.prealloc_end <= keep {
                return Ok(());
            }
            (s.segments.last().expect("active segment").file.clone(), keep)
        };
        file.truncate(keep).await?;
        let mut s = self.state();
        s.prealloc_end = s.prealloc_end.min(keep);
        Ok(())
    }

    /// One turn of the writer: roll if due, write queued batches, fsync per policy.
    async fn write_once(&self) -> Result<(), LogError> {
        self.roll_if_due().await?;
        if self.state().queued == 0 {
            return self.flush_if_due().await;
        }
        let (file, write_pos, buf, taken, next_tail) = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            let room = s.cfg.segment_bytes.saturating_sub(active.size);
            let mut taken = 0;
            let mut data_len = 0usize;
            for p in s.unwritten() {
                let fits = (data_len + p.info.bytes) as u64 <= room || (taken == 0 && active.size == 0);
                if !fits || (taken > 0 && data_len + p.info.bytes > WRITE_BYTES_MAX) {
                    break;
                }
                data_len += p.info.bytes;
                taken += 1;
            }
            assert!(taken > 0, "a pending batch always fits an empty or rolled segment");
            let active = s.segments.last().expect("active segment");
            let write_pos = active.size - s.tail_block.len() as u64;
            debug_assert_eq!(write_pos % BLOCK_BYTES, 0);
            let total = s.tail_block.len() + data_len;
            let aligned = total.div_ceil(BLOCK_BYTES as usize) * BLOCK_BYTES as usize;
            let mut buf = active.file.alloc_dma_buffer(aligned);
            let out = buf.as_bytes_mut();
            out[..s.tail_block.len()].copy_from_slice(&s.tail_block);
            let mut at = s.tail_block.len();
            for part in s.unwritten().take(taken).flat_map(|p| p.held.parts()) {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            out[at..].fill(0);
            // What will be the new partial last block, rewritten by the next write.
            let next_tail = out[total - total % BLOCK_BYTES as usize..total].to_vec();
            (active.file.clone(), write_pos, buf, taken, next_tail)
        };
        let expect = buf.len();
        let wrote = file.write_at(buf, write_pos).await?;
        if wrote != expect {
            return Err(LogError::Storage(format!("short write: {wrote} of {expect} bytes")));
        }
        {
            let mut guard = self.state();
            let s = &mut *guard;
            let interval = s.cfg.index_interval_bytes;
            let seg = s.segments.last_mut().expect("active segment");
            let mut pos = seg.size;
            let start = pos;
            let mut messages = 0;
            let first = s.cache.len() - s.queued;
            for p in s.cache.range(first..first + taken) {
                assert_eq!(p.info.base_offset as u64, s.written, "offsets are written contiguously");
                seg.track_batch(pos, &p.info, interval);
                pos += p.info.bytes as u64;
                s.written = p.next();
                s.queued_bytes -= p.info.bytes;
                messages += u64::from(p.info.offset_count);
            }
            s.queued -= taken;
            debug_assert_eq!(seg.size, pos);
            debug_assert_eq!(seg.size % BLOCK_BYTES, next_tail.len() as u64);
            seg.persist_indexes()?;
            s.prealloc_end = s.prealloc_end.max(write_pos + expect as u64);
            if s.window_start.elapsed() >= RATE_WINDOW {
                s.last_window_bytes = if s.window_start.elapsed() < 2 * RATE_WINDOW { s.window_bytes } else { 0 };
                (s.window_bytes, s.window_start) = (0, Instant::now());
            }
            s.window_bytes += pos - start;
            s.tail_block = next_tail;
            s.unflushed_messages += messages;
            s.evict_cache();
        }
        // Readers and acks=1 need only the write; acks=all may also need the fsync below.
        self.appended.notify_all();
        self.progressed.notify_all();
        self.flush_if_due().await
    }

    async fn flush_if_due(&self) -> Result<(), LogError> {
        let (file, target) = {
            let s = self.state();
            let due = s.unflushed_messages > 0
                && match s.cfg.flush {
                    FlushPolicy::EveryBatch => true,
                    FlushPolicy::Messages(n) => s.unflushed_messages >= n,
                    FlushPolicy::Interval(ms) => s.last_flush.elapsed() >= Duration::from_millis(ms),
                    FlushPolicy::Never => false,
                };
            if !due {
                return Ok(());
            }
            (s.segments.last().expect("active segment").file.clone(), s.written)
        };
        file.fdatasync().await?;
        let mut s = self.state();
        s.durable = target;
        s.unflushed_messages = 0;
        s.last_flush = Instant::now();
        drop(s);
        self.progressed.notify_all();
        Ok(())
    }

    async fn roll_if_due(&self) -> Result<(), LogError> {
        let (old_file, size, dir, base) = {
            let s = self.state();
            let Some(first) = s.unwritten().next() else {
                return Ok(());
            };
            let active = s.segments.last().expect("active segment");
            let full = active.size + first.info.bytes as u64 > s.cfg.segment_bytes;
            let old = active.created.elapsed() >= Duration::from_millis(s.cfg.segment_ms);
            if active.size == 0 || !(full || old) {
                return Ok(());
            }
            (active.file.clone(), active.size, s.dir.clone(), s.written)
        };
        // Seal: cut the block padding, make the segment and its indexes durable.
        old_file.truncate(size).await?;
        old_file.fdatasync().await?;
        {
            let mut s = self.state();
            let active = s.segments.last_mut().expect("active segment");
            active.seal_time_index()?;
            active.sync_indexes()?;
        }
        let seg = Segment::create(&dir, base).await?;
        let mut s = self.state();
        s.segments.push(seg);
        s.tail_block.clear();
        s.prealloc_end = 0;
        s.durable = s.durable.max(s.written);
        s.unflushed_messages = 0;
        Ok(())
    }
}

impl State {
    /// The end of the active segment's last written block: what its file keeps without zeros ahead.
    fn written_blocks_end(&self) -> u64 {
        self.segments.last().expect("active segment").size.next_multiple_of(BLOCK_BYTES)
    }

    /// Forgets cached batches wholly below the log start (retention, DeleteRecords).
    fn drop_cache_below_start(&mut self) {
        while self.cache.front().is_some_and(|c| c.next() <= self.log_start) {
            if let Some(c) = self.cache.pop_front() {
                self.cache_bytes -= c.held.len();
            }
        }
    }

    /// The writer's queue: cached batches not yet written, oldest first.
    fn unwritten(&self) -> impl Iterator<Item = &Cached> {
        self.cache.range(self.cache.len() - self.queued..)
    }

    /// A copy of `batch` with `base_offset` patched in: in the current slab or a new one, or on its
    /// own if it is large for a slab.
    fn copy_to_slab(&mut self, batch: &[u8], base_offset: u64) -> Bytes {
        let slab_bytes = (self.cfg.cache_bytes / 8).clamp(SLAB_BYTES_MIN, SLAB_BYTES_MAX);
        let mut copy = if batch.len() > slab_bytes / 4 {
            BytesMut::from(batch)
        } else {
            if self.slab.capacity() < batch.len() {
                self.slab = BytesMut::with_capacity(slab_bytes);
            }
            self.slab.extend_from_slice(batch);
            self.slab.split()
        };
        batch::set_base_offset(&mut copy, base_offset);
        copy.freeze()
    }

    fn read_cache(&self, offset: u64, max_bytes: usize, hw: u64) -> Vec<Chunk> {
        let first = self.cache.partition_point(|c| c.next() <= offset);
        let mut out = Vec::new();
        let mut total = 0;
        for c in self.cache.iter().skip(first) {
            if c.base() >= hw || (!out.is_empty() && total + c.held.len() > max_bytes) {
                break;
            }
            total += c.held.len();
            out.extend(c.held.parts().cloned().map(Chunk::Memory));
        }
        out
    }

    /// Drops the oldest written batches beyond the cache budget. Unwritten ones always stay: the
    /// writer and readers of the tail rely on them.
    fn evict_cache(&mut self) {
        while self.cache_bytes > self.cfg.cache_bytes && self.cache.front().is_some_and(|c| c.next() <= self.written) {
            let c = self.cache.pop_front().expect("checked");
            self.cache_bytes -= c.held.len();
        }
    }
}

async fn read_tail_block(seg: &Segment) -> Result<Vec<u8>, LogError> {
    let tail_len = seg.size % BLOCK_BYTES;
    if tail_len == 0 {
        return Ok(Vec::new());
    }
    let got = seg.file.read_at(seg.size - tail_len, tail_len as usize).await?;
    if got.len() as u64 != tail_len {
        return Err(LogError::Storage("short read of the tail block".into()));
    }
    Ok(got.to_vec())
}

/// A batch found by `find_batch`.
struct Found {
    pos: u64,
    len: usize,
}

/// The offset of a batch's last record.
fn last_offset(h: &BatchHeader) -> u64 {
    (h.base_offset.get() + i64::from(h.last_offset_delta.get())) as u64
}

/// The bytes of a batch found by `find_batch`.
async fn read_found(file: &shards::DmaFile, found: Option<Found>) -> Result<Option<Bytes>, LogError> {
    let Some(found) = found else { return Ok(None) };
    let bytes = file.read_at(found.pos, found.len).await?;
    if bytes.len() != found.len {
        return Err(LogError::Storage(format!("short read of a batch at position {}", found.pos)));
    }
    Ok(Some(Bytes::copy_from_slice(&bytes)))
}

/// The first batch at or after `pos` (a batch boundary, below `size`) whose header satisfies
/// `wanted`. Reads headers only and steps over batch bodies: these bytes were validated when they
/// were appended.
async fn find_batch(
    file: &shards::DmaFile,
    mut pos: u64,
    size: u64,
    wanted: impl Fn(&BatchHeader) -> bool,
) -> Result<Option<Found>, LogError> {
    while pos < size {
        let chunk = file.read_at(pos, (size - pos).min(HEADER_SCAN_BYTES) as usize).await?;
        let mut at = 0;
        while let (Ok(h), Ok(len)) = (batch::header(&chunk[at..]), batch::framed_len(&chunk[at..])) {
            if wanted(h) {
                return Ok(Some(Found { pos: pos + at as u64, len }));
            }
            at += len;
            if at >= chunk.len() {
                break;
            }
        }
        if at == 0 {
            return Err(LogError::Storage(format!("unreadable batch header at position {pos}")));
        }
        pos += at as u64;
    }
    Ok(None)
}
