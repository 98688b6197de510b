//! DeleteRecords: moves partitions' log start offsets (Kafka Streams purges its repartition topics
//! with it). Below the new start, fetches get OFFSET_OUT_OF_RANGE and whole segments are deleted.

use super::handlers::respond;
use super::{config, errors, produce, state};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;

/// "Up to the high watermark" in a request.
const HIGH_WATERMARK: i64 = -1;

pub async fn delete_records(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DeleteRecordsRequest = protocol::decode_body(req)?;
    let st = state();
    let mut r = DeleteRecordsResponse::default();
    for topic in q.topics {
        let mut t = delete_records_response::DeleteRecordsTopicResult::default();
        let deletes = st.topic(&topic.name).is_none_or(|meta| config::deletes_records(&st, &meta));
        for p in topic.partitions {
            let offset = p.offset;
            let (error, low_watermark) = if !deletes && st.partition_exists(&topic.name, p.partition_index) {
                (errors::POLICY_VIOLATION, -1)
            } else {
                st.on_owner(&topic.name, p.partition_index, move |part| async move {
                    let target = match offset {
                        HIGH_WATERMARK => part.log.offsets().high_watermark,
                        o if o >= 0 => o as u64,
                        _ => return (errors::OFFSET_OUT_OF_RANGE, -1),
                    };
                    match part.log.delete_records(target).await {
                        Ok(start) => (errors::NONE, start as i64),
                        Err(e) => (produce::log_error_code(&e), -1),
                    }
                })
                .await
                .unwrap_or_else(|code| (code, -1))
            };
            let mut pr = delete_records_response::DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.error_code = error;
            pr.low_watermark = low_watermark;
            t.partitions.push(pr);
        }
        t.name = topic.name;
        r.topics.push(t);
    }
    respond(req, &r)
}
