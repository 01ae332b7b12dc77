//! The conformance cases: each rule of SPEC sections 2-5 that touches
//! storage, written once against the service layer over `dyn Storage`, and
//! run by `main.rs` on every backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use wagate::domain::account::AccountId;
use wagate::domain::delivery::{DeliveryError, DeliveryStatus, SendRate};
use wagate::domain::retention::Retention;
use wagate::domain::template::{ComponentParameters, TemplateDraft, TemplateFilter};
use wagate::domain::{
    Category, Content, EntryPoint, IdempotencyKey, Inbound, InboundKind, InboundMessageId,
    InboundOutcome, OutboxMessage, Pair, PhoneNumber, Reason, SendParameters, SendRequest, Status,
    TemplateContent, TemplateId,
};
use wagate::service::Service;
use wagate::store::{Claim, SendOutcome, StatusReport, StoreError, SweepCounts, TemplatePage};

pub use crate::accounts::{
    a_number_sent_for_by_clickatell_keeps_its_integration,
    a_template_sync_writes_one_accounts_registry_at_once,
    accounts_and_numbers_follow_the_registry_rules_and_survive_reopen,
    concurrent_registrations_keep_a_phone_number_id_on_one_number,
    each_number_sends_its_own_accounts_template,
};
pub use crate::cancel::cancelled_calls_store_all_or_nothing_and_the_store_keeps_serving;
pub use crate::changes::window_changes_are_logged_read_in_order_and_swept;
pub use crate::consent::{
    many_window_reads_at_once_each_get_their_own_pair,
    opt_outs_and_whatsapps_limits_are_kept_per_pair_on_every_replica,
};
pub use crate::limit::{
    a_burst_of_new_customers_fills_the_limit_exactly_and_every_send_is_answered,
    an_account_with_its_own_messaging_limit_is_counted_apart,
    the_messaging_limit_counts_each_customer_once_on_every_replica,
};
pub use crate::listing::windows_are_listed_by_expiry_a_page_at_a_time;
pub use crate::rich::rich_contents_are_stored_and_read_back_as_sent;

/// A backend under test: each `open` returns a service on the same stored
/// data (the previous service dropped first, where the backend needs that).
#[async_trait]
pub trait Harness: Send + Sync {
    async fn open(&self) -> Service;
    /// Another replica on the same stored data while `first` is open (for
    /// an embedded store, which one process owns, `first` itself).
    async fn another_replica(&self, first: &Service) -> Service;
    /// Whether a call can be dropped between its first poll and its end
    /// (one that finishes on its first poll cannot be cancelled part way).
    fn calls_can_be_cancelled_part_way(&self) -> bool {
        true
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

pub fn pair(customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

pub fn inbound(at: DateTime<Utc>) -> Inbound {
    Inbound {
        received_at: at,
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    }
}

pub fn id(s: &str) -> InboundMessageId {
    InboundMessageId::parse(s).unwrap()
}

pub(crate) fn text_request(customer: &str, key: &str, body: &str) -> SendRequest {
    SendRequest {
        pair: pair(customer),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        content: Content::text(body).unwrap(),
    }
}

/// A send of template `id` with one body value ("Ann").
pub(crate) fn template_request(customer: &str, key: &str, id: &TemplateId) -> SendRequest {
    SendRequest {
        content: Content::Template {
            id: id.clone(),
            parameters: SendParameters {
                body: ComponentParameters {
                    positional: vec!["Ann".into()],
                    named: std::collections::BTreeMap::new(),
                },
                ..Default::default()
            },
        },
        ..text_request(customer, key, "unused")
    }
}

pub(crate) fn reason(error: StoreError) -> Reason {
    match error {
        StoreError::Rejected(rejection) => rejection.reason,
        other => panic!("expected a rejection, got {other}"),
    }
}

/// The outbox message stored under `id`, if any.
async fn stored(store: &Service, id: Uuid) -> Option<OutboxMessage> {
    store.message(id).await.unwrap().map(|state| state.message)
}

/// Opens `count` windows three days ago (customers +2782000000n), all of
/// them sweepable under the retention returned (closed windows kept 1 day).
async fn closed_backlog(store: &Service, count: u64) -> Retention {
    let long_ago = Utc::now() - TimeDelta::days(3);
    for n in 0..count {
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
    Retention {
        closed_windows: TimeDelta::days(1),
        ..Retention::default()
    }
}

/// Sweeps everything due at `now`, unpaced.
async fn sweep(store: &Service, now: DateTime<Utc>, retention: &Retention) -> SweepCounts {
    wagate::service::sweep(&**store.store(), now, retention, false)
        .await
        .unwrap()
}

pub async fn inbound_opens_dedupes_and_survives_reopen(h: &dyn Harness) {
    let store = h.open().await;
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
    assert_eq!(store.window(&other).await.unwrap(), None);

    drop(store);
    let store = h.open().await;
    assert_eq!(store.window(&p).await.unwrap(), Some(window));
}

pub async fn too_old_inbound_is_remembered_for_dedupe_only(h: &dyn Harness) {
    let store = h.open().await;
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

pub async fn sends_are_idempotent_and_dry_runs_store_nothing(h: &dyn Harness) {
    let store = h.open().await;
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
    assert_eq!(stored(&store, dry.message().message_id).await, None);

    let first_id = Uuid::now_v7();
    let first = store.send(&request, first_id, t0(), false).await.unwrap();
    assert!(matches!(first, SendOutcome::Accepted(_)));
    assert_eq!(
        stored(&store, first_id).await.as_ref(),
        Some(first.message())
    );

    let retry_id = Uuid::now_v7();
    let retry = store
        .send(&request, retry_id, t0() + TimeDelta::hours(23), false)
        .await
        .unwrap();
    assert!(matches!(retry, SendOutcome::Replayed(_)));
    assert_eq!(retry.message(), first.message());
    assert_eq!(
        stored(&store, retry_id).await,
        None,
        "a replay stores nothing"
    );

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

pub async fn expired_idempotency_key_is_taken_over(h: &dyn Harness) {
    let store = h.open().await;
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
    assert!(
        stored(&store, first).await.is_some(),
        "the first message stays"
    );
    assert!(stored(&store, second).await.is_some());
    // The first key's age index entry went with it: sweeping keeps the new record.
    let swept = sweep(
        &store,
        day_later + TimeDelta::hours(1),
        &Retention::default(),
    )
    .await;
    assert_eq!(swept.idempotency_keys, 0);
    let replay = store
        .send(&request, Uuid::now_v7(), day_later, false)
        .await
        .unwrap();
    assert_eq!(replay.message().message_id, second);
}

pub async fn concurrent_sends_with_one_key_store_one_message(h: &dyn Harness) {
    let store = h.open().await;
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in"), &inbound(Utc::now()), Utc::now())
        .await
        .unwrap();
    let request = Arc::new(text_request("+27821234567", "same", "hello"));
    let offered: Vec<Uuid> = (0..32).map(|_| Uuid::now_v7()).collect();
    let tasks: Vec<_> = offered
        .iter()
        .map(|&message_id| {
            let (store, request) = (store.clone(), request.clone());
            tokio::spawn(async move { store.send(&request, message_id, Utc::now(), false).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().message().message_id);
    }
    assert_eq!(ids.len(), 1, "every caller got the first answer");
    let mut kept = 0;
    for id in offered {
        kept += usize::from(stored(&store, id).await.is_some());
    }
    assert_eq!(kept, 1, "one message stored");
}

/// Inbounds for one customer at once, through two replicas: the window
/// keeps the latest (no update lost to a concurrent one), and one inbound
/// id recorded by many at once is recorded once.
pub async fn concurrent_inbounds_for_one_customer_lose_no_update(h: &dyn Harness) {
    let first = h.open().await;
    let second = h.another_replica(&first).await;
    let p = Arc::new(pair("+27821234567"));
    let now = t0() + TimeDelta::hours(1);
    let mut tasks = Vec::new();
    // The latest first, so most arrive after a later one is stored.
    for minute in (0..24).rev() {
        let store = [&first, &second][minute % 2].clone();
        let p = p.clone();
        let at = t0() + TimeDelta::minutes(minute as i64);
        tasks.push(tokio::spawn(async move {
            let message = id(&format!("wamid.minute-{minute}"));
            store.record_inbound(&p, &message, &inbound(at), now).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let window = first.window(&p).await.unwrap().unwrap();
    assert_eq!(
        window.last_inbound_at,
        t0() + TimeDelta::minutes(23),
        "the latest inbound decides the window"
    );

    let same: Vec<_> = (0..16)
        .map(|i| {
            let store = [&first, &second][i % 2].clone();
            let p = p.clone();
            tokio::spawn(async move {
                store
                    .record_inbound(&p, &id("wamid.same"), &inbound(now), now)
                    .await
            })
        })
        .collect();
    let mut recorded = 0;
    for task in same {
        let (outcome, _) = task.await.unwrap().unwrap();
        recorded += usize::from(outcome != InboundOutcome::Duplicate);
    }
    assert_eq!(recorded, 1, "one inbound id, recorded once");
    assert_eq!(
        first.window(&p).await.unwrap().unwrap().last_inbound_at,
        now
    );
}

pub async fn sweep_drops_windows_closed_past_retention_but_spares_extended_ones(h: &dyn Harness) {
    let store = h.open().await;
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
    let counts = sweep(&store, due - TimeDelta::microseconds(1), &retention).await;
    assert_eq!(counts.windows, 0);
    let counts = sweep(&store, due, &retention).await;
    assert_eq!(counts.windows, 1);
    assert_eq!(store.window(&old).await.unwrap(), None);
    assert!(
        store.window(&extended).await.unwrap().is_some(),
        "its newer expiry keeps it"
    );
    assert!(store.window(&fresh).await.unwrap().is_some());
    // Its stale index entry is gone too: a later sweep past the new expiry finds it.
    let counts = sweep(
        &store,
        later + TimeDelta::hours(24) + retention.closed_windows,
        &retention,
    )
    .await;
    assert_eq!(counts.windows, 2);
}

pub async fn sweep_forgets_inbound_ids_after_retention(h: &dyn Harness) {
    let store = h.open().await;
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
        sweep(&store, due - TimeDelta::microseconds(1), &retention)
            .await
            .inbound_ids,
        0
    );
    let (outcome, _) = store
        .record_inbound(&p, &id("a"), &inbound(due), due)
        .await
        .unwrap();
    assert_eq!(outcome, InboundOutcome::Duplicate, "kept for 7 days");
    assert_eq!(sweep(&store, due, &retention).await.inbound_ids, 1);
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

pub async fn sweep_drops_idempotency_records_after_24h(h: &dyn Harness) {
    let store = h.open().await;
    let p = pair("+27821234567");
    store
        .record_inbound(&p, &id("in"), &inbound(t0()), t0())
        .await
        .unwrap();
    let sent = store
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
        sweep(&store, t0() + TimeDelta::hours(23), &retention)
            .await
            .idempotency_keys,
        0
    );
    assert_eq!(
        sweep(&store, t0() + TimeDelta::hours(24), &retention)
            .await
            .idempotency_keys,
        1
    );
    assert!(
        stored(&store, sent.message().message_id).await.is_some(),
        "the outbox is not swept"
    );
}

pub(crate) fn draft(body: &str, category: Category) -> TemplateContent {
    TemplateDraft {
        category: Some(category),
        body: body.into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![],
        header_media: None,
    }
    .validate()
    .unwrap()
}

pub async fn templates_upsert_status_list_and_delete(h: &dyn Harness) {
    let store = h.open().await;
    let tid = |n: &str| TemplateId::parse(n, "en").unwrap();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let category = if i % 2 == 0 {
            Category::Utility
        } else {
            Category::Marketing
        };
        let (_, created) = store
            .upsert_template(
                &tid(name),
                &draft("Hi {{1}}, thanks for your order.", category),
                t0(),
            )
            .await
            .unwrap();
        assert!(created);
    }
    let (_, created) = store
        .upsert_template(
            &tid("a"),
            &draft("Hi {{1}}, thanks for your order.", Category::Utility),
            t0(),
        )
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
        store.template(&tid("c")).await.unwrap().unwrap().status,
        Status::Approved,
        "a refused change stores nothing"
    );

    let all = TemplateFilter::default();
    let utility = TemplateFilter {
        category: Some(Category::Utility),
        ..TemplateFilter::default()
    };
    let page = store
        .list_templates(&AccountId::default_account(), None, 2, &all)
        .await
        .unwrap();
    let names = |page: &TemplatePage| {
        page.templates
            .iter()
            .map(|t| t.id.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&page), ["a", "b"]);
    let page = store
        .list_templates(
            &AccountId::default_account(),
            page.next_after.as_ref(),
            2,
            &all,
        )
        .await
        .unwrap();
    assert_eq!(names(&page), ["c", "d"]);
    let page = store
        .list_templates(
            &AccountId::default_account(),
            page.next_after.as_ref(),
            2,
            &all,
        )
        .await
        .unwrap();
    assert_eq!(
        (names(&page), page.next_after),
        (vec!["e".to_owned()], None)
    );
    let page = store
        .list_templates(&AccountId::default_account(), None, 10, &utility)
        .await
        .unwrap();
    assert_eq!(names(&page), ["a", "c", "e"]);
    let exact = store
        .list_templates(&AccountId::default_account(), None, 3, &utility)
        .await
        .unwrap();
    assert_eq!(exact.next_after, None, "no empty last page");

    assert!(store.delete_template(&tid("b")).await.unwrap());
    assert!(!store.delete_template(&tid("b")).await.unwrap());
    assert_eq!(store.template(&tid("b")).await.unwrap(), None);
}

pub async fn template_sends_read_the_registry_in_the_same_transaction(h: &dyn Harness) {
    let store = h.open().await;
    let tid = TemplateId::parse("greet", "en").unwrap();
    store
        .upsert_template(
            &tid,
            &draft("Hi {{1}}, thanks for your order.", Category::Marketing),
            t0(),
        )
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
    assert_eq!(
        sent.message().accepted.rendered_text,
        "Hi Ann, thanks for your order."
    );
    drop(store);
    let store = h.open().await;
    let kept = stored(&store, sent.message().message_id).await.unwrap();
    assert_eq!(&kept, sent.message(), "the outbox record round-trips");
}

pub async fn the_background_sweeper_drains_a_backlog_larger_than_one_step(h: &dyn Harness) {
    let store = h.open().await;
    let backlog = 3 * 128 + 7;
    let retention = closed_backlog(&store, backlog).await;
    let swept = wagate::service::sweep(&**store.store(), Utc::now(), &retention, true)
        .await
        .unwrap();
    assert_eq!(swept.windows, backlog);
    assert_eq!(store.window(&pair("+27820000000")).await.unwrap(), None);
    assert_eq!(
        sweep(&store, Utc::now(), &retention).await,
        SweepCounts::default(),
        "nothing is left behind"
    );
}

// Deliveries.

async fn accepted(store: &Service, customer: &str, key: &str) -> Uuid {
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
async fn claim_next(store: &Service, at: DateTime<Utc>) -> Claim {
    let mut claimed = store
        .claim_due(at, TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "expected one due delivery");
    claimed.remove(0)
}

pub async fn a_claim_is_exclusive_until_released(h: &dyn Harness) {
    let store = h.open().await;
    let message_id = accepted(&store, "+27820000001", "k1").await;
    let lease = TimeDelta::seconds(30);
    let claimed = store.claim_due(t0(), lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.message_id, message_id);
    assert!(
        store.claim_due(t0(), lease, 10).await.unwrap().is_empty(),
        "claimed twice"
    );
    // Due again once the lease lapses; the lapsed claim may then no
    // longer store an outcome over the newer one.
    let retaken = store.claim_due(t0() + lease, lease, 10).await.unwrap();
    assert_eq!(retaken.len(), 1);
    let stale = &claimed[0];
    let err = store
        .finish_attempt(
            stale,
            &stale.delivery.submitted("wamid.stale".into(), t0()),
            t0(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    let fresh = &retaken[0];
    let state = store
        .finish_attempt(
            fresh,
            &fresh.delivery.submitted("wamid.fresh".into(), t0()),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        state.delivery.unwrap().wamid.as_deref(),
        Some("wamid.fresh")
    );
}

pub async fn retries_are_due_at_their_time_and_done_messages_leave_the_queue(h: &dyn Harness) {
    let store = h.open().await;
    let message_id = accepted(&store, "+27820000001", "k1").await;
    let claim = claim_next(&store, t0()).await;
    assert_eq!(claim.message.message_id, message_id);
    let retry_at = t0() + TimeDelta::seconds(5);
    store
        .finish_attempt(&claim, &claim.delivery.retry(retry_at, t0()), t0())
        .await
        .unwrap();
    assert!(
        store
            .claim_due(retry_at - TimeDelta::seconds(1), TimeDelta::seconds(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claim = claim_next(&store, retry_at).await;
    assert_eq!(claim.delivery.attempts, 1);
    let state = store
        .finish_attempt(
            &claim,
            &claim.delivery.submitted("wamid.1".into(), retry_at),
            retry_at,
        )
        .await
        .unwrap();
    assert_eq!(state.delivery.unwrap().status, DeliveryStatus::Submitted);
    assert!(
        store
            .claim_due(t0() + TimeDelta::days(1), TimeDelta::seconds(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_status_that_beats_the_api_answer_is_applied_when_the_wamid_arrives(h: &dyn Harness) {
    let store = h.open().await;
    let message_id = accepted(&store, "+27820000001", "k1").await;
    let claim = claim_next(&store, t0()).await;
    assert_eq!(claim.message.message_id, message_id);
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
            &claim,
            &claim.delivery.submitted("wamid.early".into(), t0()),
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

pub async fn a_provider_id_learned_from_a_status_stops_the_retries(h: &dyn Harness) {
    let store = h.open().await;
    let message_id = accepted(&store, "+27820000001", "k1").await;
    // The first attempt timed out, but the provider had taken the message.
    let claim = claim_next(&store, t0()).await;
    assert_eq!(claim.message.message_id, message_id);
    let other = accepted(&store, "+27820000002", "k2").await;
    let early = store
        .report_status("api-1", DeliveryStatus::Delivered, None, t0())
        .await
        .unwrap();
    assert_eq!(early, StatusReport::Early);
    let attached = store
        .attach_provider_id(message_id, "api-1", t0())
        .await
        .unwrap()
        .expect("the id is attached");
    let delivery = attached.delivery.unwrap();
    assert_eq!(delivery.wamid.as_deref(), Some("api-1"));
    assert_eq!(
        delivery.status,
        DeliveryStatus::Delivered,
        "the kept status applies"
    );
    assert_eq!(delivery.next_attempt_at, None, "no retry is due");
    // The timed-out attempt's claim can no longer store a retry.
    let timed_out = claim.delivery.retry(t0() + TimeDelta::seconds(1), t0());
    assert!(matches!(
        store.finish_attempt(&claim, &timed_out, t0()).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // Only the other message is ever due again.
    let later = t0() + TimeDelta::hours(1);
    let due = store
        .claim_due(later, TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    let due: Vec<_> = due.iter().map(|c| c.message.message_id).collect();
    assert_eq!(due, [other]);
    // Statuses for the id now reach the message.
    let read = store
        .report_status("api-1", DeliveryStatus::Read, None, t0())
        .await
        .unwrap();
    assert!(matches!(read, StatusReport::Applied(_)));
    // Nothing changes when the message has an id, the id is another
    // message's, or the message is unknown.
    for (id, provider_id) in [
        (message_id, "api-2"),
        (other, "api-1"),
        (Uuid::now_v7(), "api-3"),
    ] {
        assert_eq!(
            store
                .attach_provider_id(id, provider_id, t0())
                .await
                .unwrap(),
            None,
            "{provider_id}"
        );
    }
    let reread = store.message(message_id).await.unwrap().unwrap();
    assert_eq!(reread.delivery.unwrap().wamid.as_deref(), Some("api-1"));
}

pub async fn watchers_hear_every_stored_change(h: &dyn Harness) {
    let store = h.open().await;
    let mut updates = store.subscribe();
    let message_id = accepted(&store, "+27820000001", "k1").await;
    let first = updates.recv().await.unwrap();
    assert_eq!(first.message.message_id, message_id);
    assert_eq!(first.delivery.unwrap().status, DeliveryStatus::Accepted);
    let claim = claim_next(&store, t0()).await;
    store
        .finish_attempt(
            &claim,
            &claim.delivery.submitted("wamid.1".into(), t0()),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        updates.recv().await.unwrap().delivery.unwrap().status,
        DeliveryStatus::Submitted
    );
}

pub async fn statuses_for_wamids_that_never_arrive_are_swept_after_a_day(h: &dyn Harness) {
    let store = h.open().await;
    store
        .report_status(
            "wamid.elsewhere",
            wagate::domain::delivery::DeliveryStatus::Sent,
            None,
            t0(),
        )
        .await
        .unwrap();
    let retention = Retention::default();
    let early = sweep(&store, t0() + TimeDelta::hours(23), &retention).await;
    assert_eq!(early.early_statuses, 0);
    let late = sweep(&store, t0() + TimeDelta::hours(24), &retention).await;
    assert_eq!(late.early_statuses, 1);
    assert_eq!(
        sweep(&store, t0() + TimeDelta::hours(24), &retention).await,
        SweepCounts::default()
    );
}

pub async fn the_send_rate_is_shared_by_every_replica(h: &dyn Harness) {
    let first = h.open().await;
    let second = h.another_replica(&first).await;
    let rate = SendRate::new(4);
    let business = PhoneNumber::parse("+15550001111").unwrap();
    let other = PhoneNumber::parse("+15550002222").unwrap();
    // A burst of four, taken through both replicas in turn.
    for (n, replica) in [&first, &second, &first, &second].iter().enumerate() {
        let slot = replica
            .take_send_slot(business.as_str(), &rate, t0())
            .await
            .unwrap();
        assert_eq!(slot, Ok(()), "slot {n}");
    }
    let wait = second
        .take_send_slot(business.as_str(), &rate, t0())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(wait, TimeDelta::milliseconds(250));
    assert_eq!(
        first
            .take_send_slot(other.as_str(), &rate, t0())
            .await
            .unwrap(),
        Ok(()),
        "another number has its own rate"
    );
    let later = t0() + TimeDelta::milliseconds(250);
    assert_eq!(
        first
            .take_send_slot(business.as_str(), &rate, later)
            .await
            .unwrap(),
        Ok(())
    );
    // A pair has a rate of its own, beside its number's: WhatsApp's, one
    // message per 6 s after a burst (two here).
    let pair = wagate::domain::Pair {
        business: business.clone(),
        customer: PhoneNumber::parse("+27821234567").unwrap(),
    };
    let key = wagate::domain::delivery::pair_rate_key(&pair);
    let pair_rate = SendRate::every(TimeDelta::seconds(6), 2);
    for replica in [&first, &second] {
        assert_eq!(
            replica
                .take_send_slot(&key, &pair_rate, t0())
                .await
                .unwrap(),
            Ok(())
        );
    }
    assert_eq!(
        first.take_send_slot(&key, &pair_rate, t0()).await.unwrap(),
        Err(TimeDelta::seconds(6))
    );
}

pub async fn sweeping_on_every_replica_at_once_removes_each_record_once(h: &dyn Harness) {
    let first = h.open().await;
    let second = h.another_replica(&first).await;
    let backlog = 300;
    let retention = closed_backlog(&first, backlog).await;
    let now = Utc::now();
    let sweeps: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|replica| {
            tokio::spawn(async move {
                wagate::service::sweep(&**replica.store(), now, &retention, false).await
            })
        })
        .collect();
    let mut removed = 0;
    for sweep in sweeps {
        removed += sweep.await.unwrap().unwrap().windows;
    }
    assert_eq!(removed, backlog, "each window removed by one replica");
    assert_eq!(second.window(&pair("+27820000000")).await.unwrap(), None);
}

/// The delivery worker and the webhook pass the clock's nanoseconds; the
/// stores keep microseconds. What an outcome or a status returns, and what
/// watchers hear, is what a read finds afterwards.
pub async fn times_finer_than_stored_come_back_as_stored(h: &dyn Harness) {
    let store = h.open().await;
    let mut watch = store.subscribe();
    let message_id = accepted(&store, "+27820000001", "k1").await;
    let accepted_update = watch.recv().await.unwrap();
    assert_eq!(accepted_update.message.message_id, message_id);
    let fine = t0() + TimeDelta::nanoseconds(123_456_789);
    let claim = claim_next(&store, fine).await;
    let finished = store
        .finish_attempt(
            &claim,
            &claim.delivery.retry(fine + TimeDelta::seconds(5), fine),
            fine,
        )
        .await
        .unwrap();
    let read = store.message(message_id).await.unwrap().unwrap();
    assert_eq!(
        finished, read,
        "finish_attempt answered other times than it stored"
    );
    assert_eq!(
        watch.recv().await.unwrap(),
        read,
        "watchers heard other times"
    );
    let retry_at = read.delivery.as_ref().unwrap().next_attempt_at.unwrap();
    assert_eq!(retry_at.timestamp_subsec_nanos() % 1000, 0);
    let claim = claim_next(&store, retry_at).await;
    store
        .finish_attempt(
            &claim,
            &claim.delivery.submitted("wamid.fine".into(), fine),
            fine,
        )
        .await
        .unwrap();
    let _ = watch.recv().await.unwrap();
    let report = store
        .report_status("wamid.fine", DeliveryStatus::Delivered, None, fine)
        .await
        .unwrap();
    let StatusReport::Applied(applied) = report else {
        panic!("the status was not applied: {report:?}");
    };
    let read = store.message(message_id).await.unwrap().unwrap();
    assert_eq!(
        *applied, read,
        "report_status answered other times than it stored"
    );
}
