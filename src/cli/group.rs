//! `weir group list|describe|lag|reset-offsets`: Kafka's `kafka-consumer-groups`, speaking the
//! protocol to any broker.

use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use weir::client::{self, admin, Cluster};

use super::tools::{fail, Common};

/// Kafka's error code for a topic that does not exist (any more).
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

#[derive(Subcommand)]
pub enum GroupCmd {
    /// List every group, with its state.
    List,
    /// A group's state and members, then its offsets and lag per partition.
    Describe { group: String },
    /// A group's offsets and lag per partition, and its total lag.
    Lag { group: String },
    /// Move a group's committed offsets (the group must have no members). Prints the plan; applies
    /// it with --execute.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
pub struct ResetArgs {
    group: String,
    /// Topics to reset, every partition of each (repeatable); default: the partitions the group
    /// has offsets for.
    #[arg(long, short = 't')]
    topic: Vec<String>,
    #[arg(long, group = "to")]
    to_earliest: bool,
    #[arg(long, group = "to")]
    to_latest: bool,
    #[arg(long, group = "to", allow_negative_numbers = false)]
    to_offset: Option<i64>,
    /// Move each offset by N (negative: back), kept within the partition's offsets.
    #[arg(long, group = "to", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// The first offset at or after this time, in ms since the Unix epoch.
    #[arg(long, group = "to")]
    to_timestamp: Option<i64>,
    /// Commit the new offsets (without it, only print them).
    #[arg(long)]
    execute: bool,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: GroupCmd,
}

pub fn run(args: GroupArgs) -> i32 {
    let mut cluster = match Cluster::connect(&args.common.bootstrap) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let result = match args.cmd {
        GroupCmd::List => admin::list_groups(&mut cluster).map(|groups| {
            println!("{:<40} {:<20} PROTOCOL-TYPE", "GROUP", "STATE");
            for g in groups {
                println!("{:<40} {:<20} {}", g.group, g.state, g.protocol_type);
            }
        }),
        GroupCmd::Describe { group } => describe(&mut cluster, &group),
        GroupCmd::Lag { group } => lag_table(&mut cluster, &group, &BTreeMap::new()).map(|total| println!("TOTAL LAG {total}")),
        GroupCmd::ResetOffsets(r) => reset(&mut cluster, &r),
    };
    result.map_or_else(fail, |()| 0)
}

/// (log start, high watermark) of every partition of `topic`, by partition.
fn topic_offsets(cluster: &mut Cluster, topic: &str) -> client::Result<Vec<(i32, i32, i64, i64)>> {
    let layout = cluster.metadata(&[topic], false)?.pop().unwrap_or_default();
    let mut out = Vec::new();
    for (p, &leader) in layout.leaders.iter().enumerate() {
        let (start, end) = cluster.offsets(topic, p as i32, leader)?;
        out.push((p as i32, leader, start, end));
    }
    Ok(out)
}

/// Prints Kafka's describe table for `group` (`owners`: partition → member, client, host) and
/// returns the total lag.
fn lag_table(cluster: &mut Cluster, group: &str, owners: &BTreeMap<(String, i32), (String, String, String)>) -> client::Result<i64> {
    let committed = admin::committed(cluster, group)?;
    let mut topics: Vec<String> = committed.keys().map(|(t, _)| t.clone()).chain(owners.keys().map(|(t, _)| t.clone())).collect();
    topics.dedup();
    topics.sort();
    topics.dedup();
    println!(
        "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10}  {:<40} {:<16} CLIENT-ID",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
    );
    let mut total = 0;
    for topic in topics {
        let ends: Vec<(i32, Option<i64>)> = match topic_offsets(cluster, &topic) {
            Ok(parts) => parts.into_iter().map(|(p, _, _, end)| (p, Some(end))).collect(),
            // A deleted topic's offsets are still the group's: shown, with no end and no lag.
            Err(client::ClientError::Broker { code: UNKNOWN_TOPIC_OR_PARTITION, .. }) => {
                committed.keys().filter(|(t, _)| *t == topic).map(|(_, p)| (*p, None)).collect()
            }
            Err(e) => return Err(e),
        };
        for (p, end) in ends {
            let key = (topic.clone(), p);
            let current = committed.get(&key).copied();
            if current.is_none() && !owners.contains_key(&key) {
                continue;
            }
            let lag = current.zip(end).map(|(c, end)| (end - c).max(0));
            total += lag.unwrap_or(0);
            let dash = || "-".to_string();
            let (member, host, client) = owners.get(&key).cloned().unwrap_or_else(|| (dash(), dash(), dash()));
            println!(
                "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10}  {:<40} {:<16} {}",
                group,
                topic,
                p,
                current.map_or_else(dash, |c| c.to_string()),
                end.map_or_else(dash, |e| e.to_string()),
                lag.map_or_else(dash, |l| l.to_string()),
                member,
                host,
                client
            );
        }
    }
    Ok(total)
}

fn describe(cluster: &mut Cluster, group: &str) -> client::Result<()> {
    let d = admin::describe_group(cluster, group)?;
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    println!(
        "group {group}: state {}, protocol type {}, assignor {}, {} members",
        d.state,
        or_dash(&d.protocol_type),
        or_dash(&d.protocol),
        d.members.len()
    );
    let mut owners = BTreeMap::new();
    for m in &d.members {
        for (t, p) in &m.assigned {
            owners.insert((t.clone(), *p), (m.member_id.clone(), m.host.clone(), m.client_id.clone()));
        }
    }
    let total = lag_table(cluster, group, &owners)?;
    println!("TOTAL LAG {total}");
    Ok(())
}

fn reset(cluster: &mut Cluster, r: &ResetArgs) -> client::Result<()> {
    let d = admin::describe_group(cluster, &r.group)?;
    if !d.members.is_empty() {
        return Err(client::ClientError::Protocol(format!(
            "offsets can only be reset while group {} is inactive, but it is {} with {} members",
            r.group,
            d.state,
            d.members.len()
        )));
    }
    let committed = admin::committed(cluster, &r.group)?;
    let topics: Vec<String> = if r.topic.is_empty() {
        let mut t: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    } else {
        r.topic.clone()
    };
    if topics.is_empty() {
        return Err(client::ClientError::Protocol(format!("group {} has no offsets; name the topics with --topic", r.group)));
    }
    let mut plan = BTreeMap::new();
    for topic in &topics {
        for (p, leader, start, end) in topic_offsets(cluster, topic)? {
            let current = committed.get(&(topic.clone(), p)).copied();
            // Without --topic, as Kafka's --all-topics: the partitions the group has offsets for.
            if r.topic.is_empty() && current.is_none() {
                continue;
            }
            let target = if r.to_earliest {
                start
            } else if r.to_latest {
                end
            } else if let Some(o) = r.to_offset {
                o
            } else if let Some(n) = r.shift_by {
                // Kafka's tool refuses too: there is nothing to shift.
                let Some(current) = current else {
                    return Err(client::ClientError::Protocol(format!(
                        "cannot shift {topic}/{p}: the group has no committed offset there"
                    )));
                };
                current.saturating_add(n)
            } else if let Some(ts) = r.to_timestamp {
                cluster.offset_for_time(topic, p, leader, ts)?
            } else {
                return Err(client::ClientError::Protocol(
                    "say where to: --to-earliest, --to-latest, --to-offset N, --shift-by N or --to-timestamp MS".into(),
                ));
            };
            // As Kafka's tool: an offset outside the partition is moved to its nearest end.
            plan.insert((topic.clone(), p), target.clamp(start, end));
        }
    }
    println!("{:<24} {:<24} {:>9} {:>15}", "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET");
    for ((t, p), o) in &plan {
        println!("{:<24} {:<24} {:>9} {:>15}", r.group, t, p, o);
    }
    if r.execute {
        admin::commit(cluster, &r.group, &plan)?;
        println!("committed");
    } else {
        println!("(dry run: add --execute to commit these offsets)");
    }
    Ok(())
}
