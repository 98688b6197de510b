//! Per-topic log settings, with Kafka's names and defaults.

/// When the log calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `flush.messages=1`: every write is followed by fdatasync before acks=all is answered.
    EveryBatch,
    /// `flush.messages=N`: fdatasync once N messages are unsynced.
    Messages(u64),
    /// `flush.ms=N`: fdatasync at most N ms after data was written.
    Interval(u64),
    /// Neither set: the OS flushes. O_DIRECT writes still survive a crash of the process.
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// Negative: unlimited.
    pub retention_bytes: i64,
    /// Negative: unlimited.
    pub retention_ms: i64,
    pub flush: FlushPolicy,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    /// `producer.id.expiration.ms`: an idempotent producer whose last batch's timestamp is this old
    /// is forgotten (its next batch may start at any sequence).
    pub producer_id_expiration_ms: i64,
    /// `cleanup.policy` and the cleaner's settings.
    pub cleanup: Cleanup,
}

/// What happens to old records (`cleanup.policy`): retention deletes whole segments (`delete`), the
/// cleaner keeps the latest record of each key (`compact`), or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Cleanup {
    pub delete: bool,
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of the closed segments' bytes not cleaned yet above
    /// which the cleaner takes the log.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record this old is compacted whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays once its batch is older than it.
    pub delete_retention_ms: i64,
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup {
            delete: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            flush: FlushPolicy::Never,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            producer_id_expiration_ms: 86_400_000,
            cleanup: Cleanup::default(),
        }
    }
}

impl LogConfig {
    /// Derives the flush policy from Kafka's two settings (`None` = unset).
    pub fn flush_from(messages: Option<u64>, ms: Option<u64>) -> FlushPolicy {
        match (messages, ms) {
            (Some(1), _) | (_, Some(0)) => FlushPolicy::EveryBatch,
            (Some(n), _) if n > 1 && n < i64::MAX as u64 => FlushPolicy::Messages(n),
            (_, Some(ms)) if ms < i64::MAX as u64 => FlushPolicy::Interval(ms),
            _ => FlushPolicy::Never,
        }
    }
}
