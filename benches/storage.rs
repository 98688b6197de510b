//! Partition-log benchmarks (issue 2): append MB/s by batch size and flush policy, group commit
//! with 8 concurrent appenders, hot and cold reads, lookups in a small and a large log, recovery.
//!
//! `cargo bench --bench storage` (data under target/bench-data; the large-log cases write 5 GiB).
//! `WEIR_BENCH_LARGE_GIB=1` shrinks the large log for a quick pass.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use weir::storage::{batch, FlushPolicy, Log, LogConfig};

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cfg(flush: FlushPolicy) -> LogConfig {
    LogConfig { flush, retention_ms: -1, max_message_bytes: 2 << 20, ..LogConfig::default() }
}

/// Appends `batches` copies of `b` from `appenders` concurrent tasks. Each keeps at most
/// `in_flight` batches appended but not yet durable (per the flush policy), as a Kafka producer
/// keeps requests in flight; returns the elapsed time.
async fn append_run(log: Rc<Log>, b: Bytes, batches: u64, appenders: u64, in_flight: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, b) = (log.clone(), b.clone());
        tasks.push(shards::spawn_local(async move {
            let mut waiting = std::collections::VecDeque::new();
            for _ in 0..batches / appenders {
                log.wait_for_room().await.unwrap();
                waiting.push_back(log.append(b.clone()).unwrap().last_offset);
                if waiting.len() >= in_flight {
                    log.wait_durable(waiting.pop_front().expect("not empty")).await.unwrap();
                }
            }
            if let Some(&last) = waiting.back() {
                log.wait_durable(last).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    start.elapsed()
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    // (name, batch bytes, flush policy, appenders, batches each keeps in flight). Without flushes
    // an appender waits only for room in the log's bounded queue (`Log::wait_for_room`).
    let cases: &[(&str, usize, FlushPolicy, u64, usize)] = &[
        ("1KiB/flush-never", 1 << 10, FlushPolicy::Never, 1, usize::MAX),
        ("16KiB/flush-never", 16 << 10, FlushPolicy::Never, 1, usize::MAX),
        ("1MiB/flush-never", 1 << 20, FlushPolicy::Never, 1, usize::MAX),
        ("16KiB/flush-every-batch/1-appender-64-in-flight", 16 << 10, FlushPolicy::EveryBatch, 1, 64),
        ("16KiB/flush-every-batch/8-appenders", 16 << 10, FlushPolicy::EveryBatch, 8, 1),
        // Kafka's producer default: max.in.flight.requests.per.connection=5.
        ("16KiB/flush-every-batch/8-appenders-5-in-flight", 16 << 10, FlushPolicy::EveryBatch, 8, 5),
        ("1KiB/flush-every-batch/8-appenders", 1 << 10, FlushPolicy::EveryBatch, 8, 1),
    ];
    for &(name, bytes, flush, appenders, in_flight) in cases {
        let value = bytes - 80;
        // One request buffer appended again and again, as a broker appends what it received.
        let b = Bytes::from(batch::build(1, value, 1));
        let total_bytes = 256u64 << 20;
        let batches = (total_bytes / b.len() as u64).max(appenders);
        g.throughput(Throughput::Bytes(batches * b.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter_custom(|iters| {
                shards::run_local(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let d = dir("append");
                        let log = Log::open(&d, cfg(flush)).await.unwrap();
                        total += append_run(log.clone(), b.clone(), batches, appenders, in_flight).await;
                        log.close().await.unwrap();
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

/// Fills a log with `bytes` of 16 KiB batches; returns the next offset.
async fn fill(log: &Rc<Log>, bytes: u64) -> u64 {
    let b = Bytes::from(batch::build(16, 1000, 1));
    append_run(log.clone(), b.clone(), bytes / b.len() as u64, 1, 64).await;
    log.offsets().high_watermark
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let d = dir("read");
    // 512 MiB: the first 448 MiB are only on disk, the last 64 MiB also in the cache.
    weir::storage::read_cache::set_budget(64 << 20);
    let (log, end) = shards::run_local(async {
        let log = Log::open(&d, cfg(FlushPolicy::Never)).await.unwrap();
        let end = fill(&log, 512 << 20).await;
        log.close().await.unwrap();
        (d.clone(), end)
    });
    let _ = log;
    for (name, hot) in [("cold-from-file", false), ("hot-from-cache", true)] {
        g.throughput(Throughput::Bytes(48 << 20));
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                shards::run_local(async {
                    let log = Log::open(&d, cfg(FlushPolicy::Never)).await.unwrap();
                    // Reopened logs start with an empty cache: warm it by appending the hot tail again.
                    let start_offset = if hot {
                        let before = log.offsets().high_watermark;
                        fill(&log, 48 << 20).await;
                        before
                    } else {
                        0
                    };
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if !hot {
                            drop_page_cache(&d);
                        }
                        let t = Instant::now();
                        let (mut offset, mut bytes) = (start_offset, 0u64);
                        // 48 MiB, or the whole hot tail (a whole number of batches, a little less).
                        while bytes < 48 << 20 && offset < log.offsets().high_watermark {
                            let read = log.read(offset, 1 << 20).await.unwrap();
                            // `fill` appends 16 KiB batches, each read back as one chunk (only a
                            // batch of SHARED_BATCH_MIN_BYTES or more spans two).
                            for c in &read.chunks {
                                let c = c.to_bytes().unwrap();
                                let mut at = 0;
                                while at < c.len() {
                                    let h = batch::header(&c[at..]).unwrap();
                                    offset = h.base_offset.get() as u64 + h.last_offset_delta.get() as u64 + 1;
                                    at += batch::framed_len(&c[at..]).unwrap();
                                }
                                bytes += c.len() as u64;
                            }
                        }
                        total += t.elapsed();
                    }
                    log.close().await.unwrap();
                    total
                })
            })
        });
    }
    let _ = end;
    g.finish();
}

fn large_gib() -> u64 {
    std::env::var("WEIR_BENCH_LARGE_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

fn lookups_and_recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let sizes = [("50MiB", 50u64 << 20), ("large", large_gib() << 30)];
    let mut dirs = Vec::new();
    for (name, bytes) in sizes {
        let d = dir(&format!("lookup-{name}"));
        let end = shards::run_local(async {
            let log = Log::open(&d, cfg(FlushPolicy::Never)).await.unwrap();
            let end = fill(&log, bytes).await;
            log.close().await.unwrap();
            end
        });
        dirs.push((name, d, end));
    }
    for (name, d, end) in &dirs {
        g.bench_function(BenchmarkId::new("random-offset", name), |bench| {
            bench.iter_custom(|iters| {
                shards::run_local(async {
                    let log = Log::open(d, cfg(FlushPolicy::Never)).await.unwrap();
                    let mut x = 0x9E37_79B9_7F4A_7C15u64;
                    let t = Instant::now();
                    for _ in 0..iters {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let got = log.read(x % end, 1).await.unwrap();
                        assert!(!got.chunks.is_empty());
                    }
                    let elapsed = t.elapsed();
                    log.close().await.unwrap();
                    elapsed
                })
            })
        });
    }
    g.finish();

    // Recovery after a crash: the large log reopened without a clean close (the writer dies with
    // the executor, like kill -9), timed from open to ready.
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    let (_, d, _) = &dirs[1];
    g.bench_function(BenchmarkId::new("open-after-crash", "large"), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Crash: append a little more, then drop everything without close().
                shards::run_local(async {
                    let log = Log::open(d, cfg(FlushPolicy::Never)).await.unwrap();
                    let a = log.append(batch::build(16, 1000, 1).into()).unwrap();
                    log.wait_written(a.last_offset).await.unwrap();
                });
                total += shards::run_local(async {
                    let t = Instant::now();
                    let log = Log::open(d, cfg(FlushPolicy::Never)).await.unwrap();
                    let elapsed = t.elapsed();
                    assert!(log.offsets().high_watermark > 0);
                    log.close().await.unwrap();
                    elapsed
                });
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, appends, reads, lookups_and_recovery);
criterion_main!(benches);

/// Evicts the segment files under `dir` from the page cache, so that file reads come from the disk.
fn drop_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: advice on an open fd; no memory is passed.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}
