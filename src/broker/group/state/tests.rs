//! The group state machine driven with explicit time: Kafka's rules, one property a test.

use super::*;

const DELAY: Duration = Duration::from_millis(3000);

fn request(member_id: &str, instance: Option<&str>, metadata: &'static [u8]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(metadata))],
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

fn waiting(step: JoinStep) -> String {
    match step {
        JoinStep::Wait { member_id } => member_id,
        JoinStep::Reply(r) => panic!("answered at once: {r:?}"),
    }
}

fn id(n: &str) -> impl FnOnce() -> String + '_ {
    move || n.to_string()
}

/// A Stable group of members "a" (leader) and "b" at generation 1, assignments "A" and "B", and
/// the time it became so.
fn stable_pair(instance: Option<&str>) -> (Group, Instant) {
    let t0 = Instant::now();
    let mut g = Group::new(DELAY, t0, ShardBytes::default());
    waiting(g.join(request("", None, b"m"), t0, id("a")));
    waiting(g.join(request("", instance, b"m"), t0, id("b")));
    assert!(!g.try_complete_join(t0 + DELAY), "b arrived during the delay: it is extended once");
    let t = t0 + DELAY * 2;
    assert!(g.try_complete_join(t));
    assert_eq!(g.phase, Phase::CompletingRebalance);
    assert_eq!(g.take_join_reply("a", None).unwrap().members.len(), 2, "the leader learns the members");
    assert!(g.take_join_reply("b", None).unwrap().members.is_empty(), "followers do not");
    assert!(g.sync("b", instance, 1, vec![], t).is_none(), "follower waits for the leader");
    let assign = vec![("a".to_string(), Bytes::from_static(b"A")), ("b".to_string(), Bytes::from_static(b"B"))];
    assert!(g.sync("a", None, 1, assign, t).is_none());
    assert_eq!(g.take_sync_reply("a", None), Some((errors::NONE, Bytes::from_static(b"A"))));
    assert_eq!(g.take_sync_reply("b", instance), Some((errors::NONE, Bytes::from_static(b"B"))));
    assert_eq!((g.phase, g.generation), (Phase::Stable, 1));
    assert_eq!(g.held, g.recount(), "the bytes held, kept change by change");
    (g, t)
}

#[test]
fn first_rebalance_waits_the_initial_delay_and_takes_late_joiners() {
    let t0 = Instant::now();
    let mut g = Group::new(DELAY, t0, ShardBytes::default());
    waiting(g.join(request("", None, b"m"), t0, id("a")));
    assert!(!g.try_complete_join(t0 + DELAY / 2), "the first member does not get everything alone");
    waiting(g.join(request("", None, b"m"), t0 + DELAY / 2, id("b")));
    assert!(!g.try_complete_join(t0 + DELAY), "a new member extends the delay");
    assert!(!g.try_complete_join(t0 + DELAY + DELAY / 2));
    assert!(g.try_complete_join(t0 + DELAY * 2 + Duration::from_millis(1)));
    assert_eq!(g.generation, 1);
    assert_eq!(g.members.len(), 2);
}

#[test]
fn offset_commits_follow_kafkas_state_rules() {
    let (mut g, t) = stable_pair(None);
    assert_eq!(g.commit_error("a", None, 1, t), None, "stable: stored");
    // A third member joins: the group prepares a rebalance; generation 1 still owns its partitions.
    waiting(g.join(request("", None, b"m"), t, id("c")));
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert_eq!(g.commit_error("a", None, 1, t), None, "PreparingRebalance: commits of the ending generation are stored");
    assert_eq!(g.commit_error("a", None, 0, t), Some(errors::ILLEGAL_GENERATION));
    assert_eq!(g.commit_error("zz", None, 1, t), Some(errors::UNKNOWN_MEMBER_ID));
    assert_eq!(g.commit_error("", None, -1, t), Some(errors::UNKNOWN_MEMBER_ID), "only members commit for a live group");
    // Everyone rejoins: CompletingRebalance, generation 2.
    waiting(g.join(request("a", None, b"m"), t, id("-")));
    waiting(g.join(request("b", None, b"m"), t, id("-")));
    assert_eq!(g.phase, Phase::CompletingRebalance);
    assert_eq!(g.commit_error("a", None, 2, t), Some(errors::REBALANCE_IN_PROGRESS));
    assert_eq!(g.commit_error("a", None, 1, t), Some(errors::ILLEGAL_GENERATION), "the old generation is over");
}

#[test]
fn an_empty_group_takes_commits_from_outside_group_management_only() {
    let t0 = Instant::now();
    let mut g = Group::new(DELAY, t0, ShardBytes::default());
    assert_eq!(g.commit_error("", None, -1, t0), None);
    assert_eq!(g.commit_error("m", None, 3, t0), Some(errors::UNKNOWN_MEMBER_ID));
}

#[test]
fn a_follower_rejoining_unchanged_keeps_the_group_stable_but_the_leader_rebalances() {
    let (mut g, t) = stable_pair(None);
    match g.join(request("b", None, b"m"), t, id("-")) {
        JoinStep::Reply(r) => assert_eq!((r.error, r.generation, r.leader.as_str()), (errors::NONE, 1, "a")),
        JoinStep::Wait { .. } => panic!("an unchanged follower must not start a rebalance"),
    }
    assert_eq!(g.phase, Phase::Stable);
    waiting(g.join(request("b", None, b"changed"), t, id("-")));
    assert_eq!(g.phase, Phase::PreparingRebalance, "changed metadata rebalances");
}

#[test]
fn a_static_member_rejoining_gets_its_assignment_back_without_a_rebalance() {
    let (mut g, t) = stable_pair(Some("inst-b"));
    let reply = match g.join(request("", Some("inst-b"), b"m"), t, id("b2")) {
        JoinStep::Reply(r) => r,
        JoinStep::Wait { .. } => panic!("a known static member with the same protocol must not rebalance"),
    };
    assert_eq!((reply.error, reply.member_id.as_str(), reply.generation), (errors::NONE, "b2", 1));
    assert_eq!((g.phase, g.generation), (Phase::Stable, 1));
    assert_eq!(g.sync("b2", Some("inst-b"), 1, vec![], t), Some((errors::NONE, Bytes::from_static(b"B"))));
    assert_eq!(g.heartbeat("b", Some("inst-b"), 1, t), errors::FENCED_INSTANCE_ID, "the old incarnation is fenced");
    assert_eq!(g.heartbeat("a", None, 1, t), errors::NONE, "the other member saw nothing");
    assert_eq!(g.held, g.recount(), "the new incarnation counted in the old one's place");
}

#[test]
fn a_pending_member_id_holds_the_join_phase_until_it_joins_or_expires() {
    let (mut g, t) = stable_pair(None);
    let mut known = request("", None, b"m");
    known.require_known_member_id = true;
    let pending = match g.join(known, t, id("p")) {
        JoinStep::Reply(r) => {
            assert_eq!(r.error, errors::MEMBER_ID_REQUIRED);
            r.member_id
        }
        JoinStep::Wait { .. } => panic!("KIP-394: a new dynamic member gets its id first"),
    };
    assert_eq!(g.held, g.recount(), "a pending id is counted");
    waiting(g.join(request("a", None, b"m"), t, id("-")));
    waiting(g.join(request("b", None, b"m"), t, id("-")));
    assert_eq!(g.phase, Phase::PreparingRebalance, "the pending member has not joined yet");
    waiting(g.join(request(&pending, None, b"m"), t, id("-")));
    assert_eq!((g.phase, g.generation, g.members.len()), (Phase::CompletingRebalance, 2, 3));
    assert_eq!(g.held, g.recount());
    // One that never joins expires.
    let mut late = request("", None, b"m");
    late.require_known_member_id = true;
    let _ = g.join(late, t, id("q"));
    g.expire(t + Duration::from_secs(11));
    assert!(g.pending.is_empty());
    assert_eq!(g.held, g.recount());
}

#[test]
fn silent_members_expire_and_the_rest_rebalance() {
    let (mut g, t0) = stable_pair(None);
    let t = t0 + Duration::from_secs(5);
    assert_eq!(g.heartbeat("a", None, 1, t), errors::NONE);
    g.expire(t0 + Duration::from_secs(11));
    assert!(!g.members.contains_key("b"), "b said nothing for longer than its session timeout");
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert_eq!(g.heartbeat("a", None, 1, t), errors::REBALANCE_IN_PROGRESS);
    assert_eq!(g.held, g.recount());
}

#[test]
fn a_rebalance_answers_waiting_followers_with_rebalance_in_progress() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO, t0, ShardBytes::default());
    waiting(g.join(request("", None, b"m"), t0, id("a")));
    assert_eq!(g.phase, Phase::CompletingRebalance, "no delay: the join ends at once");
    waiting(g.join(request("", None, b"m"), t0, id("b")));
    waiting(g.join(request("a", None, b"m"), t0, id("-")));
    assert_eq!(g.phase, Phase::CompletingRebalance);
    assert!(g.sync("b", None, 2, vec![], t0).is_none());
    waiting(g.join(request("", None, b"m"), t0, id("c")));
    assert_eq!(g.take_sync_reply("b", None), Some((errors::REBALANCE_IN_PROGRESS, Bytes::new())));
    assert_eq!(g.held, g.recount());
}

#[test]
fn the_shard_count_follows_what_members_hold_and_a_dropped_group_gives_it_back() {
    let (mut g, t) = stable_pair(None);
    let shard = g.shard_bytes.clone();
    assert_eq!(shard.get(), 0, "nothing counted until the coordinator accounts");
    g.account();
    let both = shard.get();
    assert_eq!(both, g.member_bytes("a", None).0 + g.member_bytes("b", None).0);
    assert!(
        g.member_bytes("a", None).0 > "a".len() + "c".len() + "/127.0.0.1".len() + "rangem".len() + "A".len(),
        "metadata, assignment, strings and bookkeeping"
    );
    // A second group on the same shard adds to the same count.
    let mut other = Group::new(DELAY, t, shard.clone());
    waiting(other.join(request("", None, &[7; 1000]), t, id("x")));
    other.account();
    assert_eq!(shard.get(), both + other.member_bytes("x", None).0);
    assert!(other.member_bytes("x", None).0 > 1000);
    assert_eq!(g.leave("b", None, t), errors::NONE);
    assert_eq!(g.held, g.recount());
    g.account();
    assert_eq!(shard.get(), g.member_bytes("a", None).0 + other.member_bytes("x", None).0, "b's bytes are given back");
    drop(other);
    assert_eq!(shard.get(), g.member_bytes("a", None).0);
    drop(g);
    assert_eq!(shard.get(), 0);
    // A static member rejoining without its member id is found by its instance id.
    let (g, _) = stable_pair(Some("i"));
    assert_eq!(g.member_bytes("", Some("i")).0, g.member_bytes("b", None).0);
    assert_eq!(g.member_bytes("", Some("unknown")).0, 0);
}

#[test]
fn a_refused_assignment_answers_the_waiting_followers_and_rebalances() {
    let (mut g, t) = stable_pair(None);
    // A new member: the next round.
    let c = waiting(g.join(request("", None, b"m"), t, id("c")));
    waiting(g.join(request("a", None, b"m"), t, id("-")));
    waiting(g.join(request("b", None, b"m"), t, id("-")));
    g.try_complete_join(t);
    assert_eq!((g.phase, g.generation), (Phase::CompletingRebalance, 2), "every member rejoined: the round ends");
    assert!(g.sync("b", None, 2, vec![], t).is_none(), "a follower waits for the leader");
    assert!(!g.awaits_assignment_from("b", None, 2) && !g.awaits_assignment_from("a", None, 1));
    assert!(g.awaits_assignment_from("a", None, 2));
    g.refuse_assignment(errors::UNKNOWN_SERVER_ERROR, t);
    assert_eq!(g.take_sync_reply("b", None), Some((errors::UNKNOWN_SERVER_ERROR, Bytes::new())));
    assert_eq!(g.phase, Phase::PreparingRebalance);
    assert_eq!(g.assignment_bytes(), 0, "the old assignments are gone");
    assert_eq!(g.take_sync_reply(&c, None), Some((errors::REBALANCE_IN_PROGRESS, Bytes::new())), "one that had not synced rejoins");
    assert_eq!(g.held, g.recount());
}
