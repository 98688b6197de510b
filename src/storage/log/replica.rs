//! A replicated partition's side of its log (`broker::replication`): a follower appends its
//! leader's batches at the leader's offsets, the leader reads every written batch for its
//! followers, and the high watermark readers see is the one the replicas allow.

use super::read::ReadTo;
use super::*;
use crate::storage::control;
use crate::storage::leader_epochs::LeaderEpochs;

/// How far a replica's copy goes, as its leader counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaEnd {
    /// Log end offset: every batch below is written.
    pub written: u64,
    /// What the flush policy makes of it: fsynced under flush-every-batch, `written` otherwise.
    pub durable: u64,
}

impl Log {
    /// Appends batches that carry their offsets: a follower copying its leader. They must come in
    /// order, from the log end on (a gap is allowed: compaction leaves them); producers' state
    /// follows them as it follows the leader's, so that this replica can lead. Returns the offset
    /// after the last batch. They are checked as the log holds them (`split_stored`): the leader
    /// checked their records when produced, and compaction may since have removed some.
    pub fn append_replica(&self, records: Bytes) -> Result<u64, LogError> {
        let batches = batch::split_stored(&records)?;
        let mut s = self.state();
        if let Some(e) = &s.failed {
            return Err(LogError::Storage(e.clone()));
        }
        if s.closing {
            return Err(LogError::Deleted);
        }
        let mut next = s.next_offset;
        for (_, info) in &batches {
            if (info.base_offset as u64) < next || info.base_offset < 0 {
                return Err(LogError::InvalidRecord("a replicated batch overlaps the log"));
            }
            next = info.base_offset as u64 + u64::from(info.offset_count);
        }
        let now_ms = read_cache::now_ms();
        for (at, info) in batches {
            let marker = if info.is_control() { control::parse(&records[at..at + info.bytes]) } else { None };
            s.queue(&records, at, info, marker, Keep::AsSent, now_ms);
        }
        self.note_cached(&mut s);
        drop(s);
        self.writer_wake.notify_all();
        Ok(next)
    }

    /// Whole batches from `offset` up to the log end, at least one and at most `max_bytes` more,
    /// in memory: what a follower copies. Each buffer holds whole batches (the cache keeps a large
    /// batch in two parts: those are joined).
    pub async fn read_replica(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let mut out = Vec::new();
        let mut part: Option<BytesMut> = None;
        for chunk in self.read_upto(offset, max_bytes, ReadTo::Written).await?.0.chunks {
            let bytes = chunk.to_bytes()?;
            match part.take() {
                None if whole_batches(&bytes) => out.push(bytes),
                None => part = Some(BytesMut::from(&bytes[..])),
                Some(mut joined) => {
                    joined.extend_from_slice(&bytes);
                    if whole_batches(&joined) {
                        out.push(joined.freeze());
                    } else {
                        part = Some(joined);
                    }
                }
            }
        }
        Ok(out)
    }

    /// This replica's end, for its leader.
    pub fn replica_end(&self) -> ReplicaEnd {
        let s = self.state();
        let durable = if s.cfg.flush == FlushPolicy::EveryBatch { s.durable } else { s.written };
        ReplicaEnd { written: s.written, durable }
    }

    /// Sets the high watermark the partition's replicas allow (`None`: this log's own). Readers
    /// and acks=all waiters see it at once.
    pub fn set_replicated_hw(&self, hw: Option<u64>) {
        {
            let mut s = self.state();
            if s.replicated_hw == hw {
                return;
            }
            s.replicated_hw = hw;
            s.hw_known = hw.or(s.hw_known);
        }
        self.appended.notify_all();
        self.progressed.notify_all();
    }

    /// Makes this log its partition's leader's at `epoch`: the batches appended from now on carry
    /// it, and it begins at the log end.
    pub fn lead(&self, epoch: i32) {
        let mut s = self.state();
        s.stamp = Some(epoch);
        let end = s.next_offset;
        if s.epochs.assign(epoch, end) {
            s.epochs_changed += 1;
        }
    }

    /// Makes this log a follower's: appended batches keep the leader's epoch.
    pub fn follow(&self) {
        self.state().stamp = None;
    }

    /// OffsetForLeaderEpoch: the largest epoch at most `epoch` this log knows and the offset it
    /// ends at (the written log end for the latest); (−1, −1) if none.
    pub fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        let s = self.state();
        s.epochs.end_offset_for(epoch, s.written)
    }

    /// The epoch the batch at `offset` was appended in, if known.
    pub fn epoch_at(&self, offset: u64) -> Option<i32> {
        self.state().epochs.epoch_at(offset)
    }

    /// The newest epoch this log holds batches of (or leads in).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state().epochs.latest().map(|(epoch, _)| epoch)
    }

    /// Writes the leader epoch checkpoint if the epochs changed since it was last written (the
    /// writer, before the batches that changed them).
    pub(super) async fn save_epochs(&self) -> Result<(), LogError> {
        let (changed, bytes, path) = {
            let s = self.state();
            if s.epochs_changed == s.epochs_saved {
                return Ok(());
            }
            (s.epochs_changed, s.epochs.encode(), LeaderEpochs::path(&s.dir))
        };
        fs::write_durably(&path, bytes).await?;
        let mut s = self.state();
        s.epochs_saved = s.epochs_saved.max(changed);
        Ok(())
    }

    /// Whether a write failed and the log takes no appends (a disk error, a full disk).
    pub fn failed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// Whether a write failed for another reason than a full disk (EIO, EROFS, …).
    pub fn disk_failed(&self) -> bool {
        self.state().disk_failed
    }

    /// Waits until a write fails or the log closes.
    pub async fn wait_failed(&self) {
        loop {
            let progressed = self.progressed.notified();
            if self.state().failed.is_some() || self.state().closing {
                return;
            }
            progressed.await;
        }
    }

    /// The replicated high watermark this log last knew — the one checkpointed at its last clean
    /// close, or one its leader gave it since: where its own may start when it leads. (The one at
    /// the close alone made a follower that had copied on since start its leadership that far back:
    /// records its followers acknowledged vanished from ListOffsets and reads.)
    pub fn known_high_watermark(&self) -> Option<u64> {
        self.state().hw_known
    }

    /// At a clean close of a replica's log, its high watermark for the next open (`checkpoint`).
    pub(super) async fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        let (hw, dir) = {
            let s = self.state();
            match s.replicated_hw {
                Some(_) => (s.high_watermark(), s.dir.clone()),
                None => return Ok(()),
            }
        };
        Ok(crate::storage::checkpoint::write(&dir, crate::storage::checkpoint::HIGH_WATERMARK, &[hw]).await?)
    }
}

/// Does `bytes` end where a batch ends?
fn whole_batches(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match batch::framed_len(bytes) {
            Ok(len) if len <= bytes.len() => bytes = &bytes[len..],
            _ => return false,
        }
    }
    true
}
