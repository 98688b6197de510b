//! Producer threads: one writer and one reader per connection, a bounded window between them.
//! An idempotent producer stamps its id and sequences into each batch; a transactional one also
//! opens a transaction before its first batch and, every `--txn-ms`, waits for every batch in it to
//! be acknowledged and commits it.

use super::{histogram, nanos_since, pin, Args, Stop, Totals};
use crate::client::producer::Producer;
use crate::client::{self, Cluster, Connection};
use crate::protocol::compression::Codec;
use crate::storage::batch;
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::ProduceRequest;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Responses a connection's reader has received, for a transactional writer to wait on.
#[derive(Default)]
struct Acked {
    count: Mutex<u64>,
    changed: Condvar,
}

/// What the reader needs to know of a request in flight.
struct InFlight {
    correlation: i32,
    version: i16,
    /// Closed loop: when it was sent. Open loop: the intended send time of its first message.
    first_ns: u64,
    /// Open loop: nanoseconds between the intended times of consecutive messages (0: closed loop).
    step_ns: u64,
    count: u64,
    bytes: u64,
    measured: bool,
}

/// A batch ready to send again and again, with the positions of its values in the records section
/// (for e2e send stamps, after which the section is compressed again).
pub struct Template {
    body: Vec<u8>,
    value_at: Vec<usize>,
    count: i32,
    timestamp_ms: i64,
    codec: Codec,
    framed: Bytes,
}

impl Template {
    /// `count` records of `msg_size`-byte values; record i keyed `key-<i mod keys>` if `keys` is given.
    pub fn new(count: usize, msg_size: usize, codec: Codec, keys: Option<usize>) -> Template {
        // Values of hex digits from a fixed pseudo-random sequence: compressible about as well as
        // typical text payloads, unlike a run of one byte.
        // Every record different, so a codec cannot just repeat one value.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let values: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                (0..msg_size.max(8))
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        b"0123456789abcdef"[(x & 15) as usize]
                    })
                    .collect()
            })
            .collect();
        let names: Vec<Option<Vec<u8>>> = (0..count).map(|i| keys.map(|n| format!("key-{}", i % n.max(1)).into_bytes())).collect();
        let records: Vec<batch::NewRecord<'_>> =
            values.iter().zip(&names).map(|(v, k)| batch::NewRecord { key: k.as_deref(), value: Some(v), headers: &[] }).collect();
        let body = batch::encode_records(&records);
        let base = body.as_ptr() as usize;
        let value_at = batch::records_in(&body, 0, 0, count as i32)
            .expect("just encoded")
            .iter()
            .map(|r| r.value.expect("value").as_ptr() as usize - base)
            .collect();
        // Real timestamps: the broker's time-based retention judges segments by them.
        let timestamp_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut t = Template { body, value_at, count: count as i32, timestamp_ms, codec, framed: Bytes::new() };
        t.framed = t.frame();
        t
    }

    fn frame(&self) -> Bytes {
        Bytes::from(batch::frame(&self.codec.compress(&self.body), self.count, self.timestamp_ms, self.codec as i16))
    }

    /// The prepared batch (a reference-counted handle: no copy).
    fn plain(&self) -> Bytes {
        self.framed.clone()
    }

    /// The batch with each value starting with its send time (ns on the bench clock).
    fn stamped(&mut self, first_ns: u64, step_ns: u64) -> Bytes {
        for (i, &at) in self.value_at.iter().enumerate() {
            self.body[at..at + 8].copy_from_slice(&(first_ns + step_ns * i as u64).to_le_bytes());
        }
        self.frame()
    }
}

/// What a producer thread shares with the rest of the run.
pub struct Shared {
    pub stop: Stop,
    pub totals: Arc<Totals>,
    /// The bench clock's zero.
    pub base: Instant,
    /// e2e mode: stamp send times into the values.
    pub stamp: bool,
    /// Open loop: how late batches left, merged from every producer.
    pub send_lag: Arc<std::sync::Mutex<Histogram<u64>>>,
}

/// Runs producer `index` over `partitions` (each with its leader's address) until `stop`.
pub fn run(index: usize, args: Args, partitions: Vec<(i32, String)>, shared: Shared) -> client::Result<Histogram<u64>> {
    let Shared { stop, totals, base, stamp, send_lag } = shared;
    if !args.no_pin {
        pin(index);
    }
    let batch_n = args.batch_msgs.min(args.batch_bytes / args.msg_size.max(1)).max(1);
    let mut addrs: Vec<String> = partitions.iter().map(|(_, a)| a.clone()).collect();
    addrs.sort();
    addrs.dedup();
    let mut producer = match (&args.transactional_id, args.idempotent) {
        (None, false) => None,
        (id, _) => {
            let id = id.as_ref().map(|id| if args.producers > 1 { format!("{id}-{index}") } else { id.clone() });
            Some(Producer::init(&mut Cluster::connect(&args.bootstrap)?, id.as_deref(), 60_000)?)
        }
    };
    let transactional_id = producer.as_ref().and_then(Producer::transactional_id);
    let transactional = transactional_id.is_some();
    let txn_every = Duration::from_secs_f64(args.txn_ms.max(0.0) / 1000.0);
    let mine: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    let mut txn_started = Instant::now();
    let mut commits = histogram();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for addr in &addrs {
        let conn = Connection::connect(addr)?;
        let reader_conn = conn.split()?;
        let (tx, rx) = crossbeam_channel::bounded::<InFlight>(args.inflight.max(1));
        let (stop_r, totals_r) = (stop.clone(), totals.clone());
        let acked = Arc::new(Acked::default());
        let acked_r = acked.clone();
        let pinned = !args.no_pin;
        readers.push(std::thread::spawn(move || read_acks(pinned.then_some(index), reader_conn, rx, stop_r, totals_r, base, &acked_r)));
        writers.push(Writer { conn, tx, sent: 0, acked });
    }
    let owner: Vec<usize> = partitions.iter().map(|(_, a)| addrs.iter().position(|x| x == a).expect("listed")).collect();
    let rate_per_producer = args.rate.map(|r| r / args.producers.max(1) as f64);
    let step_ns = rate_per_producer.map_or(0, |r| (1e9 / r) as u64);
    let linger_ns = (args.linger_ms * 1e6) as u64;
    let codec: Codec = args.compression.parse().map_err(client::ClientError::Protocol)?;
    let mut template = Template::new(batch_n, args.msg_size, codec, args.keys);
    let mut sent: u64 = 0;
    let mut next_partition = 0usize;
    let mut lag = histogram();
    let result = loop {
        let now = Instant::now();
        if let Some(p) = producer.as_mut().filter(|p| p.in_transaction() && now >= txn_started + txn_every) {
            if let Err(e) = commit(p, &writers, &stop, &mut commits) {
                break Err(e);
            }
        }
        if stop.finished(now, totals.messages.load(Ordering::Relaxed)) {
            break producer.as_mut().map_or(Ok(()), |p| commit(p, &writers, &stop, &mut commits));
        }
        // Open loop: wait until a full batch is due or the first due message lingered enough.
        let (count, first_ns, step) = match step_ns {
            0 => (batch_n as u64, nanos_since(base), 0),
            step => {
                let start_ns = stop.start.duration_since(base).as_nanos() as u64;
                let now_ns = nanos_since(base);
                let due = (now_ns.saturating_sub(start_ns) / step + 1).saturating_sub(sent);
                let first_ns = start_ns + sent * step;
                if due < batch_n as u64 && (due == 0 || now_ns < first_ns + linger_ns) {
                    let wake = if due == 0 { first_ns } else { (first_ns + linger_ns).min(first_ns + step * batch_n as u64) };
                    std::thread::sleep(Duration::from_nanos(wake.saturating_sub(now_ns).min(200_000)));
                    continue;
                }
                (due.min(batch_n as u64), first_ns, step)
            }
        };
        let records = match (count as usize == batch_n, stamp) {
            (true, true) => template.stamped(first_ns, step),
            (true, false) => template.plain(),
            (false, true) => Template::new(count as usize, args.msg_size, codec, args.keys).stamped(first_ns, step),
            (false, false) => Template::new(count as usize, args.msg_size, codec, args.keys).plain(),
        };
        let (partition, _) = &partitions[next_partition];
        let records = match producer.as_mut() {
            Some(p) => {
                if transactional && !p.in_transaction() {
                    if let Err(e) = p.begin(&args.topic, &mine) {
                        break Err(e);
                    }
                    txn_started = Instant::now();
                }
                p.stamp(&records, *partition, count as i32)
            }
            None => records,
        };
        let Writer { conn, tx, sent: requests, .. } = &mut writers[owner[next_partition]];
        next_partition = (next_partition + 1) % partitions.len();
        let bytes = records.len() as u64;
        let version = conn.version::<ProduceRequest>(9);
        let mut req = client::produce_request(&args.topic, *partition, records, args.acks, 30_000);
        req.transactional_id = transactional_id.clone();
        let measured = stop.measuring(now);
        let sent_ns = if step == 0 { nanos_since(base) } else { first_ns };
        if step != 0 && measured {
            // How late this batch leaves beyond what --linger-ms asks: the load generator's own
            // scheduling delay, which open-loop latency rightly includes.
            lag.saturating_record(nanos_since(base).saturating_sub(first_ns + linger_ns.min(step * batch_n as u64)) / 1000);
        }
        let correlation = match conn.send(&req, version) {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        sent += count;
        if args.acks == 0 {
            if measured {
                totals.add(count, bytes);
            }
            continue;
        }
        if tx.send(InFlight { correlation, version, first_ns: sent_ns, step_ns: step, count, bytes, measured }).is_err() {
            break Err(client::ClientError::Protocol("ack reader stopped".into()));
        }
        *requests += 1;
    };
    drop(writers);
    if transactional {
        eprintln!(
            "producer {index}: {} transactions committed; commit (last acknowledgement + EndTxn) p50 {} µs, p99 {} µs",
            commits.len(),
            commits.value_at_quantile(0.5),
            commits.value_at_quantile(0.99)
        );
    }
    send_lag.lock().expect("send-lag histogram").add(&lag).expect("same bounds");
    let mut hist = histogram();
    for r in readers {
        match r.join() {
            Ok(Ok(h)) => hist.add(&h).expect("same bounds"),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(client::ClientError::Protocol("ack reader panicked".into())),
        }
    }
    result.map(|()| hist)
}

/// One connection's sending side.
struct Writer {
    conn: Connection,
    tx: crossbeam_channel::Sender<InFlight>,
    /// Requests sent that expect a response.
    sent: u64,
    acked: Arc<Acked>,
}

/// Waits until every request sent has been answered (all of the transaction's batches are in),
/// then commits; the time it took goes to `commits`.
fn commit(p: &mut Producer, writers: &[Writer], stop: &Stop, commits: &mut Histogram<u64>) -> client::Result<()> {
    if !p.in_transaction() {
        return Ok(());
    }
    let started = Instant::now();
    for w in writers {
        let mut count = w.acked.count.lock().map_err(|_| client::ClientError::Protocol("ack reader panicked".into()))?;
        while *count < w.sent {
            if stop.done.load(Ordering::Relaxed) != 0 {
                return Err(client::ClientError::Protocol("a produce failed inside the transaction".into()));
            }
            count = w
                .acked
                .changed
                .wait_timeout(count, Duration::from_millis(100))
                .map_err(|_| client::ClientError::Protocol("ack reader panicked".into()))?
                .0;
        }
    }
    p.end(true)?;
    commits.saturating_record(started.elapsed().as_micros() as u64);
    Ok(())
}

fn read_acks(
    pin_to: Option<usize>,
    mut conn: Connection,
    rx: crossbeam_channel::Receiver<InFlight>,
    stop: Stop,
    totals: Arc<Totals>,
    base: Instant,
    acked: &Acked,
) -> client::Result<Histogram<u64>> {
    if let Some(core) = pin_to {
        pin(core);
    }
    let mut hist = histogram();
    for f in rx.iter() {
        let r = conn.receive::<ProduceRequest>(f.correlation, f.version)?;
        let now_ns = nanos_since(base);
        let code = r.responses.first().and_then(|t| t.partition_responses.first()).map_or(-1, |p| p.error_code);
        if code != 0 {
            stop.done.store(1, Ordering::Relaxed);
            return Err(client::ClientError::Broker { code, what: "produce".into() });
        }
        if let Ok(mut count) = acked.count.lock() {
            *count += 1;
            acked.changed.notify_all();
        }
        if !f.measured {
            continue;
        }
        totals.add(f.count, f.bytes);
        if f.step_ns == 0 {
            hist.saturating_record_n(now_ns.saturating_sub(f.first_ns) / 1000, f.count);
        } else {
            for i in 0..f.count {
                hist.saturating_record(now_ns.saturating_sub(f.first_ns + f.step_ns * i) / 1000);
            }
        }
    }
    Ok(hist)
}
