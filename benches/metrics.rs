//! What the metrics add to the hot paths, per call: the clock reads and the recorder updates a
//! request makes (`recorder::request`, with the three `Instant::now()` around it), and those of a
//! segment write. Also a shard's copy of its recorder, which each scrape takes.
//! `cargo bench --bench metrics`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use weir::metrics::recorder::{self, Recorder};

fn per_call(name: &str, n: u64, mut f: impl FnMut(u64)) {
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    println!("{name:<48} {:>8.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
}

fn main() {
    per_call("Instant::now", 10_000_000, |_| {
        black_box(Instant::now());
    });
    per_call("request: 3 clock reads + recorder::request", 5_000_000, |i| {
        let arrived = Instant::now();
        let started = Instant::now();
        let processed = Instant::now();
        let spread = Duration::from_nanos(i % 4096 * 97);
        recorder::request(0, started - arrived + spread, processed - started + spread, spread);
    });
    per_call("segment write: 1 clock read + recorder::storage_write", 5_000_000, |i| {
        let started = Instant::now();
        recorder::storage_write(started.elapsed() + Duration::from_nanos(i % 1000 * 1000), 65_536, 1 + i % 64);
    });
    // A shard that has answered 20 APIs: what a gather copies on it.
    for api in 0..20 {
        recorder::request(api, Duration::from_micros(5), Duration::from_micros(300), Duration::from_micros(20));
    }
    per_call("a shard's recorder copy (20 APIs) at a gather", 2_000, |_| {
        black_box(Recorder::copy());
    });
}
