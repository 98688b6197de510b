//! DescribeLogDirs (API 35): the log directory of the shard asked (each shard is a broker to
//! clients), whether it failed, its filesystem's size and free space (v4), and the size of every
//! replica the shard keeps in it.

use super::handlers::respond;
use super::{errors, state};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

pub fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeLogDirsRequest = protocol::decode_body(req)?;
    let st = state();
    let wanted: Option<BTreeMap<String, Vec<i32>>> =
        q.topics.map(|topics| topics.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect());
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = StrBytes::from_string(st.log_dir().display().to_string());
    if req.header.request_api_version >= 4 {
        let (total, usable) = shards::fs::space(st.log_dir()).unwrap_or((0, 0));
        (result.total_bytes, result.usable_bytes) = (total as i64, usable as i64);
    }
    if st.log_dir_failed.borrow().is_some() {
        result.error_code = errors::KAFKA_STORAGE_ERROR;
    } else {
        // Open replicas report their logs' size; the others (dormant) their files'.
        let mut held: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
        let open: Vec<((String, i32), u64)> = st.partitions.borrow().iter().map(|(k, part)| (k.clone(), part.log.size_bytes())).collect();
        let closed: Vec<(String, i32)> = st.closed.borrow().keys().cloned().collect();
        let sizes = open.into_iter().chain(closed.into_iter().map(|k| {
            let size = files_size(&st.partition_dir(&k.0, k.1));
            (k, size)
        }));
        for ((topic, p), size) in sizes {
            if wanted.as_ref().is_some_and(|w| !w.get(&topic).is_some_and(|ps| ps.contains(&p))) {
                continue;
            }
            let mut part = DescribeLogDirsPartition::default();
            part.partition_index = p;
            part.partition_size = size as i64;
            held.entry(topic).or_default().push(part);
        }
        result.topics = held
            .into_iter()
            .map(|(name, mut partitions)| {
                partitions.sort_by_key(|p| p.partition_index);
                let mut t = DescribeLogDirsTopic::default();
                t.name = TopicName(StrBytes::from_string(name));
                t.partitions = partitions;
                t
            })
            .collect();
    }
    let mut r = DescribeLogDirsResponse::default();
    r.results = vec![result];
    respond(req, &r)
}

/// Bytes of the `.log` files in `dir` (a replica not open).
fn files_size(dir: &std::path::Path) -> u64 {
    let names = shards::fs::list(dir).unwrap_or_default();
    names.iter().filter(|n| n.ends_with(".log")).filter_map(|n| std::fs::metadata(dir.join(n)).ok()).map(|m| m.len()).sum()
}
