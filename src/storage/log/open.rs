//! Opening a partition's log: recovery of its segments, producers and checkpoints, and its writer task.

use super::*;
use crate::storage::checkpoint;

impl Log {
    /// Opens (recovering) or creates the log in `dir` and starts its writer task on this shard.
    pub async fn open(dir: &Path, cfg: LogConfig) -> Result<Rc<Log>, LogError> {
        let _turn = crate::storage::file_budget::opening().await;
        assert!(cfg.segment_bytes <= u64::from(u32::MAX), "positions are u32 in the index");
        if !fs::exists(dir) {
            fs::create_dir_all(dir).await?;
            if let Some(parent) = dir.parent() {
                fs::sync_dir(parent).await?;
            }
        }
        fs::prime_direct_io(dir).await?;
        let names = fs::list(dir)?;
        // A cleaning pass a crash interrupted before its rename: the segment it cleaned is whole.
        for name in names.iter().filter(|name| compact::is_leftover(name)) {
            fs::remove_file(&dir.join(name)).await?;
        }
        let mut bases: Vec<u64> = names.iter().filter_map(|name| crate::storage::segment::stem_offset(name, ".log")).collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut scanned = 0;
        // The last segment's report: its zeros and last partial block (a fresh log has neither).
        let mut last = Recovered::default();
        // A segment whose aborted transactions index is damaged: the walk at open starts there at the latest.
        let mut txn_index_damaged_from = u64::MAX;
        let recovery_point = checkpoint::read::<2>(dir, checkpoint::RECOVERY_POINT).unwrap_or([0, 0]);
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let trusted_to = if recovery_point[0] == base { recovery_point[1] } else { 0 };
            let (seg, report) = Segment::recover(dir, base, next_base, cfg.index_interval_bytes, trusted_to).await?;
            if report.bytes_cut > 0 {
                tracing::warn!(dir = %dir.display(), segment = base, bytes_cut = report.bytes_cut, "recovery cut an invalid tail");
            }
            scanned += report.batches_scanned;
            if report.txn_index_damaged {
                tracing::warn!(dir = %dir.display(), segment = base, "damaged .txnindex: its transactions are found again in the log");
                txn_index_damaged_from = txn_index_damaged_from.min(base);
            }
            last = report;
            segments.push(seg);
        }
        // DeleteRecords' start is durable; records after it may not be. A log that now ends below it
        // starts again, empty, at it (as Kafka does): no offset below it is given out again.
        let checkpointed_start = checkpoint::read::<1>(dir, checkpoint::LOG_START).map(|[o]| o);
        if let (Some(start), Some(seg)) = (checkpointed_start, segments.last()) {
            if start > seg.next_offset {
                tracing::warn!(dir = %dir.display(), log_end = seg.next_offset, log_start = start, "the log ends below its start: records after it were lost; it starts again there");
                for seg in segments.drain(..) {
                    seg.remove_files().await?;
                }
                last = Recovered::default();
            }
        }
        let fresh = segments.is_empty();
        if fresh {
            segments.push(Segment::create(dir, checkpointed_start.unwrap_or(0)).await?);
        }
        let Recovered { file_len, tail_block, trusted, .. } = last;
        let active = segments.last().expect("at least one segment");
        let (next_offset, active_base, active_size) = (active.next_offset, active.base, active.size);
        // What recovery read past the recovery point may not be durable (a crash of the process
        // keeps unsynced writes in the page cache): it is fsynced before it counts as durable.
        let (durable, durable_pos) = if fresh { (next_offset, 0) } else { trusted };
        // DeleteRecords may have moved the start past the first segment's base.
        let log_start = checkpointed_start.unwrap_or(0).clamp(segments[0].base, next_offset);
        let (producers, snapshot_at, ended) =
            producers::rebuild(dir, &mut segments, log_start, next_offset, txn_index_damaged_from).await?;
        // Markers past what is durable keep their transactions unstable until the writer fsynced them.
        let unstable_txns = ended.iter().filter(|t| t.marker_offset >= durable).map(|t| (t.first_offset, t.marker_offset)).collect();
        let first_dirty = checkpoint::read::<1>(dir, checkpoint::CLEANER_OFFSET).map_or(0, |[o]| o);
        let hw_known = checkpoint::read::<1>(dir, checkpoint::HIGH_WATERMARK).map(|[o]| o.min(next_offset));
        if hw_known.is_some() {
            fs::remove_file(&dir.join(checkpoint::HIGH_WATERMARK)).await?;
        }
        // Epochs starting at or past the log end began with batches a crash took, or none.
        let mut epochs = fs::read(&LeaderEpochs::path(dir)).ok().and_then(|text| LeaderEpochs::decode(&text)).unwrap_or_default();
        epochs.truncate_from(next_offset);
        let next_prealloc_end = active_size.next_multiple_of(BLOCK_BYTES).max(file_len / BLOCK_BYTES * BLOCK_BYTES);
        tracing::debug!(dir = %dir.display(), segments = segments.len(), next_offset, scanned, "log opened");
        let log = Rc::new_cyclic(|me| Log {
            me: me.clone(),
            shard: shards::current_shard(),
            state: RefCell::new(State {
                dir: dir.to_path_buf(),
                log_start,
                log_start_durable: checkpointed_start.unwrap_or(0).min(log_start),
                cfg,
                segments,
                next_offset,
                written: next_offset,
                durable,
                replicated_hw: None,
                hw_known,
                stamp: None,
                epochs,
                epochs_changed: 0,
                epochs_saved: 0,
                durable_end: (active_base, durable_pos),
                recovery_point: (recovery_point[0], recovery_point[1]),
                gap_end: None,
                dir_unsynced: !fresh,
                cache: VecDeque::new(),
                cache_bytes: 0,
                noted_in_read_cache: false,
                queued: 0,
                queued_bytes: 0,
                slab: BytesMut::new(),
                prealloc_end: next_prealloc_end,
                window_bytes: 0,
                last_window_bytes: 0,
                window_writes: 0,
                last_window_writes: 0,
                window_start: Instant::now(),
                tail_block,
                unflushed_messages: next_offset - durable,
                last_flush: Instant::now(),
                producers: producers.clone(),
                producers_written: producers,
                unstable_txns,
                snapshot_at,
                prealloc_paused_until: None,
                rolling: false,
                writer_running: true,
                failed: None,
                disk_failed: false,
                failures: 0,
                closing: false,
                last_used: Instant::now(),
                reading: VecDeque::new(),
                last_file_read: None,
                reported_damage: Vec::new(),
                first_dirty,
            }),
            appended: Notify::default(),
            progressed: Notify::default(),
            writer_wake: Notify::default(),
            checkpointing: shards::Turn::default(),
            segment_files: shards::Turn::default(),
        });
        if log.state().segments.iter().any(Segment::holds_files) {
            crate::storage::file_budget::note_holder(&log.me); // a new segment, open for its writer
        }
        let writer = log.clone();
        shards::spawn_local(async move {
            writer.clone().write_loop().await;
            writer.state().writer_running = false;
            writer.progressed.notify_all();
        })
        .detach();
        Ok(log)
    }
}
