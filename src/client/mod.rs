//! A small blocking Kafka client on `src/protocol`, for the `weir` tools and `weir-bench`.
//!
//! One `Connection` is one TCP socket to one broker. Requests can be pipelined: `send` writes a
//! request and returns its correlation id, `receive` reads the next response in order.
//! `Cluster` keeps a connection per broker and knows which broker leads which partition.

pub mod admin;
pub mod group;
pub mod producer;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest response frame the client accepts.
const RESPONSE_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("broker error {code} on {what}")]
    Broker { code: i16, what: String },
}

pub type Result<T> = std::result::Result<T, ClientError>;

fn proto(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

pub struct Connection {
    stream: TcpStream,
    next_correlation: i32,
    client_id: StrBytes,
    out: BytesMut,
    versions: HashMap<i16, i16>,
}

impl Connection {
    pub fn connect(addr: &str) -> Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut c = Connection {
            stream,
            next_correlation: 1,
            client_id: StrBytes::from_static_str("weir-client"),
            out: BytesMut::with_capacity(1 << 16),
            versions: HashMap::new(),
        };
        let r: ApiVersionsResponse = c.call(ApiVersionsRequest::default(), 0)?;
        c.versions = r.api_keys.iter().map(|k| (k.api_key, k.max_version)).collect();
        Ok(c)
    }

    /// A second handle on the same socket, so one thread can send while another receives.
    pub fn split(&self) -> Result<Connection> {
        Ok(Connection {
            stream: self.stream.try_clone()?,
            next_correlation: 1,
            client_id: self.client_id.clone(),
            out: BytesMut::new(),
            versions: self.versions.clone(),
        })
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        Ok(self.stream.set_read_timeout(t)?)
    }

    /// The version to use for `R`: the highest both sides speak, capped at `ours`.
    pub fn version<R: Request>(&self, ours: i16) -> i16 {
        self.versions.get(&R::KEY).map_or(0, |&theirs| theirs.min(ours))
    }

    /// Writes a request; returns its correlation id.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        self.out.clear();
        self.out.extend_from_slice(&[0; 4]);
        header.encode(&mut self.out, R::header_version(version)).map_err(proto)?;
        req.encode(&mut self.out, version).map_err(proto)?;
        let size = (self.out.len() - 4) as i32;
        self.out[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&self.out)?;
        Ok(correlation)
    }

    /// Reads the next response frame; returns (correlation id, body).
    pub fn receive_raw(&mut self) -> Result<(i32, Bytes)> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            return Err(proto(format!("response frame of {size} bytes")));
        }
        // Read into spare capacity: zeroing a fetch's megabytes first was 5% of a consumer's time.
        let mut buf = Vec::with_capacity(size as usize);
        (&mut self.stream).take(size as u64).read_to_end(&mut buf)?;
        if buf.len() < size as usize {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let correlation = i32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        Ok((correlation, Bytes::from(buf)))
    }

    /// Reads and decodes the next response, which must answer `correlation`.
    pub fn receive<R: Request>(&mut self, correlation: i32, version: i16) -> Result<R::Response> {
        let (got, mut body) = self.receive_raw()?;
        if got != correlation {
            return Err(proto(format!("correlation {got}, expected {correlation}")));
        }
        let header_version = R::Response::header_version(version);
        ResponseHeader::decode(&mut body, header_version).map_err(proto)?;
        R::Response::decode(&mut body, version).map_err(proto)
    }

    pub fn call<R: Request>(&mut self, req: R, version: i16) -> Result<R::Response> {
        let c = self.send(&req, version)?;
        self.receive::<R>(c, version)
    }
}

/// Leader of each partition of a topic, and where each broker is.
#[derive(Debug, Clone, Default)]
pub struct TopicLayout {
    pub name: String,
    pub leaders: Vec<i32>,
}

pub struct Cluster {
    bootstrap: String,
    pub brokers: BTreeMap<i32, String>,
    conns: HashMap<i32, Connection>,
}

fn check(code: i16, what: impl Into<String>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::Broker { code, what: what.into() })
    }
}

impl Cluster {
    pub fn connect(bootstrap: &str) -> Result<Cluster> {
        let mut c = Cluster { bootstrap: bootstrap.to_string(), brokers: BTreeMap::new(), conns: HashMap::new() };
        c.metadata(&[], false)?;
        Ok(c)
    }

    /// A connection to broker `node` (or the bootstrap address for -1).
    pub fn conn(&mut self, node: i32) -> Result<&mut Connection> {
        if !self.conns.contains_key(&node) {
            let addr = if node < 0 {
                self.bootstrap.clone()
            } else {
                self.brokers.get(&node).cloned().ok_or_else(|| proto(format!("unknown broker {node}")))?
            };
            self.conns.insert(node, Connection::connect(&addr)?);
        }
        Ok(self.conns.get_mut(&node).expect("inserted"))
    }

    /// Fetches metadata for `topics` (all topics when empty).
    pub fn metadata(&mut self, topics: &[&str], auto_create: bool) -> Result<Vec<TopicLayout>> {
        let conn = self.conn(-1)?;
        let v = conn.version::<MetadataRequest>(9);
        let mut req = MetadataRequest::default();
        req.topics = (!topics.is_empty()).then(|| {
            topics
                .iter()
                .map(|t| metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.to_string())))))
                .collect()
        });
        req.allow_auto_topic_creation = auto_create;
        let r = conn.call(req, v)?;
        self.brokers = r.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let mut out = Vec::new();
        for t in r.topics {
            let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
            check(t.error_code, format!("topic {name}"))?;
            let mut parts: Vec<(i32, i32)> = t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect();
            parts.sort_unstable();
            out.push(TopicLayout { name, leaders: parts.into_iter().map(|(_, l)| l).collect() });
        }
        Ok(out)
    }

    /// A connection to the coordinator of `key`: a group's (key type 0) or a transactional id's (1).
    pub fn coordinator(&mut self, key_type: i8, key: &str) -> Result<Connection> {
        let node = {
            let conn = self.conn(-1)?;
            let v = conn.version::<FindCoordinatorRequest>(3);
            let mut req = FindCoordinatorRequest::default();
            req.key = StrBytes::from_string(key.to_string());
            req.key_type = key_type;
            let r = conn.call(req, v)?;
            check(r.error_code, format!("find coordinator of {key}"))?;
            r.node_id.0
        };
        let addr = self.brokers.get(&node).cloned().ok_or_else(|| proto(format!("coordinator {node} unknown")))?;
        Connection::connect(&addr)
    }

    /// Creates topic `name` (`replication_factor` −1: the broker's default).
    pub fn create_topic(&mut self, name: &str, partitions: i32, replication_factor: i16, configs: &[(String, String)]) -> Result<()> {
        let conn = self.conn(-1)?;
        let v = conn.version::<CreateTopicsRequest>(5);
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.to_string()));
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let r = conn.call(req, v)?;
        for t in r.topics {
            check(t.error_code, format!("create {name}: {}", t.error_message.map(|m| m.to_string()).unwrap_or_default()))?;
        }
        Ok(())
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<()> {
        let conn = self.conn(-1)?;
        let v = conn.version::<DeleteTopicsRequest>(4);
        let mut req = DeleteTopicsRequest::default();
        req.topic_names = vec![TopicName(StrBytes::from_string(name.to_string()))];
        req.timeout_ms = 30_000;
        let r = conn.call(req, v)?;
        for t in r.responses {
            check(t.error_code, format!("delete {name}"))?;
        }
        Ok(())
    }

    pub fn describe_configs(&mut self, topic: &str) -> Result<Vec<(String, String)>> {
        let conn = self.conn(-1)?;
        let v = conn.version::<DescribeConfigsRequest>(1);
        let mut res = describe_configs_request::DescribeConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_string(topic.to_string());
        res.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![res];
        let r = conn.call(req, v)?;
        let mut out = Vec::new();
        for res in r.results {
            check(res.error_code, format!("configs of {topic}"))?;
            out.extend(res.configs.into_iter().map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()).unwrap_or_default())));
        }
        Ok(out)
    }

    /// (log start, high watermark) of a partition.
    pub fn offsets(&mut self, topic: &str, partition: i32, leader: i32) -> Result<(i64, i64)> {
        self.offsets_as(topic, partition, leader, false)
    }

    /// (log start, end) of a partition, the end as a read_committed consumer sees it (the last
    /// stable offset) or not (the high watermark).
    pub fn offsets_as(&mut self, topic: &str, partition: i32, leader: i32, read_committed: bool) -> Result<(i64, i64)> {
        Ok((
            self.list_offset(topic, partition, leader, -2, read_committed)?,
            self.list_offset(topic, partition, leader, -1, read_committed)?,
        ))
    }

    /// The first offset whose timestamp is at or after `ts_ms` (ListOffsets by time); the high
    /// watermark when none is.
    pub fn offset_for_time(&mut self, topic: &str, partition: i32, leader: i32, ts_ms: i64) -> Result<i64> {
        match self.list_offset(topic, partition, leader, ts_ms, false)? {
            -1 => Ok(self.offsets(topic, partition, leader)?.1),
            offset => Ok(offset),
        }
    }

    /// ListOffsets for one partition at `ts` (−2 earliest, −1 latest, else a time in ms).
    fn list_offset(&mut self, topic: &str, partition: i32, leader: i32, ts: i64, read_committed: bool) -> Result<i64> {
        let conn = self.conn(leader)?;
        // v1 is the first to answer a time with one offset.
        let v = conn.version::<ListOffsetsRequest>(4).max(1);
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = ts;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.isolation_level = i8::from(read_committed);
        req.topics = vec![t];
        let r = conn.call(req, v)?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).ok_or_else(|| proto("empty ListOffsets response"))?;
        check(p.error_code, format!("offsets of {topic}/{partition}"))?;
        Ok(p.offset)
    }
}

/// Builds a Produce request for one partition holding `records` (one or more v2 batches).
pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16, timeout_ms: i32) -> ProduceRequest {
    let mut p = produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = timeout_ms;
    req.topic_data = vec![t];
    req
}

/// Builds a Fetch request for one partition.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    fetch_request_many(topic, &[(partition, offset)], max_wait_ms, max_bytes)
}

/// Builds a Fetch request for several partitions of one topic, each from its offset.
pub fn fetch_request_many(topic: &str, partitions: &[(i32, i64)], max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    let mut t = fetch_request::FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    for &(partition, offset) in partitions {
        let mut p = fetch_request::FetchPartition::default();
        p.partition = partition;
        p.fetch_offset = offset;
        p.partition_max_bytes = max_bytes;
        t.partitions.push(p);
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.topics = vec![t];
    req
}

/// (partition, high watermark, record bytes) of every partition in a fetch response.
pub fn fetch_results(r: &FetchResponse) -> Result<Vec<(i32, i64, Bytes)>> {
    let mut out = Vec::new();
    for p in r.responses.iter().flat_map(|t| t.partitions.iter()) {
        check(p.error_code, format!("fetch partition {}", p.partition_index))?;
        out.push((p.partition_index, p.high_watermark, p.records.clone().unwrap_or_default()));
    }
    Ok(out)
}

/// The error, high watermark and record bytes of the single partition in a fetch response.
pub fn fetch_result(r: &FetchResponse) -> Result<(i64, Bytes)> {
    let p = r.responses.first().and_then(|t| t.partitions.first()).ok_or_else(|| proto("empty fetch response"))?;
    check(p.error_code, format!("fetch partition {}", p.partition_index))?;
    Ok((p.high_watermark, p.records.clone().unwrap_or_default()))
}
