//! How fast requests may create topics by naming them (`auto.create.topics.rate`).
//!
//! Auto-creation stays on by default, as in Kafka, and `max.partitions` bounds how many topics it
//! can make; this bounds how fast, so that a client asking Metadata for thousands of random names
//! cannot spend the broker's disk and catalog writes in a burst. Topics over the rate are answered
//! LEADER_NOT_AVAILABLE — what Kafka answers while a topic is being auto-created, which clients
//! retry — and are created when the client asks again within the rate. The bucket lives on the
//! controller shard, which makes every topic change.

use std::cell::Cell;
use std::time::Instant;

/// A token bucket: `per_second` tokens a second, holding at most a second's worth.
pub struct Rate {
    per_second: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl Rate {
    pub fn new(per_second: u32) -> Rate {
        let per_second = f64::from(per_second);
        Rate { per_second, tokens: Cell::new(per_second), last: Cell::new(Instant::now()) }
    }

    /// Takes one token if there is one.
    pub fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> bool {
        let refilled = self.tokens.get() + now.saturating_duration_since(self.last.get()).as_secs_f64() * self.per_second;
        self.last.set(now);
        let tokens = refilled.min(self.per_second.max(1.0));
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            true
        } else {
            self.tokens.set(tokens);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_cut_at_a_second_worth_and_tokens_come_back_with_time() {
        let rate = Rate::new(10);
        let t0 = Instant::now();
        let taken = (0..50).filter(|_| rate.take_at(t0)).count();
        assert_eq!(taken, 10);
        assert!(!rate.take_at(t0 + Duration::from_millis(50)), "half a token is not one");
        assert!(rate.take_at(t0 + Duration::from_millis(110)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| rate.take_at(later)).count(), 10, "an idle minute still allows one second's burst");
    }
}
