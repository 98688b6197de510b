//! Fetch responses (v4–v16) encoded by hand, so that record data need not be in memory: the frame
//! comes out as a list of parts, encoded bytes between the partitions' record chunks, and the
//! caller sends each chunk as it likes (older data as a file range with zero copies).
//!
//! Byte for byte what `kafka-protocol` writes for the same response (tested below), with every
//! tagged field left at its default and so not written.

use bytes::{BufMut, Bytes, BytesMut};

/// A piece of an encoded response frame, in order.
#[derive(Debug)]
pub enum Part<R> {
    Encoded(Bytes),
    Records(R),
}

pub struct Topic<R> {
    pub name: String,
    /// Names the topic from v13 on.
    pub id: u128,
    pub partitions: Vec<Partition<R>>,
}

pub struct Partition<R> {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole batches, in order.
    pub records: Vec<R>,
    /// Under read_committed: (producer id, first offset) of aborted transactions in `records`.
    pub aborted: Vec<(i64, i64)>,
}

/// The response-level fields of v7+: a fetch session error, and the session's id (0: none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Session {
    pub error_code: i16,
    pub id: i32,
}

/// Encodes a whole Fetch response frame (size, header, body) of `version`; `len` gives a chunk's
/// size in bytes. Under read_committed the aborted-transactions list is a list (empty rather than
/// null); otherwise null.
pub fn encode<R>(
    version: i16,
    correlation_id: i32,
    read_committed: bool,
    session: Session,
    topics: Vec<Topic<R>>,
    len: impl Fn(&R) -> usize,
) -> Result<Vec<Part<R>>, super::ProtocolError> {
    assert!((4..=16).contains(&version), "Fetch v{version} is not encoded here");
    let w = Writer { flexible: version >= 12 };
    let mut parts = Vec::new();
    let mut first: Option<BytesMut> = None;
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // frame size, set at the end
    out.put_i32(correlation_id);
    w.tags(&mut out); // response header v1
    out.put_i32(0); // throttle_time_ms
    if version >= 7 {
        out.put_i16(session.error_code);
        out.put_i32(session.id);
    }
    w.len(&mut out, topics.len());
    for topic in topics {
        if version >= 13 {
            out.put_u128(topic.id);
        } else {
            w.string(&mut out, &topic.name);
        }
        w.len(&mut out, topic.partitions.len());
        for p in topic.partitions {
            out.put_i32(p.index);
            out.put_i16(p.error_code);
            out.put_i64(p.high_watermark);
            out.put_i64(p.last_stable_offset);
            if version >= 5 {
                out.put_i64(p.log_start_offset);
            }
            if read_committed {
                w.len(&mut out, p.aborted.len());
                for (producer_id, first_offset) in &p.aborted {
                    out.put_i64(*producer_id);
                    out.put_i64(*first_offset);
                    w.tags(&mut out);
                }
            } else {
                w.null_array(&mut out);
            }
            if version >= 11 {
                out.put_i32(-1); // preferred_read_replica
            }
            w.len(&mut out, p.records.iter().map(&len).sum()); // records: bytes, length-prefixed like an array
            if !p.records.is_empty() {
                let done = out.split();
                match first {
                    None => first = Some(done),
                    Some(_) => parts.push(Part::Encoded(done.freeze())),
                }
                parts.extend(p.records.into_iter().map(Part::Records));
            }
            w.tags(&mut out);
        }
        w.tags(&mut out);
    }
    w.tags(&mut out);
    let rest = out.split();
    let mut first = match first {
        Some(head) => {
            parts.push(Part::Encoded(rest.freeze()));
            head
        }
        None => rest,
    };
    let total: usize = first.len() + parts.iter().map(|p| if let Part::Encoded(b) = p { b.len() } else { 0 }).sum::<usize>();
    let records: usize = parts.iter().map(|p| if let Part::Records(r) = p { len(r) } else { 0 }).sum();
    // The caller bounds responses far below this (`broker::fetch`, FETCH_MAX_BYTES): never a panic.
    let size = i32::try_from(total + records - 4)
        .map_err(|_| super::ProtocolError::Malformed(format!("a fetch response of {} bytes", total + records)))?;
    first[..4].copy_from_slice(&size.to_be_bytes());
    parts.insert(0, Part::Encoded(first.freeze()));
    Ok(parts)
}

/// Writes lengths and strings in the classic or the flexible (KIP-482) form.
struct Writer {
    flexible: bool,
}

impl Writer {
    fn len(&self, out: &mut BytesMut, n: usize) {
        if self.flexible {
            put_uvarint(out, n as u64 + 1);
        } else {
            out.put_i32(n as i32);
        }
    }

    fn null_array(&self, out: &mut BytesMut) {
        if self.flexible {
            put_uvarint(out, 0);
        } else {
            out.put_i32(-1);
        }
    }

    fn string(&self, out: &mut BytesMut, s: &str) {
        if self.flexible {
            put_uvarint(out, s.len() as u64 + 1);
        } else {
            out.put_i16(s.len() as i16);
        }
        out.put_slice(s.as_bytes());
    }

    /// An empty tagged-field section (flexible versions only).
    fn tags(&self, out: &mut BytesMut) {
        if self.flexible {
            out.put_u8(0);
        }
    }
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn sample() -> Vec<Topic<Bytes>> {
        let batch = |n: u8, len: usize| Bytes::from(vec![n; len]);
        vec![
            Topic {
                name: "orders".into(),
                id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                partitions: vec![
                    Partition {
                        index: 0,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 40,
                        log_start_offset: 3,
                        records: vec![batch(1, 100), batch(2, 300)],
                        aborted: vec![(77, 5), (78, 9)],
                    },
                    Partition {
                        index: 1,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: vec![],
                        aborted: vec![],
                    },
                ],
            },
            Topic {
                name: "t".repeat(130),
                id: 7,
                partitions: vec![Partition {
                    index: 7,
                    error_code: 0,
                    high_watermark: 9,
                    last_stable_offset: 9,
                    log_start_offset: 0,
                    records: vec![batch(3, 200)],
                    aborted: vec![],
                }],
            },
            Topic { name: "empty".into(), id: u128::MAX, partitions: vec![] },
        ]
    }

    const SESSION: Session = Session { error_code: 0, id: 123_456 };

    fn reference(version: i16, read_committed: bool) -> Bytes {
        let mut response = FetchResponse::default();
        if version >= 7 {
            response.session_id = SESSION.id;
        }
        for t in sample() {
            let mut topic = FetchableTopicResponse::default();
            if version >= 13 {
                topic.topic_id = uuid::Uuid::from_u128(t.id);
            } else {
                topic.topic = TopicName(StrBytes::from_string(t.name));
            }
            for p in t.partitions {
                let mut data = PartitionData::default();
                data.partition_index = p.index;
                data.error_code = p.error_code;
                data.high_watermark = p.high_watermark;
                data.last_stable_offset = p.last_stable_offset;
                if version >= 5 {
                    data.log_start_offset = p.log_start_offset;
                }
                data.aborted_transactions = read_committed.then(|| {
                    p.aborted
                        .iter()
                        .map(|&(producer, first)| {
                            let mut a = kafka_protocol::messages::fetch_response::AbortedTransaction::default();
                            a.producer_id = kafka_protocol::messages::ProducerId(producer);
                            a.first_offset = first;
                            a
                        })
                        .collect()
                });
                let mut all = BytesMut::new();
                for r in &p.records {
                    all.extend_from_slice(r);
                }
                data.records = Some(all.freeze());
                topic.partitions.push(data);
            }
            response.responses.push(topic);
        }
        crate::protocol::encode_response(ApiKey::Fetch, version, 77, &response).unwrap()
    }

    #[test]
    fn matches_kafka_protocol_in_every_version() {
        for version in 4..=16 {
            for read_committed in [false, true] {
                let parts = encode(version, 77, read_committed, SESSION, sample(), |b: &Bytes| b.len()).unwrap();
                let mut flat = BytesMut::new();
                for p in &parts {
                    match p {
                        Part::Encoded(b) | Part::Records(b) => flat.extend_from_slice(b),
                    }
                }
                assert_eq!(flat.freeze(), reference(version, read_committed), "Fetch v{version}, read_committed {read_committed}");
            }
        }
    }

    #[test]
    fn records_stay_separate_parts() {
        let parts = encode(12, 1, false, SESSION, sample(), |b: &Bytes| b.len()).unwrap();
        let records: Vec<usize> = parts.iter().filter_map(|p| if let Part::Records(r) = p { Some(r.len()) } else { None }).collect();
        assert_eq!(records, vec![100, 300, 200]);
        assert!(matches!(parts.first(), Some(Part::Encoded(_))) && matches!(parts.last(), Some(Part::Encoded(_))));
    }
}
