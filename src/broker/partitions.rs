//! The partitions a shard owns: open, closed until first use, or offline.
//!
//! A broker restarted with many partitions does not open them all before serving: each is
//! registered closed (`Closed::Dormant`, no files, no writer task) and opened — recovering its active
//! segment — by the first request that needs its log. Start-up time and open files then follow the
//! partitions in use, not the partitions that exist. A partition that fails to open is
//! `Closed::Offline`: requests get KAFKA_STORAGE_ERROR and it is tried again at most every
//! `OFFLINE_RETRY`.
//!
//! An open partition holds no file by itself: its log opens files when it is used, within the
//! shard's budget of files, closing the least recently used logs' files to make room
//! (`storage::file_budget`), and closes them all after 5 s idle. So partitions stay open once
//! opened; the files they hold follow the partitions in use.

use super::catalog::TopicMeta;
use super::replication::{self, Role};
use super::{config, errors, state, Partition};
use crate::storage::Log;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An offline partition is tried again when a request comes for it, at most this often.
const OFFLINE_RETRY: Duration = Duration::from_secs(5);

/// A partition this shard owns whose log is not open.
pub enum Closed {
    /// Not opened since the broker started; opened on first use.
    Dormant,
    /// Opening it failed, last at this instant.
    Offline(Instant),
}

/// Registers partition `p` of `meta` as closed until first use (a broker starting).
pub fn register_dormant(meta: &TopicMeta, p: i32) {
    state().closed.borrow_mut().entry((meta.name.clone(), p)).or_insert(Closed::Dormant);
}

/// Opens one partition this shard owns, or marks it offline with the reason.
pub async fn open(meta: &TopicMeta, p: i32) -> Result<Rc<Partition>, String> {
    let st = state();
    let (log_config, rules) = config::partition_settings(&st.cfg, &config::shard_topic_defaults(&st), meta);
    let dir = st.partition_dir(&meta.name, p);
    let key = (meta.name.clone(), p);
    let Some(role) = Role::of(meta, p, st.shard.count, st.shard.id) else {
        return Err(format!("{}: this shard holds no replica of it", dir.display()));
    };
    match Log::open(&dir, log_config).await.map_err(|e| e.to_string()) {
        Ok(log) => {
            st.closed.borrow_mut().remove(&key);
            let part = Rc::new(Partition { topic_id: meta.id, log, rules: std::cell::Cell::new(rules), role, traffic: Rc::default() });
            st.partitions.borrow_mut().insert(key, part.clone());
            replication::start(meta, p, &part);
            Ok(part)
        }
        Err(e) => {
            let reason = format!("{}: {e}", dir.display());
            tracing::error!(topic = %meta.name, partition = p, error = %reason, "partition offline: it cannot be opened");
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
            Some(Closed::Dormant) => true,
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

/// How a follower's copy is cut back (`storage::truncate`).
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Everything at or past this offset goes.
    To(u64),
    /// Everything goes; the log starts again at this offset.
    RestartAt(u64),
}

/// Closes this shard's replica `part` of `topic`/`p`, cuts its log as `cut` says and opens it
/// again (recovery reads the cut files), in its place: requests meanwhile wait for it.
pub async fn reopen_cut(topic: &str, p: i32, part: Rc<Partition>, cut: Cut) -> Result<Rc<Partition>, String> {
    let st = state();
    let key = (topic.to_string(), p);
    let meta = st.topic(topic).ok_or_else(|| format!("topic {topic} is gone"))?;
    let _busy = Busy::mark(&key);
    st.partitions.borrow_mut().remove(&key);
    st.closed.borrow_mut().insert(key, Closed::Dormant);
    part.log.close().await.map_err(|e| e.to_string())?;
    let dir = st.partition_dir(topic, p);
    let cut_done = match cut {
        Cut::To(offset) => crate::storage::truncate::truncate_closed(&dir, offset).await,
        Cut::RestartAt(offset) => crate::storage::truncate::restart_at(&dir, offset).await,
    };
    if let Err(e) = cut_done {
        let reason = format!("{}: cutting the log failed: {e}", dir.display());
        tracing::error!(%topic, partition = p, error = %reason, "partition offline");
        st.closed.borrow_mut().insert((topic.to_string(), p), Closed::Offline(Instant::now()));
        return Err(reason);
    }
    tracing::info!(%topic, partition = p, ?cut, "replica log cut to follow its leader");
    open(&meta, p).await
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

/// Drops this shard's partitions of `topic` numbered `first` and up: open ones with their data,
/// closed ones with whatever their directories hold.
pub async fn drop_from(topic: &str, first: i32) {
    let st = state();
    let doomed = |t: &String, p: i32| t == topic && p >= first;
    // One being opened (a first request, a cut replica) is let finish, then dropped with the rest:
    // else it would stay open, of no topic.
    loop {
        let busy = st.opening.borrow().iter().find(|((t, p), _)| doomed(t, *p)).map(|(_, done)| done.clone());
        match busy {
            Some(done) => done.notified().await,
            None => break,
        }
    }
    let closed: Vec<i32> = st.closed.borrow().keys().filter(|(t, p)| doomed(t, *p)).map(|(_, p)| *p).collect();
    st.closed.borrow_mut().retain(|(t, p), _| !doomed(t, *p));
    for p in closed {
        let dir = st.partition_dir(topic, p);
        if let Err(e) = shards::fs::remove_dir_all(&dir).await {
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
        st.closed.borrow().iter().filter(|(_, c)| matches!(c, Closed::Dormant)).map(|(k, _)| k.clone()).collect();
    dormant
        .into_iter()
        .filter(|(t, p)| {
            shards::fs::list(&st.partition_dir(t, *p))
                .map(|names| names.iter().filter(|n| n.ends_with(".log")).count() > 1)
                .unwrap_or(false)
        })
        .collect()
}
