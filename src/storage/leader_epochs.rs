//! A replica's leader epochs (Kafka's `LeaderEpochFileCache`, KIP-101/279): for each epoch in
//! which this replica's log was written, the offset its first batch took. A follower asks its
//! leader where its last epoch ends (OffsetForLeaderEpoch) and cuts its log there, so that the
//! replicas of a partition never keep different records at one offset after a leader change.
//!
//! Kept in the partition directory as `leader-epoch-checkpoint`, Kafka's text format: a version
//! line (`0`), a count line, then `epoch start-offset` per line; replaced whole and durably (rare:
//! once per leader change). Entries are found again from the batches' `partitionLeaderEpoch`
//! when recovery scans the active segment, so one a crash kept from the file comes back.

use std::path::{Path, PathBuf};

pub const FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, u64)>,
}

impl LeaderEpochs {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// The checkpoint's entries; none when there is no file or it does not parse (found again
    /// from the batches, as far as the recovery scan goes).
    pub fn decode(text: &[u8]) -> Option<LeaderEpochs> {
        let text = std::str::from_utf8(text).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut out = LeaderEpochs::default();
        for line in lines.take(count) {
            let mut fields = line.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start: u64 = fields.next()?.parse().ok()?;
            if out.entries.last().is_some_and(|&(e, s)| e >= epoch || s > start) || epoch < 0 {
                return None;
            }
            out.entries.push((epoch, start));
        }
        (out.entries.len() == count).then_some(out)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        text.into_bytes()
    }

    pub fn latest(&self) -> Option<(i32, u64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` begins at `offset` (a batch written with it, or this replica becoming
    /// its leader); entries it contradicts (a later epoch, or one starting at or past `offset`)
    /// go. Returns whether anything changed. Negative epochs (batches from before epochs) are
    /// not recorded.
    pub fn assign(&mut self, epoch: i32, offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(e, _)) if e == epoch => return false,
            Some(&(e, s)) if e < epoch && s < offset => {}
            _ => self.entries.retain(|&(e, s)| e < epoch && s < offset),
        }
        self.entries.push((epoch, offset));
        true
    }

    /// Forgets the epochs that start at or past `offset` (the log cut there). Returns whether
    /// anything changed.
    pub fn truncate_from(&mut self, offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < offset);
        self.entries.len() != before
    }

    /// OffsetForLeaderEpoch's answer for `epoch` on a log ending at `log_end`: the largest epoch
    /// at most `epoch` and where it ends (the next epoch's start, or the log end for the latest);
    /// (−1, −1) when the log knows no epoch at or below it and none above.
    pub fn end_offset_for(&self, epoch: i32, log_end: u64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (-1, -1);
        let Some(&(latest, _)) = self.entries.last() else { return UNDEFINED };
        if epoch < 0 {
            return UNDEFINED;
        }
        if epoch >= latest {
            return if epoch == latest { (latest, log_end as i64) } else { UNDEFINED };
        }
        let after = self.entries.partition_point(|&(e, _)| e <= epoch);
        let next_start = self.entries[after].1 as i64;
        match after {
            // Older than every epoch known: it ended where the first known one began.
            0 => (epoch, next_start),
            _ => (self.entries[after - 1].0, next_start),
        }
    }

    /// The epoch the batch at `offset` was written in, if known (ListOffsets' leader epoch).
    pub fn epoch_at(&self, offset: u64) -> Option<i32> {
        let at = self.entries.partition_point(|&(_, s)| s <= offset);
        (at > 0).then(|| self.entries[at - 1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(i32, u64)]) -> LeaderEpochs {
        LeaderEpochs { entries: entries.to_vec() }
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing() {
        let mut e = LeaderEpochs::default();
        assert!(e.assign(0, 0) && !e.assign(0, 5) && e.assign(2, 10) && e.assign(3, 10));
        // Epoch 2 wrote nothing before epoch 3 began: it goes.
        assert_eq!(e, epochs(&[(0, 0), (3, 10)]));
        // A batch of an older epoch past the newest's start contradicts what follows it.
        let mut e = epochs(&[(1, 0), (4, 20)]);
        assert!(e.assign(2, 30));
        assert_eq!(e, epochs(&[(1, 0), (2, 30)]));
        assert!(!e.assign(-1, 40));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let e = epochs(&[(1, 0), (3, 100), (5, 200)]);
        assert_eq!(e.end_offset_for(5, 250), (5, 250));
        assert_eq!(e.end_offset_for(4, 250), (3, 200));
        assert_eq!(e.end_offset_for(3, 250), (3, 200));
        assert_eq!(e.end_offset_for(1, 250), (1, 100));
        assert_eq!(e.end_offset_for(0, 250), (0, 0));
        assert_eq!(e.end_offset_for(6, 250), (-1, -1));
        assert_eq!(LeaderEpochs::default().end_offset_for(0, 9), (-1, -1));
        assert_eq!((e.epoch_at(0), e.epoch_at(150), e.epoch_at(999)), (Some(1), Some(3), Some(5)));
    }

    #[test]
    fn file_round_trip_and_truncation() {
        let mut e = epochs(&[(0, 0), (2, 50), (7, 90)]);
        assert_eq!(LeaderEpochs::decode(&e.encode()), Some(e.clone()));
        assert_eq!(LeaderEpochs::decode(b"0\n2\n1 0\n"), None, "fewer lines than counted");
        assert_eq!(LeaderEpochs::decode(b"0\n2\n3 0\n1 5\n"), None, "epochs out of order");
        assert!(e.truncate_from(50) && e == epochs(&[(0, 0)]) && !e.truncate_from(50));
    }
}
