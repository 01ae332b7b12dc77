//! What only sled has: group commit, its schema marker and its encoding.
//! Everything the backends share is in the conformance suite
//! (`tests/store_conformance`).

use chrono::{TimeZone, Utc};

use super::records::TemplateRecord;
use super::*;
use crate::domain::{EntryPoint, InboundKind, PhoneNumber};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn config(dir: &tempfile::TempDir) -> SledConfig {
    SledConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
    }
}

fn pair(customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

fn inbound(at: DateTime<Utc>) -> Inbound {
    Inbound {
        received_at: at,
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    }
}

/// Sweeps until nothing is left to visit; returns the inbound ids removed.
async fn sweep_inbound_ids(store: &SledStore, cutoffs: &Cutoffs) -> u64 {
    let mut removed = 0;
    loop {
        let step = store.sweep_step(cutoffs).await.unwrap();
        removed += step.removed.inbound_ids;
        if step.visited == 0 {
            return removed;
        }
    }
}

async fn record(store: &SledStore, customer: &str, id: &str, at: DateTime<Utc>) {
    let (p, inbound) = (pair(customer), inbound(at));
    store
        .record_inbound(
            &p,
            &InboundMessageId::parse(id).unwrap(),
            &inbound,
            &|seen| crate::domain::window::plan_inbound(seen, &p, &inbound, at),
        )
        .await
        .unwrap();
}

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

#[tokio::test]
async fn a_newer_schema_is_refused_and_corrupt_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        record(&store, "+27821234567", "x", t0()).await;
        // In sled before it is overwritten behind the log's back.
        store.flush().await.unwrap();
        let p = pair("+27821234567");
        store
            .settled()
            .await
            .unwrap()
            .windows
            .insert(keys::pair(&p), &[1, 0xff])
            .unwrap();
        assert!(matches!(
            store.window(&p).await,
            Err(StoreError::Corrupt { .. })
        ));
        store
            .db
            .open_tree("meta")
            .unwrap()
            .insert("schema_version", &[9])
            .unwrap();
        store.db.flush().unwrap();
    }
    let err = SledStore::open(&config(&dir))
        .err()
        .expect("newer schema refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 9,
                supported: 3
            }
        ),
        "{err}"
    );
}

/// A data directory written under the older phone-number rules: one
/// customer's window under two keys, another under the old key only, and an
/// inbound id recorded for the old form.
#[tokio::test]
async fn keys_written_under_older_phone_rules_are_merged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let h = |hours| t0() + TimeDelta::hours(hours);
    let window = |opened: DateTime<Utc>| Window {
        last_inbound_at: opened,
        expires_at: opened + TimeDelta::hours(24),
        free_entry_deadline: None,
        free_until: None,
    };
    let old_key = |customer: &str| format!("+15550001111\0{customer}").into_bytes();
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        record(&store, "+442079460958", "wamid.new", h(0)).await;
        let t = store.settled().await.unwrap();
        for (customer, opened) in [("+4402079460958", h(2)), ("+4402079460999", h(1))] {
            let key = old_key(customer);
            let w = window(opened);
            t.windows
                .insert(&key, encode(&WindowRecord::from(&w)))
                .unwrap();
            let indexed = keys::timed(w.expires_at, &key);
            packed::apply(&t.window_expiry, [(&indexed[..], &Some(IVec::default()))]).unwrap();
        }
        let mut seen = InboundRecord::new(
            &pair("+442079460958"),
            h(2),
            InboundKind::Message,
            EntryPoint::Organic,
            h(2),
        );
        seen.customer = "+4402079460958".into();
        t.inbound_ids.insert("wamid.old", encode(&seen)).unwrap();
        // As a data directory from before the rules had a version.
        let meta = store.db.open_tree("meta").unwrap();
        meta.remove("phone_rules").unwrap();
        store.db.flush().unwrap();
    }

    let store = SledStore::open(&config(&dir)).unwrap();
    assert_eq!(
        store.window(&pair("+442079460958")).await.unwrap(),
        Some(window(h(2))),
        "the two windows are one, the later kept"
    );
    assert_eq!(
        store.window(&pair("+442079460999")).await.unwrap(),
        Some(window(h(1))),
        "a window under the old key only moved"
    );
    let t = store.settled().await.unwrap();
    for customer in ["+4402079460958", "+4402079460999"] {
        assert_eq!(t.windows.get(old_key(customer)).unwrap(), None);
    }
    let indexed: Vec<Vec<u8>> = packed::from(&t.window_expiry, &[])
        .map(|entry| keys::split_timed(&entry.unwrap().0).unwrap().1.to_vec())
        .collect();
    let stored: Vec<Vec<u8>> = t
        .windows
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert_eq!(indexed.len(), 2, "one expiry entry a window");
    for key in &indexed {
        assert!(
            stored.contains(key),
            "the expiry index names stored windows"
        );
    }

    // The webhook redelivered after the upgrade is the same message.
    let p = pair("+442079460958");
    let again = inbound(h(3));
    let plan = store
        .record_inbound(
            &p,
            &InboundMessageId::parse("wamid.old").unwrap(),
            &again,
            &|seen| crate::domain::window::plan_inbound(seen, &p, &again, h(3)),
        )
        .await
        .unwrap();
    assert_eq!(plan.outcome, crate::domain::InboundOutcome::Duplicate);
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

/// A data directory made by the release before the log (layout 1, commit
/// c280e09): an inbound opened a window and a text was sent in it (see
/// `tests/fixtures/README.md`). It opens, keeps both, and is marked layout 2.
#[tokio::test]
async fn a_layout_1_directory_opens_and_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sled-layout-v1.tar.gz"
    );
    let untarred = std::process::Command::new("tar")
        .args(["-xzf", fixture, "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untarred.success());
    let config = SledConfig {
        path: dir.path().join("data"),
        cache_capacity_bytes: 8 << 20,
    };
    let layout = |db: &sled::Db| db.open_tree("meta").unwrap().get("schema_version").unwrap();
    {
        let db = sled::open(&config.path).unwrap();
        assert_eq!(
            layout(&db).as_deref(),
            Some(&[1][..]),
            "the fixture is layout 1"
        );
    }
    let message_id: Uuid = "01a21906-0921-7b07-a1b0-7fc16f6b3e34".parse().unwrap();
    for _ in 0..2 {
        let store = SledStore::open(&config).unwrap();
        let window = store.window(&pair("+27821234567")).await.unwrap().unwrap();
        assert_eq!(
            window.last_inbound_at,
            "2026-11-26T18:02:35.368088Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        let state = store
            .message(message_id)
            .await
            .unwrap()
            .expect("the sent text");
        assert_eq!(
            state.message.accepted.rendered_text,
            "Made by the v1 layout."
        );
        assert_eq!(layout(&store.db).as_deref(), Some(&[SCHEMA_VERSION][..]));
        let names = store.db.tree_names();
        assert!(!names.iter().any(|name| name == b"inbound_age/v1"));
        let age = packed::len(&store.settled().await.unwrap().inbound_age).unwrap();
        assert_eq!(age, 1, "the fixture's inbound id is in the packed index");
    }
}

/// Layout 2 kept an entry a key in its expiry and age indexes and the
/// window-change log; layout 3 packs them. A layout 2 directory's entries move at its
/// first start, where the watch and the sweep find them.
#[tokio::test]
async fn a_layout_2_directory_has_its_time_indexes_packed() {
    let dir = tempfile::tempdir().unwrap();
    let idempotency_entry = keys::timed(t0(), b"an-idempotency-key");
    {
        // Layout 3 as written today, turned back into layout 2.
        let store = SledStore::open(&config(&dir)).unwrap();
        record(&store, "+27821234567", "m1", t0()).await;
        record(&store, "+27821234568", "m2", t0() + TimeDelta::seconds(1)).await;
        store.flush().await.unwrap();
        let db = &store.db;
        for (packed_name, v1_name) in [
            (trees::WINDOW_EXPIRY, "window_expiry/v1"),
            (trees::INBOUND_AGE, "inbound_age/v1"),
            (changes::WINDOW_CHANGES, "window_changes/v1"),
            (trees::CHANGE_EXPIRY, "window_change_expiry/v1"),
        ] {
            let packed_tree = db.open_tree(packed_name).unwrap();
            let v1 = db.open_tree(v1_name).unwrap();
            for (key, value) in packed::entries_before(&packed_tree, &[0xff; 17], 100).unwrap() {
                v1.insert(key, value).unwrap();
            }
            assert_eq!(v1.len(), 2, "{v1_name}: an entry a call");
            assert!(db.drop_tree(packed_name).unwrap());
        }
        db.open_tree("idempotency_age/v1")
            .unwrap()
            .insert(&idempotency_entry, IVec::default())
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &[2])
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&config(&dir)).unwrap();
    let names = store.db.tree_names();
    for old in [
        "window_expiry/v1",
        "inbound_age/v1",
        "idempotency_age/v1",
        "window_changes/v1",
        "window_change_expiry/v1",
    ] {
        assert!(
            !names.iter().any(|name| name == old.as_bytes()),
            "{old} dropped"
        );
    }
    let meta = store.db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().as_deref(),
        Some(&[SCHEMA_VERSION][..])
    );
    {
        let t = store.settled().await.unwrap();
        assert_eq!(packed::len(&t.inbound_age).unwrap(), 2);
        assert_eq!(
            packed::get(&t.idempotency_age, &idempotency_entry).unwrap(),
            Some(IVec::default())
        );
    }
    // Both windows are open, found through the expiry index.
    assert_eq!(store.open_windows(t0()).await.unwrap(), 2);
    // The window-change log reads back in both orders.
    let start = ChangePosition {
        at: t0() - TimeDelta::days(1),
        id: i64::MIN,
    };
    let far = t0() + TimeDelta::days(400);
    for order in [ChangeOrder::Recorded, ChangeOrder::Expiring] {
        let found = store.window_changes(order, start, far, 10).await.unwrap();
        let pairs: Vec<&Pair> = found.iter().map(|change| &change.pair).collect();
        assert_eq!(
            pairs,
            [&pair("+27821234567"), &pair("+27821234568")],
            "{order:?}"
        );
    }
    // Sweeping at a cutoff between the two removes the older id only.
    let mut cutoffs = crate::domain::retention::Retention::default().cutoffs(Utc::now());
    cutoffs.inbound_ids = t0();
    cutoffs.idempotency_keys = t0();
    assert_eq!(sweep_inbound_ids(&store, &cutoffs).await, 1);
    let t = store.settled().await.unwrap();
    assert_eq!(t.inbound_ids.len(), 1, "m2 is younger than the cutoff");
    assert!(t.inbound_ids.get("m2").unwrap().is_some());
    assert_eq!(packed::len(&t.inbound_age).unwrap(), 1);
    assert!(t.idempotency_age.is_empty(), "the stray entry is swept too");
}

/// Many entries can share an instant: the scale bench seeds a million
/// inbounds at one, and Cloud API times come in whole seconds. Buckets stay
/// bounded however many do, the log reads back in order after a restart
/// (replayed or not), the windows count and the sweep still empties the
/// indexes.
#[tokio::test]
async fn time_indexes_stay_bounded_when_many_entries_share_an_instant() {
    const CALLS: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = &SledStore::open(&config(&dir)).unwrap();
        for chunk in (0..CALLS).collect::<Vec<_>>().chunks(100) {
            futures_util::future::join_all(chunk.iter().map(|i| {
                let (customer, id) = (format!("+2782{:07}", i), format!("m{i}"));
                async move { record(store, &customer, &id, t0()).await }
            }))
            .await;
        }
        // Not flushed: what sled lacks at the next start comes from the log.
    }
    let store = SledStore::open(&config(&dir)).unwrap();
    let t = store.settled().await.unwrap();
    for (name, tree) in [
        ("window expiry", &t.window_expiry),
        ("inbound age", &t.inbound_age),
        ("window changes", &t.window_changes),
        ("change expiry", &t.change_expiry),
    ] {
        assert_eq!(packed::len(tree).unwrap(), CALLS, "{name}");
        assert!(
            tree.len() <= CALLS.div_ceil(packed::MAX_ENTRIES / 2),
            "{name}: {} buckets for {CALLS} entries",
            tree.len()
        );
        let sizes = packed::bucket_sizes(tree).unwrap();
        assert!(
            sizes.iter().all(|&n| n <= packed::MAX_ENTRIES),
            "{name}: {sizes:?}"
        );
    }
    drop(t);
    let start = ChangePosition {
        at: t0() - TimeDelta::days(1),
        id: i64::MIN,
    };
    let found = store
        .window_changes(ChangeOrder::Recorded, start, Utc::now(), CALLS + 1)
        .await
        .unwrap();
    assert_eq!(found.len(), CALLS);
    let order: Vec<_> = found.iter().map(|c| (c.recorded_at, c.id)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    let expiring = store
        .window_changes(
            ChangeOrder::Expiring,
            start,
            t0() + TimeDelta::days(2),
            CALLS + 1,
        )
        .await
        .unwrap();
    assert_eq!(expiring.len(), CALLS, "all expire at one instant");
    assert_eq!(store.open_windows(t0()).await.unwrap(), CALLS as u64);
    let mut cutoffs = crate::domain::retention::Retention::default().cutoffs(Utc::now());
    cutoffs.inbound_ids = t0();
    assert_eq!(sweep_inbound_ids(&store, &cutoffs).await, CALLS as u64);
    let t = store.settled().await.unwrap();
    assert!(t.inbound_age.is_empty() && t.inbound_ids.is_empty());
}

/// Rekeying at start must see what the log holds: a window logged under a
/// key today's rules write differently is replayed first, then moved.
#[tokio::test]
async fn the_log_is_replayed_before_keys_are_rekeyed() {
    use wal::testing::{Record, write_segment};
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir).path;
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        let meta = store.db.open_tree("meta").unwrap();
        meta.remove("phone_rules").unwrap();
        store.db.flush().unwrap();
    }
    let opened = t0();
    let window = Window {
        last_inbound_at: opened,
        expires_at: opened + TimeDelta::hours(24),
        free_entry_deadline: None,
        free_until: None,
    };
    let old_key = b"+15550001111\0+4402079460958".to_vec();
    write_segment(
        &path,
        1,
        &[Record {
            lsn: 1,
            changes: vec![
                wal::testing::Change {
                    tree: Tree::Windows,
                    key: old_key.clone(),
                    value: Some(encode(&WindowRecord::from(&window)).into()),
                },
                wal::testing::Change {
                    tree: Tree::WindowExpiry,
                    key: keys::timed(window.expires_at, &old_key),
                    value: Some(IVec::default()),
                },
            ],
        }],
        0,
    );
    let store = SledStore::open(&config(&dir)).unwrap();
    assert_eq!(
        store.window(&pair("+442079460958")).await.unwrap(),
        Some(window),
        "the logged window moved to its normal key"
    );
    assert_eq!(
        store
            .settled()
            .await
            .unwrap()
            .windows
            .get(&old_key)
            .unwrap(),
        None
    );
}

/// A utility template "Hi {{1}}" of `id`, with `status`.
fn utility_template(id: &TemplateId, status: crate::domain::template::Status) -> Template {
    use crate::domain::template::{Category, TemplateDraft};
    let content = TemplateDraft {
        category: Some(Category::Utility),
        body: "Hi {{1}}".into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![],
        header_media: None,
    }
    .validate()
    .unwrap();
    let (template, _) = Template::upsert(None, id.clone(), content, t0());
    Template { status, ..template }
}

/// A data directory from before accounts keeps its templates as
/// `name \0 language`; the first start moves each into the default account.
#[tokio::test]
async fn templates_written_before_accounts_move_into_the_default_account() {
    use crate::domain::template::Status;
    let dir = tempfile::tempdir().unwrap();
    let id = TemplateId::parse("order_update", "en_US").unwrap();
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        let template = utility_template(&id, Status::Approved);
        // Written as a release before accounts did.
        store
            .settled()
            .await
            .unwrap()
            .templates
            .insert(
                b"order_update\0en_US",
                encode(&TemplateRecord::from(&template)),
            )
            .unwrap();
        store.db.flush().unwrap();
    }

    let store = SledStore::open(&config(&dir)).unwrap();
    let moved = store
        .template(&id)
        .await
        .unwrap()
        .expect("in the default account");
    assert!(moved.id.account().is_default());
    assert_eq!(moved.status, Status::Approved);
    assert_eq!(moved.content.body, "Hi {{1}}");
    let keys: Vec<Vec<u8>> = store
        .settled()
        .await
        .unwrap()
        .templates
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert_eq!(keys, [b"order_update\0en_US\0default".to_vec()]);
}

/// A template sync plans on the templates as answered, including a change
/// that is on disk and not yet in sled, so it never writes an older state
/// of a template back over a newer one.
#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the lock holds the applier, a thread of its own that no task here waits on"
)]
async fn a_template_sync_plans_on_changes_not_yet_in_sled() {
    use crate::domain::template::{Status, TemplateWrite};
    use crate::domain::template_sync::SyncPlan;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&config(&dir)).unwrap();
    let put = |name: &str, status: Status| {
        let id = TemplateId::parse(name, "en_US").unwrap();
        let template = Box::new(utility_template(&id, status));
        let store = store.clone();
        async move {
            store
                .change_template(&id, &|_| Ok(TemplateWrite::Put(template.clone())))
                .await
                .unwrap();
        }
    };
    put("in_sled", Status::Pending).await;
    put("changed", Status::Pending).await;
    store.settled().await.unwrap();

    let held = store.wal.hold_apply();
    // Answered, so on disk; kept out of sled while `held` lives.
    put("changed", Status::Approved).await;
    put("new", Status::Pending).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let plan = |stored: &Vec<Template>| {
        *seen.lock().unwrap() = stored
            .iter()
            .map(|t| (t.id.name().to_owned(), t.status))
            .collect();
        Ok(SyncPlan::default())
    };
    let account = AccountId::default_account();
    let sync = store.sync_templates(&account, &plan);
    tokio::time::timeout(std::time::Duration::from_secs(10), sync)
        .await
        .expect("the sync reads what is staged instead of waiting for sled")
        .unwrap();
    drop(held);

    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("changed".to_owned(), Status::Approved),
            ("in_sled".to_owned(), Status::Pending),
            ("new".to_owned(), Status::Pending),
        ],
        "the plan saw every answered change"
    );
}

#[tokio::test]
async fn send_rates_outlive_a_restart_and_lapsed_ones_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    // Stored to the microsecond, as every time.
    let ahead = crate::domain::time::stored(Utc::now() + TimeDelta::hours(1));
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        // A pair served long ago, and one still paced.
        for (key, tat) in [("pair-old", t0()), ("busy", ahead)] {
            let taken = store.take_send_slot(key, &|_| Ok(tat)).await.unwrap();
            assert_eq!(taken, Ok(()));
        }
        // A refused slot writes nothing.
        let refused = store
            .take_send_slot("busy", &|_| Err(TimeDelta::seconds(6)))
            .await
            .unwrap();
        assert_eq!(refused, Err(TimeDelta::seconds(6)));
        store.flush().await.unwrap();
    }
    let store = SledStore::open(&config(&dir)).unwrap();
    let seen = std::sync::Mutex::new(None);
    store
        .take_send_slot("busy", &|tat| {
            *seen.lock().unwrap() = tat;
            Ok(ahead + TimeDelta::seconds(6))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(ahead), "the pacing survived");
    let cutoffs = crate::domain::retention::Retention::default().cutoffs(Utc::now());
    while store.sweep_step(&cutoffs).await.unwrap().visited > 0 {}
    let kept: Vec<Vec<u8>> = store
        .settled()
        .await
        .unwrap()
        .send_rates
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert_eq!(
        kept,
        [b"busy".to_vec()],
        "only the rate still ahead is kept"
    );
    assert_eq!(
        store.settled().await.unwrap().send_rate_age.len(),
        1,
        "one age entry a rate"
    );
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
