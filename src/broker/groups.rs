//! The group coordinator: Kafka's classic consumer-group protocol and committed offsets.
//!
//! A group lives on the shard that owns its offsets partition (`offsets_store::partition_for`);
//! requests reaching another shard are forwarded there, so group state is touched by one shard only.
//! States: Empty → PreparingRebalance (members (re)join until all known members did or the rebalance
//! timeout passes) → CompletingRebalance (the leader's SyncGroup brings the assignment) → Stable.
//! A member that neither heartbeats nor joins within its session timeout is removed and the group
//! rebalances. The broker never reads assignments: assignors are the clients' business.

use super::handlers::{respond, text};
use super::offsets_store::{self, Committed, GroupOffsets, OffsetsFile, Record, OFFSETS_PARTITIONS};
use super::{errors, state, unix_ms, BrokerConfig};
use crate::protocol::{self, ProtocolError, Request};
use crate::storage::FlushPolicy;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shards::Notify;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often session timeouts are checked.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Joined in the current rebalance round.
    joined: bool,
    assignment: Bytes,
}

struct Group {
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), not yet joined.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Instant,
    changed: Rc<Notify>,
}

impl Group {
    fn new() -> Self {
        Group {
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: Instant::now(),
            changed: Rc::new(Notify::default()),
        }
    }

    fn start_rebalance(&mut self) {
        if self.phase == Phase::PreparingRebalance {
            return;
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.phase = Phase::PreparingRebalance;
        self.rebalance_deadline = Instant::now() + timeout;
        for m in self.members.values_mut() {
            m.joined = false;
        }
        self.changed.notify_all();
    }

    /// Ends the join phase if every member rejoined or the deadline passed: drops the stragglers,
    /// bumps the generation, picks a protocol and a leader.
    fn try_complete_join(&mut self, now: Instant) -> bool {
        if self.phase != Phase::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        if !all_joined && now < self.rebalance_deadline {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.leader = None;
        } else {
            self.phase = Phase::CompletingRebalance;
            self.protocol = self.choose_protocol();
            if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
                self.leader = self.members.keys().next().cloned();
            }
            // Members waited in JoinGroup instead of heartbeating: their sessions restart now.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                m.last_seen = now;
            }
        }
        self.changed.notify_all();
        true
    }

    /// The protocol every member supports that members prefer most (first-listed votes).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = common
            .iter()
            .map(|n| (self.members.values().filter(|m| m.protocols.iter().position(|(p, _)| p == *n) == Some(0)).count(), *n))
            .collect();
        votes.sort_by_key(|v| std::cmp::Reverse(v.0));
        votes.first().map(|(_, n)| (*n).clone())
    }

    fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            if self.members.is_empty() && self.phase != Phase::PreparingRebalance {
                self.phase = Phase::Empty;
                self.generation += 1;
                self.leader = None;
                self.protocol = None;
                self.changed.notify_all();
            } else {
                self.start_rebalance();
                self.try_complete_join(Instant::now());
            }
        }
    }
}

pub struct Coordinator {
    shard: usize,
    groups: RefCell<HashMap<String, Rc<RefCell<Group>>>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    files: RefCell<HashMap<u32, OffsetsFile>>,
    min_session: i32,
    max_session: i32,
    offsets_retention: Duration,
}

/// The shard coordinating `group`.
pub fn coordinator_shard(group: &str) -> usize {
    let st = state();
    shards::placement("__consumer_offsets", offsets_store::partition_for(group), st.shard.count)
}

impl Coordinator {
    pub fn new(cfg: &BrokerConfig, shard: usize) -> Self {
        Coordinator {
            shard,
            groups: RefCell::default(),
            offsets: RefCell::default(),
            files: RefCell::default(),
            min_session: cfg.group_min_session_timeout_ms,
            max_session: cfg.group_max_session_timeout_ms,
            offsets_retention: Duration::from_secs(cfg.offsets_retention_minutes * 60),
        }
    }

    /// Replays the offsets partitions this shard owns.
    pub async fn recover(&self) -> std::io::Result<()> {
        let st = state();
        let dir = st.cfg.data_dir.join("__consumer_offsets");
        let fsync = st.cfg.log.flush == FlushPolicy::EveryBatch;
        let mut offsets = self.offsets.borrow_mut();
        let mut files = self.files.borrow_mut();
        for n in 0..OFFSETS_PARTITIONS {
            if shards::placement("__consumer_offsets", n, st.shard.count) == self.shard {
                files.insert(n, OffsetsFile::open(&dir, n, fsync, &mut offsets)?);
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        for f in self.files.borrow().values() {
            if let Err(e) = f.sync() {
                tracing::error!(error = %e, "fsync of committed offsets failed");
            }
        }
    }

    fn group(&self, id: &str) -> Rc<RefCell<Group>> {
        self.groups.borrow_mut().entry(id.to_string()).or_insert_with(|| Rc::new(RefCell::new(Group::new()))).clone()
    }

    fn existing(&self, id: &str) -> Option<Rc<RefCell<Group>>> {
        self.groups.borrow().get(id).cloned()
    }

    fn persist(&self, group: &str, records: &[Record]) -> std::io::Result<()> {
        let n = offsets_store::partition_for(group);
        let mut files = self.files.borrow_mut();
        let file = files.get_mut(&n).expect("this shard owns the group's offsets partition");
        file.append(records)?;
        let offsets = self.offsets.borrow();
        file.compact_if_due(offsets.iter().filter(|(g, _)| offsets_store::partition_for(g) == n))
    }

    /// Removes members past their session timeout and offsets past retention.
    fn expire(&self, now: Instant) {
        let groups: Vec<Rc<RefCell<Group>>> = self.groups.borrow().values().cloned().collect();
        for g in groups {
            let mut g = g.borrow_mut();
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout && !(g.phase == Phase::PreparingRebalance && m.joined))
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "member session expired");
                g.remove_member(&id);
            }
            g.pending.retain(|_, at| now.duration_since(*at) < Duration::from_secs(300));
            g.try_complete_join(now);
        }
        // A group with no members and no offsets is gone (it was only ever a name in a request).
        {
            let offsets = self.offsets.borrow();
            self.groups.borrow_mut().retain(|id, g| {
                let g = g.borrow();
                !(g.phase == Phase::Empty && g.members.is_empty() && g.pending.is_empty() && !offsets.contains_key(id))
            });
        }
        let cutoff = unix_ms() - self.offsets_retention.as_millis() as i64;
        let stale: Vec<String> = {
            let groups = self.groups.borrow();
            let offsets = self.offsets.borrow();
            offsets
                .iter()
                .filter(|(id, o)| {
                    groups.get(*id).is_none_or(|g| g.borrow().phase == Phase::Empty) && o.values().all(|c| c.commit_time_ms < cutoff)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for group in stale {
            self.offsets.borrow_mut().remove(&group);
            if let Err(e) = self.persist(&group, &[Record::DeleteGroup { group: group.clone() }]) {
                tracing::warn!(%group, error = %e, "could not persist offsets expiry");
            }
        }
    }
}

pub async fn expiry_loop() {
    loop {
        shards::sleep(EXPIRY_CHECK).await;
        state().groups.expire(Instant::now());
    }
}

/// Runs `f` on `group`'s coordinator shard.
async fn on_coordinator<F, Fut, R>(group: &str, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
    R: Send + 'static,
{
    let target = coordinator_shard(group);
    let shard = state().shard.clone();
    shard.submit_to(target, f).await
}

pub fn find_coordinator(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: FindCoordinatorRequest = protocol::decode_body(req)?;
    let st = state();
    let keys: Vec<StrBytes> = if req.header.request_api_version >= 4 { q.coordinator_keys } else { vec![q.key] };
    let mut r = FindCoordinatorResponse::default();
    for key in keys {
        let node = st.cfg.node_for(coordinator_shard(&key));
        let port = st.cfg.nodes().into_iter().find(|(id, _)| *id == node).map_or(i32::from(st.cfg.port), |(_, p)| p);
        let error = if q.key_type == 0 { errors::NONE } else { errors::COORDINATOR_NOT_AVAILABLE };
        if req.header.request_api_version >= 4 {
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = key;
            c.node_id = BrokerId(node);
            c.host = text(st.cfg.advertised_host.clone());
            c.port = port;
            c.error_code = error;
            r.coordinators.push(c);
        } else {
            r.node_id = BrokerId(node);
            r.host = text(st.cfg.advertised_host.clone());
            r.port = port;
            r.error_code = error;
        }
    }
    respond(req, &r)
}

fn new_member_id(client_id: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = if client_id.is_empty() { "member" } else { client_id };
    format!("{base}-{:x}-{n}", unix_ms())
}

async fn join_local(q: JoinGroupRequest, version: i16, client_id: String, client_host: String) -> JoinGroupResponse {
    let coord = &state().groups;
    let mut r = JoinGroupResponse::default();
    r.generation_id = -1;
    let session_ms = q.session_timeout_ms;
    if q.group_id.is_empty() {
        r.error_code = errors::INVALID_GROUP_ID;
        return r;
    }
    if session_ms < coord.min_session || session_ms > coord.max_session {
        r.error_code = errors::INVALID_SESSION_TIMEOUT;
        return r;
    }
    let gref = coord.group(&q.group_id);
    let member_id = {
        let mut g = gref.borrow_mut();
        let protocol_type = q.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = q.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect();
        // The joiner must share a protocol with every other member, or no assignor could serve all.
        let others = g.members.iter().filter(|(id, _)| id.as_str() != q.member_id.as_str());
        let mut shared = others.clone().count() == 0;
        if !shared {
            shared = protocols.iter().any(|(p, _)| others.clone().all(|(_, m)| m.protocols.iter().any(|(n, _)| n == p)));
        }
        let compatible =
            g.protocol_type.as_ref().is_none_or(|t| *t == protocol_type || g.members.is_empty()) && !protocols.is_empty() && shared;
        if !compatible {
            r.error_code = errors::INCONSISTENT_GROUP_PROTOCOL;
            return r;
        }
        let instance_id = q.group_instance_id.as_ref().map(|s| s.to_string());
        let mut member_id = q.member_id.to_string();
        if let Some(inst) = &instance_id {
            // Static membership: the instance keeps (or takes over) its member id.
            if let Some(existing) = g.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(inst)).map(|(id, _)| id.clone()) {
                if member_id.is_empty() || member_id != existing {
                    let m = g.members.remove(&existing).expect("found");
                    member_id = new_member_id(&client_id);
                    g.members.insert(member_id.clone(), m);
                    if g.leader.as_deref() == Some(existing.as_str()) {
                        g.leader = Some(member_id.clone());
                    }
                }
            } else if member_id.is_empty() {
                member_id = new_member_id(&client_id);
            }
        } else if member_id.is_empty() {
            member_id = new_member_id(&client_id);
            if version >= 4 {
                g.pending.insert(member_id.clone(), Instant::now());
                r.error_code = errors::MEMBER_ID_REQUIRED;
                r.member_id = text(member_id);
                return r;
            }
        } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none() {
            r.error_code = errors::UNKNOWN_MEMBER_ID;
            r.member_id = q.member_id.clone();
            return r;
        }
        g.pending.remove(&member_id);
        g.protocol_type = Some(protocol_type);
        let changed_protocols = g.members.get(&member_id).is_none_or(|m| m.protocols != protocols);
        let member = Member {
            instance_id,
            client_id: client_id.clone(),
            client_host,
            session_timeout: Duration::from_millis(session_ms as u64),
            rebalance_timeout: Duration::from_millis(q.rebalance_timeout_ms.max(session_ms) as u64),
            protocols,
            last_seen: Instant::now(),
            joined: true,
            assignment: Bytes::new(),
        };
        let is_new = g.members.insert(member_id.clone(), member).is_none();
        // A known member rejoining a stable group with the same protocols does not need a rebalance,
        // but Kafka clients only rejoin when they want one, so we always run one.
        let _ = (is_new, changed_protocols);
        if g.phase != Phase::PreparingRebalance {
            g.start_rebalance();
            g.members.get_mut(&member_id).expect("inserted").joined = true;
        }
        g.try_complete_join(Instant::now());
        member_id
    };
    // Wait for the join phase to complete (all members in, or the rebalance deadline).
    let start_generation = gref.borrow().generation;
    loop {
        let (changed, deadline) = {
            let g = gref.borrow();
            if g.generation != start_generation || g.phase != Phase::PreparingRebalance {
                break;
            }
            (g.changed.clone(), g.rebalance_deadline)
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(changed.notified(), shards::sleep(wait.max(Duration::from_millis(1)))).await;
        gref.borrow_mut().try_complete_join(Instant::now());
    }
    let g = gref.borrow();
    let Some(me) = g.members.get(&member_id) else {
        r.error_code = errors::UNKNOWN_MEMBER_ID;
        r.member_id = text(member_id);
        return r;
    };
    let protocol = g.protocol.clone().unwrap_or_default();
    r.generation_id = g.generation;
    if version >= 7 {
        r.protocol_type = g.protocol_type.clone().map(text);
    }
    r.protocol_name = Some(text(protocol.clone()));
    r.leader = text(g.leader.clone().unwrap_or_default());
    r.member_id = text(member_id.clone());
    let _ = me;
    if g.leader.as_deref() == Some(member_id.as_str()) {
        for (id, m) in &g.members {
            let mut jm = join_group_response::JoinGroupResponseMember::default();
            jm.member_id = text(id.clone());
            if version >= 5 {
                jm.group_instance_id = m.instance_id.clone().map(text);
            }
            jm.metadata = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, md)| md.clone()).unwrap_or_default();
            r.members.push(jm);
        }
    }
    r
}

fn member_check(g: &Group, member_id: &str, generation: i32) -> i16 {
    if !g.members.contains_key(member_id) {
        errors::UNKNOWN_MEMBER_ID
    } else if generation != g.generation {
        errors::ILLEGAL_GENERATION
    } else {
        errors::NONE
    }
}

async fn sync_local(q: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    let Some(gref) = state().groups.existing(&q.group_id) else {
        r.error_code = errors::UNKNOWN_MEMBER_ID;
        return r;
    };
    let member_id = q.member_id.to_string();
    {
        let mut g = gref.borrow_mut();
        let error = member_check(&g, &member_id, q.generation_id);
        if error != errors::NONE {
            r.error_code = error;
            return r;
        }
        if g.phase == Phase::PreparingRebalance {
            r.error_code = errors::REBALANCE_IN_PROGRESS;
            return r;
        }
        if let Some(m) = g.members.get_mut(&member_id) {
            m.last_seen = Instant::now();
        }
        if g.phase == Phase::CompletingRebalance && g.leader.as_deref() == Some(member_id.as_str()) {
            for a in &q.assignments {
                if let Some(m) = g.members.get_mut(a.member_id.as_str()) {
                    m.assignment = a.assignment.clone();
                }
            }
            g.phase = Phase::Stable;
            g.changed.notify_all();
        }
    }
    // Followers wait for the leader's assignment.
    loop {
        let changed = {
            let g = gref.borrow();
            if g.generation != q.generation_id || g.phase == Phase::PreparingRebalance {
                r.error_code = errors::REBALANCE_IN_PROGRESS;
                return r;
            }
            if g.phase == Phase::Stable {
                let Some(m) = g.members.get(&member_id) else {
                    r.error_code = errors::UNKNOWN_MEMBER_ID;
                    return r;
                };
                r.assignment = m.assignment.clone();
                if version >= 5 {
                    r.protocol_type = g.protocol_type.clone().map(text);
                    r.protocol_name = g.protocol.clone().map(text);
                }
                return r;
            }
            g.changed.clone()
        };
        changed.notified().await;
    }
}

async fn heartbeat_local(q: HeartbeatRequest) -> i16 {
    let Some(gref) = state().groups.existing(&q.group_id) else {
        return errors::UNKNOWN_MEMBER_ID;
    };
    let mut g = gref.borrow_mut();
    let error = member_check(&g, &q.member_id, q.generation_id);
    if error != errors::NONE {
        return error;
    }
    if let Some(m) = g.members.get_mut(q.member_id.as_str()) {
        m.last_seen = Instant::now();
    }
    match g.phase {
        Phase::PreparingRebalance => errors::REBALANCE_IN_PROGRESS,
        _ => errors::NONE,
    }
}

async fn leave_local(group: String, leaving: Vec<(String, Option<String>)>) -> Vec<i16> {
    let Some(gref) = state().groups.existing(&group) else {
        return vec![errors::UNKNOWN_MEMBER_ID; leaving.len()];
    };
    let mut g = gref.borrow_mut();
    leaving
        .into_iter()
        .map(|(member_id, instance)| {
            let id = if member_id.is_empty() {
                instance
                    .and_then(|i| g.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(i.as_str())).map(|(id, _)| id.clone()))
            } else {
                Some(member_id)
            };
            match id {
                Some(id) if g.members.contains_key(&id) => {
                    g.remove_member(&id);
                    errors::NONE
                }
                _ => errors::UNKNOWN_MEMBER_ID,
            }
        })
        .collect()
}

type CommitPart = (String, i32, i64, i32, Option<String>);

async fn commit_local(group: String, member_id: String, generation: i32, parts: Vec<CommitPart>) -> Vec<i16> {
    let coord = &state().groups;
    if let Some(gref) = coord.existing(&group) {
        let g = gref.borrow();
        // Commits from outside the group (generation -1, e.g. manual assignment) are always allowed.
        if generation >= 0 || !member_id.is_empty() {
            let mut error = member_check(&g, &member_id, generation);
            if error == errors::NONE && g.phase == Phase::PreparingRebalance {
                error = errors::REBALANCE_IN_PROGRESS;
            }
            if error != errors::NONE && !g.members.is_empty() {
                return vec![error; parts.len()];
            }
        }
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
    {
        let mut offsets = coord.offsets.borrow_mut();
        for r in &records {
            offsets_store::apply(&mut offsets, r.clone());
        }
    }
    match coord.persist(&group, &records) {
        Ok(()) => vec![errors::NONE; parts.len()],
        Err(e) => {
            tracing::error!(%group, error = %e, "persisting committed offsets failed");
            vec![errors::KAFKA_STORAGE_ERROR; parts.len()]
        }
    }
}

/// Committed offsets of `group`: for the listed (topic, partitions), or all when `None`.
async fn fetch_offsets_local(group: String, wanted: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, Vec<(i32, Option<Committed>)>)> {
    let offsets = state().groups.offsets.borrow().get(&group).cloned().unwrap_or_default();
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let found = parts.into_iter().map(|p| (p, offsets.get(&(t.clone(), p)).cloned())).collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
            for ((t, p), c) in offsets {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic.into_iter().collect()
        }
    }
}

pub async fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    let client_id = req.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default();
    match req.api {
        ApiKey::JoinGroup => {
            let q: JoinGroupRequest = protocol::decode_body(req)?;
            let group = q.group_id.to_string();
            let host = format!("/{}", req.peer.rsplit_once(':').map_or(req.peer.as_str(), |(h, _)| h));
            let asked = q.member_id.to_string();
            let r = on_coordinator(&group, move || join_local(q, version, client_id, host)).await;
            tracing::debug!(%group, member = %asked, error = r.error_code, generation = r.generation_id, assigned_id = %r.member_id, "join");
            respond(req, &r)
        }
        ApiKey::SyncGroup => {
            let q: SyncGroupRequest = protocol::decode_body(req)?;
            let group = q.group_id.to_string();
            let member = q.member_id.to_string();
            let r = on_coordinator(&group, move || sync_local(q, version)).await;
            tracing::debug!(%group, %member, error = r.error_code, "sync");
            respond(req, &r)
        }
        ApiKey::Heartbeat => {
            let q: HeartbeatRequest = protocol::decode_body(req)?;
            let group = q.group_id.to_string();
            let mut r = HeartbeatResponse::default();
            let (member, generation) = (q.member_id.to_string(), q.generation_id);
            r.error_code = on_coordinator(&group, move || heartbeat_local(q)).await;
            tracing::debug!(%group, %member, generation, error = r.error_code, "heartbeat");
            respond(req, &r)
        }
        ApiKey::LeaveGroup => {
            let q: LeaveGroupRequest = protocol::decode_body(req)?;
            let group = q.group_id.to_string();
            let leaving: Vec<(String, Option<String>)> = if version >= 3 {
                q.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
            } else {
                vec![(q.member_id.to_string(), None)]
            };
            let l = leaving.clone();
            let g = group.clone();
            let codes = on_coordinator(&group, move || leave_local(g, l)).await;
            let mut r = LeaveGroupResponse::default();
            if version >= 3 {
                for ((id, inst), code) in leaving.into_iter().zip(codes) {
                    let mut m = leave_group_response::MemberResponse::default();
                    m.member_id = text(id);
                    m.group_instance_id = inst.map(text);
                    m.error_code = code;
                    r.members.push(m);
                }
            } else {
                r.error_code = codes.first().copied().unwrap_or(errors::NONE);
            }
            respond(req, &r)
        }
        ApiKey::OffsetCommit => {
            let q: OffsetCommitRequest = protocol::decode_body(req)?;
            let group = q.group_id.to_string();
            let parts: Vec<CommitPart> = q
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        (
                            t.name.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.committed_metadata.as_ref().map(|m| m.to_string()),
                        )
                    })
                })
                .collect();
            let (member, generation) = (q.member_id.to_string(), q.generation_id_or_member_epoch);
            let g = group.clone();
            let codes = on_coordinator(&group, move || commit_local(g, member, generation, parts)).await;
            let mut codes = codes.into_iter();
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
            respond(req, &r)
        }
        ApiKey::OffsetFetch => offset_fetch(req).await,
        ApiKey::DescribeGroups => describe_groups(req).await,
        ApiKey::ListGroups => list_groups(req).await,
        ApiKey::DeleteGroups => delete_groups(req).await,
        ApiKey::OffsetDelete => offset_delete(req).await,
        _ => unreachable!("routed here only for group APIs"),
    }
}

async fn offset_fetch(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: OffsetFetchRequest = protocol::decode_body(req)?;
    let mut r = OffsetFetchResponse::default();
    if req.header.request_api_version >= 8 {
        for g in q.groups {
            let group = g.group_id.to_string();
            let wanted = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
            let gid = group.clone();
            let found = on_coordinator(&group, move || fetch_offsets_local(gid, wanted)).await;
            let mut rg = offset_fetch_response::OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id;
            for (topic, parts) in found {
                let mut rt = offset_fetch_response::OffsetFetchResponseTopics::default();
                rt.name = TopicName(text(topic));
                for (p, c) in parts {
                    let mut rp = offset_fetch_response::OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
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
        let group = q.group_id.to_string();
        let wanted = q.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
        let gid = group.clone();
        let found = on_coordinator(&group, move || fetch_offsets_local(gid, wanted)).await;
        for (topic, parts) in found {
            let mut rt = offset_fetch_response::OffsetFetchResponseTopic::default();
            rt.name = TopicName(text(topic));
            for (p, c) in parts {
                let mut rp = offset_fetch_response::OffsetFetchResponsePartition::default();
                rp.partition_index = p;
                rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                if req.header.request_api_version >= 5 {
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

struct GroupView {
    phase: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

async fn describe_local(group: String) -> Option<GroupView> {
    let coord = &state().groups;
    let gref = coord.existing(&group)?;
    let g = gref.borrow();
    let protocol = g.protocol.clone().unwrap_or_default();
    Some(GroupView {
        phase: g.phase.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone(),
        members: g
            .members
            .iter()
            .map(|(id, m)| {
                let md = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, md)| md.clone()).unwrap_or_default();
                (id.clone(), m.instance_id.clone(), m.client_id.clone(), m.client_host.clone(), md, m.assignment.clone())
            })
            .collect(),
    })
}

async fn describe_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeGroupsRequest = protocol::decode_body(req)?;
    let mut r = DescribeGroupsResponse::default();
    for gid in q.groups {
        let group = gid.to_string();
        let g2 = group.clone();
        let view = on_coordinator(&group, move || describe_local(g2)).await;
        let mut d = describe_groups_response::DescribedGroup::default();
        d.group_id = gid;
        match view {
            None => d.group_state = text("Dead"),
            Some(v) => {
                d.group_state = text(v.phase);
                d.protocol_type = text(v.protocol_type);
                d.protocol_data = text(v.protocol);
                for (id, inst, client, host, md, asg) in v.members {
                    let mut m = describe_groups_response::DescribedGroupMember::default();
                    m.member_id = text(id);
                    if req.header.request_api_version >= 4 {
                        m.group_instance_id = inst.map(text);
                    }
                    m.client_id = text(client);
                    m.client_host = text(host);
                    m.member_metadata = md;
                    m.member_assignment = asg;
                    d.members.push(m);
                }
            }
        }
        r.groups.push(d);
    }
    respond(req, &r)
}

async fn list_local() -> Vec<(String, String, &'static str)> {
    let coord = &state().groups;
    let mut out: Vec<(String, String, &'static str)> = coord
        .groups
        .borrow()
        .iter()
        .map(|(id, g)| {
            let g = g.borrow();
            (id.clone(), g.protocol_type.clone().unwrap_or_default(), g.phase.name())
        })
        .collect();
    for id in coord.offsets.borrow().keys() {
        if !out.iter().any(|(g, _, _)| g == id) {
            out.push((id.clone(), "consumer".into(), Phase::Empty.name()));
        }
    }
    out
}

async fn list_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: ListGroupsRequest = protocol::decode_body(req)?;
    let shard = state().shard.clone();
    let mut r = ListGroupsResponse::default();
    for s in 0..shard.count {
        for (id, ptype, phase) in shard.submit_to(s, list_local).await {
            if !q.states_filter.is_empty() && !q.states_filter.iter().any(|f| f.as_str() == phase) {
                continue;
            }
            let mut g = list_groups_response::ListedGroup::default();
            g.group_id = GroupId(text(id));
            g.protocol_type = text(ptype);
            if req.header.request_api_version >= 4 {
                g.group_state = text(phase);
            }
            r.groups.push(g);
        }
    }
    respond(req, &r)
}

async fn delete_local(group: String) -> i16 {
    let coord = &state().groups;
    if let Some(g) = coord.existing(&group) {
        if !g.borrow().members.is_empty() {
            return errors::NON_EMPTY_GROUP;
        }
    }
    let had_group = coord.groups.borrow_mut().remove(&group).is_some();
    let had_offsets = coord.offsets.borrow_mut().remove(&group).is_some();
    if !had_group && !had_offsets {
        return errors::GROUP_ID_NOT_FOUND;
    }
    match coord.persist(&group, &[Record::DeleteGroup { group: group.clone() }]) {
        Ok(()) => errors::NONE,
        Err(_) => errors::KAFKA_STORAGE_ERROR,
    }
}

async fn delete_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DeleteGroupsRequest = protocol::decode_body(req)?;
    let mut r = DeleteGroupsResponse::default();
    for gid in q.groups_names {
        let group = gid.to_string();
        let g2 = group.clone();
        let mut res = delete_groups_response::DeletableGroupResult::default();
        res.error_code = on_coordinator(&group, move || delete_local(g2)).await;
        res.group_id = gid;
        r.results.push(res);
    }
    respond(req, &r)
}

async fn offset_delete_local(group: String, parts: Vec<(String, i32)>) -> i16 {
    let coord = &state().groups;
    if !coord.offsets.borrow().contains_key(&group) {
        return errors::GROUP_ID_NOT_FOUND;
    }
    let records: Vec<Record> =
        parts.into_iter().map(|(topic, partition)| Record::DeleteOffset { group: group.clone(), topic, partition }).collect();
    for rec in &records {
        offsets_store::apply(&mut coord.offsets.borrow_mut(), rec.clone());
    }
    match coord.persist(&group, &records) {
        Ok(()) => errors::NONE,
        Err(_) => errors::KAFKA_STORAGE_ERROR,
    }
}

async fn offset_delete(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: OffsetDeleteRequest = protocol::decode_body(req)?;
    let group = q.group_id.to_string();
    let parts: Vec<(String, i32)> =
        q.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index))).collect();
    let g2 = group.clone();
    let code = on_coordinator(&group, move || offset_delete_local(g2, parts)).await;
    let mut r = OffsetDeleteResponse::default();
    r.error_code = code;
    for t in q.topics {
        let mut rt = offset_delete_response::OffsetDeleteResponseTopic::default();
        rt.name = t.name;
        for p in t.partitions {
            let mut rp = offset_delete_response::OffsetDeleteResponsePartition::default();
            rp.partition_index = p.partition_index;
            rt.partitions.push(rp);
        }
        r.topics.push(rt);
    }
    respond(req, &r)
}
