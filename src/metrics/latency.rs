//! Latency histograms: HDR underneath, exported as Prometheus buckets and as percentiles.
//!
//! 1 µs to 60 s at two significant digits (1% resolution): ~20 KB a histogram, so that a shard
//! keeps one per API and stage and hands copies over at a scrape without a noticeable pause.

use hdrhistogram::Histogram;
use std::time::Duration;

const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 2;

/// Bucket bounds in seconds, from 50 µs (a produce answered from memory) to 30 s (long polls).
pub const BUCKETS_SECONDS: [f64; 18] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
    /// Exact sum in µs: the histogram's values are rounded to its buckets.
    sum_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist = match Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS) {
            Ok(h) => h,
            Err(e) => unreachable!("constant bounds are valid: {e}"),
        };
        Latency { hist, sum_us: 0 }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, HIGHEST_US));
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Adds `other`'s values (another shard's, say).
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// What `self` recorded since `earlier`, a copy of it taken before.
    pub fn since(&self, earlier: &Latency) -> Latency {
        let mut hist = self.hist.clone();
        // `earlier` is a prefix of `self` unless the process restarted: then all of `self` is new.
        if hist.subtract(&earlier.hist).is_err() {
            return self.clone();
        }
        Latency { hist, sum_us: self.sum_us.saturating_sub(earlier.sum_us) }
    }

    /// Values in each of `BUCKETS_SECONDS` and above the last (not cumulative), for the exposition.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = BUCKETS_SECONDS
            .iter()
            .map(|&le| {
                let upto = self.hist.count_between(0, (le * 1e6) as u64);
                let n = upto.saturating_sub(below);
                below = upto;
                (le, n)
            })
            .collect();
        buckets.push((f64::INFINITY, self.count().saturating_sub(below)));
        buckets
    }

    /// The value at quantile `q` (0..=1), in seconds; 0 when nothing was recorded.
    pub fn quantile_seconds(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_quantiles_and_differences() {
        let mut a = Latency::new();
        for us in [40, 80, 900, 900, 20_000] {
            a.record(Duration::from_micros(us));
        }
        let buckets = a.buckets();
        assert_eq!(buckets[0], (0.00005, 1), "40 µs is under 50 µs");
        assert_eq!(buckets[1], (0.0001, 1));
        assert_eq!(buckets.iter().find(|b| b.0 == 0.001).map(|b| b.1), Some(2));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 0)));
        assert!((a.sum_seconds() - 0.02192).abs() < 1e-9);
        assert!((a.quantile_seconds(0.5) - 0.0009).abs() < 0.00001);
        assert!((a.quantile_seconds(0.99) - 0.02).abs() < 0.0003);
        let before = a.clone();
        a.record(Duration::from_millis(5));
        let recent = a.since(&before);
        assert_eq!(recent.count(), 1);
        assert!((recent.quantile_seconds(0.5) - 0.005).abs() < 0.0001);
        let mut merged = Latency::new();
        merged.merge(&a);
        merged.merge(&before);
        assert_eq!(merged.count(), 11);
        assert_eq!(Latency::new().quantile_seconds(0.99), 0.0);
    }
}
