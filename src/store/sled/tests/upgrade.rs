//! Directories written by older builds open and are upgraded in place.

use super::super::records::TemplateRecord;
use super::*;

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
