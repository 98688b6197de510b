//! Consumer-group administration for `weir group`, as Kafka's `kafka-consumer-groups` does it:
//! ListGroups to every broker, DescribeGroups and OffsetFetch to the group's coordinator, ListOffsets
//! to the partitions' leaders, and OffsetCommit as an admin (no member, no generation) to reset.

use super::group::decode_versioned;
use super::{check, Cluster, Result};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A group as ListGroups names it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
}

/// A member as DescribeGroups shows it, with what it was assigned (consumer protocol).
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assigned: Vec<(String, i32)>,
}

#[derive(Debug, Clone)]
pub struct Described {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<Member>,
}

/// Every group of the cluster, from every broker (each coordinates some), sorted by name.
pub fn list_groups(cluster: &mut Cluster) -> Result<Vec<Listed>> {
    let nodes: Vec<i32> = cluster.brokers.keys().copied().collect();
    let mut out = BTreeMap::new();
    for node in nodes {
        let conn = cluster.conn(node)?;
        let v = conn.version::<ListGroupsRequest>(4);
        let r = conn.call(ListGroupsRequest::default(), v)?;
        check(r.error_code, "list groups")?;
        for g in r.groups {
            let group = g.group_id.0.to_string();
            out.insert(group.clone(), Listed { group, state: g.group_state.to_string(), protocol_type: g.protocol_type.to_string() });
        }
    }
    Ok(out.into_values().collect())
}

pub fn describe_group(cluster: &mut Cluster, group: &str) -> Result<Described> {
    let mut conn = cluster.coordinator(0, group)?;
    let v = conn.version::<DescribeGroupsRequest>(5);
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(text(group))];
    let r = conn.call(req, v)?;
    let g = r.groups.into_iter().next().ok_or_else(|| super::proto("empty DescribeGroups response"))?;
    check(g.error_code, format!("describe group {group}"))?;
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let assigned = if g.protocol_type.as_str() == "consumer" && !m.member_assignment.is_empty() {
                decode_versioned::<ConsumerProtocolAssignment>(m.member_assignment.clone(), 3)
                    .map(|a| a.assigned_partitions.iter().flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p))).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            Member { member_id: m.member_id.to_string(), client_id: m.client_id.to_string(), host: m.client_host.to_string(), assigned }
        })
        .collect();
    Ok(Described {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
    })
}

/// The group's committed offsets: (topic, partition) → offset.
pub fn committed(cluster: &mut Cluster, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    let mut conn = cluster.coordinator(0, group)?;
    let v = conn.version::<OffsetFetchRequest>(7).max(2);
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(text(group));
    req.topics = None;
    let r = conn.call(req, v)?;
    check(r.error_code, format!("committed offsets of {group}"))?;
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            check(p.error_code, format!("committed offset of {}/{}", t.name.0, p.partition_index))?;
            if p.committed_offset >= 0 {
                out.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group` as an admin: accepted by the coordinator only while the group has
/// no members (Kafka's rule for kafka-consumer-groups --reset-offsets).
pub fn commit(cluster: &mut Cluster, group: &str, offsets: &BTreeMap<(String, i32), i64>) -> Result<()> {
    let mut conn = cluster.coordinator(0, group)?;
    let v = conn.version::<OffsetCommitRequest>(7);
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t.as_str()).or_default().push((*p, *o));
    }
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(text(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = text("");
    for (topic, parts) in by_topic {
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(text(topic));
        for (p, o) in parts {
            let mut part = offset_commit_request::OffsetCommitRequestPartition::default();
            part.partition_index = p;
            part.committed_offset = o;
            t.partitions.push(part);
        }
        req.topics.push(t);
    }
    let r = conn.call(req, v)?;
    for t in &r.topics {
        for p in &t.partitions {
            check(p.error_code, format!("commit {}/{}", t.name.0, p.partition_index))?;
        }
    }
    Ok(())
}
