//! Leader election, on the controller (Kafka's `PartitionChangeBuilder`): a replica whose log fails
//! is marked offline and leaves the ISR (the last one in sync stays in it, as in Kafka, so that it
//! may lead again when it comes back); if it led, the first replica in assignment order that is in
//! sync and online leads in the next epoch — or, with `unclean.leader.election.enable`, the first
//! online one (its ISR then only itself), or none. A replica that opens again comes back online and
//! leads a partition that has no leader if it is in sync (or unclean election allows it).

use super::super::{config, errors, state};
use super::{change_state, replicas};
use crate::broker::catalog::{PartitionState, TopicMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The replica's log failed (a disk error, a full disk).
    Failed,
    /// The replica's log opened and works.
    Online,
}

/// Tells the controller about `replica` of `topic`/`p`; the change, if any, reaches every shard as
/// topic changes do (`replication::apply`).
pub fn report(topic: String, p: i32, replica: u16, event: Event) {
    shards::spawn_local(async move {
        let changed = change_state(topic.clone(), p, move |st, replicas, meta| {
            if change(st, replicas, replica, event, unclean_allowed(meta)) {
                Ok(())
            } else {
                Err((errors::INVALID_REQUEST, "nothing to change".into()))
            }
        })
        .await;
        match changed {
            Ok(st) => {
                tracing::warn!(%topic, partition = p, replica, ?event, leader = ?st.leader, epoch = st.epoch, isr = ?st.isr, offline = ?st.offline, "partition state changed");
            }
            Err((_, why)) => tracing::debug!(%topic, partition = p, replica, ?event, %why, "no partition change"),
        }
    })
    .detach();
}

fn unclean_allowed(meta: &TopicMeta) -> bool {
    let st = state();
    let values = config::topic::resolve(&meta.configs, &config::shard_topic_defaults(&st));
    values.get("unclean.leader.election.enable").is_some_and(|v| v.value.eq_ignore_ascii_case("true"))
}

/// Applies `event` of `replica` to `st`; whether it changed.
pub(super) fn change(st: &mut PartitionState, replicas: &[u16], replica: u16, event: Event, unclean: bool) -> bool {
    let before = st.clone();
    match event {
        Event::Failed => {
            if !st.offline.contains(&replica) {
                st.offline.push(replica);
            }
            if st.isr.len() > 1 {
                st.isr.retain(|&r| r != replica);
            }
            if st.leader == Some(replica) {
                st.leader = None;
            }
        }
        Event::Online => st.offline.retain(|&r| r != replica),
    }
    if st.leader.is_none() {
        st.leader = elect(st, replicas, unclean);
    }
    // Every change of leader (to none included) is a new epoch.
    if st.leader != before.leader {
        st.epoch += 1;
    }
    *st != before
}

/// A leader for a partition that has none: the first online replica in sync, or (unclean) the
/// first online one, whose ISR is then only itself — what only the others held is lost.
fn elect(st: &mut PartitionState, replicas: &[u16], unclean: bool) -> Option<u16> {
    let online = |r: &&u16| !st.offline.contains(r);
    if let Some(&clean) = replicas.iter().filter(online).find(|r| st.isr.contains(r)) {
        return Some(clean);
    }
    let chosen = replicas.iter().find(online).copied().filter(|_| unclean)?;
    st.isr = vec![chosen];
    Some(chosen)
}

/// The broker started again: every partition with a leader gets a new epoch, as Kafka's controller
/// gives one when a leader's broker comes back. A leader may have lost in the crash batches it
/// wrote but never fsynced, which a follower copied and kept; leading on in the same epoch, it would
/// give those offsets to other records, and the follower — whose newest epoch would still end at
/// the leader's log end — would keep both. In a new epoch, the follower cuts its copy where the
/// leader's old epoch ends.
pub fn restarted(st: &mut PartitionState) -> bool {
    let led = st.leader.is_some();
    if led {
        st.epoch += 1;
    }
    led
}

/// ElectLeaders' two kinds, Kafka's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Back to the first replica, if it is in sync and online.
    Preferred,
    /// A leader for a partition that has none, in sync or not.
    Unclean,
}

/// Elects a leader of `kind` in `st`: NONE if it changed (next epoch), else ELECTION_NOT_NEEDED,
/// PREFERRED_LEADER_NOT_AVAILABLE or ELIGIBLE_LEADERS_NOT_AVAILABLE, as Kafka's controller answers.
pub fn elect_as_asked(st: &mut PartitionState, replicas: &[u16], kind: Kind) -> i16 {
    match kind {
        Kind::Preferred => {
            let preferred = replicas.first().copied();
            if st.leader == preferred {
                return errors::ELECTION_NOT_NEEDED;
            }
            match preferred {
                Some(r) if st.isr.contains(&r) && !st.offline.contains(&r) => {
                    st.leader = Some(r);
                    st.epoch += 1;
                    errors::NONE
                }
                _ => errors::PREFERRED_LEADER_NOT_AVAILABLE,
            }
        }
        Kind::Unclean if st.leader.is_some() => errors::ELECTION_NOT_NEEDED,
        Kind::Unclean => match elect(st, replicas, true) {
            Some(leader) => {
                st.leader = Some(leader);
                st.epoch += 1;
                errors::NONE
            }
            None => errors::ELIGIBLE_LEADERS_NOT_AVAILABLE,
        },
    }
}

/// `auto.leader.rebalance.enable`: every `leader.imbalance.check.interval.seconds`, the controller
/// moves each partition's leadership back to its preferred replica where that one is in sync and
/// online (Kafka also waits for a broker's imbalance to pass `leader.imbalance.per.broker.percentage`;
/// Weir moves every such partition).
pub async fn rebalance_loop(every: std::time::Duration) {
    loop {
        shards::sleep(every).await;
        let shards = state().shard.count;
        let due: Vec<(String, i32)> = state()
            .topics
            .borrow()
            .values()
            .filter(|meta| meta.replication_factor > 1)
            .flat_map(|meta| {
                (0..meta.partitions)
                    .filter(|&p| {
                        let replicas = replicas(meta, p, shards);
                        elect_as_asked(&mut meta.state(p, &replicas), &replicas, Kind::Preferred) == errors::NONE
                    })
                    .map(|p| (meta.name.clone(), p))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (topic, p) in due {
            let outcome = apply_election(topic.clone(), p, Kind::Preferred).await;
            tracing::info!(%topic, partition = p, error = outcome, "preferred leader election (auto.leader.rebalance.enable)");
        }
    }
}

/// Runs an election of `kind` for `topic`/`p` on the controller; its error code.
pub async fn apply_election(topic: String, p: i32, kind: Kind) -> i16 {
    let changed = change_state(topic, p, move |st, replicas, _| match elect_as_asked(st, replicas, kind) {
        errors::NONE => Ok(()),
        code => Err((code, String::new())),
    })
    .await;
    changed.map_or_else(|(code, _)| code, |_| errors::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: Option<u16>, epoch: i32, isr: &[u16], offline: &[u16]) -> PartitionState {
        PartitionState { leader, epoch, isr: isr.to_vec(), offline: offline.to_vec() }
    }

    #[test]
    fn a_failed_leader_hands_over_to_the_next_in_sync_replica() {
        let mut st = state(Some(0), 0, &[0, 1, 2], &[]);
        assert!(change(&mut st, &[0, 1, 2], 0, Event::Failed, false));
        assert_eq!(st, state(Some(1), 1, &[1, 2], &[0]));
        assert!(change(&mut st, &[0, 1, 2], 0, Event::Online, false));
        assert_eq!(st, state(Some(1), 1, &[1, 2], &[]));
        assert!(!change(&mut st, &[0, 1, 2], 0, Event::Online, false));
    }

    #[test]
    fn the_last_in_sync_replica_stays_in_sync_and_leads_again_when_back() {
        let mut st = state(Some(0), 3, &[0], &[]);
        assert!(change(&mut st, &[0, 1], 0, Event::Failed, false));
        assert_eq!(st, state(None, 4, &[0], &[0]));
        assert!(!change(&mut st, &[0, 1], 1, Event::Online, false), "replica 1 is not in sync: no clean election");
        assert!(change(&mut st, &[0, 1], 0, Event::Online, false));
        assert_eq!(st, state(Some(0), 5, &[0], &[]));
    }

    #[test]
    fn unclean_election_takes_an_online_replica_out_of_sync() {
        let mut st = state(Some(0), 1, &[0], &[]);
        assert!(change(&mut st, &[0, 1], 0, Event::Failed, true));
        assert_eq!(st, state(Some(1), 2, &[1], &[0]));
    }

    #[test]
    fn elections_asked_for_answer_as_kafka() {
        let mut st = state(Some(1), 4, &[0, 1], &[]);
        assert_eq!(elect_as_asked(&mut st, &[0, 1], Kind::Preferred), errors::NONE);
        assert_eq!(st, state(Some(0), 5, &[0, 1], &[]));
        assert_eq!(elect_as_asked(&mut st, &[0, 1], Kind::Preferred), errors::ELECTION_NOT_NEEDED);
        let mut out_of_sync = state(Some(1), 2, &[1], &[]);
        assert_eq!(elect_as_asked(&mut out_of_sync, &[0, 1], Kind::Preferred), errors::PREFERRED_LEADER_NOT_AVAILABLE);
        assert_eq!(elect_as_asked(&mut out_of_sync, &[0, 1], Kind::Unclean), errors::ELECTION_NOT_NEEDED);
        let mut leaderless = state(None, 3, &[0], &[0]);
        assert_eq!(elect_as_asked(&mut leaderless, &[0, 1], Kind::Unclean), errors::NONE);
        assert_eq!(leaderless, state(Some(1), 4, &[1], &[0]));
        let mut all_offline = state(None, 3, &[0], &[0, 1]);
        assert_eq!(elect_as_asked(&mut all_offline, &[0, 1], Kind::Unclean), errors::ELIGIBLE_LEADERS_NOT_AVAILABLE);
    }
}
