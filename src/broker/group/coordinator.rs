//! The groups one shard coordinates: their membership state (`state::Group`), their committed
//! offsets, and the offsets files that persist them. Lives in the shard's `ShardState`; touched by
//! that shard only (requests for a group reach it through `super::on_coordinator`).

use super::state::{Group, ShardBytes};
use super::store::{self, GroupOffsets, OffsetsFile, Pending, Record, OFFSETS_PARTITIONS};
use crate::broker::{state, unix_ms, BrokerConfig};
use crate::storage::FlushPolicy;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Coordinator {
    shard: usize,
    pub(super) groups: RefCell<HashMap<String, Rc<RefCell<Group>>>>,
    pub(super) offsets: RefCell<HashMap<String, GroupOffsets>>,
    /// Transactional producers' offsets waiting for their transactions to end.
    pub(super) pending: RefCell<Pending>,
    files: RefCell<HashMap<u32, OffsetsFile>>,
    /// One write to the offsets files at a time: records are applied in the order they were
    /// persisted.
    writing: shards::Turn,
    pub(super) min_session: i32,
    pub(super) max_session: i32,
    initial_rebalance_delay: Duration,
    offsets_retention: Duration,
    /// Bytes the groups hold for their members, and this shard's share of group.metadata.max.bytes.
    member_bytes: ShardBytes,
    member_bytes_max: usize,
    /// Joins and assignments refused at that bound since the last warning, and when that was.
    refused: Cell<(u64, Option<Instant>)>,
}

impl Coordinator {
    pub fn new(cfg: &BrokerConfig, shard: usize) -> Self {
        Coordinator {
            shard,
            groups: RefCell::default(),
            offsets: RefCell::default(),
            pending: RefCell::default(),
            files: RefCell::default(),
            writing: shards::Turn::default(),
            min_session: cfg.group_min_session_timeout_ms,
            max_session: cfg.group_max_session_timeout_ms,
            initial_rebalance_delay: Duration::from_millis(cfg.group_initial_rebalance_delay_ms),
            offsets_retention: Duration::from_secs(cfg.offsets_retention_minutes * 60),
            member_bytes: ShardBytes::default(),
            member_bytes_max: cfg.group_metadata_max_bytes / cfg.shards.max(1),
            refused: Cell::new((0, None)),
        }
    }

    /// Replays the offsets partitions this shard owns.
    pub async fn recover(&self) -> std::io::Result<()> {
        let st = state();
        let dir = st.cfg.data_dir.join("__consumer_offsets");
        let fsync = st.cfg.log.flush == FlushPolicy::EveryBatch;
        for n in 0..OFFSETS_PARTITIONS {
            if shards::placement("__consumer_offsets", n, st.shard.count) == self.shard {
                let mut offsets = std::mem::take(&mut *self.offsets.borrow_mut());
                let mut pending = std::mem::take(&mut *self.pending.borrow_mut());
                let opened = OffsetsFile::open(&dir, n, fsync, &mut offsets, &mut pending).await;
                *self.offsets.borrow_mut() = offsets;
                *self.pending.borrow_mut() = pending;
                self.files.borrow_mut().insert(n, opened?);
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        let _turn = self.writing.take().await;
        let files: Vec<u32> = self.files.borrow().keys().copied().collect();
        for n in files {
            let Some(file) = self.files.borrow_mut().remove(&n) else { continue };
            if let Err(e) = file.sync().await {
                tracing::error!(error = %e, "fsync of committed offsets failed");
            }
            self.files.borrow_mut().insert(n, file);
        }
    }

    /// The group's state, created (Empty) if it has none yet.
    pub(super) fn group(&self, id: &str) -> Rc<RefCell<Group>> {
        let (delay, bytes) = (self.initial_rebalance_delay, &self.member_bytes);
        self.groups
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(RefCell::new(Group::new(delay, Instant::now(), bytes.clone()))))
            .clone()
    }

    /// Whether this shard's groups may hold `incoming` bytes for a member (or an assignment) in
    /// place of its `current` ones within group.metadata.max.bytes. Refusals are logged at most
    /// every 10 s, with their count.
    pub(super) fn admits(&self, group: &str, current: usize, incoming: usize) -> bool {
        let held = self.member_bytes.get().saturating_sub(current);
        if held.saturating_add(incoming) <= self.member_bytes_max {
            return true;
        }
        let (count, warned) = self.refused.get();
        let now = Instant::now();
        if warned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
            tracing::warn!(%group, held, incoming, limit = self.member_bytes_max, refused = count + 1, "group members' metadata would pass group.metadata.max.bytes: refused");
            self.refused.set((0, Some(now)));
        } else {
            self.refused.set((count + 1, warned));
        }
        false
    }

    pub(super) fn existing(&self, id: &str) -> Option<Rc<RefCell<Group>>> {
        self.groups.borrow().get(id).cloned()
    }

    /// Kafka loads a group for its offsets alone: such a group exists (Empty) for the group APIs.
    pub(super) fn has_offsets(&self, id: &str) -> bool {
        self.offsets.borrow().contains_key(id)
    }

    /// Appends `records` to the group's offsets file and, once they are as durable as the flush
    /// policy makes them, applies them in memory: a commit that failed to persist is never seen.
    pub(super) async fn persist(&self, group: &str, records: &[Record]) -> std::io::Result<()> {
        let _turn = self.writing.take().await;
        let n = store::partition_for(group);
        // Out of the map while it is written (no borrow across the await); back whatever happens.
        let Some(mut file) = self.files.borrow_mut().remove(&n) else {
            return Err(std::io::Error::other(format!("offsets partition {n} is not on this shard")));
        };
        let result = self.append_and_apply(&mut file, n, records).await;
        self.files.borrow_mut().insert(n, file);
        result
    }

    async fn append_and_apply(&self, file: &mut OffsetsFile, n: u32, records: &[Record]) -> std::io::Result<()> {
        file.append(records).await?;
        {
            let (mut offsets, mut pending) = (self.offsets.borrow_mut(), self.pending.borrow_mut());
            for r in records {
                store::apply(&mut offsets, &mut pending, r.clone());
            }
        }
        if !file.compaction_due() {
            return Ok(());
        }
        let mine = |g: &String| store::partition_for(g) == n;
        let live: Vec<(String, GroupOffsets)> =
            self.offsets.borrow().iter().filter(|(g, _)| mine(g)).map(|(g, o)| (g.clone(), o.clone())).collect();
        let pending: Pending = self.pending.borrow().iter().filter(|(g, _)| mine(g)).map(|(g, p)| (g.clone(), p.clone())).collect();
        file.compact(live.iter().map(|(g, o)| (g, o)), pending.iter()).await
    }

    /// The marker of `producer_id`'s transaction for offsets partition `n`: its pending offsets in
    /// that partition's groups are committed (or dropped), durably.
    pub async fn end_txn(&self, n: u32, producer_id: i64, commit: bool) -> std::io::Result<()> {
        let groups: Vec<String> = self
            .pending
            .borrow()
            .iter()
            .filter(|(g, by_producer)| store::partition_for(g) == n && by_producer.contains_key(&producer_id))
            .map(|(g, _)| g.clone())
            .collect();
        for group in groups {
            self.persist(&group, &[Record::TxnEnd { group: group.clone(), producer_id, commit }]).await?;
        }
        Ok(())
    }

    /// Whether `group` has offsets of `topic`/`partition` waiting for a transaction to end.
    pub(super) fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending.borrow().get(group).is_some_and(|by_producer| by_producer.values().any(|o| o.contains_key(&key)))
    }

    /// The expiry tick: members past their session, groups left with nothing, offsets past retention.
    pub(super) async fn expire(&self, now: Instant) {
        let groups: Vec<Rc<RefCell<Group>>> = self.groups.borrow().values().cloned().collect();
        for g in groups {
            let mut g = g.borrow_mut();
            g.expire(now);
            g.account();
        }
        {
            let offsets = self.offsets.borrow();
            self.groups.borrow_mut().retain(|id, g| !g.borrow().is_vacant() || offsets.contains_key(id));
        }
        let cutoff = unix_ms() - self.offsets_retention.as_millis() as i64;
        let stale: Vec<String> = {
            let groups = self.groups.borrow();
            let offsets = self.offsets.borrow();
            offsets
                .iter()
                .filter(|(id, o)| groups.get(*id).is_none_or(|g| g.borrow().is_vacant()) && o.values().all(|c| c.commit_time_ms < cutoff))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for group in stale {
            if let Err(e) = self.persist(&group, &[Record::DeleteGroup { group: group.clone() }]).await {
                tracing::warn!(%group, error = %e, "could not persist offsets expiry");
            }
        }
    }
}

impl Coordinator {
    /// Each group this shard coordinates: membership and committed offsets.
    pub fn stats(&self) -> Vec<crate::metrics::snapshot::GroupStats> {
        let mut out: std::collections::BTreeMap<String, crate::metrics::snapshot::GroupStats> = std::collections::BTreeMap::new();
        for (id, group) in self.groups.borrow().iter() {
            let g = group.borrow();
            out.insert(
                id.clone(),
                crate::metrics::snapshot::GroupStats {
                    group: id.clone(),
                    state: g.phase.name(),
                    generation: g.generation,
                    members: g.members.len() as u64,
                    committed: Vec::new(),
                },
            );
        }
        for (id, offsets) in self.offsets.borrow().iter() {
            let entry = out.entry(id.clone()).or_insert_with(|| crate::metrics::snapshot::GroupStats {
                group: id.clone(),
                state: "Empty",
                ..Default::default()
            });
            entry.committed = offsets.iter().map(|((t, p), c)| (t.clone(), *p, c.offset)).collect();
        }
        out.into_values().collect()
    }
}
