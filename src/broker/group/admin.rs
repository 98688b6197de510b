//! DescribeGroups, ListGroups and DeleteGroups.

use super::state::Phase;
use super::store::Record;
use super::{on_coordinator, shard_state};
use crate::broker::errors;
use crate::broker::handlers::{respond, text, AUTHORIZED_OPERATIONS_GROUP, AUTHORIZED_OPERATIONS_OMITTED};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;

/// A described member: (member id, instance id, client id, client host, metadata, assignment).
type MemberView = (String, Option<String>, String, String, Bytes, Bytes);

struct GroupView {
    phase: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
}

/// Kafka's `GroupMetadata.summary`: a group known only by its offsets is Empty; an unknown one Dead.
async fn describe_local(group: String) -> GroupView {
    let coord = &shard_state().groups;
    let Some(gref) = coord.existing(&group) else {
        return if coord.has_offsets(&group) {
            GroupView { phase: Phase::Empty.name(), protocol_type: "consumer".into(), protocol: String::new(), members: vec![] }
        } else {
            GroupView { phase: "Dead", protocol_type: String::new(), protocol: String::new(), members: vec![] }
        };
    };
    let g = gref.borrow();
    let stable = g.phase == Phase::Stable;
    GroupView {
        phase: g.phase.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if stable { g.protocol.clone().unwrap_or_default() } else { String::new() },
        members: g
            .described_members()
            .into_iter()
            .map(|(id, m, md, asg)| (id, m.instance_id.clone(), m.client_id.clone(), m.client_host.clone(), md, asg))
            .collect(),
    }
}

pub(super) async fn describe_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DescribeGroupsRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let mut r = DescribeGroupsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for gid in q.groups {
        let group = gid.to_string();
        // Each name is described once: one 600-byte request naming a group of 80 MB of member
        // metadata K times once made a response of K × 80 MB.
        if !seen.insert(group.clone()) {
            let mut d = describe_groups_response::DescribedGroup::default();
            (d.group_id, d.error_code) = (gid, errors::INVALID_REQUEST);
            r.groups.push(d);
            continue;
        }
        let g2 = group.clone();
        let v = on_coordinator(&group, move || describe_local(g2)).await;
        let mut d = describe_groups_response::DescribedGroup::default();
        d.group_id = gid;
        d.group_state = text(v.phase);
        d.protocol_type = text(v.protocol_type);
        d.protocol_data = text(v.protocol);
        d.authorized_operations = if q.include_authorized_operations { AUTHORIZED_OPERATIONS_GROUP } else { AUTHORIZED_OPERATIONS_OMITTED };
        for (id, inst, client, host, md, asg) in v.members {
            let mut m = describe_groups_response::DescribedGroupMember::default();
            m.member_id = text(id);
            if version >= 4 {
                m.group_instance_id = inst.map(text);
            }
            m.client_id = text(client);
            m.client_host = text(host);
            m.member_metadata = md;
            m.member_assignment = asg;
            d.members.push(m);
        }
        r.groups.push(d);
    }
    respond(req, &r)
}

/// (group id, protocol type, state) of every group this shard coordinates, offsets-only ones included.
async fn list_local() -> Vec<(String, String, &'static str)> {
    let coord = &shard_state().groups;
    let mut out: Vec<(String, String, &'static str)> = coord
        .groups
        .borrow()
        .iter()
        .filter(|(id, g)| !g.borrow().is_vacant() || coord.has_offsets(id))
        .map(|(id, g)| {
            let g = g.borrow();
            (id.clone(), g.protocol_type.clone().unwrap_or_else(|| "consumer".into()), g.phase.name())
        })
        .collect();
    for id in coord.offsets.borrow().keys() {
        if !coord.groups.borrow().contains_key(id) {
            out.push((id.clone(), "consumer".into(), Phase::Empty.name()));
        }
    }
    out
}

/// Lists the groups of the broker asked: this shard's own, since each shard is a broker of its own
/// and clients ask every broker (librdkafka, Kafka's admin client) and merge. With `--single-port`
/// the one broker answers for all shards.
pub(super) async fn list_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: ListGroupsRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let st = shard_state();
    let shards: Vec<usize> = if st.cfg.single_port { (0..st.shard.count).collect() } else { vec![st.shard.id] };
    let mut r = ListGroupsResponse::default();
    for s in shards {
        for (id, ptype, phase) in st.shard.submit_to(s, list_local).await {
            if !q.states_filter.is_empty() && !q.states_filter.iter().any(|f| f.eq_ignore_ascii_case(phase)) {
                continue;
            }
            // Every group here is a classic group.
            if !q.types_filter.is_empty() && !q.types_filter.iter().any(|f| f.eq_ignore_ascii_case("classic")) {
                continue;
            }
            let mut g = list_groups_response::ListedGroup::default();
            g.group_id = GroupId(text(id));
            g.protocol_type = text(ptype);
            if version >= 4 {
                g.group_state = text(phase);
            }
            if version >= 5 {
                g.group_type = text("classic");
            }
            r.groups.push(g);
        }
    }
    respond(req, &r)
}

/// Kafka's `handleDeleteGroups`: only an Empty group (with its offsets) can go.
async fn delete_local(group: String) -> i16 {
    let coord = &shard_state().groups;
    let has_offsets = coord.has_offsets(&group);
    match coord.existing(&group) {
        Some(g) if g.borrow().phase != Phase::Empty => return errors::NON_EMPTY_GROUP,
        None if !has_offsets => return errors::GROUP_ID_NOT_FOUND,
        _ => {}
    }
    coord.groups.borrow_mut().remove(&group);
    if !has_offsets {
        return errors::NONE;
    }
    match coord.persist(&group, &[Record::DeleteGroup { group: group.clone() }]).await {
        Ok(()) => errors::NONE,
        Err(_) => errors::KAFKA_STORAGE_ERROR,
    }
}

pub(super) async fn delete_groups(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
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
