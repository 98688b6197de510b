//! The writer task of a partition's log: group commit, fsync per policy, segment rolls,
//! preallocation ahead of the tail while idle, and, once the partition is idle, giving back the
//! preallocated zeros and its open files.

use super::files::IDLE_AFTER;
use super::*;
use crate::metrics::recorder;

/// Largest single write the writer issues; more waits for the next turn.
const WRITE_BYTES_MAX: usize = 8 << 20;
/// How far ahead of the tail an idle writer writes zeros at most, and in what steps (a step delays
/// a data write that arrives meanwhile by its duration, so it is small). Below the most, a
/// partition written more than once lately preallocates twice what it wrote in the last
/// `RATE_WINDOW`: a partition written to slowly costs KiB of zeros, not MiB, and one written once none.
const PREALLOC_AHEAD_BYTES: u64 = 2 << 20;
const PREALLOC_CHUNK_BYTES: u64 = 256 << 10;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// After a failed preallocation (a full disk, usually) none is tried for this long.
const PREALLOC_PAUSE: Duration = Duration::from_secs(30);

/// A partition out of space looks for room again after this, doubling up to the most.
const SPACE_CHECK_FIRST: Duration = Duration::from_millis(250);
const SPACE_CHECK_MAX: Duration = Duration::from_secs(5);
/// Free space at which a partition that ran out tries appending again.
const SPACE_TO_RESUME: u64 = 4 << 20;

impl Log {
    pub(super) async fn write_loop(self: Rc<Self>) {
        loop {
            // Producers woken by the last write append right away: let them run before deciding
            // the writer is idle, so zeroing never delays the next group of data.
            futures_lite::future::yield_now().await;
            match self.preallocate_if_idle().await {
                // More may be due: look again (pending data first) before sleeping.
                Ok(true) => continue,
                Ok(false) => {}
                // Only an optimisation: data writes extend the file themselves.
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = PREALLOC_PAUSE.as_secs(), "preallocating the active segment failed");
                    self.state().prealloc_paused_until = Some(Instant::now() + PREALLOC_PAUSE);
                }
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
                        // What recovery found past the recovery point: readers wait for its fsync.
                        FlushPolicy::EveryBatch if s.unflushed_messages > 0 => Some(Duration::ZERO),
                        _ => None,
                    }
                } else {
                    Some(Duration::ZERO)
                }
            };
            match wait {
                None => {
                    // No timer per idle turn (a busy partition goes idle thousands of times a
                    // second): the shard's sweeper wakes writers whose partitions have been idle
                    // (`file_budget::sweep`). Appends made meanwhile are written below.
                    self.writer_wake.notified().await;
                    self.let_go_if_idle().await;
                    if self.state().queued == 0 {
                        // Woken to close, or by the sweeper: decided at the top.
                        continue;
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
                self.fail(&e);
                if !matches!(e, LogError::NoSpace(_)) {
                    tracing::error!(dir = %self.state().dir.display(), error = %e, "log write failed; partition is now read-only");
                    return;
                }
                tracing::warn!(dir = %self.state().dir.display(), error = %e, "disk full: appends refused until space is freed");
                if self.wait_for_space().await {
                    self.state().failed = None;
                    tracing::info!(dir = %self.state().dir.display(), "space available again: appending");
                }
            }
        }
    }

    /// While nothing waits to be written, writes zeros ahead of the tail (up to
    /// `PREALLOC_AHEAD_BYTES`), one small chunk per call. Data writes then overwrite written blocks:
    /// on ext4 an O_DIRECT write that extends the file cannot complete inline and is handed to an
    /// io-wq worker thread, and making it durable costs ~4 ms instead of ~0.2 ms (MEASURED.md).
    /// A zero write extends the file too, and the next data write waits for it: zeros are added
    /// only once less than half the goal is left ahead, not after every data write (which made
    /// every other write of a steady 100k msgs/s a 4 KiB zero write through io-wq).
    /// Recovery reads the zeros as the end of the log.
    async fn preallocate_if_idle(&self) -> Result<bool, LogError> {
        let (at, len) = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            let end = s.zeros_goal(active.size);
            let enough = s.prealloc_end.saturating_sub(active.size) >= end.saturating_sub(active.size) / 2;
            if s.queued > 0 || active.size == 0 || s.closing || s.rolling || enough || s.prealloc_paused() {
                return Ok(false);
            }
            (s.prealloc_end, (end - s.prealloc_end).min(PREALLOC_CHUNK_BYTES) as usize)
        };
        let file = self.active_file().await?;
        let mut zeros = file.alloc(len);
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

    /// Refuses appends with `e` from now on. Batches not yet written are dropped: their producers
    /// get the error (and retry), and their offsets are given to the next appends.
    fn fail(&self, e: &LogError) {
        let mut s = self.state();
        s.failed = Some(e.to_string());
        s.disk_failed |= !matches!(e, LogError::NoSpace(_));
        s.failures += 1;
        while s.queued > 0 {
            let Some(dropped) = s.cache.pop_back() else { break };
            s.uncache(&dropped);
            s.queued -= 1;
        }
        (s.queued, s.queued_bytes) = (0, 0);
        s.next_offset = s.written;
        s.producers = s.producers_written.clone();
        drop(s);
        self.progressed.notify_all();
    }

    /// Waits, checking with backoff, until the log's filesystem has room again; `false` if the log
    /// is closed first.
    async fn wait_for_space(&self) -> bool {
        let mut backoff = SPACE_CHECK_FIRST;
        loop {
            let dir = {
                let s = self.state();
                if s.closing {
                    return false;
                }
                s.dir.clone()
            };
            if fs::available_bytes(&dir).is_some_and(|free| free >= SPACE_TO_RESUME) {
                return true;
            }
            futures_lite::future::or(self.writer_wake.notified(), shards::sleep(backoff)).await;
            backoff = (backoff * 2).min(SPACE_CHECK_MAX);
        }
    }

    /// A partition neither written nor read for `IDLE_AFTER` gives back its preallocated zeros and
    /// closes its files: ten thousand idle partitions hold no descriptors.
    async fn let_go_if_idle(&self) {
        if self.state().last_used.elapsed() < IDLE_AFTER {
            return;
        }
        if let Err(e) = self.trim_preallocation().await {
            tracing::warn!(error = %e, "giving back preallocated space failed");
        }
        let idle = {
            let s = self.state();
            s.queued == 0 && !s.closing && s.last_used.elapsed() >= IDLE_AFTER
        };
        if idle {
            self.release_files();
        }
    }

    /// The active segment's DMA file, opened again if the partition was idle.
    async fn active_file(&self) -> Result<Rc<fs::DirectFile>, LogError> {
        let base = self.state().segments.last().expect("active segment").base;
        Ok(self.files_of(base).await?.file)
    }

    /// Cuts the active segment's file back to its last written block: a partition that stopped
    /// being written to keeps no zeros ahead of its tail. Run by the writer task, the only one that
    /// writes or rolls, while nothing is queued.
    async fn trim_preallocation(&self) -> Result<(), LogError> {
        let keep = {
            let mut s = self.state();
            (s.window_bytes, s.last_window_bytes, s.window_writes, s.last_window_writes) = (0, 0, 0, 0);
            let keep = s.written_blocks_end();
            if s.queued > 0 || s.closing || s.prealloc_end <= keep {
                return Ok(());
            }
            keep
        };
        let file = self.active_file().await?;
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
        let file = self.active_file().await?;
        let (write_pos, buf, taken, next_tail, aligned) = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            let room = s.cfg.segment_bytes.saturating_sub(active.size);
            let mut taken = 0;
            let mut data_len = 0usize;
            for p in s.unwritten() {
                let fits = (data_len + p.info.bytes) as u64 <= room || (taken == 0 && active.size == 0);
                if !fits || (taken > 0 && (data_len + p.info.bytes > WRITE_BYTES_MAX || !active.can_index(p.next() - 1))) {
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
            let zeros_end = s.zeros_goal(write_pos + total as u64);
            let mut buf = file.alloc(if s.prealloc_paused() { aligned } else { write_len(write_pos, aligned, s.prealloc_end, zeros_end) });
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
            (write_pos, buf, taken, next_tail, aligned)
        };
        self.save_epochs().await?;
        let expect = buf.len();
        let started = Instant::now();
        let wrote = match file.write_at(buf, write_pos).await {
            Ok(wrote) => wrote,
            // Perhaps out of room for the zeros only: no zeros for a while, and the next turn
            // writes the same batches alone (they are still queued).
            Err(_) if expect > aligned => {
                self.state().prealloc_paused_until = Some(Instant::now() + PREALLOC_PAUSE);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        recorder::storage_write(started.elapsed(), expect as u64, taken as u64);
        // The zeros after the data may be cut short (the disk filling up): the data is what counts.
        if wrote < aligned {
            return Err(LogError::Storage(format!("short write: {wrote} of {aligned} bytes")));
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
                // A follower's copy of a compacted leader has gaps between batches; nothing else does.
                debug_assert!(p.info.base_offset as u64 >= s.written, "offsets are written in order");
                let jumped = p.info.base_offset as u64 > s.written.max(seg.base);
                seg.track_batch(pos, &p.info, interval);
                pos += p.info.bytes as u64;
                if jumped {
                    s.gap_end = Some((seg.base, pos));
                }
                s.written = p.next();
                s.queued_bytes -= p.info.bytes;
                messages += u64::from(p.info.offset_count);
                let Some(done) = s.producers_written.record(&p.info, p.marker) else { continue };
                seg.txns.extend(s.producers_written.aborted_entry(&done));
                s.unstable_txns.insert(done.first_offset, done.marker_offset);
            }
            s.queued -= taken;
            debug_assert_eq!(seg.size, pos);
            debug_assert_eq!(seg.size % BLOCK_BYTES, next_tail.len() as u64);
            // The data is written whatever happens to the index: recovery rebuilds an index from
            // its segment, and a failed one is written whole again at the next try (or the seal).
            if let Err(e) = seg.persist_indexes(false).and_then(|()| seg.txns.persist()) {
                tracing::warn!(dir = %s.dir.display(), error = %e, "writing a segment's index failed; it is rewritten later");
            }
            s.last_used = Instant::now();
            s.prealloc_end = s.prealloc_end.max(write_pos + (wrote as u64) / BLOCK_BYTES * BLOCK_BYTES);
            if s.window_start.elapsed() >= RATE_WINDOW {
                let recent = s.window_start.elapsed() < 2 * RATE_WINDOW;
                s.last_window_bytes = if recent { s.window_bytes } else { 0 };
                s.last_window_writes = if recent { s.window_writes } else { 0 };
                (s.window_bytes, s.window_writes, s.window_start) = (0, 0, Instant::now());
            }
            s.window_bytes += pos - start;
            s.window_writes += 1;
            s.tail_block = next_tail;
            s.unflushed_messages += messages;
        }
        read_cache::trim();
        // Readers and acks=1 need only the write; acks=all may also need the fsync below.
        self.appended.notify_all();
        self.progressed.notify_all();
        self.flush_if_due().await
    }

    async fn flush_if_due(&self) -> Result<(), LogError> {
        {
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
        };
        self.sync_written().await
    }

    /// Makes everything written durable: fsyncs the active segment (the writer per the flush
    /// policy; the cleaner before a pass, which must not act on a decision a power loss could
    /// take back).
    pub(super) async fn sync_written(&self) -> Result<(), LogError> {
        let (target, end) = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            (s.written, (active.base, active.size))
        };
        let file = self.active_file().await?;
        self.fsync_active(&file).await?;
        let moved_high_watermark = {
            let mut s = self.state();
            // A roll meanwhile made more durable, and moved the active segment on.
            if target > s.durable || s.durable_end.0 == end.0 && end.1 > s.durable_end.1 {
                s.durable = target;
                s.durable_end = end;
            }
            s.unstable_txns.retain(|_, marker| *marker >= target);
            // Writes since (the cleaner's call may overlap the writer's) still count for the next.
            if s.written == target {
                s.unflushed_messages = 0;
                s.last_flush = Instant::now();
            }
            s.cfg.flush == FlushPolicy::EveryBatch
        };
        if moved_high_watermark {
            self.appended.notify_all();
        }
        self.progressed.notify_all();
        self.checkpoint_recovery_point(CHECKPOINT_BYTES).await
    }

    /// Fsyncs the active segment's file, after the partition's directory if recovery found names
    /// there that a crash may not have made durable (a segment created just before it).
    pub(super) async fn fsync_active(&self, file: &fs::DirectFile) -> Result<(), LogError> {
        let dir = {
            let s = self.state();
            s.dir_unsynced.then(|| s.dir.clone())
        };
        if let Some(dir) = dir {
            fs::sync_dir(&dir).await.map_err(LogError::fsync)?;
            self.state().dir_unsynced = false;
        }
        let started = Instant::now();
        file.fdatasync().await.map_err(LogError::fsync)?;
        recorder::storage_fsync(started.elapsed());
        Ok(())
    }

    /// Writes the recovery point checkpoint if the durable part of the active segment has grown at
    /// least `min_growth` bytes past it.
    pub(super) async fn checkpoint_recovery_point(&self, min_growth: u64) -> Result<(), LogError> {
        let due = |s: &State| {
            let (base, pos) = s.durable_end;
            let from = if s.recovery_point.0 == base { s.recovery_point.1 } else { 0 };
            let gap = s.gap_end.is_some_and(|(gap_base, gap_pos)| gap_base == base && from < gap_pos && gap_pos <= pos);
            pos > from && (pos - from >= min_growth || gap)
        };
        if !due(&self.state()) {
            return Ok(());
        }
        let _turn = self.checkpointing.take().await;
        let (dir, point) = {
            let s = self.state();
            if !due(&s) {
                return Ok(());
            }
            (s.dir.clone(), s.durable_end)
        };
        super::super::checkpoint::write(&dir, super::super::checkpoint::RECOVERY_POINT, &[point.0, point.1]).await?;
        let mut s = self.state();
        s.recovery_point = point;
        s.gap_end = s.gap_end.filter(|&(base, pos)| base == point.0 && pos > point.1);
        Ok(())
    }

    async fn roll_if_due(&self) -> Result<(), LogError> {
        let (size, dir, base) = {
            let mut s = self.state();
            let active = s.segments.last().expect("active segment");
            if !s.rolling {
                let Some(first) = s.unwritten().next() else {
                    return Ok(());
                };
                let full = active.size + first.info.bytes as u64 > s.cfg.segment_bytes;
                let old = active.created.elapsed() >= Duration::from_millis(s.cfg.segment_ms);
                // Kafka rolls likewise at a batch the segment cannot index.
                if active.can_index(first.next() - 1) && (active.size == 0 || !(full || old)) {
                    return Ok(());
                }
            }
            // The next segment starts at the first batch it takes, past a gap a follower copied.
            let base = s.unwritten().next().map_or(s.written, |first| s.written.max(first.info.base_offset as u64));
            let rolled = (active.size, s.dir.clone(), base);
            // A failure below leaves the roll to be retried, even if the batches that made it due
            // are dropped: a successor's file may exist, so the sealed segment takes no more.
            s.rolling = true;
            rolled
        };
        let old_file = self.active_file().await?;
        // Seal: cut the block padding, make the segment and its indexes durable.
        old_file.truncate(size).await?;
        self.fsync_active(&old_file).await?;
        let (sealed, indexes) = {
            let mut s = self.state();
            let active = s.segments.last_mut().expect("active segment");
            (active.base, active.seal()?)
        };
        Segment::sync_indexes(indexes).await.map_err(LogError::fsync)?;
        let seg = Segment::create(&dir, base).await?;
        {
            let mut s = self.state();
            s.segments.push(seg);
            s.rolling = false;
            // The sealed segment's log files stay open like a read's, within the same bound.
            s.reading.push_back(sealed);
            s.tail_block.clear();
            s.prealloc_end = 0;
            s.durable = s.durable.max(s.written);
            let durable = s.durable;
            s.unstable_txns.retain(|_, marker| *marker >= durable);
            s.durable_end = (base, 0);
            s.unflushed_messages = 0;
        }
        // Recovery then reads the headers of the active segment only.
        self.snapshot_producers(base).await
    }
}

/// How many bytes a data write of `aligned` bytes at `pos` writes. Within the zeros ahead (up to
/// `prealloc_end`) just its own. Past them it extends the file, which is as dear as the idle
/// preallocation avoids (an io-wq worker, ext4's inode held exclusively until the write is done),
/// so it also writes the zeros up to `zeros_end`, at most `PREALLOC_CHUNK_BYTES` more: under a
/// steady load the writer is never idle, and without this one write in three (every one that
/// crosses into a new block) was handed to a worker thread.
fn write_len(pos: u64, aligned: usize, prealloc_end: u64, zeros_end: u64) -> usize {
    let end = pos + aligned as u64;
    if end <= prealloc_end {
        return aligned;
    }
    let extended = zeros_end.min(end + PREALLOC_CHUNK_BYTES).max(end);
    (extended - pos) as usize
}

impl State {
    /// Where zeros ahead of a tail at `from` should end. A partition nobody writes to preallocates
    /// nothing (a thousand idle partitions would otherwise write gigabytes of zeros), one written
    /// slowly little; only a partition written again and again: one written once (a producer
    /// spreading its batches over thousands of partitions) would pay the zeros and gain nothing.
    fn zeros_goal(&self, from: u64) -> u64 {
        let repeated = self.window_writes + self.last_window_writes >= 2;
        let rate = if repeated { self.window_bytes.max(self.last_window_bytes) } else { 0 };
        let ahead = (2 * rate).next_multiple_of(BLOCK_BYTES).min(PREALLOC_AHEAD_BYTES);
        (from + ahead).next_multiple_of(BLOCK_BYTES).min(self.cfg.segment_bytes / BLOCK_BYTES * BLOCK_BYTES)
    }

    /// Whether zeros ahead are off for now (after a failed zero write: a full disk, usually).
    fn prealloc_paused(&self) -> bool {
        self.prealloc_paused_until.is_some_and(|until| Instant::now() < until)
    }

    /// The end of the active segment's last written block: what its file keeps without zeros ahead.
    fn written_blocks_end(&self) -> u64 {
        self.segments.last().expect("active segment").size.next_multiple_of(BLOCK_BYTES)
    }
}
