//! The log's share of the shard's batch cache: recent batches kept in memory (copied into slabs,
//! or large ones by reference), read from there, and evicted oldest first (`read_cache`).

use super::*;

/// Batches at least this big are kept by reference to the appender's buffer rather than copied:
/// a copy of a large batch costs as much as writing it (measured: one copy fewer took 1 MiB
/// appends from 66% of fio's write rate to 84–113%). Smaller ones are copied, so that a small
/// batch never holds a large request buffer in memory.
pub const SHARED_BATCH_MIN_BYTES: usize = 256 << 10;
/// Small batches are copied into slabs of this size or less (a share of the cache budget): one
/// allocation, and one shared reference count, for many batches. Per-batch allocations and
/// reference counts took a third of the time of 1 KiB appends. A batch over a quarter of the slab
/// gets an allocation of its own, so an abandoned slab's unused end is under a quarter of it.
const SLAB_BYTES_MAX: usize = 256 << 10;
const SLAB_BYTES_MIN: usize = 4 << 10;

/// How `State::queue` keeps a batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// A copy (small batches of a request: they would keep the whole request's buffer).
    Copy,
    /// Large batches by reference (`Held::Shared`), small ones copied.
    LargeShared,
    /// By reference, as they are: a follower's batches, which carry their offsets and epoch and
    /// come in buffers of their own (the leader's cache, or its read).
    AsSent,
}

/// A batch in memory, with its assigned base offset.
#[derive(Clone)]
pub(super) enum Held {
    /// The batch whole: a copy with the base offset patched in, or a replica's as it came.
    Copied(Bytes),
    /// The appender's bytes by reference, which stay as they came: `head` (the base offset
    /// assigned, the length, the leader epoch stamped) replaces their first 16 bytes wherever
    /// the batch goes.
    Shared { head: Bytes, rest: Bytes },
}

impl Held {
    pub(super) fn len(&self) -> usize {
        match self {
            Held::Copied(b) => b.len(),
            Held::Shared { head, rest } => head.len() + rest.len(),
        }
    }

    /// The batch's bytes in order, as reference-counted slices.
    pub(super) fn parts(&self) -> impl Iterator<Item = &Bytes> {
        let (first, second) = match self {
            Held::Copied(b) => (b, None),
            Held::Shared { head, rest } => (head, Some(rest)),
        };
        std::iter::once(first).chain(second)
    }
}

/// A recent batch kept in memory, with its assigned offsets in `info`.
pub(super) struct Cached {
    pub(super) held: Held,
    pub(super) info: BatchInfo,
    /// What it says, if it is a transaction marker.
    pub(super) marker: Option<Marker>,
    /// When it was appended (`read_cache::now_ms`): the shard evicts the oldest first.
    pub(super) appended_ms: u64,
}

impl Cached {
    pub(super) fn base(&self) -> u64 {
        self.info.base_offset as u64
    }

    /// The offset after the batch.
    pub(super) fn next(&self) -> u64 {
        self.base() + u64::from(self.info.offset_count)
    }
}

impl State {
    /// Forgets cached batches wholly below the log start (retention, DeleteRecords).
    pub(super) fn drop_cache_below_start(&mut self) {
        self.drop_cache_below(self.log_start);
    }

    /// Forgets cached batches wholly below `offset` (written ones: those are in closed segments).
    pub(super) fn drop_cache_below(&mut self, offset: u64) {
        while self.cache.front().is_some_and(|c| c.next() <= offset && c.next() <= self.written) {
            self.pop_cached_front();
        }
    }

    pub(super) fn pop_cached_front(&mut self) {
        if let Some(c) = self.cache.pop_front() {
            self.uncache(&c);
        }
    }

    pub(super) fn uncache(&mut self, c: &Cached) {
        self.cache_bytes -= c.held.len();
        read_cache::remove(c.held.len());
    }

    /// The writer's queue: cached batches not yet written, oldest first.
    pub(super) fn unwritten(&self) -> impl Iterator<Item = &Cached> {
        self.cache.range(self.cache.len() - self.queued..)
    }

    /// Queues the batch at `at` in `records` for the writer at `info.base_offset` (the caller
    /// checked it may go there) and records its producer's progress.
    /// A leader's log stamps its epoch in the batch; a follower's keeps the leader's.
    pub(super) fn queue(&mut self, records: &Bytes, at: usize, info: BatchInfo, marker: Option<Marker>, keep: Keep, appended_ms: u64) {
        let base = info.base_offset as u64;
        let info = BatchInfo { leader_epoch: self.stamp.unwrap_or(info.leader_epoch), ..info };
        let held = if keep == Keep::AsSent {
            Held::Copied(records.slice(at..at + info.bytes))
        } else if keep == Keep::LargeShared && info.bytes >= SHARED_BATCH_MIN_BYTES {
            let mut head = BytesMut::from(&records[at..at + batch::LEADER_EPOCH_END]);
            batch::set_base_offset(&mut head, base);
            batch::set_leader_epoch(&mut head, info.leader_epoch);
            Held::Shared { head: head.freeze(), rest: records.slice(at + batch::LEADER_EPOCH_END..at + info.bytes) }
        } else {
            Held::Copied(self.copy_to_slab(&records[at..at + info.bytes], base, info.leader_epoch))
        };
        if self.epochs.assign(info.leader_epoch, base) {
            self.epochs_changed += 1;
        }
        self.producers.record(&info, marker);
        self.next_offset = base + u64::from(info.offset_count);
        self.cache_bytes += info.bytes;
        read_cache::add(info.bytes);
        self.queued += 1;
        self.queued_bytes += info.bytes;
        self.cache.push_back(Cached { held, info, marker, appended_ms });
    }

    /// A copy of `batch` with `base_offset` patched in: in the current slab or a new one, or on its
    /// own if it is large for a slab.
    pub(super) fn copy_to_slab(&mut self, batch: &[u8], base_offset: u64, leader_epoch: i32) -> Bytes {
        let slab_bytes = (read_cache::budget() / 8).clamp(SLAB_BYTES_MIN, SLAB_BYTES_MAX);
        let mut copy = if batch.len() > slab_bytes / 4 {
            BytesMut::from(batch)
        } else {
            if self.slab.capacity() < batch.len() {
                self.slab = BytesMut::with_capacity(slab_bytes);
            }
            self.slab.extend_from_slice(batch);
            self.slab.split()
        };
        batch::set_base_offset(&mut copy, base_offset);
        batch::set_leader_epoch(&mut copy, leader_epoch);
        copy.freeze()
    }

    pub(super) fn read_cache(&self, offset: u64, max_bytes: usize, hw: u64) -> (Vec<Chunk>, u64) {
        let first = self.cache.partition_point(|c| c.next() <= offset);
        let mut out = Vec::new();
        let (mut total, mut next) = (0, offset);
        for c in self.cache.iter().skip(first) {
            if c.base() >= hw || (!out.is_empty() && total + c.held.len() > max_bytes) {
                break;
            }
            total += c.held.len();
            next = c.next();
            out.extend(c.held.parts().cloned().map(Chunk::Memory));
        }
        (out, next)
    }

    /// The oldest cached batch that may be evicted: a written one (the writer and readers of the
    /// tail rely on the others).
    pub(super) fn oldest_evictable(&self) -> Option<&Cached> {
        self.cache.front().filter(|c| c.next() <= self.written)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        read_cache::remove(self.cache_bytes);
    }
}

impl Log {
    /// Tells the shard's cache that this log holds batches, once.
    pub(super) fn note_cached(&self, s: &mut State) {
        if !s.noted_in_read_cache {
            s.noted_in_read_cache = true;
            read_cache::note_holder(&self.me);
        }
    }

    /// When the oldest batch it could evict was appended (`read_cache::trim`).
    pub(in crate::storage) fn oldest_evictable_ms(&self) -> Option<u64> {
        self.state().oldest_evictable().map(|c| c.appended_ms)
    }

    /// Evicts written batches appended before `before_ms`, oldest first, while `more` says so.
    pub(in crate::storage) fn evict_appended_before(&self, before_ms: u64, more: impl Fn() -> bool) {
        let mut s = self.state();
        while s.oldest_evictable().is_some_and(|c| c.appended_ms < before_ms) && more() {
            s.pop_cached_front();
        }
    }
}
