//! The memory a group holds for its members — their protocol metadata and assignments, which a
//! client chooses the size of — counted into its shard's total, which `group.metadata.max.bytes`
//! bounds (`coordinator.rs` admits or refuses joins and assignments by it).

use super::{Group, JoinRequest, Member};
use bytes::Bytes;
use std::cell::Cell;
use std::rc::Rc;

/// The bytes all of one shard's groups hold, shared by them.
pub type ShardBytes = Rc<Cell<usize>>;

/// A member's bookkeeping beyond its strings and bytes (map entries, timers, parked replies): an
/// estimate, so that members with empty metadata are counted too.
const MEMBER_OVERHEAD: usize = 256;
/// A member id handed out with MEMBER_ID_REQUIRED, beyond the id itself.
const PENDING_OVERHEAD: usize = 64;
/// A member id as `new_member_id` mints them, beyond its client or instance id.
const MINTED_ID_BYTES: usize = 40;

fn protocols_bytes(protocols: &[(String, Bytes)]) -> usize {
    protocols.iter().map(|(name, metadata)| name.len() + metadata.len()).sum()
}

/// What a pending member id holds.
pub(super) fn pending_bytes(id: &str) -> usize {
    PENDING_OVERHEAD + id.len()
}

/// What a member holds but its assignment: its id, strings and protocols, and its bookkeeping.
fn member_bytes(id_len: usize, client_id: &str, client_host: &str, instance_id: Option<&String>, protocols: &[(String, Bytes)]) -> usize {
    MEMBER_OVERHEAD + id_len + client_id.len() + client_host.len() + instance_id.map_or(0, String::len) + protocols_bytes(protocols)
}

impl Member {
    pub(super) fn held_bytes(&self, id: &str) -> usize {
        member_bytes(id.len(), &self.client_id, &self.client_host, self.instance_id.as_ref(), &self.protocols) + self.assignment.len()
    }
}

impl JoinRequest {
    /// What the member joining with this request holds once it has joined (no assignment yet).
    pub fn held_bytes(&self) -> usize {
        let instance = self.instance_id.as_ref();
        let id_len = if self.member_id.is_empty() {
            MINTED_ID_BYTES + self.client_id.len().max(instance.map_or(0, String::len))
        } else {
            self.member_id.len()
        };
        member_bytes(id_len, &self.client_id, &self.client_host, instance, &self.protocols)
    }
}

impl Group {
    /// What the group holds, counted afresh (`held` is kept up to date change by change: this
    /// checks it).
    #[cfg(test)]
    pub(super) fn recount(&self) -> usize {
        self.members.iter().map(|(id, m)| m.held_bytes(id)).sum::<usize>() + self.pending.keys().map(|id| pending_bytes(id)).sum::<usize>()
    }

    /// What the member a JoinGroup names holds (0 for one the group does not have), and the part
    /// of it that is its assignment (which a rejoin keeps): by its member id, or by its instance
    /// id for a static member rejoining with none.
    pub fn member_bytes(&self, member_id: &str, instance_id: Option<&str>) -> (usize, usize) {
        let id = match instance_id.and_then(|i| self.statics.get(i)) {
            Some(id) if member_id.is_empty() => id.as_str(),
            _ => member_id,
        };
        self.members.get(id).map_or((0, 0), |m| (m.held_bytes(id), m.assignment.len()))
    }

    /// What the members' assignments hold.
    pub fn assignment_bytes(&self) -> usize {
        self.members.values().map(|m| m.assignment.len()).sum()
    }

    /// Brings the shard's total up to date with what this group holds now: called after each
    /// request or tick that changed the group.
    pub fn account(&mut self) {
        self.shard_bytes.set(self.shard_bytes.get().saturating_sub(self.accounted) + self.held);
        self.accounted = self.held;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shard_bytes.set(self.shard_bytes.get().saturating_sub(self.accounted));
    }
}
