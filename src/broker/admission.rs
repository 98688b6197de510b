//! Whether the broker can take more partitions: refused before anything is written, so that a
//! burst of topic creations (or of auto-creations by Metadata requests for random names) meets a
//! clear error instead of leaving the broker out of file descriptors, unable to accept a connection
//! or to restart.
//!
//! Partitions: `max.partitions`, the operator's bound on how many exist. Open files: the
//! descriptors left under the process's limit, less a reserve for connections and the broker's own
//! files, split over the shards: each shard's logs keep their files within its share, closing the
//! least recently used ones' (`storage::file_budget`), so it bounds the files open at once, not the
//! partitions.

use super::errors;
use super::topics::Refusal;
use crate::storage::segment::FILES_PER_SEGMENT;

/// File descriptors kept for connections, offsets files and the catalog: this share of the limit,
/// and at least `FD_RESERVE_MIN` (half the limit if that is less).
const FD_RESERVE_SHARE: usize = 5;
const FD_RESERVE_MIN: usize = 1024;

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

/// Files the logs of one of `shards` shards may hold open: its share of the descriptors left after
/// the reserve. A shard counts its own (`storage::file_budget`), so that one shard's logs never
/// leave another without room.
pub fn log_files_per_shard(shards: usize) -> usize {
    let limit = open_files_limit();
    (limit.saturating_sub(reserve(limit)) / shards.max(1)).max(FILES_PER_SEGMENT)
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
    fn the_reserve_is_kept_from_the_logs() {
        let limit = open_files_limit();
        assert!(reserve(limit) >= FD_RESERVE_MIN.min(limit / 2) && reserve(limit) >= limit / FD_RESERVE_SHARE);
        assert!(log_files_per_shard(2) * 2 <= limit - reserve(limit) || limit < 2 * FILES_PER_SEGMENT);
    }
}
