//! One cleaning pass over a log (Kafka's `Cleaner.doClean`), run by the shard's cleaner.
//!
//! The dirty part of the log (from the checkpointed first dirty offset to the first offset that may
//! not be cleaned yet: the active segment, the last stable offset, `min.compaction.lag.ms`) is read
//! into a key → latest offset map, as far as the map holds; then every closed segment from the log
//! start up to where the map ends is rewritten with only the records that stay (`compaction::clean`),
//! one output file per segment, each kept record at its offset.
//!
//! The cleaned segments are written beside the originals (`<base>.log.cleaned`) and put in their
//! place, a group at a time, by `swap`, which has the crash protocol.

use super::swap::Cleaned;
use super::*;
use crate::storage::compaction::clean::{self, Aborted, Rules, Stats, Transactions};
use crate::storage::compaction::offset_map::{OffsetMap, ENTRY_BYTES};
use crate::storage::compaction::throttle::Throttle;
use shards::fs::DirectFile;

/// Bytes read from a segment at a time (a larger batch is read whole): the work between two
/// chances for requests to run is a chunk's (about 0.5 ms here for 256 KiB).
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Cleaned bytes written at a time.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Cleaned segments put in place together (`swap`): each step's fsyncs are shared by the group,
/// where one by one they cost the shard's writes a device flush each.
const GROUP_SEGMENTS: usize = 32;
/// Dirty bytes per map entry the cleaner expects at least: the map it allocates for a small log is
/// small (a record with its key, value and framing takes more than this).
const DIRTY_BYTES_PER_KEY: u64 = 16;

/// How much of a log is worth cleaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dirt {
    /// Dirty bytes over the bytes of the closed segments that may be cleaned.
    pub ratio: f64,
    /// A dirty record is older than `max.compaction.lag.ms`: cleaned whatever the ratio.
    pub overdue: bool,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// The dirty part it took: from `first_dirty` to `cleaned_to` (the next pass's first dirty offset).
    pub first_dirty: u64,
    pub cleaned_to: u64,
    /// Segments replaced by cleaned ones (those cleaning did not change are kept).
    pub segments_replaced: usize,
    /// Time spent putting cleaned segments in place (`swap.rs`): mostly device flushes, which
    /// stall the disk's other writes meanwhile.
    pub swap: std::time::Duration,
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to clean (not compacted, nothing dirty, closing).
    Idle,
    Cleaned(Pass),
    /// The map cannot hold the keys of the first dirty batch: `log.cleaner.dedupe.buffer.size` is too small.
    MapTooSmall,
}

/// The cleaner's resources for one pass.
pub struct Budget<'a> {
    /// Memory for the key map.
    pub map_bytes: usize,
    pub throttle: &'a mut Throttle,
}

impl Log {
    /// How dirty the log is, if it is compacted and its dirty part is due for cleaning
    /// (`min.cleanable.dirty.ratio`, or `max.compaction.lag.ms` passed).
    pub fn dirt(&self, now_ms: i64) -> Option<Dirt> {
        let s = self.state();
        let c = &s.cfg.cleanup;
        if !c.compact || s.failed.is_some() {
            return None;
        }
        let (first_dirty, limit) = (s.first_dirty(), s.first_uncleanable(now_ms));
        if first_dirty >= limit {
            return None;
        }
        let clean: u64 = s.segments.iter().filter(|seg| seg.next_offset <= first_dirty).map(|seg| seg.size).sum();
        let dirty_bytes: u64 = s.dirty_segments(first_dirty, limit).map(|seg| seg.size).sum();
        if dirty_bytes == 0 {
            return None;
        }
        let ratio = dirty_bytes as f64 / (clean + dirty_bytes) as f64;
        let oldest = s.dirty_segments(first_dirty, limit).next().and_then(Segment::first_timestamp);
        let overdue = c.max_compaction_lag_ms < i64::MAX && oldest.is_some_and(|ts| ts < now_ms.saturating_sub(c.max_compaction_lag_ms));
        (overdue || ratio >= c.min_cleanable_dirty_ratio).then_some(Dirt { ratio, overdue })
    }

    /// One cleaning pass (see the module's comment).
    pub async fn compact(&self, now_ms: i64, budget: Budget<'_>) -> Result<Outcome, LogError> {
        let _files = self.segment_files.take().await;
        {
            let s = self.state();
            if s.closing || !s.cfg.cleanup.compact || s.failed.is_some() {
                return Ok(Outcome::Idle);
            }
        }
        // The markers written, and the transactions they decided, must be durable before records
        // are removed (or kept) for good on their word.
        let unsynced = {
            let s = self.state();
            s.durable < s.written
        };
        if unsynced {
            self.sync_written().await?;
        }
        let (first_dirty, limit, dirty_bytes, dir) = {
            let s = self.state();
            let (first_dirty, limit) = (s.first_dirty(), s.first_uncleanable(now_ms));
            let dirty: u64 = s.dirty_segments(first_dirty, limit).map(|seg| seg.size).sum();
            (first_dirty, limit, dirty, s.dir.clone())
        };
        if first_dirty >= limit {
            return Ok(Outcome::Idle);
        }
        let aborted = self.aborted_for_cleaning();
        let entries = (dirty_bytes / DIRTY_BYTES_PER_KEY).max(1024) as usize;
        let mut map = OffsetMap::with_memory(budget.map_bytes.min(entries.saturating_mul(ENTRY_BYTES)));
        let indexed_to = self.index_dirty(first_dirty, limit, &aborted, &mut map, budget.throttle).await?;
        if indexed_to <= first_dirty {
            return Ok(Outcome::MapTooSmall);
        }
        let mut pass = Pass { first_dirty, cleaned_to: indexed_to, ..Pass::default() };
        let bases: Vec<(u64, bool)> = {
            let s = self.state();
            s.segments.iter().filter(|seg| seg.base < indexed_to).map(|seg| (seg.base, seg.next_offset <= first_dirty)).collect()
        };
        let tombstone_horizon = now_ms.saturating_sub(self.state().cfg.cleanup.delete_retention_ms);
        let last_of_producer = |producer_id: i64, offset: u64| self.state().producers_written.is_last_batch(producer_id, offset);
        let mut txns = Transactions::default();
        let mut group = Vec::new();
        for (base, was_clean) in bases {
            // A tombstone (or marker) goes once it was in the clean part before this pass, and is
            // old enough: a consumer reading the dirty part sees the deletion at least once.
            let horizon = if was_clean { tombstone_horizon } else { i64::MIN };
            let rules =
                Rules { map: &map, indexed_to, aborted: &aborted, tombstones_before_ms: horizon, last_of_producer: &last_of_producer };
            match self.write_cleaned(base, &rules, &mut txns, budget.throttle).await? {
                Written::Gone => {}
                Written::Unchanged(stats) => pass.stats.add(&stats),
                Written::Cleaned(cleaned) => {
                    pass.stats.add(&cleaned.stats);
                    group.push(*cleaned);
                }
            }
            if group.len() >= GROUP_SEGMENTS {
                self.replace_segments(std::mem::take(&mut group), &mut pass).await?;
            }
            if self.state().closing {
                for cleaned in group {
                    fs::remove_file(&cleaned.cleaned_path).await?;
                }
                return Ok(Outcome::Idle);
            }
        }
        self.replace_segments(group, &mut pass).await?;
        super::super::checkpoint::write(&dir, super::super::checkpoint::CLEANER_OFFSET, &[indexed_to]).await?;
        self.state().first_dirty = indexed_to;
        Ok(Outcome::Cleaned(pass))
    }

    /// Every aborted transaction the segments' `.txnindex` files name whose marker is durable
    /// (records are removed for good: a power loss must not take back the abort that justified it).
    fn aborted_for_cleaning(&self) -> Vec<Aborted> {
        let s = self.state();
        s.segments
            .iter()
            .flat_map(|seg| seg.txns.entries())
            .filter(|t| t.last_offset < s.durable)
            .map(|t| Aborted { producer_id: t.producer_id, first: t.first_offset, marker: t.last_offset })
            .collect()
    }

    /// Puts the keys of the batches in [`from`, `limit`) into `map`; returns the offset below which
    /// the map knows every key.
    async fn index_dirty(
        &self,
        from: u64,
        limit: u64,
        aborted: &[Aborted],
        map: &mut OffsetMap,
        throttle: &mut Throttle,
    ) -> Result<u64, LogError> {
        let segments: Vec<(u64, u64, u64)> = {
            let s = self.state();
            s.segments
                .iter()
                .filter(|seg| seg.next_offset > from && seg.base < limit)
                .map(|seg| (seg.base, seg.lookup(from), seg.size))
                .collect()
        };
        let mut indexed_to = from;
        for (base, start, size) in segments {
            let Ok(handles) = self.files_of(base).await else { break }; // gone meanwhile (retention)
            let mut reader = Reader { file: &handles.file, pos: start, end: size };
            while let Some(chunk) = reader.next_batches().await.map_err(|e| corrupt(base, e))? {
                let wanted = whole_batches_within(&chunk, from, limit);
                let stop = clean::index(wanted, map, aborted).map_err(|e| corrupt(base, e))?;
                if let Some(stop) = stop {
                    return Ok(stop.max(indexed_to));
                }
                if let Some(end) = end_offset(wanted) {
                    indexed_to = end;
                }
                throttle.spent(chunk.len()).await;
                if end_offset(&chunk).is_some_and(|end| end >= limit) {
                    return Ok(indexed_to);
                }
            }
            indexed_to = indexed_to.max(self.state().segment(base).map_or(indexed_to, |seg| seg.next_offset.min(limit)));
        }
        Ok(indexed_to)
    }

    /// Writes the closed segment at `base` as `rules` leave it to `<base>.log.cleaned`, not yet
    /// durable: `replace_segments` puts it in place.
    async fn write_cleaned(
        &self,
        base: u64,
        rules: &Rules<'_>,
        txns: &mut Transactions,
        throttle: &mut Throttle,
    ) -> Result<Written, LogError> {
        let (path, size, interval) = {
            let s = self.state();
            let Ok(seg) = s.segment(base) else { return Ok(Written::Gone) };
            (seg.path.clone(), seg.size, s.cfg.index_interval_bytes)
        };
        let Ok(handles) = self.files_of(base).await else { return Ok(Written::Gone) };
        txns.removed.clear();
        let cleaned_path = cleaned_path(&path);
        let mut out = Output::create(&cleaned_path).await?;
        let mut seg = Segment::empty(base, path.clone());
        let mut stats = Stats::default();
        let mut reader = Reader { file: &handles.file, pos: 0, end: size };
        while let Some(chunk) = reader.next_batches().await.map_err(|e| corrupt(base, e))? {
            let at = out.buf.len();
            let pass = clean::clean(&chunk, rules, txns, &mut out.buf).map_err(|e| corrupt(base, e))?;
            stats.add(&pass);
            let mut pos = at;
            while pos < out.buf.len() {
                let info = batch::header_info(&out.buf[pos..]).map_err(|e| corrupt(base, e.to_string()))?;
                let file_pos = out.written + pos as u64;
                if file_pos + info.bytes as u64 > u64::from(u32::MAX) {
                    return Err(corrupt(base, "the cleaned segment would outgrow its index".into()));
                }
                seg.track_batch(file_pos, &info, interval);
                pos += info.bytes;
            }
            throttle.spent(chunk.len()).await;
            if out.buf.len() >= WRITE_CHUNK_BYTES {
                let n = out.write_blocks(false).await?;
                throttle.spent(n).await;
            }
            if self.state().closing {
                drop(out);
                fs::remove_file(&cleaned_path).await?;
                return Ok(Written::Gone);
            }
        }
        if stats.bytes_out == stats.bytes_in && stats.records_kept == stats.records_in {
            drop(out);
            fs::remove_file(&cleaned_path).await?;
            return Ok(Written::Unchanged(stats));
        }
        let file = Rc::new(out.finish().await?);
        let markers_removed = std::mem::take(&mut txns.removed);
        Ok(Written::Cleaned(Box::new(Cleaned { base, path, cleaned_path, file, seg, stats, markers_removed })))
    }
}

impl State {
    /// Where the dirty part of the log begins.
    fn first_dirty(&self) -> u64 {
        self.first_dirty.max(self.log_start)
    }

    /// The segments holding dirty offsets in [`first_dirty`, `limit`) (closed ones: `limit` is at
    /// most the active segment's base).
    fn dirty_segments(&self, first_dirty: u64, limit: u64) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(move |seg| seg.next_offset > first_dirty && seg.base < limit)
    }

    /// The first offset that may not be cleaned yet: the active segment's base, the last stable
    /// offset (no transaction still open is cleaned), the first of a transaction whose marker is
    /// not durable yet, and the first segment with a record younger than `min.compaction.lag.ms`.
    fn first_uncleanable(&self, now_ms: i64) -> u64 {
        let active = self.segments.last().expect("active segment").base;
        let undecided = self.unstable_txns.keys().next().copied().unwrap_or(u64::MAX);
        let mut limit = active.min(self.last_stable_offset()).min(undecided);
        let lag = self.cfg.cleanup.min_compaction_lag_ms;
        if lag > 0 {
            let first_dirty = self.first_dirty();
            let young = self.segments.iter().find(|seg| seg.next_offset > first_dirty && seg.max_timestamp > now_ms.saturating_sub(lag));
            if let Some(seg) = young {
                limit = limit.min(seg.base);
            }
        }
        limit
    }
}

enum Written {
    /// Retention, DeleteRecords or a close took the segment meanwhile.
    Gone,
    Unchanged(Stats),
    Cleaned(Box<Cleaned>),
}

fn corrupt(base: u64, why: String) -> LogError {
    LogError::Corrupt(format!("segment {base}: {why}"))
}

fn cleaned_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".cleaned");
    PathBuf::from(name)
}

/// Whether `name` is a file a cleaning pass left behind (recovery deletes them).
pub(super) fn is_leftover(name: &str) -> bool {
    name.ends_with(".log.cleaned")
}

/// The offset after the last of `bytes`' whole batches.
fn end_offset(bytes: &[u8]) -> Option<u64> {
    let mut end = None;
    let mut rest = bytes;
    while let Ok(info) = batch::header_info(rest) {
        end = Some(info.base_offset as u64 + u64::from(info.offset_count));
        rest = &rest[info.bytes.min(rest.len())..];
    }
    end
}

/// The batches of `bytes` whose base offset is in [`from`, `limit`), a contiguous run.
fn whole_batches_within(bytes: &[u8], from: u64, limit: u64) -> &[u8] {
    let (mut start, mut end, mut pos) = (None, 0, 0);
    while let Ok(info) = batch::header_info(&bytes[pos..]) {
        let base = info.base_offset as u64;
        if base >= limit {
            break;
        }
        if base >= from {
            start.get_or_insert(pos);
            end = pos + info.bytes;
        }
        pos += info.bytes;
    }
    start.map_or(&[][..], |s| &bytes[s..end])
}

/// Reads whole batches of a segment file in chunks.
struct Reader<'a> {
    file: &'a DirectFile,
    pos: u64,
    end: u64,
}

impl Reader<'_> {
    /// The next run of whole batches, or `None` at the end of the segment.
    async fn next_batches(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let want = (self.end - self.pos).min(READ_CHUNK_BYTES as u64) as usize;
        let mut chunk = self.file.read_at(self.pos, want).await.map_err(|e| e.to_string())?.to_vec();
        let mut whole = 0;
        loop {
            match batch::framed_len(&chunk[whole..]) {
                Ok(n) if whole + n <= chunk.len() => whole += n,
                Ok(n) if whole == 0 => {
                    // One batch larger than a chunk: read it whole.
                    if self.pos + n as u64 > self.end {
                        return Err(format!("a batch at {} runs past the segment's end", self.pos));
                    }
                    chunk = self.file.read_at(self.pos, n).await.map_err(|e| e.to_string())?.to_vec();
                    whole = n;
                    break;
                }
                _ if whole == 0 => return Err(format!("no batch at position {}", self.pos)),
                _ => break,
            }
        }
        chunk.truncate(whole);
        self.pos += whole as u64;
        Ok(Some(chunk))
    }
}

/// The cleaned segment file being written: whole blocks with O_DIRECT, the rest buffered.
struct Output {
    file: DirectFile,
    /// Cleaned bytes not written yet.
    buf: Vec<u8>,
    /// Bytes written before `buf`.
    written: u64,
}

impl Output {
    async fn create(path: &Path) -> Result<Output, LogError> {
        let file = DirectFile::open(path).await?;
        file.truncate(0).await?;
        Ok(Output { file, buf: Vec::with_capacity(WRITE_CHUNK_BYTES + READ_CHUNK_BYTES), written: 0 })
    }

    /// Writes the buffered whole blocks (all of it, the last block padded with zeros, if `all`);
    /// returns the bytes written.
    async fn write_blocks(&mut self, all: bool) -> Result<usize, LogError> {
        let n = if all { self.buf.len() } else { self.buf.len() / BLOCK_BYTES as usize * BLOCK_BYTES as usize };
        if n == 0 {
            return Ok(0);
        }
        let mut block = self.file.alloc(n.next_multiple_of(BLOCK_BYTES as usize));
        block.as_bytes_mut()[..n].copy_from_slice(&self.buf[..n]);
        let len = block.len();
        if self.file.write_at(block, self.written).await? < len {
            return Err(LogError::Storage("short write of a cleaned segment".into()));
        }
        self.buf.drain(..n);
        self.written += n as u64;
        Ok(n)
    }

    /// Writes the rest and cuts the padding; the file is not durable yet (`swap` fsyncs it).
    async fn finish(mut self) -> Result<DirectFile, LogError> {
        self.write_blocks(true).await?;
        self.file.truncate(self.written).await?;
        Ok(self.file)
    }
}
