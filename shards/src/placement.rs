//! Which shard owns a partition.
//!
//! Stable for a given shard count: the same (topic, partition) always lands on the same shard, and
//! the partitions of one topic spread round-robin from a per-topic starting shard, so a topic with
//! as many partitions as shards uses every core.

/// FNV-1a: stable across runs and platforms, unlike `std`'s randomly seeded hasher. Anything that
/// maps names to places durably (shards, offsets partitions) hashes with this.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard that owns `partition` of `topic` when there are `shards` shards.
pub fn placement(topic: &str, partition: u32, shards: usize) -> usize {
    assert!(shards > 0);
    let first = stable_hash(topic.as_bytes()) % shards as u64;
    ((first + u64::from(partition)) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(placement("t", 0, 4), placement("t", 0, 4));
        let owners: std::collections::HashSet<_> = (0..4).map(|p| placement("orders", p, 4)).collect();
        assert_eq!(owners.len(), 4, "4 partitions on 4 shards use every shard");
        assert!((0..100).all(|p| placement("x", p, 1) == 0));
    }
}
