//! Durable committed offsets: one append-only file per offsets partition, like Kafka's
//! `__consumer_offsets`, in `<data-dir>/__consumer_offsets/<N>.log`.
//!
//! A group maps to partition `fnv(group) % OFFSETS_PARTITIONS`; the shard that owns that partition
//! coordinates the group, so each file has exactly one writer. Record layout (big-endian):
//!
//! ```text
//! payload_len u32 | crc32c(payload) u32 | payload:
//!   kind u8 (0 commit, 1 delete one offset, 2 delete the group's offsets)
//!   group (u16 len + UTF-8) | topic (u16 len + UTF-8) | partition i32 | offset i64
//!   leader_epoch i32 | metadata (i32 len, -1 = null, + UTF-8) | commit_time_ms i64
//! ```
//!
//! Recovery replays a file and cuts it at the first record that is short or fails its CRC. When a
//! file grows past four times its live content it is rewritten whole (write, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const OFFSETS_PARTITIONS: u32 = 16;
const COMPACT_SLACK_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Commit { group: String, topic: String, partition: i32, committed: Committed },
    DeleteOffset { group: String, topic: String, partition: i32 },
    DeleteGroup { group: String },
}

pub fn partition_for(group: &str) -> u32 {
    let hash = shards::stable_hash(group.as_bytes());
    (hash % u64::from(OFFSETS_PARTITIONS)) as u32
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(64);
    let (kind, group, topic, partition, c) = match record {
        Record::Commit { group, topic, partition, committed } => (0u8, group, topic.as_str(), *partition, Some(committed)),
        Record::DeleteOffset { group, topic, partition } => (1, group, topic.as_str(), *partition, None),
        Record::DeleteGroup { group } => (2, group, "", -1, None),
    };
    p.push(kind);
    put_str(&mut p, group);
    put_str(&mut p, topic);
    p.extend_from_slice(&partition.to_be_bytes());
    p.extend_from_slice(&c.map_or(-1, |c| c.offset).to_be_bytes());
    p.extend_from_slice(&c.map_or(-1, |c| c.leader_epoch).to_be_bytes());
    match c.and_then(|c| c.metadata.as_deref()) {
        None => p.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(m) => {
            p.extend_from_slice(&(m.len() as i32).to_be_bytes());
            p.extend_from_slice(m.as_bytes());
        }
    }
    p.extend_from_slice(&c.map_or(-1, |c| c.commit_time_ms).to_be_bytes());
    out.extend_from_slice(&(p.len() as u32).to_be_bytes());
    out.extend_from_slice(&crate::storage::batch::crc32c(&p).to_be_bytes());
    out.extend_from_slice(&p);
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let kind = c.take(1)?[0];
    let group = c.str()?;
    let topic = c.str()?;
    let partition = c.i32()?;
    let offset = c.i64()?;
    let leader_epoch = c.i32()?;
    let meta_len = c.i32()?;
    let metadata = if meta_len < 0 { None } else { Some(String::from_utf8(c.take(meta_len as usize)?.to_vec()).ok()?) };
    let commit_time_ms = c.i64()?;
    match kind {
        0 => Some(Record::Commit { group, topic, partition, committed: Committed { offset, leader_epoch, metadata, commit_time_ms } }),
        1 => Some(Record::DeleteOffset { group, topic, partition }),
        2 => Some(Record::DeleteGroup { group }),
        _ => None,
    }
}

pub fn apply(offsets: &mut HashMap<String, GroupOffsets>, record: Record) {
    match record {
        Record::Commit { group, topic, partition, committed } => {
            offsets.entry(group).or_default().insert((topic, partition), committed);
        }
        Record::DeleteOffset { group, topic, partition } => {
            if let Some(g) = offsets.get_mut(&group) {
                g.remove(&(topic, partition));
                if g.is_empty() {
                    offsets.remove(&group);
                }
            }
        }
        Record::DeleteGroup { group } => {
            offsets.remove(&group);
        }
    }
}

/// One offsets partition's file.
pub struct OffsetsFile {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// File size after the last rewrite (or the last check that found no need for one).
    bytes_after_compaction: u64,
    fsync: bool,
}

impl OffsetsFile {
    /// Opens (replaying into `offsets`) or creates partition `n`'s file.
    pub fn open(dir: &Path, n: u32, fsync: bool, offsets: &mut HashMap<String, GroupOffsets>) -> std::io::Result<OffsetsFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{n}.log"));
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut at = 0usize;
        while data.len() - at >= 8 {
            let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_be_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
            let Some(payload) = data.get(at + 8..at + 8 + len) else {
                break;
            };
            if crate::storage::batch::crc32c(payload) != crc {
                break;
            }
            let Some(record) = decode(payload) else { break };
            apply(offsets, record);
            at += 8 + len;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        if at < data.len() {
            tracing::warn!(path = %path.display(), bytes_cut = data.len() - at, "cut a torn tail of committed offsets");
            file.set_len(at as u64)?;
        }
        Ok(OffsetsFile { path, file, bytes: at as u64, bytes_after_compaction: 0, fsync })
    }

    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 64);
        for r in records {
            encode(r, &mut buf);
        }
        self.file.write_all(&buf)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Rewrites the file with just `live` (this partition's groups) when it has grown far past them.
    pub fn compact_if_due<'a>(&mut self, live: impl Iterator<Item = (&'a String, &'a GroupOffsets)>) -> std::io::Result<()> {
        // Cheap test first: only a file that doubled since its last rewrite is worth re-encoding.
        if self.bytes < COMPACT_SLACK_BYTES + 2 * self.bytes_after_compaction {
            return Ok(());
        }
        let mut buf = Vec::new();
        for (group, offsets) in live {
            for ((topic, partition), committed) in offsets {
                encode(
                    &Record::Commit { group: group.clone(), topic: topic.clone(), partition: *partition, committed: committed.clone() },
                    &mut buf,
                );
            }
        }
        if self.bytes < COMPACT_SLACK_BYTES + 4 * buf.len() as u64 {
            self.bytes_after_compaction = self.bytes;
            return Ok(());
        }
        let tmp = self.path.with_extension("log.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = buf.len() as u64;
        self.bytes_after_compaction = self.bytes;
        Ok(())
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_and_torn_tail() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/offsets-store");
        let _ = std::fs::remove_dir_all(&dir);
        let c = |o| Committed { offset: o, leader_epoch: 0, metadata: Some("m".into()), commit_time_ms: 5 };
        let mut offsets = HashMap::new();
        let mut f = OffsetsFile::open(&dir, 3, false, &mut offsets).unwrap();
        f.append(&[
            Record::Commit { group: "g".into(), topic: "t".into(), partition: 0, committed: c(10) },
            Record::Commit { group: "g".into(), topic: "t".into(), partition: 1, committed: c(20) },
            Record::DeleteOffset { group: "g".into(), topic: "t".into(), partition: 1 },
            Record::Commit { group: "h".into(), topic: "t".into(), partition: 0, committed: c(30) },
        ])
        .unwrap();
        drop(f);
        let path = dir.join("3.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let mut replayed = HashMap::new();
        OffsetsFile::open(&dir, 3, false, &mut replayed).unwrap();
        assert_eq!(replayed["g"].len(), 1);
        assert_eq!(replayed["g"][&("t".to_string(), 0)].offset, 10);
        assert_eq!(replayed["h"][&("t".to_string(), 0)], c(30));
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, bytes.len() - 6, "torn tail cut");
    }
}
