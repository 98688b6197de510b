//! Configs as Kafka names them: topic configs (`topic`), broker configs (`broker`), and the
//! DescribeConfigs / AlterConfigs / IncrementalAlterConfigs handlers (`handlers`).
//!
//! A topic config's value comes from, in order: the topic's own override (kept in the catalog), a
//! dynamic broker config (altered at runtime, kept in `<data-dir>/broker.meta`), the broker's flags,
//! Kafka's default. Kafka's `config_source` codes say which.

pub mod broker;
mod handlers;
pub mod topic;

pub use handlers::{alter_configs, created_topic_configs, describe_configs, incremental_alter_configs};

use super::catalog::TopicMeta;
use super::{BrokerConfig, ShardState};
use crate::protocol::compression::Codec;
use crate::storage::{FlushPolicy, LogConfig};
use std::collections::BTreeMap;

/// Kafka's `ConfigSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
    BrokerLogger = 6,
}

/// A config's effective value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub value: String,
    pub source: Source,
}

/// The defaults every topic inherits: Kafka's, then the broker's flags, then dynamic broker configs.
pub fn topic_defaults(cfg: &BrokerConfig, dynamic: &BTreeMap<String, String>) -> BTreeMap<&'static str, Resolved> {
    let kafka: BTreeMap<&str, String> = topic::from_log_config(&LogConfig::default()).into_iter().collect();
    let mut out: BTreeMap<&'static str, Resolved> =
        topic::TOPIC_CONFIGS.iter().map(|c| (c.name, Resolved { value: c.default.to_string(), source: Source::Default })).collect();
    for (name, value) in topic::from_log_config(&cfg.log) {
        if kafka.get(name) != Some(&value) {
            out.insert(name, Resolved { value, source: Source::StaticBroker });
        }
    }
    for (broker_name, value) in dynamic {
        if let Some(c) = topic::by_broker_name(broker_name) {
            out.insert(c.name, Resolved { value: value.clone(), source: Source::DynamicBroker });
        }
    }
    out
}

/// The defaults topics inherit on this shard now (compute once, then resolve each topic against it).
pub fn shard_topic_defaults(st: &ShardState) -> BTreeMap<&'static str, Resolved> {
    topic_defaults(&st.cfg, &st.dynamic_broker.borrow())
}

/// What the produce path does to a partition's batches, from its topic's configs: read per
/// request, so a small copy, refreshed when configs change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceRules {
    /// `compression.type` other than `producer`: every batch is stored in this codec.
    pub recompress: Option<Codec>,
    pub gzip_level: i32,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// How far before and after the broker's clock a CreateTime batch may be.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` holds `compact`: every record needs a key.
    pub compacted: bool,
    /// `min.insync.replicas`: the ISR acks=all needs, and the high watermark moves with.
    pub min_insync_replicas: usize,
}

impl Default for ProduceRules {
    fn default() -> Self {
        ProduceRules {
            recompress: None,
            gzip_level: -1,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            compacted: false,
            min_insync_replicas: 1,
        }
    }
}

/// Whether `topic`'s partitions fsync every batch (`flush.messages=1`, its own or the broker's):
/// what it acknowledges survives a power loss. `__consumer_offsets` follows the broker's setting,
/// as the offsets store does.
pub fn flushes_every_batch(st: &ShardState, topic: &str) -> bool {
    match st.topic(topic) {
        Some(meta) => partition_settings(&st.cfg, &shard_topic_defaults(st), &meta).0.flush == FlushPolicy::EveryBatch,
        None => st.cfg.log.flush == FlushPolicy::EveryBatch,
    }
}

/// Whether `meta`'s `cleanup.policy` holds `delete`: only then may DeleteRecords move its log start
/// (Kafka's `Partition.deleteRecordsOnLeader`).
pub fn deletes_records(st: &ShardState, meta: &TopicMeta) -> bool {
    let values = topic::resolve(&meta.configs, &shard_topic_defaults(st));
    values.get("cleanup.policy").is_none_or(|r| topic::list(&r.value).any(|p| p == "delete"))
}

/// The log's settings and the produce rules of a topic, given the broker's config and the shard's
/// topic defaults.
pub fn partition_settings(
    broker: &crate::broker::BrokerConfig,
    defaults: &BTreeMap<&'static str, Resolved>,
    meta: &TopicMeta,
) -> (LogConfig, ProduceRules) {
    let values = topic::resolve(&meta.configs, defaults);
    let get = |name: &str| values.get(name).map_or("", |r| r.value.as_str());
    let long = |name: &str| get(name).trim().parse::<i64>().unwrap_or(i64::MAX);
    let difference = long("message.timestamp.difference.max.ms");
    let rules = ProduceRules {
        recompress: match get("compression.type") {
            "producer" => None,
            other => other.parse().ok(),
        },
        gzip_level: get("compression.gzip.level").trim().parse().unwrap_or(-1),
        log_append_time: get("message.timestamp.type") == "LogAppendTime",
        timestamp_before_max_ms: long("message.timestamp.before.max.ms").min(difference),
        timestamp_after_max_ms: long("message.timestamp.after.max.ms").min(difference),
        compacted: topic::list(get("cleanup.policy")).any(|p| p == "compact"),
        min_insync_replicas: get("min.insync.replicas").trim().parse().unwrap_or(1),
    };
    // Broker-wide, not a topic config in Kafka either.
    let log = LogConfig { producer_id_expiration_ms: broker.log.producer_id_expiration_ms, ..topic::log_config(&values) };
    (log, rules)
}
