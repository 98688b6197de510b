//! Broker configs under Kafka's names: what DescribeConfigs(BROKER) answers, which can be altered
//! at runtime, and where those alterations live (`<data-dir>/broker.meta`).
//!
//! Every shard is advertised as a broker, but they are one process on one machine: a dynamic broker
//! config altered through any broker id (or the cluster default, the empty name) applies to all.
//! The dynamic ones are the topic defaults (`log.retention.ms`, `compression.type`, …): new values
//! reach every partition that has no override of its own at once. The file is `name=value` lines,
//! rewritten whole (temporary file, fsync, rename, directory fsync) by the controller shard.

use super::topic::{self, Kind};
use super::{shard_topic_defaults, Source};
use crate::broker::ShardState;
use std::collections::BTreeMap;
use std::path::Path;

const FILE: &str = "broker.meta";

/// One broker config as described.
pub struct Entry {
    pub name: String,
    pub value: String,
    pub read_only: bool,
    pub source: Source,
    pub kind: Kind,
    pub doc: &'static str,
}

/// The static broker configs (set by flags; changed by a restart).
fn statics(st: &ShardState, node: i32) -> Vec<(&'static str, String, Kind, &'static str)> {
    let cfg = &st.cfg;
    let port = cfg.nodes().into_iter().find(|(id, _)| *id == node).map_or(i32::from(cfg.port), |(_, p)| p);
    // Kafka's types, as DescribeConfigs shows them (its SHORT ones, the replication factors, as INT).
    let long = Kind::Long { min: i64::MIN };
    let int = Kind::Int { min: i64::from(i32::MIN), max: i64::from(i32::MAX) };
    let retention_hours = if cfg.log.retention_ms < 0 { -1 } else { cfg.log.retention_ms / 3_600_000 };
    vec![
        ("broker.id", node.to_string(), int, "this shard's broker id"),
        ("node.id", node.to_string(), int, "this shard's broker id"),
        ("listeners", format!("PLAINTEXT://{}:{port}", cfg.listen_host), Kind::Text, "--listen"),
        ("advertised.listeners", format!("PLAINTEXT://{}:{port}", cfg.advertised_host), Kind::Text, "--advertised-host"),
        ("log.dirs", log_dirs(cfg), Kind::Text, "--data-dir"),
        ("num.partitions", cfg.num_partitions.to_string(), int, "--num-partitions"),
        ("auto.create.topics.enable", cfg.auto_create_topics.to_string(), Kind::Bool, "--no-auto-create"),
        ("auto.create.topics.rate", cfg.auto_create_topics_rate.to_string(), int, "--auto-create-topics-rate"),
        ("default.replication.factor", cfg.default_replication_factor.to_string(), int, "--default-replication-factor"),
        ("replica.lag.time.max.ms", cfg.replica_lag_time_max_ms.to_string(), long, "--replica-lag-time-max-ms"),
        ("auto.leader.rebalance.enable", cfg.leader_rebalance_secs.is_some().to_string(), Kind::Bool, "--no-auto-leader-rebalance"),
        (
            "leader.imbalance.check.interval.seconds",
            cfg.leader_rebalance_secs.unwrap_or(300).to_string(),
            long,
            "--leader-imbalance-check-interval-seconds",
        ),
        ("offsets.topic.num.partitions", "16".into(), int, "offsets partitions (fixed)"),
        ("offsets.topic.replication.factor", "1".into(), int, "one replica"),
        ("transaction.state.log.replication.factor", "1".into(), int, "one replica"),
        ("transactional.id.expiration.ms", cfg.transactional_id_expiration_ms.to_string(), int, "--transactional-id-expiration-ms"),
        ("offsets.retention.minutes", cfg.offsets_retention_minutes.to_string(), int, "--offsets-retention-minutes"),
        ("group.min.session.timeout.ms", cfg.group_min_session_timeout_ms.to_string(), int, "--group-min-session-timeout-ms"),
        ("group.max.session.timeout.ms", cfg.group_max_session_timeout_ms.to_string(), int, "--group-max-session-timeout-ms"),
        ("group.initial.rebalance.delay.ms", cfg.group_initial_rebalance_delay_ms.to_string(), int, "--group-initial-rebalance-delay-ms"),
        ("group.metadata.max.bytes", bytes_or_unbounded(cfg.group_metadata_max_bytes), long, "--group-metadata-max-bytes"),
        ("socket.request.max.bytes", cfg.max_request_bytes.to_string(), int, "--max-request-bytes"),
        ("queued.max.request.bytes", bytes_or_unbounded(cfg.queued_max_request_bytes), long, "--queued-max-request-bytes"),
        ("max.partitions", cfg.max_partitions.to_string(), int, "--max-partitions"),
        ("max.connections", cfg.max_connections.to_string(), int, "--max-connections"),
        ("max.connections.per.ip", cfg.max_connections_per_ip.to_string(), int, "--max-connections-per-ip"),
        ("connections.max.idle.ms", cfg.connections_max_idle_ms.to_string(), long, "--connections-max-idle-ms"),
        ("log.retention.check.interval.ms", cfg.retention_check_ms.to_string(), long, "--retention-check-interval-ms"),
        ("log.retention.hours", retention_hours.to_string(), int, "log.retention.ms in hours"),
        ("producer.id.expiration.ms", cfg.log.producer_id_expiration_ms.to_string(), int, "--producer-id-expiration-ms"),
        ("log.roll.hours", (cfg.log.segment_ms / 3_600_000).to_string(), int, "log.roll.ms in hours"),
        ("log.cleaner.enable", cfg.cleaner.enabled.to_string(), Kind::Bool, "--no-log-cleaner"),
        ("log.cleaner.threads", cfg.shards.to_string(), int, "one cleaner per shard"),
        ("log.cleaner.backoff.ms", cfg.cleaner.backoff_ms.to_string(), long, "--log-cleaner-backoff-ms"),
        ("log.cleaner.dedupe.buffer.size", cfg.cleaner.dedupe_buffer_bytes.to_string(), long, "--log-cleaner-dedupe-buffer-size"),
        (
            "log.cleaner.io.max.bytes.per.second",
            format!("{:?}", cfg.cleaner.io_max_bytes_per_second),
            Kind::Double { min: 0.0, max: f64::MAX },
            "--log-cleaner-io-max-bytes-per-second",
        ),
    ]
}

/// `log.dirs` as Kafka shows it: the directories, comma-separated.
fn log_dirs(cfg: &crate::broker::BrokerConfig) -> String {
    let dirs: Vec<String> = if cfg.log_dirs.is_empty() {
        vec![cfg.data_dir.display().to_string()]
    } else {
        cfg.log_dirs.iter().map(|d| d.display().to_string()).collect()
    };
    dirs.join(",")
}

/// A byte bound as Kafka shows one (`queued.max.request.bytes`): -1 when unbounded.
fn bytes_or_unbounded(bytes: usize) -> String {
    if bytes == usize::MAX {
        "-1".into()
    } else {
        bytes.to_string()
    }
}

/// Every broker config of broker `node`: the static ones read-only, the topic defaults alterable.
pub fn describe(st: &ShardState, node: i32) -> Vec<Entry> {
    let mut out: Vec<Entry> = statics(st, node)
        .into_iter()
        .map(|(name, value, kind, doc)| Entry { name: name.into(), value, read_only: true, source: Source::StaticBroker, kind, doc })
        .collect();
    let defaults = shard_topic_defaults(st);
    for c in topic::TOPIC_CONFIGS {
        let r = &defaults[c.name];
        out.push(Entry { name: c.broker.into(), value: r.value.clone(), read_only: false, source: r.source, kind: c.kind, doc: c.doc });
    }
    out
}

/// Checks a dynamic broker config change; `Err((code, message))` for the response.
pub fn check(st: &ShardState, name: &str, value: Option<&str>) -> Result<(), (i16, String)> {
    use crate::broker::errors;
    match topic::by_broker_name(name) {
        Some(c) => match value {
            Some(v) => topic::check(c.name, v).map_err(|m| (errors::INVALID_CONFIG, m)),
            None => Ok(()),
        },
        None if statics(st, 0).iter().any(|(n, ..)| *n == name) => {
            Err((errors::INVALID_REQUEST, format!("Cannot update these configs dynamically: {name}")))
        }
        None => Err((errors::INVALID_CONFIG, format!("Unknown broker config name: {name}"))),
    }
}

pub fn load(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    match shards::fs::read(&dir.join(FILE)).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

pub async fn save(dir: &Path, configs: &BTreeMap<String, String>) -> std::io::Result<()> {
    let text: String = configs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    shards::fs::write_durably(&dir.join(FILE), text.into_bytes()).await
}
