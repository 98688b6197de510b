//! Consumer threads: fetch loops over their partitions, counting records from batch headers, and in
//! e2e mode reading each value's send timestamp.

use super::{histogram, nanos_since, pin, Args, Stop, Totals};
use crate::client::{self, Connection};
use crate::storage::batch;
use crate::storage::control::ConsumerFilter;
use hdrhistogram::Histogram;
use kafka_protocol::messages::FetchRequest;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// One partition to read: id, leader address, first offset, and where to stop (cold reads).
#[derive(Clone, Debug)]
pub struct Assigned {
    pub partition: i32,
    pub addr: String,
    pub from: i64,
    pub until: Option<i64>,
}

pub fn run(
    index: usize,
    args: Args,
    parts: Vec<Assigned>,
    stop: Stop,
    totals: Arc<Totals>,
    base: Instant,
    stamped: bool,
) -> client::Result<Histogram<u64>> {
    if !args.no_pin {
        pin(index + args.producers);
    }
    let mut hist = histogram();
    let mut addrs: Vec<String> = parts.iter().map(|p| p.addr.clone()).collect();
    addrs.sort();
    addrs.dedup();
    let mut conns: Vec<Connection> = addrs.iter().map(|a| Connection::connect(a)).collect::<Result<_, _>>()?;
    let mut offsets: Vec<i64> = parts.iter().map(|p| p.from).collect();
    loop {
        let now = Instant::now();
        if stop.finished(now, totals.messages.load(Ordering::Relaxed)) {
            return Ok(hist);
        }
        if parts.iter().zip(&offsets).all(|(p, &o)| p.until.is_some_and(|u| o >= u)) {
            return Ok(hist);
        }
        for (ci, conn) in conns.iter_mut().enumerate() {
            let mine: Vec<usize> =
                (0..parts.len()).filter(|&i| parts[i].addr == addrs[ci] && parts[i].until.is_none_or(|u| offsets[i] < u)).collect();
            if mine.is_empty() {
                continue;
            }
            let wanted: Vec<(i32, i64)> = mine.iter().map(|&i| (parts[i].partition, offsets[i])).collect();
            let version = conn.version::<FetchRequest>(11);
            let mut req = client::fetch_request_many(&args.topic, &wanted, 100, args.fetch_bytes);
            req.isolation_level = i8::from(args.read_committed);
            let r = conn.call(req, version)?;
            let measured = stop.measuring(Instant::now());
            for t in &r.responses {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        return Err(client::ClientError::Broker {
                            code: p.error_code,
                            what: format!("fetch partition {}", p.partition_index),
                        });
                    }
                    let Some(i) = mine.iter().copied().find(|&i| parts[i].partition == p.partition_index) else { continue };
                    let mut records = p.records.clone().unwrap_or_default();
                    let aborted = p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset.max(0) as u64));
                    let mut filter = ConsumerFilter::new(aborted.collect());
                    let (mut messages, mut bytes) = (0u64, 0u64);
                    let now_ns = nanos_since(base);
                    while let Ok(len) = batch::framed_len(&records) {
                        if len > records.len() {
                            break;
                        }
                        let b = records.split_to(len);
                        let h = batch::header(&b).expect("framed");
                        let base_offset = h.base_offset.get();
                        let next = base_offset + i64::from(h.last_offset_delta.get()) + 1;
                        let shown = batch::header_info(&b).is_ok_and(|info| filter.shows(&b, &info));
                        if next <= offsets[i] {
                            continue;
                        }
                        offsets[i] = next;
                        if !shown {
                            continue;
                        }
                        messages += h.records_count.get().max(0) as u64;
                        bytes += len as u64;
                        if stamped && measured {
                            let (_, body) = batch::records_section(&b).map_err(|e| client::ClientError::Protocol(e.to_string()))?;
                            for rec in batch::records_in(&body, base_offset, 0, h.records_count.get()).unwrap_or_default() {
                                if let Some(v) = rec.value.filter(|v| v.len() >= 8) {
                                    let sent = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                                    hist.saturating_record(now_ns.saturating_sub(sent) / 1000);
                                }
                            }
                        }
                    }
                    if measured {
                        totals.add(messages, bytes);
                    }
                }
            }
        }
    }
}
