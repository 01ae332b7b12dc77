//! What only sled has: group commit, its schema marker and its encoding.
//! Everything the backends share is in the conformance suite
//! (`tests/store_conformance`). The write path's own tests (group commit,
//! replay, the applier) are in `write_path`, and directories written by
//! older builds in `upgrade`.

use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::{EntryPoint, InboundKind, PhoneNumber};

mod upgrade;
mod write_path;

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
