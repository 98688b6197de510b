//! Client connections: accept, read frames, dispatch, write responses in order.
//!
//! Requests on one connection are handled one at a time, as Kafka does, so responses keep their
//! order, with one exception: a produce request, once its batches are queued, lets the next
//! request be read while its writes complete (its answer still goes out in order). A frame over
//! `max_request_bytes` or an unreadable header closes that connection only, with one log line;
//! nothing a client sends can take the shard down.

use super::connections::{connections, Slot};
use super::{
    acls, config, delete_records, elect_leaders, fetch, group, handlers, leader_epoch, list_offsets, log_dirs, panic_guard, produce, state,
    topic_admin, txn,
};
use crate::metrics::recorder;
use crate::protocol::fetch_response::Part;
use crate::protocol::{self, frame::FrameReader, ProtocolError};
use crate::storage::Chunk;
use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use kafka_protocol::messages::ApiKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the accept loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// After a failed accept (out of file descriptors, say) the loop waits, doubling from the first
/// to the last of these, so that a broker out of fds neither spins nor floods its log; one line
/// says how many accepts failed since the last, at most every `ACCEPT_WARN_EVERY`.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_LAST: Duration = Duration::from_secs(1);
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long gives its read buffer back until it does.
const RELEASE_BUFFER_AFTER: Duration = Duration::from_secs(1);

pub async fn serve(stop: Arc<AtomicBool>) {
    let st = state();
    let port = if st.cfg.single_port { st.cfg.port } else { st.cfg.port + st.shard.id as u16 };
    let addr = format!("{}:{}", st.cfg.listen_host, port);
    let listener = match shards::TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            std::process::exit(1);
        }
    };
    tracing::info!(shard = st.shard.id, %addr, "listening");
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let (mut failures, mut refusals) = (Occasional::default(), Occasional::default());
    loop {
        let accepted = shards::within(STOP_CHECK, listener.accept()).await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            None => {}
            Some(Ok(stream)) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                let Ok(ip) = stream.peer_addr().map(|a| a.ip()) else { continue };
                match connections().admit(ip, st.cfg.max_connections, st.cfg.max_connections_per_ip) {
                    Ok(slot) => {
                        recorder::connection_accepted();
                        shards::spawn_local(connection(stream, slot)).detach();
                    }
                    Err(why) => {
                        recorder::connection_refused(matches!(why, super::connections::Refused::Broker { .. }));
                        if let Some(refused) = refusals.due() {
                            tracing::warn!(%ip, reason = %why, refused, open = connections().open(), "connections refused");
                        }
                    }
                }
            }
            Some(Err(e)) => {
                if let Some(failed) = failures.due() {
                    tracing::warn!(error = %e, failed, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                }
                shards::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_LAST);
            }
        }
    }
}

/// Counts events and says when to log them: at most once per `ACCEPT_WARN_EVERY`, with the number
/// since the last line.
#[derive(Default)]
struct Occasional {
    count: u64,
    logged_at: Option<Instant>,
}

impl Occasional {
    fn due(&mut self) -> Option<u64> {
        self.count += 1;
        if self.logged_at.is_some_and(|at| at.elapsed() < ACCEPT_WARN_EVERY) {
            return None;
        }
        self.logged_at = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// Produce requests a connection may have past phase one and not yet answered.
const PIPELINED_MAX: usize = 16;

/// A produce request past phase one, its answer still to come.
struct InFlight {
    answer: shards::Task<Option<Result<Option<Bytes>, ProtocolError>>>,
    /// Its request memory, held until it is answered.
    _reserved: Option<crate::protocol::budget::Reservation>,
    arrived: Instant,
    started: Instant,
}

/// What a connection waits for next: a request, or the answer of the oldest produce in flight.
enum Next {
    Frame(Result<Option<Bytes>, ProtocolError>),
    Answered(Option<Result<Option<Bytes>, ProtocolError>>),
}

async fn connection(mut stream: shards::TcpStream, _slot: Slot<'static>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let idle = Duration::from_millis(state().cfg.connections_max_idle_ms);
    let mut frames = FrameReader::new(state().cfg.max_request_bytes).within_budget(state().request_budget.clone());
    // Produce requests are served in two phases (`produce::queue`): once one's batches are queued
    // in order, the next request is read while its writes complete, and answers go out in order.
    // Any other request waits until every produce before it is answered, as it would in Kafka.
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    loop {
        let full = in_flight.len() >= PIPELINED_MAX;
        let next = match in_flight.front_mut() {
            None => Next::Frame(next_frame(&mut frames, &mut stream, idle).await),
            Some(oldest) if full => Next::Answered((&mut oldest.answer).await),
            // No idle clock while answers are due: the client is waiting, not idle (each answer
            // comes within its request's timeout).
            Some(oldest) => {
                futures_lite::future::or(async { Next::Answered((&mut oldest.answer).await) }, async {
                    Next::Frame(frames.next(&mut stream).await)
                })
                .await
            }
        };
        let frame = match next {
            Next::Answered(answer) => {
                let done = in_flight.pop_front().expect("the oldest was waited on");
                if !answer_produce(&mut stream, &peer, idle, &done, answer).await {
                    return;
                }
                continue;
            }
            Next::Frame(Ok(Some(f))) => f,
            // The client closed its side (or was idle): what it sent before is still answered.
            Next::Frame(Ok(None)) => {
                answer_all(&mut stream, &peer, idle, &mut in_flight).await;
                return;
            }
            Next::Frame(Err(e)) => {
                answer_all(&mut stream, &peer, idle, &mut in_flight).await;
                tracing::info!(%peer, error = %e, "closing connection");
                return;
            }
        };
        let (arrived, started) = (frames.arrived(), Instant::now());
        let api = known_api(&frame);
        if api == Some(ApiKey::Produce as i16) {
            match panic_guard::contain(Box::pin(produce_phase_one(frame, &peer))).await {
                Some(Ok(answer)) => {
                    let answer = shards::spawn_local(panic_guard::contain(answer));
                    in_flight.push_back(InFlight { answer, _reserved: frames.take_reservation(), arrived, started });
                    continue;
                }
                // Refused or panicked: the produces before are answered, then this closes.
                failed => {
                    if answer_all(&mut stream, &peer, idle, &mut in_flight).await {
                        answer_one(&mut stream, &peer, idle, failed.map(|f| f.map(|_| None)), api, arrived, started).await;
                    }
                    return;
                }
            }
        }
        if !answer_all(&mut stream, &peer, idle, &mut in_flight).await {
            return;
        }
        // Boxed: the handlers' futures are large, and an idle connection should not carry them.
        let reply = panic_guard::contain(Box::pin(dispatch(frame, &peer))).await;
        if !answer_one(&mut stream, &peer, idle, reply, api, arrived, started).await {
            return;
        }
    }
}

/// Waits for every produce in flight and sends their answers, in order; `false` if the connection
/// is to close.
async fn answer_all(
    stream: &mut shards::TcpStream,
    peer: &str,
    idle: Duration,
    in_flight: &mut std::collections::VecDeque<InFlight>,
) -> bool {
    while let Some(mut done) = in_flight.pop_front() {
        let answer = (&mut done.answer).await;
        if !answer_produce(stream, peer, idle, &done, answer).await {
            return false;
        }
    }
    true
}

/// Sends a pipelined produce's answer (`answer_one`).
async fn answer_produce(
    stream: &mut shards::TcpStream,
    peer: &str,
    idle: Duration,
    done: &InFlight,
    answer: Option<Result<Option<Bytes>, ProtocolError>>,
) -> bool {
    let reply = answer.map(|a| a.map(|frame| frame.map(Reply::Frame)));
    answer_one(stream, peer, idle, reply, Some(ApiKey::Produce as i16), done.arrived, done.started).await
}

/// Sends one request's reply (`None`: its handler panicked) and records its timings; `false` if the
/// connection is to close.
async fn answer_one(
    stream: &mut shards::TcpStream,
    peer: &str,
    idle: Duration,
    reply: Option<Result<Option<Reply>, ProtocolError>>,
    api: Option<i16>,
    arrived: Instant,
    started: Instant,
) -> bool {
    let reply = match reply {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::info!(%peer, error = %e, "closing connection");
            return false;
        }
        None => {
            tracing::error!(%peer, "closing the connection whose request panicked");
            return false;
        }
    };
    let processed = Instant::now();
    let sent = shards::within(idle, async {
        match reply {
            None => Ok(()),
            Some(Reply::Frame(bytes)) => stream.write_all(&bytes).await,
            Some(Reply::Parts(parts)) => write_parts(stream, parts).await,
        }
    })
    .await;
    if let Some(api) = api {
        recorder::request(api, started.saturating_duration_since(arrived), processed - started, processed.elapsed());
    }
    match sent {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "response not sent; closing connection");
            false
        }
        None => {
            tracing::info!(%peer, idle_ms = idle.as_millis() as u64, "response not read within connections.max.idle.ms; closing connection");
            false
        }
    }
}

/// Phase one of a produce request (`produce::queue`).
async fn produce_phase_one(frame: Bytes, peer: &str) -> Result<produce::Answer, ProtocolError> {
    let mut req = protocol::decode_header(frame)?;
    req.peer = peer.to_string();
    produce::queue(&req).await
}

/// The frame's API key, if it is one Weir serves: only those are counted, so that a client
/// sending made-up keys cannot grow the metrics.
fn known_api(frame: &[u8]) -> Option<i16> {
    let key = i16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
    let api = ApiKey::try_from(key).ok()?;
    protocol::versions::supported(api).map(|_| key)
}

/// The next request, or `Ok(None)` when the client closed the connection or sent nothing for
/// `idle`. A connection quiet for `RELEASE_BUFFER_AFTER` first gives its read buffer back, so an
/// idle connection holds next to no memory.
async fn next_frame(frames: &mut FrameReader, stream: &mut shards::TcpStream, idle: Duration) -> Result<Option<Bytes>, ProtocolError> {
    let soon = RELEASE_BUFFER_AFTER.min(idle);
    if let Some(read) = shards::within(soon, frames.next(stream)).await {
        return read;
    }
    frames.release_buffer();
    match shards::within(idle - soon, frames.next(stream)).await {
        Some(read) => read,
        None => {
            tracing::debug!(idle_ms = idle.as_millis() as u64, "closing a connection idle for connections.max.idle.ms");
            Ok(None)
        }
    }
}

/// A response: one encoded frame, or a Fetch frame whose record chunks are sent as they are.
enum Reply {
    Frame(Bytes),
    Parts(Vec<Part<Chunk>>),
}

/// Sends a frame made of parts: encoded bytes and cached records go out as they are, many buffers
/// to a call (no gathering copy on the shard); file ranges go from the page cache to the socket
/// with sendfile, never through ours.
async fn write_parts(stream: &mut shards::TcpStream, parts: Vec<Part<Chunk>>) -> std::io::Result<()> {
    let mut run: Vec<Bytes> = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Encoded(b) | Part::Records(Chunk::Memory(b)) => run.push(b),
            Part::Records(Chunk::File(range)) => {
                shards::send_buffers(stream, &run).await?;
                run.clear();
                shards::send_file(stream, &range).await?;
            }
        }
    }
    shards::send_buffers(stream, &run).await
}

async fn dispatch(frame: Bytes, peer: &str) -> Result<Option<Reply>, ProtocolError> {
    let mut req = protocol::decode_header(frame)?;
    req.peer = peer.to_string();
    tracing::trace!(%peer, api = ?req.api, version = req.header.request_api_version, correlation = req.header.correlation_id, "request");
    let version = req.header.request_api_version;
    if req.api == ApiKey::Fetch && protocol::versions::answered_unsupported(req.api, version) {
        let body = protocol::legacy::fetch_unsupported(&req.body, version, super::errors::UNSUPPORTED_VERSION)?;
        return Ok(Some(Reply::Frame(protocol::legacy::frame(req.header.correlation_id, &body))));
    }
    if req.api == ApiKey::Fetch {
        return fetch::handle(&req).await.map(|parts| Some(Reply::Parts(parts)));
    }
    let frame = match req.api {
        ApiKey::ApiVersions => handlers::api_versions(&req),
        ApiKey::Metadata => handlers::metadata(&req).await,
        ApiKey::ListOffsets => list_offsets::list_offsets(&req).await,
        ApiKey::OffsetForLeaderEpoch => leader_epoch::handle(&req).await,
        ApiKey::DescribeLogDirs => log_dirs::handle(&req),
        ApiKey::DescribeAcls => acls::describe_acls(&req),
        ApiKey::CreateAcls => acls::create_acls(&req),
        ApiKey::DeleteAcls => acls::delete_acls(&req),
        ApiKey::ElectLeaders => elect_leaders::handle(&req).await,
        ApiKey::DeleteRecords => delete_records::delete_records(&req).await,
        ApiKey::CreateTopics => topic_admin::create_topics(&req).await,
        ApiKey::DeleteTopics => topic_admin::delete_topics(&req).await,
        ApiKey::CreatePartitions => topic_admin::create_partitions(&req).await,
        ApiKey::DescribeConfigs => config::describe_configs(&req),
        ApiKey::IncrementalAlterConfigs => config::incremental_alter_configs(&req).await,
        ApiKey::AlterConfigs => config::alter_configs(&req).await,
        ApiKey::DescribeCluster => handlers::describe_cluster(&req),
        ApiKey::InitProducerId => handlers::init_producer_id(&req).await,
        ApiKey::AddPartitionsToTxn => txn::add_partitions_to_txn(&req).await,
        ApiKey::EndTxn => txn::end_txn(&req).await,
        ApiKey::FindCoordinator => group::find_coordinator(&req),
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete
        | ApiKey::TxnOffsetCommit => group::handle(&req).await,
        ApiKey::AddOffsetsToTxn => txn::add_offsets_to_txn(&req).await,
        ApiKey::DescribeTransactions => txn::describe_transactions(&req).await,
        ApiKey::ListTransactions => txn::list_transactions(&req).await,
        ApiKey::DescribeProducers => txn::describe_producers(&req).await,
        ApiKey::WriteTxnMarkers => txn::write_txn_markers(&req).await,
        other => Err(ProtocolError::UnknownApi(other as i16)),
    };
    if tracing::enabled!(tracing::Level::TRACE) {
        tracing::trace!(%peer, bytes = frame.as_ref().map_or(0, |r| r.as_ref().map_or(0, |b| b.len())), "responded");
    }
    Ok(frame?.map(Reply::Frame))
}
