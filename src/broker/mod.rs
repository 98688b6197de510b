//! The broker: per-shard state, topic control, and the Kafka request handlers.
//!
//! The only layer that knows both the shards and Kafka. Every partition is owned by one shard
//! (`shards::placement`); its `Log` is touched by that shard alone. A request for a partition owned
//! elsewhere is forwarded through the mailbox. Shard 0 is the controller: it owns the durable topic
//! catalog and tells every shard about changes.

mod acls;
mod admission;
mod auto_create;
mod batch_rewrite;
pub mod catalog;
mod cleaner;
mod config;
mod conn;
mod connections;
mod delete_records;
mod elect_leaders;
mod error_codes;
pub mod errors;
mod fetch;
mod fetch_session;
mod group;
mod handlers;
mod leader_epoch;
mod list_offsets;
mod log_dirs;
pub mod memory;
mod observe;
pub use observe::Gather;
pub mod panic_guard;
mod partitions;
mod produce;
mod record_file;
mod replication;
pub use replication::at_start as replication_at_start;
mod topic_admin;
mod topics;
mod txn;

use crate::storage::{Log, LogConfig};
use catalog::TopicMeta;
use shards::Shard;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// Wall-clock milliseconds since the Unix epoch (Kafka's timestamps).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Broker settings, shared read-only by all shards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen_host: String,
    pub port: u16,
    pub advertised_host: String,
    /// The broker's own files, and every replica unless `log_dirs` says otherwise.
    pub data_dir: PathBuf,
    /// One directory per shard for its replicas (`--data-dir a,b,…`, Kafka's `log.dirs`), so that
    /// a partition's replicas sit on different disks; empty: all in `data_dir`.
    pub log_dirs: Vec<PathBuf>,
    pub shards: usize,
    pub single_port: bool,
    /// Shards float between cores instead of being pinned (`--floating-shards`).
    pub floating_shards: bool,
    /// Light shards run at real-time priority (`--realtime-shards`).
    pub realtime_shards: bool,
    pub max_request_bytes: usize,
    /// Request bytes in flight over all connections, split evenly over the shards
    /// (`queued.max.request.bytes`; `usize::MAX`: unbounded).
    pub queued_max_request_bytes: usize,
    /// Open connections the broker admits, in all and from one address (`max.connections`,
    /// `max.connections.per.ip`).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A connection with no request for this long is closed, as is one whose response is not read
    /// within it (`connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    pub auto_create_topics: bool,
    /// Topics auto-created a second at most, over the broker (`auto.create.topics.rate`).
    pub auto_create_topics_rate: u32,
    pub num_partitions: i32,
    /// Partitions the broker admits, over all topics (`max.partitions`).
    pub max_partitions: usize,
    pub log: LogConfig,
    /// Memory for recent batches over all shards (`log.cache.max.bytes`; `memory`).
    pub log_cache_max: memory::CacheSize,
    pub retention_check_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Memory for group members' metadata and assignments over all shards, split evenly
    /// (`group.metadata.max.bytes`; `usize::MAX`: unbounded).
    pub group_metadata_max_bytes: usize,
    pub offsets_retention_minutes: u64,
    /// A transactional id with no transaction for this long is forgotten (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
    /// Incremental fetch sessions kept per shard (`max.incremental.fetch.session.cache.slots`).
    pub fetch_session_slots: usize,
    pub cleaner: CleanerConfig,
    /// Replicas of a topic created without saying (`default.replication.factor`).
    pub default_replication_factor: u16,
    /// A follower that has not caught up for this long leaves the ISR (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// How often the controller moves leadership back to preferred replicas
    /// (`leader.imbalance.check.interval.seconds`); `None`: never (`auto.leader.rebalance.enable=false`).
    pub leader_rebalance_secs: Option<u64>,
}

/// The log cleaner's settings (Kafka's `log.cleaner.*`): one cleaner per shard, for the shard's
/// compacted partitions.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.backoff.ms`: how long a cleaner with nothing to clean sleeps.
    pub backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the key maps of all the shards' cleaners.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: reads and writes of all the shards' cleaners.
    pub io_max_bytes_per_second: f64,
}

/// Weir's default for `log.cleaner.io.max.bytes.per.second` (Kafka's is unlimited): an unthrottled
/// pass reads at the disk's whole bandwidth and producers' appends queue behind its reads (e2e p99
/// at 100k msgs/s 57x its idle figure); at 100 MB/s the pass's reads and rewrites cost nothing
/// measurable (`perf/RESULTS.md`, sessions 10 and 11).
const CLEANER_IO_DEFAULT_BYTES_PER_SECOND: f64 = 100e6;

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enabled: true,
            backoff_ms: 15_000,
            dedupe_buffer_bytes: 128 << 20,
            io_max_bytes_per_second: CLEANER_IO_DEFAULT_BYTES_PER_SECOND,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen_host: "127.0.0.1".into(),
            port: 9092,
            advertised_host: "127.0.0.1".into(),
            data_dir: PathBuf::from("weir-data"),
            log_dirs: Vec::new(),
            shards: 1,
            single_port: false,
            floating_shards: false,
            realtime_shards: false,
            max_request_bytes: 100 << 20,
            queued_max_request_bytes: 512 << 20,
            max_connections: 10_000,
            max_connections_per_ip: i32::MAX as usize,
            connections_max_idle_ms: 600_000,
            auto_create_topics: true,
            auto_create_topics_rate: 100,
            num_partitions: 1,
            max_partitions: 100_000,
            log: LogConfig::default(),
            log_cache_max: memory::CacheSize::Percent(50),
            retention_check_ms: 30_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_metadata_max_bytes: 256 << 20,
            offsets_retention_minutes: 7 * 24 * 60,
            transactional_id_expiration_ms: 7 * 24 * 3_600_000,
            fetch_session_slots: 1000,
            cleaner: CleanerConfig::default(),
            default_replication_factor: 1,
            replica_lag_time_max_ms: 30_000,
            leader_rebalance_secs: Some(300),
        }
    }
}

impl BrokerConfig {
    /// The broker id a client should use for partitions owned by `shard`.
    pub fn node_for(&self, shard: usize) -> i32 {
        if self.single_port {
            0
        } else {
            shard as i32
        }
    }

    /// (node id, port) of every advertised broker.
    pub fn nodes(&self) -> Vec<(i32, i32)> {
        if self.single_port {
            vec![(0, i32::from(self.port))]
        } else {
            (0..self.shards).map(|s| (s as i32, i32::from(self.port) + s as i32)).collect()
        }
    }
}

/// This shard's replica of a partition.
pub struct Partition {
    /// The topic's id when the log was opened: a topic deleted and created again under its name
    /// has another, so a request that started on the old log can tell.
    pub topic_id: u128,
    pub log: Rc<Log>,
    /// What produce does to batches, from the topic's configs (refreshed when they change).
    pub rules: std::cell::Cell<config::ProduceRules>,
    pub role: replication::Role,
    /// Records and bytes in and out, for the metrics (kept when the role changes).
    pub traffic: Rc<observe::PartitionTraffic>,
}

/// Everything one shard knows. Lives in a thread-local; never sent to another shard.
pub struct ShardState {
    pub shard: Shard,
    pub cfg: Arc<BrokerConfig>,
    pub topics: RefCell<BTreeMap<String, TopicMeta>>,
    /// Topic id → name, for the requests that name topics by id (Fetch v13+).
    pub topic_ids: RefCell<HashMap<u128, String>>,
    pub partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
    /// Partitions this shard owns whose logs are not open: not yet used, or offline.
    pub closed: RefCell<HashMap<(String, i32), partitions::Closed>>,
    /// Partitions being opened on first use; a second request waits on the first's open.
    pub opening: RefCell<HashMap<(String, i32), Rc<shards::Notify>>>,
    /// This shard's share of `queued.max.request.bytes`, which its connections read requests within.
    pub request_budget: Rc<crate::protocol::budget::Budget>,
    pub controller: topics::Controller,
    pub groups: group::Coordinator,
    pub txns: txn::TxnCoordinator,
    /// Incremental fetch sessions opened with this shard (KIP-227).
    pub fetch_sessions: RefCell<fetch_session::Sessions>,
    /// Why this shard's log directory failed (a write error other than a full disk in one of its
    /// logs), if it did: its replicas are reported offline (`replication::dir_failed`).
    pub log_dir_failed: RefCell<Option<String>>,
    /// Broker configs altered at runtime (`config::broker`), the same on every shard.
    pub dynamic_broker: RefCell<BTreeMap<String, String>>,
    /// Recovered and accepting connections (`/health/ready`).
    pub serving: std::cell::Cell<bool>,
}

thread_local! {
    static STATE: RefCell<Option<Rc<ShardState>>> = const { RefCell::new(None) };
}

/// Runs `f` on shard `target` (through the mailboxes; at once when it is this one).
pub async fn on_shard<F, Fut, R>(target: usize, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
    R: Send + 'static,
{
    let shard = state().shard.clone();
    shard.submit_to(target, f).await
}

/// This shard's state. Panics outside a running shard: a bug, not an input.
pub fn state() -> Rc<ShardState> {
    STATE.with(|s| s.borrow().clone()).expect("broker state used outside a shard")
}

impl ShardState {
    /// The shard that serves `topic`/`partition`: its leader's (for a partition of one replica,
    /// its placement; for one with no leader, the preferred one, whose replica refuses requests).
    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        let preferred = shards::placement(topic, partition as u32, self.shard.count);
        let topics = self.topics.borrow();
        match topics.get(topic) {
            Some(meta) if meta.replication_factor > 1 => match meta.states.get(&partition) {
                Some(state) => state.leader.map_or(preferred, usize::from),
                None => preferred,
            },
            _ => preferred,
        }
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.topics.borrow().get(name).cloned()
    }

    /// The topics' names by id (built per request that names topics by id: admin calls only).
    pub fn topic_names_by_id(&self) -> std::collections::HashMap<u128, String> {
        self.topics.borrow().values().map(|m| (m.id, m.name.clone())).collect()
    }

    /// Does `topic` exist with a partition `partition`? (No copy of its metadata.)
    pub fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        self.topics.borrow().get(topic).is_some_and(|m| partition >= 0 && partition < m.partitions)
    }

    /// Runs `f(partition)` on the shard owning `topic`/`partition`; else the error code for it
    /// (UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR for an offline partition, or
    /// NOT_LEADER_OR_FOLLOWER for a replica that does not lead).
    pub async fn on_owner<F, Fut, R>(&self, topic: &str, partition: i32, f: F) -> Result<R, i16>
    where
        F: FnOnce(Rc<Partition>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if !self.partition_exists(topic, partition) {
            return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
        }
        let name = topic.to_string();
        self.shard
            .submit_to(self.owner(topic, partition), move || async move {
                match partitions::local(&name, partition).await {
                    // Its leadership moved away meanwhile: the client asks the new leader.
                    Ok(part) if !part.role.leads() => Err(errors::NOT_LEADER_OR_FOLLOWER),
                    Ok(part) => Ok(f(part).await),
                    Err(code) => Err(code),
                }
            })
            .await
    }

    /// This shard's replica of `topic`/`partition`: `<topic>-<partition>` for its preferred leader
    /// (every partition of one replica), `<topic>-<partition>.replica-<shard>` for another replica.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        if shards::placement(topic, partition as u32, self.shard.count) == self.shard.id {
            self.log_dir().join(format!("{topic}-{partition}"))
        } else {
            self.log_dir().join(format!("{topic}-{partition}.replica-{}", self.shard.id))
        }
    }

    /// The directory this shard keeps its replicas in.
    pub fn log_dir(&self) -> &std::path::Path {
        self.cfg.log_dirs.get(self.shard.id).unwrap_or(&self.cfg.data_dir)
    }

    /// Does this shard hold a replica of `meta`'s partition `p`?
    pub fn holds_replica(&self, meta: &TopicMeta, p: i32) -> bool {
        replication::replicas(meta, p, self.shard.count).contains(&(self.shard.id as u16))
    }
}

/// Runs one shard: restores its partitions, then serves clients until shutdown.
pub async fn run_shard(shard: Shard, cfg: Arc<BrokerConfig>, stop: Arc<std::sync::atomic::AtomicBool>) {
    crate::storage::read_cache::set_budget(memory::Caches::new(cfg.log_cache_max, shard.count).shard_share());
    let topics = match catalog::load(&cfg.data_dir) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the topic catalog");
            std::process::exit(1);
        }
    };
    let dynamic_broker = match config::broker::load(&cfg.data_dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the dynamic broker configs");
            std::process::exit(1);
        }
    };
    let state = Rc::new(ShardState {
        dynamic_broker: RefCell::new(dynamic_broker),
        serving: std::cell::Cell::new(false),
        log_dir_failed: RefCell::new(None),
        request_budget: crate::protocol::budget::Budget::new(cfg.queued_max_request_bytes / shard.count.max(1)),
        fetch_sessions: RefCell::new(fetch_session::Sessions::new(cfg.fetch_session_slots, (unix_ms() as i32) ^ (shard.id as i32) << 24)),
        controller: topics::Controller::new(shard.id == 0, cfg.auto_create_topics_rate),
        groups: group::Coordinator::new(&cfg, shard.id),
        txns: txn::TxnCoordinator::new(shard.id, cfg.transactional_id_expiration_ms),
        shard,
        cfg,
        topics: RefCell::new(BTreeMap::new()),
        topic_ids: RefCell::new(HashMap::new()),
        partitions: RefCell::new(HashMap::new()),
        closed: RefCell::new(HashMap::new()),
        opening: RefCell::new(HashMap::new()),
    });
    STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
    // Other shards' calls (a follower's fetch, say) may already wait: they need the state.
    state.shard.serve_mailbox();
    crate::storage::file_budget::set_limit(admission::log_files_per_shard(state.shard.count));
    if let Err(e) = shards::fs::prime_direct_io(state.log_dir()).await {
        tracing::error!(error = %e, "data directory is not usable");
        std::process::exit(1);
    }
    topics::warn_of_unnamed_dirs(&topics);
    // Partitions open on first use (`partitions`): start-up does not grow with their number.
    for meta in topics.into_values() {
        topics::restore_topic(meta);
    }
    if let Err(e) = state.groups.recover().await {
        tracing::error!(error = %e, "cannot recover committed offsets");
        std::process::exit(1);
    }
    shards::spawn_local(topics::retention_loop()).detach();
    if state.cfg.cleaner.enabled {
        shards::spawn_background(cleaner::run()).detach();
    }
    if let Err(e) = state.txns.recover().await {
        tracing::error!(error = %e, "cannot recover the transaction coordinator's state");
        std::process::exit(1);
    }
    shards::spawn_local(group::expiry_loop()).detach();
    shards::spawn_local(replication::leader::expiry_loop()).detach();
    if let (0, Some(secs)) = (state.shard.id, state.cfg.leader_rebalance_secs) {
        shards::spawn_local(replication::election::rebalance_loop(std::time::Duration::from_secs(secs.max(1)))).detach();
    }
    shards::spawn_local(txn::timeout_loop()).detach();
    state.serving.set(true);
    conn::serve(stop).await;
    state.serving.set(false);
    // Shutdown: write what is queued and fsync every owned log.
    let logs: Vec<Rc<Partition>> = state.partitions.borrow().values().cloned().collect();
    for p in logs {
        if let Err(e) = p.log.close().await {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
    }
    state.groups.close().await;
    state.txns.close().await;
    tracing::info!(shard = state.shard.id, "shard stopped");
}
