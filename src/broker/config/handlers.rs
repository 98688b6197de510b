//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics and brokers.

use super::topic::{self, Effect, Kind};
use super::{broker, Source};
use crate::broker::catalog::TopicMeta;
use crate::broker::handlers::{repeated, respond, respond_legacy, text};
use crate::broker::{errors, state, topics, ShardState};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashSet};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// One described config, before it is put in a response.
struct Described {
    name: String,
    value: String,
    read_only: bool,
    source: Source,
    kind: Kind,
    doc: String,
    /// (name, value, source), most specific first.
    synonyms: Vec<(String, String, Source)>,
}

fn describe_topic(st: &ShardState, name: &str) -> Option<Vec<Described>> {
    Some(describe_topic_meta(st, &st.topic(name)?))
}

/// Every config of a topic as CreateTopics v5+ answers them: (name, value, read-only, source).
pub fn created_topic_configs(st: &ShardState, meta: &TopicMeta) -> Vec<(String, String, bool, i8)> {
    describe_topic_meta(st, meta).into_iter().map(|d| (d.name, d.value, d.read_only, d.source as i8)).collect()
}

fn describe_topic_meta(st: &ShardState, meta: &TopicMeta) -> Vec<Described> {
    let defaults = super::shard_topic_defaults(st);
    let values = topic::resolve(&meta.configs, &defaults);
    topic::TOPIC_CONFIGS
        .iter()
        .map(|c| {
            let r = &values[c.name];
            let mut synonyms = Vec::new();
            if let Some(v) = meta.configs.get(c.name) {
                synonyms.push((c.name.to_string(), v.clone(), Source::Topic));
            }
            let inherited = &defaults[c.name];
            if inherited.source != Source::Default {
                synonyms.push((c.broker.to_string(), inherited.value.clone(), inherited.source));
            }
            synonyms.push((c.broker.to_string(), c.default.to_string(), Source::Default));
            Described {
                name: c.name.into(),
                value: r.value.clone(),
                read_only: false,
                source: r.source,
                kind: c.kind,
                doc: match c.effect {
                    Effect::Honoured => c.doc.to_string(),
                    Effect::None => format!("{} (accepted; no effect in Weir)", c.doc),
                },
                synonyms,
            }
        })
        .collect()
}

/// Whether `node` is a broker id this process advertises.
fn is_node(st: &ShardState, node: i32) -> bool {
    st.cfg.nodes().iter().any(|(id, _)| *id == node)
}

fn describe_broker(st: &ShardState, name: &str) -> Result<Vec<Described>, String> {
    let node =
        if name.is_empty() { st.cfg.node_for(st.shard.id) } else { name.parse::<i32>().map_err(|_| format!("bad broker id {name}"))? };
    if !is_node(st, node) {
        return Err(format!("no broker {node}"));
    }
    // The cluster default (the empty name) holds only the dynamic configs, as Kafka's: those set
    // through any broker id apply to all here.
    let cluster_default = name.is_empty();
    Ok(broker::describe(st, node)
        .into_iter()
        .filter(|e| !cluster_default || e.source == Source::DynamicBroker)
        .map(|e| {
            let source = if cluster_default { Source::DynamicDefaultBroker } else { e.source };
            Described {
                synonyms: vec![(e.name.clone(), e.value.clone(), source)],
                name: e.name,
                value: e.value,
                read_only: e.read_only,
                source,
                kind: e.kind,
                doc: e.doc.to_string(),
            }
        })
        .collect())
}

/// Checks that a BROKER_LOGGER resource names a broker id of this process (Kafka's
/// `RuntimeLoggerManager.validateResourceNameIsNodeId`).
fn check_logger_node(st: &ShardState, name: &str) -> Result<(), String> {
    let node = name.parse::<i32>().map_err(|_| format!("Node id must be an integer, but it is: {name}"))?;
    if is_node(st, node) {
        Ok(())
    } else {
        Err(format!("Unexpected node id {node}"))
    }
}

fn describe_loggers(st: &ShardState, name: &str) -> Result<Vec<Described>, String> {
    if name.is_empty() {
        return Err("Broker id must not be empty".into());
    }
    check_logger_node(st, name)?;
    Ok(crate::log_levels::describe()
        .into_iter()
        .map(|(name, value)| Described {
            name,
            value,
            read_only: false,
            source: Source::BrokerLogger,
            kind: Kind::Text,
            doc: String::new(),
            synonyms: Vec::new(),
        })
        .collect())
}

pub fn describe_configs(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    // v0 is v1 without `include_synonyms`.
    let q: DescribeConfigsRequest = if version == 0 { protocol::decode_body_extended(req, &[0], 1)? } else { protocol::decode_body(req)? };
    let st = state();
    let mut r = DescribeConfigsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for res in q.resources {
        let mut out = describe_configs_response::DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        // Each resource once (Kafka refuses duplicates in AlterConfigs the same way): a 5-byte
        // entry repeated made every config, documented, once per repeat.
        if !seen.insert((res.resource_type, res.resource_name.to_string())) {
            out.error_code = errors::INVALID_REQUEST;
            out.error_message = Some(text("duplicate resource".to_string()));
            r.results.push(out);
            continue;
        }
        // Null or empty: every config, as Kafka does.
        let keys: Option<Vec<String>> = res.configuration_keys.filter(|k| !k.is_empty()).map(|k| k.iter().map(|s| s.to_string()).collect());
        let described = match res.resource_type {
            RESOURCE_TOPIC => {
                describe_topic(&st, &res.resource_name).ok_or((errors::UNKNOWN_TOPIC_OR_PARTITION, "no such topic".to_string()))
            }
            RESOURCE_BROKER => describe_broker(&st, &res.resource_name).map_err(|m| (errors::INVALID_REQUEST, m)),
            RESOURCE_BROKER_LOGGER => describe_loggers(&st, &res.resource_name).map_err(|m| (errors::INVALID_REQUEST, m)),
            _ => Err((errors::INVALID_REQUEST, "unsupported resource type".to_string())),
        };
        match described {
            Ok(configs) => {
                for d in configs.into_iter().filter(|d| keys.as_ref().is_none_or(|k| k.contains(&d.name))) {
                    let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                    c.name = text(d.name);
                    c.value = Some(text(d.value));
                    c.read_only = d.read_only;
                    c.config_source = d.source as i8;
                    if q.include_synonyms {
                        c.synonyms = d
                            .synonyms
                            .into_iter()
                            .map(|(name, value, source)| {
                                let mut s = describe_configs_response::DescribeConfigsSynonym::default();
                                s.name = text(name);
                                s.value = Some(text(value));
                                s.source = source as i8;
                                s
                            })
                            .collect();
                    }
                    c.config_type = d.kind.code();
                    // Null unless asked for, as Kafka (the codec's default is an empty string).
                    c.documentation = q.include_documentation.then(|| text(d.doc));
                    out.configs.push(c);
                }
            }
            Err((code, msg)) => {
                out.error_code = code;
                out.error_message = Some(text(msg));
            }
        }
        r.results.push(out);
    }
    if version == 0 {
        crate::broker::handlers::count_errors(req, &r);
        return respond_legacy(req, &protocol::legacy::describe_configs_v0_response(&r));
    }
    respond(req, &r)
}

/// One requested change to a config.
#[derive(Debug, Clone)]
enum Op {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

type Ops = Vec<(String, Op)>;

/// The new override for a list config after APPEND / SUBTRACT of `value`'s items, starting from the
/// current override or Kafka's default (as Kafka's `ConfigAdminManager`).
fn list_op(current: Option<&String>, default: &str, op: &Op) -> String {
    let base = current.map_or(default, |s| s.as_str());
    let mut items: Vec<&str> = topic::list(base).collect();
    // By sets: a list's length is the client's, and list against list once held the controller
    // shard for minutes.
    match op {
        Op::Append(v) => {
            let had: std::collections::HashSet<&str> = items.iter().copied().collect();
            items.extend(topic::list(v).filter(|x| !had.contains(x)));
        }
        Op::Subtract(v) => {
            let gone: std::collections::HashSet<&str> = topic::list(v).collect();
            items.retain(|x| !gone.contains(x));
        }
        _ => {}
    }
    items.join(",")
}

/// Applies `ops` to a map of overrides, validating each result with `check`.
fn apply_ops(
    configs: &mut BTreeMap<String, String>,
    ops: &Ops,
    default_of: impl Fn(&str) -> Option<(&'static str, Kind)>,
) -> Result<(), (i16, String)> {
    for (name, op) in ops {
        match op {
            Op::Set(v) => {
                configs.insert(name.clone(), v.clone());
            }
            Op::Delete => {
                configs.remove(name);
            }
            Op::Append(_) | Op::Subtract(_) => {
                let Some((default, Kind::List(_))) = default_of(name) else {
                    let verb = if matches!(op, Op::Append(_)) { "append" } else { "subtract" };
                    return Err((errors::INVALID_REQUEST, format!("Config value {verb} is not allowed for config key: {name}")));
                };
                let next = list_op(configs.get(name), default, op);
                configs.insert(name.clone(), next);
            }
        }
    }
    Ok(())
}

/// Applies `ops` to a topic's configs (after clearing them when `replace`), or only validates them.
async fn alter_topic(name: String, ops: Ops, replace: bool, validate_only: bool) -> (i16, Option<StrBytes>) {
    let outcome = topics::update(name, move |meta| {
        if replace {
            meta.configs.clear();
        }
        apply_ops(&mut meta.configs, &ops, |n| topic::find(n).map(|c| (c.default, c.kind)))?;
        if validate_only {
            topics::validate(&meta.name, meta.partitions, &meta.configs)?;
            return Err((errors::NONE, String::new()));
        }
        Ok(())
    })
    .await;
    match outcome {
        Ok(_) => (errors::NONE, None),
        Err((code, msg)) => (code, (code != errors::NONE).then(|| text(msg))),
    }
}

/// Applies `ops` to the dynamic broker configs, on the controller, then on every shard.
async fn alter_broker(name: String, ops: Ops, replace: bool, validate_only: bool) -> (i16, Option<StrBytes>) {
    let st = state();
    if !name.is_empty() && !name.parse::<i32>().is_ok_and(|id| is_node(&st, id)) {
        return (errors::INVALID_REQUEST, Some(text(format!("no broker {name}"))));
    }
    for (config, op) in &ops {
        let value = match op {
            Op::Set(v) => Some(v.as_str()),
            _ => None,
        };
        if let Err((code, msg)) = broker::check(&st, config, value) {
            return (code, Some(text(msg)));
        }
    }
    let outcome = topics::update_broker_configs(move |configs| {
        if replace {
            configs.clear();
        }
        apply_ops(configs, &ops, |n| topic::by_broker_name(n).map(|c| (c.default, c.kind)))?;
        for (k, v) in configs.iter() {
            if let Some(c) = topic::by_broker_name(k) {
                topic::check(c.name, v).map_err(|m| (errors::INVALID_CONFIG, m))?;
            }
        }
        if validate_only {
            return Err((errors::NONE, String::new()));
        }
        Ok(())
    })
    .await;
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, msg)) => (code, (code != errors::NONE).then(|| text(msg))),
    }
}

/// Log levels by logger (`crate::log_levels`): SET and DELETE only, as Kafka.
fn alter_loggers(name: &str, ops: Ops, validate_only: bool) -> (i16, Option<StrBytes>) {
    if let Err(m) = check_logger_node(&state(), name) {
        return (errors::INVALID_REQUEST, Some(text(m)));
    }
    let changes: Result<Vec<_>, String> = ops
        .into_iter()
        .map(|(logger, op)| match op {
            Op::Set(level) => Ok(crate::log_levels::Change::Set { logger, level }),
            Op::Delete => Ok(crate::log_levels::Change::Delete { logger }),
            Op::Append(_) => Err("APPEND operation is not allowed for the BROKER_LOGGER resource".to_string()),
            Op::Subtract(_) => Err("SUBTRACT operation is not allowed for the BROKER_LOGGER resource".to_string()),
        })
        .collect();
    let outcome = changes.map_err(|m| (errors::INVALID_REQUEST, m)).and_then(|c| crate::log_levels::alter(&c, validate_only));
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, m)) => (code, Some(text(m))),
    }
}

async fn alter(resource_type: i8, name: String, ops: Result<Ops, String>, replace: bool, validate_only: bool) -> (i16, Option<StrBytes>) {
    let ops = match ops {
        Ok(ops) => ops,
        Err(msg) => return (errors::INVALID_REQUEST, Some(text(msg))),
    };
    match resource_type {
        RESOURCE_TOPIC => alter_topic(name, ops, replace, validate_only).await,
        RESOURCE_BROKER => alter_broker(name, ops, replace, validate_only).await,
        RESOURCE_BROKER_LOGGER if !replace => alter_loggers(&name, ops, validate_only),
        _ => (
            errors::INVALID_REQUEST,
            Some(text("only topic and broker configs can be altered (broker loggers: with IncrementalAlterConfigs)")),
        ),
    }
}

/// One resource's changes, checked as Kafka's `ConfigAdminManager.preprocess` does: each config
/// once, and a value for every operation but DELETE. Items are (name, operation, value).
fn ops_of<'a>(configs: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>) -> Result<Ops, String> {
    let (mut ops, mut nulls, mut seen, mut twice) = (Ops::new(), Vec::new(), HashSet::new(), false);
    for (name, op, value) in configs {
        twice |= !seen.insert(name);
        let op = match (op, value) {
            (1, _) => Op::Delete,
            (0..=3, None) => {
                nulls.push(name);
                continue;
            }
            (0, Some(v)) => Op::Set(v.to_string()),
            (2, Some(v)) => Op::Append(v.to_string()),
            (3, Some(v)) => Op::Subtract(v.to_string()),
            (op, _) => return Err(format!("operation {op} on {name} is not valid")),
        };
        ops.push((name.to_string(), op));
    }
    if twice {
        return Err("Error due to duplicate config keys".into());
    }
    if !nulls.is_empty() {
        return Err(format!("Null value not supported for : {}", nulls.join(", ")));
    }
    Ok(ops)
}

const REPEATED_RESOURCE: &str = "Each resource must appear at most once.";

pub async fn incremental_alter_configs(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: IncrementalAlterConfigsRequest = protocol::decode_body(req)?;
    let twice = repeated(q.resources.iter().map(|r| (r.resource_type, r.resource_name.to_string())));
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in q.resources {
        let ops = if twice.contains(&(res.resource_type, res.resource_name.to_string())) {
            Err(REPEATED_RESOURCE.to_string())
        } else {
            ops_of(res.configs.iter().map(|c| (c.name.as_str(), c.config_operation, c.value.as_deref())))
        };
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = alter(res.resource_type, res.resource_name.to_string(), ops, false, q.validate_only).await;
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    respond(req, &r)
}

/// The legacy AlterConfigs: the given configs replace the resource's whole set.
pub async fn alter_configs(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: AlterConfigsRequest = protocol::decode_body(req)?;
    let twice = repeated(q.resources.iter().map(|r| (r.resource_type, r.resource_name.to_string())));
    let mut r = AlterConfigsResponse::default();
    for res in q.resources {
        let ops = if twice.contains(&(res.resource_type, res.resource_name.to_string())) {
            Err(REPEATED_RESOURCE.to_string())
        } else {
            ops_of(res.configs.iter().map(|c| (c.name.as_str(), 0, c.value.as_deref())))
        };
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = alter(res.resource_type, res.resource_name.to_string(), ops, true, q.validate_only).await;
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    respond(req, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_subtract_work_on_list_configs_only() {
        let mut configs = BTreeMap::new();
        let lists = |n: &str| topic::find(n).map(|c| (c.default, c.kind));
        let ops = vec![("leader.replication.throttled.replicas".to_string(), Op::Append("0:1,1:0".into()))];
        apply_ops(&mut configs, &ops, lists).unwrap();
        let ops = vec![("leader.replication.throttled.replicas".to_string(), Op::Append("1:0,2:2".into()))];
        apply_ops(&mut configs, &ops, lists).unwrap();
        assert_eq!(configs["leader.replication.throttled.replicas"], "0:1,1:0,2:2", "no duplicates");
        let ops = vec![("leader.replication.throttled.replicas".to_string(), Op::Subtract("0:1".into()))];
        apply_ops(&mut configs, &ops, lists).unwrap();
        assert_eq!(configs["leader.replication.throttled.replicas"], "1:0,2:2");
        let ops = vec![("cleanup.policy".to_string(), Op::Append("delete".into()))];
        apply_ops(&mut configs, &ops, lists).unwrap();
        assert_eq!(configs["cleanup.policy"], "delete", "appended to Kafka's default, without repeating it");
        let ops = vec![("retention.ms".to_string(), Op::Append("5".into()))];
        assert_eq!(apply_ops(&mut configs, &ops, lists).unwrap_err().0, errors::INVALID_REQUEST);
    }
}
