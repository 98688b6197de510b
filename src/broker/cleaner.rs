//! A shard's log cleaner (Kafka's `LogCleaner`, one per shard instead of a thread pool): it cleans
//! the shard's compacted partitions one pass at a time, in the background, the dirtiest first
//! (those past `max.compaction.lag.ms`, then the highest dirty ratio above
//! `min.cleanable.dirty.ratio`), and sleeps `log.cleaner.backoff.ms` when none is due.
//!
//! Its share of `log.cleaner.dedupe.buffer.size` and of `log.cleaner.io.max.bytes.per.second` is
//! the broker's divided by the shards. Its reads and writes go through the shard's io_uring like
//! the requests' and it gives way to them between chunks (`storage::compaction::throttle`). A
//! partition whose pass fails (a damaged batch, a map too small for one batch's keys) is left
//! alone until the broker restarts, as Kafka marks it uncleanable, and the error is logged once.

use super::{state, unix_ms, Partition};
use crate::storage::compaction::throttle::Throttle;
use crate::storage::log::{Budget, CleanOutcome, Dirt};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

pub async fn run() {
    let (cfg, shards) = {
        let st = state();
        (st.cfg.cleaner.clone(), st.shard.count.max(1))
    };
    let map_bytes = cfg.dedupe_buffer_bytes / shards;
    let mut throttle = Throttle::new(cfg.io_max_bytes_per_second / shards as f64);
    let backoff = Duration::from_millis(cfg.backoff_ms.max(1));
    let mut uncleanable: HashSet<(String, i32)> = HashSet::new();
    loop {
        let now_ms = unix_ms();
        let Some((topic, p, part, dirt)) = dirtiest(&uncleanable, now_ms) else {
            shards::sleep(backoff).await;
            continue;
        };
        let started = std::time::Instant::now();
        match part.log.compact(now_ms, Budget { map_bytes, throttle: &mut throttle }).await {
            Ok(CleanOutcome::Cleaned(pass)) => {
                let s = pass.stats;
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    %topic,
                    partition = p,
                    dirty_ratio = format!("{:.2}", dirt.ratio),
                    cleaned_to = pass.cleaned_to,
                    segments_replaced = pass.segments_replaced,
                    records = format!("{} of {} kept", s.records_kept, s.records_in),
                    bytes = format!("{} -> {}", s.bytes_in, s.bytes_out),
                    markers_removed = s.markers_removed,
                    secs = format!("{secs:.3}"),
                    swap_secs = format!("{:.3}", pass.swap.as_secs_f64()),
                    mb_per_s = format!("{:.1}", s.bytes_in as f64 / 1e6 / secs.max(1e-9)),
                    "log cleaned"
                );
            }
            // Closing, or nothing after all: look again later rather than at once.
            Ok(CleanOutcome::Idle) => shards::sleep(backoff).await,
            Ok(CleanOutcome::MapTooSmall) => {
                tracing::warn!(%topic, partition = p, map_bytes, "the keys of one batch do not fit log.cleaner.dedupe.buffer.size (per shard): the partition is not cleaned until a restart");
                uncleanable.insert((topic, p));
            }
            Err(e) => {
                tracing::warn!(%topic, partition = p, error = %e, "cleaning failed: the partition is not cleaned until a restart");
                uncleanable.insert((topic, p));
            }
        }
    }
}

/// The open partition most due for cleaning.
fn dirtiest(uncleanable: &HashSet<(String, i32)>, now_ms: i64) -> Option<(String, i32, Rc<Partition>, Dirt)> {
    let st = state();
    let parts = st.partitions.borrow();
    parts
        .iter()
        .filter(|(key, _)| !uncleanable.contains(key))
        .filter_map(|((t, p), part)| Some((t.clone(), *p, part.clone(), part.log.dirt(now_ms)?)))
        .max_by(|a, b| (a.3.overdue, a.3.ratio).partial_cmp(&(b.3.overdue, b.3.ratio)).unwrap_or(std::cmp::Ordering::Equal))
}
