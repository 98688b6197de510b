//! Transactions in the log: markers, the last stable offset, the aborted transactions index, and
//! all three across a restart and a damaged `.txnindex`.

use super::super::batch;
use super::super::control::Marker;
use super::super::{Log, LogConfig, LogError};
use super::{as_producer, files_with, open, small_cfg, temp_dir};

fn txn_batch(pid: i64, seq: i32) -> bytes::Bytes {
    as_producer(batch::build(1, 200, 1_000), pid, 0, seq, true).into()
}

/// Appends `pid`'s transactional batch, asking no coordinator (the test is one).
fn send(log: &Log, pid: i64, seq: i32) -> u64 {
    let guard = log.txn_guard(pid);
    let bytes = txn_batch(pid, seq);
    let len = bytes.len();
    log.append_in_txn(bytes, len, guard).unwrap().base_offset
}

async fn end(log: &Log, pid: i64, commit: bool) -> u64 {
    let a = log.append_marker(pid, 0, Marker { commit, coordinator_epoch: 0 }, 1_000).unwrap();
    log.wait_durable(a.last_offset).await.unwrap();
    a.base_offset
}

#[test]
fn the_last_stable_offset_and_aborted_transactions_survive_restarts_and_a_damaged_index() {
    let dir = temp_dir("txn");
    let cfg = LogConfig { segment_bytes: 4096, ..small_cfg() };
    let (aborted, open_first, end_offset) = shards::run_local(async {
        let log = open(&dir, cfg.clone()).await;
        let a = send(&log, 1, 0);
        let b = send(&log, 2, 0);
        let plain = log.append(batch::build(1, 100, 1_000).into()).unwrap();
        log.wait_durable(plain.last_offset).await.unwrap();
        assert_eq!(log.offsets().last_stable, a, "producer 1's transaction is open");
        assert!(matches!(log.append(txn_batch(3, 0)), Err(LogError::InvalidTxnState)), "no coordinator's word");
        let control = batch::frame(&[], 1, 0, batch::ATTR_CONTROL);
        assert!(matches!(log.append(control.into()), Err(LogError::InvalidRecord(_))), "producers send no control batch");
        end(&log, 1, true).await;
        assert_eq!(log.offsets().last_stable, b, "producer 2's is still open");
        // Producer 2's transaction spans segments before it is aborted.
        for seq in 1..40 {
            send(&log, 2, seq);
        }
        let abort_at = end(&log, 2, false).await;
        let o = log.offsets();
        assert_eq!(o.last_stable, o.high_watermark, "nothing open");
        assert!(log.stats().0 >= 3, "the transaction spans segments: {:?}", log.stats());
        assert_eq!(log.aborted_transactions(0, o.log_end), vec![(2, b)]);
        assert_eq!(log.aborted_transactions(abort_at - 3, abort_at - 2), vec![(2, b)], "one that began segments before");
        assert_eq!(log.aborted_transactions(abort_at + 1, o.log_end), vec![]);
        // A third transaction is left open across the restart.
        let c = send(&log, 3, 0);
        log.wait_durable(c).await.unwrap();
        log.close().await.unwrap();
        ((2, b), c, log.offsets().log_end)
    });
    for damage in [false, true] {
        if damage {
            // Every `.txnindex` garbled: the walk starts before them, whatever the snapshots say.
            for p in files_with(&dir, "txnindex") {
                std::fs::write(p, [9u8; 20]).unwrap();
            }
        }
        shards::run_local(async {
            let log = open(&dir, cfg.clone()).await;
            let o = log.offsets();
            assert_eq!((o.log_end, o.last_stable), (end_offset, open_first), "damage {damage}: the open transaction pins the LSO");
            assert_eq!(log.aborted_transactions(0, o.log_end), vec![aborted], "damage {damage}");
            assert!(log.txn_epoch(3).is_some());
            if damage {
                end(&log, 3, true).await;
                assert_eq!(log.offsets().last_stable, log.offsets().high_watermark);
            }
            log.close().await.unwrap();
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
