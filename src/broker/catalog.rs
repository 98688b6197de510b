//! Topic metadata: what topics exist, their partition counts, ids and configs.
//!
//! Every shard keeps its own copy; shard 0 (the controller) owns the durable one in
//! `<data-dir>/topics.meta`, written whole to a temporary file, fsynced and renamed over the old one,
//! so a crash leaves either the old or the new catalog. One line per topic:
//! `name TAB partitions TAB id (32 hex digits) TAB key=value;key=value`.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: i32,
    pub id: u128,
    pub configs: BTreeMap<String, String>,
}

const FILE: &str = "topics.meta";

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
        let partitions = partitions.parse().map_err(|_| bad(line))?;
        let id = u128::from_str_radix(id, 16).map_err(|_| bad(line))?;
        let configs = configs
            .split(';')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        topics.insert(name.to_string(), TopicMeta { name: name.to_string(), partitions, id, configs });
    }
    Ok(topics)
}

/// The catalog's file content for `topics`.
pub fn encode(topics: &BTreeMap<String, TopicMeta>) -> Vec<u8> {
    let mut text = String::new();
    for t in topics.values() {
        let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("{}\t{}\t{:032x}\t{}\n", t.name, t.partitions, t.id, configs.join(";")));
    }
    text.into_bytes()
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
        topics.insert("a.b-c_d".into(), TopicMeta { name: "a.b-c_d".into(), partitions: 3, id: new_topic_id("a"), configs });
        topics.insert("e".into(), TopicMeta { name: "e".into(), partitions: 1, id: 7, configs: BTreeMap::new() });
        shards::run_local(save(&dir, encode(&topics))).unwrap();
        assert_eq!(load(&dir).unwrap(), topics);
        assert!(valid_topic_name("ok-name.1") && !valid_topic_name("bad name") && !valid_topic_name(".."));
    }
}
