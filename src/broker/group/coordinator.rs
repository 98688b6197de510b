//! The groups one shard coordinates: their membership state (`state::Group`), their committed
//! offsets, and the offsets files that persist them. Lives in the shard's `ShardState`; touched by
//! that shard only (requests for a group reach it through `super::on_coordinator`).

use super::state::Group;
use super::store::{self, GroupOffsets, OffsetsFile, Record, OFFSETS_PARTITIONS};
use crate::broker::{state, unix_ms, BrokerConfig};
use crate::storage::FlushPolicy;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Coordinator {
    shard: usize,
    pub(super) groups: RefCell<HashMap<String, Rc<RefCell<Group>>>>,
    pub(super) offsets: RefCell<HashMap<String, GroupOffsets>>,
    files: RefCell<HashMap<u32, OffsetsFile>>,
    /// One write to the offsets files at a time: records are applied in the order they were
    /// persisted.
    writing: shards::Turn,
    pub(super) min_session: i32,
    pub(super) max_session: i32,
    initial_rebalance_delay: Duration,
    offsets_retention: Duration,
}

impl Coordinator {
    pub fn new(cfg: &BrokerConfig, shard: usize) -> Self {
        Coordinator {
            shard,
            groups: RefCell::default(),
            offsets: RefCell::default(),
            files: RefCell::default(),
            writing: shards::Turn::default(),
            min_session: cfg.group_min_session_timeout_ms,
            max_session: cfg.group_max_session_timeout_ms,
            initial_rebalance_delay: Duration::from_millis(cfg.group_initial_rebalance_delay_ms),
            offsets_retention: Duration::from_secs(cfg.offsets_retention_minutes * 60),
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
                let opened = OffsetsFile::open(&dir, n, fsync, &mut offsets).await;
                *self.offsets.borrow_mut() = offsets;
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
        let delay = self.initial_rebalance_delay;
        self.groups.borrow_mut().entry(id.to_string()).or_insert_with(|| Rc::new(RefCell::new(Group::new(delay, Instant::now())))).clone()
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
            let mut offsets = self.offsets.borrow_mut();
            for r in records {
                store::apply(&mut offsets, r.clone());
            }
        }
        if !file.compaction_due() {
            return Ok(());
        }
        let live: Vec<(String, GroupOffsets)> = {
            let offsets = self.offsets.borrow();
            offsets.iter().filter(|(g, _)| store::partition_for(g) == n).map(|(g, o)| (g.clone(), o.clone())).collect()
        };
        file.compact(live.iter().map(|(g, o)| (g, o))).await
    }

    /// The expiry tick: members past their session, groups left with nothing, offsets past retention.
    pub(super) async fn expire(&self, now: Instant) {
        let groups: Vec<Rc<RefCell<Group>>> = self.groups.borrow().values().cloned().collect();
        for g in groups {
            g.borrow_mut().expire(now);
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
