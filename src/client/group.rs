//! A consumer-group member for `weir consume --group`: the classic protocol with the "range"
//! assignor, committed offsets, heartbeats, and a clean LeaveGroup.
//!
//! Single-threaded: the caller's fetch loop calls `heartbeat_due` between fetches, so fetches wait at
//! most a fraction of the session timeout.

use super::{check, ClientError, Cluster, Connection, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(3_000);
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A versioned consumer-protocol blob: i16 version, then the message in that version.
fn encode_versioned<T: Encodable>(msg: &T, version: i16) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(version);
    msg.encode(&mut out, version).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(out.freeze())
}

pub(super) fn decode_versioned<T: Decodable>(mut bytes: Bytes, max: i16) -> Result<T> {
    if bytes.len() < 2 {
        return Err(ClientError::Protocol("empty consumer protocol blob".into()));
    }
    let version = bytes.get_i16().min(max);
    T::decode(&mut bytes, version).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The "range" assignor: each member, in member-id order, gets a contiguous run of partitions.
pub fn range_assign(members: &[String], partitions: i32) -> BTreeMap<String, Vec<i32>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let n = sorted.len().max(1) as i32;
    let (per, extra) = (partitions / n, partitions % n);
    let mut out = BTreeMap::new();
    let mut next = 0;
    for (i, m) in sorted.into_iter().enumerate() {
        let take = per + i32::from((i as i32) < extra);
        out.insert(m, (next..next + take).collect());
        next += take;
    }
    out
}

pub struct GroupMember {
    pub group: String,
    pub topic: String,
    coordinator: Connection,
    member_id: String,
    generation: i32,
    last_heartbeat: Instant,
}

impl GroupMember {
    /// Finds the coordinator and joins; `assigned()` then tells the partitions.
    pub fn join(cluster: &mut Cluster, group: &str, topic: &str, partitions: i32) -> Result<(GroupMember, Vec<i32>)> {
        let coordinator = cluster.coordinator(0, group)?;
        let mut m = GroupMember {
            group: group.into(),
            topic: topic.into(),
            coordinator,
            member_id: String::new(),
            generation: -1,
            last_heartbeat: Instant::now(),
        };
        let assigned = m.rejoin(partitions)?;
        Ok((m, assigned))
    }

    /// (Re)joins the group and syncs; returns this member's partitions.
    pub fn rejoin(&mut self, partitions: i32) -> Result<Vec<i32>> {
        loop {
            let mut sub = ConsumerProtocolSubscription::default();
            sub.topics = vec![text(&self.topic)];
            let mut proto = join_group_request::JoinGroupRequestProtocol::default();
            proto.name = text("range");
            proto.metadata = encode_versioned(&sub, 0)?;
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(text(&self.group));
            req.session_timeout_ms = SESSION_TIMEOUT_MS;
            req.rebalance_timeout_ms = 30_000;
            req.member_id = text(&self.member_id);
            req.protocol_type = text("consumer");
            req.protocols = vec![proto];
            let v = self.coordinator.version::<JoinGroupRequest>(7);
            let joined = self.coordinator.call(req, v)?;
            if joined.error_code == MEMBER_ID_REQUIRED || joined.error_code == UNKNOWN_MEMBER_ID {
                self.member_id = if joined.error_code == MEMBER_ID_REQUIRED { joined.member_id.to_string() } else { String::new() };
                continue;
            }
            check(joined.error_code, format!("join {}", self.group))?;
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let mut sync = SyncGroupRequest::default();
            sync.group_id = GroupId(text(&self.group));
            sync.generation_id = self.generation;
            sync.member_id = text(&self.member_id);
            if joined.leader == joined.member_id {
                let members: Vec<String> = joined.members.iter().map(|m| m.member_id.to_string()).collect();
                for (member, parts) in range_assign(&members, partitions) {
                    let mut tp = consumer_protocol_assignment::TopicPartition::default();
                    tp.topic = TopicName(text(&self.topic));
                    tp.partitions = parts;
                    let mut asg = ConsumerProtocolAssignment::default();
                    asg.assigned_partitions = vec![tp];
                    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                    a.member_id = text(&member);
                    a.assignment = encode_versioned(&asg, 0)?;
                    sync.assignments.push(a);
                }
            }
            let v = self.coordinator.version::<SyncGroupRequest>(5);
            let synced = self.coordinator.call(sync, v)?;
            if synced.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            check(synced.error_code, format!("sync {}", self.group))?;
            self.last_heartbeat = Instant::now();
            if synced.assignment.is_empty() {
                return Ok(Vec::new());
            }
            let asg: ConsumerProtocolAssignment = decode_versioned(synced.assignment, 3)?;
            return Ok(asg
                .assigned_partitions
                .into_iter()
                .filter(|tp| tp.topic.0.as_str() == self.topic)
                .flat_map(|tp| tp.partitions)
                .collect());
        }
    }

    /// Sends a heartbeat if one is due. `Ok(false)`: the group is rebalancing, rejoin.
    pub fn heartbeat_due(&mut self) -> Result<bool> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
            return Ok(true);
        }
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(text(&self.group));
        req.generation_id = self.generation;
        req.member_id = text(&self.member_id);
        let v = self.coordinator.version::<HeartbeatRequest>(4);
        let r = self.coordinator.call(req, v)?;
        self.last_heartbeat = Instant::now();
        match r.error_code {
            0 => Ok(true),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => Ok(false),
            code => Err(ClientError::Broker { code, what: "heartbeat".into() }),
        }
    }

    /// Committed offsets of `partitions` (-1 where none).
    pub fn committed(&mut self, partitions: &[i32]) -> Result<Vec<i64>> {
        let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
        t.name = TopicName(text(&self.topic));
        t.partition_indexes = partitions.to_vec();
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(text(&self.group));
        req.topics = Some(vec![t]);
        let v = self.coordinator.version::<OffsetFetchRequest>(7);
        let r = self.coordinator.call(req, v)?;
        Ok(partitions
            .iter()
            .map(|p| r.topics.iter().flat_map(|t| t.partitions.iter()).find(|x| x.partition_index == *p).map_or(-1, |x| x.committed_offset))
            .collect())
    }

    /// Commits `offsets` (partition, next offset to read) for this generation.
    pub fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<()> {
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(text(&self.topic));
        for &(p, o) in offsets {
            let mut part = offset_commit_request::OffsetCommitRequestPartition::default();
            part.partition_index = p;
            part.committed_offset = o;
            t.partitions.push(part);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(text(&self.group));
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = text(&self.member_id);
        req.topics = vec![t];
        let v = self.coordinator.version::<OffsetCommitRequest>(7);
        let r = self.coordinator.call(req, v)?;
        for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
            check(p.error_code, format!("commit partition {}", p.partition_index))?;
        }
        Ok(())
    }

    pub fn leave(mut self) -> Result<()> {
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(text(&self.group));
        req.member_id = text(&self.member_id);
        let v = self.coordinator.version::<LeaveGroupRequest>(2);
        let r = self.coordinator.call(req, v)?;
        check(r.error_code, format!("leave {}", self.group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_is_contiguous_and_complete() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let a = range_assign(&members, 7);
        assert_eq!(a["a"], vec![0, 1, 2]);
        assert_eq!(a["b"], vec![3, 4]);
        assert_eq!(a["c"], vec![5, 6]);
        assert_eq!(range_assign(&["x".to_string()], 2)["x"], vec![0, 1]);
    }

    #[test]
    fn consumer_protocol_blobs_round_trip() {
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![text("t")];
        let back: ConsumerProtocolSubscription = decode_versioned(encode_versioned(&sub, 0).unwrap(), 3).unwrap();
        assert_eq!(back.topics, sub.topics);
    }
}
