//! The messaging limit through the service on each backend: the count of
//! customers reached outside their window is exact when replicas send at
//! once, reached customers and window replies are not counted, and the
//! count outlives a reopen and rolls off after a day.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;
use wagate::domain::account::{AccountDraft, AccountId, Credentials, PhoneNumberId, Route};
use wagate::domain::messaging_limit::MessagingLimit;
use wagate::domain::policy::SendPolicy;
use wagate::domain::retention::Retention;
use wagate::domain::template::{Category, Status, TemplateId};
use wagate::domain::{
    EntryPoint, Inbound, InboundKind, InboundMessageId, PhoneNumber, Reason, SendRequest,
};
use wagate::service::Service;
use wagate::store::StoreError;

use crate::cases::{Harness, draft, reason, template_request, text_request};

const LIMIT: u32 = 5;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

fn limited(store: Service) -> Service {
    store.with_policy(SendPolicy::default().with_messaging_limit(MessagingLimit::Customers(LIMIT)))
}

fn template_send(customer: &str, key: &str, id: &TemplateId) -> SendRequest {
    template_request(customer, key, id)
}

/// Registers `id` with a utility body and approves it.
async fn approved(store: &Service, id: &TemplateId) {
    store
        .upsert_template(id, &draft_body(), t0())
        .await
        .unwrap();
    store
        .set_template_status(id, Status::Approved, "", t0())
        .await
        .unwrap();
}

fn customer(n: usize) -> String {
    format!("+2782{n:07}")
}

async fn send(store: &Service, request: SendRequest, at: DateTime<Utc>) -> Result<(), StoreError> {
    store
        .send(&request, Uuid::now_v7(), at, false)
        .await
        .map(drop)
}

pub async fn the_messaging_limit_counts_each_customer_once_on_every_replica(h: &dyn Harness) {
    let store = limited(h.open().await);
    let other = limited(h.another_replica(&store).await);
    let id = TemplateId::parse("receipt", "en").unwrap();
    approved(&store, &id).await;

    // Twenty new customers at once, through two replicas: exactly LIMIT go.
    let sends: Vec<_> = (0..20)
        .map(|n| {
            let replica = if n % 2 == 0 { &store } else { &other };
            let (replica, request) = (
                replica.clone(),
                template_send(&customer(n), &format!("k{n}"), &id),
            );
            tokio::spawn(async move { send(&replica, request, t0()).await })
        })
        .collect();
    let mut reached = Vec::new();
    for (n, outcome) in sends.into_iter().enumerate() {
        match outcome.await.unwrap() {
            Ok(()) => reached.push(n),
            Err(error) => {
                let StoreError::Rejected(refused) = error else {
                    panic!("send {n} failed: {error}");
                };
                assert_eq!(refused.reason, Reason::MessagingLimitReached);
                let wait = refused.retry_after.expect("RetryInfo");
                // The first reach's minute counts for a day and a minute.
                assert_eq!(
                    wait,
                    (TimeDelta::hours(24) + TimeDelta::minutes(1))
                        .to_std()
                        .unwrap()
                );
            }
        }
    }
    assert_eq!(reached.len(), LIMIT as usize, "reached: {reached:?}");

    // A reached customer is served again, on either replica, and counts
    // nothing more; a dry run for a new one is refused and stores nothing.
    let later = t0() + TimeDelta::hours(3);
    let again = customer(reached[0]);
    send(&other, template_send(&again, "again-1", &id), later)
        .await
        .unwrap();
    send(&store, template_send(&again, "again-2", &id), later)
        .await
        .unwrap();
    let dry = store
        .send(
            &template_send(&customer(99), "dry", &id),
            Uuid::now_v7(),
            later,
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(reason(dry), Reason::MessagingLimitReached);

    // A customer who wrote in is answered inside the window, template or
    // not, and is not counted.
    let writer = customer(50);
    let pair = text_request(&writer, "x", "x").pair;
    let inbound = Inbound {
        received_at: later,
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    };
    store
        .record_inbound(
            &pair,
            &InboundMessageId::parse("wamid.in-50").unwrap(),
            &inbound,
            later,
        )
        .await
        .unwrap();
    send(&other, template_send(&writer, "w-1", &id), later)
        .await
        .unwrap();
    send(
        &other,
        text_request(&writer, "w-2", "Your parcel left."),
        later,
    )
    .await
    .unwrap();

    // The count is stored: a reopened store still refuses a new customer.
    drop((store, other));
    let store = limited(h.open().await);
    let refused = send(&store, template_send(&customer(20), "k20", &id), later).await;
    assert_eq!(reason(refused.unwrap_err()), Reason::MessagingLimitReached);

    // A day and a minute after the first reaches, new customers go again,
    // the sweep drops the lapsed reaches, and the count starts afresh.
    let next_day = t0() + TimeDelta::hours(24) + TimeDelta::minutes(1);
    // Seen from just before the day is up, the first customers still count
    // as reached; once the sweep at `next_day` has dropped their reaches,
    // the same look finds them new (which shows the sweep removed them).
    let just_before = t0() + TimeDelta::hours(23);
    let first = customer(reached[0]);
    let dry_send = |key: &str| {
        let request = template_send(&first, key, &id);
        let store = store.clone();
        async move {
            store
                .send(&request, Uuid::now_v7(), just_before, true)
                .await
        }
    };
    dry_send("before-sweep")
        .await
        .expect("reached: not counted again");
    wagate::service::sweep(&**store.store(), next_day, &Retention::default(), false)
        .await
        .unwrap();
    let swept = dry_send("after-sweep").await.unwrap_err();
    assert_eq!(reason(swept), Reason::MessagingLimitReached);
    for n in 20..20 + LIMIT as usize {
        send(
            &store,
            template_send(&customer(n), &format!("k{n}-b"), &id),
            next_day,
        )
        .await
        .unwrap();
    }
    let refused = send(&store, template_send(&customer(40), "k40", &id), next_day).await;
    assert_eq!(reason(refused.unwrap_err()), Reason::MessagingLimitReached);
}

/// A template send from `business`.
fn send_from(business: &str, customer: &str, key: &str, id: &TemplateId) -> SendRequest {
    let mut request = template_send(customer, key, id);
    request.pair.business = PhoneNumber::parse(business).unwrap();
    request
}

pub async fn an_account_with_its_own_messaging_limit_is_counted_apart(h: &dyn Harness) {
    let store = limited(h.open().await);
    let other = limited(h.another_replica(&store).await);
    let (own, shared) = (
        AccountId::parse("111").unwrap(),
        AccountId::parse("222").unwrap(),
    );
    let draft = |limit| AccountDraft {
        display_name: "Brand".into(),
        delivery: false,
        credentials: Credentials::None,
        messaging_limit: limit,
    };
    let name = TemplateId::parse("receipt", "en").unwrap();
    for (account, limit, business, phone_number_id) in [
        (
            &own,
            Some(MessagingLimit::Customers(1)),
            "+15550001111",
            "1",
        ),
        (&shared, None, "+15550002222", "2"),
    ] {
        store
            .create_account(account, &draft(limit), t0())
            .await
            .unwrap();
        let route = Route::CloudApi(PhoneNumberId::parse(phone_number_id).unwrap());
        store
            .register_number(
                &PhoneNumber::parse(business).unwrap(),
                &route,
                account,
                t0(),
            )
            .await
            .unwrap();
        approved(&store, &name.clone().in_account(account.clone())).await;
    }
    let (c1, c2, c3, c4) = (customer(1), customer(2), customer(3), customer(4));

    // The account's own limit of 1, read through either replica.
    send(&store, send_from("+15550001111", &c1, "a-1", &name), t0())
        .await
        .unwrap();
    let refused = send(&other, send_from("+15550001111", &c2, "a-2", &name), t0())
        .await
        .unwrap_err();
    let StoreError::Rejected(refused) = refused else {
        panic!("{refused}");
    };
    assert_eq!(refused.reason, Reason::MessagingLimitReached);
    assert_eq!(refused.metadata["messaging_limit"], "1");
    // The other account shares the deployment's portfolio (limit 5): the
    // account's count is not its, and a customer the first reached is new
    // to it.
    for (customer, key) in [(&c2, "b-2"), (&c1, "b-1")] {
        send(
            &other,
            send_from("+15550002222", customer, key, &name),
            t0(),
        )
        .await
        .unwrap();
    }
    // Unlimited: nothing counted; back to sharing: the portfolio's count.
    let set_own_limit = |limit| {
        let store = store.clone();
        let own = own.clone();
        async move {
            store
                .update_account(&own, &draft(limit), t0())
                .await
                .unwrap()
        }
    };
    let unlimited = set_own_limit(Some(MessagingLimit::Unlimited)).await;
    assert_eq!(unlimited.messaging_limit, Some(MessagingLimit::Unlimited));
    send(&other, send_from("+15550001111", &c3, "a-3", &name), t0())
        .await
        .unwrap();
    set_own_limit(None).await;
    for n in 0..3 {
        let c = customer(10 + n);
        send(
            &store,
            send_from("+15550001111", &c, &format!("s-{n}"), &name),
            t0(),
        )
        .await
        .unwrap();
    }
    let refused = send(&other, send_from("+15550002222", &c4, "b-4", &name), t0()).await;
    assert_eq!(
        reason(refused.unwrap_err()),
        Reason::MessagingLimitReached,
        "2 + 3 of the portfolio's 5 were used"
    );
    // The account's setting survives a reopen.
    set_own_limit(Some(MessagingLimit::Customers(2_000))).await;
    drop((store, other));
    let store = h.open().await;
    let kept = store.account(&own).await.unwrap().unwrap();
    assert_eq!(kept.messaging_limit, Some(MessagingLimit::Customers(2_000)));
    let kept = store.account(&shared).await.unwrap().unwrap();
    assert_eq!(kept.messaging_limit, None);
}

fn draft_body() -> wagate::domain::template::TemplateContent {
    draft("Hi {{1}}, thanks for your order.", Category::Utility)
}

/// A campaign's burst: 256 new customers at once through three replicas
/// under a limit of 200. Every send is answered (none runs out of tries on
/// the contended usage record) and exactly 200 are accepted.
pub async fn a_burst_of_new_customers_fills_the_limit_exactly_and_every_send_is_answered(
    h: &dyn Harness,
) {
    let limit = |store: Service| {
        store
            .with_policy(SendPolicy::default().with_messaging_limit(MessagingLimit::Customers(200)))
    };
    let first = limit(h.open().await);
    let replicas = [
        first.clone(),
        limit(h.another_replica(&first).await),
        limit(h.another_replica(&first).await),
    ];
    let id = TemplateId::parse("receipt", "en").unwrap();
    approved(&first, &id).await;
    let sends: Vec<_> = (0..256)
        .map(|n| {
            let replica = replicas[n % 3].clone();
            let request = template_send(&customer(1000 + n), &format!("burst-{n}"), &id);
            tokio::spawn(async move { send(&replica, request, t0()).await })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for outcome in sends {
        match outcome.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(StoreError::Rejected(r)) if r.reason == Reason::MessagingLimitReached => {
                refused += 1
            }
            Err(error) => panic!("a send failed instead of being answered: {error}"),
        }
    }
    assert_eq!((accepted, refused), (200, 56));
}
