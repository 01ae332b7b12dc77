//! Store behaviour on a real sled database in a temporary directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};

use super::*;
use crate::domain::template::{ComponentParameters, TemplateDraft};
use crate::domain::{
    Category, Content, EntryPoint, IdempotencyKey, InboundKind, PhoneNumber, Reason, SendParameters,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&StoreConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
        deliver: true,
    })
    .unwrap()
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

fn id(s: &str) -> InboundMessageId {
    InboundMessageId::parse(s).unwrap()
}

fn text_request(customer: &str, key: &str, body: &str) -> SendRequest {
    SendRequest {
        pair: pair(customer),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        content: Content::text(body).unwrap(),
    }
}

fn reason(error: StoreError) -> Reason {
    match error {
        StoreError::Rejected(rejection) => rejection.reason,
        other => panic!("expected a rejection, got {other}"),
    }
}

#[tokio::test]
async fn inbound_opens_dedupes_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    let (outcome, window) = store
        .record_inbound(&p, &id("wamid.1"), &inbound(t0()), t0())
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Opened);
    let window = window.unwrap();

    let later = t0() + TimeDelta::hours(1);
    let (outcome, again) = store
        .record_inbound(&p, &id("wamid.1"), &inbound(later), later)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Duplicate);
    assert_eq!(again.as_ref(), Some(&window), "a repeat changes nothing");

    let other = pair("+27829999999");
    let err = store
        .record_inbound(&other, &id("wamid.1"), &inbound(later), later)
        .await
        .unwrap_err();
    assert_eq!(reason(err), Reason::InboundMessageIdReused);
    assert_eq!(store.window(&other).unwrap(), None);

    drop(store);
    let store = open(&dir);
    assert_eq!(store.window(&p).unwrap(), Some(window));
}

#[tokio::test]
async fn too_old_inbound_is_remembered_for_dedupe_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    let now = t0() + TimeDelta::hours(25);
    let (outcome, window) = store
        .record_inbound(&p, &id("old"), &inbound(t0()), now)
        .await
        .unwrap();
    assert_eq!((outcome, window), (InboundOutcome::TooOld, None));
    let (outcome, _) = store
        .record_inbound(&p, &id("old"), &inbound(t0()), now)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Duplicate);
}

#[tokio::test]
async fn sends_are_idempotent_and_dry_runs_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in"), &inbound(t0()), t0())
        .await
        .unwrap();

    let request = text_request("+27821234567", "k1", "hello");
    let dry = store
        .send(&request, Uuid::now_v7(), t0(), true)
        .await
        .unwrap();
    assert!(matches!(dry, SendOutcome::DryRun(_)));
    assert_eq!(store.outbox_len(), 0);

    let first_id = Uuid::now_v7();
    let first = store.send(&request, first_id, t0(), false).await.unwrap();
    assert!(matches!(first, SendOutcome::Accepted(_)));
    assert_eq!(
        store.outbox_message(first_id).unwrap().as_ref(),
        Some(first.message())
    );

    let retry = store
        .send(&request, Uuid::now_v7(), t0() + TimeDelta::hours(23), false)
        .await
        .unwrap();
    assert!(matches!(retry, SendOutcome::Replayed(_)));
    assert_eq!(retry.message(), first.message());
    assert_eq!(store.outbox_len(), 1);

    let different = text_request("+27821234567", "k1", "hello again");
    let err = store
        .send(&different, Uuid::now_v7(), t0(), false)
        .await
        .unwrap_err();
    assert_eq!(reason(err), Reason::IdempotencyKeyReused);

    // After 24h the key is free again (the window is closed by then, so a template-free
    // text is refused; the rejection proves the key no longer replays).
    let err = store
        .send(&request, Uuid::now_v7(), t0() + TimeDelta::hours(24), false)
        .await
        .unwrap_err();
    assert_eq!(reason(err), Reason::WindowClosed);
}

#[tokio::test]
async fn expired_idempotency_key_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in-1"), &inbound(t0()), t0())
        .await
        .unwrap();
    let request = text_request("+27821234567", "k", "hello");
    let first = Uuid::now_v7();
    store.send(&request, first, t0(), false).await.unwrap();

    let day_later = t0() + TimeDelta::hours(25);
    store
        .record_inbound(&p, &id("in-2"), &inbound(day_later), day_later)
        .await
        .unwrap();
    let second = Uuid::now_v7();
    let outcome = store
        .send(&request, second, day_later, false)
        .await
        .unwrap();
    assert!(matches!(outcome, SendOutcome::Accepted(_)));
    assert_eq!(outcome.message().message_id, second);
    assert_eq!(store.outbox_len(), 2);
    // The first key's age index entry went with it: sweeping keeps the new record.
    let swept = store
        .sweep(day_later + TimeDelta::hours(1), &Retention::default())
        .unwrap();
    assert_eq!(swept.idempotency_keys, 0);
    let replay = store
        .send(&request, Uuid::now_v7(), day_later, false)
        .await
        .unwrap();
    assert_eq!(replay.message().message_id, second);
}

#[tokio::test]
async fn concurrent_sends_with_one_key_store_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in"), &inbound(Utc::now()), Utc::now())
        .await
        .unwrap();
    let request = Arc::new(text_request("+27821234567", "same", "hello"));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, request) = (store.clone(), request.clone());
            tokio::spawn(async move {
                store
                    .send(&request, Uuid::now_v7(), Utc::now(), false)
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().message().message_id);
    }
    assert_eq!(ids.len(), 1, "every caller got the first answer");
    assert_eq!(store.outbox_len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let before = store.commit_counts();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let p = pair(&format!("+2782{i:07}"));
                let now = Utc::now();
                store
                    .record_inbound(&p, &id(&format!("m{i}")), &inbound(now), now)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
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

#[tokio::test]
async fn sweep_drops_windows_closed_past_retention_but_spares_extended_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let retention = Retention::default();
    let (old, extended, fresh) = (
        pair("+27820000001"),
        pair("+27820000002"),
        pair("+27820000003"),
    );
    store
        .record_inbound(&old, &id("a"), &inbound(t0()), t0())
        .await
        .unwrap();
    store
        .record_inbound(&extended, &id("b"), &inbound(t0()), t0())
        .await
        .unwrap();
    let later = t0() + TimeDelta::days(10);
    store
        .record_inbound(&extended, &id("c"), &inbound(later), later)
        .await
        .unwrap();
    store
        .record_inbound(&fresh, &id("d"), &inbound(later), later)
        .await
        .unwrap();

    // The first windows closed at t0+24h; 30 days after that they may go.
    let due = t0() + TimeDelta::hours(24) + retention.closed_windows;
    let counts = store
        .sweep(due - TimeDelta::microseconds(1), &retention)
        .unwrap();
    assert_eq!(counts.windows, 0);
    let counts = store.sweep(due, &retention).unwrap();
    assert_eq!(counts.windows, 1);
    assert_eq!(store.window(&old).unwrap(), None);
    assert!(
        store.window(&extended).unwrap().is_some(),
        "its newer expiry keeps it"
    );
    assert!(store.window(&fresh).unwrap().is_some());
    // Its stale index entry is gone too: a later sweep past the new expiry finds it.
    let counts = store
        .sweep(
            later + TimeDelta::hours(24) + retention.closed_windows,
            &retention,
        )
        .unwrap();
    assert_eq!(counts.windows, 2);
}

#[tokio::test]
async fn sweep_forgets_inbound_ids_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let retention = Retention::default();
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("a"), &inbound(t0()), t0())
        .await
        .unwrap();
    let day = t0() + TimeDelta::days(1);
    store
        .record_inbound(&p, &id("b"), &inbound(day), day)
        .await
        .unwrap();

    let due = t0() + retention.inbound_ids;
    assert_eq!(
        store
            .sweep(due - TimeDelta::microseconds(1), &retention)
            .unwrap()
            .inbound_ids,
        0
    );
    let (outcome, _) = store
        .record_inbound(&p, &id("a"), &inbound(due), due)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Duplicate, "kept for 7 days");
    assert_eq!(store.sweep(due, &retention).unwrap().inbound_ids, 1);
    let (outcome, _) = store
        .record_inbound(&p, &id("a"), &inbound(due), due)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Opened, "a swept id records again");
    let (outcome, _) = store
        .record_inbound(&p, &id("b"), &inbound(due), due)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Duplicate);
}

#[tokio::test]
async fn sweep_drops_idempotency_records_after_24h() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in"), &inbound(t0()), t0())
        .await
        .unwrap();
    store
        .send(
            &text_request("+27821234567", "k", "hi"),
            Uuid::now_v7(),
            t0(),
            false,
        )
        .await
        .unwrap();
    let retention = Retention::default();
    assert_eq!(
        store
            .sweep(t0() + TimeDelta::hours(23), &retention)
            .unwrap()
            .idempotency_keys,
        0
    );
    assert_eq!(
        store
            .sweep(t0() + TimeDelta::hours(24), &retention)
            .unwrap()
            .idempotency_keys,
        1
    );
    assert_eq!(store.outbox_len(), 1, "the outbox is not swept");
}

fn draft(body: &str, category: Category) -> TemplateContent {
    TemplateDraft {
        category: Some(category),
        body: body.into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![],
    }
    .validate()
    .unwrap()
}

#[tokio::test]
async fn templates_upsert_status_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tid = |n: &str| TemplateId::parse(n, "en").unwrap();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let category = if i % 2 == 0 {
            Category::Utility
        } else {
            Category::Marketing
        };
        let (_, created) = store
            .upsert_template(&tid(name), &draft("Hi {{1}}", category), t0())
            .await
            .unwrap();
        assert!(created);
    }
    let (_, created) = store
        .upsert_template(&tid("a"), &draft("Hi {{1}}", Category::Utility), t0())
        .await
        .unwrap();
    assert!(!created);
    let approved = store
        .set_template_status(&tid("c"), Status::Approved, "", t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(
        store
            .set_template_status(&tid("zz"), Status::Approved, "", t0())
            .await
            .unwrap(),
        None
    );
    let err = store
        .set_template_status(&tid("c"), Status::Rejected, &"r".repeat(2000), t0())
        .await
        .unwrap_err();
    assert_eq!(reason(err), Reason::InvalidTemplateStatus);
    assert_eq!(
        store.template(&tid("c")).unwrap().unwrap().status,
        Status::Approved,
        "a refused change stores nothing"
    );

    let page = store.list_templates(None, 2, |_| true).unwrap();
    let names = |page: &TemplatePage| {
        page.templates
            .iter()
            .map(|t| t.id.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&page), ["a", "b"]);
    let page = store
        .list_templates(page.next_after.as_ref(), 2, |_| true)
        .unwrap();
    assert_eq!(names(&page), ["c", "d"]);
    let page = store
        .list_templates(page.next_after.as_ref(), 2, |_| true)
        .unwrap();
    assert_eq!(
        (names(&page), page.next_after),
        (vec!["e".to_owned()], None)
    );
    let utility = store
        .list_templates(None, 10, |t| t.content.category == Category::Utility)
        .unwrap();
    assert_eq!(names(&utility), ["a", "c", "e"]);
    let exact = store
        .list_templates(None, 3, |t| t.content.category == Category::Utility)
        .unwrap();
    assert_eq!(exact.next_after, None, "no empty last page");

    assert!(store.delete_template(&tid("b")).await.unwrap());
    assert!(!store.delete_template(&tid("b")).await.unwrap());
    assert_eq!(store.template(&tid("b")).unwrap(), None);
}

#[tokio::test]
async fn template_sends_read_the_registry_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tid = TemplateId::parse("greet", "en").unwrap();
    store
        .upsert_template(&tid, &draft("Hi {{1}}", Category::Marketing), t0())
        .await
        .unwrap();
    let request = SendRequest {
        content: Content::Template {
            id: tid.clone(),
            parameters: SendParameters {
                body: ComponentParameters {
                    positional: vec!["Ann".into()],
                    named: BTreeMap::new(),
                },
                ..Default::default()
            },
        },
        ..text_request("+27821234567", "t", "unused")
    };
    let err = store
        .send(&request, Uuid::now_v7(), t0(), false)
        .await
        .unwrap_err();
    assert_eq!(reason(err), Reason::TemplateNotApproved);
    store
        .set_template_status(&tid, Status::Approved, "", t0())
        .await
        .unwrap();
    let sent = store
        .send(&request, Uuid::now_v7(), t0(), false)
        .await
        .unwrap();
    assert_eq!(sent.message().accepted.rendered_text, "Hi Ann");
    drop(store);
    let store = open(&dir);
    let stored = store
        .outbox_message(sent.message().message_id)
        .unwrap()
        .unwrap();
    assert_eq!(&stored, sent.message(), "the outbox record round-trips");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_corrupt_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let p = pair("+27821234567");
        store
            .record_inbound(&p, &id("x"), &inbound(t0()), t0())
            .await
            .unwrap();
        store
            .trees
            .windows
            .insert(keys::pair(&p), &[1, 0xff])
            .unwrap();
        assert!(matches!(store.window(&p), Err(StoreError::Corrupt { .. })));
        store
            .db
            .open_tree("meta")
            .unwrap()
            .insert("schema_version", &[9])
            .unwrap();
        store.db.flush().unwrap();
    }
    let err = Store::open(&StoreConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
        deliver: true,
    })
    .err()
    .expect("newer schema refused");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 9 }));
}

#[tokio::test]
async fn the_background_sweeper_drains_a_backlog_larger_than_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let backlog = 3 * 128 + 7;
    let long_ago = Utc::now() - TimeDelta::days(3);
    for n in 0..backlog {
        store
            .record_inbound(
                &pair(&format!("+2782{n:07}")),
                &id(&format!("old.{n}")),
                &inbound(long_ago),
                long_ago,
            )
            .await
            .unwrap();
    }
    let retention = Retention {
        closed_windows: TimeDelta::days(1),
        ..Retention::default()
    };
    let swept = store.paced_sweep(Utc::now(), retention).await.unwrap();
    assert_eq!(swept.windows, backlog as u64);
    assert_eq!(store.window(&pair("+27820000000")).unwrap(), None);
    assert_eq!(store.trees.window_expiry.len(), 0, "the index is empty too");
}

mod delivery {
    use super::*;
    use crate::domain::delivery::{Delivery, DeliveryError, DeliveryStatus};

    async fn accepted(store: &Store, customer: &str, key: &str) -> Uuid {
        store
            .record_inbound(
                &pair(customer),
                &id(&format!("in.{key}")),
                &inbound(t0()),
                t0(),
            )
            .await
            .unwrap();
        let message_id = Uuid::now_v7();
        store
            .send(&text_request(customer, key, "hi"), message_id, t0(), false)
            .await
            .unwrap();
        message_id
    }

    /// Claims the delivery due at `at`, which the test knows is the only one.
    fn claim_next(store: &Store, at: DateTime<Utc>) -> Delivery {
        let mut claimed = store.claim_due(at, TimeDelta::seconds(30), 10).unwrap();
        assert_eq!(claimed.len(), 1, "expected one due delivery");
        claimed.remove(0).1
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let message_id = accepted(&store, "+27820000001", "k1").await;
        let lease = TimeDelta::seconds(30);
        let claimed = store.claim_due(t0(), lease, 10).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].0.message_id, message_id);
        assert!(
            store.claim_due(t0(), lease, 10).unwrap().is_empty(),
            "claimed twice"
        );
        // Due again once the lease lapses, or at once after a restart.
        assert_eq!(store.claim_due(t0() + lease, lease, 10).unwrap().len(), 1);
        assert_eq!(store.release_claims(t0()).unwrap(), 1);
        assert_eq!(store.claim_due(t0(), lease, 10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retries_are_due_at_their_time_and_done_messages_leave_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let message_id = accepted(&store, "+27820000001", "k1").await;
        let delivery = claim_next(&store, t0());
        let retry_at = t0() + TimeDelta::seconds(5);
        store
            .finish_attempt(message_id, &delivery.retry(retry_at, t0()), t0())
            .await
            .unwrap();
        assert!(
            store
                .claim_due(retry_at - TimeDelta::seconds(1), TimeDelta::seconds(30), 10)
                .unwrap()
                .is_empty()
        );
        let delivery = claim_next(&store, retry_at);
        assert_eq!(delivery.attempts, 1);
        let state = store
            .finish_attempt(
                message_id,
                &delivery.submitted("wamid.1".into(), retry_at),
                retry_at,
            )
            .await
            .unwrap();
        assert_eq!(state.delivery.unwrap().status, DeliveryStatus::Submitted);
        assert!(
            store
                .claim_due(t0() + TimeDelta::days(1), TimeDelta::seconds(30), 10)
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_status_that_beats_the_api_answer_is_applied_when_the_wamid_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let message_id = accepted(&store, "+27820000001", "k1").await;
        let delivery = claim_next(&store, t0());
        let early = store
            .report_status("wamid.early", DeliveryStatus::Delivered, None, t0())
            .await
            .unwrap();
        assert_eq!(early, StatusReport::Early);
        // An older report for the same wamid does not replace it.
        let sent = store
            .report_status("wamid.early", DeliveryStatus::Sent, None, t0())
            .await
            .unwrap();
        assert_eq!(sent, StatusReport::Unchanged);
        let state = store
            .finish_attempt(
                message_id,
                &delivery.submitted("wamid.early".into(), t0()),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(state.delivery.unwrap().status, DeliveryStatus::Delivered);
        let failed = store
            .report_status(
                "wamid.early",
                DeliveryStatus::Failed,
                Some(&DeliveryError {
                    code: 131026,
                    title: "x".into(),
                }),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(
            failed,
            StatusReport::Unchanged,
            "delivered beats a late failure"
        );
        let read = store
            .report_status("wamid.early", DeliveryStatus::Read, None, t0())
            .await
            .unwrap();
        let StatusReport::Applied(state) = read else {
            panic!("read was not applied: {read:?}");
        };
        assert_eq!(state.delivery.unwrap().status, DeliveryStatus::Read);
    }

    #[tokio::test]
    async fn watchers_hear_every_stored_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut updates = store.subscribe();
        let message_id = accepted(&store, "+27820000001", "k1").await;
        let first = updates.recv().await.unwrap();
        assert_eq!(first.message.message_id, message_id);
        assert_eq!(first.delivery.unwrap().status, DeliveryStatus::Accepted);
        let delivery = claim_next(&store, t0());
        store
            .finish_attempt(
                message_id,
                &delivery.submitted("wamid.1".into(), t0()),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(
            updates.recv().await.unwrap().delivery.unwrap().status,
            DeliveryStatus::Submitted
        );
    }
}

#[tokio::test]
async fn statuses_for_wamids_that_never_arrive_are_swept_after_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .report_status(
            "wamid.elsewhere",
            crate::domain::delivery::DeliveryStatus::Sent,
            None,
            t0(),
        )
        .await
        .unwrap();
    let retention = Retention::default();
    let early = store
        .sweep(t0() + TimeDelta::hours(23), &retention)
        .unwrap();
    assert_eq!(early.early_statuses, 0);
    let late = store
        .sweep(t0() + TimeDelta::hours(24), &retention)
        .unwrap();
    assert_eq!(late.early_statuses, 1);
    assert_eq!(store.trees.early_statuses.len(), 0);
}
