//! weir-bench's command line.

use clap::{Parser, ValueEnum};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Produce as fast as possible (or at --rate) and measure acknowledgement latency.
    Produce,
    /// Read a topic from its start and measure throughput.
    Consume,
    /// Produce and consume together; latency = consume time − produce time of each message.
    E2e,
}

/// Parses `name=value`.
pub fn parse_config(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s}: expected name=value"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Parses durations such as `10s`, `2m`, `500ms`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Parser, Debug, Clone)]
#[command(name = "weir-bench", version, about = "Load generator and latency profiler for Kafka-compatible brokers")]
pub struct Args {
    #[arg(value_enum)]
    pub mode: Mode,
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, short = 't', default_value = "weir-bench")]
    pub topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Replicas of each partition when the bench creates the topic (one per shard).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Bytes of each message value.
    #[arg(long, default_value_t = 100)]
    pub msg_size: usize,
    /// Messages per batch (one batch per produce request and partition).
    #[arg(long, default_value_t = 1000)]
    pub batch_msgs: usize,
    /// Upper bound on a batch's bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// With --rate: send a partial batch once its first message waited this long.
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    pub acks: i16,
    /// Batch codec: none, gzip, snappy, lz4 or zstd (batches are compressed once, up front).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// An idempotent producer (InitProducerId, sequences); needs --acks -1.
    #[arg(long)]
    pub idempotent: bool,
    /// A transactional producer with this id (each producer thread N of several: ID-N), committing
    /// every --txn-ms; needs --acks -1.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// With --transactional-id: commit the open transaction this often.
    #[arg(long, default_value_t = 100.0)]
    pub txn_ms: f64,
    /// Consume with isolation_level=read_committed (up to the last stable offset, aborted
    /// transactions' records skipped).
    #[arg(long)]
    pub read_committed: bool,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Stop after this many messages (per run, all threads together).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this long (default 10s when --messages is not given).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Messages per second in total (open loop); unlimited if absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run this long before measuring.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Leave threads unpinned (on a machine with few cores the broker's pinned shards share them).
    #[arg(long)]
    pub no_pin: bool,
    /// Give record i of every batch the key `key-<i mod N>` (a compacted topic needs keys);
    /// records have no key without it.
    #[arg(long)]
    pub keys: Option<usize>,
    /// A config for the topic when the bench creates it, `name=value` (repeatable), e.g.
    /// `--topic-config cleanup.policy=compact`.
    #[arg(long = "topic-config", value_parser = parse_config)]
    pub topic_configs: Vec<(String, String)>,
    /// Fetch max bytes per request.
    #[arg(long, default_value_t = 8 << 20)]
    pub fetch_bytes: i32,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// HdrHistogram percentile-distribution output.
    #[arg(long)]
    pub hgrm: Option<std::path::PathBuf>,
    /// Self-contained HTML report.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
    }
}
