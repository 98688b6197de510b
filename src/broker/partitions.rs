//! The partitions a shard owns: open, closed until first use, or offline.
//!
//! A broker restarted with many partitions does not open them all before serving: each is
//! registered closed (`Closed::Dormant`, no files, no writer task) and opened — recovering its active
//! segment — by the first request that needs its log. Start-up time and open files then follow the
//! partitions in use, not the partitions that exist. A partition that fails to open is
//! `Closed::Offline`: requests get KAFKA_STORAGE_ERROR and it is tried again at most every
//! `OFFLINE_RETRY`.
//!
//! Open partitions are bounded by the file descriptors left (`admission`): when opening one more
//! would eat into the reserve, the least recently used partitions that no request holds are closed
//! first (written out and fsynced), keeping their idempotent-producer state, and become dormant again.

use super::catalog::TopicMeta;
use super::produce::Producers;
use super::{admission, config, errors, state, Partition};
use crate::storage::{Log, LogConfig};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An offline partition is tried again when a request comes for it, at most this often.
const OFFLINE_RETRY: Duration = Duration::from_secs(5);

/// A partition this shard owns whose log is not open.
pub enum Closed {
    /// Not opened since the broker started, or closed to make room; opened on first use, with the
    /// producer state it had.
    Dormant(Producers),
    /// Opening it failed, last at this instant.
    Offline(Instant),
}

/// Of the open partitions, at most this share is closed at once to make room (at least one).
const EVICT_SHARE: usize = 8;

/// The share of the shard's recent-batch cache each partition gets: the budget split over every
/// partition the shard owns, open or not, so that opening one changes no other's share.
pub fn cache_share() -> usize {
    let st = state();
    let owned = st.partitions.borrow().len() + st.closed.borrow().len();
    st.cfg.cache_bytes_per_shard / owned.max(1)
}

/// Registers partition `p` of `meta` as closed until first use (a broker starting).
pub fn register_dormant(meta: &TopicMeta, p: i32) {
    state().closed.borrow_mut().entry((meta.name.clone(), p)).or_insert_with(|| Closed::Dormant(Producers::default()));
}

/// Opens one partition this shard owns, or marks it offline with the reason.
pub async fn open(meta: &TopicMeta, p: i32) -> Result<Rc<Partition>, String> {
    let st = state();
    let (log_config, rules) = config::partition_settings(&config::shard_topic_defaults(&st), meta);
    let dir = st.partition_dir(&meta.name, p);
    let key = (meta.name.clone(), p);
    let log_config = LogConfig { cache_bytes: cache_share(), ..log_config };
    let most = admission::open_partitions_per_shard(st.shard.count);
    while st.partitions.borrow().len() >= most && close_idle().await > 0 {}
    let mut room = admission::room_to_open_partition();
    // Partitions with many segments hold more files than the share assumes: close more.
    while room.is_err() && close_idle().await > 0 {
        // The closed logs' files go when their writer tasks end, which they do when next polled.
        futures_lite::future::yield_now().await;
        room = admission::room_to_open_partition();
    }
    let opened = match room {
        Ok(()) => Log::open(&dir, log_config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match opened {
        Ok(log) => {
            let producers = match st.closed.borrow_mut().remove(&key) {
                Some(Closed::Dormant(producers)) => producers,
                _ => Producers::default(),
            };
            let part = Rc::new(Partition {
                log,
                producers: RefCell::new(producers),
                rules: std::cell::Cell::new(rules),
                last_used: std::cell::Cell::new(Instant::now()),
            });
            st.partitions.borrow_mut().insert(key, part.clone());
            Ok(part)
        }
        Err(e) => {
            let reason = format!("{}: {e}", dir.display());
            tracing::error!(topic = %meta.name, partition = p, error = %reason, "partition offline: it cannot be opened");
            // A dormant partition's producer state is lost with it going offline: its log cannot
            // be read to check sequences against anyway.
            st.closed.borrow_mut().insert(key, Closed::Offline(Instant::now()));
            Err(reason)
        }
    }
}

/// This shard's partition `topic`/`p`, opened if it is dormant, or the error code for a request
/// that names it: an offline partition (tried again if `OFFLINE_RETRY` has passed) is
/// KAFKA_STORAGE_ERROR, a missing one UNKNOWN_TOPIC_OR_PARTITION.
pub async fn local(topic: &str, p: i32) -> Result<Rc<Partition>, i16> {
    let st = state();
    let key = (topic.to_string(), p);
    loop {
        let found = st.partitions.borrow().get(&key).cloned();
        if let Some(part) = found {
            part.last_used.set(Instant::now());
            return Ok(part);
        }
        // Being opened or closed by another task: wait for that, then look again.
        let busy = st.opening.borrow().get(&key).cloned();
        if let Some(done) = busy {
            done.notified().await;
            continue;
        }
        let try_now = match st.closed.borrow().get(&key) {
            None => return Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
            Some(Closed::Dormant(_)) => true,
            Some(Closed::Offline(tried)) => tried.elapsed() >= OFFLINE_RETRY,
        };
        let meta = match st.topic(topic) {
            Some(meta) if try_now => meta,
            _ => return Err(errors::KAFKA_STORAGE_ERROR),
        };
        let _busy = Busy::mark(&key);
        return open(&meta, p).await.map_err(|_| errors::KAFKA_STORAGE_ERROR);
    }
}

/// Marks a partition as being opened or closed while it lives; requests for it wait.
struct Busy {
    key: (String, i32),
    done: Rc<shards::Notify>,
}

impl Busy {
    fn mark(key: &(String, i32)) -> Busy {
        let done = Rc::new(shards::Notify::default());
        state().opening.borrow_mut().insert(key.clone(), done.clone());
        Busy { key: key.clone(), done }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        state().opening.borrow_mut().remove(&self.key);
        self.done.notify_all();
    }
}

/// Closes the least recently used open partitions that no request holds (an `EVICT_SHARE`th of
/// the open ones, at least one): their queued writes are written and fsynced, their files closed,
/// and they become dormant with their producer state. Returns how many were closed.
async fn close_idle() -> usize {
    let st = state();
    let mut idle: Vec<((String, i32), Instant)> = st
        .partitions
        .borrow()
        .iter()
        .filter(|(_, part)| Rc::strong_count(part) == 1)
        .map(|(key, part)| (key.clone(), part.last_used.get()))
        .collect();
    idle.sort_by_key(|(_, used)| *used);
    let count = (st.partitions.borrow().len() / EVICT_SHARE).max(1).min(idle.len());
    let mut closed = 0;
    for (key, _) in idle.into_iter().take(count) {
        let Some(part) = st.partitions.borrow_mut().remove(&key) else { continue };
        let _busy = Busy::mark(&key);
        if let Err(e) = part.log.close().await {
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "closing an idle partition failed");
        }
        let producers = part.producers.take();
        st.closed.borrow_mut().insert(key, Closed::Dormant(producers));
        closed += 1;
    }
    if closed > 0 {
        tracing::debug!(closed, open = st.partitions.borrow().len(), "closed idle partitions to stay within the open-files limit");
    }
    closed
}

/// Drops this shard's partitions of `topic` numbered `first` and up: open ones with their data,
/// closed ones with whatever their directories hold.
pub async fn drop_from(topic: &str, first: i32) {
    let st = state();
    let doomed = |t: &String, p: i32| t == topic && p >= first;
    let closed: Vec<i32> = st.closed.borrow().keys().filter(|(t, p)| doomed(t, *p)).map(|(_, p)| *p).collect();
    st.closed.borrow_mut().retain(|(t, p), _| !doomed(t, *p));
    for p in closed {
        let dir = st.partition_dir(topic, p);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a closed partition's files failed");
            }
        }
    }
    let logs: Vec<Rc<Partition>> = {
        let mut parts = st.partitions.borrow_mut();
        let keys: Vec<_> = parts.keys().filter(|(t, p)| doomed(t, *p)).cloned().collect();
        keys.into_iter().filter_map(|k| parts.remove(&k)).collect()
    };
    for part in logs {
        if let Err(e) = part.log.delete().await {
            tracing::warn!(%topic, error = %e, "deleting partition data failed");
        }
    }
}

/// Dormant partitions that retention may have work in: more than one segment (retention deletes
/// whole closed segments only). Opening them lets retention run; the others stay closed.
pub fn dormant_with_closed_segments() -> Vec<(String, i32)> {
    let st = state();
    let dormant: Vec<(String, i32)> =
        st.closed.borrow().iter().filter(|(_, c)| matches!(c, Closed::Dormant(_))).map(|(k, _)| k.clone()).collect();
    dormant
        .into_iter()
        .filter(|(t, p)| {
            std::fs::read_dir(st.partition_dir(t, *p))
                .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".log")).count() > 1)
                .unwrap_or(false)
        })
        .collect()
}
