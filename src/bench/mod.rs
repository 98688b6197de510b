//! `weir-bench`: load generator and latency profiler on Weir's own lean Kafka client.
//!
//! Threads are pinned, payloads are prepared up front, and nothing is allocated per message: a
//! producer sends the same prepared batch bytes again and again (the broker assigns offsets), and
//! in e2e mode only the 8-byte send timestamps inside the values are patched (and the CRC redone).
//! With `--rate`, load is open-loop: each message has an intended send time, and its latency counts
//! from then, so a stalled broker cannot hide its stall (coordinated omission is corrected).

pub mod args;
pub mod consume;
pub mod produce;
pub mod report;

pub use args::{Args, Mode};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters shared by the worker threads and the progress reporter.
#[derive(Default)]
pub struct Totals {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

impl Totals {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Pins the calling thread to `core` (modulo the core count); best effort.
pub fn pin(core: usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it and we pass its true size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// When the run ends: after a message count or a duration, whichever the user gave.
#[derive(Clone)]
pub struct Stop {
    pub start: Instant,
    pub warmup: Duration,
    pub duration: Option<Duration>,
    pub messages: Option<u64>,
    pub done: Arc<AtomicU64>,
}

impl Stop {
    pub fn measuring(&self, now: Instant) -> bool {
        now >= self.start + self.warmup
    }

    pub fn finished(&self, now: Instant, messages: u64) -> bool {
        self.done.load(Ordering::Relaxed) != 0
            || self.duration.is_some_and(|d| now >= self.start + self.warmup + d)
            || self.messages.is_some_and(|n| messages >= n)
    }
}

/// Nanoseconds since the bench started: the clock e2e timestamps use (one process, one clock).
pub fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}
