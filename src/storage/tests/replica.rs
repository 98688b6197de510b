//! A replica's log: copies of the leader's batches, leader epochs, and the cuts a follower makes
//! to follow its leader (`storage::truncate`), checked through recovery.

use super::*;
use crate::storage::truncate;

#[test]
fn a_followers_copy_holds_the_leaders_bytes_and_epochs() {
    let (ldir, fdir) = (temp_dir("replica-leader"), temp_dir("replica-follower"));
    shards::run_local(async {
        let leader = open(&ldir, small_cfg()).await;
        let follower = open(&fdir, small_cfg()).await;
        leader.lead(3);
        append_all(&leader, &[(3, 100), (2, 5000), (1, 40)]);
        leader.lead(5);
        let sizes: Vec<(i32, usize)> = (0..30).map(|i| (1 + i % 4, 30 + i as usize * 20)).collect();
        append_all(&leader, &sizes);
        let end = leader.offsets().log_end;
        leader.wait_durable(end - 1).await.unwrap();
        let mut at = 0;
        while at < end {
            for bytes in leader.read_replica(at, 4096).await.unwrap() {
                at = follower.append_replica(bytes).unwrap();
            }
        }
        follower.wait_durable(end - 1).await.unwrap();
        assert_eq!(read_bytes(&follower, 0, 1 << 20).await, read_bytes(&leader, 0, 1 << 20).await);
        for log in [&leader, &follower] {
            assert_eq!(log.end_offset_for(3), (3, 6));
            assert_eq!(log.end_offset_for(4), (3, 6));
            assert_eq!(log.end_offset_for(5), (5, end as i64));
            assert_eq!((log.epoch_at(0), log.epoch_at(7)), (Some(3), Some(5)));
        }
        // A batch below the copy's end is not taken twice.
        let again = leader.read_replica(0, 1).await.unwrap().remove(0);
        assert!(follower.append_replica(again).is_err());
        follower.close().await.unwrap();
        // The epochs survive a restart (the checkpoint was written before their batches).
        let reopened = open(&fdir, small_cfg()).await;
        assert_eq!((reopened.end_offset_for(3), reopened.latest_epoch()), ((3, 6), Some(5)));
    });
}

#[test]
fn a_follower_takes_the_gaps_compaction_left_between_batches() {
    let dir = temp_dir("replica-gaps");
    shards::run_local(async {
        let follower = open(&dir, small_cfg()).await;
        // A compacted leader's log from its start: offsets 0..90 and 91..200 are gone.
        let at = |base: u64| {
            let mut b = batch::build(1, 50, 1_000);
            batch::set_base_offset(&mut b, base);
            batch::set_crc(&mut b);
            Bytes::from(b)
        };
        assert_eq!(follower.append_replica(at(90)).unwrap(), 91);
        assert_eq!(follower.append_replica(Bytes::from([at(200).to_vec(), at(201).to_vec()].concat())).unwrap(), 202);
        follower.wait_durable(201).await.unwrap();
        assert_eq!(follower.offsets().log_end, 202);
        assert_eq!(read_all(&follower, 0).await, vec![(90, 1), (200, 1), (201, 1)]);
        follower.close().await.unwrap();
        // The gaps are below the recovery point the close wrote, however little was written: a
        // restart keeps the copy whole (a gap past it reads as a torn tail).
        let reopened = open(&dir, small_cfg()).await;
        assert_eq!(reopened.offsets().log_end, 202);
        assert_eq!(read_all(&reopened, 0).await, vec![(90, 1), (200, 1), (201, 1)]);
        // A batch further from the segment's base than 32 bits of relative offset: a segment of
        // its own, as Kafka rolls (the index's relative offsets are 32 bits).
        let far = 10 + (1u64 << 32);
        assert_eq!(reopened.append_replica(at(far)).unwrap(), far + 1);
        reopened.wait_durable(far).await.unwrap();
        assert_eq!(read_all(&reopened, 201).await, vec![(201, 1), (far, 1)]);
        reopened.close().await.unwrap();
        let again = open(&dir, small_cfg()).await;
        assert_eq!(again.offsets().log_end, far + 1);
        assert_eq!(read_all(&again, 0).await, vec![(90, 1), (200, 1), (201, 1), (far, 1)]);
    });
}

#[test]
fn a_follower_takes_a_batch_compaction_thinned() {
    let dir = temp_dir("replica-thinned");
    shards::run_local(async {
        let follower = open(&dir, small_cfg()).await;
        // One record left of three offsets, as a leader's cleaning pass leaves a batch.
        let mut thinned = batch::build(1, 50, 1_000);
        thinned[23..27].copy_from_slice(&2i32.to_be_bytes());
        batch::set_crc(&mut thinned);
        assert_eq!(follower.append_replica(thinned.clone().into()).unwrap(), 3);
        follower.wait_durable(2).await.unwrap();
        assert_eq!(follower.offsets().log_end, 3);
        assert_eq!(follower.read_replica(0, 1).await.unwrap().concat(), thinned);
    });
}

#[test]
fn a_cut_log_recovers_shorter_with_its_producers_and_epochs() {
    let dir = temp_dir("replica-cut");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        log.lead(1);
        let mut seq = 0;
        for i in 0..60 {
            let count = 1 + i % 3;
            log.append(as_idempotent(batch::build(count, 200, 1_000), 9, seq).into()).unwrap();
            seq += count;
            if i == 30 {
                log.lead(2);
            }
        }
        let end = log.offsets().log_end;
        log.wait_durable(end - 1).await.unwrap();
        let batches = read_all(&log, 0).await;
        assert!(batches.iter().map(|b| b.0).max().unwrap() > 40, "several segments: {batches:?}");
        log.close().await.unwrap();
        // Cut inside a batch of epoch 2: that batch goes whole.
        let (base, count) = batches.iter().copied().find(|&(b, c)| b + u64::from(c) > 70 && c > 1).unwrap();
        truncate::truncate_closed(&dir, base + 1).await.unwrap();
        let log = open(&dir, small_cfg()).await;
        assert_eq!(log.offsets().log_end, base);
        assert_eq!(read_all(&log, 0).await, batches.iter().copied().filter(|b| b.0 < base).collect::<Vec<_>>());
        assert_eq!(log.end_offset_for(1).0, 1);
        // The producer goes on from the first sequence the cut took away; a retry of a kept batch is a duplicate.
        let next_seq = batches.iter().take_while(|b| b.0 < base).map(|b| b.1 as i32).sum::<i32>();
        let a = log.append(as_idempotent(batch::build(1, 10, 1_000), 9, next_seq).into()).unwrap();
        assert_eq!(a.base_offset, base);
        let kept = *batches.iter().take_while(|b| b.0 < base).last().unwrap();
        let dup = log.append(as_idempotent(batch::build(kept.1 as i32, 200, 1_000), 9, next_seq - kept.1 as i32).into()).unwrap();
        assert_eq!(dup.base_offset, kept.0);
        assert!(count > 1);
        log.close().await.unwrap();
        // Started again past its end (behind the leader's log start): empty there.
        truncate::restart_at(&dir, 5_000).await.unwrap();
        let log = open(&dir, small_cfg()).await;
        let o = log.offsets();
        assert_eq!((o.log_start, o.log_end), (5_000, 5_000));
        assert!(read_all(&log, 5_000).await.is_empty());
    });
}

#[test]
fn a_replicas_high_watermark_survives_a_clean_close_once() {
    let dir = temp_dir("replica-hw");
    shards::run_local(async {
        let log = open(&dir, small_cfg()).await;
        append_all(&log, &[(4, 100), (6, 100)]);
        log.wait_durable(9).await.unwrap();
        log.set_replicated_hw(Some(4));
        assert_eq!(log.offsets().high_watermark, 4);
        log.close().await.unwrap();
        let log = open(&dir, small_cfg()).await;
        assert_eq!(log.known_high_watermark(), Some(4));
        // Read once: a crash from now on must not find a value that later truncation made stale.
        log.close().await.unwrap();
        let log = Log::open(&dir, small_cfg()).await.unwrap();
        assert_eq!(log.known_high_watermark(), None);
        // A follower's copy knows each high watermark its leader gave it, for when it leads.
        log.set_replicated_hw(Some(7));
        log.set_replicated_hw(None);
        assert_eq!(log.known_high_watermark(), Some(7));
    });
}
