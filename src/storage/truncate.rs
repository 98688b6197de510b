//! Cutting a replica's log back (Kafka's `truncateTo` / `truncateFullyAndStartAt`): a follower
//! whose copy goes past where its leader's epoch ended drops what follows, and one behind its
//! leader's log start starts again there. Both run on a log that is not open: they change its
//! files so that opening it (recovery) finds the log they describe, indexes, producer state, leader
//! epochs and transactions included — the rare path reuses recovery instead of a second way to
//! change an open log. A crash part way leaves files that recovery reads as a log cut somewhere
//! between the old end and `offset`, which the follower's next fetch cuts again.

use super::checkpoint;
use super::leader_epochs::LeaderEpochs;
use super::segment::{self, Segment};
use super::txn_index::TxnIndex;
use shards::fs::{self, ScanFile};
use std::path::Path;

/// Removes every batch at or past `offset` from the closed log in `dir` (a batch holding
/// `offset` goes whole: the cut is at a batch boundary, as the leader's end always is). A cut below
/// the first segment empties the log and starts it at `offset` (Kafka's `truncateTo`): the log
/// would otherwise still end past it, and its follower would cut again and again.
pub async fn truncate_closed(dir: &Path, offset: u64) -> std::io::Result<()> {
    let mut bases: Vec<u64> = fs::list(dir)?.iter().filter_map(|n| segment::stem_offset(n, ".log")).collect();
    bases.sort_unstable();
    let Some(&first) = bases.first().filter(|&&first| first <= offset) else { return restart_at(dir, offset).await };
    // Whole segments past the cut go, newest first: a crash leaves a shorter log, never a hole. And
    // durably, before the last one left is cut: a power loss after that cut must not bring back a
    // segment after it, which would leave offsets with no batch between the two.
    let past: Vec<u64> = bases.iter().rev().copied().filter(|&b| b >= offset && b > first).collect();
    for &base in &past {
        remove_segment(dir, base).await?;
    }
    if !past.is_empty() {
        fs::sync_dir(dir).await?;
    }
    let last = bases.iter().rev().copied().find(|&b| b < offset).unwrap_or(first);
    let stem = segment::file_stem(last);
    let log = dir.join(format!("{stem}.log"));
    let file = ScanFile::open(&log)?;
    let (batches, valid_end) = super::scan::scan(&file, 0, file.size()?);
    let cut =
        batches.iter().find(|(_, info)| info.base_offset as u64 + u64::from(info.offset_count) > offset).map_or(valid_end, |(pos, _)| *pos);
    drop(file);
    fs::set_len(&log, cut).await?;
    fs::sync_file(&log).await?;
    // Its indexes and the recovery point described the longer file: recovery rebuilds the one and
    // validates the whole segment without the other.
    Segment::remove_offset_indexes(dir, last).await?;
    fs::remove_file(&dir.join(checkpoint::RECOVERY_POINT)).await?;
    fs::remove_file(&dir.join(checkpoint::CLEANER_OFFSET)).await?;
    fs::sync_dir(dir).await
}

/// Empties the closed log in `dir` and makes it start at `offset` (its copy is wholly below its
/// leader's log start). Its leader epochs go too (Kafka's `truncateFullyAndStartAt`): they would
/// describe batches it no longer holds.
pub async fn restart_at(dir: &Path, offset: u64) -> std::io::Result<()> {
    checkpoint::write(dir, checkpoint::LOG_START, &[offset]).await?;
    // With no segment, recovery starts the log at its checkpointed start.
    let names = fs::list(dir)?;
    for base in names.iter().filter_map(|n| segment::stem_offset(n, ".log")) {
        remove_segment(dir, base).await?;
    }
    // Last: a crash before leaves batches whose epochs the next reconciliation still compares.
    fs::remove_file(&LeaderEpochs::path(dir)).await?;
    fs::sync_dir(dir).await
}

async fn remove_segment(dir: &Path, base: u64) -> std::io::Result<()> {
    let stem = segment::file_stem(base);
    Segment::remove_offset_indexes(dir, base).await?;
    fs::remove_file(&TxnIndex::path_for(dir, &stem)).await?;
    fs::remove_file(&dir.join(format!("{stem}.log"))).await
}
