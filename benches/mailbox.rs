//! Cross-shard round trip through the `shards` mailboxes (issue 3 target: p50 ≤ 20 µs, p99 ≤ 100 µs
//! on an idle machine). Two pinned shards; shard 0 calls shard 1 and awaits the reply, 100,000
//! times; prints HDR percentiles. `cargo bench --bench mailbox`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

fn main() {
    let rounds: u64 = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let result: Arc<Mutex<Option<hdrhistogram::Histogram<u64>>>> = Arc::default();
    let out = result.clone();
    let shards = shards::start(2, shards::Cores::Pinned, move |shard| {
        let out = out.clone();
        async move {
            shard.serve_mailbox();
            if shard.id != 0 {
                // Shard 1 only serves its mailbox; end when shard 0 is done.
                while out.lock().unwrap().is_none() {
                    shards::sleep(std::time::Duration::from_millis(10)).await;
                }
                return;
            }
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
            for i in 0..rounds + 1000 {
                let t = Instant::now();
                let echoed = shard.submit_to(1, move || async move { i + 1 }).await;
                assert_eq!(echoed, i + 1);
                if i >= 1000 {
                    hist.record(t.elapsed().as_nanos() as u64).unwrap();
                }
            }
            // Sporadic calls: each finds the other shard parked and pays the wake-ups.
            let mut sporadic = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
            for i in 0..1000u64 {
                shards::sleep(std::time::Duration::from_millis(1)).await;
                let t = Instant::now();
                assert_eq!(shard.submit_to(1, move || async move { i }).await, i);
                sporadic.record(t.elapsed().as_nanos() as u64).unwrap();
            }
            report("back to back", &hist);
            report("one call per ms (receiver parked)", &sporadic);
            *out.lock().unwrap() = Some(hist);
        }
    })
    .expect("shards start");
    shards.join();
    assert!(result.lock().unwrap().is_some(), "shard 0 finished its rounds");
}

fn report(what: &str, h: &hdrhistogram::Histogram<u64>) {
    println!(
        "cross-shard round trip, {what}, {} calls: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.9) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}
