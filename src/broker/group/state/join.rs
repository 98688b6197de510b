//! JoinGroup's rules (Kafka's `handleJoinGroup`, `doUnknownJoinGroup`, `doJoinGroup`): who may join,
//! who gets MEMBER_ID_REQUIRED, when a rejoin starts a rebalance and when it is answered at once,
//! and how a static member takes its old place (KIP-345).

use super::{pending_bytes, Group, JoinReply, JoinRequest, JoinStep, JoinTimer, Member, Phase};
use crate::broker::errors;
use bytes::Bytes;
use std::time::Instant;

impl Group {
    /// Kafka's `handleJoinGroup` for a member that may have to wait; `new_id` mints member ids.
    pub fn join(&mut self, req: JoinRequest, now: Instant, new_id: impl FnOnce() -> String) -> JoinStep {
        let step = if req.member_id.is_empty() { self.join_unknown(req, now, new_id) } else { self.join_known(req, now) };
        if self.phase == Phase::PreparingRebalance {
            self.try_complete_join(now);
        }
        step
    }

    fn join_unknown(&mut self, req: JoinRequest, now: Instant, new_id: impl FnOnce() -> String) -> JoinStep {
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return JoinStep::Reply(JoinReply::error("", errors::INCONSISTENT_GROUP_PROTOCOL));
        }
        let member_id = new_id();
        if let Some(old_id) = req.instance_id.as_ref().and_then(|i| self.statics.get(i)).cloned() {
            return self.rejoin_static(old_id, member_id, req, now);
        }
        if req.require_known_member_id {
            if self.pending.insert(member_id.clone(), now + req.session_timeout).is_none() {
                self.held += pending_bytes(&member_id);
            }
            return JoinStep::Reply(JoinReply::error(&member_id, errors::MEMBER_ID_REQUIRED));
        }
        self.add_member(member_id, req, now)
    }

    /// A known group.instance.id with a new member id (KIP-345): the new id takes the old one's place
    /// and its assignment; a stable group whose chosen protocol stays the same does not rebalance.
    fn rejoin_static(&mut self, old_id: String, new_id: String, req: JoinRequest, now: Instant) -> JoinStep {
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some(mut member) = self.members.remove(&old_id) else {
            return JoinStep::Reply(JoinReply::error("", errors::UNKNOWN_MEMBER_ID));
        };
        self.held -= member.held_bytes(&old_id);
        // The old incarnation's parked requests wake to find their id gone (FENCED_INSTANCE_ID).
        member.awaiting_join = false;
        member.awaiting_sync = false;
        member.join_reply = None;
        member.sync_reply = None;
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.last_heartbeat = now;
        self.held += member.held_bytes(&new_id);
        self.members.insert(new_id.clone(), member);
        if let Some(inst) = &req.instance_id {
            self.statics.insert(inst.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        self.changed.notify_all();
        match self.phase {
            Phase::Stable if self.select_protocol() == self.protocol => {
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let mut reply = self.reply_for(&new_id);
                if is_leader && req.supports_skip_assignment {
                    // KIP-814: the leader learns it leads, and that the assignment stands.
                    reply.skip_assignment = true;
                } else {
                    // Older leaders get the old leader id, so they do not assign: a stable group would
                    // not hand their new assignment out.
                    reply.leader = previous_leader;
                    reply.members.clear();
                }
                JoinStep::Reply(reply)
            }
            Phase::PreparingRebalance => self.park_join(new_id),
            _ => {
                self.park_join(new_id.clone());
                self.prepare_rebalance(now);
                JoinStep::Wait { member_id: new_id }
            }
        }
    }

    fn join_known(&mut self, req: JoinRequest, now: Instant) -> JoinStep {
        let id = req.member_id.clone();
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return JoinStep::Reply(JoinReply::error(&id, errors::INCONSISTENT_GROUP_PROTOCOL));
        }
        if self.pending.contains_key(&id) {
            return self.add_member(id, req, now);
        }
        if self.is_fenced(&id, req.instance_id.as_deref()) {
            return JoinStep::Reply(JoinReply::error(&id, errors::FENCED_INSTANCE_ID));
        }
        let instance_unknown = req.instance_id.as_ref().is_some_and(|i| !self.statics.contains_key(i));
        let Some(member) = self.members.get(&id).filter(|_| !instance_unknown) else {
            return JoinStep::Reply(JoinReply::error(&id, errors::UNKNOWN_MEMBER_ID));
        };
        let matches = member.matches(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.phase {
            Phase::PreparingRebalance => self.update_member_and_rebalance(req, now),
            Phase::CompletingRebalance if matches => {
                // It missed the join answer: the same again.
                JoinStep::Reply(self.reply_for(&id))
            }
            Phase::Stable if matches && !is_leader => {
                // A follower with nothing new: the current generation, no rebalance.
                let mut reply = self.reply_for(&id);
                reply.members.clear();
                JoinStep::Reply(reply)
            }
            Phase::CompletingRebalance | Phase::Stable => self.update_member_and_rebalance(req, now),
            Phase::Empty => JoinStep::Reply(JoinReply::error(&id, errors::UNKNOWN_MEMBER_ID)),
        }
    }

    fn add_member(&mut self, id: String, req: JoinRequest, now: Instant) -> JoinStep {
        if self.phase == Phase::PreparingRebalance && self.generation == 0 {
            if let JoinTimer::Initial { new_member_added, .. } = &mut self.timer {
                *new_member_added = true;
            }
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        match &req.instance_id {
            Some(inst) => {
                self.statics.insert(inst.clone(), id.clone());
            }
            None => {
                if self.pending.remove(&id).is_some() {
                    self.held -= pending_bytes(&id);
                }
            }
        }
        let member = Member {
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: req.protocols,
            last_heartbeat: now,
            assignment: Bytes::new(),
            is_new: true,
            awaiting_join: true,
            awaiting_sync: false,
            join_reply: None,
            sync_reply: None,
        };
        self.held += member.held_bytes(&id);
        if let Some(replaced) = self.members.insert(id.clone(), member) {
            self.held -= replaced.held_bytes(&id);
        }
        self.maybe_prepare_rebalance(now);
        JoinStep::Wait { member_id: id }
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now: Instant) -> JoinStep {
        let id = req.member_id.clone();
        if let Some(m) = self.members.get_mut(&id) {
            self.held -= m.held_bytes(&id);
            m.protocols = req.protocols;
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.last_heartbeat = now;
            self.held += m.held_bytes(&id);
        }
        self.park_join(id.clone());
        self.maybe_prepare_rebalance(now);
        JoinStep::Wait { member_id: id }
    }

    fn park_join(&mut self, id: String) -> JoinStep {
        if let Some(m) = self.members.get_mut(&id) {
            m.awaiting_join = true;
            m.join_reply = None;
        }
        JoinStep::Wait { member_id: id }
    }
}
