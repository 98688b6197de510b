//! ListOffsets: the earliest, latest, greatest-timestamp offsets, and the offset for a time.
//!
//! A time is answered per record, as Kafka does: the first record whose timestamp is ≥ the target,
//! found inside the first batch whose max timestamp is (the batch is inflated when compressed; that
//! cost is this request's, never the produce path's).

use super::handlers::{respond, respond_legacy};
use super::{errors, replication, state, Partition};
use crate::protocol::{self, ProtocolError, Request};
use crate::storage::batch;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// KIP-734: the record with the greatest timestamp.
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405 (v8+): the first offset kept locally, which without tiered storage is the log start.
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005 (v9+): the last offset in tiered storage; there is none, so no offset (as Kafka answers
/// with tiered storage off).
const LATEST_TIERED: i64 = -5;

/// The first record of a stored `batch` that `wanted(offset, timestamp)` accepts: (offset,
/// timestamp). A batch that cannot be inflated answers with its base offset and max timestamp.
fn find_record(stored: &[u8], wanted: impl Fn(i64, i64) -> bool) -> Option<(i64, i64)> {
    let h = batch::header(stored).ok()?;
    let (base, max_ts) = (h.base_offset.get(), h.max_timestamp.get());
    let attributes = h.attributes.get();
    if attributes & batch::ATTR_LOG_APPEND_TIME != 0 {
        let last = base + i64::from(h.last_offset_delta.get());
        return (base..=last).find(|o| wanted(*o, max_ts)).map(|o| (o, max_ts));
    }
    let body = match batch::records_section(stored) {
        Ok((_, body)) => body,
        Err(e) => {
            tracing::warn!(base_offset = base, error = %e, "cannot inflate a batch for a timestamp lookup; answering per batch");
            return Some((base, max_ts));
        }
    };
    let records = batch::records_in(&body, base, h.base_timestamp.get(), h.records_count.get())?;
    records.iter().find(|r| wanted(r.offset, r.timestamp_ms)).map(|r| (r.offset, r.timestamp_ms))
}

/// (error, timestamp, offset) for one partition's query, on the owning shard. A read_committed
/// client (`committed`) sees up to the last stable offset, others up to the high watermark.
async fn list_offset_local(part: Rc<Partition>, target: i64, committed: bool) -> (i16, i64, i64) {
    let o = part.log.offsets();
    let log_start = o.log_start as i64;
    let visible = if committed { o.last_stable } else { o.high_watermark } as i64;
    let found = match target {
        EARLIEST | EARLIEST_LOCAL => return (errors::NONE, -1, log_start),
        LATEST_TIERED => return (errors::NONE, -1, -1),
        LATEST => return (errors::NONE, -1, visible),
        MAX_TIMESTAMP => part.log.batch_with_max_timestamp().await.map(|b| {
            let max = b.as_deref().and_then(|b| batch::header(b).ok()).map_or(-1, |h| h.max_timestamp.get());
            b.and_then(|b| find_record(&b, |o, ts| o >= log_start && ts == max))
        }),
        ts if ts >= 0 => part.log.batch_at_timestamp(ts).await.map(|b| b.and_then(|b| find_record(&b, |o, t| o >= log_start && t >= ts))),
        _ => return (errors::INVALID_REQUEST, -1, -1),
    };
    match found {
        Ok(Some((offset, ts))) if offset < visible => (errors::NONE, ts, offset),
        // Kafka's: a record past what the client may read is not found.
        Ok(_) => (errors::NONE, -1, -1),
        Err(e) => (super::produce::log_error_code(&e), -1, -1),
    }
}

/// Kafka's rule for the special (negative) timestamps: each from the version that defined it
/// (v0, answered in its own layout, knows only latest and earliest; anything else is refused
/// below as before).
fn unsupported(target: i64, version: i16) -> bool {
    let since = match target {
        LATEST | EARLIEST => 0,
        MAX_TIMESTAMP => 7,
        EARLIEST_LOCAL => 8,
        LATEST_TIERED => 9,
        t if t >= 0 => return false,
        _ => return version >= 1,
    };
    version < since
}

/// v0 (Burrow, old tools) read into the v1 request; answered in its own layout.
fn v0_request(req: &Request) -> Result<ListOffsetsRequest, ProtocolError> {
    let mut q = ListOffsetsRequest::default();
    for (name, parts) in protocol::legacy::list_offsets_v0_request(&req.body)? {
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(name));
        for (partition, timestamp) in parts {
            let mut p = list_offsets_request::ListOffsetsPartition::default();
            p.partition_index = partition;
            p.timestamp = timestamp;
            t.partitions.push(p);
        }
        q.topics.push(t);
    }
    Ok(q)
}

pub async fn list_offsets(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    let q: ListOffsetsRequest = if version == 0 { v0_request(req)? } else { protocol::decode_body(req)? };
    let committed = q.isolation_level == 1;
    // Kafka answers each copy of a partition named twice INVALID_REQUEST, and queries none of them.
    let mut seen = std::collections::HashMap::new();
    for t in &q.topics {
        for p in &t.partitions {
            *seen.entry((t.name.as_str(), p.partition_index)).or_insert(0u32) += 1;
        }
    }
    let repeated: std::collections::HashSet<(String, i32)> =
        seen.into_iter().filter(|&(_, n)| n > 1).map(|((t, p), _)| (t.to_string(), p)).collect();
    // Every partition's query starts now: partitions on several shards, and dormant ones being
    // opened, proceed in parallel.
    let pending: Vec<_> = q
        .topics
        .into_iter()
        .map(|topic| {
            let queries: Vec<_> = topic
                .partitions
                .iter()
                .map(|p| {
                    let (name, index, target) = (topic.name.to_string(), p.partition_index, p.timestamp);
                    let asked_epoch = if version >= 4 { p.current_leader_epoch } else { -1 };
                    let refused = if !repeated.is_empty() && repeated.contains(&(name.clone(), index)) {
                        Some(errors::INVALID_REQUEST)
                    } else if unsupported(target, version) {
                        Some(errors::UNSUPPORTED_VERSION)
                    } else {
                        None
                    };
                    let task = shards::spawn_local(async move {
                        if let Some(code) = refused {
                            return ((code, -1, -1), -1);
                        }
                        let st = state();
                        let epoch = st.topic(&name).map_or(0, |meta| replication::epoch(&meta, index, st.shard.count));
                        if let Err(code) = replication::check_epoch(epoch, asked_epoch) {
                            return ((code, -1, -1), epoch);
                        }
                        let found = st
                            .on_owner(&name, index, move |part| list_offset_local(part, target, committed))
                            .await
                            .unwrap_or_else(|code| (code, -1, -1));
                        (found, epoch)
                    });
                    (index, task)
                })
                .collect();
            (topic.name, queries)
        })
        .collect();
    let mut r = ListOffsetsResponse::default();
    for (name, queries) in pending {
        let mut t = list_offsets_response::ListOffsetsTopicResponse::default();
        for (index, task) in queries {
            let ((error, timestamp, offset), epoch) = task.await;
            let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
            pr.partition_index = index;
            pr.error_code = error;
            pr.timestamp = timestamp;
            pr.offset = offset;
            // No offset found, no epoch (Kafka's default).
            if req.header.request_api_version >= 4 && offset >= 0 {
                pr.leader_epoch = epoch;
            }
            t.partitions.push(pr);
        }
        t.name = name;
        r.topics.push(t);
    }
    if version == 0 {
        super::handlers::count_errors(req, &r);
        return respond_legacy(req, &protocol::legacy::list_offsets_v0_response(&r));
    }
    respond(req, &r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compression::Codec;

    /// A batch of 100 records at offsets 500.. with timestamps 1000 + 10 × i, in `codec`.
    fn stored(codec: Codec) -> Vec<u8> {
        let mut b = batch::frame(&codec.compress(&records_with_deltas()), 100, 1000, codec as i16);
        batch::set_base_offset(&mut b, 500);
        b[35..43].copy_from_slice(&1990i64.to_be_bytes()); // max timestamp
        b
    }

    fn records_with_deltas() -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..100 {
            let v = format!("v{i}").into_bytes();
            let mut r = vec![0u8];
            batch::put_varint(&mut r, i as i64 * 10);
            batch::put_varint(&mut r, i as i64);
            batch::put_varint(&mut r, -1);
            batch::put_varint(&mut r, v.len() as i64);
            r.extend_from_slice(&v);
            batch::put_varint(&mut r, 0);
            batch::put_varint(&mut out, r.len() as i64);
            out.extend_from_slice(&r);
        }
        out
    }

    #[test]
    fn special_timestamps_are_answered_from_the_version_that_defined_them() {
        assert!(!unsupported(LATEST, 1) && !unsupported(EARLIEST, 0) && !unsupported(1_700_000_000_000, 1));
        assert!(unsupported(MAX_TIMESTAMP, 6) && !unsupported(MAX_TIMESTAMP, 7));
        assert!(unsupported(EARLIEST_LOCAL, 7) && !unsupported(EARLIEST_LOCAL, 8));
        assert!(unsupported(LATEST_TIERED, 8) && !unsupported(LATEST_TIERED, 9));
        assert!(unsupported(-6, 9) && unsupported(-100, 1));
    }

    #[test]
    fn finds_the_record_not_the_batch_in_every_codec() {
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let b = stored(codec);
            assert_eq!(find_record(&b, |_, ts| ts >= 1420), Some((542, 1420)), "{codec:?}");
            assert_eq!(find_record(&b, |_, ts| ts >= 1415), Some((542, 1420)), "{codec:?}");
            assert_eq!(find_record(&b, |o, ts| o >= 550 && ts >= 0), Some((550, 1500)), "below the log start: skipped");
            assert_eq!(find_record(&b, |_, ts| ts == 1990), Some((599, 1990)), "{codec:?}: max timestamp");
        }
    }

    #[test]
    fn log_append_time_batches_answer_with_their_max_timestamp() {
        let mut b = stored(Codec::None);
        let attributes = batch::header(&b).unwrap().attributes.get() | batch::ATTR_LOG_APPEND_TIME;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        assert_eq!(find_record(&b, |_, ts| ts >= 5), Some((500, 1990)));
    }
}
