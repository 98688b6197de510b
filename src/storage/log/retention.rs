//! Where a log starts: DeleteRecords moves the start and retention deletes whole oldest segments;
//! both remove files oldest first, so a crash never leaves a hole.

use super::*;
use crate::storage::checkpoint;

impl Log {
    /// DeleteRecords: moves the log start up to `offset` (at most the high watermark), durably, and
    /// deletes the closed segments wholly below it. Returns the new log start (the low watermark).
    pub async fn delete_records(&self, offset: u64) -> Result<u64, LogError> {
        let (removed, dir) = {
            let mut s = self.state();
            if offset > s.high_watermark() {
                return Err(LogError::OutOfRange { offset, start: s.log_start, end: s.high_watermark() });
            }
            // The start answered must survive a crash, also when retention moved it there.
            let offset = offset.max(s.log_start);
            if offset <= s.log_start_durable {
                return Ok(s.log_start);
            }
            let mut removed = Vec::new();
            while s.segments.len() > 1 && s.segments[0].next_offset <= offset {
                removed.push(s.segments.remove(0));
                s.log_start = s.log_start.max(s.segments[0].base);
            }
            s.drop_cache_below_start();
            (removed, s.dir.clone())
        };
        // Whole segments go first: on a full disk that frees the room the checkpoint needs. A crash
        // before the checkpoint leaves the start at the first remaining segment's base, as retention does.
        {
            let _files = self.segment_files.take().await;
            for seg in removed {
                seg.remove_files().await?;
            }
        }
        {
            let _turn = self.checkpointing.take().await;
            let start = self.state().log_start.max(offset);
            checkpoint::write(&dir, checkpoint::LOG_START, &[start]).await?;
        }
        let mut s = self.state();
        s.log_start = s.log_start.max(offset);
        s.log_start_durable = s.log_start_durable.max(offset);
        s.drop_cache_below_start();
        s.expire_producers(i64::MIN);
        let start = s.log_start;
        Ok(start)
    }

    /// Deletes whole oldest segments beyond `retention.bytes` or older than `retention.ms` (under
    /// `cleanup.policy` `delete`); the active segment is never deleted. Returns how many segments went.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let removed = {
            let mut s = self.state();
            let mut removed = Vec::new();
            let delete = s.cfg.cleanup.delete;
            let mut total: u64 = s.segments.iter().map(|seg| seg.size).sum();
            while delete && s.segments.len() > 1 {
                let oldest = &s.segments[0];
                let by_size = s.cfg.retention_bytes >= 0 && total - oldest.size >= s.cfg.retention_bytes as u64;
                let by_time = s.cfg.retention_ms >= 0 && oldest.max_timestamp >= 0 && oldest.max_timestamp < now_ms - s.cfg.retention_ms;
                if !(by_size || by_time) || oldest.next_offset > s.written {
                    break;
                }
                let seg = s.segments.remove(0);
                total -= seg.size;
                s.log_start = s.log_start.max(s.segments[0].base);
                removed.push(seg);
            }
            s.drop_cache_below_start();
            removed
        };
        // The oldest first: a crash meanwhile leaves a log that starts later, never one with a hole.
        {
            let _files = self.segment_files.take().await;
            for seg in &removed {
                seg.remove_files().await?;
            }
        }
        // Only once their files are gone: a producer forgotten while its batches stay on disk (a
        // removal that failed) would have its retries appended twice after a restart.
        let mut s = self.state();
        let expiry = s.cfg.producer_id_expiration_ms;
        s.expire_producers(now_ms.saturating_sub(expiry));
        Ok(removed.len())
    }
}
