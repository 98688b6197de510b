//! `weir-bench`: load generator and latency profiler (see `weir::bench`).

use clap::Parser;
use mimalloc::MiMalloc;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::bench::{self, consume::Assigned, report::Report, Args, Mode, Stop, Totals};
use weir::client::Cluster;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("weir-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn run(mut args: Args) -> Result<(), String> {
    args.compression.parse::<weir::protocol::compression::Codec>()?;
    if (args.idempotent || args.transactional_id.is_some()) && args.acks != -1 {
        return Err("--idempotent and --transactional-id need --acks -1, as Kafka's producers do".into());
    }
    if args.messages.is_none() && args.duration.is_none() {
        args.duration = Some(Duration::from_secs(10));
    }
    let mut cluster = Cluster::connect(&args.bootstrap).map_err(|e| e.to_string())?;
    let existing = cluster.metadata(&[], false).map_err(|e| e.to_string())?;
    if !existing.iter().any(|t| t.name == args.topic) {
        if args.mode == Mode::Consume {
            return Err(format!("topic {} does not exist: produce to it first", args.topic));
        }
        cluster.create_topic(&args.topic, args.partitions, args.replication_factor, &args.topic_configs).map_err(|e| e.to_string())?;
    }
    let layout = cluster.metadata(&[&args.topic], false).map_err(|e| e.to_string())?.pop().ok_or("no metadata")?;
    let leader_addr = |p: usize| cluster.brokers.get(&layout.leaders[p]).cloned().unwrap_or_else(|| args.bootstrap.clone());
    let partitions: Vec<(i32, String)> = (0..layout.leaders.len()).map(|p| (p as i32, leader_addr(p))).collect();
    let mut consume_parts = Vec::new();
    if args.mode != Mode::Produce {
        for (p, addr) in &partitions {
            let (start, end) =
                cluster.offsets_as(&args.topic, *p, layout.leaders[*p as usize], args.read_committed).map_err(|e| e.to_string())?;
            consume_parts.push(match args.mode {
                Mode::Consume => Assigned { partition: *p, addr: addr.clone(), from: start, until: Some(end) },
                _ => Assigned { partition: *p, addr: addr.clone(), from: end, until: None },
            });
        }
    }

    let base = Instant::now();
    let stop = Stop {
        start: Instant::now(),
        warmup: args.warmup,
        duration: args.duration,
        messages: args.messages,
        done: Arc::new(AtomicU64::new(0)),
    };
    let totals = Arc::new(Totals::default());
    let stamp = args.mode == Mode::E2e;
    let send_lag = Arc::new(std::sync::Mutex::new(bench::histogram()));
    let mut producers = Vec::new();
    if args.mode != Mode::Consume {
        for i in 0..args.producers {
            let mine: Vec<(i32, String)> = partitions.iter().filter(|(p, _)| *p as usize % args.producers == i).cloned().collect();
            if mine.is_empty() {
                continue;
            }
            let (a, s, t) = (args.clone(), stop.clone(), totals.clone());
            // In e2e mode the consumers count messages and measure latency; producers only stamp.
            let counted = if stamp { Arc::new(Totals::default()) } else { t };
            let shared = bench::produce::Shared { stop: s, totals: counted, base, stamp, send_lag: send_lag.clone() };
            producers.push(std::thread::spawn(move || bench::produce::run(i, a, mine, shared)));
        }
    }
    let mut consumers = Vec::new();
    if args.mode != Mode::Produce {
        for i in 0..args.consumers {
            let mine: Vec<Assigned> = consume_parts.iter().filter(|p| p.partition as usize % args.consumers == i).cloned().collect();
            if mine.is_empty() {
                continue;
            }
            let (a, s, t) = (args.clone(), stop.clone(), totals.clone());
            consumers.push(std::thread::spawn(move || bench::consume::run(i, a, mine, s, t, base, stamp)));
        }
    }

    // Progress: one line a second on a terminal; per-second throughput either way.
    let tty = std::io::stderr().is_terminal();
    let mut per_second = Vec::new();
    let mut last = (0u64, 0u64);
    let mut measure_start = None;
    let mut tick = stop.start + Duration::from_secs(1);
    let workers_done = |p: &Vec<std::thread::JoinHandle<_>>, c: &Vec<std::thread::JoinHandle<_>>| {
        p.iter().all(|h: &std::thread::JoinHandle<_>| h.is_finished()) && c.iter().all(|h: &std::thread::JoinHandle<_>| h.is_finished())
    };
    while !workers_done(&producers, &consumers) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if measure_start.is_none() && stop.measuring(now) {
            measure_start = Some(now);
            last = (totals.messages.load(Ordering::Relaxed), totals.bytes.load(Ordering::Relaxed));
        }
        if now >= tick {
            tick += Duration::from_secs(1);
            let cur = (totals.messages.load(Ordering::Relaxed), totals.bytes.load(Ordering::Relaxed));
            if measure_start.is_some() {
                per_second.push((cur.0 - last.0, cur.1 - last.1));
                if tty {
                    eprint!("\r{:>5}s {:>12} msgs/s {:>9.1} MB/s   ", per_second.len(), cur.0 - last.0, (cur.1 - last.1) as f64 / 1e6);
                }
            }
            last = cur;
        }
    }
    let end = Instant::now();
    if tty {
        eprintln!();
    }
    let mut latency = bench::histogram();
    let mut failure = None;
    let producers_count = producers.len();
    for (i, h) in producers.into_iter().chain(consumers).enumerate() {
        // e2e latency is the consumers' (send stamp to receipt); the producers' ack times are not it.
        let counts = !(stamp && i < producers_count);
        match h.join() {
            Ok(Ok(hist)) if counts => latency.add(&hist).expect("same bounds"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failure = Some(e.to_string()),
            Err(_) => failure = Some("a worker thread panicked".into()),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = end.duration_since(measure_start.unwrap_or(end)).as_secs_f64();
    let settings = vec![
        ("bootstrap".to_string(), args.bootstrap.clone()),
        ("topic".into(), args.topic.clone()),
        ("partitions".into(), layout.leaders.len().to_string()),
        ("producers".into(), args.producers.to_string()),
        ("consumers".into(), args.consumers.to_string()),
        ("msg_size_bytes".into(), args.msg_size.to_string()),
        ("batch_msgs".into(), args.batch_msgs.to_string()),
        ("acks".into(), args.acks.to_string()),
        ("compression".into(), args.compression.clone()),
        ("rate_msgs_per_sec".into(), args.rate.map_or("unlimited".into(), |r| r.to_string())),
        ("inflight".into(), args.inflight.to_string()),
    ];
    let report = Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        settings,
        messages: totals.messages.load(Ordering::Relaxed),
        bytes: totals.bytes.load(Ordering::Relaxed),
        seconds,
        per_second,
        latency_us: latency,
        send_lag_us: args.rate.map(|_| send_lag.lock().expect("send-lag histogram").clone()),
    };
    print!("{}", report.table());
    report.write_all(args.json.as_deref(), args.hgrm.as_deref(), args.html.as_deref()).map_err(|e| e.to_string())
}
