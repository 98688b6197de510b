//! The broker's side of the metrics: a shard's snapshot, taken on the shard by a mailbox job, and
//! the gather that asks every shard for one (`metrics::http::Source`).

use super::{admission, catalog, connections::connections, replication, state, BrokerConfig};
use crate::metrics::http::Source;
use crate::metrics::recorder::Recorder;
use crate::metrics::snapshot::{Bounded, Cluster, PartitionStats, Scrape, ShardSnapshot, Traffic};
use crate::storage::read_cache;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shard that has not answered by then is reported as not serving.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Records and bytes through one partition replica, counted by its owning shard alone.
#[derive(Default)]
pub struct PartitionTraffic(Cell<Traffic>);

impl PartitionTraffic {
    pub fn appended(&self, records: u64, bytes: u64) {
        self.add(Traffic { records_in: records, bytes_in: bytes, ..Traffic::default() });
    }

    pub fn sent(&self, records: u64, bytes: u64) {
        self.add(Traffic { records_out: records, bytes_out: bytes, ..Traffic::default() });
    }

    fn add(&self, more: Traffic) {
        let mut t = self.0.get();
        t += more;
        self.0.set(t);
    }

    pub fn get(&self) -> Traffic {
        self.0.get()
    }
}

/// Gathers from the shards through their mailboxes, once they are started (`started`): the
/// listener serves from the beginning, so that `/health/live` answers and `/health/ready` says
/// "starting" while the broker waits for its ports and recovers.
pub struct Gather {
    mailboxes: std::sync::OnceLock<Arc<shards::Mailboxes>>,
    /// Each shard's last answer, plain and detailed: a shard that does not answer in time is
    /// reported with it (as not serving), so that its counters do not seem to drop to zero.
    last: std::sync::Mutex<[Vec<Option<ShardSnapshot>>; 2]>,
    /// Set from the signal handler: not ready from the moment a shutdown is asked for.
    stop: &'static AtomicBool,
    cfg: Arc<BrokerConfig>,
}

impl Gather {
    pub fn new(cfg: Arc<BrokerConfig>, stop: &'static AtomicBool) -> Gather {
        Gather { mailboxes: std::sync::OnceLock::new(), last: std::sync::Mutex::default(), stop, cfg }
    }

    /// The shards run: gather from them from now on.
    pub fn started(&self, mailboxes: Arc<shards::Mailboxes>) {
        let _ = self.mailboxes.set(mailboxes);
    }

    /// Runs `job` on every shard; their answers by shard, `None` for one that did not answer in time.
    fn ask<T: Send + 'static>(&self, job: fn() -> T) -> Vec<Option<T>> {
        self.mailboxes.get().map_or_else(Vec::new, |m| m.ask_all(job, ANSWER_WITHIN))
    }
}

impl Source for Gather {
    fn gather(&self, detail: bool) -> Scrape {
        let mut shards = self.ask(if detail { || snapshot(true) } else { || snapshot(false) });
        {
            let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let last = &mut last[usize::from(detail)];
            last.resize(shards.len(), None);
            for (answer, kept) in shards.iter_mut().zip(last.iter_mut()) {
                match answer {
                    Some(s) => *kept = Some(s.clone()),
                    None => *answer = kept.clone().map(|s| ShardSnapshot { serving: false, ..s }),
                }
            }
        }
        if let Some(mailboxes) = self.mailboxes.get() {
            for (i, s) in shards.iter_mut().enumerate() {
                if let Some(s) = s {
                    s.mailbox_depth = mailboxes.depth(i) as u64;
                }
            }
        }
        let cfg = &self.cfg;
        let mut bounded = vec![
            Bounded { limit: "max.connections", used: connections().open() as f64, bound: cfg.max_connections as f64 },
            Bounded { limit: "max.partitions", used: 0.0, bound: cfg.max_partitions as f64 },
        ];
        let partitions = shards.iter().flatten().find_map(|s| s.cluster.as_ref().map(|c| c.partitions));
        bounded[1].used = partitions.unwrap_or(0) as f64;
        let process = crate::metrics::process::ProcessStats::read();
        bounded.push(Bounded { limit: "open.files", used: process.open_fds as f64, bound: process.max_fds as f64 });
        Scrape { shards, bounded, process }
    }

    fn ready(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        if self.mailboxes.get().is_none() {
            return Err("starting".into());
        }
        let serving = self.ask(|| state().serving.get());
        let waiting: Vec<String> = serving.iter().enumerate().filter(|(_, s)| **s != Some(true)).map(|(i, _)| i.to_string()).collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("shards not serving yet: {}", waiting.join(", ")))
        }
    }
}

/// This shard's figures (it runs on the shard, from its mailbox).
fn snapshot(detail: bool) -> ShardSnapshot {
    let st = state();
    let mut snap = ShardSnapshot {
        shard: st.shard.id,
        serving: st.serving.get(),
        recorder: Recorder::copy(),
        busy_seconds: shards::busy_time().as_secs_f64(),
        realtime: shards::realtime(),
        realtime_demotions: shards::demotions(),
        ..ShardSnapshot::default()
    };
    let mut traffic = Traffic::default();
    for ((topic, partition), part) in st.partitions.borrow().iter() {
        let (leads, replicas, in_sync) = match &part.role {
            replication::Role::Sole => (true, 1, 1),
            replication::Role::Leader(l) => {
                let replicas = st.topics.borrow().get(topic).map_or(1, |m| u64::from(m.replication_factor));
                (true, replicas, l.isr().len() as u64)
            }
            replication::Role::Follower(_) => (false, 0, 0),
        };
        let (segments, _, _) = part.log.stats();
        traffic += part.traffic.get();
        if detail {
            let o = part.log.offsets();
            snap.partitions.push(PartitionStats {
                topic: topic.clone(),
                partition: *partition,
                leads,
                traffic: part.traffic.get(),
                log_start: o.log_start,
                high_watermark: o.high_watermark,
                last_stable: o.last_stable,
                log_end: o.log_end,
                size_bytes: part.log.size_bytes(),
                segments: segments as u64,
                replicas,
                in_sync_replicas: in_sync,
            });
        }
    }
    snap.traffic = traffic;
    for closed in st.closed.borrow().values() {
        snap.partitions_closed += 1;
        if matches!(closed, super::partitions::Closed::Offline(_)) {
            snap.partitions_offline += 1;
        }
    }
    (snap.cache_bytes, snap.cache_limit_bytes) = (read_cache::held() as u64, read_cache::budget() as u64);
    if detail {
        snap.groups = st.groups.stats();
    }
    let budget = &st.request_budget;
    snap.bounded = vec![
        Bounded { limit: "queued.max.request.bytes", used: budget.in_use() as f64, bound: budget.limit() as f64 },
        Bounded {
            limit: "max.incremental.fetch.session.cache.slots",
            used: st.fetch_sessions.borrow().len() as f64,
            bound: st.cfg.fetch_session_slots as f64,
        },
        Bounded {
            limit: "open.log.files",
            used: crate::storage::file_budget::held() as f64,
            bound: admission::log_files_per_shard(st.shard.count) as f64,
        },
    ];
    if st.shard.id == 0 {
        snap.cluster = Some(cluster(&st.topics.borrow(), st.shard.count));
    }
    snap
}

/// Topic and partition counts from the catalog, every shard's copy being the same.
fn cluster(topics: &std::collections::BTreeMap<String, catalog::TopicMeta>, shard_count: usize) -> Cluster {
    let mut c = Cluster { topics: topics.len() as u64, ..Cluster::default() };
    for meta in topics.values() {
        c.partitions += meta.partitions.max(0) as u64;
        for p in 0..meta.partitions {
            let replicas = replication::replicas(meta, p, shard_count);
            let state = meta.state(p, &replicas);
            if state.leader.is_none() {
                c.offline += 1;
            }
            if state.isr.len() < replicas.len() {
                c.under_replicated += 1;
            }
        }
    }
    c
}
