//! A log's idempotent-producer state (`storage::producer_state`): rebuilt when the log opens, from
//! the newest sound snapshot at or below the log end and the batch headers after it; snapshots
//! written when a segment rolls and at close.

use super::*;
use crate::storage::control::{self, Marker};
use crate::storage::producer_state::CompletedTxn;
use crate::storage::producer_state::{ProducerState, SNAPSHOT_BYTES_MAX};
use crate::storage::scan::resync;

const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Snapshots kept: the newest, and the one before in case a crash makes the newest lie past the
/// log end.
const SNAPSHOTS_KEPT: usize = 2;
/// Batch headers are read in chunks of this size (small batches: every byte is read anyway).
const WALK_CHUNK_BYTES: u64 = 64 << 10;

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{}{SNAPSHOT_SUFFIX}", super::super::segment::file_stem(offset)))
}

/// The offsets of the snapshots in `dir`, in increasing order.
fn snapshots(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut offsets: Vec<u64> = fs::list(dir)?.iter().filter_map(|n| super::super::segment::stem_offset(n, SNAPSHOT_SUFFIX)).collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// The producer state of a log just recovered: the newest sound snapshot at or below `log_end`
/// (and `walk_from_at_most`: a segment whose `.txnindex` was damaged is walked again), then every
/// batch after it still in a segment, below the log start too (a marker there, DeleteRecords having
/// moved the start past it, ended a transaction that would otherwise seem open forever). Snapshots
/// past the log end (a crash took what they describe) go, and so do those below the first segment:
/// retention removed batches after them, markers perhaps, so what they hold open may have ended
/// (Kafka drops them too). The segments' aborted transactions from the walk's start on are found
/// again; returns the transactions the walk saw end.
pub(super) async fn rebuild(
    dir: &Path,
    segments: &mut [Segment],
    log_start: u64,
    log_end: u64,
    walk_from_at_most: u64,
) -> Result<(ProducerState, u64, Vec<CompletedTxn>), LogError> {
    let first_base = segments.first().map_or(log_start, |seg| seg.base);
    let offsets = snapshots(dir)?;
    for &stale in offsets.iter().filter(|&&o| o > log_end || o < first_base) {
        fs::remove_file(&snapshot_path(dir, stale)).await?;
    }
    let found = offsets
        .iter()
        .rev()
        .filter(|&&o| o >= first_base && o <= log_end && o <= walk_from_at_most)
        .find_map(|&o| Some((ProducerState::decode(&fs::read_at_most(&snapshot_path(dir, o), SNAPSHOT_BYTES_MAX).ok()?)?, o)));
    let (mut state, from) = found.unwrap_or_else(|| (ProducerState::default(), first_base));
    let snapshot_at = from;
    let mut ended = Vec::new();
    for seg in segments.iter_mut() {
        seg.txns.truncate_from(from);
    }
    for seg in segments.iter_mut().filter(|seg| seg.next_offset > from) {
        let pos = if seg.base >= from { 0 } else { seg.lookup(from) };
        for (info, marker) in headers_from(seg, pos)? {
            if info.base_offset as u64 + u64::from(info.offset_count) <= from {
                continue;
            }
            let Some(done) = state.record(&info, marker) else { continue };
            seg.txns.extend(state.aborted_entry(&done));
            ended.push(done);
        }
        // What a snapshot after this says is found again from here need not be: durable first.
        seg.txns.persist()?;
        if let Some(path) = seg.txns.take_unsynced() {
            fs::sync_file(&path).await?;
        }
    }
    Ok((state, snapshot_at, ended))
}

/// The headers of segment `seg`'s batches from position `pos` (a batch boundary) on, with what
/// each marker says: bodies of large batches are stepped over, not read. Damaged bytes that
/// recovery stepped over in a trusted segment are stepped over the same way (their producers'
/// state is then what the rest says).
fn headers_from(seg: &Segment, mut pos: u64) -> Result<Vec<(batch::BatchInfo, Option<Marker>)>, LogError> {
    let file = fs::ScanFile::open(&seg.path)?;
    let mut out: Vec<(batch::BatchInfo, Option<Marker>)> = Vec::new();
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = pos;
    while pos + (batch::HEADER_BYTES as u64) <= seg.size {
        if pos + batch::HEADER_BYTES as u64 > chunk_at + chunk.len() as u64 || pos < chunk_at {
            chunk.resize((seg.size - pos).min(WALK_CHUNK_BYTES) as usize, 0);
            file.read_exact_at(&mut chunk, pos)?;
            chunk_at = pos;
        }
        let after = out.last().map_or(seg.base, |(i, _)| i.base_offset as u64 + u64::from(i.offset_count));
        let header = batch::header_info(&chunk[(pos - chunk_at) as usize..]).map_err(|e| e.to_string()).and_then(|info| {
            let fits = info.base_offset as u64 >= after && pos + info.bytes as u64 <= seg.size;
            if fits {
                Ok(info)
            } else {
                Err(format!("batch at offset {} of {} bytes does not fit", info.base_offset, info.bytes))
            }
        });
        match header {
            Ok(info) => {
                let marker = if info.is_control() { read_marker(&file, &mut chunk, &mut chunk_at, pos, &info)? } else { None };
                out.push((info, marker));
                pos += info.bytes as u64;
            }
            Err(e) => {
                let resumed = resync(&file, pos + 1, seg.size, after, Some(seg.next_offset));
                tracing::warn!(file = %seg.path.display(), pos, error = %e, ?resumed, "damaged batch header skipped while rebuilding producer state");
                let Some(next) = resumed else { break };
                pos = next;
            }
        }
    }
    Ok(out)
}

/// What the control batch at `pos` says, reading it whole into `chunk` if it is not yet.
fn read_marker(
    file: &fs::ScanFile,
    chunk: &mut Vec<u8>,
    chunk_at: &mut u64,
    pos: u64,
    info: &batch::BatchInfo,
) -> Result<Option<Marker>, LogError> {
    let end = pos + info.bytes as u64;
    if end > *chunk_at + chunk.len() as u64 {
        chunk.resize(info.bytes.max(batch::HEADER_BYTES), 0);
        file.read_exact_at(chunk, pos)?;
        *chunk_at = pos;
    }
    let at = (pos - *chunk_at) as usize;
    Ok(control::parse(&chunk[at..at + info.bytes]))
}

impl Log {
    /// Writes the producer state as it is below `offset` (the log end, or a new segment's base)
    /// to a snapshot there, and removes all but the newest `SNAPSHOTS_KEPT`.
    pub(super) async fn snapshot_producers(&self, offset: u64) -> Result<(), LogError> {
        self.sync_txn_indexes().await?;
        let (dir, bytes) = {
            let mut s = self.state();
            debug_assert_eq!(s.written, offset, "a snapshot is of the written batches");
            (s.dir.clone(), s.producers_written.encode())
        };
        fs::write_durably(&snapshot_path(&dir, offset), bytes).await?;
        self.state().snapshot_at = offset;
        let offsets = snapshots(&dir)?;
        for &old in offsets.iter().rev().skip(SNAPSHOTS_KEPT) {
            fs::remove_file(&snapshot_path(&dir, old)).await?;
        }
        Ok(())
    }

    /// Writes each `.txnindex` whose last write failed, and fsyncs each written since its last
    /// fsync (or loaded: the process that wrote it may have died before its fsync): a snapshot says
    /// the aborted transactions below it are on disk, and recovery walks only from there.
    async fn sync_txn_indexes(&self) -> Result<(), LogError> {
        let paths = {
            let mut s = self.state();
            let mut paths = Vec::new();
            for seg in s.segments.iter_mut() {
                seg.txns.persist()?;
                paths.extend(seg.txns.take_unsynced());
            }
            paths
        };
        for (i, path) in paths.iter().enumerate() {
            if let Err(e) = fs::sync_file(path).await {
                // Not synced after all: the next snapshot tries again.
                for seg in self.state().segments.iter_mut().filter(|seg| paths[i..].iter().any(|p| p == seg.txns.path())) {
                    seg.txns.mark_unsynced();
                }
                return Err(LogError::fsync(e));
            }
        }
        Ok(())
    }

    /// At close: a snapshot at the log end if the state changed since the last one, or if the
    /// walk from the last one would read much of the active segment.
    pub(super) async fn snapshot_producers_at_close(&self) -> Result<(), LogError> {
        let end = {
            let s = self.state();
            let active = s.segments.last().expect("active segment");
            let long_walk = s.snapshot_at < s.written && active.size >= super::CLOSE_CHECKPOINT_BYTES;
            if !(s.producers_written.is_dirty() || long_walk) || s.snapshot_at == s.written {
                return Ok(());
            }
            s.written
        };
        self.snapshot_producers(end).await
    }
}
