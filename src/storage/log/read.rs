//! Reads of a partition's log: batches by offset (from the cache, or as file ranges planned from the
//! index without reading the file), and batches by timestamp for ListOffsets.

use super::*;
use crate::metrics::recorder::{self, ReadPath};

/// Most bytes one read returns (more than one batch only up to this); bounds memory per fetch.
const READ_BYTES_MAX: usize = 16 << 20;
/// Read size when looking for a batch by its header (the index points within 4 KiB of it).
const HEADER_SCAN_BYTES: u64 = 16 << 10;

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadTo {
    /// A consumer's (read_uncommitted).
    HighWatermark,
    /// A read_committed consumer's.
    LastStable,
    /// A follower's: every written batch, durable and replicated or not, always in memory.
    Written,
}

/// What one read returns.
#[derive(Debug)]
pub struct Batches {
    /// Whole batches, in order.
    pub chunks: Vec<Chunk>,
    /// The offset after the last batch returned (where a consumer reads on); the offset read at when
    /// none was.
    pub next: u64,
}

impl Log {
    /// Whole batches from the one containing `offset`, up to `max_bytes` (at least one batch), never
    /// past the high watermark. Empty when `offset` is the high watermark.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Batches, LogError> {
        Ok(self.read_upto(offset, max_bytes, ReadTo::HighWatermark).await?.0)
    }

    /// `read` for a read_committed consumer: never past the last stable offset, and with the
    /// aborted transactions (producer id, first offset) whose batches it may hold.
    pub async fn read_committed(&self, offset: u64, max_bytes: usize) -> Result<(Batches, Vec<(i64, u64)>), LogError> {
        let (read, upper) = self.read_upto(offset, max_bytes, ReadTo::LastStable).await?;
        let aborted = if read.chunks.is_empty() { Vec::new() } else { self.aborted_transactions(offset, upper) };
        Ok((read, aborted))
    }

    /// The read, and an offset the batches returned end at or before (for the aborted
    /// transactions to name: Kafka's bound, generous but cheap).
    pub(super) async fn read_upto(&self, mut offset: u64, max_bytes: usize, to: ReadTo) -> Result<(Batches, u64), LogError> {
        let none = |offset| Batches { chunks: Vec::new(), next: offset };
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        // Goes round again only when a segment holds no batch at or after `offset` (compaction removed
        // its last ones): the read goes on in the next segment.
        loop {
            let (seg_base, entry, size, repeated, cut, seg_next) = {
                let mut s = self.state();
                s.last_used = Instant::now();
                if offset < s.log_start || offset > s.next_offset {
                    return Err(LogError::OutOfRange { offset, start: s.log_start, end: s.next_offset });
                }
                // Where the file's readable bytes end, and where this read must stop.
                let end = if to == ReadTo::Written { s.written } else { s.local_high_watermark() };
                let upto = match to {
                    ReadTo::HighWatermark => s.high_watermark(),
                    ReadTo::LastStable => s.last_stable_offset(),
                    ReadTo::Written => s.written,
                };
                if offset >= upto {
                    return Ok((none(offset), upto));
                }
                if s.cache.front().is_some_and(|c| c.base() <= offset) {
                    recorder::storage_read(ReadPath::Cache);
                    let (chunks, next) = s.read_cache(offset, max_bytes, upto);
                    return Ok((Batches { chunks, next: next.max(offset) }, upto));
                }
                // The segment holding `offset`, or the next one if it falls in a gap between them: the
                // read goes on from the next offset there is, as Kafka's does.
                let seg_at = s.segments.partition_point(|seg| seg.next_offset <= offset).min(s.segments.len() - 1);
                let repeated = s.last_file_read.replace(offset) == Some(offset);
                let seg = &s.segments[seg_at];
                let entry = if seg.base > offset { (seg.base, 0) } else { seg.lookup_entry(offset) };
                // `readable_size` stops a read at the log's own high watermark; one that must stop earlier
                // (where the oldest open transaction begins, or where the replicas' copies end) is cut
                // there, if that is in this segment.
                let cut = (upto < end && upto < seg.next_offset).then(|| (upto, seg.lookup_entry(upto)));
                let size = if to == ReadTo::Written { seg.size } else { s.readable_size(seg) };
                (seg.base, entry, size, repeated, cut, seg.next_offset)
            };
            let file = self.files_of(seg_base).await?.file;
            let (size, upper) = match cut {
                None => (size, seg_next),
                Some((upto, at)) => match find_batch(&file, at.1, size, |h| last_offset(h) >= upto).await? {
                    Some(found) => (found.pos, upto),
                    None => (size, upto),
                },
            };
            // The batch holding `offset`: an indexed batch is known without a read (the usual case for a
            // consumer reading on, since reads end on indexed batches); another is found by its header.
            let (start, first_end) = if entry.0 == offset {
                (entry.1, None)
            } else {
                match find_batch(&file, entry.1, size, |h| last_offset(h) >= offset).await? {
                    Some(found) => (found.pos, Some(found.end())),
                    None if cut.is_none() => {
                        offset = seg_next;
                        continue;
                    }
                    None => return Ok((none(offset), upper)),
                }
            };
            // End on a known boundary within `max_bytes`, or after the first batch if none is that close.
            let (end, next) = match (self.boundary_within(seg_base, start, (start + max_bytes as u64).min(size))?, first_end) {
                (Some(end), _) | (None, Some(end)) => end,
                (None, None) => match find_batch(&file, start, size, |_| true).await? {
                    Some(found) => found.end(),
                    None if cut.is_none() => {
                        offset = seg_next;
                        continue;
                    }
                    None => return Ok((none(offset), upper)),
                },
            };
            if repeated {
                self.check_batch_at(&file, seg_base, start, size).await?;
            }
            let len = (end - start) as usize;
            // A follower's copy is appended from memory on its own shard: read here, without blocking.
            let zero_copy = if to == ReadTo::Written { None } else { file.zero_copy(start, len) };
            let chunk = match zero_copy {
                Some(range) => {
                    recorder::storage_read(ReadPath::Sendfile);
                    Chunk::File(range)
                }
                None => {
                    recorder::storage_read(ReadPath::Direct);
                    Chunk::Memory(Bytes::copy_from_slice(&file.read_at(start, len).await?))
                }
            };
            return Ok((Batches { chunks: vec![chunk], next }, upper));
        }
    }

    /// Reads and validates (CRC included) the batch at `pos` of segment `seg_base`: a damaged one is
    /// reported once and answered `Corrupt`, so that a consumer sees an error instead of bytes it
    /// cannot use, again and again.
    async fn check_batch_at(&self, file: &fs::DirectFile, seg_base: u64, pos: u64, size: u64) -> Result<(), LogError> {
        let header = file.read_at(pos, batch::HEADER_BYTES.min((size - pos) as usize)).await?;
        let checked = match batch::framed_len(&header) {
            Ok(len) if pos + len as u64 <= size => batch::validate_stored(&file.read_at(pos, len).await?).map(|_| ()),
            Ok(len) => Err(BatchError::Truncated { have: (size - pos) as usize, need: len }),
            Err(e) => Err(e),
        };
        let Err(e) = checked else { return Ok(()) };
        let mut s = self.state();
        if !s.reported_damage.contains(&(seg_base, pos)) {
            tracing::error!(dir = %s.dir.display(), segment = seg_base, position = pos, error = %e, "a damaged batch where a consumer reads: answered CORRUPT_MESSAGE");
            if s.reported_damage.len() < 64 {
                s.reported_damage.push((seg_base, pos));
            }
        }
        Err(LogError::Corrupt(format!("segment {seg_base} position {pos}: {e}")))
    }

    /// A batch boundary of the segment in (`after`, `limit`], and the offset there.
    fn boundary_within(&self, seg_base: u64, after: u64, limit: u64) -> Result<Option<(u64, u64)>, LogError> {
        // The segment may have been deleted by retention while we read its headers.
        Ok(self.state().segment(seg_base)?.boundary_within(after, limit))
    }

    /// The first written batch at or past the log start whose max timestamp is ≥ `ts` (`None` past
    /// the end), whole: the record itself is found inside it by the caller (it may be compressed).
    pub async fn batch_at_timestamp(&self, ts: i64) -> Result<Option<Bytes>, LogError> {
        let (base, pos, size, log_start) = {
            let s = self.state();
            let log_start = s.log_start;
            let Some(seg) = s.segments.iter().find(|seg| seg.max_timestamp >= ts && seg.next_offset > log_start) else {
                return Ok(None);
            };
            (seg.base, seg.lookup_time(ts), seg.size, log_start)
        };
        let file = self.files_of(base).await?.file;
        let holds = |h: &BatchHeader| h.max_timestamp.get() >= ts && last_offset(h) >= log_start;
        read_found(&file, find_batch(&file, pos, size, holds).await?).await
    }

    /// The first written batch holding the log's greatest timestamp (ListOffsets MAX_TIMESTAMP).
    pub async fn batch_with_max_timestamp(&self) -> Result<Option<Bytes>, LogError> {
        let (base, pos, size, max) = {
            let s = self.state();
            let log_start = s.log_start;
            let live = s.segments.iter().filter(|seg| seg.next_offset > log_start && seg.max_timestamp >= 0);
            // The first segment holding the greatest timestamp.
            let Some(seg) = live.rev().max_by_key(|seg| seg.max_timestamp) else {
                return Ok(None);
            };
            (seg.base, seg.lookup_time(seg.max_timestamp), seg.size, seg.max_timestamp)
        };
        let file = self.files_of(base).await?.file;
        read_found(&file, find_batch(&file, pos, size, |h| h.max_timestamp.get() == max).await?).await
    }
}

/// A batch found by `find_batch`.
struct Found {
    pos: u64,
    len: usize,
    /// The offset after its last record.
    next: u64,
}

impl Found {
    /// Where it ends in the file, and the offset after it.
    fn end(&self) -> (u64, u64) {
        (self.pos + self.len as u64, self.next)
    }
}

/// The offset of a batch's last record.
fn last_offset(h: &BatchHeader) -> u64 {
    (h.base_offset.get() + i64::from(h.last_offset_delta.get())) as u64
}

/// The bytes of a batch found by `find_batch`.
async fn read_found(file: &fs::DirectFile, found: Option<Found>) -> Result<Option<Bytes>, LogError> {
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
    file: &fs::DirectFile,
    mut pos: u64,
    size: u64,
    wanted: impl Fn(&BatchHeader) -> bool,
) -> Result<Option<Found>, LogError> {
    while pos < size {
        let chunk = file.read_at(pos, (size - pos).min(HEADER_SCAN_BYTES) as usize).await?;
        let mut at = 0;
        while let (Ok(h), Ok(len)) = (batch::header(&chunk[at..]), batch::framed_len(&chunk[at..])) {
            if wanted(h) {
                return Ok(Some(Found { pos: pos + at as u64, len, next: last_offset(h) + 1 }));
            }
            at += len;
            if at >= chunk.len() {
                break;
            }
        }
        if at == 0 {
            return Err(LogError::Corrupt(format!("unreadable batch header at position {pos}")));
        }
        pos += at as u64;
    }
    Ok(None)
}
