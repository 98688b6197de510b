//! A follower replica: a task on its shard fetches the leader's batches from where its copy ends,
//! over the mailboxes (a pull, as Kafka's follower fetch: the follower sets the pace, and catching
//! up after a restart is the same loop), appends them at the leader's offsets, and fetches again
//! once they are written — fsynced under flush-every-batch — which tells the leader how far the
//! copy goes. The leader holds each fetch until it has something past it, or `FETCH_WAIT`.

use super::super::{on_shard, state, Partition};
use super::leader::{self, Fetched, Refused};
use crate::storage::LogError;
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
    pub leader: u16,
}

impl Follower {
    pub fn new(leader: u16) -> Follower {
        Follower { leader }
    }
}

/// Copies partition `topic`/`p` from its leader into `part` until the partition is closed or
/// dropped on this shard.
pub async fn run(topic: String, p: i32, part: Rc<Partition>, leader: u16) {
    let me = state().shard.id as u16;
    let mut backoff = BACKOFF_FIRST;
    loop {
        let current = state().partition(&topic, p);
        if !current.is_some_and(|c| Rc::ptr_eq(&c, &part)) {
            return;
        }
        let end = part.log.replica_end();
        let (t, offset) = (topic.clone(), end.written);
        let reply = on_shard(usize::from(leader), move || leader::serve(t, p, me, offset, end, FETCH_BYTES_MAX, FETCH_WAIT)).await;
        let failed = match reply {
            Ok(fetched) => match copy(&part, fetched).await {
                Ok(()) => {
                    backoff = BACKOFF_FIRST;
                    continue;
                }
                Err(LogError::Deleted) => return,
                Err(e) => format!("appending the leader's batches failed: {e}"),
            },
            Err(Refused::OutOfRange { log_start, log_end }) => {
                format!("offset {offset} is not in the leader's log [{log_start}, {log_end}]: this copy cannot go on")
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

/// Appends what a fetch brought and waits until it is as durable as the flush policy makes it;
/// then follows the leader's high watermark and log start.
async fn copy(part: &Partition, fetched: Fetched) -> Result<(), LogError> {
    let log = &part.log;
    let mut next = None;
    for batches in fetched.batches {
        next = Some(log.append_replica(batches)?);
    }
    if let Some(next) = next {
        log.wait_durable(next - 1).await?;
    }
    let end = log.replica_end().written;
    log.set_replicated_hw(Some(fetched.high_watermark.min(end)));
    if fetched.log_start > log.offsets().log_start && fetched.log_start <= end {
        log.delete_records(fetched.log_start).await?;
    }
    Ok(())
}
