//! Consent through the service on each backend: opt-outs refuse what their
//! scope covers on every replica, opt-ins clear them, and WhatsApp's 131049
//! and 131050 are kept for the pair.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;
use wagate::domain::consent::{Scope, Source};
use wagate::domain::delivery::{DeliveryError, DeliveryStatus};
use wagate::domain::template::{Category, Status, TemplateId};
use wagate::domain::{Reason, SendRequest};
use wagate::service::Service;
use wagate::store::StatusReport;

use crate::cases::{Harness, draft, id, inbound, pair, reason, template_request, text_request};

const CUSTOMER: &str = "+27821234567";

async fn approved(store: &Service, name: &str, category: Category) -> TemplateId {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let id = TemplateId::parse(name, "en").unwrap();
    store
        .upsert_template(&id, &draft("Hi {{1}}, thanks for your order.", category), t)
        .await
        .unwrap();
    store
        .set_template_status(&id, Status::Approved, "", t)
        .await
        .unwrap();
    id
}

fn template_send(key: &str, id: &TemplateId) -> SendRequest {
    template_request(CUSTOMER, key, id)
}

/// Message `id`'s attempt as the worker stores it: claimed, then taken by
/// WhatsApp as `wamid`.
async fn submitted(store: &Service, id: Uuid, wamid: &str, now: DateTime<Utc>) {
    let claim = store
        .claim_due(now + TimeDelta::minutes(1), TimeDelta::seconds(30), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|claim| claim.message.message_id == id)
        .expect("the message is due");
    store
        .finish_attempt(&claim, &claim.delivery.submitted(wamid.into(), now), now)
        .await
        .unwrap();
}

pub async fn opt_outs_and_whatsapps_limits_are_kept_per_pair_on_every_replica(h: &dyn Harness) {
    let now = Utc::now();
    let store = h.open().await;
    let other = h.another_replica(&store).await;
    let marketing = approved(&store, "offer", Category::Marketing).await;
    let utility = approved(&store, "receipt", Category::Utility).await;
    let pair = template_send("k", &marketing).pair;
    let send = |store: &Service, key: &str, id: &TemplateId| {
        let (store, request) = (store.clone(), template_send(key, id));
        async move { store.send(&request, Uuid::now_v7(), now, false).await }
    };

    // Opted out of marketing through one replica: refused through the other.
    let kept = store
        .opt_out(&pair, Scope::Marketing, Source::Request, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.opt_out.as_ref().unwrap().scope, Scope::Marketing);
    assert_eq!(other.consent(&pair).await.unwrap(), Some(kept.clone()));
    // GetWindow's read: the window (none yet) and the consent at once.
    assert_eq!(
        other.window_and_consent(&pair).await.unwrap(),
        (None, Some(kept))
    );
    let refused = send(&other, "m-1", &marketing).await.unwrap_err();
    assert_eq!(reason(refused), Reason::CustomerOptedOut);
    send(&other, "u-1", &utility).await.expect("utility goes");
    // Scope ALL refuses utility too; opting back in clears it.
    other
        .opt_out(&pair, Scope::All, Source::Request, now)
        .await
        .unwrap();
    assert_eq!(
        reason(send(&store, "u-2", &utility).await.unwrap_err()),
        Reason::CustomerOptedOut
    );
    assert_eq!(store.opt_in(&pair).await.unwrap(), None);
    assert_eq!(other.consent(&pair).await.unwrap(), None);
    send(&other, "m-2", &marketing)
        .await
        .expect("opted back in");

    // WhatsApp's 131049 on a marketing template backs marketing off, kept
    // in the write that stores the failed status.
    let sent = send(&store, "m-3", &marketing).await.unwrap();
    submitted(&store, sent.message().message_id, "wamid.m-3", now).await;
    let failed = DeliveryError {
        code: 131_049,
        title: "This message was not delivered to maintain healthy ecosystem engagement.".into(),
    };
    let status = || store.report_status("wamid.m-3", DeliveryStatus::Failed, Some(&failed), now);
    assert!(matches!(status().await.unwrap(), StatusReport::Applied(_)));
    let limited = other.consent(&pair).await.unwrap().unwrap();
    assert!(limited.marketing_limited_until.unwrap() >= now + TimeDelta::hours(23));
    assert_eq!(limited.marketing_limits, 1);
    // The same status delivered again teaches nothing more.
    assert_eq!(status().await.unwrap(), StatusReport::Unchanged);
    assert_eq!(other.consent(&pair).await.unwrap(), Some(limited));
    let refused = send(&other, "m-4", &marketing).await.unwrap_err();
    assert_eq!(reason(refused), Reason::MarketingLimited);
    // 131050: the customer stopped marketing, learned from WhatsApp; here
    // the status arrived before the API's answer, and is learned from when
    // the attempt stores the wamid.
    let stopped = DeliveryError {
        code: 131_050,
        title: "User has stopped marketing messages".into(),
    };
    let receipt = send(&store, "u-3", &utility).await.unwrap();
    let early = store
        .report_status("wamid.u-3", DeliveryStatus::Failed, Some(&stopped), now)
        .await
        .unwrap();
    assert_eq!(early, StatusReport::Early);
    assert_eq!(other.consent(&pair).await.unwrap().unwrap().opt_out, None);
    submitted(&store, receipt.message().message_id, "wamid.u-3", now).await;
    let out = other
        .consent(&pair)
        .await
        .unwrap()
        .unwrap()
        .opt_out
        .unwrap();
    assert_eq!(
        (out.scope, out.source),
        (Scope::Marketing, Source::WhatsApp)
    );
    // Also when the provider's id is learned from the status itself (the
    // attempt timed out after the provider took the message).
    let elsewhere = template_request("+27821234569", "u-5", &utility);
    let timed_out = store
        .send(&elsewhere, Uuid::now_v7(), now, false)
        .await
        .unwrap();
    store
        .report_status("api-u-5", DeliveryStatus::Failed, Some(&stopped), now)
        .await
        .unwrap();
    store
        .attach_provider_id(timed_out.message().message_id, "api-u-5", now)
        .await
        .unwrap()
        .expect("the id is attached");
    let out = other.consent(&elsewhere.pair).await.unwrap().unwrap();
    assert_eq!(out.opt_out.unwrap().source, Source::WhatsApp);

    // A keyword is the customer's whole message.
    let another = text_request("+27821234568", "x", "unused").pair;
    assert!(
        !store
            .note_customer_text(&another, "please stop by", now)
            .await
            .unwrap()
    );
    assert_eq!(store.consent(&another).await.unwrap(), None);
    assert!(
        store
            .note_customer_text(&another, "Stop", now)
            .await
            .unwrap()
    );
    let by_keyword = other.consent(&another).await.unwrap().unwrap();
    assert_eq!(by_keyword.opt_out.unwrap().source, Source::Keyword);

    // Kept across a reopen.
    drop((store, other));
    let reopened = h.open().await;
    assert!(reopened.consent(&pair).await.unwrap().is_some());
}

/// Many GetWindow reads at once through a replica (PostgreSQL gathers them
/// into shared statements under load): each gets its own pair's window and
/// consent, a pair asked twice at once gets the same answer twice, and a
/// pair with neither gets neither.
pub async fn many_window_reads_at_once_each_get_their_own_pair(h: &dyn Harness) {
    let store = h.open().await;
    let other = h.another_replica(&store).await;
    many_window_reads_at_once(&store, &other).await;
}

/// Writes through `writer`, then reads 2 × 300 pairs at once through
/// `reader` and checks every answer.
pub async fn many_window_reads_at_once(writer: &Service, reader: &Service) {
    const PAIRS: usize = 300;
    let now = Utc::now();
    let customer = |i: usize| pair(&format!("+2782{i:07}"));
    for i in 0..PAIRS {
        // A window for two pairs in three, consent for one in five.
        if i % 3 != 0 {
            let at = now - chrono::TimeDelta::minutes(i as i64);
            writer
                .record_inbound(
                    &customer(i),
                    &id(&format!("wamid.many-{i}")),
                    &inbound(at),
                    now,
                )
                .await
                .unwrap();
        }
        if i % 5 == 0 {
            writer
                .opt_out(&customer(i), Scope::Marketing, Source::Request, now)
                .await
                .unwrap();
        }
    }
    let reads: Vec<_> = (0..2 * PAIRS)
        .map(|n| {
            let (reader, i) = (reader.clone(), n % PAIRS);
            tokio::spawn(async move { (i, reader.window_and_consent(&customer(i)).await) })
        })
        .collect();
    for read in reads {
        let (i, answer) = read.await.unwrap();
        let (window, consent) = answer.unwrap();
        match window {
            Some(window) => {
                assert_ne!(i % 3, 0, "pair {i} has no window");
                let at = wagate::domain::time::stored(now - chrono::TimeDelta::minutes(i as i64));
                assert_eq!(window.last_inbound_at, at, "pair {i}'s own window");
            }
            None => assert_eq!(i % 3, 0, "pair {i}'s window is missing"),
        }
        match consent {
            Some(consent) => {
                assert_eq!(i % 5, 0, "pair {i} has no consent");
                assert_eq!(consent.opt_out.unwrap().scope, Scope::Marketing);
            }
            None => assert_ne!(i % 5, 0, "pair {i}'s consent is missing"),
        }
    }
}
