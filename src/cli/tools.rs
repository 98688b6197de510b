//! `weir topic|produce|consume`: command-line tools speaking the Kafka protocol to any broker.

use clap::{Args, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;
use weir::client::group::GroupMember;
use weir::client::{self, Cluster};
use weir::storage::batch::{self, NewRecord};

#[derive(Args)]
pub struct Common {
    /// Any broker of the cluster.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092", env = "WEIR_BOOTSTRAP", global = true)]
    pub bootstrap: String,
}

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition, one per shard (-1: the broker's default.replication.factor).
        #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show partitions, leaders, offsets and configs of a topic.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Args)]
pub struct TopicArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: TopicCmd,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// Partition to write to (default: spread lines round-robin, or by key hash with --key-separator).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Split each line into key and value at the first occurrence of this string (e.g. ':').
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// Lines per produce request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum From {
    Beginning,
    End,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// Read this partition only (default: every partition, as Kafka's console consumer does).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Where to start when --offset is not given.
    #[arg(long, value_enum, default_value = "beginning")]
    from: From,
    /// Start at this offset (with --partition).
    #[arg(long, short = 'o', requires = "partition")]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Exit at the end of the partition instead of waiting for more.
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Print key, offset and timestamp too.
    #[arg(long)]
    verbose: bool,
    /// Consume as a member of this consumer group: the group assigns partitions (range) and
    /// offsets are committed as records are printed; `--partition` is ignored.
    #[arg(long, short = 'g')]
    group: Option<String>,
}

pub fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("weir: {e}");
    1
}

pub fn topic(args: TopicArgs) -> i32 {
    let mut cluster = match Cluster::connect(&args.common.bootstrap) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let result = match args.cmd {
        TopicCmd::Create { name, partitions, replication_factor, configs } => {
            let parsed: Result<Vec<(String, String)>, String> = configs
                .iter()
                .map(|c| c.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(format!("--config {c}: expected key=value")))
                .collect();
            match parsed {
                Ok(cfg) => cluster
                    .create_topic(&name, partitions, replication_factor, &cfg)
                    .map(|()| println!("created {name} with {partitions} partitions")),
                Err(e) => return fail(e),
            }
        }
        TopicCmd::List => cluster.metadata(&[], false).map(|topics| {
            for t in topics {
                println!("{}\t{} partitions", t.name, t.leaders.len());
            }
        }),
        TopicCmd::Describe { name } => describe(&mut cluster, &name),
        TopicCmd::Delete { name } => cluster.delete_topic(&name).map(|()| println!("deleted {name}")),
    };
    result.map_or_else(fail, |()| 0)
}

fn describe(cluster: &mut Cluster, name: &str) -> client::Result<()> {
    let layout = cluster.metadata(&[name], false)?.pop().unwrap_or_default();
    println!("topic {name}: {} partitions", layout.leaders.len());
    for (p, &leader) in layout.leaders.iter().enumerate() {
        let (start, end) = cluster.offsets(name, p as i32, leader)?;
        println!("  partition {p}\tleader {leader}\toffsets {start}..{end}");
    }
    for (k, v) in cluster.describe_configs(name)? {
        println!("  {k}={v}");
    }
    Ok(())
}

pub fn produce(args: ProduceArgs) -> i32 {
    let run = || -> client::Result<u64> {
        let mut cluster = Cluster::connect(&args.common.bootstrap)?;
        let layout = cluster.metadata(&[&args.topic], true)?.pop().unwrap_or_default();
        let partitions = layout.leaders.len().max(1);
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let mut sent = 0u64;
        let mut next = 0usize;
        loop {
            let chunk: Vec<String> = lines.by_ref().take(args.batch.max(1)).collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                return Ok(sent);
            }
            let split: Vec<(Option<&str>, &str)> = chunk
                .iter()
                .map(|l| match &args.key_separator {
                    Some(sep) => l.split_once(sep.as_str()).map_or((None, l.as_str()), |(k, v)| (Some(k), v)),
                    None => (None, l.as_str()),
                })
                .collect();
            let mut by_partition: Vec<Vec<NewRecord<'_>>> = (0..partitions).map(|_| Vec::new()).collect();
            for (key, value) in &split {
                let p = match (args.partition, key) {
                    (Some(p), _) => p as usize,
                    (None, Some(k)) => (k.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) as usize) % partitions,
                    (None, None) => {
                        next += 1;
                        next % partitions
                    }
                };
                by_partition.get_mut(p).ok_or_else(|| client::ClientError::Protocol(format!("no partition {p}")))?.push(NewRecord {
                    key: key.map(str::as_bytes),
                    value: Some(value.as_bytes()),
                    headers: &[],
                });
            }
            for (p, records) in by_partition.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                let bytes = batch::encode(&records, weir::broker::unix_ms());
                let leader = layout.leaders.get(p).copied().unwrap_or(-1);
                let conn = cluster.conn(leader)?;
                let v = conn.version::<kafka_protocol::messages::ProduceRequest>(7);
                let req = client::produce_request(&args.topic, p as i32, bytes.into(), args.acks, 30_000);
                if args.acks == 0 {
                    conn.send(&req, v)?;
                } else {
                    let r = conn.call(req, v)?;
                    let code = r.responses[0].partition_responses[0].error_code;
                    if code != 0 {
                        return Err(client::ClientError::Broker { code, what: format!("produce to {}/{p}", args.topic) });
                    }
                }
                sent += records.len() as u64;
            }
        }
    };
    match run() {
        Ok(n) => {
            eprintln!("produced {n} records to {}", args.topic);
            0
        }
        Err(e) => fail(e),
    }
}

/// Prints records to stdout and counts them against `--count`.
struct Printer<'a> {
    out: std::io::BufWriter<std::io::StdoutLock<'a>>,
    verbose: bool,
    printed: u64,
    limit: Option<u64>,
}

impl Printer<'_> {
    /// Prints the records at or after `*offset` in `bytes` (whole batches) and advances `*offset`.
    /// Returns true once `--count` records have been printed.
    fn batches(&mut self, mut bytes: bytes::Bytes, offset: &mut i64) -> client::Result<bool> {
        while let Ok(info) = batch::validate_stored(&bytes) {
            let this = bytes.split_to(info.bytes);
            let Some(records) = batch::records(&this) else {
                return Err(client::ClientError::Protocol(format!(
                    "batch at offset {} is compressed (codec {}); weir consume reads uncompressed batches only",
                    info.base_offset,
                    batch::compression(&this).unwrap_or(0)
                )));
            };
            let from = *offset;
            for rec in records.into_iter().filter(|r| r.offset >= from) {
                let value = String::from_utf8_lossy(rec.value.unwrap_or_default());
                if self.verbose {
                    let key = String::from_utf8_lossy(rec.key.unwrap_or_default());
                    writeln!(self.out, "{}\t{}\t{key}\t{value}", rec.offset, rec.timestamp_ms)?;
                } else {
                    writeln!(self.out, "{value}")?;
                }
                *offset = rec.offset + 1;
                self.printed += 1;
                if self.limit.is_some_and(|n| self.printed >= n) {
                    self.out.flush()?;
                    return Ok(true);
                }
            }
            *offset = (*offset).max(info.base_offset + i64::from(info.offset_count));
        }
        self.out.flush()?;
        Ok(false)
    }
}

pub fn consume(args: ConsumeArgs) -> i32 {
    let run = || -> client::Result<()> {
        let mut cluster = Cluster::connect(&args.common.bootstrap)?;
        let layout = cluster.metadata(&[&args.topic], false)?.pop().unwrap_or_default();
        let stdout = std::io::stdout();
        let mut printer = Printer { out: std::io::BufWriter::new(stdout.lock()), verbose: args.verbose, printed: 0, limit: args.count };
        if let Some(group) = &args.group {
            return consume_group(&args, group, &mut cluster, &layout, &mut printer);
        }
        let partitions: Vec<i32> = match args.partition {
            Some(p) if p < 0 || p as usize >= layout.leaders.len() => {
                return Err(client::ClientError::Protocol(format!("no partition {p}")));
            }
            Some(p) => vec![p],
            None => (0..layout.leaders.len() as i32).collect(),
        };
        // Each leader is asked for all its partitions in one fetch, leaders in turn.
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in partitions {
            let leader = layout.leaders[p as usize];
            let (start, end) = cluster.offsets(&args.topic, p, leader)?;
            let offset = args.offset.unwrap_or(match args.from {
                From::Beginning => start,
                From::End => end,
            });
            by_leader.entry(leader).or_default().push((p, offset));
        }
        let wait = if args.exit_at_end { 0 } else { (500 / by_leader.len().max(1)) as i32 };
        let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
        loop {
            for (&leader, wanted) in by_leader.iter_mut() {
                let conn = cluster.conn(leader)?;
                let v = conn.version::<kafka_protocol::messages::FetchRequest>(11);
                let r = conn.call(client::fetch_request_many(&args.topic, wanted, wait, 4 << 20), v)?;
                for (p, hw, bytes) in client::fetch_results(&r)? {
                    let Some(entry) = wanted.iter_mut().find(|(q, _)| *q == p) else { continue };
                    at_end.insert(p, bytes.is_empty() && entry.1 >= hw);
                    if printer.batches(bytes, &mut entry.1)? {
                        return Ok(());
                    }
                }
            }
            if args.exit_at_end && by_leader.values().flatten().all(|(p, _)| at_end.get(p) == Some(&true)) {
                return Ok(());
            }
        }
    };
    run().map_or_else(fail, |()| 0)
}

/// `--group`: joins the group, reads the partitions it is given from their committed offsets (or
/// `--from` where none), commits after every fetch that returned records, and leaves at the end.
fn consume_group(
    args: &ConsumeArgs,
    group: &str,
    cluster: &mut Cluster,
    layout: &client::TopicLayout,
    printer: &mut Printer<'_>,
) -> client::Result<()> {
    let partitions = layout.leaders.len() as i32;
    let (mut member, mut assigned) = GroupMember::join(cluster, group, &args.topic, partitions)?;
    'generation: loop {
        let committed = member.committed(&assigned)?;
        let mut offsets = Vec::with_capacity(assigned.len());
        for (&p, &c) in assigned.iter().zip(&committed) {
            let leader = layout.leaders[p as usize];
            let (start, end) = cluster.offsets(&args.topic, p, leader)?;
            let from = match args.from {
                From::Beginning => start,
                From::End => end,
            };
            offsets.push(if c >= 0 { c } else { from });
        }
        let mut at_end = vec![false; assigned.len()];
        loop {
            if !member.heartbeat_due()? {
                assigned = member.rejoin(partitions)?;
                continue 'generation;
            }
            for (i, &p) in assigned.iter().enumerate() {
                let conn = cluster.conn(layout.leaders[p as usize])?;
                let v = conn.version::<kafka_protocol::messages::FetchRequest>(11);
                let wait = if args.exit_at_end { 0 } else { (500 / assigned.len().max(1)) as i32 };
                let r = conn.call(client::fetch_request(&args.topic, p, offsets[i], wait, 4 << 20), v)?;
                let (hw, bytes) = client::fetch_result(&r)?;
                at_end[i] = bytes.is_empty() && offsets[i] >= hw;
                let had = !bytes.is_empty();
                let done = printer.batches(bytes, &mut offsets[i])?;
                if had {
                    member.commit(&[(p, offsets[i])])?;
                }
                if done {
                    return member.leave();
                }
            }
            if assigned.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
            if args.exit_at_end && at_end.iter().all(|&e| e) {
                return member.leave();
            }
        }
    }
}
