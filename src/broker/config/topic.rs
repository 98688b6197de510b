//! Topic configs with Kafka's names, types, defaults and broker synonyms (Kafka 3.9's `LogConfig`):
//! every one a Kafka client or tool may send is accepted and described. Those with meaning on one
//! node are honoured; the rest (tiered storage, replication throttles, file-deletion delays) are
//! accepted without effect, as listed in `docs/operations.md`.

use super::{Resolved, Source};
use crate::storage::{Cleanup, FlushPolicy, LogConfig};
use std::collections::BTreeMap;

/// A config value's type (DescribeConfigs v3 `config_type`) and the values it accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// A long at least `min`.
    Long {
        min: i64,
    },
    /// An int within [min, max].
    Int {
        min: i64,
        max: i64,
    },
    Double {
        min: f64,
        max: f64,
    },
    /// One of these strings (case-sensitive, as Kafka).
    Choice(&'static [&'static str]),
    /// A comma-separated list of these strings (empty: any).
    List(&'static [&'static str]),
    Text,
}

impl Kind {
    /// DescribeConfigs v3's type code.
    pub fn code(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::Choice(_) | Kind::Text => 2,
            Kind::Int { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::List(_) => 7,
        }
    }

    /// Checks `value`; the error is the message for the client.
    pub fn check(self, name: &str, value: &str) -> Result<(), String> {
        // The catalog keeps `key=value;…` lines: these characters would break them.
        if value.contains([';', '\t', '\n', '\r']) {
            return Err(format!("{name}: value {value:?} holds a character that is not allowed"));
        }
        let bad = |why: String| Err(format!("Invalid value {value} for configuration {name}: {why}"));
        match self {
            Kind::Bool if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") => Ok(()),
            Kind::Bool => bad("expected true or false".into()),
            Kind::Long { min } => match value.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                Ok(_) => bad(format!("value must be at least {min}")),
                Err(_) => bad("not a number".into()),
            },
            Kind::Int { min, max } => match value.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                Ok(_) => bad(format!("value must be in [{min}, {max}]")),
                Err(_) => bad("not a number".into()),
            },
            Kind::Double { min, max } => match value.trim().parse::<f64>() {
                Ok(x) if (min..=max).contains(&x) => Ok(()),
                Ok(_) => bad(format!("value must be in [{min}, {max}]")),
                Err(_) => bad("not a number".into()),
            },
            Kind::Choice(options) if options.contains(&value) => Ok(()),
            Kind::Choice(options) => bad(format!("String must be one of: {}", options.join(", "))),
            Kind::List(options) => match list(value).find(|v| !options.is_empty() && !options.contains(v)) {
                None => Ok(()),
                Some(v) => bad(format!("{v} is not one of {}", options.join(", "))),
            },
            Kind::Text => Ok(()),
        }
    }
}

/// The items of a list value.
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// What Weir does with a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Honoured,
    /// Accepted and described; has no meaning on one node without tiered storage.
    None,
}

pub struct TopicConfig {
    pub name: &'static str,
    /// The broker config that sets its default (Kafka's synonym).
    pub broker: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub effect: Effect,
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";
const CODECS: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

macro_rules! config {
    ($name:literal, $broker:literal, $default:expr, $kind:expr, $effect:ident, $doc:literal) => {
        TopicConfig { name: $name, broker: $broker, default: $default, kind: $kind, effect: Effect::$effect, doc: $doc }
    };
}

/// Kafka 3.9's topic configs, in Kafka's order.
pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    config!(
        "cleanup.policy",
        "log.cleanup.policy",
        "delete",
        Kind::List(&["delete", "compact"]),
        Honoured,
        "delete: old segments go by retention; compact: the latest record of each key stays"
    ),
    config!(
        "compression.type",
        "compression.type",
        "producer",
        Kind::Choice(CODECS),
        Honoured,
        "producer keeps batches as produced; a codec recompresses every batch into it"
    ),
    config!(
        "compression.gzip.level",
        "compression.gzip.level",
        "-1",
        Kind::Int { min: -1, max: 9 },
        Honoured,
        "gzip level when recompressing (-1: the codec's default)"
    ),
    config!(
        "compression.lz4.level",
        "compression.lz4.level",
        "9",
        Kind::Int { min: 1, max: 17 },
        None,
        "lz4 level (Weir's lz4 has one level)"
    ),
    config!(
        "compression.zstd.level",
        "compression.zstd.level",
        "3",
        Kind::Int { min: -131072, max: 22 },
        None,
        "zstd level (Weir's zstd has one level)"
    ),
    config!(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        "86400000",
        Kind::Long { min: 0 },
        Honoured,
        "how long tombstones stay in compacted topics"
    ),
    config!("file.delete.delay.ms", "log.segment.delete.delay.ms", "60000", Kind::Long { min: 0 }, None, "Weir deletes segments at once"),
    config!(
        "flush.messages",
        "log.flush.interval.messages",
        LONG_MAX,
        Kind::Long { min: 1 },
        Honoured,
        "fsync after this many messages (1: every batch)"
    ),
    config!(
        "flush.ms",
        "log.flush.interval.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Honoured,
        "fsync at most this long after a write (0: every batch)"
    ),
    config!(
        "follower.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
        "",
        Kind::List(&[]),
        None,
        "replication throttling"
    ),
    config!(
        "index.interval.bytes",
        "log.index.interval.bytes",
        "4096",
        Kind::Int { min: 0, max: i32::MAX as i64 },
        Honoured,
        "bytes between offset index entries"
    ),
    config!(
        "leader.replication.throttled.replicas",
        "leader.replication.throttled.replicas",
        "",
        Kind::List(&[]),
        None,
        "replication throttling"
    ),
    config!("local.retention.bytes", "log.local.retention.bytes", "-2", Kind::Long { min: -2 }, None, "tiered storage"),
    config!("local.retention.ms", "log.local.retention.ms", "-2", Kind::Long { min: -2 }, None, "tiered storage"),
    config!(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        LONG_MAX,
        Kind::Long { min: 1 },
        Honoured,
        "longest a record stays uncompacted"
    ),
    config!(
        "max.message.bytes",
        "message.max.bytes",
        "1048588",
        Kind::Int { min: 0, max: i32::MAX as i64 },
        Honoured,
        "largest record batch"
    ),
    config!(
        "message.downconversion.enable",
        "log.message.downconversion.enable",
        "true",
        Kind::Bool,
        None,
        "Weir never down-converts (Fetch v0-3 are refused)"
    ),
    config!(
        "message.format.version",
        "log.message.format.version",
        "3.0-IV1",
        Kind::Text,
        None,
        "deprecated: batches are always format v2"
    ),
    config!(
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Honoured,
        "CreateTime batches further in the future are refused"
    ),
    config!(
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Honoured,
        "CreateTime batches further in the past are refused"
    ),
    config!(
        "message.timestamp.difference.max.ms",
        "log.message.timestamp.difference.max.ms",
        LONG_MAX,
        Kind::Long { min: 0 },
        Honoured,
        "deprecated: bounds both directions"
    ),
    config!(
        "message.timestamp.type",
        "log.message.timestamp.type",
        "CreateTime",
        Kind::Choice(&["CreateTime", "LogAppendTime"]),
        Honoured,
        "LogAppendTime: the broker stamps each batch"
    ),
    config!(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        Kind::Double { min: 0.0, max: 1.0 },
        Honoured,
        "when a log is worth compacting"
    ),
    config!(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        "0",
        Kind::Long { min: 0 },
        Honoured,
        "shortest a record stays uncompacted"
    ),
    config!(
        "min.insync.replicas",
        "min.insync.replicas",
        "1",
        Kind::Int { min: 1, max: i32::MAX as i64 },
        Honoured,
        "in-sync replicas acks=all needs (and the high watermark moves with)"
    ),
    config!("preallocate", "log.preallocate", "false", Kind::Bool, None, "Weir always writes zeros ahead of the tail"),
    config!("remote.log.copy.disable", "remote.log.copy.disable", "false", Kind::Bool, None, "tiered storage"),
    config!("remote.log.delete.on.disable", "remote.log.delete.on.disable", "false", Kind::Bool, None, "tiered storage"),
    config!("remote.storage.enable", "remote.storage.enable", "false", Kind::Bool, None, "tiered storage (true is refused)"),
    config!(
        "retention.bytes",
        "log.retention.bytes",
        "-1",
        Kind::Long { min: -1 },
        Honoured,
        "size above which the oldest segments go (-1: unlimited)"
    ),
    config!("retention.ms", "log.retention.ms", "604800000", Kind::Long { min: -1 }, Honoured, "age after which segments go (-1: forever)"),
    config!("segment.bytes", "log.segment.bytes", "1073741824", Kind::Int { min: 4096, max: i32::MAX as i64 }, Honoured, "segment size"),
    config!(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        "10485760",
        Kind::Int { min: 4, max: i32::MAX as i64 },
        None,
        "Weir's indexes grow as needed"
    ),
    config!("segment.jitter.ms", "log.roll.jitter.ms", "0", Kind::Long { min: 0 }, None, "no jitter on segment rolls"),
    config!("segment.ms", "log.roll.ms", "604800000", Kind::Long { min: 1 }, Honoured, "age at which the active segment rolls"),
    config!(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        "false",
        Kind::Bool,
        Honoured,
        "lead from an out-of-sync replica rather than none (loses what only the others held)"
    ),
];

pub fn find(name: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

/// The topic config whose broker synonym is `broker_name`.
pub fn by_broker_name(broker_name: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|c| c.broker == broker_name)
}

/// Checks a topic config; the error is the message for the client (INVALID_CONFIG).
pub fn check(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = find(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    def.kind.check(name, value)?;
    match name {
        "remote.storage.enable" if value.eq_ignore_ascii_case("true") => {
            Err("Tiered Storage functionality is disabled in the broker".into())
        }
        _ => Ok(()),
    }
}

/// Every topic config's value for a topic: its own override, else the broker's default.
pub fn resolve(overrides: &BTreeMap<String, String>, defaults: &BTreeMap<&'static str, Resolved>) -> BTreeMap<&'static str, Resolved> {
    TOPIC_CONFIGS
        .iter()
        .map(|c| {
            let r = match overrides.get(c.name) {
                Some(v) => Resolved { value: v.clone(), source: Source::Topic },
                None => defaults.get(c.name).cloned().unwrap_or(Resolved { value: c.default.to_string(), source: Source::Default }),
            };
            (c.name, r)
        })
        .collect()
}

fn num(values: &BTreeMap<&'static str, Resolved>, name: &str) -> Option<i64> {
    values.get(name)?.value.trim().parse().ok()
}

/// The log's settings from resolved values (the cache share is set by the caller).
pub fn log_config(values: &BTreeMap<&'static str, Resolved>) -> LogConfig {
    let d = LogConfig::default();
    let at_least = |name: &str, min: i64| num(values, name).map(|v| v.max(min));
    let flush_messages = at_least("flush.messages", 1).map(|v| v as u64).filter(|v| *v < i64::MAX as u64);
    let flush_ms = at_least("flush.ms", 0).map(|v| v as u64).filter(|v| *v < i64::MAX as u64);
    let cleanup = cleanup(values);
    let segment_ms = at_least("segment.ms", 1).map_or(d.segment_ms, |v| v as u64);
    LogConfig {
        segment_bytes: at_least("segment.bytes", 4096).map_or(d.segment_bytes, |v| v.min(i64::from(u32::MAX)) as u64),
        // The active segment is never cleaned: a compacted log rolls by max.compaction.lag.ms too, as Kafka's does.
        segment_ms: if cleanup.compact { segment_ms.min(cleanup.max_compaction_lag_ms as u64) } else { segment_ms },
        retention_bytes: num(values, "retention.bytes").unwrap_or(d.retention_bytes),
        retention_ms: num(values, "retention.ms").unwrap_or(d.retention_ms),
        flush: LogConfig::flush_from(flush_messages, flush_ms),
        index_interval_bytes: at_least("index.interval.bytes", 0).map_or(d.index_interval_bytes, |v| v.min(i64::from(u32::MAX)) as u32),
        max_message_bytes: at_least("max.message.bytes", 0).map_or(d.max_message_bytes, |v| v as usize),
        producer_id_expiration_ms: d.producer_id_expiration_ms,
        cleanup,
    }
}

/// `cleanup.policy` and the cleaner's settings. An empty policy list is Kafka's `none`: neither
/// retention nor the cleaner removes anything.
fn cleanup(values: &BTreeMap<&'static str, Resolved>) -> Cleanup {
    let d = Cleanup::default();
    let policy: Vec<&str> = values.get("cleanup.policy").map(|r| list(&r.value).collect()).unwrap_or_else(|| vec!["delete"]);
    Cleanup {
        delete: policy.contains(&"delete"),
        compact: policy.contains(&"compact"),
        min_cleanable_dirty_ratio: values
            .get("min.cleanable.dirty.ratio")
            .and_then(|r| r.value.trim().parse().ok())
            .unwrap_or(d.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: num(values, "min.compaction.lag.ms").unwrap_or(d.min_compaction_lag_ms).max(0),
        max_compaction_lag_ms: num(values, "max.compaction.lag.ms").unwrap_or(d.max_compaction_lag_ms).max(1),
        delete_retention_ms: num(values, "delete.retention.ms").unwrap_or(d.delete_retention_ms).max(0),
    }
}

/// The topic configs a `LogConfig` stands for (the broker's flags, as topic defaults).
pub fn from_log_config(cfg: &LogConfig) -> Vec<(&'static str, String)> {
    let (messages, ms) = match cfg.flush {
        FlushPolicy::EveryBatch => ("1".to_string(), LONG_MAX.to_string()),
        FlushPolicy::Messages(n) => (n.to_string(), LONG_MAX.to_string()),
        FlushPolicy::Interval(ms) => (LONG_MAX.to_string(), ms.to_string()),
        FlushPolicy::Never => (LONG_MAX.to_string(), LONG_MAX.to_string()),
    };
    let policy: Vec<&str> =
        [("compact", cfg.cleanup.compact), ("delete", cfg.cleanup.delete)].iter().filter(|p| p.1).map(|p| p.0).collect();
    vec![
        ("cleanup.policy", policy.join(",")),
        ("segment.bytes", cfg.segment_bytes.to_string()),
        ("segment.ms", cfg.segment_ms.to_string()),
        ("retention.bytes", cfg.retention_bytes.to_string()),
        ("retention.ms", cfg.retention_ms.to_string()),
        ("flush.messages", messages),
        ("flush.ms", ms),
        ("index.interval.bytes", cfg.index_interval_bytes.to_string()),
        ("max.message.bytes", cfg.max_message_bytes.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_names_are_accepted_and_checked() {
        for c in TOPIC_CONFIGS {
            assert!(check(c.name, c.default).is_ok(), "{} accepts its own default", c.name);
        }
        assert!(check("compression.type", "zstd").is_ok());
        assert!(check("compression.type", "brotli").is_err());
        assert!(check("message.format.version", "2.8").is_ok(), "deprecated, accepted");
        assert!(check("retention.ms", "-2").is_err());
        assert!(check("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(check("cleanup.policy", "compact,delete").is_ok());
        assert!(check("cleanup.policy", "compact,shred").is_err());
        assert!(check("retention.ms", "1;x=2").is_err(), "would break the catalog");
        assert!(check("no.such.config", "1").is_err());
    }

    #[test]
    fn resolution_takes_the_override_then_the_broker_default() {
        let overrides = [("retention.ms".to_string(), "1000".to_string())].into_iter().collect();
        let defaults = [("segment.bytes", Resolved { value: "8192".into(), source: Source::StaticBroker })].into_iter().collect();
        let values = resolve(&overrides, &defaults);
        assert_eq!(values["retention.ms"], Resolved { value: "1000".into(), source: Source::Topic });
        assert_eq!(values["segment.bytes"].source, Source::StaticBroker);
        assert_eq!(values["flush.ms"].source, Source::Default);
        let cfg = log_config(&values);
        assert_eq!((cfg.retention_ms, cfg.segment_bytes, cfg.flush), (1000, 8192, FlushPolicy::Never));
        let back: BTreeMap<_, _> = from_log_config(&cfg).into_iter().collect();
        assert_eq!(back["flush.messages"], LONG_MAX);
    }
}
