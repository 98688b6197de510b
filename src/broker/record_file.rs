//! An append-only file of checksummed records, replayed in order at start: how the committed
//! offsets and the transaction coordinator persist their state. Each record is
//!
//! ```text
//! payload_len u32 | crc32c(payload) u32 | payload
//! ```
//!
//! big-endian; the payload is the caller's. Replay skips a record that fails its CRC or its decoding
//! (the next sound one is found by trying each following byte: a record is only taken with its CRC)
//! and reports it, so that the caller rewrites the file with what it holds of value; only a torn
//! tail (no sound record after it) is cut. A file grown past four times its live content is
//! rewritten whole (write, fsync, rename, directory fsync).

use shards::fs::{self, AppendFile};
use std::path::PathBuf;

const COMPACT_SLACK_BYTES: u64 = 1 << 20;

/// Appends `payload` to `out` as one record.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crate::storage::batch::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The record at `at` in `data`, and its length, if it is whole and sound.
fn record_at<R>(data: &[u8], at: usize, decode: &impl Fn(&[u8]) -> Option<R>) -> Option<(R, usize)> {
    let len = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(data.get(at + 4..at + 8)?.try_into().ok()?);
    let payload = data.get(at + 8..at.checked_add(8)?.checked_add(len)?)?;
    if crate::storage::batch::crc32c(payload) != crc {
        return None;
    }
    Some((decode(payload)?, 8 + len))
}

/// What replaying a file found.
#[derive(Debug, PartialEq, Eq)]
pub struct Replayed<R> {
    pub records: Vec<R>,
    /// Where the last sound record ends: a torn tail follows.
    pub end: usize,
    /// Bytes of damaged records skipped between sound ones.
    pub skipped: usize,
}

/// Every sound record of `data`, in order.
pub fn replay<R>(data: &[u8], decode: impl Fn(&[u8]) -> Option<R>) -> Replayed<R> {
    let mut r = Replayed { records: Vec::new(), end: 0, skipped: 0 };
    let mut at = 0;
    while at < data.len() {
        if let Some((record, len)) = record_at(data, at, &decode) {
            r.records.push(record);
            at += len;
            r.end = at;
            continue;
        }
        match (at + 1..data.len()).find(|&next| record_at(data, next, &decode).is_some()) {
            Some(next) => {
                r.skipped += next - at;
                at = next;
            }
            None => break,
        }
    }
    r
}

pub struct RecordFile {
    path: PathBuf,
    /// `None` after a rewrite whose reopen failed: opened again by the next append.
    file: Option<AppendFile>,
    bytes: u64,
    /// File size after the last rewrite (or the last check that found no need for one).
    bytes_after_compaction: u64,
    fsync: bool,
}

impl RecordFile {
    /// Opens or creates the file at `path` (its directory must exist) and replays it; a torn tail
    /// is cut. `true` with the records when damaged ones were skipped: the caller then rewrites the
    /// file with its live state (`replace_with`). `what` names the records in the logs.
    pub async fn open<R>(
        path: PathBuf,
        fsync: bool,
        what: &str,
        decode: impl Fn(&[u8]) -> Option<R>,
    ) -> std::io::Result<(RecordFile, Vec<R>, bool)> {
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let replayed = replay(&data, decode);
        let mut f = RecordFile { path, file: None, bytes: replayed.end as u64, bytes_after_compaction: 0, fsync };
        let damaged = replayed.skipped > 0;
        if damaged {
            tracing::warn!(path = %f.path.display(), bytes_skipped = replayed.skipped, "skipped damaged {what} records; rewriting the file");
        } else if replayed.end < data.len() {
            tracing::warn!(path = %f.path.display(), bytes_cut = data.len() - replayed.end, "cut a torn tail of {what} records");
            fs::set_len(&f.path, replayed.end as u64).await?;
        }
        f.file()?;
        Ok((f, replayed.records, damaged))
    }

    fn file(&mut self) -> std::io::Result<&AppendFile> {
        if self.file.is_none() {
            self.file = Some(AppendFile::open(&self.path)?);
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// Appends `framed` records, fsynced if the file was opened so: on `Ok` they are as durable
    /// as asked, and only then may they be applied.
    pub async fn append(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.file()?.append(framed)?;
        self.bytes += framed.len() as u64;
        if self.fsync {
            fs::sync_file(&self.path).await?;
        }
        Ok(())
    }

    /// Appends `framed` records without an fsync: durable with the next `append` (or rewrite), and
    /// perhaps lost to a power loss before it — for records whose loss recovery redoes.
    pub fn append_unsynced(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.file()?.append(framed)?;
        self.bytes += framed.len() as u64;
        Ok(())
    }

    /// Whether the file doubled since its last rewrite: only then is it worth re-encoding.
    pub fn compaction_due(&self) -> bool {
        self.bytes >= COMPACT_SLACK_BYTES + 2 * self.bytes_after_compaction
    }

    /// Rewrites the file with just `live` (framed records) if it has grown far past them.
    pub async fn compact(&mut self, live: Vec<u8>) -> std::io::Result<()> {
        if self.bytes < COMPACT_SLACK_BYTES + 4 * live.len() as u64 {
            self.bytes_after_compaction = self.bytes;
            return Ok(());
        }
        self.replace_with(live).await
    }

    /// Replaces the file with `buf`, durably.
    pub async fn replace_with(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        // The open file is the one being replaced: appends go to the new one from now on.
        self.file = None;
        let len = buf.len() as u64;
        fs::write_durably(&self.path, buf).await?;
        self.bytes = len;
        self.bytes_after_compaction = len;
        self.file()?;
        Ok(())
    }

    pub async fn sync(&self) -> std::io::Result<()> {
        fs::sync_file(&self.path).await
    }
}
