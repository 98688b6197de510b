//! Whether the broker can take more partitions: refused before anything is written, so that a
//! burst of topic creations (or of auto-creations by Metadata requests for random names) meets a
//! clear error instead of leaving the broker out of file descriptors, unable to accept a connection
//! or to restart.
//!
//! Partitions: `max.partitions`, the operator's bound on how many exist. Open partitions: the file
//! descriptors left under the process's limit (each holds `FILES_PER_SEGMENT` per segment), less a
//! reserve for connections and the broker's own files; `partitions` closes idle ones to stay within
//! it, so it bounds how many are open at once, not how many exist.

use super::errors;
use super::topics::Refusal;
use crate::storage::segment::FILES_PER_SEGMENT;
use std::cell::Cell;

/// File descriptors kept for connections, offsets files and the catalog: this share of the limit,
/// and at least `FD_RESERVE_MIN` (half the limit if that is less).
const FD_RESERVE_SHARE: usize = 5;
const FD_RESERVE_MIN: usize = 1024;
/// Opening partitions, the open files are counted again after this many (each shard adds
/// `FILES_PER_SEGMENT` per partition to its last count in between), and after every refusal.
const RECOUNT_EVERY: u32 = 64;

thread_local! {
    /// (open files by the last count plus what this shard opened since, partitions opened since).
    static ESTIMATE: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

fn reserve(limit: usize) -> usize {
    (limit / FD_RESERVE_SHARE).max(FD_RESERVE_MIN.min(limit / 2))
}

/// The process's limit on open files (its soft `RLIMIT_NOFILE`).
pub fn open_files_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Files this process has open now.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Refuses `adding` partitions to a broker that has `existing`, with `max.partitions` = `max`.
pub fn admit_partitions(existing: usize, adding: usize, max: usize) -> Result<(), Refusal> {
    if existing + adding > max {
        return Err((
            errors::POLICY_VIOLATION,
            format!("{adding} more partitions would pass the broker's max.partitions ({max}); it has {existing}"),
        ));
    }
    Ok(())
}

/// Partitions one of `shards` shards keeps open at most: its share of the descriptors left after
/// the reserve, at `FILES_PER_SEGMENT` each. A shard counts its own, so that one shard's open
/// partitions never leave another without room.
pub fn open_partitions_per_shard(shards: usize) -> usize {
    let limit = open_files_limit();
    (limit.saturating_sub(reserve(limit)) / FILES_PER_SEGMENT / shards.max(1)).max(1)
}

/// Whether one more partition can be opened without eating into the reserve kept for
/// connections; if not, `partitions` closes idle ones first, and a partition that still finds no
/// room is offline rather than the broker out of descriptors.
pub fn room_to_open_partition() -> Result<(), String> {
    let (mut open, mut since) = ESTIMATE.with(|e| e.get());
    if since == 0 || since >= RECOUNT_EVERY {
        (open, since) = (open_files(), 0);
    }
    let limit = open_files_limit();
    let reserve = reserve(limit);
    if open + FILES_PER_SEGMENT + reserve > limit {
        ESTIMATE.with(|e| e.set((open, 0)));
        return Err(format!("{open} files open of the limit of {limit}, {reserve} of them kept for connections"));
    }
    ESTIMATE.with(|e| e.set((open + FILES_PER_SEGMENT, since + 1)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_refused_past_the_configured_maximum() {
        assert!(admit_partitions(10, 5, 15).is_ok());
        let (code, msg) = admit_partitions(10, 6, 15).unwrap_err();
        assert_eq!(code, errors::POLICY_VIOLATION);
        assert!(msg.contains("max.partitions (15)"), "{msg}");
    }

    #[test]
    fn room_to_open_is_refused_within_the_reserve() {
        let limit = open_files_limit();
        assert!(reserve(limit) >= FD_RESERVE_MIN.min(limit / 2) && reserve(limit) >= limit / FD_RESERVE_SHARE);
        ESTIMATE.with(|e| e.set((limit, 1)));
        assert!(room_to_open_partition().is_err(), "no room when the estimate says the limit is reached");
        assert!(room_to_open_partition().is_ok(), "a refusal recounts: this test process has few files open");
    }
}
