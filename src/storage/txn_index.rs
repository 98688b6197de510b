//! A segment's aborted transactions (Kafka's `.txnindex`): one entry per transaction with data
//! whose abort marker is in the segment, in marker order, so that a read_committed fetch can tell
//! consumers which producers' batches to drop. Entries are 34 bytes, big-endian, Kafka's layout:
//!
//! ```text
//! version u16 (0) | producer_id i64 | first_offset i64 | last_offset i64 (the marker) |
//! last_stable_offset i64 (the partition's when the marker was written)
//! ```
//!
//! Like the offset indexes the file is derived from the log: appended after the marker is written,
//! fsynced when the segment is sealed and at close (before the producer snapshot that says entries
//! below it need no rebuilding), and rebuilt at recovery from the log after that snapshot.

use shards::fs::{self, AppendFile};
use std::path::{Path, PathBuf};

const ENTRY_BYTES: usize = 34;
const VERSION: u16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub last_stable_offset: u64,
}

pub struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    /// Entries already in the file.
    on_disk: usize,
    /// The file may hold bytes past the `on_disk` entries (damage, entries recovery dropped, a
    /// failed append): cut there before the next append. Never cut below them: they may be durable,
    /// and a snapshot may rely on them (a rewrite from empty would lose them in a power loss).
    stale: bool,
    /// Appended to since the last fsync.
    unsynced: bool,
}

impl TxnIndex {
    pub fn path_for(dir: &Path, stem: &str) -> PathBuf {
        dir.join(format!("{stem}.txnindex"))
    }

    pub fn new(path: PathBuf) -> TxnIndex {
        TxnIndex { path, entries: Vec::new(), on_disk: 0, stale: false, unsynced: false }
    }

    /// The index in `path`, and whether its file was damaged (then it holds nothing and the
    /// segment's transactions must be found again in the log). Each entry stands for an abort
    /// marker in the segment: a file longer than the segment's log (`log_len`) is damaged.
    pub fn load(path: PathBuf, log_len: u64) -> (TxnIndex, bool) {
        let bytes = match fs::read_at_most(&path, log_len) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (TxnIndex::new(path), false),
            Err(_) => return (TxnIndex { stale: true, ..TxnIndex::new(path) }, true),
        };
        match decode(&bytes) {
            // Entries a process that died wrote may be in the page cache only: fsynced before a
            // snapshot relies on them.
            Some(entries) => (TxnIndex { on_disk: entries.len(), unsynced: !entries.is_empty(), entries, ..TxnIndex::new(path) }, false),
            None => (TxnIndex { stale: true, ..TxnIndex::new(path) }, true),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Adds `ts` after the entries there are (in marker order), to be written by `persist`.
    pub fn extend(&mut self, ts: impl IntoIterator<Item = AbortedTxn>) {
        self.entries.extend(ts);
    }

    /// Forgets the entries whose marker is at or past `offset` (recovery finds them again).
    pub fn truncate_from(&mut self, offset: u64) {
        let keep = self.entries.partition_point(|t| t.last_offset < offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.stale |= self.on_disk > keep;
            self.on_disk = self.on_disk.min(keep);
        }
    }

    /// Writes the entries not in the file yet (page cache), after cutting what a stale file holds
    /// past those it has. On an error the next call cuts and writes again.
    pub fn persist(&mut self) -> std::io::Result<()> {
        if self.on_disk == self.entries.len() && !self.stale {
            return Ok(());
        }
        let written = self.append_unwritten();
        if written.is_err() {
            self.stale = true;
        }
        written
    }

    fn append_unwritten(&mut self) -> std::io::Result<()> {
        let file = AppendFile::open(&self.path)?;
        if self.stale {
            file.set_len((self.on_disk * ENTRY_BYTES) as u64)?;
            self.stale = false;
        }
        file.append(&encode(&self.entries[self.on_disk..]))?;
        self.on_disk = self.entries.len();
        self.unsynced = true;
        Ok(())
    }

    /// The entries left and the file's new bytes once those of the markers at `markers` go;
    /// `None` if none of them has an entry here.
    pub fn without_markers(&self, markers: &[u64]) -> Option<(Vec<AbortedTxn>, Vec<u8>)> {
        let left: Vec<AbortedTxn> = self.entries.iter().filter(|t| !markers.contains(&t.last_offset)).copied().collect();
        (left.len() < self.entries.len()).then(|| {
            let bytes = encode(&left);
            (left, bytes)
        })
    }

    /// `entries` are now the file's whole, durable content (the cleaner rewrote it).
    pub fn replaced(&mut self, entries: Vec<AbortedTxn>) {
        self.on_disk = entries.len();
        self.entries = entries;
        (self.stale, self.unsynced) = (false, false);
    }

    /// The file, if written since its last fsync (the caller fsyncs it); counted as synced now.
    pub fn take_unsynced(&mut self) -> Option<PathBuf> {
        std::mem::take(&mut self.unsynced).then(|| self.path.clone())
    }

    /// An fsync of the file taken by `take_unsynced` failed.
    pub fn mark_unsynced(&mut self) {
        self.unsynced = true;
    }

    /// Adds to `out` (producer id, first offset) of each aborted transaction with data in
    /// [`from`, `upper`); `true` once no later segment can hold one (Kafka's early stop: an entry
    /// written when the stable offset was already at or past `upper`).
    pub fn collect(&self, from: u64, upper: u64, out: &mut Vec<(i64, u64)>) -> bool {
        for t in &self.entries {
            if t.last_offset >= from && t.first_offset < upper {
                out.push((t.producer_id, t.first_offset));
            }
            if t.last_stable_offset >= upper {
                return true;
            }
        }
        false
    }
}

fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for t in entries {
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&t.producer_id.to_be_bytes());
        out.extend_from_slice(&t.first_offset.to_be_bytes());
        out.extend_from_slice(&t.last_offset.to_be_bytes());
        out.extend_from_slice(&t.last_stable_offset.to_be_bytes());
    }
    out
}

/// A file's entries, if they make sense: whole, version 0, in marker order, each ending after it began.
fn decode(bytes: &[u8]) -> Option<Vec<AbortedTxn>> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return None;
    }
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for e in bytes.chunks_exact(ENTRY_BYTES) {
        let u64_at = |at: usize| u64::from_be_bytes(e[at..at + 8].try_into().unwrap_or([0; 8]));
        if u16::from_be_bytes([e[0], e[1]]) != VERSION {
            return None;
        }
        let t =
            AbortedTxn { producer_id: u64_at(2) as i64, first_offset: u64_at(10), last_offset: u64_at(18), last_stable_offset: u64_at(26) };
        if t.first_offset >= t.last_offset || out.last().is_some_and(|prev| prev.last_offset >= t.last_offset) {
            return None;
        }
        out.push(t);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_noticed() {
        let t = |first, last, lso| AbortedTxn { producer_id: 7, first_offset: first, last_offset: last, last_stable_offset: lso };
        let mut index = TxnIndex::new(PathBuf::new());
        index.extend([t(0, 5, 6), t(3, 9, 10), t(12, 20, 21)]);
        let bytes = encode(index.entries());
        assert_eq!(decode(&bytes).as_deref(), Some(index.entries()));
        let (left, left_bytes) = index.without_markers(&[9, 30]).unwrap();
        assert_eq!((left, decode(&left_bytes).unwrap()), (vec![t(0, 5, 6), t(12, 20, 21)], vec![t(0, 5, 6), t(12, 20, 21)]));
        assert_eq!(index.without_markers(&[30]), None);
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut swapped = bytes.clone();
        swapped.rotate_left(ENTRY_BYTES);
        assert_eq!(decode(&swapped), None, "out of marker order");
        let mut out = Vec::new();
        assert!(index.collect(4, 9, &mut out), "the second entry's stable offset is past 9");
        assert_eq!(out, vec![(7, 0), (7, 3)]);
        index.truncate_from(9);
        assert_eq!(index.entries(), &[t(0, 5, 6)]);
    }
}
