//! JoinGroup and SyncGroup: decoded here, decided by `state::Group` on the coordinator shard, and
//! parked there until the join phase ends or the leader's assignment arrives.

use super::state::{JoinReply, JoinRequest, JoinStep};
use super::{new_member_id, on_coordinator, shard_state};
use crate::broker::errors;
use crate::broker::handlers::{respond, text};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::time::{Duration, Instant};

pub(super) async fn join_group(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: JoinGroupRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let group = q.group_id.to_string();
    let client_id = req.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default();
    let host = format!("/{}", req.peer.rsplit_once(':').map_or(req.peer.as_str(), |(h, _)| h));
    let asked = q.member_id.to_string();
    let reply = on_coordinator(&group, move || join_local(q, version, client_id, host)).await;
    tracing::debug!(%group, member = %asked, error = reply.error, generation = reply.generation, assigned_id = %reply.member_id, "join");
    let mut r = JoinGroupResponse::default();
    r.error_code = reply.error;
    r.generation_id = reply.generation;
    r.protocol_name = if version >= 7 { reply.protocol.clone().map(text) } else { Some(text(reply.protocol.clone().unwrap_or_default())) };
    r.leader = text(reply.leader);
    r.skip_assignment = reply.skip_assignment;
    r.member_id = text(reply.member_id);
    r.members = reply
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = join_group_response::JoinGroupResponseMember::default();
            m.member_id = text(id);
            m.group_instance_id = if version >= 5 { instance.map(text) } else { None };
            m.metadata = metadata;
            m
        })
        .collect();
    if version >= 7 {
        r.protocol_type = reply.protocol_type.map(text);
    }
    respond(req, &r)
}

async fn join_local(q: JoinGroupRequest, version: i16, client_id: String, client_host: String) -> JoinReply {
    let coord = &shard_state().groups;
    let member_id = q.member_id.to_string();
    if q.group_id.is_empty() || q.group_id.len() > super::GROUP_ID_MAX_BYTES {
        return JoinReply::error(&member_id, errors::INVALID_GROUP_ID);
    }
    if q.session_timeout_ms < coord.min_session || q.session_timeout_ms > coord.max_session {
        return JoinReply::error(&member_id, errors::INVALID_SESSION_TIMEOUT);
    }
    let gref = if member_id.is_empty() || coord.has_offsets(&q.group_id) {
        coord.group(&q.group_id)
    } else {
        match coord.existing(&q.group_id) {
            Some(g) => g,
            // A member id for a group this coordinator does not know: the client must start over.
            None => return JoinReply::error(&member_id, errors::UNKNOWN_MEMBER_ID),
        }
    };
    let instance_id = q.group_instance_id.as_ref().map(|s| s.to_string());
    let session = Duration::from_millis(q.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout serves.
    let rebalance_ms = if version >= 1 { q.rebalance_timeout_ms } else { q.session_timeout_ms };
    let request = JoinRequest {
        member_id,
        instance_id: instance_id.clone(),
        client_id: client_id.clone(),
        client_host,
        session_timeout: session,
        rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
        protocol_type: q.protocol_type.to_string(),
        // Copies: a slice would keep the whole request frame alive, bytes the bound never sees.
        protocols: q.protocols.iter().map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata))).collect(),
        require_known_member_id: version >= 4 && instance_id.is_none(),
        supports_skip_assignment: version >= 9,
    };
    let (current, kept) = gref.borrow().member_bytes(&request.member_id, request.instance_id.as_deref());
    if !coord.admits(&q.group_id, current, request.held_bytes() + kept) {
        return JoinReply::error(&request.member_id, errors::GROUP_MAX_SIZE_REACHED);
    }
    let id_base = instance_id.clone().unwrap_or(client_id);
    let step = {
        let mut g = gref.borrow_mut();
        let step = g.join(request, Instant::now(), || new_member_id(&id_base));
        g.account();
        step
    };
    let member_id = match step {
        JoinStep::Reply(r) => return r,
        JoinStep::Wait { member_id } => member_id,
    };
    loop {
        let (changed, deadline) = {
            let mut g = gref.borrow_mut();
            if let Some(reply) = g.take_join_reply(&member_id, instance_id.as_deref()) {
                return reply;
            }
            (g.changed.clone(), g.join_deadline())
        };
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        futures_lite::future::or(changed.notified(), shards::sleep(wait)).await;
        let mut g = gref.borrow_mut();
        g.try_complete_join(Instant::now());
        g.account();
    }
}

pub(super) async fn sync_group(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: SyncGroupRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let group = q.group_id.to_string();
    let member = q.member_id.to_string();
    let (error, assignment, protocol_type, protocol_name) = on_coordinator(&group, move || sync_local(q)).await;
    tracing::debug!(%group, %member, error, "sync");
    let mut r = SyncGroupResponse::default();
    r.error_code = error;
    r.assignment = assignment;
    if version >= 5 {
        r.protocol_type = protocol_type.map(text);
        r.protocol_name = protocol_name.map(text);
    }
    respond(req, &r)
}

type SyncAnswer = (i16, Bytes, Option<String>, Option<String>);

async fn sync_local(q: SyncGroupRequest) -> SyncAnswer {
    let Some(gref) = shard_state().groups.existing(&q.group_id) else {
        return (errors::UNKNOWN_MEMBER_ID, Bytes::new(), None, None);
    };
    let member_id = q.member_id.to_string();
    let instance_id = q.group_instance_id.as_ref().map(|s| s.to_string());
    let answer = |g: &super::state::Group, (error, assignment): (i16, Bytes)| -> SyncAnswer {
        if error == errors::NONE {
            (error, assignment, g.protocol_type.clone(), g.protocol.clone())
        } else {
            (error, assignment, None, None)
        }
    };
    {
        let mut g = gref.borrow_mut();
        let mismatch = q.protocol_type.as_ref().is_some_and(|t| g.protocol_type.as_deref() != Some(t.as_str()))
            || q.protocol_name.as_ref().is_some_and(|n| g.protocol.as_deref() != Some(n.as_str()));
        if mismatch && g.members.contains_key(&member_id) && q.generation_id == g.generation {
            return (errors::INCONSISTENT_GROUP_PROTOCOL, Bytes::new(), None, None);
        }
        if g.awaits_assignment_from(&member_id, instance_id.as_deref(), q.generation_id) {
            // Kafka answers an assignment too large to store this way (the group's record in
            // __consumer_offsets would pass its max.message.bytes).
            let incoming = q.assignments.iter().map(|a| a.assignment.len()).sum();
            if !shard_state().groups.admits(&q.group_id, g.assignment_bytes(), incoming) {
                g.refuse_assignment(errors::UNKNOWN_SERVER_ERROR, Instant::now());
                g.account();
                return (errors::UNKNOWN_SERVER_ERROR, Bytes::new(), None, None);
            }
        }
        let assignments = q.assignments.iter().map(|a| (a.member_id.to_string(), Bytes::copy_from_slice(&a.assignment))).collect();
        let done = g.sync(&member_id, instance_id.as_deref(), q.generation_id, assignments, Instant::now());
        g.account();
        if let Some(done) = done {
            return answer(&g, done);
        }
    }
    loop {
        let changed = {
            let mut g = gref.borrow_mut();
            if let Some(done) = g.take_sync_reply(&member_id, instance_id.as_deref()) {
                return answer(&g, done);
            }
            g.changed.clone()
        };
        changed.notified().await;
    }
}
