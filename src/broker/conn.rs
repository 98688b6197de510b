//! Client connections: accept, read frames, dispatch, write responses in order.
//!
//! Requests on one connection are handled one at a time, as Kafka does, so responses keep their
//! order. A frame over `max_request_bytes` or an unreadable header closes that connection only,
//! with one log line; nothing a client sends can take the shard down.

use super::{fetch, groups, handlers, produce, state};
use crate::protocol::{self, frame::FrameReader, ProtocolError};
use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use kafka_protocol::messages::ApiKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

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
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shards::sleep(STOP_CHECK).await;
            None
        })
        .await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            None => {}
            Some(Ok(stream)) => {
                shards::spawn_local(connection(stream)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                shards::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(mut stream: shards::TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut frames = FrameReader::new(state().cfg.max_request_bytes);
    loop {
        let frame = match frames.next(&mut stream).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection");
                return;
            }
        };
        let response = match dispatch(frame, &peer).await {
            Ok(r) if tracing::enabled!(tracing::Level::TRACE) => {
                tracing::trace!(%peer, bytes = r.as_ref().map_or(0, |b| b.len()), "responded");
                r
            }
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection");
                return;
            }
        };
        if let Some(bytes) = response {
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

async fn dispatch(frame: Bytes, peer: &str) -> Result<Option<Bytes>, ProtocolError> {
    let mut req = protocol::decode_header(frame)?;
    req.peer = peer.to_string();
    tracing::trace!(%peer, api = ?req.api, version = req.header.request_api_version, correlation = req.header.correlation_id, "request");
    match req.api {
        ApiKey::ApiVersions => handlers::api_versions(&req),
        ApiKey::Metadata => handlers::metadata(&req).await,
        ApiKey::Produce => produce::handle(&req).await,
        ApiKey::Fetch => fetch::handle(&req).await,
        ApiKey::ListOffsets => handlers::list_offsets(&req).await,
        ApiKey::CreateTopics => handlers::create_topics(&req).await,
        ApiKey::DeleteTopics => handlers::delete_topics(&req).await,
        ApiKey::CreatePartitions => handlers::create_partitions(&req).await,
        ApiKey::DescribeConfigs => handlers::describe_configs(&req),
        ApiKey::IncrementalAlterConfigs => handlers::incremental_alter_configs(&req).await,
        ApiKey::AlterConfigs => handlers::alter_configs(&req).await,
        ApiKey::DescribeCluster => handlers::describe_cluster(&req),
        ApiKey::InitProducerId => handlers::init_producer_id(&req),
        ApiKey::FindCoordinator => groups::find_coordinator(&req),
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete => groups::handle(&req).await,
        other => Err(ProtocolError::UnknownApi(other as i16)),
    }
}
