//! Replication across shards (`docs/replication.md`): a partition with replication factor R has a
//! replica on R shards. The leader is the one clients produce to and fetch from; each follower's
//! shard copies the leader's batches over the mailboxes, pulling them as Kafka's followers fetch
//! (`follower`), and the leader keeps the in-sync replicas and the high watermark from what they
//! report (`leader`). Leadership and ISR are the controller's (shard 0) to record, in the topic
//! catalog, like every other topic change.

pub mod election;
pub mod follower;
pub mod leader;
#[cfg(test)]
mod power_loss;

use super::catalog::{PartitionState, TopicMeta};
use super::topics::{self, Refusal};
use super::{errors, state, Partition};
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
        Some(if state.leader == Some(me) {
            Role::Leader(Rc::new(leader::Leader::new(me, state.epoch, replicas, state.isr)))
        } else {
            Role::Follower(Rc::new(follower::Follower { leader: state.leader, epoch: state.epoch }))
        })
    }

    pub fn leader(&self) -> Option<&Rc<leader::Leader>> {
        match self {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Whether clients may produce to and fetch from this replica.
    pub fn leads(&self) -> bool {
        !matches!(self, Role::Follower(_))
    }

    /// The same role, with the same leader in the same epoch.
    fn same_as(&self, other: &Role) -> bool {
        match (self, other) {
            (Role::Sole, Role::Sole) => true,
            (Role::Leader(a), Role::Leader(b)) => a.epoch == b.epoch,
            (Role::Follower(a), Role::Follower(b)) => (a.leader, a.epoch) == (b.leader, b.epoch),
            _ => false,
        }
    }
}

/// Changes partition `p`'s recorded state on the controller: `change` gets the state, the
/// replicas and the topic, and refuses (the answer then) or edits the state, which reaches every
/// shard as topic changes do (`apply`). Returns the new state.
pub async fn change_state(
    topic: String,
    p: i32,
    change: impl FnOnce(&mut PartitionState, &[u16], &TopicMeta) -> Result<(), Refusal> + Send + 'static,
) -> Result<PartitionState, Refusal> {
    let shards = state().shard.count;
    let meta = topics::update(topic, move |meta| {
        if p < 0 || p >= meta.partitions {
            return Err((errors::UNKNOWN_TOPIC_OR_PARTITION, "no such partition".into()));
        }
        let replicas = replicas(meta, p, shards);
        let mut st = meta.state(p, &replicas);
        change(&mut st, &replicas, meta)?;
        meta.set_state(p, st, &replicas);
        Ok(())
    })
    .await?;
    Ok(meta.state(p, &replicas(&meta, p, shards)))
}

/// The file in the data directory recording the shard count its replicated topics were placed by.
const SHARD_COUNT_FILE: &str = "replica-shards";

/// Start-up, before the shards load the catalog in `data_dir`: refuses a shard count other than
/// the one its replicated topics were placed by (their replicas would be looked for on other
/// shards and directories, and the copies they have left behind), then gives every replicated
/// partition with a leader a new epoch (`election::restarted`). Returns how many got one.
pub async fn at_start(data_dir: &std::path::Path, shards: usize) -> std::io::Result<usize> {
    let mut topics = super::catalog::load(data_dir)?;
    let path = data_dir.join(SHARD_COUNT_FILE);
    let recorded = shards::fs::read(&path).ok().and_then(|b| String::from_utf8(b).ok()?.trim().parse::<usize>().ok());
    let replicated: Vec<String> = topics.values().filter(|m| m.replication_factor > 1).map(|m| m.name.clone()).collect();
    match recorded {
        Some(n) if n != shards && !replicated.is_empty() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} holds topics with replicas placed on {n} shards ({}{}); start with --shards {n}",
                    data_dir.display(),
                    replicated.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                    if replicated.len() > 3 { ", …" } else { "" }
                ),
            ));
        }
        Some(n) if n == shards => {}
        _ => shards::fs::write_durably(&path, format!("{shards}\n").into_bytes()).await?,
    }
    let mut changed = 0;
    for meta in topics.values_mut().filter(|m| m.replication_factor > 1) {
        for p in 0..meta.partitions {
            let replicas = replicas(meta, p, shards);
            let mut st = meta.state(p, &replicas);
            if election::restarted(&mut st) {
                meta.set_state(p, st, &replicas);
                changed += 1;
            }
        }
    }
    if changed > 0 {
        super::catalog::save(data_dir, super::catalog::encode(&topics)).await?;
    }
    Ok(changed)
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

/// Sets this shard's newly opened (or newly assigned) replica `part` of `meta`'s partition `p` to
/// work in its role, and watches its log: a replica whose log fails is reported to the controller,
/// which moves leadership away from it.
pub fn start(meta: &TopicMeta, p: i32, part: &Rc<Partition>) {
    match &part.role {
        Role::Sole => return,
        Role::Leader(leader) => leader.start(&part.log, part.rules.get().min_insync_replicas),
        Role::Follower(f) => {
            part.log.follow();
            if let Some(leader) = f.leader {
                shards::spawn_local(follower::run(meta.name.clone(), p, part.clone(), leader)).detach();
            }
        }
    }
    let me = state().shard.id as u16;
    let replicas = replicas(meta, p, state().shard.count);
    let dir_ok = state().log_dir_failed.borrow().is_none();
    if meta.state(p, &replicas).offline.contains(&me) && !part.log.failed() && dir_ok {
        election::report(meta.name.clone(), p, me, election::Event::Online);
    }
    let (topic, watched) = (meta.name.clone(), part.clone());
    shards::spawn_local(async move {
        watched.log.wait_failed().await;
        let current = state().partition(&topic, p);
        if !watched.log.failed() || !current.is_some_and(|c| Rc::ptr_eq(&c.log, &watched.log)) {
            return;
        }
        if watched.log.disk_failed() {
            dir_failed(&format!("{topic}-{p}: a write failed"));
        } else {
            election::report(topic, p, me, election::Event::Failed);
        }
    })
    .detach();
}

/// Brings this shard's replicas of `meta`'s partitions to the roles the controller recorded: a
/// replica whose role, leader or epoch changed is replaced by one in its new role over the same
/// log; a leader whose role stayed takes the recorded ISR.
pub fn apply(meta: &TopicMeta) {
    let st = state();
    for p in 0..meta.partitions {
        let Some(part) = st.partition(&meta.name, p) else { continue };
        let Some(desired) = Role::of(meta, p, st.shard.count, st.shard.id) else { continue };
        if part.role.same_as(&desired) {
            if let Role::Leader(leader) = &part.role {
                leader.refresh(&part.log, part.rules.get().min_insync_replicas, meta.state(p, leader.replicas()).isr);
            }
            continue;
        }
        let swapped = Rc::new(Partition {
            topic_id: part.topic_id,
            log: part.log.clone(),
            rules: std::cell::Cell::new(part.rules.get()),
            role: desired,
            traffic: part.traffic.clone(),
        });
        st.partitions.borrow_mut().insert((meta.name.clone(), p), swapped.clone());
        tracing::info!(topic = %meta.name, partition = p, epoch = epoch(meta, p, st.shard.count), leads = swapped.role.leader().is_some(), "replica role changed");
        start(meta, p, &swapped);
    }
}

/// This shard's log directory failed (a write error other than a full disk, in `what`): as Kafka
/// takes a failed log directory offline whole, every replica this shard holds of a replicated
/// topic is reported failed, written to or not, so that leadership moves off the disk at once.
pub fn dir_failed(what: &str) {
    let st = state();
    if st.log_dir_failed.borrow().is_some() {
        return;
    }
    *st.log_dir_failed.borrow_mut() = Some(what.to_string());
    tracing::error!(dir = %st.log_dir().display(), cause = what, "log directory failed: its replicas are offline");
    let me = st.shard.id as u16;
    let held: Vec<(String, i32)> = st
        .topics
        .borrow()
        .values()
        .filter(|meta| meta.replication_factor > 1)
        .flat_map(|meta| (0..meta.partitions).filter(|&p| st.holds_replica(meta, p)).map(|p| (meta.name.clone(), p)).collect::<Vec<_>>())
        .collect();
    for (topic, p) in held {
        election::report(topic, p, me, election::Event::Failed);
    }
}
