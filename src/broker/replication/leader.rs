//! A partition leader's side of replication, Kafka's (`Partition.scala`): it serves its followers'
//! fetches, learns from each how far its copy goes, keeps the in-sync replicas (a follower leaves
//! the ISR when it has not caught up for `replica.lag.time.max.ms`, and joins again once it
//! reaches the high watermark), and moves the high watermark to the least end among the ISR — not
//! at all while the ISR is smaller than `min.insync.replicas` (KIP-966).

use super::super::{errors, partitions, state, Partition};
use crate::storage::{Log, LogError, ReplicaEnd};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a follower gets for one fetch.
pub struct Fetched {
    /// Whole batches from the offset asked for, with their offsets.
    pub batches: Vec<Bytes>,
    pub high_watermark: u64,
    pub log_start: u64,
}

/// Why a follower's fetch got nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A Kafka error code (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR, …).
    Code(i16),
    /// The offset asked for is not in the leader's log: the follower's copy must start again at
    /// `log_start` (it is behind the log start) or be cut back to `log_end` (it is ahead).
    OutOfRange { log_start: u64, log_end: u64 },
}

/// A follower's progress, as its fetches tell it.
struct Progress {
    end: ReplicaEnd,
    /// When the follower last had everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    caught_up: Instant,
    /// The previous fetch: when, and the leader's log end then.
    last_fetch: Option<(Instant, u64)>,
}

pub struct Leader {
    me: u16,
    /// The leader epoch this replica leads in.
    pub epoch: i32,
    replicas: Vec<u16>,
    isr: RefCell<Vec<u16>>,
    progress: RefCell<HashMap<u16, Progress>>,
    /// An ISR change is with the controller: no other is asked for meanwhile.
    altering: Cell<bool>,
    /// When this replica became leader: followers in the ISR count as caught up then.
    since: Instant,
    /// The log end when it became leader (Kafka's leader epoch start offset): a follower joins the
    /// ISR only once its copy reaches it, as well as the high watermark — after a restart the high
    /// watermark may lag far behind what this replica holds and acknowledged.
    epoch_start: Cell<u64>,
}

impl Leader {
    pub fn new(me: u16, epoch: i32, replicas: Vec<u16>, isr: Vec<u16>) -> Leader {
        Leader {
            me,
            epoch,
            replicas,
            isr: RefCell::new(isr),
            progress: RefCell::new(HashMap::new()),
            altering: Cell::new(false),
            since: Instant::now(),
            epoch_start: Cell::new(0),
        }
    }

    /// Takes charge of the partition's log: its high watermark starts at the last one it knew (as a
    /// follower, or at the last clean close; else at the log start) and moves as the ISR's copies
    /// are known (at once if it is the only one in sync), so a restart never shows a record that
    /// only this replica holds.
    pub fn start(&self, log: &Log, min_isr: usize) {
        log.lead(self.epoch);
        self.epoch_start.set(log.replica_end().written);
        let start = log.offsets().log_start;
        log.set_replicated_hw(Some(log.known_high_watermark().unwrap_or(start).max(start)));
        self.update_hw(log, min_isr);
    }

    /// Takes the ISR the controller recorded, and moves the high watermark with it.
    pub fn refresh(&self, log: &Log, min_isr: usize, isr: Vec<u16>) {
        *self.isr.borrow_mut() = isr;
        self.update_hw(log, min_isr);
    }

    pub fn isr(&self) -> Vec<u16> {
        self.isr.borrow().clone()
    }

    pub fn replicas(&self) -> &[u16] {
        &self.replicas
    }

    /// acks=all's check before appending: NOT_ENOUGH_REPLICAS when the ISR is smaller than
    /// `min_isr` (at most the replica count, as Kafka's effective minimum).
    pub fn check_enough(&self, min_isr: usize) -> Result<(), i16> {
        if self.isr.borrow().len() < min_isr.min(self.replicas.len()) {
            Err(errors::NOT_ENOUGH_REPLICAS)
        } else {
            Ok(())
        }
    }

    /// Moves the high watermark to the least end among the ISR: the log bounds it by the
    /// followers' least end (it applies its own), or by nothing when the leader is alone in sync;
    /// while the ISR is smaller than `min_isr` it stays where it is. It never moves back.
    pub(super) fn update_hw(&self, log: &Log, min_isr: usize) {
        let isr = self.isr.borrow();
        let current = log.offsets().high_watermark;
        if isr.len() < min_isr.min(self.replicas.len()) {
            log.set_replicated_hw(Some(current));
            return;
        }
        let progress = self.progress.borrow();
        let least = isr.iter().filter(|&&r| r != self.me).map(|r| progress.get(r).map_or(0, |p| p.end.durable)).min();
        log.set_replicated_hw(least.map(|least| least.max(current)));
    }

    /// Records a follower's fetch at `offset` with its copy ending at `end`, when the leader's log
    /// ends at `leader_end`; returns the ISR to ask for if the follower should join it (its copy
    /// reaches the high watermark and the epoch's start, as Kafka's `isFollowerInSync`).
    pub(super) fn fetched(&self, follower: u16, end: ReplicaEnd, leader_end: u64, hw: u64, now: Instant) -> Option<Vec<u16>> {
        let mut all = self.progress.borrow_mut();
        let p = all.entry(follower).or_insert(Progress { end, caught_up: self.since, last_fetch: None });
        if end.written >= leader_end {
            p.caught_up = now;
        } else if let Some((at, then)) = p.last_fetch {
            if end.written >= then {
                p.caught_up = p.caught_up.max(at);
            }
        }
        p.end = end;
        p.last_fetch = Some((now, leader_end));
        let isr = self.isr.borrow();
        (!isr.contains(&follower) && end.written >= hw && end.written >= self.epoch_start.get()).then(|| {
            let mut grown = isr.clone();
            grown.push(follower);
            grown
        })
    }

    /// The ISR without the followers that have not caught up within `lag`, if any must go.
    pub(super) fn shrunk(&self, lag: Duration, now: Instant) -> Option<Vec<u16>> {
        let isr = self.isr.borrow();
        let progress = self.progress.borrow();
        let kept: Vec<u16> = isr
            .iter()
            .copied()
            .filter(|&r| r == self.me || now.duration_since(progress.get(&r).map_or(self.since, |p| p.caught_up)) <= lag)
            .collect();
        (kept.len() < isr.len()).then_some(kept)
    }
}

/// Serves follower `follower`'s fetch of partition `topic`/`p` from `offset` (its copy ending at
/// `end`): waits up to `max_wait` for batches past it, and returns at most `max_bytes` of them
/// (at least one).
pub async fn serve(
    topic: String,
    p: i32,
    follower: u16,
    offset: u64,
    end: ReplicaEnd,
    max_bytes: usize,
    max_wait: Duration,
) -> Result<Fetched, Refused> {
    let part = partitions::local(&topic, p).await.map_err(Refused::Code)?;
    let Some(leader) = part.role.leader().cloned() else {
        return Err(Refused::Code(errors::NOT_LEADER_OR_FOLLOWER));
    };
    let fetch = FollowerFetch { follower, offset, end, max_bytes, max_wait };
    answer(&leader, &part.log, part.rules.get().min_insync_replicas, fetch, |isr| alter_isr(topic, p, &leader, isr)).await
}

/// A follower's fetch: who, from where, how far its copy goes, how much and how long to wait.
pub struct FollowerFetch {
    pub follower: u16,
    pub offset: u64,
    pub end: ReplicaEnd,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// `leader`'s answer to `fetch` from its `log`: learns the follower's progress (asking for the ISR
/// `alter` gets if it should join), moves the high watermark, then waits for and reads batches.
pub async fn answer(
    leader: &Leader,
    log: &Log,
    min_isr: usize,
    fetch: FollowerFetch,
    alter: impl FnOnce(Vec<u16>),
) -> Result<Fetched, Refused> {
    let offsets = log.offsets();
    let out_of_range = Refused::OutOfRange { log_start: offsets.log_start, log_end: offsets.log_end };
    if fetch.offset > offsets.log_end || fetch.offset < offsets.log_start && !in_first_batch(log, fetch.offset).await {
        return Err(out_of_range);
    }
    let written = log.replica_end().written;
    if let Some(isr) = leader.fetched(fetch.follower, fetch.end, written, offsets.high_watermark, Instant::now()) {
        alter(isr);
    }
    leader.update_hw(log, min_isr);
    if fetch.offset >= written {
        let appended = log.appended.notified();
        if log.replica_end().written <= fetch.offset {
            futures_lite::future::or(appended, shards::sleep(fetch.max_wait)).await;
        }
    }
    let batches = log.read_replica(fetch.offset.max(offsets.log_start), fetch.max_bytes).await.map_err(|e| match e {
        LogError::OutOfRange { start, end, .. } => Refused::OutOfRange { log_start: start, log_end: end },
        other => Refused::Code(super::super::produce::log_error_code(&other)),
    })?;
    let offsets = log.offsets();
    Ok(Fetched { batches, high_watermark: offsets.high_watermark, log_start: offsets.log_start })
}

/// Is `offset`, below the log start, in the batch holding it? (DeleteRecords put the log start
/// inside a batch: a copy starting again there fetches that batch from its base, as
/// `follower::straddled` asks.)
async fn in_first_batch(log: &Log, offset: u64) -> bool {
    let first = log.read_replica(log.offsets().log_start, 1).await.ok().and_then(|b| crate::storage::batch::base_offset(b.first()?));
    first.is_some_and(|base| base <= offset)
}

/// OffsetForLeaderEpoch between replicas: where `epoch` ends in the leader's log of `topic`/`p`
/// (−1, −1 if it knows no such epoch).
pub async fn end_offset(topic: String, p: i32, epoch: i32) -> Result<(i32, i64), Refused> {
    let part = partitions::local(&topic, p).await.map_err(Refused::Code)?;
    if part.role.leader().is_none() {
        return Err(Refused::Code(errors::NOT_LEADER_OR_FOLLOWER));
    }
    Ok(part.log.end_offset_for(epoch))
}

/// Asks the controller to make `isr` partition `topic`/`p`'s ISR, unless a change is pending; the
/// change reaches this leader as every topic change does (`refresh`).
fn alter_isr(topic: String, p: i32, leader: &Rc<Leader>, isr: Vec<u16>) {
    if leader.altering.replace(true) {
        return;
    }
    let (me, before) = (leader.me, leader.isr());
    let leader = leader.clone();
    shards::spawn_local(async move {
        let proposed = isr.clone();
        let changed = super::change_state(topic.clone(), p, move |st, _, _| {
            // Decided on what the controller no longer holds (a change in between): not applied.
            if st.leader != Some(me) || st.isr != before {
                return Err((errors::INVALID_REQUEST, "stale ISR change".into()));
            }
            // A replica back in the ISR is online again (a full disk freed, say).
            st.offline.retain(|r| !proposed.contains(r));
            st.isr = proposed;
            Ok(())
        })
        .await;
        match changed {
            Ok(_) => tracing::info!(%topic, partition = p, ?isr, "ISR changed"),
            Err((_, why)) => tracing::warn!(%topic, partition = p, ?isr, %why, "ISR change not made"),
        }
        leader.altering.set(false);
    })
    .detach();
}

/// Takes out of the ISR the followers of this shard's leaders that have not caught up for
/// `replica.lag.time.max.ms`, checked every half of it (as Kafka does).
pub async fn expiry_loop() {
    let lag = Duration::from_millis(state().cfg.replica_lag_time_max_ms.max(1));
    loop {
        shards::sleep(lag / 2).await;
        let now = Instant::now();
        let leaders: Vec<(String, i32, Rc<Partition>)> = state()
            .partitions
            .borrow()
            .iter()
            .filter(|(_, part)| part.role.leader().is_some())
            .map(|((t, p), part)| (t.clone(), *p, part.clone()))
            .collect();
        for (topic, p, part) in leaders {
            let Some(leader) = part.role.leader() else { continue };
            if let Some(isr) = leader.shrunk(lag, now) {
                alter_isr(topic, p, leader, isr);
            }
        }
    }
}
