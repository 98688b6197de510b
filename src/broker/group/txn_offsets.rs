//! TxnOffsetCommit (KIP-98, KIP-447): a transactional producer's offsets for a group, kept pending
//! (persisted, apart from the committed ones) until its transaction's marker reaches the group's
//! offsets partition; OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for a
//! partition that has some.

use super::offsets::precheck;
use super::store::{self, Committed, Record};
use super::{on_coordinator, shard_state, GROUP_ID_MAX_BYTES};
use crate::broker::handlers::respond;
use crate::broker::{errors, txn, unix_ms};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::time::Instant;

/// The offsets partition whose marker ends `group`'s pending offsets: what AddOffsetsToTxn adds.
pub fn offsets_partition(group: &str) -> i32 {
    store::partition_for(group) as i32
}

/// One partition's pending commit: (topic, partition, offset, leader epoch, metadata).
type Part = (String, i32, i64, i32, Option<String>);

pub(super) async fn txn_offset_commit(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: TxnOffsetCommitRequest = protocol::decode_body(req)?;
    let group = q.group_id.0.to_string();
    let (producer_id, epoch) = (q.producer_id.0, q.producer_epoch);
    let parts: Vec<Part> = q
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                (t.name.0.to_string(), p.partition_index, p.committed_offset, p.committed_leader_epoch, metadata)
            })
        })
        .collect();
    // The offsets partition must be in the producer's transaction (AddOffsetsToTxn), at its epoch.
    let verified = txn::verify(&q.transactional_id.0, producer_id, epoch, "__consumer_offsets", offsets_partition(&group)).await;
    let mut codes: Vec<Option<i16>> = parts.iter().map(|(t, p, _, _, m)| precheck(t, *p, m.as_deref())).collect();
    if verified != errors::NONE {
        codes.iter_mut().for_each(|c| *c = Some(verified));
    }
    let valid: Vec<Part> = parts.iter().zip(&codes).filter(|(_, c)| c.is_none()).map(|(p, _)| p.clone()).collect();
    if !valid.is_empty() {
        let (g, member, instance, generation) =
            (group.clone(), q.member_id.to_string(), q.group_instance_id.as_ref().map(|i| i.to_string()), q.generation_id);
        let stored = on_coordinator(&group, move || store_pending(g, producer_id, (member, instance, generation), valid)).await;
        codes.iter_mut().filter(|c| c.is_none()).for_each(|c| *c = Some(stored));
    }
    let mut codes = codes.into_iter().map(|c| c.unwrap_or(errors::UNKNOWN_SERVER_ERROR));
    let mut r = TxnOffsetCommitResponse::default();
    for t in q.topics {
        let mut rt = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
        rt.name = t.name;
        for p in t.partitions {
            let mut rp = txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR);
            rt.partitions.push(rp);
        }
        r.topics.push(rt);
    }
    respond(req, &r)
}

/// On the group's coordinator: KIP-447's member check (a producer outside group management sends
/// generation -1), then the pending offsets, persisted.
async fn store_pending(
    group: String,
    producer_id: i64,
    (member, instance, generation): (String, Option<String>, i32),
    parts: Vec<Part>,
) -> i16 {
    let coord = &shard_state().groups;
    if group.len() > GROUP_ID_MAX_BYTES {
        return errors::INVALID_GROUP_ID;
    }
    if let Some(error) = coord.group(&group).borrow_mut().commit_error(&member, instance.as_deref(), generation, Instant::now()) {
        return error;
    }
    let ts = unix_ms();
    let records: Vec<Record> = parts
        .into_iter()
        .map(|(topic, partition, offset, leader_epoch, metadata)| Record::TxnCommit {
            group: group.clone(),
            topic,
            partition,
            committed: Committed { offset, leader_epoch, metadata, commit_time_ms: ts },
            producer_id,
        })
        .collect();
    match coord.persist(&group, &records).await {
        Ok(()) => errors::NONE,
        Err(e) => {
            tracing::error!(%group, error = %e, "persisting transactional offsets failed");
            errors::KAFKA_STORAGE_ERROR
        }
    }
}

/// The marker of `producer_id`'s transaction for offsets partition `n`, on the shard owning it.
pub async fn end_txn(n: i32, producer_id: i64, commit: bool) -> std::io::Result<()> {
    let target = shards::placement("__consumer_offsets", n as u32, shard_state().shard.count);
    let ended = crate::broker::on_shard(target, move || async move {
        shard_state().groups.end_txn(n as u32, producer_id, commit).await.map_err(|e| e.to_string())
    });
    ended.await.map_err(std::io::Error::other)
}
