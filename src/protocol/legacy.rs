//! Request and response versions older than `kafka-protocol` 0.18 decodes (it follows Kafka 4.0,
//! which dropped them), still sent by clients in use: Sarama's OffsetCommit v1, Burrow's ListOffsets
//! v0, DescribeConfigs v0, CreateTopics and DeleteTopics v0–1. Each is read into the oldest form the
//! crate knows, so one handler serves all versions, and answered in its own layout.
//!
//! Also the error answers for Produce v0–2 and Fetch v0–3, which need record formats v0/v1 that Weir
//! does not keep (as Kafka 4.0): every partition gets UNSUPPORTED_VERSION instead of a closed
//! connection, so an old client reports an error instead of retrying forever.
//!
//! Every count read here is checked against the bytes left before anything is allocated for it.

use super::ProtocolError;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    offset_commit_request, CreateTopicsResponse, DescribeConfigsResponse, ListOffsetsResponse, OffsetCommitRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// A bounded reader of non-flexible (pre-KIP-482) fields.
pub struct Reader<'a>(&'a [u8]);

fn short() -> ProtocolError {
    ProtocolError::Malformed("request body ends early".into())
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Reader(body)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(short());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    pub fn i8(&mut self) -> Result<i8, ProtocolError> {
        Ok(self.take(1)?[0] as i8)
    }
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().map_err(|_| short())?))
    }
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().map_err(|_| short())?))
    }
    pub fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().map_err(|_| short())?))
    }

    /// A nullable string (length −1 = null).
    pub fn nullable_string(&mut self) -> Result<Option<String>, ProtocolError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec()).map(Some).map_err(|_| ProtocolError::Malformed("string is not UTF-8".into()))
    }

    pub fn string(&mut self) -> Result<String, ProtocolError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    /// Skips a nullable byte array.
    pub fn skip_bytes(&mut self) -> Result<(), ProtocolError> {
        let len = self.i32()?;
        if len > 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }

    /// An array of elements at least `min_bytes` long each: the count is checked against the bytes
    /// left before the vector is sized.
    pub fn array<T>(
        &mut self,
        min_bytes: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, ProtocolError>,
    ) -> Result<Vec<T>, ProtocolError> {
        let count = self.i32()?;
        if count < 0 {
            return Ok(Vec::new());
        }
        if count as usize > self.0.len() / min_bytes.max(1) {
            return Err(ProtocolError::Malformed(format!("array of {count} elements in {} bytes", self.0.len())));
        }
        (0..count).map(|_| element(self)).collect()
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len().min(i16::MAX as usize) as i16);
    out.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

/// A response frame: size, correlation id (header v0), body.
pub fn frame(correlation_id: i32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_i32(4 + body.len() as i32);
    out.put_i32(correlation_id);
    out.put_slice(body);
    out.freeze()
}

/// OffsetCommit v0 (group, topics) and v1 (group, generation, member, per-partition timestamps),
/// as the v2 request the handler takes.
pub fn offset_commit_request(body: &[u8], version: i16) -> Result<OffsetCommitRequest, ProtocolError> {
    let mut r = Reader::new(body);
    let mut q = OffsetCommitRequest::default();
    q.group_id = StrBytes::from_string(r.string()?).into();
    q.generation_id_or_member_epoch = -1;
    if version >= 1 {
        q.generation_id_or_member_epoch = r.i32()?;
        q.member_id = StrBytes::from_string(r.string()?);
    }
    q.topics = r.array(6, |r| {
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(StrBytes::from_string(r.string()?));
        t.partitions = r.array(14, |r| {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = r.i32()?;
            p.committed_offset = r.i64()?;
            if version >= 1 {
                r.i64()?; // commit timestamp: Kafka ignores it too
            }
            p.committed_metadata = r.nullable_string()?.map(StrBytes::from_string);
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(q)
}

/// ListOffsets v0's query: (topic, [(partition, timestamp)]).
pub type ListOffsetsQuery = Vec<(String, Vec<(i32, i64)>)>;

pub fn list_offsets_v0_request(body: &[u8]) -> Result<ListOffsetsQuery, ProtocolError> {
    let mut r = Reader::new(body);
    r.i32()?; // replica id
    r.array(6, |r| {
        let topic = r.string()?;
        let parts = r.array(16, |r| {
            let partition = r.i32()?;
            let timestamp = r.i64()?;
            r.i32()?; // max number of offsets: one is answered, as for the later versions
            Ok((partition, timestamp))
        })?;
        Ok((topic, parts))
    })
}

/// ListOffsets v0's answer: per partition an error and "old style" offsets (one, or none).
pub fn list_offsets_v0_response(r: &ListOffsetsResponse) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(r.topics.len() as i32);
    for t in &r.topics {
        put_string(&mut out, &t.name);
        out.put_i32(t.partitions.len() as i32);
        for p in &t.partitions {
            out.put_i32(p.partition_index);
            out.put_i16(p.error_code);
            if p.offset >= 0 {
                out.put_i32(1);
                out.put_i64(p.offset);
            } else {
                out.put_i32(0);
            }
        }
    }
    out
}

/// DescribeConfigs v0's answer: v1 without synonyms, `is_default` instead of a source.
pub fn describe_configs_v0_response(r: &DescribeConfigsResponse) -> BytesMut {
    const SOURCE_DEFAULT: i8 = 5;
    let mut out = BytesMut::new();
    out.put_i32(r.throttle_time_ms);
    out.put_i32(r.results.len() as i32);
    for res in &r.results {
        out.put_i16(res.error_code);
        put_nullable_string(&mut out, res.error_message.as_deref());
        out.put_i8(res.resource_type);
        put_string(&mut out, &res.resource_name);
        out.put_i32(res.configs.len() as i32);
        for c in &res.configs {
            put_string(&mut out, &c.name);
            put_nullable_string(&mut out, c.value.as_deref());
            out.put_u8(u8::from(c.read_only));
            out.put_u8(u8::from(c.config_source == SOURCE_DEFAULT));
            out.put_u8(u8::from(c.is_sensitive));
        }
    }
    out
}

/// CreateTopics v0 (name, error) and v1 (+ message) answers: v2 without its throttle time.
pub fn create_topics_v0_v1_response(r: &CreateTopicsResponse, version: i16) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(r.topics.len() as i32);
    for t in &r.topics {
        put_string(&mut out, &t.name);
        out.put_i16(t.error_code);
        if version >= 1 {
            put_nullable_string(&mut out, t.error_message.as_deref());
        }
    }
    out
}

/// The (topic, partitions) of a request's topic array; `rest` skips each partition's other fields,
/// at least `partition_bytes` long in all.
fn topic_partitions(
    r: &mut Reader<'_>,
    partition_bytes: usize,
    rest: impl Fn(&mut Reader<'_>) -> Result<(), ProtocolError>,
) -> Result<Vec<(String, Vec<i32>)>, ProtocolError> {
    r.array(6, |r| {
        let name = r.string()?;
        let parts = r.array(partition_bytes, |r| {
            let p = r.i32()?;
            rest(r)?;
            Ok(p)
        })?;
        Ok((name, parts))
    })
}

/// Writes `[topic, [partition, error, tail…]]` for every partition.
fn put_partition_errors(out: &mut BytesMut, topics: &[(String, Vec<i32>)], error: i16, tail: impl Fn(&mut BytesMut)) {
    out.put_i32(topics.len() as i32);
    for (name, parts) in topics {
        put_string(out, name);
        out.put_i32(parts.len() as i32);
        for p in parts {
            out.put_i32(*p);
            out.put_i16(error);
            tail(out);
        }
    }
}

/// Produce v0–2: UNSUPPORTED_VERSION for every partition (they carry record formats v0/v1).
pub fn produce_unsupported(body: &[u8], version: i16, error: i16) -> Result<BytesMut, ProtocolError> {
    let mut r = Reader::new(body);
    r.i16()?; // acks
    r.i32()?; // timeout
    let topics = topic_partitions(&mut r, 8, |r| r.skip_bytes())?;
    let mut out = BytesMut::new();
    put_partition_errors(&mut out, &topics, error, |out| {
        out.put_i64(-1); // base offset
        if version >= 2 {
            out.put_i64(-1); // log append time
        }
    });
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    Ok(out)
}

/// Fetch v0–3: UNSUPPORTED_VERSION and no records for every partition.
pub fn fetch_unsupported(body: &[u8], version: i16, error: i16) -> Result<BytesMut, ProtocolError> {
    let mut r = Reader::new(body);
    r.i32()?; // replica id
    r.i32()?; // max wait
    r.i32()?; // min bytes
    if version >= 3 {
        r.i32()?; // max bytes
    }
    let topics = topic_partitions(&mut r, 16, |r| r.i64().and_then(|_| r.i32()).map(|_| ()))?;
    let mut out = BytesMut::new();
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    put_partition_errors(&mut out, &topics, error, |out| {
        out.put_i64(-1); // high watermark
        out.put_i32(0); // no records
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_v1_reads_into_the_v2_request() {
        let mut b = BytesMut::new();
        put_string(&mut b, "grp");
        b.put_i32(7);
        put_string(&mut b, "member-1");
        b.put_i32(1);
        put_string(&mut b, "t");
        b.put_i32(1);
        b.put_i32(3);
        b.put_i64(42);
        b.put_i64(-1);
        put_string(&mut b, "meta");
        let q = offset_commit_request(&b, 1).unwrap();
        assert_eq!((q.group_id.as_str(), q.generation_id_or_member_epoch, q.member_id.as_str()), ("grp", 7, "member-1"));
        let p = &q.topics[0].partitions[0];
        assert_eq!((q.topics[0].name.as_str(), p.partition_index, p.committed_offset), ("t", 3, 42));
        assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
    }

    #[test]
    fn counts_beyond_the_bytes_are_refused_before_allocating() {
        let mut b = BytesMut::new();
        put_string(&mut b, "grp");
        b.put_i32(i32::MAX);
        assert!(offset_commit_request(&b, 0).is_err());
        assert!(list_offsets_v0_request(&[0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(produce_unsupported(&[0, 1], 2, 35).is_err(), "short");
    }
}
