//! Handlers for the control APIs: ApiVersions, Metadata, DescribeCluster, ListOffsets, topic admin,
//! configs and producer ids. Produce, Fetch and the group APIs have modules of their own.

use super::catalog::TopicMeta;
use super::error_codes::ErrorCodes;
use super::{errors, state, topics};
use crate::protocol::{self, versions, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

pub const CLUSTER_ID: &str = "weir-cluster";

/// `authorized_operations` when the client did not ask for them (Kafka's `Int.MinValue`).
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// With no ACLs every operation is allowed: Kafka's bit field (1 << AclOperation code) of the
/// operations each resource type supports. Group: READ, DELETE, DESCRIBE.
pub const AUTHORIZED_OPERATIONS_GROUP: i32 = 1 << 3 | 1 << 6 | 1 << 8;
/// Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const AUTHORIZED_OPERATIONS_TOPIC: i32 = 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;
/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const AUTHORIZED_OPERATIONS_CLUSTER: i32 = 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12;

pub(super) fn respond<T: kafka_protocol::protocol::Encodable + ErrorCodes>(
    req: &Request,
    body: &T,
) -> Result<Option<Bytes>, ProtocolError> {
    count_errors(req, body);
    protocol::encode_response(req.api, req.header.request_api_version, req.header.correlation_id, body).map(Some)
}

/// Counts the error codes `body` answers `req` with (`weir_request_errors_total`).
pub(super) fn count_errors(req: &Request, body: &impl ErrorCodes) {
    body.each_error(&mut |code| {
        if code != errors::NONE {
            crate::metrics::recorder::error(req.api as i16, code);
        }
    });
}

/// Answers with a body written by `protocol::legacy` (header v0).
pub(super) fn respond_legacy(req: &Request, body: &[u8]) -> Result<Option<Bytes>, ProtocolError> {
    Ok(Some(protocol::legacy::frame(req.header.correlation_id, body)))
}

/// Answers an old version whose layout is a newer one's without its leading throttle time.
pub(super) fn respond_without_throttle<T: kafka_protocol::protocol::Encodable + ErrorCodes>(
    req: &Request,
    as_version: i16,
    body: &T,
) -> Result<Option<Bytes>, ProtocolError> {
    count_errors(req, body);
    let framed = protocol::encode_response(req.api, as_version, req.header.correlation_id, body)?;
    respond_legacy(req, &framed[12..])
}

/// The items that occur more than once (names a request must not repeat).
pub(super) fn repeated<T: std::hash::Hash + Eq + Clone>(items: impl IntoIterator<Item = T>) -> std::collections::HashSet<T> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| !seen.insert(i.clone())).collect()
}

pub(super) fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn api_versions(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let mut r = ApiVersionsResponse::default();
    for (api, range) in versions::SUPPORTED {
        let mut v = api_versions_response::ApiVersion::default();
        v.api_key = *api as i16;
        v.min_version = *range.start();
        v.max_version = *range.end();
        r.api_keys.push(v);
    }
    let version = req.header.request_api_version;
    if !versions::supported(ApiKey::ApiVersions).is_some_and(|v| v.contains(&version)) {
        // KIP-511: answer in v0 with UNSUPPORTED_VERSION and the list, so the client can pick.
        r.error_code = errors::UNSUPPORTED_VERSION;
        count_errors(req, &r);
        return protocol::encode_response(req.api, 0, req.header.correlation_id, &r).map(Some);
    }
    respond(req, &r)
}

fn brokers() -> Vec<(i32, String, i32)> {
    let cfg = &state().cfg;
    cfg.nodes().into_iter().map(|(id, port)| (id, cfg.advertised_host.clone(), port)).collect()
}

fn metadata_topic(meta: &TopicMeta, version: i16, with_operations: bool) -> metadata_response::MetadataResponseTopic {
    let st = state();
    let mut t = metadata_response::MetadataResponseTopic::default();
    t.topic_authorized_operations = if with_operations { AUTHORIZED_OPERATIONS_TOPIC } else { AUTHORIZED_OPERATIONS_OMITTED };
    t.name = Some(TopicName(text(meta.name.clone())));
    t.is_internal = super::catalog::is_internal(&meta.name);
    if version >= 10 {
        t.topic_id = uuid::Uuid::from_u128(meta.id);
    }
    let node = |shard: u16| BrokerId(st.cfg.node_for(usize::from(shard)));
    for p in 0..meta.partitions {
        let replicas = super::replication::replicas(meta, p, st.shard.count);
        let state = meta.state(p, &replicas);
        let mut part = metadata_response::MetadataResponsePartition::default();
        part.partition_index = p;
        match state.leader {
            Some(leader) => part.leader_id = node(leader),
            None => {
                part.leader_id = BrokerId(-1);
                part.error_code = errors::LEADER_NOT_AVAILABLE;
            }
        }
        if version >= 7 {
            part.leader_epoch = state.epoch;
        }
        part.replica_nodes = replicas.iter().map(|&r| node(r)).collect();
        part.isr_nodes = state.isr.iter().map(|&r| node(r)).collect();
        if version >= 5 {
            part.offline_replicas = state.offline.iter().map(|&r| node(r)).collect();
        }
        t.partitions.push(part);
    }
    t
}

pub async fn metadata(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let mut m: MetadataRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    if version == 0 && m.topics.as_ref().is_some_and(|t| t.is_empty()) {
        // v0 has no null: an empty list means every topic.
        m.topics = None;
    }
    let st = state();
    let mut r = MetadataResponse::default();
    for (id, host, port) in brokers() {
        let mut b = metadata_response::MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = text(host);
        b.port = port;
        r.brokers.push(b);
    }
    if version >= 2 {
        r.cluster_id = Some(text(CLUSTER_ID));
    }
    r.controller_id = BrokerId(0);
    r.cluster_authorized_operations =
        if m.include_cluster_authorized_operations { AUTHORIZED_OPERATIONS_CLUSTER } else { AUTHORIZED_OPERATIONS_OMITTED };
    let with_operations = m.include_topic_authorized_operations;
    match m.topics {
        None => {
            let all: Vec<TopicMeta> = st.topics.borrow().values().cloned().collect();
            r.topics = all.iter().map(|t| metadata_topic(t, version, with_operations)).collect();
        }
        // v12+: topics by id (Kafka's `handleTopicMetadataRequest` then ignores the names).
        Some(wanted) if version >= 12 && wanted.iter().any(|w| !w.topic_id.is_nil()) => {
            let mut seen = std::collections::HashSet::new();
            let names = st.topic_names_by_id();
            for id in wanted.iter().map(|w| w.topic_id).filter(|id| !id.is_nil() && seen.insert(*id)) {
                r.topics.push(match names.get(&id.as_u128()).and_then(|n| st.topic(n)) {
                    Some(meta) => metadata_topic(&meta, version, with_operations),
                    None => {
                        let mut t = metadata_response::MetadataResponseTopic::default();
                        (t.name, t.topic_id, t.error_code) = (None, id, errors::UNKNOWN_TOPIC_ID);
                        t
                    }
                });
            }
        }
        Some(wanted) => {
            // Version 4+ says per request whether to auto-create; older versions always may.
            let may_create = st.cfg.auto_create_topics && (req.header.request_api_version < 4 || m.allow_auto_topic_creation);
            for w in wanted {
                let Some(name) = w.name else { continue };
                let found = match st.topic(&name.0) {
                    Some(meta) => Ok(meta),
                    None if may_create => topics::ensure(name.0.to_string()).await,
                    None => Err((errors::UNKNOWN_TOPIC_OR_PARTITION, String::new())),
                };
                r.topics.push(match found {
                    Ok(meta) => metadata_topic(&meta, version, with_operations),
                    Err((code, _)) => {
                        let mut t = metadata_response::MetadataResponseTopic::default();
                        t.name = Some(name);
                        t.error_code = code;
                        t
                    }
                });
            }
        }
    }
    respond(req, &r)
}

pub fn describe_cluster(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeClusterRequest = protocol::decode_body(req)?;
    let mut r = DescribeClusterResponse::default();
    r.cluster_authorized_operations =
        if q.include_cluster_authorized_operations { AUTHORIZED_OPERATIONS_CLUSTER } else { AUTHORIZED_OPERATIONS_OMITTED };
    r.cluster_id = text(CLUSTER_ID);
    r.controller_id = BrokerId(0);
    r.endpoint_type = 1;
    for (id, host, port) in brokers() {
        let mut b = describe_cluster_response::DescribeClusterBroker::default();
        b.broker_id = BrokerId(id);
        b.host = text(host);
        b.port = port;
        r.brokers.push(b);
    }
    respond(req, &r)
}

pub async fn init_producer_id(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let mut q: InitProducerIdRequest = protocol::decode_body(req)?;
    if let Some(id) = q.transactional_id.take() {
        return super::txn::init_producer_id(req, q, id.0.to_string()).await;
    }
    let mut r = InitProducerIdResponse::default();
    if q.producer_id.0 >= 0 {
        // A producer bumping its epoch keeps its id (KIP-360).
        r.producer_id = q.producer_id;
        r.producer_epoch = q.producer_epoch.saturating_add(1);
    } else {
        r.producer_id = ProducerId(new_producer_id());
        r.producer_epoch = 0;
    }
    respond(req, &r)
}

/// Producer ids unique across shards and restarts: milliseconds since the epoch, times 2^12, plus a
/// per-process counter.
pub(super) fn new_producer_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static COUNTER: AtomicI64 = AtomicI64::new(0);
    (super::unix_ms() << 12) + (COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff)
}
