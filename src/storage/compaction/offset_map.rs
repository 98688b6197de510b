//! The cleaner's key → latest offset map (Kafka's `SkimpyOffsetMap`): keys are held as 128-bit
//! hashes, so its memory is bounded by entries, not by key sizes, and fixed up front by
//! `log.cleaner.dedupe.buffer.size`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Bytes one entry costs: a 16-byte key hash and an 8-byte offset (Kafka counts the same), plus the
/// hash table's own share.
pub const ENTRY_BYTES: usize = 32;

pub struct OffsetMap {
    latest: HashMap<u128, u64>,
    capacity: usize,
    /// The highest offset put in.
    last_offset: Option<u64>,
}

impl OffsetMap {
    /// A map holding at most what `bytes` of memory allow (at least one entry).
    pub fn with_memory(bytes: usize) -> OffsetMap {
        let capacity = (bytes / ENTRY_BYTES).max(1);
        OffsetMap { latest: HashMap::with_capacity(capacity.min(1 << 20)), capacity, last_offset: None }
    }

    /// Records that each key's latest record so far is at its offset (offsets come in increasing
    /// order), all of them or, if the map cannot hold their new keys, none (`false`): the pass
    /// then ends before them.
    pub fn put_all(&mut self, records: &[(&[u8], u64)]) -> bool {
        let hashes: Vec<(u128, u64)> = records.iter().map(|&(key, offset)| (hash128(key), offset)).collect();
        let mut new: Vec<u128> = hashes.iter().map(|h| h.0).filter(|h| !self.latest.contains_key(h)).collect();
        new.sort_unstable();
        new.dedup();
        if self.latest.len() + new.len() > self.capacity {
            return false;
        }
        for (hash, offset) in hashes {
            self.latest.insert(hash, offset);
            self.last_offset = Some(self.last_offset.map_or(offset, |o| o.max(offset)));
        }
        true
    }

    /// `key`'s latest offset, if the map has it.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.latest.get(&hash128(key)).copied()
    }

    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Two SipHash-2-4 passes with different prefixes: 128 bits, so that two keys colliding (and one
/// record wrongly dropping the other's) is as unlikely as with Kafka's MD5.
fn hash128(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(0x5765_6972_636c_6561, 0x6e65_722d_6d61_7000 | u64::from(salt));
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_per_key_within_a_bounded_number_of_keys() {
        let mut m = OffsetMap::with_memory(3 * ENTRY_BYTES);
        assert!(m.put_all(&[(b"a", 1), (b"b", 2), (b"a", 3)]) && m.put_all(&[(b"c", 4)]));
        assert!(!m.put_all(&[(b"b", 5), (b"d", 6)]), "full: a fourth key does not fit, and nothing of them goes in");
        assert_eq!(m.get(b"b"), Some(2));
        assert!(m.put_all(&[(b"b", 6)]), "a key already in it still updates");
        assert_eq!((m.get(b"a"), m.get(b"b"), m.get(b"c"), m.get(b"d")), (Some(3), Some(6), Some(4), None));
        assert_eq!((m.len(), m.last_offset()), (3, Some(6)));
    }
}
