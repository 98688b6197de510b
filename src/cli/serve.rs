//! `weir serve`: flags, `WEIR_*` environment variables and a TOML-ish `--config` file (flags win).

use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weir::broker::{self, BrokerConfig};
use weir::storage::LogConfig;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of shard 0; shard i listens on port + i.
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<String>,
    /// Host name advertised to clients (default: the listen host).
    #[arg(long, env = "WEIR_ADVERTISED_HOST")]
    advertised_host: Option<String>,
    /// Where partitions and metadata live: one directory, or one per shard separated by commas
    /// (Kafka's log.dirs: shard N keeps its replicas in the Nth; the first also holds the
    /// broker's own files).
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<String>,
    /// Number of shards (default: number of cores).
    #[arg(long, env = "WEIR_SHARDS")]
    shards: Option<usize>,
    /// One port and one advertised broker; shards forward to each other.
    #[arg(long, env = "WEIR_SINGLE_PORT")]
    single_port: bool,
    /// Let the kernel move shards between cores instead of pinning shard N to core N: for a host
    /// whose cores other processes also keep busy (a pinned shard then gets a share of its core).
    #[arg(long, env = "WEIR_FLOATING_SHARDS")]
    floating_shards: bool,
    /// Run a shard that uses little of its core at real-time priority (SCHED_FIFO 1), so that its
    /// wake-ups preempt other processes on its core; it loses it within 100 ms of using more. For a
    /// broker whose clients run on other hosts: clients on its own cores lose throughput to it.
    /// Needs CAP_SYS_NICE, and no cgroup CPU limit.
    #[arg(long, env = "WEIR_REALTIME_SHARDS")]
    realtime_shards: bool,
    /// Partitions of auto-created topics.
    #[arg(long, env = "WEIR_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    /// Disable auto-creation of topics.
    #[arg(long, env = "WEIR_NO_AUTO_CREATE")]
    no_auto_create: bool,
    /// Default flush.messages for topics (1 = fsync every batch).
    #[arg(long, env = "WEIR_FLUSH_MESSAGES")]
    flush_messages: Option<u64>,
    /// Default flush.ms for topics.
    #[arg(long, env = "WEIR_FLUSH_MS")]
    flush_ms: Option<u64>,
    /// Default segment.bytes.
    #[arg(long, env = "WEIR_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Default retention.ms (-1: forever).
    #[arg(long, env = "WEIR_RETENTION_MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Default retention.bytes (-1: unlimited).
    #[arg(long, env = "WEIR_RETENTION_BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Largest request frame accepted (socket.request.max.bytes).
    #[arg(long, env = "WEIR_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Topics created by naming them (Metadata, Produce), a second at most (auto.create.topics.rate;
    /// default 100).
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS_RATE")]
    auto_create_topics_rate: Option<u32>,
    /// Partitions admitted over all topics (max.partitions; default 100000).
    #[arg(long, env = "WEIR_MAX_PARTITIONS")]
    max_partitions: Option<usize>,
    /// Open connections admitted, in all (max.connections; default 10000).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections admitted from one client address (max.connections.per.ip).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Request bytes in flight, over all connections (queued.max.request.bytes; default 512 MiB;
    /// -1: unbounded). A connection whose next request does not fit waits before reading it.
    #[arg(long, env = "WEIR_QUEUED_MAX_REQUEST_BYTES", allow_negative_numbers = true)]
    queued_max_request_bytes: Option<i64>,
    /// A connection idle this long, in ms, is closed (connections.max.idle.ms; default 600000).
    #[arg(long, env = "WEIR_CONNECTIONS_MAX_IDLE_MS")]
    connections_max_idle_ms: Option<u64>,
    /// Memory for recent batches over all shards (log.cache.max.bytes): bytes, or a share of the
    /// machine's memory or the cgroup's limit such as 50% (the default); less when memory is short.
    #[arg(long, env = "WEIR_LOG_CACHE_MAX_BYTES")]
    log_cache_max_bytes: Option<broker::memory::CacheSize>,
    /// Committed offsets of a group with no members are dropped after this long without a commit
    /// (offsets.retention.minutes).
    #[arg(long, env = "WEIR_OFFSETS_RETENTION_MINUTES")]
    offsets_retention_minutes: Option<u64>,
    /// Incremental fetch sessions kept per shard (max.incremental.fetch.session.cache.slots; 0: none).
    #[arg(long, env = "WEIR_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS")]
    max_incremental_fetch_session_cache_slots: Option<usize>,
    /// Shortest and longest session timeout a group member may ask for, in ms.
    #[arg(long, env = "WEIR_GROUP_MIN_SESSION_TIMEOUT_MS")]
    group_min_session_timeout_ms: Option<i32>,
    #[arg(long, env = "WEIR_GROUP_MAX_SESSION_TIMEOUT_MS")]
    group_max_session_timeout_ms: Option<i32>,
    /// How long the first rebalance of an empty group waits for more members, in ms
    /// (group.initial.rebalance.delay.ms; default 3000).
    #[arg(long, env = "WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// Memory for group members' protocol metadata and assignments, over all shards
    /// (group.metadata.max.bytes; default 256 MiB; -1: unbounded). A join or assignment past it is
    /// refused.
    #[arg(long, env = "WEIR_GROUP_METADATA_MAX_BYTES", allow_negative_numbers = true)]
    group_metadata_max_bytes: Option<i64>,
    /// A transactional id with no transaction for this long, in ms, is forgotten
    /// (transactional.id.expiration.ms; default 604800000).
    #[arg(long, env = "WEIR_TRANSACTIONAL_ID_EXPIRATION_MS")]
    transactional_id_expiration_ms: Option<u64>,
    /// How often retention (and producer expiry) runs, in ms (log.retention.check.interval.ms;
    /// default 30000).
    #[arg(long, env = "WEIR_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// An idempotent producer whose last batch is this old, in ms, is forgotten
    /// (producer.id.expiration.ms; default 86400000).
    #[arg(long, env = "WEIR_PRODUCER_ID_EXPIRATION_MS")]
    producer_id_expiration_ms: Option<u64>,
    /// Default cleanup.policy: delete, compact, or compact,delete.
    #[arg(long, env = "WEIR_CLEANUP_POLICY")]
    cleanup_policy: Option<String>,
    /// Do not run the log cleaner: compacted topics keep every record (log.cleaner.enable=false).
    #[arg(long, env = "WEIR_NO_LOG_CLEANER")]
    no_log_cleaner: bool,
    /// How long a shard's cleaner with nothing due sleeps, in ms (log.cleaner.backoff.ms; default 15000).
    #[arg(long, env = "WEIR_LOG_CLEANER_BACKOFF_MS")]
    log_cleaner_backoff_ms: Option<u64>,
    /// Memory for the cleaners' key maps, over all shards (log.cleaner.dedupe.buffer.size; default 134217728).
    #[arg(long, env = "WEIR_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    log_cleaner_dedupe_buffer_size: Option<u64>,
    /// The cleaners' reads and writes, bytes a second over all shards
    /// (log.cleaner.io.max.bytes.per.second; default 100000000, Kafka's unlimited is
    /// 1.7976931348623157E308).
    #[arg(long, env = "WEIR_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND")]
    log_cleaner_io_max_bytes_per_second: Option<f64>,
    /// Replicas of a topic created without saying, auto-created ones included
    /// (default.replication.factor; default 1; at most the shards).
    #[arg(long, env = "WEIR_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<u16>,
    /// A follower that has not caught up for this long leaves the ISR, in ms
    /// (replica.lag.time.max.ms; default 30000).
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// Never move leadership back to preferred replicas by itself (auto.leader.rebalance.enable=false).
    #[arg(long, env = "WEIR_NO_AUTO_LEADER_REBALANCE")]
    no_auto_leader_rebalance: bool,
    /// How often leadership moves back to preferred replicas that are in sync, in seconds
    /// (leader.imbalance.check.interval.seconds; default 300).
    #[arg(long, env = "WEIR_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS")]
    leader_imbalance_check_interval_seconds: Option<u64>,
    /// Address of the metrics listener (Prometheus /metrics, /health/live, /health/ready and a
    /// dashboard at /); default: the listen host, port 9644; `off` for none.
    #[arg(long, env = "WEIR_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Config file: `key = value` lines with the flag names (e.g. `data-dir = "/var/lib/weir"`).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

/// Reads `key = value` lines (TOML's flat subset); values may be quoted.
fn read_config(path: &PathBuf) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('[') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("{}:{}: expected key = value", path.display(), n + 1))?;
        out.push((k.trim().replace('_', "-"), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

/// Where the metrics listener binds, if anywhere, and whether the operator chose it.
struct MetricsAddr {
    addr: Option<String>,
    chosen: bool,
}

/// The metrics listener's default port (Redpanda's admin port, where it serves its metrics).
const METRICS_PORT: u16 = 9644;

/// A byte bound from its flag: −1 (any value below 1) means unbounded, as Kafka's.
fn byte_bound(v: i64) -> usize {
    usize::try_from(v).ok().filter(|&n| n > 0).unwrap_or(usize::MAX)
}

fn build_config(mut a: ServeArgs) -> Result<(BrokerConfig, MetricsAddr), String> {
    if let Some(path) = a.config.clone() {
        for (k, v) in read_config(&path)? {
            let bad = |e: &dyn std::fmt::Display| format!("{k} = {v}: {e}");
            let num = |v: &str| v.parse::<i64>().map_err(|e| bad(&e));
            // Counts and sizes: a negative value is an error, not a huge number.
            let count = |v: &str| v.parse::<u64>().map_err(|e| bad(&e));
            match k.as_str() {
                "listen" => a.listen = a.listen.or(Some(v.clone())),
                "metrics-listen" => a.metrics_listen = a.metrics_listen.or(Some(v.clone())),
                "advertised-host" => a.advertised_host = a.advertised_host.or(Some(v.clone())),
                "data-dir" => a.data_dir = a.data_dir.or(Some(v.clone())),
                "shards" => a.shards = a.shards.or(Some(count(&v)? as usize)),
                "single-port" => a.single_port |= v == "true",
                "floating-shards" => a.floating_shards |= v == "true",
                "realtime-shards" => a.realtime_shards |= v == "true",
                "num-partitions" => a.num_partitions = a.num_partitions.or(Some(num(&v)? as i32)),
                "no-auto-create" => a.no_auto_create |= v == "true",
                "flush-messages" => a.flush_messages = a.flush_messages.or(Some(count(&v)?)),
                "flush-ms" => a.flush_ms = a.flush_ms.or(Some(count(&v)?)),
                "segment-bytes" => a.segment_bytes = a.segment_bytes.or(Some(count(&v)?)),
                "retention-ms" => a.retention_ms = a.retention_ms.or(Some(num(&v)?)),
                "retention-bytes" => a.retention_bytes = a.retention_bytes.or(Some(num(&v)?)),
                "max-request-bytes" => a.max_request_bytes = a.max_request_bytes.or(Some(count(&v)? as usize)),
                "auto-create-topics-rate" => a.auto_create_topics_rate = a.auto_create_topics_rate.or(Some(count(&v)? as u32)),
                "max-partitions" => a.max_partitions = a.max_partitions.or(Some(count(&v)? as usize)),
                "max-connections" => a.max_connections = a.max_connections.or(Some(count(&v)? as usize)),
                "max-connections-per-ip" => a.max_connections_per_ip = a.max_connections_per_ip.or(Some(count(&v)? as usize)),
                "queued-max-request-bytes" => a.queued_max_request_bytes = a.queued_max_request_bytes.or(Some(num(&v)?)),
                "connections-max-idle-ms" => a.connections_max_idle_ms = a.connections_max_idle_ms.or(Some(count(&v)?)),
                "log-cache-max-bytes" => a.log_cache_max_bytes = a.log_cache_max_bytes.or(Some(v.parse().map_err(|e: String| bad(&e))?)),
                "offsets-retention-minutes" => a.offsets_retention_minutes = a.offsets_retention_minutes.or(Some(count(&v)?)),
                "max-incremental-fetch-session-cache-slots" => {
                    a.max_incremental_fetch_session_cache_slots = a.max_incremental_fetch_session_cache_slots.or(Some(count(&v)? as usize))
                }
                "group-min-session-timeout-ms" => {
                    a.group_min_session_timeout_ms = a.group_min_session_timeout_ms.or(Some(count(&v)? as i32))
                }
                "group-max-session-timeout-ms" => {
                    a.group_max_session_timeout_ms = a.group_max_session_timeout_ms.or(Some(count(&v)? as i32))
                }
                "group-initial-rebalance-delay-ms" => {
                    a.group_initial_rebalance_delay_ms = a.group_initial_rebalance_delay_ms.or(Some(count(&v)?))
                }
                "group-metadata-max-bytes" => a.group_metadata_max_bytes = a.group_metadata_max_bytes.or(Some(num(&v)?)),
                "transactional-id-expiration-ms" => {
                    a.transactional_id_expiration_ms = a.transactional_id_expiration_ms.or(Some(count(&v)?))
                }
                "retention-check-interval-ms" => a.retention_check_interval_ms = a.retention_check_interval_ms.or(Some(count(&v)?)),
                "producer-id-expiration-ms" => a.producer_id_expiration_ms = a.producer_id_expiration_ms.or(Some(count(&v)?)),
                "cleanup-policy" => a.cleanup_policy = a.cleanup_policy.or(Some(v.clone())),
                "no-log-cleaner" => a.no_log_cleaner |= v == "true",
                "log-cleaner-backoff-ms" => a.log_cleaner_backoff_ms = a.log_cleaner_backoff_ms.or(Some(count(&v)?)),
                "log-cleaner-dedupe-buffer-size" => {
                    a.log_cleaner_dedupe_buffer_size = a.log_cleaner_dedupe_buffer_size.or(Some(count(&v)?))
                }
                "log-cleaner-io-max-bytes-per-second" => {
                    let rate = v.parse::<f64>().map_err(|e| bad(&e))?;
                    a.log_cleaner_io_max_bytes_per_second = a.log_cleaner_io_max_bytes_per_second.or(Some(rate));
                }
                "default-replication-factor" => {
                    let r = v.parse::<u16>().map_err(|e| bad(&e))?;
                    a.default_replication_factor = a.default_replication_factor.or(Some(r));
                }
                "replica-lag-time-max-ms" => a.replica_lag_time_max_ms = a.replica_lag_time_max_ms.or(Some(count(&v)?)),
                "no-auto-leader-rebalance" => a.no_auto_leader_rebalance |= v == "true",
                "leader-imbalance-check-interval-seconds" => {
                    a.leader_imbalance_check_interval_seconds = a.leader_imbalance_check_interval_seconds.or(Some(count(&v)?))
                }
                _ => return Err(format!("{}: unknown setting {k}", path.display())),
            }
        }
    }
    let mut cfg = BrokerConfig::default();
    let listen = a.listen.unwrap_or_else(|| "127.0.0.1:9092".into());
    let (host, port) = listen.rsplit_once(':').ok_or_else(|| format!("--listen {listen}: expected HOST:PORT"))?;
    cfg.listen_host = host.to_string();
    cfg.port = port.parse().map_err(|_| format!("--listen {listen}: bad port"))?;
    cfg.advertised_host = a.advertised_host.unwrap_or_else(|| if host == "0.0.0.0" { "127.0.0.1".into() } else { host.to_string() });
    cfg.shards = a.shards.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let dirs: Vec<PathBuf> = a.data_dir.as_deref().unwrap_or("weir-data").split(',').filter(|d| !d.is_empty()).map(PathBuf::from).collect();
    if dirs.is_empty() || (dirs.len() > 1 && dirs.len() != cfg.shards) {
        return Err(format!("--data-dir takes one directory or one per shard ({}), not {}", cfg.shards, dirs.len()));
    }
    cfg.data_dir = dirs[0].clone();
    cfg.log_dirs = if dirs.len() > 1 { dirs } else { Vec::new() };
    cfg.single_port = a.single_port;
    cfg.floating_shards = a.floating_shards;
    cfg.realtime_shards = a.realtime_shards;
    if !cfg.single_port && usize::from(cfg.port) + cfg.shards > 65_536 {
        return Err("shard ports would pass 65535".into());
    }
    if let Some(r) = a.default_replication_factor {
        let brokers = cfg.nodes().len();
        if r == 0 || usize::from(r) > brokers {
            return Err(format!("--default-replication-factor must be 1..={brokers} (one replica per shard a client sees as a broker)"));
        }
        cfg.default_replication_factor = r;
    }
    cfg.auto_create_topics = !a.no_auto_create;
    if let Some(n) = a.num_partitions {
        cfg.num_partitions = n.max(1);
    }
    let mut log = LogConfig::default();
    if a.flush_messages == Some(0) {
        return Err("--flush-messages must be at least 1 (1 = fsync every batch)".into());
    }
    if a.flush_messages.is_some() || a.flush_ms.is_some() {
        log.flush = LogConfig::flush_from(a.flush_messages, a.flush_ms);
    }
    if let Some(v) = a.segment_bytes {
        log.segment_bytes = v.clamp(4096, u64::from(u32::MAX));
    }
    if let Some(v) = a.retention_ms {
        log.retention_ms = v;
    }
    if let Some(v) = a.retention_bytes {
        log.retention_bytes = v;
    }
    if let Some(v) = a.producer_id_expiration_ms {
        log.producer_id_expiration_ms = i64::try_from(v).unwrap_or(i64::MAX).max(1);
    }
    if let Some(policy) = &a.cleanup_policy {
        let items: Vec<&str> = policy.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if items.iter().any(|p| !["delete", "compact"].contains(p)) {
            return Err(format!("--cleanup-policy {policy}: expected delete, compact or compact,delete"));
        }
        log.cleanup.delete = items.contains(&"delete");
        log.cleanup.compact = items.contains(&"compact");
    }
    cfg.log = log;
    if let Some(v) = a.max_request_bytes {
        cfg.max_request_bytes = v;
    }
    if let Some(v) = a.auto_create_topics_rate {
        cfg.auto_create_topics_rate = v;
    }
    if let Some(v) = a.max_partitions {
        cfg.max_partitions = v;
    }
    if let Some(v) = a.max_connections {
        cfg.max_connections = v;
    }
    if let Some(v) = a.max_connections_per_ip {
        cfg.max_connections_per_ip = v;
    }
    if let Some(v) = a.queued_max_request_bytes {
        cfg.queued_max_request_bytes = byte_bound(v);
    }
    if let Some(v) = a.group_metadata_max_bytes {
        cfg.group_metadata_max_bytes = byte_bound(v);
    }
    if let Some(v) = a.connections_max_idle_ms {
        cfg.connections_max_idle_ms = v.max(1);
    }
    if let Some(v) = a.log_cache_max_bytes {
        cfg.log_cache_max = v;
    }
    if let Some(v) = a.max_incremental_fetch_session_cache_slots {
        cfg.fetch_session_slots = v;
    }
    if let Some(v) = a.offsets_retention_minutes {
        cfg.offsets_retention_minutes = v;
    }
    if let Some(v) = a.group_min_session_timeout_ms {
        cfg.group_min_session_timeout_ms = v;
    }
    if let Some(v) = a.group_max_session_timeout_ms {
        cfg.group_max_session_timeout_ms = v;
    }
    if let Some(v) = a.group_initial_rebalance_delay_ms {
        cfg.group_initial_rebalance_delay_ms = v;
    }
    if let Some(v) = a.transactional_id_expiration_ms {
        cfg.transactional_id_expiration_ms = v.max(1);
    }
    if let Some(v) = a.retention_check_interval_ms {
        cfg.retention_check_ms = v.max(1);
    }
    cfg.cleaner.enabled = !a.no_log_cleaner;
    if let Some(v) = a.log_cleaner_backoff_ms {
        cfg.cleaner.backoff_ms = v.max(1);
    }
    if let Some(v) = a.log_cleaner_dedupe_buffer_size {
        cfg.cleaner.dedupe_buffer_bytes = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = a.replica_lag_time_max_ms {
        cfg.replica_lag_time_max_ms = v.max(1);
    }
    cfg.leader_rebalance_secs =
        if a.no_auto_leader_rebalance { None } else { Some(a.leader_imbalance_check_interval_seconds.unwrap_or(300).max(1)) };
    if let Some(v) = a.log_cleaner_io_max_bytes_per_second {
        if v.is_nan() || v <= 0.0 {
            return Err("--log-cleaner-io-max-bytes-per-second must be positive".into());
        }
        cfg.cleaner.io_max_bytes_per_second = v;
    }
    if cfg.group_min_session_timeout_ms > cfg.group_max_session_timeout_ms {
        return Err("--group-min-session-timeout-ms is above --group-max-session-timeout-ms".into());
    }
    let metrics = match a.metrics_listen.as_deref() {
        Some("off" | "none" | "") => MetricsAddr { addr: None, chosen: true },
        Some(addr) if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => {
            MetricsAddr { addr: Some(addr.to_string()), chosen: true }
        }
        Some(addr) => return Err(format!("--metrics-listen {addr}: expected HOST:PORT or off")),
        None => MetricsAddr { addr: Some(format!("{}:{METRICS_PORT}", cfg.listen_host)), chosen: false },
    };
    Ok((cfg, metrics))
}

/// Binds the metrics listener. A port the operator chose must be free; the default one may be
/// taken (another broker on this machine): then this one runs without metrics, and says so.
fn bind_metrics(m: &MetricsAddr) -> Result<Option<weir::metrics::http::Listener>, String> {
    let Some(addr) = &m.addr else { return Ok(None) };
    match weir::metrics::http::Listener::bind(addr) {
        Ok(l) => {
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening");
            Ok(Some(l))
        }
        Err(e) if m.chosen => Err(format!("--metrics-listen {addr}: {e}")),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics listener not started (pass --metrics-listen to choose another address)");
            Ok(None)
        }
    }
}

/// glommio binds with SO_REUSEPORT, so a second broker on the same ports would silently share
/// them: refuse to start when something keeps accepting connections there. Also resolves the host,
/// which glommio would otherwise panic on.
///
/// A broker killed with SIGKILL leaves its listening sockets alive for a moment: io_uring tears a dead
/// process's ring down asynchronously, and the accept requests in flight hold the sockets until then.
/// Binding beside such a socket would hand some new connections to a listener nobody serves, so wait
/// for it to go (up to `PORT_WAIT`) before deciding the port is taken.
fn check_ports_free(cfg: &BrokerConfig) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    const PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    let ports = if cfg.single_port { 1 } else { cfg.shards };
    let deadline = std::time::Instant::now() + PORT_WAIT;
    for i in 0..ports {
        let addr = format!("{}:{}", cfg.listen_host, usize::from(cfg.port) + i);
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
            .next()
            .ok_or(format!("{addr} resolves to nothing"))?;
        let mut warned = false;
        while std::net::TcpStream::connect_timeout(&resolved, std::time::Duration::from_millis(200)).is_ok() {
            if std::time::Instant::now() >= deadline {
                return Err(format!("{addr} is already in use by a running server"));
            }
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(%addr, "port still accepts connections (a broker running, or one just killed); waiting");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Every segment keeps five files open: raise the soft limit on open files to the hard one, so
/// thousands of partitions do not hit a default of 1024.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-files limit");
            }
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: ServeArgs) -> i32 {
    weir::log_levels::init();
    let (cfg, metrics_addr) = match build_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir serve: {e}");
            return 2;
        }
    };
    for dir in std::iter::once(&cfg.data_dir).chain(&cfg.log_dirs) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("weir serve: {}: {e}", dir.display());
            return 1;
        }
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    tracing::info!(shards = cfg.shards, data_dir = %cfg.data_dir.display(), port = cfg.port, single_port = cfg.single_port, floating_shards = cfg.floating_shards, realtime_shards = cfg.realtime_shards, "starting weir");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher_stop = stop.clone();
    std::thread::spawn(move || loop {
        if STOP.load(Ordering::SeqCst) {
            watcher_stop.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    raise_open_files_limit();
    let cfg = Arc::new(cfg);
    let gather = Arc::new(broker::Gather::new(cfg.clone(), &STOP));
    match bind_metrics(&metrics_addr) {
        Ok(Some(listener)) => {
            if let Err(e) = listener.serve(gather.clone()) {
                eprintln!("weir serve: cannot start the metrics listener's threads: {e}");
                return 1;
            }
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("weir serve: {e}");
            return 1;
        }
    }
    if let Err(e) = check_ports_free(&cfg) {
        eprintln!("weir serve: {e}");
        return 1;
    }
    // A panic is a bug: say so and end the process, rather than limp on with a shard missing;
    // unless a request handler panicked, which closes that request's connection only.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if broker::panic_guard::caught_here() {
            tracing::error!(panic = %info, "a request handler panicked");
            return;
        }
        default_hook(info);
        tracing::error!("a shard panicked; stopping the broker");
        std::process::exit(101);
    }));
    match shards::run_local(broker::replication_at_start(&cfg.data_dir, cfg.shards)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(partitions = n, "replicated partitions lead in a new epoch"),
        Err(e) => {
            eprintln!("weir serve: {e}");
            return 1;
        }
    }
    let (shard_cfg, shard_stop) = (cfg.clone(), stop.clone());
    let cores = if cfg.floating_shards { shards::Cores::Floating } else { shards::Cores::Pinned };
    let shards = match shards::start(cfg.shards, cores, move |shard| broker::run_shard(shard, shard_cfg.clone(), shard_stop.clone())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir serve: cannot start shards: {e}");
            return 1;
        }
    };
    if cfg.realtime_shards {
        if let Err(e) = shards.prioritize_light(&STOP) {
            tracing::warn!(reason = %e, "--realtime-shards: shards keep ordinary priority");
        }
    }
    gather.started(shards.mailboxes());
    broker::memory::start(broker::memory::Caches::new(cfg.log_cache_max, cfg.shards), shards.mailboxes(), &STOP);
    shards.join();
    tracing::info!("stopped");
    0
}
