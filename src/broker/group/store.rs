//! Durable committed offsets: one append-only file per offsets partition, like Kafka's
//! `__consumer_offsets`, in `<data-dir>/__consumer_offsets/<N>.log`.
//!
//! A group maps to partition `fnv(group) % OFFSETS_PARTITIONS`; the shard that owns that partition
//! coordinates the group, so each file has exactly one writer. Record layout (big-endian):
//!
//! ```text
//! (a `record_file` record) payload:
//!   kind u8 (0 commit, 1 delete one offset, 2 delete the group's offsets, 3 a transactional
//!     producer's pending commit, 4 its transaction's end: offset 1 commit, 0 abort)
//!   group (u16 len + UTF-8) | topic (u16 len + UTF-8) | partition i32 | offset i64
//!   leader_epoch i32 | metadata (i32 len, -1 = null, + UTF-8) | commit_time_ms i64
//!   producer_id i64 (kinds 3 and 4 only)
//! ```
//!
//! A transactional producer's offsets (TxnOffsetCommit) stay pending, apart from the committed
//! ones, until its transaction ends: its commit marker commits them, its abort drops them.
//!
//! Every record is persisted (appended, and fsynced under flush-every-batch) before it is applied
//! in memory. Recovery replays a file: a record that fails its CRC or decoding is skipped (the
//! next sound record is found by its CRC) and reported, and the file is rewritten without it; only
//! a torn tail (no sound record after it) is cut. When a file grows past four times its live
//! content it is rewritten whole (write, fsync, rename, directory fsync). Names and metadata are
//! bounded before they get here (group ids 32,767 bytes, topic names 249, metadata 4,096).

use crate::broker::record_file::{self, RecordFile};
use shards::fs;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const OFFSETS_PARTITIONS: u32 = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// Per group, per transactional producer: offsets waiting for the transaction's end.
pub type Pending = HashMap<String, BTreeMap<i64, GroupOffsets>>;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Commit { group: String, topic: String, partition: i32, committed: Committed },
    DeleteOffset { group: String, topic: String, partition: i32 },
    DeleteGroup { group: String },
    TxnCommit { group: String, topic: String, partition: i32, committed: Committed, producer_id: i64 },
    TxnEnd { group: String, producer_id: i64, commit: bool },
}

pub fn partition_for(group: &str) -> u32 {
    let hash = shards::stable_hash(group.as_bytes());
    (hash % u64::from(OFFSETS_PARTITIONS)) as u32
}

/// Why a record cannot be written: a field longer than its length prefix allows (callers bound
/// names and metadata before: `GROUP_ID_MAX_BYTES`, topic names, `offset.metadata.max.bytes`).
fn too_long(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} too long for an offsets record"))
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &str) -> std::io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| too_long(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn encode(record: &Record, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut p = Vec::with_capacity(64);
    let end_offset;
    let (kind, group, topic, partition, c, producer) = match record {
        Record::Commit { group, topic, partition, committed } => (0u8, group, topic.as_str(), *partition, Some(committed), None),
        Record::DeleteOffset { group, topic, partition } => (1, group, topic.as_str(), *partition, None, None),
        Record::DeleteGroup { group } => (2, group, "", -1, None, None),
        Record::TxnCommit { group, topic, partition, committed, producer_id } => {
            (3, group, topic.as_str(), *partition, Some(committed), Some(*producer_id))
        }
        Record::TxnEnd { group, producer_id, commit } => {
            end_offset = Committed { offset: i64::from(*commit), leader_epoch: -1, metadata: None, commit_time_ms: -1 };
            (4, group, "", -1, Some(&end_offset), Some(*producer_id))
        }
    };
    p.push(kind);
    put_str(&mut p, group, "group id")?;
    put_str(&mut p, topic, "topic name")?;
    p.extend_from_slice(&partition.to_be_bytes());
    p.extend_from_slice(&c.map_or(-1, |c| c.offset).to_be_bytes());
    p.extend_from_slice(&c.map_or(-1, |c| c.leader_epoch).to_be_bytes());
    match c.and_then(|c| c.metadata.as_deref()) {
        None => p.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(m) => {
            let len = i32::try_from(m.len()).map_err(|_| too_long("metadata"))?;
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(m.as_bytes());
        }
    }
    p.extend_from_slice(&c.map_or(-1, |c| c.commit_time_ms).to_be_bytes());
    if let Some(producer_id) = producer {
        p.extend_from_slice(&producer_id.to_be_bytes());
    }
    record_file::frame(&p, out);
    Ok(())
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
    let committed = Committed { offset, leader_epoch, metadata, commit_time_ms };
    match kind {
        0 => Some(Record::Commit { group, topic, partition, committed }),
        1 => Some(Record::DeleteOffset { group, topic, partition }),
        2 => Some(Record::DeleteGroup { group }),
        3 => Some(Record::TxnCommit { group, topic, partition, committed, producer_id: c.i64()? }),
        4 => Some(Record::TxnEnd { group, producer_id: c.i64()?, commit: offset == 1 }),
        _ => None,
    }
}

pub fn apply(offsets: &mut HashMap<String, GroupOffsets>, pending: &mut Pending, record: Record) {
    match record {
        Record::TxnCommit { group, topic, partition, committed, producer_id } => {
            pending.entry(group).or_default().entry(producer_id).or_default().insert((topic, partition), committed);
        }
        Record::TxnEnd { group, producer_id, commit } => {
            let Some(by_producer) = pending.get_mut(&group) else { return };
            let ended = by_producer.remove(&producer_id);
            if by_producer.is_empty() {
                pending.remove(&group);
            }
            if let Some(ended) = ended.filter(|_| commit) {
                offsets.entry(group).or_default().extend(ended);
            }
        }
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
pub struct OffsetsFile(RecordFile);

impl OffsetsFile {
    /// Opens (replaying into `offsets`) or creates partition `n`'s file. A file holding damaged
    /// records between sound ones is rewritten with what it holds of value.
    pub async fn open(
        dir: &Path,
        n: u32,
        fsync: bool,
        offsets: &mut HashMap<String, GroupOffsets>,
        pending: &mut Pending,
    ) -> std::io::Result<OffsetsFile> {
        fs::create_dir_all(dir).await?;
        let (mut f, records, damaged) = RecordFile::open(dir.join(format!("{n}.log")), fsync, "committed-offset", decode).await?;
        let (mut mine, mut mine_pending) = (HashMap::new(), Pending::new());
        for r in records {
            apply(&mut mine, &mut mine_pending, r);
        }
        if damaged {
            f.replace_with(encode_live(mine.iter(), mine_pending.iter())?).await?;
        }
        offsets.extend(mine);
        pending.extend(mine_pending);
        Ok(OffsetsFile(f))
    }

    /// Appends `records` (see `RecordFile::append`).
    pub async fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 64);
        for r in records {
            encode(r, &mut buf)?;
        }
        self.0.append(&buf).await
    }

    pub fn compaction_due(&self) -> bool {
        self.0.compaction_due()
    }

    /// Rewrites the file with just `live` (this partition's groups) if it has grown far past them.
    pub async fn compact<'a>(
        &mut self,
        live: impl Iterator<Item = (&'a String, &'a GroupOffsets)>,
        pending: impl Iterator<Item = (&'a String, &'a BTreeMap<i64, GroupOffsets>)>,
    ) -> std::io::Result<()> {
        self.0.compact(encode_live(live, pending)?).await
    }

    pub async fn sync(&self) -> std::io::Result<()> {
        self.0.sync().await
    }
}

/// The records that restore `live` (groups and their offsets) and `pending` (transactional producers').
fn encode_live<'a>(
    live: impl Iterator<Item = (&'a String, &'a GroupOffsets)>,
    pending: impl Iterator<Item = (&'a String, &'a BTreeMap<i64, GroupOffsets>)>,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for (group, offsets) in live {
        for ((topic, partition), committed) in offsets {
            let record = Record::Commit { group: group.clone(), topic: topic.clone(), partition: *partition, committed: committed.clone() };
            encode(&record, &mut buf)?;
        }
    }
    for (group, by_producer) in pending {
        for (producer_id, offsets) in by_producer {
            for ((topic, partition), committed) in offsets {
                let (group, topic, partition, committed, producer_id) =
                    (group.clone(), topic.clone(), *partition, committed.clone(), *producer_id);
                encode(&Record::TxnCommit { group, topic, partition, committed, producer_id }, &mut buf)?;
            }
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(o: i64) -> Committed {
        Committed { offset: o, leader_epoch: 0, metadata: Some("m".into()), commit_time_ms: 5 }
    }

    fn commit(group: &str, partition: i32, offset: i64) -> Record {
        Record::Commit { group: group.into(), topic: "t".into(), partition, committed: c(offset) }
    }

    fn encoded(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode(r, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_damaged_record_is_skipped_not_the_ones_after_it() {
        let before = encoded(&[commit("g", 0, 10), commit("g", 1, 20)]);
        let damaged = encoded(&[commit("x", 0, 99)]);
        let after = encoded(&[Record::DeleteOffset { group: "g".into(), topic: "t".into(), partition: 1 }, commit("h", 0, 30)]);
        for flip in [0, 3, 5, 12, damaged.len() - 1] {
            let mut data = [before.clone(), damaged.clone(), after.clone()].concat();
            data[before.len() + flip] ^= 0x41;
            let r = record_file::replay(&data, decode);
            assert_eq!((r.end, r.skipped), (data.len(), damaged.len()), "byte {flip} of the damaged record flipped");
            let mut offsets = HashMap::new();
            r.records.into_iter().for_each(|r| apply(&mut offsets, &mut Pending::new(), r));
            assert_eq!(offsets["g"].len(), 1, "the delete after the damage applied");
            assert_eq!(offsets["h"][&("t".to_string(), 0)], c(30), "the commit after the damage applied");
            assert!(!offsets.contains_key("x"));
        }
        let torn = [before.clone(), damaged[..damaged.len() - 3].to_vec()].concat();
        let r = record_file::replay(&torn, decode);
        assert_eq!((r.end, r.skipped, r.records.len()), (before.len(), 0, 2), "a torn tail");
    }

    #[test]
    fn transactional_offsets_wait_for_their_transactions_end() {
        let txn = |partition, offset, producer_id| Record::TxnCommit {
            group: "g".into(),
            topic: "t".into(),
            partition,
            committed: c(offset),
            producer_id,
        };
        let end = |producer_id, commit| Record::TxnEnd { group: "g".into(), producer_id, commit };
        let records = [commit("g", 0, 1), txn(0, 10, 7), txn(1, 11, 7), txn(0, 20, 8), end(7, true), end(8, false)];
        let replayed = record_file::replay(&encoded(&records), decode);
        assert_eq!(replayed.records, records, "every kind round-trips");
        let (mut offsets, mut pending) = (HashMap::new(), Pending::new());
        for r in records.iter().take(4).cloned() {
            apply(&mut offsets, &mut pending, r);
        }
        assert_eq!(offsets["g"][&("t".to_string(), 0)], c(1), "pending offsets are not committed ones");
        assert_eq!(pending["g"].len(), 2);
        let mut live = Vec::new();
        encode_live(offsets.iter(), pending.iter()).map(|b| live = b).unwrap();
        let (mut again, mut again_pending) = (HashMap::new(), Pending::new());
        record_file::replay(&live, decode).records.into_iter().for_each(|r| apply(&mut again, &mut again_pending, r));
        assert_eq!((&again, &again_pending), (&offsets, &pending), "a rewrite keeps what is pending");
        for r in records.iter().skip(4).cloned() {
            apply(&mut offsets, &mut pending, r);
        }
        assert_eq!(offsets["g"][&("t".to_string(), 0)], c(10), "producer 7 committed");
        assert_eq!(offsets["g"][&("t".to_string(), 1)], c(11));
        assert!(pending.is_empty(), "producer 8 aborted: its offsets are dropped");
    }

    #[test]
    fn names_longer_than_their_length_prefix_are_refused_not_cut() {
        let long = "é".repeat(40_000);
        let mut out = Vec::new();
        assert!(encode(&Record::DeleteGroup { group: long }, &mut out).is_err());
    }

    #[test]
    fn replay_rewrites_a_damaged_file_and_cuts_a_torn_tail() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/offsets-store");
        let _ = std::fs::remove_dir_all(&dir);
        shards::run_local(async {
            let mut offsets = HashMap::new();
            let mut f = OffsetsFile::open(&dir, 3, false, &mut offsets, &mut Pending::new()).await.unwrap();
            f.append(&[commit("g", 0, 10), commit("g", 1, 20), commit("h", 0, 30)]).await.unwrap();
            drop(f);
            let path = dir.join("3.log");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
            std::fs::write(&path, &bytes).unwrap();
            let mut replayed = HashMap::new();
            OffsetsFile::open(&dir, 3, false, &mut replayed, &mut Pending::new()).await.unwrap();
            assert_eq!(replayed["g"].len(), 2);
            assert_eq!(replayed["h"][&("t".to_string(), 0)], c(30));
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, bytes.len() - 6, "torn tail cut");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[10] ^= 0xff; // inside the first record
            std::fs::write(&path, &bytes).unwrap();
            let mut replayed = HashMap::new();
            OffsetsFile::open(&dir, 3, false, &mut replayed, &mut Pending::new()).await.unwrap();
            assert_eq!((replayed["g"].len(), replayed["h"].len()), (1, 1), "only the damaged commit is gone");
            let mut again = HashMap::new();
            OffsetsFile::open(&dir, 3, false, &mut again, &mut Pending::new()).await.unwrap();
            assert_eq!(again, replayed, "the rewritten file replays the same");
        });
    }
}
