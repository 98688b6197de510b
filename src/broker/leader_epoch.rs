//! OffsetForLeaderEpoch (API 23, KIP-101/279/320): where a leader epoch ends in the leader's log.
//! Consumers ask it after a leader change to check that their position is still in the log
//! (Java's and librdkafka's offset validation); the answer is the largest epoch at most the one
//! asked for and the offset it ends at (the log end for the current epoch), or −1/−1.

use super::handlers::respond;
use super::replication::{self, Role};
use super::{errors, state, Partition};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::rc::Rc;

/// (error, epoch, end offset) for one partition, on the shard that leads it.
async fn end_offset_local(part: Rc<Partition>, topic: String, p: i32, current: i32, asked: i32) -> (i16, i32, i64) {
    let st = state();
    let Some(meta) = st.topic(&topic) else { return (errors::UNKNOWN_TOPIC_OR_PARTITION, -1, -1) };
    let epoch = replication::epoch(&meta, p, st.shard.count);
    if let Err(code) = replication::check_epoch(epoch, current) {
        return (code, -1, -1);
    }
    match &part.role {
        Role::Follower(_) => (errors::NOT_LEADER_OR_FOLLOWER, -1, -1),
        // One replica: it has led in epoch 0 from the start, its batches unstamped.
        Role::Sole if asked == epoch => (errors::NONE, epoch, part.log.offsets().log_end as i64),
        _ => {
            let (e, end) = part.log.end_offset_for(asked);
            (errors::NONE, e, end)
        }
    }
}

pub async fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: OffsetForLeaderEpochRequest = protocol::decode_body(req)?;
    let mut pending = Vec::new();
    for topic in q.topics {
        let name = topic.topic.to_string();
        let tasks: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                let (n, index, current, asked) = (name.clone(), p.partition, p.current_leader_epoch, p.leader_epoch);
                let task = shards::spawn_local(async move {
                    let owner_side = n.clone();
                    state()
                        .on_owner(&n, index, move |part| end_offset_local(part, owner_side, index, current, asked))
                        .await
                        .unwrap_or_else(|code| (code, -1, -1))
                });
                (index, task)
            })
            .collect();
        pending.push((topic.topic, tasks));
    }
    let mut r = OffsetForLeaderEpochResponse::default();
    for (name, tasks) in pending {
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = name;
        for (index, task) in tasks {
            let (error, epoch, end) = task.await;
            let mut e = EpochEndOffset::default();
            e.partition = index;
            e.error_code = error;
            e.leader_epoch = epoch;
            e.end_offset = end;
            t.partitions.push(e);
        }
        r.topics.push(t);
    }
    respond(req, &r)
}
