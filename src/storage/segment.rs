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

use super::batch::{self, BatchInfo};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

const INDEX_ENTRY_BYTES: usize = 8;
const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// The active segment may end in at most this many zeros: block padding plus what the writer
/// preallocated ahead of the tail (`log.rs`, 2 MiB ahead in 256 KiB steps, after a full block).
const ZERO_TAIL_MAX: u64 = 3 << 20;
/// Chunk size for recovery scans.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

pub fn file_stem(base: u64) -> String {
    format!("{base:020}")
}

pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Rc<shards::DmaFile>,
    /// The same file opened for buffered reads, which fetches send ranges of with sendfile when the
    /// page cache holds them (O_DIRECT writes invalidate the cached pages they cover), and opened
    /// with O_DIRECT, which they read ranges of otherwise.
    pub reader: Arc<File>,
    pub direct_reader: Arc<File>,
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
    index_file: File,
    time_index_file: File,
    last_indexed_pos: Option<u64>,
    /// Relative base offset of the last batch.
    last_batch_rel: u32,
    index_pending: Vec<u8>,
    time_index_pending: Vec<u8>,
}

/// Files an open segment holds: its log three ways (DMA writes, buffered and direct reads) and
/// its two indexes.
pub const FILES_PER_SEGMENT: usize = 5;

/// A segment's open files.
struct Files {
    file: Rc<shards::DmaFile>,
    reader: Arc<File>,
    direct_reader: Arc<File>,
    index: File,
    time_index: File,
}

/// What recovery found in one segment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    pub batches_scanned: u64,
    pub bytes_cut: u64,
    pub index_rebuilt: bool,
}

impl Segment {
    fn paths(dir: &Path, base: u64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base);
        (dir.join(format!("{stem}.log")), dir.join(format!("{stem}.index")), dir.join(format!("{stem}.timeindex")))
    }

    async fn open_files(dir: &Path, base: u64, truncate_indexes: bool) -> std::io::Result<(PathBuf, Files)> {
        let (log, idx, tidx) = Self::paths(dir, base);
        let file = shards::OpenOptions::new().read(true).write(true).create(true).dma_open(&log).await?;
        let reader = File::open(&log)?;
        let direct_reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&log)?;
        let open_index = |p: &Path| {
            std::fs::OpenOptions::new().read(true).append(true).create(true).open(p).and_then(|f| {
                if truncate_indexes {
                    f.set_len(0)?;
                }
                Ok(f)
            })
        };
        Ok((
            log,
            Files {
                file: Rc::new(file),
                reader: Arc::new(reader),
                direct_reader: Arc::new(direct_reader),
                index: open_index(&idx)?,
                time_index: open_index(&tidx)?,
            },
        ))
    }

    /// Creates an empty segment starting at `base`.
    pub async fn create(dir: &Path, base: u64) -> std::io::Result<Segment> {
        let (path, files) = Self::open_files(dir, base, true).await?;
        files.file.truncate(0).await?;
        sync_dir(dir)?;
        Ok(Self::empty(base, path, files))
    }

    fn empty(base: u64, path: PathBuf, files: Files) -> Segment {
        let Files { file, reader, direct_reader, index: index_file, time_index: time_index_file } = files;
        Segment {
            base,
            path,
            file,
            reader,
            direct_reader,
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            created: Instant::now(),
            index: Vec::new(),
            time_index: Vec::new(),
            index_file,
            time_index_file,
            last_indexed_pos: None,
            last_batch_rel: 0,
            index_pending: Vec::new(),
            time_index_pending: Vec::new(),
        }
    }

    /// Opens an existing segment. A closed segment keeps its indexes if they pass the sanity check;
    /// the active one (`active`) is scanned from its last index entry and cut at the first invalid byte.
    /// `next_base` is the following segment's base offset, for a closed segment.
    pub async fn recover(dir: &Path, base: u64, next_base: Option<u64>, interval: u32) -> std::io::Result<(Segment, Recovered)> {
        let (log, idx_path, tidx_path) = Self::paths(dir, base);
        let std_file = File::open(&log)?;
        let file_len = std_file.metadata()?.len();
        let index = read_index(&idx_path, file_len);
        let time_index = read_time_index(&tidx_path);
        let mut report = Recovered::default();
        let (path, files) = Self::open_files(dir, base, false).await?;
        let mut seg = Self::empty(base, path, files);

        if let (Some(next_base), Some(index), Some(time_index)) = (next_base, index.clone(), time_index.clone()) {
            // Closed segment with sane indexes: trust them, the file was cut to size when it was sealed.
            if index.first().is_none_or(|&(rel, pos)| rel == 0 && pos == 0) {
                seg.size = file_len;
                seg.next_offset = next_base;
                seg.max_timestamp = time_index.last().map_or(-1, |e| e.0);
                seg.last_indexed_pos = index.last().map(|e| u64::from(e.1));
                seg.index = index;
                seg.time_index = time_index;
                return Ok((seg, report));
            }
        }

        // Scan from the last trustworthy index entry (the active segment), or from the start.
        let (mut start_pos, mut start_offset, kept) = match (&index, next_base) {
            (Some(index), None) if !index.is_empty() => {
                let &(rel, pos) = index.last().expect("non-empty");
                (u64::from(pos), base + u64::from(rel), index.len())
            }
            _ => (0, base, 0),
        };
        if kept > 0 {
            seg.index = index.expect("kept entries come from a loaded index");
            seg.index.truncate(kept - 1); // the scan re-adds the entry it starts at
            seg.time_index = time_index.unwrap_or_default();
            seg.time_index.retain(|&(_, rel)| base + u64::from(rel) < start_offset);
            seg.max_timestamp = seg.time_index.last().map_or(-1, |e| e.0);
            seg.last_indexed_pos = seg.index.last().map(|e| u64::from(e.1));
        } else {
            report.index_rebuilt = true;
        }
        let (mut batches, mut end) = scan(&std_file, start_pos, file_len);
        if kept > 0 && batches.first().map(|(_, info)| info.base_offset as u64) != Some(start_offset) {
            // The last index entry does not point at the batch it names: trust nothing, rescan.
            (start_pos, start_offset) = (0, base);
            seg.index.clear();
            seg.time_index.clear();
            seg.max_timestamp = -1;
            seg.last_indexed_pos = None;
            report.index_rebuilt = true;
            (batches, end) = scan(&std_file, 0, file_len);
        }
        let mut expected = start_offset;
        let mut valid_end = start_pos;
        for (pos, info) in batches {
            // Offsets within a segment are contiguous; a batch that breaks that is not ours to trust.
            if info.base_offset as u64 != expected {
                break;
            }
            expected = info.base_offset as u64 + u64::from(info.offset_count);
            seg.track_batch(pos, &info, interval);
            valid_end = pos + info.bytes as u64;
            report.batches_scanned += 1;
        }
        debug_assert!(valid_end <= end);
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
        if file_len > valid_end {
            std_file.set_len(valid_end).or_else(|_| File::options().write(true).open(&log)?.set_len(valid_end))?;
        }
        // Rewrite the index files to exactly what we now believe.
        seg.index_file.set_len(0)?;
        seg.time_index_file.set_len(0)?;
        seg.index_pending = encode_index(&seg.index);
        seg.time_index_pending = encode_time_index(&seg.time_index);
        seg.persist_indexes()?;
        Ok((seg, report))
    }

    /// Records that the batch `info` now sits at `pos` in this segment's file.
    pub fn track_batch(&mut self, pos: u64, info: &BatchInfo, interval: u32) {
        let rel = info.base_offset as u64 - self.base;
        assert!(rel <= u64::from(u32::MAX), "relative offset fits the index");
        assert!(pos <= u64::from(u32::MAX), "segment position fits the index");
        let due = self.last_indexed_pos.is_none_or(|last| pos >= last + u64::from(interval));
        if due {
            self.index.push((rel as u32, pos as u32));
            self.index_pending.extend_from_slice(&(rel as u32).to_be_bytes());
            self.index_pending.extend_from_slice(&(pos as u32).to_be_bytes());
            self.last_indexed_pos = Some(pos);
        }
        if info.max_timestamp > self.max_timestamp {
            self.max_timestamp = info.max_timestamp;
            if due || self.time_index.is_empty() {
                self.time_index.push((info.max_timestamp, rel as u32));
                self.time_index_pending.extend_from_slice(&info.max_timestamp.to_be_bytes());
                self.time_index_pending.extend_from_slice(&(rel as u32).to_be_bytes());
            }
        }
        self.last_batch_rel = rel as u32;
        self.next_offset = info.base_offset as u64 + u64::from(info.offset_count);
        self.size = self.size.max(pos + info.bytes as u64);
    }

    /// Appends index entries made since the last call to the index files (page cache writes).
    pub fn persist_indexes(&mut self) -> std::io::Result<()> {
        if !self.index_pending.is_empty() {
            self.index_file.write_all(&self.index_pending)?;
            self.index_pending.clear();
        }
        if !self.time_index_pending.is_empty() {
            self.time_index_file.write_all(&self.time_index_pending)?;
            self.time_index_pending.clear();
        }
        Ok(())
    }

    /// Closes the time index with the segment's true max timestamp, so a reopened closed segment
    /// (which trusts its last entry) neither expires early nor hides from timestamp lookups.
    pub fn seal_time_index(&mut self) -> std::io::Result<()> {
        if self.time_index.last().is_none_or(|&(ts, _)| ts < self.max_timestamp) && self.max_timestamp >= 0 {
            let rel = self.last_batch_rel.max(self.time_index.last().map_or(0, |e| e.1));
            self.time_index.push((self.max_timestamp, rel));
            self.time_index_pending.extend_from_slice(&self.max_timestamp.to_be_bytes());
            self.time_index_pending.extend_from_slice(&rel.to_be_bytes());
        }
        self.persist_indexes()
    }

    /// Fsyncs the index files (on seal and shutdown; they can always be rebuilt from the log).
    pub fn sync_indexes(&self) -> std::io::Result<()> {
        self.index_file.sync_data()?;
        self.time_index_file.sync_data()
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
    pub fn boundary_within(&self, after: u64, limit: u64) -> Option<u64> {
        if self.size <= limit {
            return (self.size > after).then_some(self.size);
        }
        let limit = limit.min(u64::from(u32::MAX)) as u32;
        match self.index.partition_point(|&(_, pos)| pos <= limit) {
            0 => None,
            i => Some(u64::from(self.index[i - 1].1)).filter(|&pos| pos > after),
        }
    }

    /// Position from which to scan for the first batch whose max timestamp is ≥ `ts`.
    pub fn lookup_time(&self, ts: i64) -> u64 {
        match self.time_index.partition_point(|&(t, _)| t < ts) {
            0 => 0,
            i => self.lookup(self.base + u64::from(self.time_index[i - 1].1)),
        }
    }

    pub fn index_entries(&self) -> usize {
        self.index.len()
    }

    /// Removes the segment's three files.
    pub fn remove_files(&self) -> std::io::Result<()> {
        let dir = self.path.parent().expect("segment lives in a directory");
        let (log, idx, tidx) = Self::paths(dir, self.base);
        for p in [log, idx, tidx] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Makes a directory's entries (new or removed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?.sync_all()
}

/// Reads and sanity-checks an `.index` file: entries strictly increasing, positions inside the log.
fn read_index(path: &Path, log_len: u64) -> Option<Vec<(u32, u32)>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() % INDEX_ENTRY_BYTES != 0 {
        return None;
    }
    let entries: Vec<(u32, u32)> = bytes
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|c| (u32::from_be_bytes(c[0..4].try_into().unwrap()), u32::from_be_bytes(c[4..8].try_into().unwrap())))
        .collect();
    let increasing = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    let inside = entries.last().is_none_or(|&(_, pos)| u64::from(pos) < log_len);
    (increasing && inside).then_some(entries)
}

fn read_time_index(path: &Path) -> Option<Vec<(i64, u32)>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() % TIME_INDEX_ENTRY_BYTES != 0 {
        return None;
    }
    let entries: Vec<(i64, u32)> = bytes
        .chunks_exact(TIME_INDEX_ENTRY_BYTES)
        .map(|c| (i64::from_be_bytes(c[0..8].try_into().unwrap()), u32::from_be_bytes(c[8..12].try_into().unwrap())))
        .collect();
    entries.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1).then_some(entries)
}

fn encode_index(entries: &[(u32, u32)]) -> Vec<u8> {
    entries.iter().flat_map(|&(r, p)| r.to_be_bytes().into_iter().chain(p.to_be_bytes())).collect()
}

fn encode_time_index(entries: &[(i64, u32)]) -> Vec<u8> {
    entries.iter().flat_map(|&(t, r)| t.to_be_bytes().into_iter().chain(r.to_be_bytes())).collect()
}

/// Walks valid batches from `pos` until the first invalid byte, zero length or end of file.
/// Returns each batch's position and header, and where the valid bytes end.
pub fn scan(file: &File, mut pos: u64, file_len: u64) -> (Vec<(u64, BatchInfo)>, u64) {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_start = pos;
    loop {
        let in_chunk = (pos - chunk_start) as usize;
        let avail = chunk.len().saturating_sub(in_chunk);
        let need = match batch::framed_len(&chunk[in_chunk.min(chunk.len())..]) {
            Ok(n) => n,
            Err(batch::BatchError::Truncated { .. }) => batch::HEADER_BYTES,
            Err(_) => return (out, pos),
        };
        if avail < need {
            if pos + need as u64 > file_len {
                return (out, pos);
            }
            chunk.resize(need.max(SCAN_CHUNK_BYTES).min((file_len - pos) as usize), 0);
            if file.read_exact_at(&mut chunk, pos).is_err() {
                return (out, pos);
            }
            chunk_start = pos;
            continue;
        }
        match batch::validate(&chunk[in_chunk..]) {
            Ok(info) => {
                out.push((pos, info));
                pos += info.bytes as u64;
            }
            Err(_) => return (out, pos),
        }
    }
}
