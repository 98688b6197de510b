//! The group coordinator: Kafka's classic consumer-group protocol and committed offsets.
//!
//! A group lives on the shard that owns its offsets partition (`store::partition_for`); requests
//! reaching another shard are forwarded there (`on_coordinator`), so a group's state and each
//! offsets file are touched by one shard only. The broker never reads assignments: assignors are
//! the clients' business. It reads subscriptions only to know which topics a group consumes.
//!
//! - `state`: one group's state machine, with Kafka's rules (JoinGroup's in `state/join.rs`).
//! - `coordinator`: the groups of this shard, their offsets and the expiry tick.
//! - `store`: the offsets files; `subscription`: the consumer protocol's topic list.
//! - `join` (JoinGroup, SyncGroup), `membership` (Heartbeat, LeaveGroup), `offsets` (OffsetCommit,
//!   OffsetFetch, OffsetDelete), `admin` (DescribeGroups, ListGroups, DeleteGroups): the handlers.

mod admin;
mod coordinator;
mod join;
mod membership;
mod offsets;
mod state;
mod store;
mod subscription;
mod txn_offsets;

pub use coordinator::Coordinator;
pub use txn_offsets::{end_txn as end_offsets_txn, offsets_partition};

use super::handlers::{respond, text};
use super::{errors, state as shard_state};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

/// How often session timeouts, sync deadlines and join deadlines are checked.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);

/// Kafka's `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Longest group id: what Kafka's `__consumer_offsets` key (an int16-length string) holds, and
/// our offsets records too; a longer one gets INVALID_GROUP_ID.
const GROUP_ID_MAX_BYTES: usize = i16::MAX as usize;

/// The shard coordinating `group`.
pub fn coordinator_shard(group: &str) -> usize {
    shards::placement("__consumer_offsets", store::partition_for(group), shard_state().shard.count)
}

/// Runs `f` on `group`'s coordinator shard.
async fn on_coordinator<F, Fut, R>(group: &str, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
    R: Send + 'static,
{
    super::on_shard(coordinator_shard(group), f).await
}

pub async fn expiry_loop() {
    loop {
        shards::sleep(EXPIRY_CHECK).await;
        shard_state().groups.expire(Instant::now()).await;
    }
}

pub async fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    match req.api {
        ApiKey::JoinGroup => join::join_group(req).await,
        ApiKey::SyncGroup => join::sync_group(req).await,
        ApiKey::Heartbeat => membership::heartbeat(req).await,
        ApiKey::LeaveGroup => membership::leave_group(req).await,
        ApiKey::OffsetCommit => offsets::offset_commit(req).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(req).await,
        ApiKey::OffsetDelete => offsets::offset_delete(req).await,
        ApiKey::DescribeGroups => admin::describe_groups(req).await,
        ApiKey::ListGroups => admin::list_groups(req).await,
        ApiKey::DeleteGroups => admin::delete_groups(req).await,
        ApiKey::TxnOffsetCommit => txn_offsets::txn_offset_commit(req).await,
        other => Err(ProtocolError::UnknownApi(other as i16)),
    }
}

pub fn find_coordinator(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: FindCoordinatorRequest = protocol::decode_body(req)?;
    let st = shard_state();
    let version = req.header.request_api_version;
    let keys: Vec<StrBytes> = if version >= 4 { q.coordinator_keys } else { vec![q.key] };
    let mut r = FindCoordinatorResponse::default();
    for key in keys {
        let node = if q.key_type == 1 { super::txn::coordinator_node(&key) } else { st.cfg.node_for(coordinator_shard(&key)) };
        let port = st.cfg.nodes().into_iter().find(|(id, _)| *id == node).map_or(i32::from(st.cfg.port), |(_, p)| p);
        let error = if q.key_type <= 1 { errors::NONE } else { errors::INVALID_REQUEST };
        if version >= 4 {
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

/// A fresh member id: Kafka's `<client id or instance id>-<unique>`.
fn new_member_id(base: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = if base.is_empty() { "member" } else { base };
    format!("{base}-{:x}-{n}", super::unix_ms())
}
