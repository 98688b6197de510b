//! OffsetCommit, OffsetFetch and OffsetDelete: committed offsets, with Kafka's checks of who may
//! commit when (`state::Group::commit_error`) and which offsets may be deleted.

use super::store::{Committed, Record};
use super::{on_coordinator, shard_state, GROUP_ID_MAX_BYTES, OFFSET_METADATA_MAX_BYTES};
use crate::broker::handlers::{respond, text};
use crate::broker::{errors, unix_ms};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// One partition's commit: (topic, partition, offset, leader epoch, metadata).
pub(super) type CommitPart = (String, i32, i64, i32, Option<String>);

/// Who commits: (member id, group instance id, generation); ("", None, -1) outside group management.
pub(super) type Committer = (String, Option<String>, i32);

/// The error for one partition before it reaches the coordinator: the partition must exist
/// (Kafka answers UNKNOWN_TOPIC_OR_PARTITION from its metadata cache) and the metadata fit.
pub(super) fn precheck(topic: &str, partition: i32, metadata: Option<&str>) -> Option<i16> {
    if !shard_state().partition_exists(topic, partition) {
        Some(errors::UNKNOWN_TOPIC_OR_PARTITION)
    } else if metadata.is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
        Some(errors::OFFSET_METADATA_TOO_LARGE)
    } else {
        None
    }
}

/// Commits `parts` for `group` on its coordinator; one error code per part, in order. Parts that
/// fail `precheck` are answered without reaching the coordinator.
pub(super) async fn commit(group: String, who: Committer, parts: Vec<CommitPart>) -> Vec<i16> {
    let mut codes: Vec<Option<i16>> = parts.iter().map(|(t, p, _, _, m)| precheck(t, *p, m.as_deref())).collect();
    let valid: Vec<CommitPart> = parts.into_iter().zip(&codes).filter(|(_, c)| c.is_none()).map(|(p, _)| p).collect();
    if !valid.is_empty() {
        let g = group.clone();
        let stored = on_coordinator(&group, move || commit_local(g, who, valid)).await;
        let mut stored = stored.into_iter();
        for c in codes.iter_mut().filter(|c| c.is_none()) {
            *c = Some(stored.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR));
        }
    }
    codes.into_iter().map(|c| c.unwrap_or(errors::UNKNOWN_SERVER_ERROR)).collect()
}

async fn commit_local(group: String, (member, instance, generation): Committer, parts: Vec<CommitPart>) -> Vec<i16> {
    let coord = &shard_state().groups;
    if group.len() > GROUP_ID_MAX_BYTES {
        return vec![errors::INVALID_GROUP_ID; parts.len()];
    }
    let known = coord.existing(&group).is_some() || coord.has_offsets(&group);
    if !known && generation >= 0 {
        // A generation of a group this coordinator never saw: from an older coordinator, refused.
        return vec![errors::ILLEGAL_GENERATION; parts.len()];
    }
    let refused = coord.group(&group).borrow_mut().commit_error(&member, instance.as_deref(), generation, Instant::now());
    if let Some(error) = refused {
        return vec![error; parts.len()];
    }
    let ts = unix_ms();
    let records: Vec<Record> = parts
        .iter()
        .map(|(topic, partition, offset, epoch, metadata)| Record::Commit {
            group: group.clone(),
            topic: topic.clone(),
            partition: *partition,
            committed: Committed { offset: *offset, leader_epoch: *epoch, metadata: metadata.clone(), commit_time_ms: ts },
        })
        .collect();
    match coord.persist(&group, &records).await {
        Ok(()) => vec![errors::NONE; parts.len()],
        Err(e) => {
            tracing::error!(%group, error = %e, "persisting committed offsets failed");
            vec![errors::KAFKA_STORAGE_ERROR; parts.len()]
        }
    }
}

pub(super) async fn offset_commit(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    let q: OffsetCommitRequest =
        if version < 2 { protocol::legacy::offset_commit_request(&req.body, version)? } else { protocol::decode_body(req)? };
    let parts: Vec<CommitPart> = q
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                (t.name.to_string(), p.partition_index, p.committed_offset, p.committed_leader_epoch, metadata)
            })
        })
        .collect();
    let who = (q.member_id.to_string(), q.group_instance_id.as_ref().map(|s| s.to_string()), q.generation_id_or_member_epoch);
    let mut codes = commit(q.group_id.to_string(), who, parts).await.into_iter();
    let mut r = OffsetCommitResponse::default();
    for t in q.topics {
        let mut rt = offset_commit_response::OffsetCommitResponseTopic::default();
        rt.name = t.name;
        for p in t.partitions {
            let mut rp = offset_commit_response::OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR);
            rt.partitions.push(rp);
        }
        r.topics.push(rt);
    }
    if version < 2 {
        // v0 and v1 answer in v2's layout.
        crate::broker::handlers::count_errors(req, &r);
        return protocol::encode_response(req.api, 2, req.header.correlation_id, &r).map(Some);
    }
    respond(req, &r)
}

/// A partition of a topic, by name.
type TopicPartition = (String, i32);

/// A partition's committed offset, or the error when it is not stable.
type Answer = (i32, Result<Option<Committed>, i16>);
type Found = Vec<(String, Vec<Answer>)>;

/// Committed offsets of `group`: for the listed (topic, partitions), or all when `None`. With
/// `require_stable`, a partition with offsets waiting for a transaction to end is answered
/// UNSTABLE_OFFSET_COMMIT (clients retry).
async fn fetch_offsets_local(group: String, wanted: Option<Vec<(String, Vec<i32>)>>, require_stable: bool) -> Found {
    let coord = &shard_state().groups;
    let offsets = coord.offsets.borrow().get(&group).cloned().unwrap_or_default();
    let answer = |t: &str, p: i32, c: Option<Committed>| {
        if require_stable && coord.has_pending(&group, t, p) {
            Err(errors::UNSTABLE_OFFSET_COMMIT)
        } else {
            Ok(c)
        }
    };
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let found = parts.into_iter().map(|p| (p, answer(&t, p, offsets.get(&(t.clone(), p)).cloned()))).collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
            for ((t, p), c) in offsets {
                let a = answer(&t, p, Some(c));
                by_topic.entry(t).or_default().push((p, a));
            }
            by_topic.into_iter().collect()
        }
    }
}

async fn fetch_offsets(group: &str, wanted: Option<Vec<(String, Vec<i32>)>>, require_stable: bool) -> Found {
    let g = group.to_string();
    on_coordinator(group, move || fetch_offsets_local(g, wanted, require_stable)).await
}

pub(super) async fn offset_fetch(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: OffsetFetchRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        let mut seen = std::collections::HashSet::new();
        for g in q.groups {
            // Each group once, as in DescribeGroups: a repeated name would repeat its offsets.
            if !seen.insert(g.group_id.to_string()) {
                let mut rg = offset_fetch_response::OffsetFetchResponseGroup::default();
                (rg.group_id, rg.error_code) = (g.group_id, errors::INVALID_REQUEST);
                r.groups.push(rg);
                continue;
            }
            let wanted = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
            let found = fetch_offsets(&g.group_id, wanted, q.require_stable).await;
            let mut rg = offset_fetch_response::OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id;
            for (topic, parts) in found {
                let mut rt = offset_fetch_response::OffsetFetchResponseTopics::default();
                rt.name = TopicName(text(topic));
                for (p, c) in parts {
                    let mut rp = offset_fetch_response::OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
                    let c = c.unwrap_or_else(|code| {
                        rp.error_code = code;
                        None
                    });
                    rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                    rp.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                    rp.metadata = Some(text(c.and_then(|c| c.metadata).unwrap_or_default()));
                    rt.partitions.push(rp);
                }
                rg.topics.push(rt);
            }
            r.groups.push(rg);
        }
    } else {
        let wanted = q.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
        let found = fetch_offsets(&q.group_id, wanted, q.require_stable).await;
        for (topic, parts) in found {
            let mut rt = offset_fetch_response::OffsetFetchResponseTopic::default();
            rt.name = TopicName(text(topic));
            for (p, c) in parts {
                let mut rp = offset_fetch_response::OffsetFetchResponsePartition::default();
                rp.partition_index = p;
                let c = c.unwrap_or_else(|code| {
                    rp.error_code = code;
                    None
                });
                rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                if version >= 5 {
                    rp.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                }
                rp.metadata = Some(text(c.and_then(|c| c.metadata).unwrap_or_default()));
                rt.partitions.push(rp);
            }
            r.topics.push(rt);
        }
    }
    respond(req, &r)
}

/// Kafka's `handleDeleteOffsets`: the group-level error, and one error per partition.
async fn offset_delete_local(group: String, parts: Vec<TopicPartition>) -> (i16, HashMap<TopicPartition, i16>) {
    let coord = &shard_state().groups;
    if !coord.has_offsets(&group) && coord.existing(&group).is_none() {
        return (errors::GROUP_ID_NOT_FOUND, HashMap::new());
    }
    let gref = coord.group(&group);
    let (deletable, mut codes): (Vec<TopicPartition>, HashMap<TopicPartition, i16>) = {
        let g = gref.borrow();
        use super::state::Phase;
        match g.phase {
            Phase::Empty => (parts, HashMap::new()),
            _ if g.protocol_type.as_deref() == Some("consumer") => {
                let (consumed, free): (Vec<_>, Vec<_>) = parts.into_iter().partition(|(t, _)| g.is_subscribed_to(t));
                (free, consumed.into_iter().map(|tp| (tp, errors::GROUP_SUBSCRIBED_TO_TOPIC)).collect())
            }
            _ => return (errors::NON_EMPTY_GROUP, HashMap::new()),
        }
    };
    if deletable.is_empty() {
        return (errors::NONE, codes);
    }
    let records: Vec<Record> = deletable
        .iter()
        .map(|(topic, partition)| Record::DeleteOffset { group: group.clone(), topic: topic.clone(), partition: *partition })
        .collect();
    let code = match coord.persist(&group, &records).await {
        Ok(()) => errors::NONE,
        Err(_) => errors::KAFKA_STORAGE_ERROR,
    };
    codes.extend(deletable.into_iter().map(|tp| (tp, code)));
    (errors::NONE, codes)
}

pub(super) async fn offset_delete(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: OffsetDeleteRequest = protocol::decode_body(req)?;
    let group = q.group_id.to_string();
    let (parts, unknown): (Vec<TopicPartition>, Vec<TopicPartition>) = q
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index)))
        .partition(|(t, p)| precheck(t, *p, None).is_none());
    let g = group.clone();
    let (error, mut codes) = on_coordinator(&group, move || offset_delete_local(g, parts)).await;
    codes.extend(unknown.into_iter().map(|tp| (tp, errors::UNKNOWN_TOPIC_OR_PARTITION)));
    let mut r = OffsetDeleteResponse::default();
    r.error_code = error;
    if error == errors::NONE {
        for t in q.topics {
            let mut rt = offset_delete_response::OffsetDeleteResponseTopic::default();
            for p in t.partitions {
                let mut rp = offset_delete_response::OffsetDeleteResponsePartition::default();
                rp.partition_index = p.partition_index;
                rp.error_code = codes.get(&(t.name.to_string(), p.partition_index)).copied().unwrap_or(errors::NONE);
                rt.partitions.push(rp);
            }
            rt.name = t.name;
            r.topics.push(rt);
        }
    }
    respond(req, &r)
}
