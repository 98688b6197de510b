//! Topic metadata: what topics exist, their partition counts, ids and configs.
//!
//! Every shard keeps its own copy; shard 0 (the controller) owns the durable one in
//! `<data-dir>/topics.meta`, written whole to a temporary file, fsynced and renamed over the old one,
//! so a crash leaves either the old or the new catalog. One line per topic:
//! `name TAB partitions TAB id (32 hex digits) TAB key=value;key=value TAB replication factor TAB
//! partition=leader/leader epoch/isr,isr/offline,offline;…` — the last field lists only the
//! partitions whose state is not the initial one (leader: the first replica, epoch 0, every
//! replica in sync, none offline; leader −1: none); a line without the last two fields (an older
//! catalog) is a topic of one replica.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: i32,
    pub id: u128,
    pub configs: BTreeMap<String, String>,
    /// Replicas of each partition, on as many shards (`replication::replicas`).
    pub replication_factor: u16,
    /// Leader, epoch and ISR of the partitions not in their initial state (`initial_state`).
    pub states: BTreeMap<i32, PartitionState>,
}

/// A replicated partition's leadership and in-sync replicas (shard ids), as the controller
/// decided them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// `None`: no replica can lead (none in sync, unclean election off).
    pub leader: Option<u16>,
    pub epoch: i32,
    pub isr: Vec<u16>,
    /// Replicas whose log failed (a disk error): they neither lead nor count as in sync.
    pub offline: Vec<u16>,
}

impl TopicMeta {
    pub fn new(name: String, partitions: i32, configs: BTreeMap<String, String>, replication_factor: u16) -> TopicMeta {
        TopicMeta { id: new_topic_id(&name), name, partitions, configs, replication_factor, states: BTreeMap::new() }
    }

    /// Partition `p`'s state: the recorded one, or the initial one for `replicas`.
    pub fn state(&self, p: i32, replicas: &[u16]) -> PartitionState {
        self.states.get(&p).cloned().unwrap_or_else(|| initial_state(replicas))
    }

    /// Records partition `p`'s state (forgotten when it is the initial one again).
    pub fn set_state(&mut self, p: i32, state: PartitionState, replicas: &[u16]) {
        if state == initial_state(replicas) {
            self.states.remove(&p);
        } else {
            self.states.insert(p, state);
        }
    }
}

fn initial_state(replicas: &[u16]) -> PartitionState {
    PartitionState { leader: replicas.first().copied(), epoch: 0, isr: replicas.to_vec(), offline: Vec::new() }
}

const FILE: &str = "topics.meta";

/// Partitions a topic may have: a bound on files and memory per request.
pub const PARTITIONS_MAX: i32 = 10_000;

/// Kafka's internal topics. Weir keeps their state in files of its own (`docs/groups.md`), so these
/// names are reserved: never auto-created, never created by a client.
pub const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The existing topic a new one named `name` collides with: one whose name differs only in '.'
/// against '_' (Kafka refuses it: both give the same metric names).
pub fn collision<'a>(existing: impl IntoIterator<Item = &'a String>, name: &str) -> Option<&'a String> {
    let same = |a: u8, b: u8| a == b || (a == b'.' && b == b'_') || (a == b'_' && b == b'.');
    existing.into_iter().find(|t| t.as_str() != name && t.len() == name.len() && t.bytes().zip(name.bytes()).all(|(a, b)| same(a, b)))
}

pub fn load(dir: &Path) -> std::io::Result<BTreeMap<String, TopicMeta>> {
    let text = match shards::fs::read(&dir.join(FILE)) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let bad = |line: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad line in {FILE}: {line:?}"));
    let mut topics = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split('\t');
        let (Some(name), Some(partitions), Some(id), configs) = (fields.next(), fields.next(), fields.next(), fields.next().unwrap_or(""))
        else {
            return Err(bad(line));
        };
        let replication_factor = fields.next().map_or(Some(1), |r| r.parse().ok()).ok_or_else(|| bad(line))?;
        let states = decode_states(fields.next().unwrap_or("")).ok_or_else(|| bad(line))?;
        let partitions = partitions.parse().map_err(|_| bad(line))?;
        // What no create or alter writes is damage: a partition count of 20 million took 5 GB.
        if !valid_topic_name(name) || !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(bad(line));
        }
        let id = u128::from_str_radix(id, 16).map_err(|_| bad(line))?;
        let configs = configs
            .split(';')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, v)| match crate::broker::config::topic::check(k, v) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(topic = name, error = %e, "topics.meta holds a config no alter would take: ignored, the default applies");
                    false
                }
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        topics.insert(name.to_string(), TopicMeta { name: name.to_string(), partitions, id, configs, replication_factor, states });
    }
    Ok(topics)
}

/// The catalog's file content for `topics`.
pub fn encode(topics: &BTreeMap<String, TopicMeta>) -> Vec<u8> {
    let mut text = String::new();
    for t in topics.values() {
        let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let states: Vec<String> = t
            .states
            .iter()
            .map(|(p, st)| {
                let list = |l: &[u16]| l.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
                let leader = st.leader.map_or(-1, i32::from);
                format!("{p}={leader}/{}/{}/{}", st.epoch, list(&st.isr), list(&st.offline))
            })
            .collect();
        text.push_str(&format!(
            "{}\t{}\t{:032x}\t{}\t{}\t{}\n",
            t.name,
            t.partitions,
            t.id,
            configs.join(";"),
            t.replication_factor,
            states.join(";")
        ));
    }
    text.into_bytes()
}

fn decode_states(field: &str) -> Option<BTreeMap<i32, PartitionState>> {
    let mut states = BTreeMap::new();
    for entry in field.split(';').filter(|e| !e.is_empty()) {
        let (p, rest) = entry.split_once('=')?;
        let mut parts = rest.split('/');
        let (leader, epoch, isr, offline) = (parts.next()?, parts.next()?, parts.next()?, parts.next().unwrap_or(""));
        let list = |l: &str| l.split(',').filter(|r| !r.is_empty()).map(|r| r.parse().ok()).collect::<Option<Vec<u16>>>();
        let leader: i32 = leader.parse().ok()?;
        let leader = if leader < 0 { None } else { Some(u16::try_from(leader).ok()?) };
        states.insert(p.parse().ok()?, PartitionState { leader, epoch: epoch.parse().ok()?, isr: list(isr)?, offline: list(offline)? });
    }
    Some(states)
}

/// Replaces the catalog in `dir` with `encoded` (see `encode`), durably.
pub async fn save(dir: &Path, encoded: Vec<u8>) -> std::io::Result<()> {
    shards::fs::write_durably(&dir.join(FILE), encoded).await
}

/// A new topic id: unique enough without a random source (time, counter, name hash).
pub fn new_topic_id(name: &str) -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let hash = shards::stable_hash(name.as_bytes());
    (u128::from(now) << 64) | u128::from(hash ^ COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/catalog");
        std::fs::create_dir_all(&dir).unwrap();
        let mut topics = BTreeMap::new();
        let configs = [("retention.ms".to_string(), "1000".to_string())].into_iter().collect();
        let mut replicated = TopicMeta::new("a.b-c_d".into(), 3, configs, 2);
        replicated.set_state(1, PartitionState { leader: Some(1), epoch: 3, isr: vec![1], offline: vec![0] }, &[0, 1]);
        replicated.set_state(2, PartitionState { leader: Some(0), epoch: 0, isr: vec![0, 1], offline: vec![] }, &[0, 1]);
        replicated.set_state(0, PartitionState { leader: None, epoch: 5, isr: vec![], offline: vec![0, 1] }, &[0, 1]);
        assert_eq!(replicated.states.len(), 2, "the initial state is not recorded");
        topics.insert("a.b-c_d".into(), replicated);
        topics.insert("e".into(), TopicMeta { id: 7, ..TopicMeta::new("e".into(), 1, BTreeMap::new(), 1) });
        shards::run_local(save(&dir, encode(&topics))).unwrap();
        assert_eq!(load(&dir).unwrap(), topics);
        // A catalog written before replication: one replica.
        std::fs::write(dir.join(FILE), "old\t2\t0000000000000000000000000000002a\tretention.ms=5\n").unwrap();
        let old = &load(&dir).unwrap()["old"];
        assert_eq!((old.replication_factor, old.id, old.states.len()), (1, 42, 0));
        assert!(valid_topic_name("ok-name.1") && !valid_topic_name("bad name") && !valid_topic_name(".."));
        let names = ["a.b".to_string(), "c_d".to_string(), "e".to_string()];
        assert_eq!(collision(&names, "a_b"), Some(&names[0]));
        assert_eq!(collision(&names, "c.d"), Some(&names[1]));
        assert_eq!((collision(&names, "a.b"), collision(&names, "a-b"), collision(&names, "a_bc")), (None, None, None));
        // Damage: counts and names no create writes stop the start; a config no alter takes is
        // dropped (its default applies), the rest of the topic kept.
        for line in ["big\t20000000\t2a\t\n", "zero\t0\t2a\t\n", "bad name\t1\t2a\t\n"] {
            std::fs::write(dir.join(FILE), line).unwrap();
            assert!(load(&dir).is_err(), "{line:?}");
        }
        std::fs::write(dir.join(FILE), "t\t2\t2a\tflush.messages=0;max.message.bytes=-5;retention.ms=60000\n").unwrap();
        assert_eq!(load(&dir).unwrap()["t"].configs, [("retention.ms".to_string(), "60000".to_string())].into_iter().collect());
    }
}
