//! One group's membership state machine: Kafka's classic protocol with the rules of Kafka's
//! `GroupCoordinator` (which error where, when a rebalance starts and ends, static membership).
//!
//! Pure state: no I/O, no awaiting, time passed in. The coordinator shard owns every `Group` and
//! drives it from the API handlers (`join.rs`, `membership.rs`, `offsets.rs`) and the expiry tick.
//! A request that must wait (JoinGroup until the join phase ends, a follower's SyncGroup until the
//! leader's assignment) parks on `changed` and finds its answer in its member's `join_reply` /
//! `sync_reply`, set here when the phase ends — Kafka's callbacks, as data.

use super::super::errors;
use bytes::Bytes;
use shards::Notify;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A member that joined but never completed a round is dropped after this long (Kafka's
/// `NewMemberJoinTimeoutMs`): it may have gone away while its JoinGroup was parked.
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// What a JoinGroup call answers.
#[derive(Debug, Clone, Default)]
pub struct JoinReply {
    pub error: i16,
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    /// KIP-814: the leader is told who the members are but must not compute a new assignment.
    pub skip_assignment: bool,
    /// (member id, group instance id, metadata for the chosen protocol): the leader's reply only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinReply {
    pub fn error(member_id: &str, error: i16) -> Self {
        JoinReply { error, member_id: member_id.to_string(), generation: -1, ..Default::default() }
    }
}

/// A JoinGroup is answered at once, or waits for the join phase to end.
pub enum JoinStep {
    Reply(JoinReply),
    Wait { member_id: String },
}

/// A join request, as the state machine sees it.
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ without an instance id: a new member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+ understands `skip_assignment`.
    pub supports_skip_assignment: bool,
}

pub struct Member {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub last_heartbeat: Instant,
    pub assignment: Bytes,
    /// Has not completed a join round yet.
    is_new: bool,
    /// Its JoinGroup is parked until the join phase ends.
    awaiting_join: bool,
    /// Its SyncGroup is parked until the leader's assignment (or a new round).
    awaiting_sync: bool,
    pub join_reply: Option<JoinReply>,
    pub sync_reply: Option<(i16, Bytes)>,
}

impl Member {
    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    /// Kafka's `hasSatisfiedHeartbeat`: members parked in a rebalance need not heartbeat, except new
    /// ones, which get `NEW_MEMBER_JOIN_TIMEOUT`.
    fn alive(&self, now: Instant) -> bool {
        if self.is_new {
            return now.duration_since(self.last_heartbeat) < NEW_MEMBER_JOIN_TIMEOUT.max(self.session_timeout);
        }
        self.awaiting_join || self.awaiting_sync || now.duration_since(self.last_heartbeat) < self.session_timeout
    }
}

/// When the current join phase may end.
#[derive(Debug, Clone, Copy)]
enum JoinTimer {
    /// `group.initial.rebalance.delay.ms`: the first round of an empty group waits `delay`, and again
    /// (at most `remaining` in all) while new members keep arriving.
    Initial { deadline: Instant, configured: Duration, delay: Duration, remaining: Duration, new_member_added: bool },
    /// Ends when every member has rejoined, or at the deadline.
    Rebalance { deadline: Instant },
}

pub struct Group {
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with their expiry.
    pending: HashMap<String, Instant>,
    /// Members that have not sent SyncGroup since the join phase ended, and until when they may.
    pending_sync: HashSet<String>,
    sync_deadline: Instant,
    timer: JoinTimer,
    /// Topics the members subscribe to (consumer protocol), known after a round; `None`: unknown.
    subscribed: Option<HashSet<String>>,
    initial_delay: Duration,
    pub changed: Rc<Notify>,
    /// The bytes this group holds for its members and pending ids, kept up to date by every change
    /// to them (`held.rs`); the shard's count of all its groups' bytes, and this group's share of
    /// it as last counted.
    held: usize,
    shard_bytes: ShardBytes,
    accounted: usize,
}

impl Group {
    pub fn new(initial_delay: Duration, now: Instant, shard_bytes: ShardBytes) -> Self {
        Group {
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            pending: HashMap::new(),
            pending_sync: HashSet::new(),
            sync_deadline: now,
            timer: JoinTimer::Rebalance { deadline: now },
            subscribed: None,
            initial_delay,
            changed: Rc::new(Notify::default()),
            held: 0,
            shard_bytes,
            accounted: 0,
        }
    }

    /// Nothing left to keep: no members, no pending ids.
    pub fn is_vacant(&self) -> bool {
        self.phase == Phase::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// The instance id's current member id differs from the caller's: an older incarnation.
    pub fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.and_then(|i| self.statics.get(i)).is_some_and(|m| m != member_id)
    }

    /// The error for a caller that is not the member it claims to be, if any.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Option<i16> {
        if self.is_fenced(member_id, instance_id) {
            Some(errors::FENCED_INSTANCE_ID)
        } else if !self.members.contains_key(member_id) {
            Some(errors::UNKNOWN_MEMBER_ID)
        } else {
            None
        }
    }

    /// Why a parked request's member is gone: replaced by a newer incarnation, or removed.
    pub fn gone_error(&self, member_id: &str, instance_id: Option<&str>) -> i16 {
        if self.is_fenced(member_id, instance_id) {
            errors::FENCED_INSTANCE_ID
        } else {
            errors::UNKNOWN_MEMBER_ID
        }
    }

    /// Does the group subscribe to `topic`? Unknown subscriptions count as yes.
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        self.subscribed.as_ref().is_none_or(|t| t.contains(topic))
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty offer; otherwise the type must
    /// match and one offered protocol must be supported by every member.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.phase == Phase::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type) && !self.common_protocols(protocols.iter().map(|(n, _)| n)).is_empty()
    }

    /// Those of `names` every member supports. By sets: a client's protocol list has no bound, and
    /// scanning lists against lists once held the coordinator's shard for minutes.
    fn common_protocols<'a>(&self, names: impl Iterator<Item = &'a String>) -> HashSet<&'a String> {
        let mut common: HashSet<&String> = names.collect();
        for m in self.members.values() {
            let theirs: HashSet<&String> = m.protocols.iter().map(|(n, _)| n).collect();
            common.retain(|n| theirs.contains(n));
        }
        common
    }

    /// The protocol every member supports that most members prefer (each votes for its first
    /// listed candidate); ties go to the leader's order.
    fn select_protocol(&self) -> Option<String> {
        let first = self.leader.as_ref().and_then(|l| self.members.get(l)).or_else(|| self.members.values().next())?;
        let common = self.common_protocols(first.protocols.iter().map(|(n, _)| n));
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(n) = m.protocols.iter().map(|(n, _)| n).find(|n| common.contains(n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        let mut best: Option<(&String, usize)> = None;
        for (c, _) in first.protocols.iter().filter(|(n, _)| common.contains(n)) {
            let n = votes.get(c).copied().unwrap_or(0);
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((c, n));
            }
        }
        best.map(|(c, _)| c.clone())
    }

    /// Topics of the consumer protocol's subscriptions, or `None` if any cannot be read.
    fn compute_subscribed(&self) -> Option<HashSet<String>> {
        let protocol = self.protocol.as_deref()?;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut topics = HashSet::new();
        for m in self.members.values() {
            topics.extend(super::subscription::topics(&m.metadata(protocol))?);
        }
        Some(topics)
    }

    fn reply_for(&self, member_id: &str) -> JoinReply {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinReply {
            error: errors::NONE,
            member_id: member_id.to_string(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            members: if is_leader { self.member_list(&protocol) } else { Vec::new() },
        }
    }

    fn member_list(&self, protocol: &str) -> Vec<(String, Option<String>, Bytes)> {
        self.members.iter().map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata(protocol))).collect()
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant) {
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(now);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.phase == Phase::CompletingRebalance {
            // Followers waiting for an assignment of this generation rejoin instead.
            let mut freed = 0;
            for m in self.members.values_mut() {
                freed += std::mem::take(&mut m.assignment).len();
                if std::mem::take(&mut m.awaiting_sync) {
                    m.sync_reply = Some((errors::REBALANCE_IN_PROGRESS, Bytes::new()));
                }
            }
            self.held -= freed;
        }
        let timeout = self.rebalance_timeout();
        self.timer = if self.phase == Phase::Empty {
            let delay = self.initial_delay;
            JoinTimer::Initial {
                deadline: now + delay,
                configured: delay,
                delay,
                remaining: timeout.saturating_sub(delay),
                new_member_added: false,
            }
        } else {
            JoinTimer::Rebalance { deadline: now + timeout }
        };
        self.phase = Phase::PreparingRebalance;
        self.pending_sync.clear();
        self.changed.notify_all();
    }

    /// When the current join phase ends at the latest (for a parked JoinGroup's sleep).
    pub fn join_deadline(&self) -> Instant {
        match self.timer {
            JoinTimer::Initial { deadline, .. } | JoinTimer::Rebalance { deadline } => deadline,
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join)
    }

    /// Ends the join phase if its time has come: drops dynamic members that did not rejoin, bumps the
    /// generation, chooses the protocol and answers every parked JoinGroup. True if it ended.
    pub fn try_complete_join(&mut self, now: Instant) -> bool {
        if self.phase != Phase::PreparingRebalance {
            return false;
        }
        match self.timer {
            JoinTimer::Initial { deadline, configured, delay, remaining, new_member_added } => {
                if now < deadline {
                    return false;
                }
                if new_member_added && !remaining.is_zero() {
                    let next = configured.min(remaining);
                    self.timer = JoinTimer::Initial {
                        deadline: now + next,
                        configured,
                        delay: next,
                        remaining: remaining.saturating_sub(delay),
                        new_member_added: false,
                    };
                    return false;
                }
            }
            JoinTimer::Rebalance { deadline } => {
                if !self.all_joined() && now < deadline {
                    return false;
                }
            }
        }
        self.complete_join(now)
    }

    fn complete_join(&mut self, now: Instant) -> bool {
        let dropped: Vec<String> =
            self.members.iter().filter(|(_, m)| !m.awaiting_join && m.instance_id.is_none()).map(|(id, _)| id.clone()).collect();
        for id in dropped {
            tracing::info!(member = %id, "member did not rejoin in time; removed");
            self.forget_member(&id);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Only static members that have not rejoined: wait for them (or their session expiry).
            self.timer = JoinTimer::Rebalance { deadline: now + self.rebalance_timeout() };
            return false;
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
        } else {
            self.phase = Phase::CompletingRebalance;
            self.protocol = self.select_protocol();
            self.pending_sync = self.members.keys().cloned().collect();
            self.sync_deadline = now + self.rebalance_timeout();
        }
        self.subscribed = self.compute_subscribed();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let reply = self.reply_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                if std::mem::take(&mut m.awaiting_join) {
                    m.join_reply = Some(reply);
                }
                m.is_new = false;
                m.last_heartbeat = now;
            }
        }
        self.changed.notify_all();
        true
    }

    /// Keeps the leader if it rejoined, else picks a member that did. False if none did.
    fn elect_joined_leader(&mut self) -> bool {
        if self.leader.as_ref().and_then(|l| self.members.get(l)).is_some_and(|m| m.awaiting_join) {
            return true;
        }
        match self.members.iter().find(|(_, m)| m.awaiting_join) {
            Some((id, _)) => {
                self.leader = Some(id.clone());
                true
            }
            None => false,
        }
    }

    /// Removes a member without starting a rebalance.
    fn forget_member(&mut self, id: &str) {
        let Some(m) = self.members.remove(id) else { return };
        self.held -= m.held_bytes(id);
        if let Some(inst) = &m.instance_id {
            if self.statics.get(inst).is_some_and(|s| s == id) {
                self.statics.remove(inst);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.changed.notify_all();
    }

    /// Kafka's `removeMemberAndUpdateGroup`: a member left or expired.
    pub fn remove_member(&mut self, id: &str, now: Instant) {
        self.forget_member(id);
        match self.phase {
            Phase::Empty => {}
            Phase::Stable | Phase::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            Phase::PreparingRebalance => {
                self.try_complete_join(now);
            }
        }
    }

    // ---- sync, heartbeat, leave ----

    /// Whether this SyncGroup carries the assignment the group waits for: the leader's, this generation's.
    pub fn awaits_assignment_from(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> bool {
        self.phase == Phase::CompletingRebalance
            && generation == self.generation
            && self.leader.as_deref() == Some(member_id)
            && self.check_member(member_id, instance_id).is_none()
    }

    /// An assignment that cannot be kept (Kafka's `resetAndPropagateAssignmentError`, then a
    /// rebalance): every member waiting for it gets `error`.
    pub fn refuse_assignment(&mut self, error: i16, now: Instant) {
        for m in self.members.values_mut() {
            if std::mem::take(&mut m.awaiting_sync) {
                m.sync_reply = Some((error, Bytes::new()));
            }
        }
        self.prepare_rebalance(now);
    }

    /// Kafka's `doSyncGroup`. `None`: parked until the leader's assignment or a new round.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Option<(i16, Bytes)> {
        if let Some(e) = self.check_member(member_id, instance_id) {
            return Some((e, Bytes::new()));
        }
        if generation != self.generation {
            return Some((errors::ILLEGAL_GENERATION, Bytes::new()));
        }
        self.pending_sync.remove(member_id);
        match self.phase {
            Phase::Empty => Some((errors::UNKNOWN_MEMBER_ID, Bytes::new())),
            Phase::PreparingRebalance => Some((errors::REBALANCE_IN_PROGRESS, Bytes::new())),
            Phase::Stable => {
                let m = self.members.get_mut(member_id)?;
                m.last_heartbeat = now;
                Some((errors::NONE, m.assignment.clone()))
            }
            Phase::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = true;
                    m.sync_reply = None;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let (mut freed, mut taken) = (0, 0);
                    for (id, m) in self.members.iter_mut() {
                        freed += m.assignment.len();
                        m.assignment = given.remove(id).unwrap_or_default();
                        taken += m.assignment.len();
                        if std::mem::take(&mut m.awaiting_sync) {
                            m.sync_reply = Some((errors::NONE, m.assignment.clone()));
                            m.last_heartbeat = now;
                        }
                    }
                    self.held = self.held - freed + taken;
                    self.phase = Phase::Stable;
                    self.changed.notify_all();
                }
                None
            }
        }
    }

    /// Kafka's `handleHeartbeat`.
    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: Instant) -> i16 {
        if let Some(e) = self.check_member(member_id, instance_id) {
            return e;
        }
        if generation != self.generation {
            return errors::ILLEGAL_GENERATION;
        }
        let phase = self.phase;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match phase {
            Phase::Empty => errors::UNKNOWN_MEMBER_ID,
            Phase::PreparingRebalance => errors::REBALANCE_IN_PROGRESS,
            Phase::CompletingRebalance | Phase::Stable => errors::NONE,
        }
    }

    /// Kafka's `handleLeaveGroup` for one leaving member (by member id, or instance id when empty).
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        if !member_id.is_empty() && self.is_fenced(member_id, instance_id) {
            return errors::FENCED_INSTANCE_ID;
        }
        if self.pending.remove(member_id).is_some() {
            self.held -= pending_bytes(member_id);
            if self.phase == Phase::PreparingRebalance {
                self.try_complete_join(now);
            }
            return errors::NONE;
        }
        let id = match instance_id.and_then(|i| self.statics.get(i)) {
            Some(id) => id.clone(),
            None if self.members.contains_key(member_id) => member_id.to_string(),
            None => return errors::UNKNOWN_MEMBER_ID,
        };
        tracing::info!(member = %id, "member left the group");
        self.remove_member(&id, now);
        errors::NONE
    }

    /// Kafka's `validateOffsetCommit` and the state rules of `doCommitOffsets`: `None` lets the
    /// commit be stored. Commits are taken while the group prepares a rebalance (members of the
    /// generation that is ending still own their partitions) and refused only in
    /// CompletingRebalance, where a member with a valid generation should not be committing.
    pub fn commit_error(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: Instant) -> Option<i16> {
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if let Some(e) = self.check_member(member_id, instance_id) {
                return Some(e);
            }
            if generation != self.generation {
                return Some(errors::ILLEGAL_GENERATION);
            }
        } else if self.phase != Phase::Empty {
            // Only members may commit for a group that has them.
            return Some(errors::UNKNOWN_MEMBER_ID);
        }
        match self.phase {
            Phase::Empty => None,
            Phase::CompletingRebalance => Some(errors::REBALANCE_IN_PROGRESS),
            Phase::Stable | Phase::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat = now;
                }
                None
            }
        }
    }

    /// The expiry tick: pending ids, silent members, members that never synced, late join phases.
    pub fn expire(&mut self, now: Instant) {
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|id, until| {
            let keep = now < *until;
            freed += if keep { 0 } else { pending_bytes(id) };
            keep
        });
        self.held -= freed;
        if self.pending.len() != before && self.phase == Phase::PreparingRebalance {
            self.try_complete_join(now);
        }
        let silent: Vec<String> = self.members.iter().filter(|(_, m)| !m.alive(now)).map(|(id, _)| id.clone()).collect();
        for id in silent {
            tracing::info!(member = %id, "member session expired");
            self.remove_member(&id, now);
        }
        if matches!(self.phase, Phase::CompletingRebalance | Phase::Stable) && !self.pending_sync.is_empty() && now >= self.sync_deadline {
            let late: Vec<String> = self.pending_sync.drain().collect();
            for id in late {
                tracing::info!(member = %id, "member did not sync in time; removed");
                self.forget_member(&id);
            }
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
    }

    /// Parked JoinGroup: its answer when ready, `None` while it must keep waiting.
    pub fn take_join_reply(&mut self, member_id: &str, instance_id: Option<&str>) -> Option<JoinReply> {
        match self.members.get_mut(member_id) {
            None => Some(JoinReply::error(member_id, self.gone_error(member_id, instance_id))),
            Some(m) => match m.join_reply.take() {
                Some(r) => Some(r),
                None if m.awaiting_join => None,
                None => Some(self.reply_for(member_id)),
            },
        }
    }

    /// Parked SyncGroup: its answer when ready, `None` while it must keep waiting.
    pub fn take_sync_reply(&mut self, member_id: &str, instance_id: Option<&str>) -> Option<(i16, Bytes)> {
        match self.members.get_mut(member_id) {
            None => Some((self.gone_error(member_id, instance_id), Bytes::new())),
            Some(m) => match m.sync_reply.take() {
                Some(r) => Some(r),
                None if m.awaiting_sync => None,
                None => Some((errors::REBALANCE_IN_PROGRESS, Bytes::new())),
            },
        }
    }

    /// Describes the members (DescribeGroups): metadata and assignment only once Stable, as Kafka.
    pub fn described_members(&self) -> Vec<(String, &Member, Bytes, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        let stable = self.phase == Phase::Stable;
        self.members
            .iter()
            .map(|(id, m)| {
                let (md, asg) = if stable { (m.metadata(&protocol), m.assignment.clone()) } else { (Bytes::new(), Bytes::new()) };
                (id.clone(), m, md, asg)
            })
            .collect()
    }
}

mod held;
mod join;

use held::pending_bytes;
pub use held::ShardBytes;

#[cfg(test)]
mod tests;
