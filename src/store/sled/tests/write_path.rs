//! The write path: group commit, the log replayed at start, and the applier.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&config(&dir)).unwrap();
    let before = store.commit_counts();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                record(
                    &store,
                    &format!("+2782{i:07}"),
                    &format!("m{i}"),
                    Utc::now(),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.commit_counts();
    let writes = after.writes - before.writes;
    let flushes = after.flushes - before.flushes;
    assert_eq!(writes, 200, "every write waited for a flush");
    assert!(
        flushes < writes,
        "{flushes} flushes for {writes} writes: no grouping"
    );
    assert!(after.largest_batch > 1);
}

/// The log answers a write once it is on disk and applies it to sled just
/// after: a read that follows the answer must still see the write, however
/// soon it comes and whichever thread it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_an_answer_sees_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&config(&dir)).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut missed = 0;
                for i in 0..100 {
                    let customer = format!("+2782{task}{i:06}");
                    record(&store, &customer, &format!("m{task}-{i}"), Utc::now()).await;
                    if store.window(&pair(&customer)).await.unwrap().is_none() {
                        missed += 1;
                    }
                }
                missed
            })
        })
        .collect();
    let mut missed = 0;
    for task in tasks {
        missed += task.await.unwrap();
    }
    assert_eq!(missed, 0, "windows answered as opened and then not found");
}

/// What a process killed between its log's sync and its checkpoint leaves:
/// records in segments that sled may not have. They are applied at start,
/// in order, a torn record at a segment's end is ignored, and the segments
/// are gone once sled holds them.
#[tokio::test]
async fn the_log_is_replayed_at_start_and_its_torn_tail_ignored() {
    use wal::testing::{Record, segments, write_segment};
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir).path;
    let (a, b) = (pair("+27821234567"), pair("+27829876543"));
    let window = |hours| Window {
        last_inbound_at: t0() + TimeDelta::hours(hours),
        expires_at: t0() + TimeDelta::hours(hours + 24),
        free_entry_deadline: None,
        free_until: None,
    };
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        record(&store, "+27821234567", "x", t0()).await;
    }
    assert_eq!(
        segments(&path),
        Vec::<u64>::new(),
        "a clean close checkpoints"
    );
    let put = |p: &Pair, w: &Window| wal::testing::Change {
        tree: Tree::Windows,
        key: keys::pair(p),
        value: Some(encode(&WindowRecord::from(w)).into()),
    };
    // Segment 7 moves a's window on twice (the later wins) and opens b's;
    // segment 8 removes b's again, then ends in a torn record.
    write_segment(
        &path,
        7,
        &[
            Record {
                lsn: 1,
                changes: vec![put(&a, &window(1))],
            },
            Record {
                lsn: 2,
                changes: vec![put(&a, &window(2)), put(&b, &window(2))],
            },
        ],
        0,
    );
    let remove_b = wal::testing::Change {
        tree: Tree::Windows,
        key: keys::pair(&b),
        value: None,
    };
    write_segment(
        &path,
        8,
        &[Record {
            lsn: 3,
            changes: vec![remove_b],
        }],
        11,
    );
    let store = SledStore::open(&config(&dir)).unwrap();
    assert_eq!(store.window(&a).await.unwrap(), Some(window(2)));
    assert_eq!(store.window(&b).await.unwrap(), None);
    // The housekeeper may have made the spare (10) already.
    let left = segments(&path);
    assert_eq!(
        left.first(),
        Some(&9),
        "replayed segments are deleted; the new one is numbered after them: {left:?}"
    );
    assert!(left.iter().all(|&seq| seq >= 9), "{left:?}");
}

/// A group sled refuses is on disk only in the log: neither a full segment's
/// checkpoint nor a clean close may delete it, so the next start has it.
#[tokio::test]
async fn a_group_sled_refused_is_kept_in_the_log_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let p = pair("+27821234567");
    let first_segment;
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        first_segment = wal::testing::segments(&config(&dir).path)[0];
        // The store's handle on this tree now refuses every insert, as sled
        // does after an I/O error.
        assert!(store.db.drop_tree(trees::INBOUND_AGE).unwrap());
        // On disk, so answered; sled refuses it after the answer.
        record(&store, "+27821234567", "m1", t0()).await;
        assert!(store.flush().await.is_err(), "sled does not have it");
        assert!(store.check().await.is_err(), "health says so");
        assert!(store.window(&p).await.is_err(), "reads refuse, not miss");
        // Fill the first segment past its size, so it is sealed and would
        // be checkpointed.
        for i in 0..20 {
            let mut w = store.wal.section().unwrap();
            w.insert(Tree::Outbox, format!("filler-{i}"), vec![0u8; 1 << 20]);
            let lsn = w.commit();
            store.wal.durable(lsn).await.unwrap();
        }
        // The close joins the housekeeper, so any checkpoint has run.
    }
    let left = wal::testing::segments(&config(&dir).path);
    assert!(
        left.contains(&first_segment),
        "the segment with the refused group is kept: {left:?}"
    );
    // sled's own threads may still be writing out the filler and hold the
    // directory's lock for a moment (a restarted process never sees this).
    let mut tries = 0;
    let store = loop {
        match SledStore::open(&config(&dir)) {
            Ok(store) => break store,
            Err(error) if tries < 100 && error.to_string().contains("could not acquire lock") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("reopening: {error}"),
        }
    };
    let window = store.window(&p).await.unwrap();
    assert_eq!(
        window.map(|w| w.last_inbound_at),
        Some(t0()),
        "the refused group was replayed at start"
    );
}

/// A full segment's checkpoint flushes sled and deletes the segment, so it
/// must wait until sled has every group the segment holds: the applier
/// passes it on only after applying the groups handed over before it.
#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the lock holds the applier, a thread of its own that no task here waits on"
)]
async fn a_full_segment_is_checkpointed_only_once_sled_has_its_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&config(&dir)).unwrap();
    let first_segment = wal::testing::segments(&config(&dir).path)[0];
    let write = |key: &str, bytes: usize| {
        let mut w = store.wal.section().unwrap();
        w.insert(Tree::Outbox, key, vec![7u8; bytes]);
        w.commit()
    };

    let held = store.wal.hold_apply();
    // Answered (on disk in the first segment), held out of sled.
    store.wal.durable(write("first", 1 << 20)).await.unwrap();
    // Too big for what is left of the first segment: the first is sealed
    // and its checkpoint handed to the applier, behind the held group.
    store.wal.durable(write("second", 16 << 20)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        wal::testing::segments(&config(&dir).path).contains(&first_segment),
        "the sealed segment is kept while sled lacks its group"
    );

    drop(held);
    let mut waited = 0;
    while wal::testing::segments(&config(&dir).path).contains(&first_segment) {
        assert!(
            waited < 100,
            "the sealed segment is checkpointed once applied"
        );
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Checkpointed: sled has the group itself now.
    let t = store.settled().await.unwrap();
    assert_eq!(
        t.outbox.get("first").unwrap().map(|v| v.len()),
        Some(1 << 20)
    );
    assert_eq!(
        t.outbox.get("second").unwrap().map(|v| v.len()),
        Some(16 << 20)
    );
}
