//! A scrape in Prometheus' text format (0.0.4) or OpenMetrics, by `prometheus-client`'s encoders:
//! the figures are gathered from the shards at each scrape, so they are handed to the encoder as a
//! collector of constant values rather than kept in its registry.

use super::latency::Latency;
use super::recorder::{ReadPath, Recorder, Stage};
use super::snapshot::Scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The exposition formats a client may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it (Prometheus' own scraper does), else the
    /// classic text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Request-time percentiles over a recent window (the last minute), per API key and stage.
pub type Window = BTreeMap<(i16, Stage), Latency>;

/// `scrape` encoded in `format`.
/// `scrape` encoded in `format`; `recorded` is its shards' recorders added up (`Scrape::recorded`).
pub fn encode(scrape: Arc<Scrape>, recorded: Recorder, window: Window, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(scrape, recorded, window)));
    let mut out = String::new();
    let done = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing to a String fails only if a figure's own formatting does, which ours never do.
    debug_assert!(done.is_ok());
    out
}

/// Kafka's name of an API key (`Produce`, `Fetch`, …).
pub fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(_) => key.to_string(),
    }
}

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`, …).
pub fn error_name(code: i16) -> String {
    let Some(e) = kafka_protocol::error::ResponseError::try_from_code(code) else { return "NONE".into() };
    let camel = e.to_string();
    if camel.starts_with("Unknown error code") {
        return code.to_string();
    }
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Figures(Arc<Scrape>, Recorder, Window);

/// One family of `kind`, a sample per row written by `encode`; a family with no rows is left out.
fn family<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, V)>,
    encode: impl Fn(V, MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        encode(v, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<V>(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, V)>) -> fmt::Result
where
    V: prometheus_client::encoding::EncodeGaugeValue + fmt::Debug + Send + Sync,
{
    family(enc, name, help, MetricType::Gauge, rows, |v, m| ConstGauge::new(v).encode(m))
}

/// A counter; `name` without `_total`, which the encoders add.
fn counter<V>(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, V)>) -> fmt::Result
where
    V: prometheus_client::encoding::EncodeCounterValue + fmt::Debug + Send + Sync,
{
    family(enc, name, help, MetricType::Counter, rows, |v, m| ConstCounter::new(v).encode(m))
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, &Latency)>) -> fmt::Result {
    family(enc, name, help, MetricType::Histogram, rows, |h, mut m| {
        m.encode_histogram::<Labels>(h.sum_seconds(), h.count(), &h.buckets(), None)
    })
}

fn one<V>(v: V) -> Vec<(Labels, V)> {
    vec![(Vec::new(), v)]
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (scrape, all, window) = (&*self.0, &self.1, &self.2);
        requests(&mut enc, all, window)?;
        let merged = scrape.partitions();
        partitions(&mut enc, scrape, &merged)?;
        groups(&mut enc, scrape, &merged)?;
        storage(&mut enc, scrape, all)?;
        runtime(&mut enc, scrape, all)?;
        process(&mut enc, scrape)
    }
}

fn requests(enc: &mut DescriptorEncoder, all: &Recorder, window: &Window) -> fmt::Result {
    let api = |k: i16| vec![("api", api_name(k))];
    counter(enc, "weir_requests", "Requests answered, by API.", all.apis.iter().map(|(k, a)| (api(*k), a.requests)).collect())?;
    let errors = all
        .apis
        .iter()
        .flat_map(|(k, a)| a.errors.iter().map(move |(code, n)| (vec![("api", api_name(*k)), ("error", error_name(*code))], *n)))
        .collect();
    counter(
        enc,
        "weir_request_errors",
        "Error codes answered, by API and error: once for each place a response carries one (the request, a topic, a partition, a member).",
        errors,
    )?;
    let stages = all
        .apis
        .iter()
        .flat_map(|(k, a)| {
            Stage::ALL.iter().zip(&a.stages).map(move |(s, h)| (vec![("api", api_name(*k)), ("stage", s.name().to_string())], h))
        })
        .collect();
    histogram(
        enc,
        "weir_request_time_seconds",
        "Request time by API and stage: queue (waiting for request memory or behind earlier requests of the connection), process (the handler, waits for disks, replicas and long polls included), send (writing the response), total.",
        stages,
    )?;
    // Only what had requests in the window: a percentile of nothing would read as 0 s.
    let recent: Vec<_> = window.iter().filter(|(_, h)| h.count() > 0).collect();
    for (q, name, help) in [
        (0.5, "weir_request_time_p50_seconds", "Median request time over the last minute, by API and stage."),
        (0.99, "weir_request_time_p99_seconds", "99th percentile of request time over the last minute, by API and stage."),
        (0.999, "weir_request_time_p999_seconds", "99.9th percentile of request time over the last minute, by API and stage."),
    ] {
        let rows = recent
            .iter()
            .map(|((k, stage), h)| (vec![("api", api_name(*k)), ("stage", stage.name().to_string())], h.quantile_seconds(q)))
            .collect();
        gauge(enc, name, help, rows)?;
    }
    Ok(())
}

type Merged = BTreeMap<(String, i32), super::snapshot::PartitionStats>;

fn partitions(enc: &mut DescriptorEncoder, scrape: &Scrape, merged: &Merged) -> fmt::Result {
    let parts: Vec<_> = merged.values().collect();
    let tp = |p: &super::snapshot::PartitionStats| vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())];
    let rows = |f: &dyn Fn(&super::snapshot::PartitionStats) -> u64| parts.iter().map(|p| (tp(p), f(p))).collect::<Vec<_>>();
    counter(enc, "weir_partition_records_in", "Records appended by producers.", rows(&|p| p.traffic.records_in))?;
    counter(enc, "weir_partition_bytes_in", "Record batch bytes appended by producers.", rows(&|p| p.traffic.bytes_in))?;
    counter(enc, "weir_partition_records_out", "Offsets sent to consumers, from each Fetch's offset.", rows(&|p| p.traffic.records_out))?;
    counter(enc, "weir_partition_bytes_out", "Record batch bytes sent to consumers.", rows(&|p| p.traffic.bytes_out))?;
    gauge(enc, "weir_partition_log_start_offset", "The partition's first offset.", rows(&|p| p.log_start))?;
    gauge(enc, "weir_partition_log_end_offset", "The offset the next record appended gets.", rows(&|p| p.log_end))?;
    gauge(enc, "weir_partition_high_watermark", "The offset consumers read up to.", rows(&|p| p.high_watermark))?;
    gauge(enc, "weir_partition_last_stable_offset", "The offset read_committed consumers read up to.", rows(&|p| p.last_stable))?;
    gauge(enc, "weir_partition_size_bytes", "Bytes of the partition's segments on disk.", rows(&|p| p.size_bytes))?;
    gauge(enc, "weir_partition_segments", "Segments of the partition.", rows(&|p| p.segments))?;
    gauge(enc, "weir_partition_replicas", "Replicas of the partition.", rows(&|p| p.replicas))?;
    gauge(enc, "weir_partition_in_sync_replicas", "Replicas in the partition's ISR.", rows(&|p| p.in_sync_replicas))?;
    if let Some(c) = scrape.cluster() {
        gauge(enc, "weir_topics", "Topics, internal ones included.", one(c.topics))?;
        gauge(enc, "weir_partitions", "Partitions of all topics.", one(c.partitions))?;
        gauge(enc, "weir_under_replicated_partitions", "Partitions whose ISR is smaller than their replicas.", one(c.under_replicated))?;
        gauge(enc, "weir_offline_partitions", "Partitions with no leader.", one(c.offline))?;
    }
    let closed = scrape.shards.iter().flatten().map(|s| s.partitions_closed).sum::<u64>();
    gauge(enc, "weir_partitions_closed", "Partitions whose logs are not open (unused since start, or offline).", one(closed))
}

fn groups(enc: &mut DescriptorEncoder, scrape: &Scrape, partitions: &Merged) -> fmt::Result {
    let groups: Vec<_> = scrape.groups().collect();
    let g = |name: &str| vec![("group", name.to_string())];
    gauge(enc, "weir_group_members", "Members of the consumer group.", groups.iter().map(|x| (g(&x.group), x.members)).collect())?;
    gauge(
        enc,
        "weir_group_generation",
        "The group's generation.",
        groups.iter().map(|x| (g(&x.group), i64::from(x.generation))).collect(),
    )?;
    let states = groups.iter().map(|x| (vec![("group", x.group.clone()), ("state", x.state.to_string())], 1u64)).collect();
    gauge(enc, "weir_group_state", "1 for the group's state (Empty, PreparingRebalance, CompletingRebalance, Stable).", states)?;
    let mut committed = Vec::new();
    let mut lag = Vec::new();
    let mut lag_sum = Vec::new();
    for x in &groups {
        let mut sum = 0;
        for (topic, partition, offset) in &x.committed {
            let labels = vec![("group", x.group.clone()), ("topic", topic.clone()), ("partition", partition.to_string())];
            committed.push((labels.clone(), *offset));
            if let Some(l) = super::snapshot::lag(partitions, topic, *partition, *offset) {
                lag.push((labels, l));
                sum += l;
            }
        }
        lag_sum.push((g(&x.group), sum));
    }
    gauge(enc, "weir_group_committed_offset", "The group's committed offset, by partition.", committed)?;
    gauge(enc, "weir_group_lag", "Records from the group's committed offset to the high watermark, by partition.", lag)?;
    gauge(enc, "weir_group_total_lag", "The group's lag over all its partitions.", lag_sum)
}

fn storage(enc: &mut DescriptorEncoder, scrape: &Scrape, all: &Recorder) -> fmt::Result {
    let s = &all.storage;
    histogram(enc, "weir_storage_write_time_seconds", "Time of each write to a segment (O_DIRECT).", vec![(Vec::new(), &s.write)])?;
    histogram(enc, "weir_storage_fsync_time_seconds", "Time of each fdatasync of a segment.", vec![(Vec::new(), &s.fsync)])?;
    counter(enc, "weir_storage_written_bytes", "Bytes written to segments (block padding included).", one(s.written_bytes))?;
    counter(enc, "weir_storage_written_batches", "Record batches written to segments.", one(s.batches_written))?;
    let mut buckets: Vec<(f64, u64)> = s.batches_per_write.iter().map(|(b, n)| (*b as f64, *n)).collect();
    let writes = buckets.iter().map(|b| b.1).sum();
    buckets.push((f64::INFINITY, 0));
    let rows = if writes > 0 { one(buckets) } else { Vec::new() };
    family(
        enc,
        "weir_storage_group_commit_batches",
        "Batches per segment write (group commit), bucketed by powers of two.",
        MetricType::Histogram,
        rows,
        |buckets, mut m| m.encode_histogram::<Labels>(s.batches_written as f64, writes, &buckets, None),
    )?;
    let reads = ReadPath::ALL.iter().map(|p| (vec![("path", p.name().to_string())], s.reads[*p as usize])).collect();
    counter(
        enc,
        "weir_storage_reads",
        "Reads of partitions by where their bytes came from: the batch cache, the page cache (sendfile) or the disk (O_DIRECT).",
        reads,
    )?;
    let hits = s.reads[ReadPath::Cache as usize];
    counter(enc, "weir_storage_cache_hits", "Reads answered from the batch cache.", one(hits))?;
    counter(enc, "weir_storage_cache_misses", "Reads that went to a segment file.", one(s.reads.iter().sum::<u64>() - hits))?;
    let shards: Vec<_> = scrape.shards.iter().flatten().collect();
    gauge(
        enc,
        "weir_storage_cache_bytes",
        "Bytes held in the shard's batch caches.",
        shards.iter().map(|x| (shard(x.shard), x.cache_bytes)).collect(),
    )?;
    gauge(
        enc,
        "weir_storage_cache_limit_bytes",
        "The shard's batch cache budget.",
        shards.iter().map(|x| (shard(x.shard), x.cache_limit_bytes)).collect(),
    )
}

fn shard(id: usize) -> Labels {
    vec![("shard", id.to_string())]
}

fn runtime(enc: &mut DescriptorEncoder, scrape: &Scrape, all: &Recorder) -> fmt::Result {
    let c = &all.connections;
    counter(enc, "weir_connections_accepted", "Client connections accepted.", one(c.accepted))?;
    let refused = vec![
        (vec![("reason", "max.connections".to_string())], c.refused_broker_limit),
        (vec![("reason", "max.connections.per.ip".to_string())], c.refused_address_limit),
    ];
    counter(enc, "weir_connections_refused", "Client connections closed at once for a limit.", refused)?;
    let serving = scrape.shards.iter().enumerate().map(|(i, s)| (shard(i), u64::from(s.as_ref().is_some_and(|s| s.serving)))).collect();
    gauge(enc, "weir_shard_serving", "1 when the shard answered the scrape and serves clients.", serving)?;
    let shards: Vec<_> = scrape.shards.iter().flatten().collect();
    counter(
        enc,
        "weir_shard_busy_seconds",
        "Time the shard's executor spent running tasks.",
        shards.iter().map(|s| (shard(s.shard), s.busy_seconds)).collect(),
    )?;
    gauge(
        enc,
        "weir_shard_realtime",
        "1 while the shard's thread runs at real-time priority (it uses little of its core).",
        shards.iter().map(|s| (shard(s.shard), u64::from(s.realtime))).collect(),
    )?;
    counter(
        enc,
        "weir_shard_realtime_demotions",
        "Times the shard lost real-time priority for using much of its core.",
        shards.iter().map(|s| (shard(s.shard), s.realtime_demotions)).collect(),
    )?;
    gauge(
        enc,
        "weir_shard_mailbox_depth",
        "Jobs from other shards waiting in the shard's mailbox.",
        shards.iter().map(|s| (shard(s.shard), s.mailbox_depth)).collect(),
    )?;
    // Bounded resources: per-shard ones added up over the shards.
    let mut bounded: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for b in scrape.bounded.iter().chain(shards.iter().flat_map(|s| &s.bounded)) {
        let e = bounded.entry(b.limit).or_default();
        e.0 += b.used;
        e.1 += b.bound;
    }
    let limit = |name: &str| vec![("limit", name.to_string())];
    gauge(
        enc,
        "weir_limit",
        "A bound the broker enforces, by its setting's name.",
        bounded.iter().map(|(n, (_, b))| (limit(n), *b)).collect(),
    )?;
    gauge(
        enc,
        "weir_limit_used",
        "How much of the bound is in use, by its setting's name.",
        bounded.iter().map(|(n, (u, _))| (limit(n), *u)).collect(),
    )
}

fn process(enc: &mut DescriptorEncoder, scrape: &Scrape) -> fmt::Result {
    let p = &scrape.process;
    gauge(enc, "process_resident_memory_bytes", "Resident memory size in bytes.", one(p.resident_bytes))?;
    gauge(enc, "process_virtual_memory_bytes", "Virtual memory size in bytes.", one(p.virtual_bytes))?;
    gauge(enc, "process_open_fds", "Number of open file descriptors.", one(p.open_fds))?;
    gauge(enc, "process_max_fds", "Maximum number of open file descriptors.", one(p.max_fds))?;
    counter(enc, "process_cpu_seconds", "Total user and system CPU time spent in seconds.", one(p.cpu_seconds))?;
    gauge(enc, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", one(p.start_time_seconds))?;
    gauge(enc, "process_threads", "Number of OS threads in the process.", one(p.threads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "9999");
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(1), "Fetch");
        assert_eq!(api_name(9999), "9999");
    }
}
