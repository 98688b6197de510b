//! One segment of a partition's log: `<base>.log`, `.index` and `.timeindex`, Kafka's layout.
//!
//! * `.log`: record batches back to back, exactly as produced with their base offset patched in.
//!   The active segment's file may end in zeros (O_DIRECT writes whole 4 KiB blocks); a zero
//!   batch length reads as the end of the log.
//! * `.index`: 8-byte entries `relative base offset u32 BE | file position u32 BE`, one for the first
//!   batch and then one per `index.interval.bytes` of log, strictly increasing in both fields.
//! * `.timeindex`: 12-byte entries `max timestamp so far i64 BE | relative base offset u32 BE`,
//!   written beside an index entry whenever the segment's max timestamp grew.
//!
//! Index files are appended after the log bytes they describe are written, so they never point past
//! written data in a crash of the process. They are never trusted blindly: recovery checks them and
//! rebuilds them from the `.log`, which is the source of truth.

use super::batch::BatchInfo;
use super::file_budget;
use super::scan::{headers_end, resync, scan};
use super::txn_index::TxnIndex;
use shards::fs::{self, AppendFile, DirectFile, ScanFile};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

const INDEX_ENTRY_BYTES: usize = 8;
const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// The active segment may end in at most this many zeros: block padding plus what the writer
/// preallocated ahead of the tail (`log.rs`, 2 MiB ahead in 256 KiB steps, after a full block).
const ZERO_TAIL_MAX: u64 = 3 << 20;
/// O_DIRECT writes go in whole blocks of this size.
const BLOCK_BYTES: u64 = 4096;

pub fn file_stem(base: u64) -> String {
    format!("{base:020}")
}

/// The offset a file named `<file_stem>suffix` is for; `None` for any other name (`250.log` or
/// `+5.log` would otherwise name a segment whose files are not where `file_stem` puts them).
pub fn stem_offset(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// The log file's open handles; `None` while nobody uses the segment (`release_files`).
    handles: Option<Handles>,
    /// Bytes of valid batches; the file may be longer (zero padding) while the segment is active.
    pub size: u64,
    /// The offset after this segment's last batch.
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub created: Instant,
    /// (relative base offset, position), strictly increasing.
    index: Vec<(u32, u32)>,
    /// (max timestamp so far, relative base offset).
    time_index: Vec<(i64, u32)>,
    /// The index files, open while entries are being appended to them.
    index_files: Option<(AppendFile, AppendFile, file_budget::Held)>,
    /// Entries of `index` and `time_index` already in their files.
    index_on_disk: usize,
    time_index_on_disk: usize,
    /// The index files hold entries that are not ours (found damaged): rewritten before the next
    /// append, removed if there is none.
    index_files_stale: bool,
    /// Index entries written since the files were last fsynced.
    indexes_unsynced: bool,
    last_indexed_pos: Option<u64>,
    /// Relative base offset of the last batch.
    last_batch_rel: u32,
    /// Its aborted transactions (`.txnindex`).
    pub txns: TxnIndex,
}

/// Files an open segment holds at most: its log three ways (DMA writes, buffered and direct reads)
/// and, while entries are appended to them, its two indexes.
pub const FILES_PER_SEGMENT: usize = 5;

/// A segment's open log file (three descriptors on the real disk: DMA writes, buffered and direct
/// reads). Cheap to clone; the file closes when the segment has released it and the last clone (a
/// fetch response being sent) is gone.
#[derive(Clone)]
pub struct Handles {
    pub file: Rc<DirectFile>,
    /// Its descriptors, counted in the shard's budget until the last clone goes.
    _held: Rc<file_budget::Held>,
}

impl Handles {
    pub async fn open(log: &Path) -> std::io::Result<Handles> {
        let file = DirectFile::open(log).await?;
        Ok(Handles { file: Rc::new(file), _held: Rc::new(file_budget::hold(3)) })
    }
}

/// What recovery found in one segment.
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    pub batches_scanned: u64,
    pub bytes_cut: u64,
    /// Bytes of damaged batches skipped where sound ones were expected (kept in the file; a read
    /// landing in them is answered CORRUPT_MESSAGE).
    pub bytes_damaged: u64,
    pub index_rebuilt: bool,
    /// The log file's length after recovery: valid batches, then zeros in an active segment.
    pub file_len: u64,
    /// An active segment's last partial block of batches.
    pub tail_block: Vec<u8>,
    /// The `.txnindex` did not make sense: its transactions must be found again in the log.
    pub txn_index_damaged: bool,
    /// Where the bytes known durable end in an active segment (the recovery point, or less if what
    /// was below it is gone): (offset, byte position), a batch boundary.
    pub trusted: (u64, u64),
}

/// Why an index file's entries cannot be used.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    Missing,
    Damaged,
}

impl Segment {
    fn paths(dir: &Path, base: u64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base);
        (dir.join(format!("{stem}.log")), dir.join(format!("{stem}.index")), dir.join(format!("{stem}.timeindex")))
    }

    /// Creates an empty segment starting at `base`, its log file open for the writer. Its index
    /// files are created with their second entry: a segment's first batch needs none (see `persist_indexes`).
    pub async fn create(dir: &Path, base: u64) -> std::io::Result<Segment> {
        let (log, idx, tidx) = Self::paths(dir, base);
        file_budget::make_room(FILES_PER_SEGMENT, None);
        let handles = Handles::open(&log).await?;
        handles.file.truncate(0).await?;
        fs::remove_file(&idx).await?;
        fs::remove_file(&tidx).await?;
        fs::sync_dir(dir).await?;
        let mut seg = Self::empty(base, log);
        seg.handles = Some(handles);
        Ok(seg)
    }

    /// A segment holding nothing yet, no file open: recovery fills it from the file, the cleaner
    /// from the batches it writes (`track_batch`).
    pub fn empty(base: u64, path: PathBuf) -> Segment {
        let txns = TxnIndex::new(TxnIndex::path_for(path.parent().unwrap_or(Path::new(".")), &file_stem(base)));
        Segment {
            base,
            path,
            handles: None,
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            created: Instant::now(),
            index: Vec::new(),
            time_index: Vec::new(),
            index_files: None,
            index_on_disk: 0,
            time_index_on_disk: 0,
            index_files_stale: false,
            indexes_unsynced: false,
            last_indexed_pos: None,
            last_batch_rel: 0,
            txns,
        }
    }

    /// Opens an existing segment, holding no file open. A closed segment keeps its indexes if they
    /// pass the sanity check; the active one (`next_base` is `None`; otherwise it is the following
    /// segment's base offset) is scanned from its last index entry at or below `trusted_to` (its
    /// recovery point: the bytes below were fsynced) and cut at the first invalid byte. An index
    /// entry past the recovery point proves nothing: a power loss may have kept the index and lost
    /// the bytes before the batch it points at.
    pub async fn recover(
        dir: &Path,
        base: u64,
        next_base: Option<u64>,
        interval: u32,
        trusted_to: u64,
    ) -> std::io::Result<(Segment, Recovered)> {
        let (log, idx_path, tidx_path) = Self::paths(dir, base);
        let std_file = ScanFile::open(&log)?;
        let file_len = std_file.size()?;
        let loaded_index = read_index(&idx_path, file_len);
        let loaded_time_index = read_time_index(&tidx_path, file_len);
        let mut seg = Self::empty(base, log.clone());
        let (txns, txn_index_damaged) = TxnIndex::load(TxnIndex::path_for(dir, &file_stem(base)), file_len);
        seg.txns = txns;
        let mut report = Recovered { txn_index_damaged, ..Recovered::default() };

        if let (Some(next_base), Ok(index), Ok(time_index)) = (next_base, &loaded_index, &loaded_time_index) {
            // Closed segment with sane indexes: trust them, the file was cut to size when it was sealed.
            // (Its first batch may start past its base: compaction removes whole batches.) Its end
            // is checked: the batch headers from the last index entry must lead exactly to the
            // file's end. An active segment that only looks closed (a file of a later segment
            // appeared beside it) ends in its zeros, which readers were served (librdkafka's
            // consumer aborted its process on them).
            let last_indexed = index.last().map_or(0, |&(_, pos)| u64::from(pos));
            if index.first().is_none_or(|&(_, pos)| pos == 0) && headers_end(&std_file, last_indexed, file_len) == file_len {
                seg.size = file_len;
                seg.next_offset = next_base;
                seg.max_timestamp = time_index.last().map_or(-1, |e| e.0);
                seg.last_indexed_pos = index.last().map(|e| u64::from(e.1));
                seg.index = index.clone();
                seg.time_index = time_index.clone();
                (seg.index_on_disk, seg.time_index_on_disk) = (seg.index.len(), seg.time_index.len());
                return Ok((seg, report));
            }
        }

        // Scan from the last index entry within the recovery point (the active segment), or from the start.
        let (mut start_pos, mut start_offset, kept) = match (&loaded_index, next_base) {
            (Ok(index), None) => match index.partition_point(|&(_, pos)| u64::from(pos) <= trusted_to) {
                0 => (0, base, 0),
                kept => (u64::from(index[kept - 1].1), base + u64::from(index[kept - 1].0), kept),
            },
            _ => (0, base, 0),
        };
        if kept > 0 {
            seg.index = loaded_index.as_ref().map(|i| i[..kept - 1].to_vec()).unwrap_or_default(); // the scan re-adds the entry it starts at
            seg.time_index = loaded_time_index.as_ref().cloned().unwrap_or_default();
            seg.time_index.retain(|&(_, rel)| base + u64::from(rel) < start_offset);
            seg.max_timestamp = seg.time_index.last().map_or(-1, |e| e.0);
            seg.last_indexed_pos = seg.index.last().map(|e| u64::from(e.1));
        } else {
            report.index_rebuilt = true;
        }
        // Ask for the bytes to scan, then let other partitions being opened ask for theirs: a restart
        // that opens thousands at once keeps the disk busy with many reads instead of one at a time.
        std_file.read_ahead(start_pos, file_len);
        futures_lite::future::yield_now().await;
        let (mut batches, _) = scan(&std_file, start_pos, file_len);
        if kept > 0 && batches.first().map(|(_, info)| info.base_offset as u64) != Some(start_offset) {
            // The last index entry does not point at the batch it names: trust nothing, rescan.
            (start_pos, start_offset) = (0, base);
            seg.index.clear();
            seg.time_index.clear();
            seg.max_timestamp = -1;
            seg.last_indexed_pos = None;
            report.index_rebuilt = true;
            (batches, _) = scan(&std_file, 0, file_len);
        }
        let mut expected = start_offset;
        let mut valid_end = start_pos;
        report.trusted = (start_offset, start_pos);
        // Bytes known to hold sound batches: a closed segment's (sealed with an fsync), and the
        // active one's below its recovery point. Damage there is skipped, and the batches after it
        // kept: cutting would drop durable records and leave a hole below the log end.
        let must_hold = if next_base.is_some() { file_len } else { trusted_to.min(file_len) };
        let mut resumed = false;
        loop {
            for (pos, info) in batches {
                // Offsets within a segment are contiguous, except after skipped damage and where
                // compaction removed batches: in a closed segment, or in a follower's copy of a
                // compacted leader. An active segment's gap past its recovery point is damage: past a
                // crash, stale batches from before it can follow the rewritten ones (a follower then
                // copies them again from its leader); below it the bytes were fsynced.
                let first = info.base_offset as u64;
                let sound = pos + info.bytes as u64 <= must_hold;
                if !(first == expected || (resumed || sound) && first > expected) {
                    break;
                }
                resumed = false;
                expected = first + u64::from(info.offset_count);
                seg.track_batch(pos, &info, interval);
                valid_end = pos + info.bytes as u64;
                if valid_end <= trusted_to {
                    report.trusted = (expected, valid_end);
                }
                report.batches_scanned += 1;
            }
            if valid_end >= must_hold {
                break;
            }
            let Some(next) = resync(&std_file, valid_end + 1, file_len, expected, next_base) else { break };
            tracing::error!(segment = %log.display(), position = valid_end, bytes = next - valid_end, "damaged bytes in a segment: skipped, the batches after them kept");
            report.bytes_damaged += next - valid_end;
            (batches, _) = scan(&std_file, next, file_len);
            resumed = true;
            // Index the first batch after the damage: lookups past it must not start before it.
            seg.last_indexed_pos = None;
        }
        if next_base.is_none() && valid_end < trusted_to {
            tracing::error!(segment = %log.display(), recovery_point = trusted_to, valid_end, "bytes below the recovery point are damaged or gone");
        }
        seg.size = valid_end;
        seg.next_offset = if report.batches_scanned == 0 { start_offset } else { expected };
        if let Some(next_base) = next_base {
            seg.next_offset = seg.next_offset.max(next_base);
        }
        // Zeros after the last batch are block padding and preallocation, not damage.
        let mut tail = vec![0u8; (file_len - valid_end).min(ZERO_TAIL_MAX) as usize];
        let zeros_only =
            file_len - valid_end <= ZERO_TAIL_MAX && std_file.read_exact_at(&mut tail, valid_end).is_ok() && tail.iter().all(|&b| b == 0);
        if !zeros_only {
            report.bytes_cut = file_len - valid_end;
        }
        // An active segment keeps its zeros (writes go over them): no metadata write on a clean open.
        report.file_len = file_len;
        if file_len > valid_end && (!zeros_only || next_base.is_some()) {
            fs::set_len(&log, valid_end).await?;
            report.file_len = valid_end;
        }
        if next_base.is_none() {
            // The last partial block, rewritten with the next write; the scan just read it.
            report.tail_block = vec![0u8; (valid_end % BLOCK_BYTES) as usize];
            std_file.read_exact_at(&mut report.tail_block, valid_end - valid_end % BLOCK_BYTES)?;
        }
        // The files keep what they hold if it is what we now believe, up to where they end.
        let (index_on_disk, stale_index) = on_disk_prefix(&loaded_index, &seg.index);
        let (time_index_on_disk, stale_time_index) = on_disk_prefix(&loaded_time_index, &seg.time_index);
        (seg.index_on_disk, seg.time_index_on_disk) = (index_on_disk, time_index_on_disk);
        seg.index_files_stale = stale_index || stale_time_index;
        if seg.index_files_stale {
            (seg.index_on_disk, seg.time_index_on_disk) = (0, 0);
            if next_base.is_none() && seg.index.len() < 2 {
                // An active segment this small keeps no index files (`persist_indexes`).
                let (_, idx, tidx) = Self::paths(dir, base);
                fs::remove_file(&idx).await?;
                fs::remove_file(&tidx).await?;
                seg.index_files_stale = false;
            }
        }
        // Entries a process that died wrote may be in the page cache only: fsynced when the segment
        // is sealed, or a power loss after that could bring back an older file whose entries point
        // into batches written since.
        seg.indexes_unsynced |= seg.index_on_disk > 0 || seg.time_index_on_disk > 0;
        seg.persist_indexes(next_base.is_some())?;
        Ok((seg, report))
    }

    /// The log file's handles, if they are open.
    pub fn handles(&self) -> Option<Handles> {
        self.handles.clone()
    }

    pub fn set_handles(&mut self, handles: Handles) {
        self.handles = Some(handles);
    }

    /// Lets go of the segment's open files (index entries appended so far stay in the page cache,
    /// fsynced by `sync_indexes` when that is due). They are opened again on next use.
    pub fn release_files(&mut self) {
        self.handles = None;
        self.index_files = None;
    }

    /// Records that the batch `info` now sits at `pos` in this segment's file.
    /// Whether the segment can index offsets up to `last_offset`: the index holds them relative to
    /// its base in 32 bits (a follower's copy of a compacted leader can jump further).
    pub fn can_index(&self, last_offset: u64) -> bool {
        last_offset.saturating_sub(self.base) <= u64::from(u32::MAX)
    }

    pub fn track_batch(&mut self, pos: u64, info: &BatchInfo, interval: u32) {
        let rel = info.base_offset as u64 - self.base;
        assert!(rel <= u64::from(u32::MAX), "relative offset fits the index");
        assert!(pos <= u64::from(u32::MAX), "segment position fits the index");
        let due = self.last_indexed_pos.is_none_or(|last| pos >= last + u64::from(interval));
        if due {
            self.index.push((rel as u32, pos as u32));
            self.last_indexed_pos = Some(pos);
        }
        if info.max_timestamp > self.max_timestamp {
            self.max_timestamp = info.max_timestamp;
            if due || self.time_index.is_empty() {
                self.time_index.push((info.max_timestamp, rel as u32));
            }
        }
        self.last_batch_rel = rel as u32;
        self.next_offset = info.base_offset as u64 + u64::from(info.offset_count);
        self.size = self.size.max(pos + info.bytes as u64);
    }

    /// Appends the index entries made since the last call to the index files (page cache writes).
    /// Unless `all`, an active segment whose only entry is its first batch's writes nothing: that
    /// entry is where recovery starts anyway, and a partition holding a few records then costs no
    /// index files at all.
    pub fn persist_indexes(&mut self, all: bool) -> std::io::Result<()> {
        let unwritten = self.index_on_disk < self.index.len() || self.time_index_on_disk < self.time_index.len();
        if !unwritten && !self.index_files_stale {
            return Ok(());
        }
        if !all && self.index.len() < 2 {
            return Ok(());
        }
        let written = self.append_indexes();
        if written.is_err() {
            // What reached the files is unknown: the next call writes them whole again.
            self.index_files = None;
            self.index_files_stale = true;
            (self.index_on_disk, self.time_index_on_disk) = (0, 0);
        }
        written
    }

    fn append_indexes(&mut self) -> std::io::Result<()> {
        let files = match self.index_files.take() {
            Some(files) => files,
            None => {
                let (_, idx, tidx) = Self::paths(self.dir(), self.base);
                (AppendFile::open(&idx)?, AppendFile::open(&tidx)?, file_budget::hold(2))
            }
        };
        let (index_file, time_index_file, _) = self.index_files.insert(files);
        if self.index_files_stale {
            index_file.set_len(0)?;
            time_index_file.set_len(0)?;
            self.index_files_stale = false;
        }
        index_file.append(&encode_index(&self.index[self.index_on_disk..]))?;
        time_index_file.append(&encode_time_index(&self.time_index[self.time_index_on_disk..]))?;
        (self.index_on_disk, self.time_index_on_disk) = (self.index.len(), self.time_index.len());
        self.indexes_unsynced = true;
        Ok(())
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Completes the index files of a segment that is no longer active; returns them, for the
    /// caller to fsync (`fs::sync_file`) without holding the log's state meanwhile. The time index
    /// ends with the segment's true max timestamp, so that a reopened closed segment (which trusts
    /// its last entry) neither expires early nor hides from timestamp lookups.
    pub fn seal(&mut self) -> std::io::Result<Vec<PathBuf>> {
        if self.time_index.last().is_none_or(|&(ts, _)| ts < self.max_timestamp) && self.max_timestamp >= 0 {
            let rel = self.last_batch_rel.max(self.time_index.last().map_or(0, |e| e.1));
            self.time_index.push((self.max_timestamp, rel));
        }
        self.persist_indexes(true)?;
        self.txns.persist()?;
        self.index_files = None;
        Ok(self.unsynced_indexes())
    }

    /// Whether the segment holds any file open.
    pub fn holds_files(&self) -> bool {
        self.handles.is_some() || self.index_files.is_some()
    }

    /// The index files holding entries written since they were last fsynced, now counted as synced:
    /// the caller fsyncs them (on seal and shutdown; they can always be rebuilt from the log).
    pub fn unsynced_indexes(&mut self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.txns.take_unsynced().into_iter().collect();
        if std::mem::take(&mut self.indexes_unsynced) {
            let (_, idx, tidx) = Self::paths(self.dir(), self.base);
            out.extend([idx, tidx]);
        }
        out
    }

    /// Fsyncs the index files `unsynced_indexes` named; one that is gone (a small active segment
    /// keeps none, a cut removed them) has nothing to make durable.
    pub async fn sync_indexes(paths: Vec<PathBuf>) -> std::io::Result<()> {
        for path in paths {
            match fs::sync_file(&path).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                done => done?,
            }
        }
        Ok(())
    }

    /// Position of the last indexed batch at or before `offset` (O(log n)).
    pub fn lookup(&self, offset: u64) -> u64 {
        self.lookup_entry(offset).1
    }

    /// The last indexed batch at or before `offset`: (its base offset, its position).
    pub fn lookup_entry(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        match self.index.partition_point(|&(r, _)| r <= rel) {
            0 => (self.base, 0),
            i => (self.base + u64::from(self.index[i - 1].0), u64::from(self.index[i - 1].1)),
        }
    }

    /// The furthest batch boundary in `(after, limit]` known without reading the file: the end of
    /// the segment or an indexed batch's position (O(log n)).
    pub fn boundary_within(&self, after: u64, limit: u64) -> Option<(u64, u64)> {
        if self.size <= limit {
            return (self.size > after).then_some((self.size, self.next_offset));
        }
        let limit = limit.min(u64::from(u32::MAX)) as u32;
        match self.index.partition_point(|&(_, pos)| pos <= limit) {
            0 => None,
            i => Some((u64::from(self.index[i - 1].1), self.base + u64::from(self.index[i - 1].0))).filter(|&(pos, _)| pos > after),
        }
    }

    /// Position from which to scan for the first batch whose max timestamp is ≥ `ts`.
    pub fn lookup_time(&self, ts: i64) -> u64 {
        match self.time_index.partition_point(|&(t, _)| t < ts) {
            0 => 0,
            i => self.lookup(self.base + u64::from(self.time_index[i - 1].1)),
        }
    }

    /// The max timestamp of its first batch (the time index's first entry), if it has one.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.time_index.first().map(|e| e.0)
    }

    pub fn index_entries(&self) -> usize {
        self.index.len()
    }

    /// Removes the offset and time indexes of the segment at `base` (the cleaner, before it replaces the log they describe:
    /// recovery rebuilds missing ones from whichever log it finds).
    pub async fn remove_offset_indexes(dir: &Path, base: u64) -> std::io::Result<()> {
        let (_, idx, tidx) = Self::paths(dir, base);
        fs::remove_file(&idx).await?;
        fs::remove_file(&tidx).await
    }

    /// Removes the segment's files.
    pub async fn remove_files(&self) -> std::io::Result<()> {
        let (log, idx, tidx) = Self::paths(self.dir(), self.base);
        for p in [log, idx, tidx, self.txns.path().to_path_buf()] {
            fs::remove_file(&p).await?;
        }
        Ok(())
    }
}

/// How many of `believed`'s entries an index file that `loaded` them already holds, and whether it
/// holds others (then it is rewritten).
fn on_disk_prefix<T: PartialEq>(loaded: &Result<Vec<T>, Unusable>, believed: &[T]) -> (usize, bool) {
    match loaded {
        Ok(entries) if entries.len() <= believed.len() && entries[..] == believed[..entries.len()] => (entries.len(), false),
        Err(Unusable::Missing) => (0, false),
        _ => (0, true),
    }
}

/// An index file's bytes, or why there are none. Each entry stands for a batch of at least 61
/// bytes of the log: an index longer than its log (`log_len`) is damaged, and is not read.
fn read_entries(path: &Path, entry_bytes: usize, log_len: u64) -> Result<Vec<u8>, Unusable> {
    match fs::read_at_most(path, log_len) {
        Ok(bytes) if bytes.len() % entry_bytes == 0 => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Unusable::Missing),
        _ => Err(Unusable::Damaged),
    }
}

/// Reads and sanity-checks an `.index` file: entries strictly increasing, positions inside the log.
fn read_index(path: &Path, log_len: u64) -> Result<Vec<(u32, u32)>, Unusable> {
    let bytes = read_entries(path, INDEX_ENTRY_BYTES, log_len)?;
    let entries: Vec<(u32, u32)> = bytes.chunks_exact(INDEX_ENTRY_BYTES).map(|c| (be_u32(&c[0..4]), be_u32(&c[4..8]))).collect();
    let increasing = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    let inside = entries.last().is_none_or(|&(_, pos)| u64::from(pos) < log_len);
    if increasing && inside {
        Ok(entries)
    } else {
        Err(Unusable::Damaged)
    }
}

fn read_time_index(path: &Path, log_len: u64) -> Result<Vec<(i64, u32)>, Unusable> {
    let bytes = read_entries(path, TIME_INDEX_ENTRY_BYTES, log_len)?;
    let entries: Vec<(i64, u32)> = bytes
        .chunks_exact(TIME_INDEX_ENTRY_BYTES)
        .map(|c| (i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]), be_u32(&c[8..12])))
        .collect();
    if entries.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1) {
        Ok(entries)
    } else {
        Err(Unusable::Damaged)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn encode_index(entries: &[(u32, u32)]) -> Vec<u8> {
    entries.iter().flat_map(|&(r, p)| r.to_be_bytes().into_iter().chain(p.to_be_bytes())).collect()
}

fn encode_time_index(entries: &[(i64, u32)]) -> Vec<u8> {
    entries.iter().flat_map(|&(t, r)| t.to_be_bytes().into_iter().chain(r.to_be_bytes())).collect()
}
