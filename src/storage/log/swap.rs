//! Cleaned segments put in place of the segments they were cleaned from (the last step of a
//! cleaning pass, `compact`), so that a crash at any point leaves each segment old or new, whole:
//!
//! 1. the cleaned files (`<base>.log.cleaned`, written by the pass) are fdatasynced; meanwhile
//!    - a segment whose markers the pass removed has its `.txnindex` rewritten without their
//!      entries (durably: temporary file, fsync, rename, directory fsync), before the markers go: a
//!      crash between the two leaves markers without entries (which consumers ignore; no batch of
//!      their transactions is left), never entries without their markers (which would hide the
//!      producer's later transactions from read_committed consumers);
//!    - the segments' `.index` and `.timeindex` are removed (they describe the old files; recovery
//!      rebuilds missing indexes from whichever `.log` it finds);
//!
//!    then the directory is fsynced;
//! 2. each `<base>.log.cleaned` is renamed over its `<base>.log` (atomic) and the directory fsynced;
//! 3. the new segments take the old ones' place in memory, their indexes are written and fsynced
//!    (one at a time: on the shard's blocking threads, which zero-copy sends need too).
//!
//! A group of segments goes through each step together, its fsyncs issued at once: every fsync is a
//! device flush here, which stalls the shard's own appends behind everything the disk has cached
//! (`perf/RESULTS.md`, session 10: with the swap's fsyncs and renames left out, a pass held to
//! 100 MB/s left e2e p99 at 2.45 ms; with them, 42–80 ms when the disk's cache held a backlog).
//! The `.txnindex` otherwise stays: its entries name offsets, which do not move. Recovery deletes
//! `.log.cleaned` files (`compact::is_leftover`). Retention and DeleteRecords take the same turn
//! (`segment_files`) before they remove files, so a segment they dropped is never renamed back.

use super::compact::Pass;
use super::*;
use crate::storage::compaction::clean::Stats;
use shards::fs::DirectFile;

/// A segment's cleaned file, written, not yet durable nor in place.
pub(super) struct Cleaned {
    pub base: u64,
    /// The segment's `.log`, and the cleaned file beside it.
    pub path: PathBuf,
    pub cleaned_path: PathBuf,
    pub file: Rc<DirectFile>,
    /// The cleaned segment as memory will know it (its batches tracked as they were written).
    pub seg: Segment,
    pub stats: Stats,
    /// Offsets of the transaction markers the pass removed from it.
    pub markers_removed: Vec<u64>,
}

impl Log {
    /// Puts `group` in place (see the module's comment), counting in `pass` the segments replaced
    /// (retention or DeleteRecords may have dropped some meanwhile) and the time it took.
    pub(super) async fn replace_segments(&self, group: Vec<Cleaned>, pass: &mut Pass) -> Result<(), LogError> {
        if group.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let dir = self.state().dir.clone();
        // The cleaned files' fsyncs and the old indexes' removal run together, and one directory
        // fsync follows: every device flush stalls the shard's own writes.
        let syncs: Vec<_> = group
            .iter()
            .map(|c| {
                let file = c.file.clone();
                shards::spawn_local(async move { file.fdatasync().await })
            })
            .collect();
        let mut live = Vec::with_capacity(group.len());
        for c in group {
            let index_left = {
                let s = self.state();
                s.segment(c.base).ok().map(|old| {
                    old.txns.without_markers(&c.markers_removed).map(|(left, bytes)| (left, bytes, old.txns.path().to_path_buf()))
                })
            };
            let Some(index_left) = index_left else {
                // Dropped while it was cleaned: its files are retention's to remove, after this turn.
                fs::remove_file(&c.cleaned_path).await?;
                continue;
            };
            if let Some((left, bytes, path)) = index_left {
                fs::write_durably(&path, bytes).await?;
                let mut s = self.state();
                if let Ok(at) = s.segments.binary_search_by_key(&c.base, |seg| seg.base) {
                    s.segments[at].txns.replaced(left);
                }
            }
            Segment::remove_offset_indexes(&dir, c.base).await?;
            live.push(c);
        }
        for sync in syncs {
            sync.await.map_err(LogError::fsync)?;
        }
        fs::sync_dir(&dir).await?;
        for c in &live {
            fs::rename(&c.cleaned_path, &c.path).await?;
        }
        fs::sync_dir(&dir).await?;
        let (mut replaced, mut indexes) = (0, Vec::new());
        for c in live {
            let mut seg = c.seg;
            let mut s = self.state();
            let Ok(at) = s.segments.binary_search_by_key(&c.base, |seg| seg.base) else {
                continue; // dropped meanwhile, as above
            };
            let old = &mut s.segments[at];
            // Retention by time keeps judging the segment by the records it was written with.
            seg.max_timestamp = seg.max_timestamp.max(old.max_timestamp);
            seg.next_offset = old.next_offset;
            seg.created = old.created;
            std::mem::swap(&mut seg.txns, &mut old.txns);
            s.segments[at] = seg;
            s.reading.retain(|&b| b != c.base);
            // Readers of the cache would go on seeing what the cleaner removed.
            let end = s.segments[at].next_offset;
            s.drop_cache_below(end);
            indexes.extend(s.segments[at].seal()?);
            replaced += 1;
        }
        // One at a time: they run on the shard's blocking threads, which zero-copy sends need too.
        for path in indexes {
            fs::sync_file(&path).await?;
        }
        pass.segments_replaced += replaced;
        pass.swap += started.elapsed();
        Ok(())
    }
}
