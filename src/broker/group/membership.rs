//! Heartbeat and LeaveGroup.

use super::{on_coordinator, shard_state};
use crate::broker::errors;
use crate::broker::handlers::{respond, text};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::time::Instant;

pub(super) async fn heartbeat(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: HeartbeatRequest = protocol::decode_body(req)?;
    let group = q.group_id.to_string();
    let (member, generation) = (q.member_id.to_string(), q.generation_id);
    let instance = q.group_instance_id.as_ref().map(|s| s.to_string());
    let g = group.clone();
    let m = member.clone();
    let error = on_coordinator(&group, move || async move {
        match shard_state().groups.existing(&g) {
            None => errors::UNKNOWN_MEMBER_ID,
            Some(gref) => gref.borrow_mut().heartbeat(&m, instance.as_deref(), generation, Instant::now()),
        }
    })
    .await;
    tracing::debug!(%group, %member, generation, error, "heartbeat");
    let mut r = HeartbeatResponse::default();
    r.error_code = error;
    respond(req, &r)
}

pub(super) async fn leave_group(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: LeaveGroupRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let group = q.group_id.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        q.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
    } else {
        vec![(q.member_id.to_string(), None)]
    };
    let (g, l) = (group.clone(), leaving.clone());
    let codes = on_coordinator(&group, move || async move {
        let Some(gref) = shard_state().groups.existing(&g) else {
            return vec![errors::UNKNOWN_MEMBER_ID; l.len()];
        };
        let mut group = gref.borrow_mut();
        let codes = l.iter().map(|(member, instance)| group.leave(member, instance.as_deref(), Instant::now())).collect();
        group.account();
        codes
    })
    .await;
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
