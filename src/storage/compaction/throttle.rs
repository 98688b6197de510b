//! The cleaner's I/O budget (`log.cleaner.io.max.bytes.per.second`, Kafka's `Throttler`): after
//! each chunk it reads or writes, the cleaner sleeps for as long as the chunk takes at the budget's
//! rate, less the time the work itself took; and it gives way to the shard's other tasks between
//! chunks when they have waited long enough (the cleaner runs in the shard's background task queue,
//! `shards::spawn_background`), so that requests waiting meanwhile run first.

use std::time::{Duration, Instant};

/// How far ahead of its budget the cleaner may run before it sleeps: sleeps shorter than this
/// would cost more in timer wake-ups than they spread out.
const SLACK: Duration = Duration::from_millis(10);

pub struct Throttle {
    bytes_per_second: f64,
    /// When the bytes moved so far are paid for at the budget's rate.
    paid_until: Instant,
}

impl Throttle {
    /// No budget when `bytes_per_second` is not positive and finite (Kafka's default is unlimited).
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle { bytes_per_second, paid_until: Instant::now() }
    }

    fn limited(&self) -> bool {
        self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0
    }

    /// Counts `bytes` read or written; returns once they fit the budget and other tasks had their turn.
    pub async fn spent(&mut self, bytes: usize) {
        if self.limited() {
            let now = Instant::now();
            let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
            self.paid_until = self.paid_until.max(now) + cost;
            let ahead = self.paid_until.saturating_duration_since(now);
            if ahead > SLACK {
                shards::sleep(ahead).await;
                return;
            }
        }
        shards::yield_to_io().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_spreads_the_bytes_over_time() {
        let took = shards::run_local(async {
            let mut t = Throttle::new(1_000_000.0);
            let start = Instant::now();
            for _ in 0..10 {
                t.spent(20_000).await; // 200 KB at 1 MB/s: 200 ms
            }
            start.elapsed()
        });
        assert!(took >= Duration::from_millis(180), "{took:?}");
        let free = shards::run_local(async {
            let mut t = Throttle::new(f64::INFINITY);
            let start = Instant::now();
            for _ in 0..10 {
                t.spent(1 << 30).await;
            }
            start.elapsed()
        });
        assert!(free < Duration::from_millis(100), "no budget, no sleep: {free:?}");
    }
}
