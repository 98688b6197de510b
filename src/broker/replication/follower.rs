//! A follower replica: a task on its shard fetches the leader's batches from where its copy ends,
//! over the mailboxes (a pull, as Kafka's follower fetch: the follower sets the pace, and catching
//! up after a restart is the same loop), appends them at the leader's offsets, and fetches again
//! once they are written — fsynced under flush-every-batch — which tells the leader how far the
//! copy goes. The leader holds each fetch until it has something past it, or `FETCH_WAIT`.
//!
//! Before its first fetch, a follower makes its copy a prefix of its leader's log (KIP-279): it
//! asks where its newest leader epoch ends in the leader's log and cuts its own there, so records
//! a previous leader wrote that the current one does not have go. A fetch the leader answers out
//! of range cuts the copy to the leader's end (it is ahead) or starts it again at the leader's log
//! start (it is behind).

use super::super::partitions::{self, Cut};
use super::super::{on_shard, state, Partition};
use super::leader::{self, Fetched, Refused};
use crate::storage::{Log, LogError};
use std::rc::Rc;
use std::time::Duration;

/// Most bytes of batches one fetch brings (at least one batch).
const FETCH_BYTES_MAX: usize = 8 << 20;
/// How long the leader holds a fetch that finds nothing new (`replica.fetch.wait.max.ms`).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a fetch that failed, doubling from the first to the last (`replica.fetch.backoff.ms`):
/// a follower that opened before its leader's shard knew the topic (creation applies the topic
/// shard by shard) goes on within milliseconds.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

pub struct Follower {
    /// The replica it copies (`None`: the partition has no leader now).
    pub leader: Option<u16>,
    /// The leader epoch it follows in.
    pub epoch: i32,
}

/// Copies partition `topic`/`p` from its leader into `part` until the partition is closed or
/// dropped on this shard.
pub async fn run(topic: String, p: i32, part: Rc<Partition>, leader: u16) {
    let me = state().shard.id as u16;
    let mut backoff = BACKOFF_FIRST;
    let mut reconciled = false;
    loop {
        if !current(&topic, p, &part) {
            return;
        }
        // A copy that cannot be written does not fetch: the leader would count it as caught up.
        // (A full disk freed lets it go on.)
        if part.log.failed() {
            shards::sleep(BACKOFF_MAX).await;
            continue;
        }
        if !reconciled {
            match diverging(&topic, p, &part, leader).await {
                Ok(None) => reconciled = true,
                Ok(Some(cut)) => return recut(topic, p, part, cut).await,
                Err(code) => {
                    tracing::debug!(%topic, partition = p, leader, code, "asking the leader where its epoch ends failed");
                    shards::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let end = part.log.replica_end();
        let (t, offset) = (topic.clone(), end.written);
        let reply = on_shard(usize::from(leader), move || leader::serve(t, p, me, offset, end, FETCH_BYTES_MAX, FETCH_WAIT)).await;
        // The replica took another role meanwhile (it leads now, say): what the old leader sent is
        // not for its log.
        if !current(&topic, p, &part) {
            return;
        }
        let failed = match reply {
            Ok(fetched) => {
                if let Some(cut) = straddled(&part.log, &fetched.batches) {
                    return recut(topic, p, part, cut).await;
                }
                match copy(&topic, p, &part, fetched).await {
                    Ok(()) => {
                        backoff = BACKOFF_FIRST;
                        continue;
                    }
                    Err(LogError::Deleted) => return,
                    Err(e) => format!("appending the leader's batches failed: {e}"),
                }
            }
            Err(Refused::OutOfRange { log_start, log_end }) => {
                return recut(topic, p, part, out_of_range(offset, log_start, log_end)).await
            }
            Err(Refused::Code(code)) => format!("the leader answered error {code}"),
        };
        if backoff >= BACKOFF_MAX {
            tracing::warn!(%topic, partition = p, leader, error = %failed, "replica fetch failed");
        } else {
            tracing::debug!(%topic, partition = p, leader, error = %failed, "replica fetch failed");
        }
        shards::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Where this copy must be cut to be a prefix of the leader's log, if anywhere (`cut_for`).
async fn diverging(topic: &str, p: i32, part: &Partition, leader: u16) -> Result<Option<Cut>, i16> {
    let Some(mine) = part.log.latest_epoch() else { return Ok(None) };
    let t = topic.to_string();
    match on_shard(usize::from(leader), move || super::leader::end_offset(t, p, mine)).await {
        Ok(answer) => Ok(cut_for(&part.log, mine, answer)),
        Err(Refused::Code(code)) => Err(code),
        Err(Refused::OutOfRange { .. }) => Err(-1),
    }
}

/// Where `log`, whose newest epoch is `mine`, must be cut given the leader's answer (epoch, end
/// offset) to where `mine` ends in its log: there (or, if the leader's newest epoch at most `mine`
/// is older, where that one ends in both logs).
pub fn cut_for(log: &Log, mine: i32, (epoch, end): (i32, i64)) -> Option<Cut> {
    let log_end = log.replica_end().written;
    if epoch < 0 || end < 0 {
        // The leader keeps no epochs to compare with: its log end is what fetching checks.
        return None;
    }
    let mut cut_at = (end as u64).min(log_end);
    if epoch != mine {
        let (_, own_end) = log.end_offset_for(epoch);
        cut_at = cut_at.min(own_end.max(0) as u64);
    }
    (cut_at < log_end).then_some(Cut::To(cut_at))
}

/// The cut a fetch at `offset` that the leader answered out of range asks for: back to the
/// leader's end (the copy is ahead), or empty from its log start (the copy is behind).
pub fn out_of_range(offset: u64, log_start: u64, log_end: u64) -> Cut {
    if offset > log_end {
        Cut::To(log_end)
    } else {
        Cut::RestartAt(log_start)
    }
}

/// An empty copy starting inside the first batch its leader sent (DeleteRecords put the leader's
/// log start inside a batch, and the copy started again there) cannot take it: it starts again at
/// that batch's base, as Kafka's follower does, and then follows the leader's log start up.
pub fn straddled(log: &Log, batches: &[bytes::Bytes]) -> Option<Cut> {
    let end = log.replica_end().written;
    let base = crate::storage::batch::base_offset(batches.first()?)?;
    (base < end && log.offsets().log_start == end).then_some(Cut::RestartAt(base))
}

/// Cuts this copy and lets the reopened replica's own task go on (`partitions::open` starts it).
async fn recut(topic: String, p: i32, part: Rc<Partition>, cut: Cut) {
    if let Err(e) = partitions::reopen_cut(&topic, p, part, cut).await {
        tracing::error!(%topic, partition = p, error = %e, "the replica could not be cut back to its leader's log");
    }
}

/// Is `part` still this shard's replica of `topic`/`p`, in the role this task serves?
fn current(topic: &str, p: i32, part: &Rc<Partition>) -> bool {
    state().partition(topic, p).is_some_and(|c| Rc::ptr_eq(&c, part))
}

/// Appends what a fetch brought and waits until it is as durable as the flush policy makes it;
/// then follows the leader's high watermark and log start (unless the replica took another role).
async fn copy(topic: &str, p: i32, part: &Rc<Partition>, fetched: Fetched) -> Result<(), LogError> {
    append_fetched(&part.log, fetched.batches).await?;
    if !current(topic, p, part) {
        return Ok(());
    }
    follow_leader(&part.log, fetched.high_watermark, fetched.log_start).await
}

/// Appends the leader's `batches` and waits until they are as durable as the flush policy makes them.
pub async fn append_fetched(log: &Log, batches: Vec<bytes::Bytes>) -> Result<(), LogError> {
    let mut next = None;
    for batches in batches {
        next = Some(log.append_replica(batches)?);
    }
    if let Some(next) = next {
        log.wait_durable(next - 1).await?;
    }
    Ok(())
}

/// Follows the leader's high watermark (as far as this copy goes) and log start (as far as this
/// copy's high watermark goes: a recovered tail not yet fsynced holds it back until a later fetch).
pub async fn follow_leader(log: &Log, high_watermark: u64, log_start: u64) -> Result<(), LogError> {
    let end = log.replica_end().written;
    log.set_replicated_hw(Some(high_watermark.min(end)));
    let o = log.offsets();
    let start = log_start.min(o.high_watermark);
    if start > o.log_start {
        log.delete_records(start).await?;
    }
    Ok(())
}
