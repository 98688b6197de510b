//! The shard's batch cache: one budget over all its logs, the batches appended longest ago evicted
//! first whichever log holds them, a smaller budget taking effect at once, and a log's bytes given
//! back when it goes.

use super::*;
use crate::storage::Chunk;

/// Waits until the shard's clock has moved on, so that later appends are younger.
fn next_ms() {
    let now = read_cache::now_ms();
    while read_cache::now_ms() == now {
        std::hint::spin_loop();
    }
}

#[test]
fn the_shard_evicts_its_oldest_batches_first_whichever_log_holds_them() {
    let (old_dir, new_dir) = (temp_dir("cache-old"), temp_dir("cache-new"));
    shards::run_local(async {
        read_cache::set_budget(1 << 20);
        let cfg = LogConfig { flush: FlushPolicy::Never, ..LogConfig::default() };
        let (old, new) = (open(&old_dir, cfg.clone()).await, open(&new_dir, cfg).await);
        // ~600 KiB to one log, then ~600 KiB to the other a moment later: over the budget.
        append_all(&old, &vec![(1, 10_000); 60]);
        old.wait_written(59).await.unwrap();
        let all_of_old = old.stats().2;
        assert_eq!(read_cache::held(), all_of_old);
        next_ms();
        append_all(&new, &vec![(1, 10_000); 60]);
        new.wait_written(59).await.unwrap();
        let (old_cached, new_cached) = (old.stats().2, new.stats().2);
        assert_eq!(new_cached, all_of_old, "the younger log keeps all its batches");
        assert!(old_cached < all_of_old, "the older one gave some up");
        assert_eq!(read_cache::held(), old_cached + new_cached);
        assert!(read_cache::held() <= 1 << 20);
        // What was evicted is read from the file; the rest from memory.
        assert!(matches!(old.read(0, 1).await.unwrap().chunks[..], [Chunk::File(_)]));
        assert!(matches!(old.read(59, 1).await.unwrap().chunks[..], [Chunk::Memory(_)]));
        assert!(matches!(new.read(0, 1).await.unwrap().chunks[..], [Chunk::Memory(_)]));
        // A smaller budget evicts at once: all of the older log's first.
        read_cache::set_budget(300 << 10);
        assert!(read_cache::held() <= 300 << 10);
        assert_eq!(old.stats().2, 0);
        assert!(new.stats().2 > 0);
        // A log that goes gives its bytes back.
        old.close().await.unwrap();
        new.close().await.unwrap();
        drop((old, new));
        assert_eq!(read_cache::held(), 0);
    });
    for dir in [old_dir, new_dir] {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
