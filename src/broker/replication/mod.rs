//! Replication across shards (`docs/replication.md`): a partition with replication factor R has a
//! replica on R shards. The leader is the one clients produce to and fetch from; each follower's
//! shard copies the leader's batches over the mailboxes, pulling them as Kafka's followers fetch
//! (`follower`), and the leader keeps the in-sync replicas and the high watermark from what they
//! report (`leader`). Leadership and ISR are the controller's (shard 0) to record, in the topic
//! catalog, like every other topic change.

pub mod follower;
pub mod leader;

use super::catalog::TopicMeta;
use std::rc::Rc;

/// The shards holding partition `p`'s replicas, the preferred leader first: its owner as placement
/// spreads partitions (`shards::placement`), then the next shards round, so that the followers of
/// a shard's partitions spread over the others as their leaders do.
pub fn replicas(meta: &TopicMeta, p: i32, shards: usize) -> Vec<u16> {
    let owner = shards::placement(&meta.name, p as u32, shards);
    let r = usize::from(meta.replication_factor).clamp(1, shards.max(1));
    (0..r).map(|i| ((owner + i) % shards.max(1)) as u16).collect()
}

/// What a shard's replica of a partition does.
pub enum Role {
    /// The partition's only replica: its log alone decides the high watermark.
    Sole,
    Leader(Rc<leader::Leader>),
    Follower(Rc<follower::Follower>),
}

impl Role {
    /// The role of `shard`'s replica of partition `p`, as `meta` records it; `None` if the shard
    /// holds none.
    pub fn of(meta: &TopicMeta, p: i32, shards: usize, shard: usize) -> Option<Role> {
        let replicas = replicas(meta, p, shards);
        let me = shard as u16;
        if !replicas.contains(&me) {
            return None;
        }
        if replicas.len() == 1 {
            return Some(Role::Sole);
        }
        let state = meta.state(p, &replicas);
        Some(if state.leader == me {
            Role::Leader(Rc::new(leader::Leader::new(me, state.epoch, replicas, state.isr)))
        } else {
            Role::Follower(Rc::new(follower::Follower::new(state.leader)))
        })
    }

    pub fn leader(&self) -> Option<&Rc<leader::Leader>> {
        match self {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }
}

/// Partition `p`'s leader epoch as this shard knows it.
pub fn epoch(meta: &TopicMeta, p: i32, shards: usize) -> i32 {
    meta.state(p, &replicas(meta, p, shards)).epoch
}

/// Kafka's check of a request's `current_leader_epoch` (−1: none given) against the partition's:
/// older is FENCED_LEADER_EPOCH (the client must refresh its metadata), newer is
/// UNKNOWN_LEADER_EPOCH (this broker has not heard of it yet).
pub fn check_epoch(current: i32, requested: i32) -> Result<(), i16> {
    match requested {
        -1 => Ok(()),
        r if r < current => Err(super::errors::FENCED_LEADER_EPOCH),
        r if r > current => Err(super::errors::UNKNOWN_LEADER_EPOCH),
        _ => Ok(()),
    }
}
