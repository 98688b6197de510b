//! What a scrape gathers: one snapshot per shard, taken on the shard by its mailbox, and the
//! process's own figures, taken by the metrics thread.

use super::recorder::Recorder;

/// One partition, as the shard leading it (or holding its only replica) sees it.
#[derive(Clone, Debug, Default)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub records_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub log_start: u64,
    pub high_watermark: u64,
    pub last_stable: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    pub segments: u64,
    pub replicas: u64,
    pub in_sync_replicas: u64,
}

/// One consumer group, as its coordinator sees it.
#[derive(Clone, Debug, Default)]
pub struct GroupStats {
    pub group: String,
    pub state: &'static str,
    pub generation: i32,
    pub members: u64,
    /// (topic, partition, committed offset).
    pub committed: Vec<(String, i32, i64)>,
}

/// A gauge of something bounded, beside its bound (a Kafka setting's name).
#[derive(Clone, Debug)]
pub struct Bounded {
    pub limit: &'static str,
    pub used: f64,
    pub bound: f64,
}

/// Records and bytes through a shard's partitions, added up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub records_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What one shard reports.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// Recovered and accepting connections.
    pub serving: bool,
    pub recorder: Recorder,
    pub busy_seconds: f64,
    pub mailbox_depth: u64,
    /// Over the partitions the shard leads.
    pub traffic: Traffic,
    /// The partitions it leads, one by one (a detailed gather only).
    pub partitions: Vec<PartitionStats>,
    pub groups: Vec<GroupStats>,
    /// Partitions the shard owns whose logs are closed (not used yet since start, or offline).
    pub partitions_closed: u64,
    pub partitions_offline: u64,
    /// Bytes the shard's batch caches hold, and their budget.
    pub cache_bytes: u64,
    pub cache_limit_bytes: u64,
    /// The shard's bounded resources (request memory, fetch sessions, …).
    pub bounded: Vec<Bounded>,
    /// The controller's (shard 0's) view of all topics.
    pub cluster: Option<Cluster>,
}

/// Figures for the whole broker, from the controller's catalog.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub topics: u64,
    pub partitions: u64,
    pub under_replicated: u64,
    pub offline: u64,
}

/// Everything one scrape saw.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// By shard; `None` for a shard that did not answer in time.
    pub shards: Vec<Option<ShardSnapshot>>,
    /// Broker-wide bounded resources (connections, partitions, open files).
    pub bounded: Vec<Bounded>,
    pub process: super::process::ProcessStats,
}

impl Scrape {
    /// The shards' recorders added up.
    pub fn recorded(&self) -> Recorder {
        let mut all = Recorder::default();
        for s in self.shards.iter().flatten() {
            all.merge(&s.recorder);
        }
        all
    }

    pub fn cluster(&self) -> Cluster {
        self.shards.iter().flatten().find_map(|s| s.cluster.clone()).unwrap_or_default()
    }

    pub fn partitions(&self) -> impl Iterator<Item = &PartitionStats> {
        self.shards.iter().flatten().flat_map(|s| &s.partitions)
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupStats> {
        self.shards.iter().flatten().flat_map(|s| &s.groups)
    }

    /// A group's lag on a partition: records from its committed offset to the high watermark.
    pub fn lag(&self, topic: &str, partition: i32, committed: i64) -> Option<u64> {
        self.partitions()
            .find(|p| p.topic == topic && p.partition == partition)
            .map(|p| p.high_watermark.saturating_sub(committed.max(0) as u64))
    }
}
