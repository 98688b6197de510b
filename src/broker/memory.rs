//! The memory governor: how much of the machine the shards' batch caches may hold.
//!
//! `log.cache.max.bytes` sets the caches' total (bytes, or a share of the memory the broker may
//! use: the machine's, or its cgroup's limit if lower). A thread outside the shards looks at the
//! free memory every `TICK` and gives each shard its part of what the caches may hold now: what
//! they hold, plus the free memory beyond a reserve, never more than the setting. So the caches
//! fill the memory nobody else wants, and give it back — evicting their oldest batches — when the
//! machine or the cgroup runs short, before the kernel's OOM killer would pick the broker.
//!
//! "Free" is the least of the kernel's `MemAvailable` (which counts reclaimable page cache as
//! free) and the cgroup's limit less its working set (usage less inactive file pages: what the
//! kernel cannot take back cheaply, as kubelet reckons it), for cgroup v2 and v1 alike.

use crate::storage::read_cache;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(200);
/// Memory kept free for everything else: the larger of this and `RESERVE_SHARE` of the limit.
const RESERVE_MIN: u64 = 256 << 20;
const RESERVE_SHARE: u64 = 16;
/// No shard's budget goes below this, however short memory is: tail readers need recent batches.
const SHARD_FLOOR: u64 = 8 << 20;
/// The broker's resident memory is kept under the caches' setting plus this: what the caches count
/// (batch bytes) is not all their memory (slabs' unused ends, the buffers large batches came in), and
/// the rest of the broker needs some (writers' buffers, requests, connections).
const RSS_ABOVE_SETTING: u64 = 128 << 20;

/// `log.cache.max.bytes`: a size, or a percentage of the memory the broker may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSize {
    Bytes(u64),
    Percent(u8),
}

impl std::str::FromStr for CacheSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected bytes (e.g. 4294967296) or a share of memory (e.g. 50%)");
        match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse().ok().filter(|p| (1..=90).contains(p)).map(CacheSize::Percent).ok_or_else(bad),
            None => s.trim().parse().map(CacheSize::Bytes).map_err(|_| bad()),
        }
    }
}

impl CacheSize {
    /// The total in bytes, given the memory the broker may use.
    pub fn resolve(self, limit: u64) -> u64 {
        match self {
            CacheSize::Bytes(b) => b,
            CacheSize::Percent(p) => (u128::from(limit) * u128::from(p) / 100) as u64,
        }
    }
}

/// The memory figures the governor goes by.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// The most the broker may use: the machine's memory or its cgroup's limit, the lower.
    pub limit: u64,
    /// Free for the broker: the least of MemAvailable and the cgroup's limit less its working set.
    pub free: u64,
}

impl Memory {
    pub fn read() -> Option<Memory> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| {
            meminfo.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        };
        let (total, available) = (field("MemTotal")? << 10, field("MemAvailable")? << 10);
        let (mut limit, mut free) = (total, available);
        if let Some((cg_limit, working_set)) = cgroup() {
            limit = limit.min(cg_limit);
            free = free.min(cg_limit.saturating_sub(working_set));
        }
        Some(Memory { limit, free })
    }

    /// What is kept free for everything but the caches.
    pub fn reserve(&self) -> u64 {
        RESERVE_MIN.max(self.limit / RESERVE_SHARE)
    }
}

/// This process's cgroup memory limit and working set, if it has a limit (v2, else v1).
fn cgroup() -> Option<(u64, u64)> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |path: String| std::fs::read_to_string(path).ok();
    let stat = |text: &str, key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (limit, usage, stats, inactive) = if controllers.is_empty() {
            let dir = format!("/sys/fs/cgroup{path}");
            (read(format!("{dir}/memory.max")), read(format!("{dir}/memory.current")), read(format!("{dir}/memory.stat")), "inactive_file")
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = format!("/sys/fs/cgroup/memory{path}");
            let files = |name: &str| read(format!("{dir}/memory.{name}"));
            (files("limit_in_bytes"), files("usage_in_bytes"), files("stat"), "total_inactive_file")
        } else {
            continue;
        };
        // "max" (v2) or a huge number (v1) is no limit.
        let Some(limit) = limit.and_then(|l| l.trim().parse::<u64>().ok()).filter(|&l| l < 1 << 60) else { continue };
        let usage = usage.and_then(|u| u.trim().parse::<u64>().ok()).unwrap_or(0);
        let inactive = stats.and_then(|s| stat(&s, inactive)).unwrap_or(0);
        return Some((limit, usage.saturating_sub(inactive)));
    }
    None
}

/// The caches' total now: what they hold plus the free memory beyond the reserve, less what the
/// broker's resident memory is over the setting plus `RSS_ABOVE_SETTING`, within `[floor, configured]`.
pub fn allowed(memory: &Memory, held: u64, resident: u64, configured: u64, floor: u64) -> u64 {
    let by_free = (held + memory.free).saturating_sub(memory.reserve());
    let by_resident = match resident.saturating_sub(configured + RSS_ABOVE_SETTING) {
        0 => configured,
        over => held.saturating_sub(over),
    };
    by_free.min(by_resident).min(configured).max(floor)
}

/// The caches' bounds over all shards.
#[derive(Clone, Copy, Debug)]
pub struct Caches {
    /// `log.cache.max.bytes`, resolved.
    pub configured: u64,
    /// The least they keep however short memory is (the setting, if it is lower).
    pub floor: u64,
    pub shards: u64,
}

impl Caches {
    pub fn new(size: CacheSize, shards: usize) -> Caches {
        let shards = shards.max(1) as u64;
        // Without /proc/meminfo a share of memory means nothing: then the caches keep the floor.
        let configured = Memory::read().map_or(SHARD_FLOOR * shards, |m| size.resolve(m.limit));
        Caches { configured, floor: (SHARD_FLOOR * shards).min(configured), shards }
    }

    /// A shard's budget before the governor's first look: its share of the setting.
    pub fn shard_share(&self) -> usize {
        (self.configured / self.shards) as usize
    }
}

/// Starts the governor on a thread of its own; it stops when `stop` is set.
pub fn start(caches: Caches, mailboxes: Arc<shards::Mailboxes>, stop: &'static AtomicBool) {
    tracing::info!(total_bytes = caches.configured, "batch caches (log.cache.max.bytes)");
    let spawned = std::thread::Builder::new().name("weir-memory".into()).spawn(move || {
        let mut last = caches.configured;
        while !stop.load(Ordering::SeqCst) {
            let answers = mailboxes.ask_all(|| read_cache::held() as u64, TICK);
            // A shard too busy to answer in time is asked again next tick: summing without it would
            // understate what the caches hold, and shrink them for nothing.
            let resident = crate::metrics::process::memory().map_or(0, |(_, resident)| resident);
            if let (Some(memory), Some(held)) = (Memory::read(), answers.into_iter().sum::<Option<u64>>()) {
                let total = allowed(&memory, held, resident, caches.configured, caches.floor);
                // Shrinking goes out at once; growing in steps worth a message.
                if total < last || total > last + last / 64 {
                    let share = (total / caches.shards) as usize;
                    for shard in 0..mailboxes.count() {
                        mailboxes.send(shard, Box::new(move || read_cache::set_budget(share)));
                    }
                    if total < last {
                        tracing::debug!(
                            total_bytes = total,
                            held_bytes = held,
                            free_bytes = memory.free,
                            "batch caches shrunk: memory is short"
                        );
                    }
                    last = total;
                }
            }
            std::thread::sleep(TICK);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "memory governor not started: the batch caches keep log.cache.max.bytes whatever the free memory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_bytes_or_a_share_of_memory() {
        assert_eq!("4294967296".parse(), Ok(CacheSize::Bytes(4 << 30)));
        assert_eq!(" 50% ".parse(), Ok(CacheSize::Percent(50)));
        assert!("0%".parse::<CacheSize>().is_err() && "95%".parse::<CacheSize>().is_err() && "lots".parse::<CacheSize>().is_err());
        assert_eq!(CacheSize::Percent(50).resolve(24 << 30), 12 << 30);
    }

    #[test]
    fn the_caches_get_the_free_memory_beyond_the_reserve_within_their_bounds() {
        let gib = 1u64 << 30;
        // 24 GiB, 20 free: the setting binds.
        let roomy = Memory { limit: 24 * gib, free: 20 * gib };
        assert_eq!(roomy.reserve(), 1536 << 20);
        assert_eq!(allowed(&roomy, gib, 2 * gib, 12 * gib, 16 << 20), 12 * gib);
        // A 1 GiB cgroup with 100 MiB free: the caches give back what the reserve lacks.
        let short = Memory { limit: gib, free: 100 << 20 };
        assert_eq!(allowed(&short, 400 << 20, 600 << 20, 512 << 20, 16 << 20), 244 << 20);
        // Nothing left: the floor.
        assert_eq!(allowed(&Memory { limit: gib, free: 0 }, 10 << 20, 600 << 20, 512 << 20, 16 << 20), 16 << 20);
        // Memory to spare, but the broker's resident memory 100 MiB over the setting plus its margin:
        // the caches give that back.
        let resident = 12 * gib + RSS_ABOVE_SETTING + (100 << 20);
        assert_eq!(allowed(&roomy, 12 * gib, resident, 12 * gib, 16 << 20), 12 * gib - (100 << 20));
    }

    #[test]
    fn this_machines_memory_reads() {
        let m = Memory::read().expect("/proc/meminfo");
        assert!(m.limit > 0 && m.free <= m.limit, "{m:?}");
    }
}
