//! The shard's budget of recent batches its logs keep in memory, and their eviction, oldest first
//! across the shard's partitions.
//!
//! Every log keeps its recent batches (`Log`'s cache, whose unwritten tail is its writer's queue);
//! this counts them for the whole shard. When the shard holds more than its budget, the batches
//! appended longest ago go first, whichever partition holds them, down to a little under the
//! budget, so that evicting is a pass over the logs now and then rather than on every append.
//! Batches not yet written are never evicted (the writers need them). The budget is the shard's
//! share of `log.cache.max.bytes`, lowered and raised again by the broker's memory governor
//! (`broker::memory`) as the machine's or the cgroup's free memory goes.
//!
//! Shard-local, like everything a log touches: no locks, no atomics.

use super::log::Log;
use std::cell::{Cell, RefCell};
use std::rc::Weak;
use std::time::Instant;

/// A shard's budget before anyone sets one (logs opened outside the broker, tests).
const DEFAULT_BUDGET: usize = 64 << 20;

thread_local! {
    static BUDGET: Cell<usize> = const { Cell::new(DEFAULT_BUDGET) };
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// Logs that hold cached batches (they note themselves on their first append).
    static HOLDERS: RefCell<Vec<Weak<Log>>> = const { RefCell::new(Vec::new()) };
    static EPOCH: Instant = Instant::now();
}

/// This shard's budget, in bytes.
pub fn budget() -> usize {
    BUDGET.with(|b| b.get())
}

/// Sets this shard's budget; a smaller one evicts at once.
pub fn set_budget(bytes: usize) {
    BUDGET.with(|b| b.set(bytes));
    trim();
}

/// Bytes of batches this shard's logs hold in memory, written or not.
pub fn held() -> usize {
    HELD.with(|h| h.get())
}

pub(super) fn add(bytes: usize) {
    HELD.with(|h| h.set(h.get() + bytes));
}

pub(super) fn remove(bytes: usize) {
    HELD.with(|h| h.set(h.get().saturating_sub(bytes)));
}

/// When a batch is appended, in ms on the shard's clock: eviction's order.
pub(super) fn now_ms() -> u64 {
    EPOCH.with(|e| e.elapsed().as_millis() as u64)
}

/// Notes that `log` holds cached batches, for `trim` to evict from.
pub(super) fn note_holder(log: &Weak<Log>) {
    HOLDERS.with(|h| {
        let mut h = h.borrow_mut();
        if !h.iter().any(|w| w.ptr_eq(log)) {
            h.push(log.clone());
        }
    });
}

/// Evicts written batches, oldest appended first across the shard's logs, while the shard holds
/// more than its budget: down to 31/32 of it. Each round finds the oldest batch any log could
/// give up and evicts, from every log, what was appended within a window of it; the window doubles
/// each round, so that a trim takes a few passes over the logs however they interleave.
pub fn trim() {
    let budget = budget();
    if held() <= budget {
        return;
    }
    let target = budget - budget / 32;
    let logs: Vec<std::rc::Rc<Log>> = HOLDERS.with(|h| {
        let mut h = h.borrow_mut();
        h.retain(|w| w.strong_count() > 0);
        h.iter().filter_map(Weak::upgrade).collect()
    });
    let mut window = 1;
    while held() > target {
        let Some(oldest) = logs.iter().filter_map(|l| l.oldest_evictable_ms()).min() else { return };
        let before = oldest.saturating_add(window);
        for log in &logs {
            log.evict_appended_before(before, || held() > target);
        }
        window = window.saturating_mul(2);
    }
}
