//! Fetch: whole batches from each partition's owning shard, long-polled on the append itself.
//!
//! A fetch that finds fewer than `min_bytes` waits for any of its partitions to be appended to
//! (the log's `appended` notification, on the owning shard) or for `max_wait_ms` — never a polling timer.

use super::fetch_session::{self, Answered, Wanted};
use super::{errors, partitions, produce::log_error_code, replication, state};
use crate::metrics::recorder;
use crate::protocol::fetch_response::{self, Part, Partition, Topic};
use crate::protocol::{self, ProtocolError, Request};
use crate::storage::{Batches, Chunk};
use kafka_protocol::messages::FetchRequest;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What one partition read returned, sent back across shards.
struct Read {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    records: Vec<Chunk>,
    /// The offset after the last batch in `records`.
    next: u64,
    /// Under read_committed: (producer id, first offset) of the aborted transactions `records` may hold.
    aborted: Vec<(i64, u64)>,
}

impl Read {
    fn bytes(&self) -> usize {
        self.records.iter().map(|b| b.len()).sum()
    }
}

fn failed(error: i16) -> Read {
    Read { error, high_watermark: -1, last_stable: -1, log_start: -1, records: Vec::new(), next: 0, aborted: Vec::new() }
}

impl Read {
    fn at(offsets: crate::storage::Offsets, error: i16, read: Batches, aborted: Vec<(i64, u64)>) -> Read {
        let (high_watermark, last_stable, log_start) =
            (offsets.high_watermark as i64, offsets.last_stable as i64, offsets.log_start as i64);
        Read { error, high_watermark, last_stable, log_start, records: read.chunks, next: read.next, aborted }
    }
}

/// Kafka's broker `fetch.max.bytes` (55 MiB): the most record bytes one Fetch response carries
/// (plus, KIP-74, the first batch when it alone is bigger), whatever the request asks.
const FETCH_MAX_BYTES: usize = 57_671_680;

/// Fetch versions before this cannot carry zstd batches (KIP-110).
const ZSTD_FETCH_VERSION_MIN: i16 = 10;

async fn read_local(topic: Arc<str>, partition: i32, offset: i64, max_bytes: usize, version: i16, committed: bool) -> Read {
    let part = match partitions::local(&topic, partition).await {
        Ok(p) => p,
        Err(code) => return failed(code),
    };
    if !part.role.leads() {
        return failed(errors::NOT_LEADER_OR_FOLLOWER);
    }
    if version < ZSTD_FETCH_VERSION_MIN && part.rules.get().recompress == Some(crate::protocol::compression::Codec::Zstd) {
        // Kafka's check: a topic that stores zstd is not served to clients that cannot read it.
        return failed(errors::UNSUPPORTED_COMPRESSION_TYPE);
    }
    let offsets = part.log.offsets();
    let nothing = Batches { chunks: Vec::new(), next: offset.max(0) as u64 };
    if offset < 0 {
        return Read::at(offsets, errors::OFFSET_OUT_OF_RANGE, nothing, Vec::new());
    }
    let read = if committed {
        part.log.read_committed(offset as u64, max_bytes).await
    } else {
        part.log.read(offset as u64, max_bytes).await.map(|read| (read, Vec::new()))
    };
    match read {
        Ok((read, aborted)) => Read::at(part.log.offsets(), errors::NONE, read, aborted),
        Err(e) => Read::at(offsets, log_error_code(&e), nothing, Vec::new()),
    }
}

/// Waits on the owning shard until the partition's high watermark (its last stable offset, for a
/// read_committed consumer) passes `mark`, or `wait` ends.
async fn wait_local(topic: Arc<str>, partition: i32, mark: i64, wait: Duration, committed: bool) {
    let Some(part) = state().partition(&topic, partition) else {
        return;
    };
    let appended = part.log.appended.notified();
    let o = part.log.offsets();
    if (if committed { o.last_stable } else { o.high_watermark }) as i64 > mark {
        return;
    }
    futures_lite::future::or(appended, shards::sleep(wait)).await;
}

#[derive(Clone)]
struct Want {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    owner: usize,
    version: i16,
    committed: bool,
    /// The client's leader epoch is not the partition's: FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH.
    fenced: Option<i16>,
}

async fn read_one(w: &Want, max_bytes: usize) -> Read {
    let st = state();
    let (t, p, o, v, c) = (w.topic.clone(), w.partition, w.offset, w.version, w.committed);
    if w.owner == st.shard.id {
        read_local(t, p, o, max_bytes, v, c).await
    } else {
        st.shard.submit_to(w.owner, move || read_local(t, p, o, max_bytes, v, c)).await
    }
}

/// Answers a Fetch with the frame's parts: record chunks stay as read (cached bytes or file ranges)
/// for the connection to send without copying file data through user space.
pub async fn handle(req: &Request) -> Result<Vec<Part<Chunk>>, ProtocolError> {
    let fetch: FetchRequest = protocol::decode_body(req)?;
    let version = req.header.request_api_version;
    let read_committed = fetch.isolation_level == 1;
    let st = state();
    let deadline = Instant::now() + Duration::from_millis(fetch.max_wait_ms.clamp(0, 300_000) as u64);
    let min_bytes = fetch.min_bytes.max(0) as usize;
    // Kafka's min(request max_bytes, broker fetch.max.bytes); ≤ 0 still gets the first batch (KIP-74).
    let max_bytes = (fetch.max_bytes.max(0) as usize).min(FETCH_MAX_BYTES);
    // v13+ names topics by id: an unknown id becomes an empty name, answered UNKNOWN_TOPIC_ID.
    let by_id = |id: uuid::Uuid| Arc::<str>::from(st.topic_ids.borrow().get(&id.as_u128()).map_or("", |n| n.as_str()));
    let mut requested: Vec<Wanted> = Vec::new();
    // v9+: partitions whose leader epoch, as the client knows it, is not theirs (rare: none to
    // allocate for in the usual request).
    let mut fenced: HashMap<(Arc<str>, i32), i16> = HashMap::new();
    // No more partitions than the broker may have (max.partitions): a request naming more repeats
    // or invents them, and each costs memory until the answer is sent.
    let named = fetch.topics.iter().map(|t| t.partitions.len()).sum::<usize>()
        + fetch.forgotten_topics_data.iter().map(|t| t.partitions.len()).sum::<usize>();
    if named > st.cfg.max_partitions {
        return Err(ProtocolError::Malformed(format!("Fetch names {named} partitions, more than max.partitions")));
    }
    for t in &fetch.topics {
        let (topic, topic_id) = if version >= 13 {
            (by_id(t.topic_id), t.topic_id.as_u128())
        } else {
            (Arc::from(t.topic.as_str()), st.topics.borrow().get(t.topic.as_str()).map_or(0, |m| m.id))
        };
        if let (true, Some(meta)) = (version >= 9, st.topics.borrow().get(&*topic)) {
            for p in t.partitions.iter().filter(|p| p.current_leader_epoch != -1) {
                let current = replication::epoch(meta, p.partition, st.shard.count);
                if let Err(code) = replication::check_epoch(current, p.current_leader_epoch) {
                    fenced.insert((topic.clone(), p.partition), code);
                }
            }
        }
        requested.extend(t.partitions.iter().map(|p| Wanted {
            topic: topic.clone(),
            topic_id,
            partition: p.partition,
            offset: p.fetch_offset,
            max_bytes: p.partition_max_bytes.max(0) as usize,
        }));
    }
    let (ctx, wanted) = if version >= 7 {
        let forgotten: Vec<(Arc<str>, i32)> = fetch
            .forgotten_topics_data
            .iter()
            .flat_map(|t| {
                let name = if version >= 13 { by_id(t.topic_id) } else { Arc::from(t.topic.as_str()) };
                t.partitions.iter().map(move |p| (name.clone(), *p))
            })
            .collect();
        st.fetch_sessions.borrow_mut().begin(fetch.session_id, fetch.session_epoch, requested, &forgotten, Instant::now())
    } else {
        (fetch_session::Context::Full { session: 0 }, requested)
    };
    if let fetch_session::Context::Error(code) = ctx {
        recorder::error(kafka_protocol::messages::ApiKey::Fetch as i16, code);
        let session = fetch_response::Session { error_code: code, id: 0 };
        return fetch_response::encode(version, req.header.correlation_id, read_committed, session, Vec::new(), Chunk::len);
    }
    let fenced = |w: &Wanted| if fenced.is_empty() { None } else { fenced.get(&(w.topic.clone(), w.partition)).copied() };
    let wants: Vec<Want> = wanted
        .iter()
        .map(|w| {
            let owner = if st.partition_exists(&w.topic, w.partition) { st.owner(&w.topic, w.partition) } else { usize::MAX };
            Want {
                fenced: fenced(w),
                topic: w.topic.clone(),
                partition: w.partition,
                offset: w.offset,
                max_bytes: w.max_bytes,
                owner,
                version,
                committed: read_committed,
            }
        })
        .collect();
    let limits = Limits { max_bytes, min_bytes, deadline, read_committed };
    // All on one other shard (one partition, say): the reads and the wait between them run there,
    // one round trip in all instead of one per read and one for the wait.
    let owner = wants.first().map(|w| w.owner).filter(|&o| o != st.shard.id && o != usize::MAX);
    let reads = match owner.filter(|&o| wants.iter().all(|w| w.owner == o)) {
        Some(o) => {
            let there = wants.clone();
            st.shard.submit_to(o, move || async move { read_until(&there, limits).await }).await
        }
        None => read_until(&wants, limits).await,
    };
    let answered: Vec<Answered> = reads
        .iter()
        .map(|r| Answered { error: r.error, high_watermark: r.high_watermark, log_start: r.log_start, has_records: r.bytes() > 0 })
        .collect();
    let sent = st.fetch_sessions.borrow_mut().finish(ctx, &wanted, &answered);
    // Consecutive partitions of one topic make one topic entry, in the order they were wanted.
    let mut topics: Vec<Topic<Chunk>> = Vec::new();
    for (((r, w), want), send) in reads.into_iter().zip(&wants).zip(&wanted).zip(sent) {
        if !send {
            continue;
        }
        if r.error != errors::NONE {
            recorder::error(kafka_protocol::messages::ApiKey::Fetch as i16, r.error);
        }
        count_sent(w, &r);
        let p = Partition {
            index: w.partition,
            error_code: r.error,
            high_watermark: r.high_watermark,
            last_stable_offset: r.last_stable,
            log_start_offset: r.log_start,
            records: r.records,
            aborted: r.aborted.into_iter().map(|(producer, first)| (producer, first as i64)).collect(),
        };
        match topics.last_mut() {
            Some(t) if *t.name == *w.topic && t.id == want.topic_id => t.partitions.push(p),
            _ => topics.push(Topic { name: w.topic.to_string(), id: want.topic_id, partitions: vec![p] }),
        }
    }
    let session = fetch_response::Session { error_code: errors::NONE, id: ctx.session_id() };
    fetch_response::encode(version, req.header.correlation_id, read_committed, session, topics, Chunk::len)
}

/// What bounds a Fetch's reads.
#[derive(Clone, Copy)]
struct Limits {
    max_bytes: usize,
    min_bytes: usize,
    deadline: Instant,
    read_committed: bool,
}

/// Reads every wanted partition, and while they hold fewer than `min_bytes` waits for one of them
/// to be appended to (or the deadline) and reads them all again. On any shard.
async fn read_until(wants: &[Want], limits: Limits) -> Vec<Read> {
    let Limits { max_bytes, min_bytes, deadline, read_committed } = limits;
    loop {
        let mut reads = Vec::with_capacity(wants.len());
        let mut total = 0usize;
        for w in wants {
            if w.owner == usize::MAX {
                let unknown_id = w.version >= 13 && w.topic.is_empty();
                reads.push(failed(if unknown_id { errors::UNKNOWN_TOPIC_ID } else { errors::UNKNOWN_TOPIC_OR_PARTITION }));
                continue;
            }
            if let Some(code) = w.fenced {
                reads.push(failed(code));
                continue;
            }
            // KIP-74: the response may exceed max_bytes by one batch, for the first partition with data.
            let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
            if budget == 0 && total > 0 {
                reads.push(read_one(w, 0).await.without_records());
                continue;
            }
            let r = read_one(w, budget.max(1)).await;
            total += r.bytes();
            reads.push(r);
        }
        let now = Instant::now();
        let errored = reads.iter().any(|r| r.error != errors::NONE);
        if total >= min_bytes.max(1) || min_bytes == 0 || now >= deadline || errored || wants.is_empty() {
            return reads;
        }
        let visible = |r: &Read| if read_committed { r.last_stable } else { r.high_watermark };
        let marks: Vec<i64> = reads.iter().zip(wants).map(|(r, w)| visible(r).max(w.offset)).collect();
        wait_any(wants, &marks, deadline - now).await;
    }
}

/// Counts the records and bytes a response carries for a partition on the replica that read them
/// (the connection's own shard, usually: clients fetch from the leader's port; else one message, no
/// reply). Records from the offset asked for: a consumer drops those before it in the first batch.
fn count_sent(w: &Want, r: &Read) {
    let bytes = r.bytes() as u64;
    if bytes == 0 || w.owner == usize::MAX {
        return;
    }
    let records = r.next.saturating_sub(w.offset.max(0) as u64);
    let st = state();
    if w.owner == st.shard.id {
        if let Some(part) = st.partition(&w.topic, w.partition) {
            part.traffic.sent(records, bytes);
        }
        return;
    }
    let (topic, partition) = (w.topic.clone(), w.partition);
    st.shard.mailboxes.send(
        w.owner,
        Box::new(move || {
            if let Some(part) = state().partition(&topic, partition) {
                part.traffic.sent(records, bytes);
            }
        }),
    );
}

impl Read {
    fn without_records(mut self) -> Read {
        self.records.clear();
        self
    }
}

/// Completes when any wanted partition's high watermark passes its mark, or after `wait`.
async fn wait_any(wants: &[Want], marks: &[i64], wait: Duration) {
    let st = state();
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::with_capacity(wants.len() + 1);
    for (w, &mark) in wants.iter().zip(marks).filter(|(w, _)| w.owner != usize::MAX) {
        let (t, p, o, c) = (w.topic.clone(), w.partition, mark, w.committed);
        if w.owner == st.shard.id {
            waits.push(Box::pin(wait_local(t, p, o, wait, c)));
        } else {
            let shard = st.shard.clone();
            let owner = w.owner;
            waits.push(Box::pin(async move { shard.submit_to(owner, move || wait_local(t, p, o, wait, c)).await }));
        }
    }
    waits.push(Box::pin(shards::sleep(wait).then_unit()));
    FirstOf(waits).await
}

trait ThenUnit: Future + Sized {
    fn then_unit(self) -> impl Future<Output = ()> {
        async move {
            self.await;
        }
    }
}
impl<F: Future> ThenUnit for F {}

struct FirstOf<'a>(Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>);

impl Future for FirstOf<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        for f in self.0.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
