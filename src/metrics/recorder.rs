//! What one shard counts and times, kept in a thread-local of its own (a shard is a thread): the
//! hot paths touch no atomic and no memory another core writes. A scrape asks each shard for a
//! copy through its mailbox (`Recorder::copy`).

use super::latency::Latency;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

/// The stages of a request, Kafka's `RequestMetrics` split: waiting before its handler ran (for
/// request memory, or behind earlier requests of its connection), in its handler (appends, fsyncs,
/// replicas and long polls included), and writing its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Queue,
    Process,
    Send,
    Total,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Queue, Stage::Process, Stage::Send, Stage::Total];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Process => "process",
            Stage::Send => "send",
            Stage::Total => "total",
        }
    }
}

/// One API's requests on one shard.
#[derive(Clone, Debug, Default)]
pub struct ApiStats {
    pub requests: u64,
    /// Error code → times answered (per partition, for the APIs that answer per partition).
    pub errors: BTreeMap<i16, u64>,
    pub stages: [Latency; 4],
}

/// Where a read's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// The partition's batch cache (memory).
    Cache,
    /// The page cache, sent with sendfile.
    Sendfile,
    /// The disk, with an O_DIRECT read.
    Direct,
}

impl ReadPath {
    pub const ALL: [ReadPath; 3] = [ReadPath::Cache, ReadPath::Sendfile, ReadPath::Direct];

    pub fn name(self) -> &'static str {
        match self {
            ReadPath::Cache => "cache",
            ReadPath::Sendfile => "sendfile",
            ReadPath::Direct => "direct",
        }
    }
}

/// The storage layer's work on one shard.
#[derive(Clone, Debug, Default)]
pub struct StorageStats {
    pub write: Latency,
    pub fsync: Latency,
    pub written_bytes: u64,
    pub batches_written: u64,
    /// Batches per write (group commit): `(batches, writes)` counts.
    pub batches_per_write: BTreeMap<u64, u64>,
    pub reads: [u64; 3],
}

/// Connections accepted and refused by one shard's listener.
#[derive(Clone, Debug, Default)]
pub struct ConnectionStats {
    pub accepted: u64,
    pub refused_broker_limit: u64,
    pub refused_address_limit: u64,
}

/// Everything one shard records.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Indexed by API key.
    pub apis: BTreeMap<i16, ApiStats>,
    pub storage: StorageStats,
    pub connections: ConnectionStats,
}

thread_local! {
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

fn with<R>(f: impl FnOnce(&mut Recorder) -> R) -> R {
    RECORDER.with(|r| f(&mut r.borrow_mut()))
}

/// A request of `api` was answered, after these times in each stage.
pub fn request(api: i16, queue: Duration, process: Duration, send: Duration) {
    with(|r| {
        let a = r.apis.entry(api).or_default();
        a.requests += 1;
        let [q, p, s, t] = &mut a.stages;
        q.record(queue);
        p.record(process);
        s.record(send);
        t.record(queue + process + send);
    })
}

/// A request of `api` answered `code` (not NONE), once per partition that got it.
pub fn error(api: i16, code: i16) {
    with(|r| *r.apis.entry(api).or_default().errors.entry(code).or_default() += 1)
}

/// A write of `bytes` holding `batches` batches took `took`.
pub fn storage_write(took: Duration, bytes: u64, batches: u64) {
    with(|r| {
        r.storage.write.record(took);
        r.storage.written_bytes += bytes;
        r.storage.batches_written += batches;
        *r.storage.batches_per_write.entry(batches.next_power_of_two()).or_default() += 1;
    })
}

pub fn storage_fsync(took: Duration) {
    with(|r| r.storage.fsync.record(took))
}

pub fn storage_read(path: ReadPath) {
    with(|r| r.storage.reads[path as usize] += 1)
}

pub fn connection_accepted() {
    with(|r| r.connections.accepted += 1)
}

/// A connection refused for `max.connections` (`broker_limit`) or `max.connections.per.ip`.
pub fn connection_refused(broker_limit: bool) {
    with(|r| if broker_limit { r.connections.refused_broker_limit += 1 } else { r.connections.refused_address_limit += 1 })
}

impl Recorder {
    /// A copy of what this thread (shard) recorded so far.
    pub fn copy() -> Recorder {
        with(|r| r.clone())
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: &Recorder) {
        for (api, theirs) in &other.apis {
            let mine = self.apis.entry(*api).or_default();
            mine.requests += theirs.requests;
            for (code, n) in &theirs.errors {
                *mine.errors.entry(*code).or_default() += n;
            }
            for (m, t) in mine.stages.iter_mut().zip(&theirs.stages) {
                m.merge(t);
            }
        }
        let (s, o) = (&mut self.storage, &other.storage);
        s.write.merge(&o.write);
        s.fsync.merge(&o.fsync);
        s.written_bytes += o.written_bytes;
        s.batches_written += o.batches_written;
        for (b, n) in &o.batches_per_write {
            *s.batches_per_write.entry(*b).or_default() += n;
        }
        for (m, t) in s.reads.iter_mut().zip(o.reads) {
            *m += t;
        }
        let (c, o) = (&mut self.connections, &other.connections);
        c.accepted += o.accepted;
        c.refused_broker_limit += o.refused_broker_limit;
        c.refused_address_limit += o.refused_address_limit;
    }
}
