//! What a scrape gathers: one snapshot per shard, taken on the shard by its mailbox, and the
//! process's own figures, taken by the metrics thread.

use super::recorder::Recorder;
use std::collections::BTreeMap;

/// One replica of a partition, as its shard sees it. Each replica counts records and bytes only
/// while it leads: the partition's traffic is the sum over its replicas, which keeps growing when
/// leadership moves. Its offsets and sizes are the leader's.
#[derive(Clone, Debug, Default)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub leads: bool,
    pub traffic: Traffic,
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

/// Records and bytes through a partition replica, or a shard's partitions added up. Records out
/// are the offsets consumers were sent, from the offset each Fetch asked for to the end of the
/// last batch returned: on a compacted topic they include the offsets compaction removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub records_in: u64,
    pub bytes_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.records_in += o.records_in;
        self.bytes_in += o.bytes_in;
        self.records_out += o.records_out;
        self.bytes_out += o.bytes_out;
    }
}

/// What one shard reports.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// Recovered and accepting connections.
    pub serving: bool,
    pub recorder: Recorder,
    pub busy_seconds: f64,
    /// Its thread runs at real-time priority now (`--realtime-shards`), and how often it lost it.
    pub realtime: bool,
    pub realtime_demotions: u64,
    pub mailbox_depth: u64,
    /// Over the shard's replicas.
    pub traffic: Traffic,
    /// Its replicas, one by one (a detailed gather only).
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

    /// The controller's figures; `None` if it has not answered since start.
    pub fn cluster(&self) -> Option<Cluster> {
        self.shards.iter().flatten().find_map(|s| s.cluster.clone())
    }

    /// Each partition once: its replicas' traffic added up, the rest from the replica that leads
    /// (the first to say so, should two answer on either side of a leadership change).
    pub fn partitions(&self) -> BTreeMap<(String, i32), PartitionStats> {
        let mut out: BTreeMap<(String, i32), PartitionStats> = BTreeMap::new();
        for r in self.shards.iter().flatten().flat_map(|s| &s.partitions) {
            let key = (r.topic.clone(), r.partition);
            let Some(p) = out.get_mut(&key) else {
                out.insert(key, r.clone());
                continue;
            };
            let mut traffic = p.traffic;
            traffic += r.traffic;
            if r.leads && !p.leads {
                *p = r.clone();
            }
            p.traffic = traffic;
        }
        out.retain(|_, p| p.leads);
        out
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupStats> {
        self.shards.iter().flatten().flat_map(|s| &s.groups)
    }
}

/// A group's lag on a partition: records from its committed offset to the high watermark.
pub fn lag(partitions: &BTreeMap<(String, i32), PartitionStats>, topic: &str, partition: i32, committed: i64) -> Option<u64> {
    partitions.get(&(topic.to_string(), partition)).map(|p| p.high_watermark.saturating_sub(committed.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(shard: usize, leads: bool, records_in: u64, end: u64) -> ShardSnapshot {
        let p = PartitionStats {
            topic: "t".into(),
            partition: 0,
            leads,
            traffic: Traffic { records_in, bytes_in: records_in * 10, records_out: records_in / 2, bytes_out: records_in * 5 },
            log_end: end,
            high_watermark: end,
            ..Default::default()
        };
        ShardSnapshot { shard, partitions: vec![p], ..Default::default() }
    }

    #[test]
    fn a_partitions_counters_add_up_over_its_replicas_and_its_offsets_are_the_leaders() {
        // Shard 0 led for 100 records, then leadership moved to shard 1, which has taken 30 since.
        let scrape = Scrape { shards: vec![Some(replica(0, false, 100, 120)), Some(replica(1, true, 30, 130))], ..Default::default() };
        let merged = scrape.partitions();
        let p = &merged[&("t".to_string(), 0)];
        assert_eq!(p.traffic, Traffic { records_in: 130, bytes_in: 1300, records_out: 65, bytes_out: 650 });
        assert_eq!((p.log_end, p.leads), (130, true));
        assert_eq!(lag(&merged, "t", 0, 100), Some(30));
        assert_eq!(lag(&merged, "t", 1, 0), None);
        // Only followers answered (the leader's shard did not): no partition figures rather than a follower's.
        let scrape = Scrape { shards: vec![Some(replica(0, false, 100, 120)), None], ..Default::default() };
        assert!(scrape.partitions().is_empty());
    }
}
