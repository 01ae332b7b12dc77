//! Accounts and business numbers, run by `main.rs` on every backend: the
//! registry's rules hold through the store, concurrent registrations of
//! one phone number id keep it on one number, and everything survives a
//! reopen.

use chrono::{TimeZone, Utc};

use std::collections::BTreeMap;
use wagate::domain::account::{AccountDraft, AccountId, Credentials, PhoneNumberId, Route};
use wagate::domain::clickatell::{Integration, IntegrationId};

use uuid::Uuid;
use wagate::domain::template::{Category, ComponentParameters, SendParameters, Status, TemplateId};
use wagate::domain::{Content, Pair, PhoneNumber, Reason, SendRequest};
use wagate::store::StoreError;

use crate::cases::{Harness, reason, text_request};

fn waba(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn number(e164: &str) -> PhoneNumber {
    PhoneNumber::parse(e164).unwrap()
}

/// The Cloud API route through this phone number id.
fn id(digits: &str) -> Route {
    Route::CloudApi(PhoneNumberId::parse(digits).unwrap())
}

/// A Clickatell route through this integration.
fn clickatell(integration: &str) -> Route {
    Route::Clickatell(
        Integration::new(
            IntegrationId::parse(integration).unwrap(),
            Credentials::env_var("CLICKATELL_KEY").unwrap(),
            Credentials::file("/run/secrets/clickatell-callback").unwrap(),
        )
        .unwrap(),
    )
}

fn account_draft(name: &str, token_env: Option<&str>) -> AccountDraft {
    AccountDraft {
        display_name: name.to_owned(),
        delivery: token_env.is_some(),
        credentials: token_env.map_or(Credentials::None, |name| {
            Credentials::env_var(name).unwrap()
        }),
        messaging_limit: None,
    }
}

fn refused(result: Result<impl std::fmt::Debug, StoreError>) -> Reason {
    match result {
        Err(StoreError::Rejected(rejection)) => rejection.reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub async fn accounts_and_numbers_follow_the_registry_rules_and_survive_reopen(h: &dyn Harness) {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let store = h.open().await;
    let brand_a = waba("102290129340398");
    let brand_b = waba("203301230451409");

    assert!(store.list_accounts().await.unwrap().is_empty());
    let a = store
        .create_account(
            &brand_a,
            &account_draft("Brand A", Some("BRAND_A_TOKEN")),
            t,
        )
        .await
        .unwrap();
    assert_eq!(a.display_name, "Brand A");
    assert_eq!(
        a.credentials,
        Credentials::EnvVar("BRAND_A_TOKEN".to_owned())
    );
    store
        .create_account(&brand_b, &account_draft("Brand B", None), t)
        .await
        .unwrap();
    assert_eq!(
        refused(
            store
                .create_account(&brand_b, &account_draft("again", None), t)
                .await
        ),
        Reason::AccountExists
    );
    assert_eq!(
        refused(
            store
                .update_account(&waba("999"), &account_draft("nobody", None), t)
                .await
        ),
        Reason::AccountNotFound
    );
    let later = t + chrono::Duration::minutes(5);
    let renamed = store
        .update_account(&brand_b, &account_draft("Brand B (EU)", None), later)
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Brand B (EU)");
    assert_eq!((renamed.created_at, renamed.updated_at), (t, later));

    // Numbers: one account each, one number per phone number id.
    let (first, changed) = store
        .register_number(&number("+15550001111"), &id("1065"), &brand_a, t)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(first.account, brand_a);
    let (_, changed) = store
        .register_number(&number("+15550001111"), &id("1065"), &brand_a, later)
        .await
        .unwrap();
    assert!(!changed, "registering the same again changes nothing");
    assert_eq!(
        refused(
            store
                .register_number(&number("+15550001111"), &id("2077"), &brand_b, t)
                .await
        ),
        Reason::BusinessNumberInOtherAccount
    );
    assert_eq!(
        refused(
            store
                .register_number(&number("+15550002222"), &id("1065"), &brand_b, t)
                .await
        ),
        Reason::PhoneNumberIdInUse
    );
    assert_eq!(
        refused(
            store
                .register_number(&number("+15550002222"), &id("2077"), &waba("999"), t)
                .await
        ),
        Reason::AccountNotFound
    );
    store
        .register_number(&number("+15550002222"), &id("2077"), &brand_b, t)
        .await
        .unwrap();
    // A new id for a number frees the old one for another number.
    store
        .register_number(&number("+15550001111"), &id("1066"), &brand_a, later)
        .await
        .unwrap();
    store
        .register_number(&number("+15550003333"), &id("1065"), &brand_a, later)
        .await
        .unwrap();

    drop(store);
    let store = h.open().await;
    let accounts = store.list_accounts().await.unwrap();
    let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["102290129340398", "203301230451409"]);
    assert_eq!(accounts[1].display_name, "Brand B (EU)");
    assert_eq!(store.account(&brand_a).await.unwrap(), Some(a));
    let of_a: Vec<(String, String)> = store
        .list_numbers(Some(&brand_a))
        .await
        .unwrap()
        .into_iter()
        .map(|n| {
            (
                n.number.as_str().to_owned(),
                n.phone_number_id().unwrap().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        of_a,
        [
            ("+15550001111".to_owned(), "1066".to_owned()),
            ("+15550003333".to_owned(), "1065".to_owned())
        ]
    );
    let kept = store
        .business_number(&number("+15550001111"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.registered_at, t,
        "a new id keeps the registration time"
    );
    assert_eq!(store.list_numbers(None).await.unwrap().len(), 3);

    // Removing a number frees it and its id.
    assert!(store.remove_number(&number("+15550002222")).await.unwrap());
    assert!(!store.remove_number(&number("+15550002222")).await.unwrap());
    assert_eq!(
        store
            .business_number(&number("+15550002222"))
            .await
            .unwrap(),
        None
    );
    store
        .register_number(&number("+15550002222"), &id("2077"), &brand_a, later)
        .await
        .unwrap();
    assert_eq!(store.list_numbers(Some(&brand_b)).await.unwrap(), []);
}

pub async fn concurrent_registrations_keep_a_phone_number_id_on_one_number(h: &dyn Harness) {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let first = h.open().await;
    let brand = waba("102290129340398");
    first
        .create_account(&brand, &account_draft("Brand", None), t)
        .await
        .unwrap();
    let second = h.another_replica(&first).await;
    // Eight numbers race for one id, half through each replica.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let brand = brand.clone();
            tokio::spawn(async move {
                store
                    .register_number(
                        &number(&format!("+1555000{:04}", 4000 + i)),
                        &id("4242"),
                        &brand,
                        t,
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Rejected(r)) => assert_eq!(r.reason, Reason::PhoneNumberIdInUse),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(won, 1, "exactly one number gets the id");
    let numbers = second.list_numbers(Some(&brand)).await.unwrap();
    assert_eq!(numbers.len(), 1);
    assert_eq!(numbers[0].route, id("4242"));
}

pub async fn a_number_sent_for_by_clickatell_keeps_its_integration(h: &dyn Harness) {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let store = h.open().await;
    let brand = waba("102290129340398");
    store
        .create_account(&brand, &account_draft("Brand", None), t)
        .await
        .unwrap();
    let (stored, changed) = store
        .register_number(&number("+27821230000"), &clickatell("a1b2c3"), &brand, t)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(stored.route, clickatell("a1b2c3"));
    assert_eq!(stored.phone_number_id(), None);
    // Read back as written, through another replica too.
    let other = h.another_replica(&store).await;
    let read = other
        .business_number(&number("+27821230000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, stored);
    // The same again changes nothing; a new integration replaces it.
    let (_, changed) = other
        .register_number(&number("+27821230000"), &clickatell("a1b2c3"), &brand, t)
        .await
        .unwrap();
    assert!(!changed);
    let (moved, changed) = other
        .register_number(&number("+27821230000"), &clickatell("d4e5f6"), &brand, t)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(moved.route, clickatell("d4e5f6"));

    // A Cloud API number moved to Clickatell frees its phone number id.
    store
        .register_number(&number("+15550001111"), &id("1065"), &brand, t)
        .await
        .unwrap();
    store
        .register_number(&number("+15550001111"), &clickatell("g7h8"), &brand, t)
        .await
        .unwrap();
    let (taken, _) = store
        .register_number(&number("+15550002222"), &id("1065"), &brand, t)
        .await
        .unwrap();
    assert_eq!(taken.route, id("1065"));
    let routes: Vec<Route> = store
        .list_numbers(Some(&brand))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.route)
        .collect();
    // By number.
    assert_eq!(
        routes,
        [clickatell("g7h8"), id("1065"), clickatell("d4e5f6")]
    );
    // Removing a Clickatell number leaves the others as they were.
    assert!(store.remove_number(&number("+27821230000")).await.unwrap());
    assert_eq!(store.list_numbers(Some(&brand)).await.unwrap().len(), 2);
}

/// A send of `template` from `business` to one customer, key `key`.
fn template_send(business: &str, key: &str, template: &TemplateId) -> SendRequest {
    SendRequest {
        pair: Pair {
            business: number(business),
            customer: number("+27821234567"),
        },
        content: Content::Template {
            id: template.clone(),
            parameters: SendParameters {
                body: ComponentParameters {
                    positional: vec!["Ann".into()],
                    named: BTreeMap::new(),
                },
                ..Default::default()
            },
        },
        ..text_request("+27821234567", key, "unused")
    }
}

pub async fn each_number_sends_its_own_accounts_template(h: &dyn Harness) {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let store = h.open().await;
    let name = TemplateId::parse("order_update", "en").unwrap();
    let rendered = |sent: wagate::store::SendOutcome| sent.message().accepted.rendered_text.clone();

    // Before any account exists every number sends in the default account.
    store
        .upsert_template(
            &name,
            &crate::cases::draft("Default: {{1}}, welcome back.", Category::Utility),
            t,
        )
        .await
        .unwrap();
    store
        .set_template_status(&name, Status::Approved, "", t)
        .await
        .unwrap();
    let before = store
        .send(
            &template_send("+15550003333", "k-0", &name),
            Uuid::now_v7(),
            t,
            false,
        )
        .await
        .unwrap();
    assert_eq!(rendered(before), "Default: Ann, welcome back.");

    // Two accounts, one template name, different bodies and statuses.
    let (brand_a, brand_b) = (waba("111"), waba("222"));
    for (id, name_) in [(&brand_a, "A"), (&brand_b, "B")] {
        store
            .create_account(id, &account_draft(name_, None), t)
            .await
            .unwrap();
    }
    let in_a = name.clone().in_account(brand_a.clone());
    let in_b = name.clone().in_account(brand_b.clone());
    store
        .upsert_template(
            &in_a,
            &crate::cases::draft("A says hi, {{1}}, welcome back.", Category::Utility),
            t,
        )
        .await
        .unwrap();
    store
        .set_template_status(&in_a, Status::Approved, "", t)
        .await
        .unwrap();
    store
        .upsert_template(
            &in_b,
            &crate::cases::draft("B says hello, {{1}}, welcome back.", Category::Marketing),
            t,
        )
        .await
        .unwrap();
    store
        .register_number(&number("+15550001111"), &id("1"), &brand_a, t)
        .await
        .unwrap();
    store
        .register_number(&number("+15550002222"), &id("2"), &brand_b, t)
        .await
        .unwrap();

    let from_a = store
        .send(
            &template_send("+15550001111", "k-a", &name),
            Uuid::now_v7(),
            t,
            false,
        )
        .await
        .unwrap();
    assert_eq!(rendered(from_a), "A says hi, Ann, welcome back.");
    // B's is still PENDING: refused, although A's of the same name is not.
    let pending = store
        .send(
            &template_send("+15550002222", "k-b", &name),
            Uuid::now_v7(),
            t,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(reason(pending), Reason::TemplateNotApproved);
    store
        .set_template_status(&in_b, Status::Approved, "", t)
        .await
        .unwrap();
    let from_b = store
        .send(
            &template_send("+15550002222", "k-b", &name),
            Uuid::now_v7(),
            t,
            false,
        )
        .await
        .unwrap();
    assert_eq!(rendered(from_b.clone()), "B says hello, Ann, welcome back.");
    assert_eq!(
        from_b.message().accepted.pricing.category,
        wagate::domain::PricingCategory::Marketing,
        "priced by B's template's category"
    );

    // Now that accounts exist, an unregistered number sends nothing, a
    // dry run included.
    for dry_run in [true, false] {
        let refused = store
            .send(
                &template_send("+15550003333", "k-c", &name),
                Uuid::now_v7(),
                t,
                dry_run,
            )
            .await
            .unwrap_err();
        assert_eq!(reason(refused), Reason::BusinessNumberNotRegistered);
    }
    let text = SendRequest {
        pair: Pair {
            business: number("+15550003333"),
            customer: number("+27821234567"),
        },
        ..text_request("+27821234567", "k-d", "hello")
    };
    let refused = store
        .send(&text, Uuid::now_v7(), t, false)
        .await
        .unwrap_err();
    assert_eq!(reason(refused), Reason::BusinessNumberNotRegistered);

    // Each account lists its own; a reopen keeps them apart.
    drop(store);
    let store = h.open().await;
    let listed = |page: wagate::store::TemplatePage| -> Vec<String> {
        page.templates
            .iter()
            .map(|t| t.content.body.clone())
            .collect()
    };
    let filter = wagate::domain::template::TemplateFilter::default();
    assert_eq!(
        listed(
            store
                .list_templates(&brand_a, None, 10, &filter)
                .await
                .unwrap()
        ),
        ["A says hi, {{1}}, welcome back."]
    );
    assert_eq!(
        listed(
            store
                .list_templates(&AccountId::default_account(), None, 10, &filter)
                .await
                .unwrap()
        ),
        ["Default: {{1}}, welcome back."]
    );
    let b = store.template(&in_b).await.unwrap().unwrap();
    assert_eq!(
        (b.content.body.as_str(), b.status),
        ("B says hello, {{1}}, welcome back.", Status::Approved)
    );
    assert_eq!(b.id.account(), &brand_b);
    // A template of an account nobody registered is refused.
    let nowhere = store
        .upsert_template(
            &name.clone().in_account(waba("333")),
            &crate::cases::draft("x {{1}}", Category::Utility),
            t,
        )
        .await
        .unwrap_err();
    assert_eq!(reason(nowhere), Reason::AccountNotFound);
}

pub async fn a_template_sync_writes_one_accounts_registry_at_once(h: &dyn Harness) {
    use wagate::domain::template_sync::{FetchedTemplate, SyncCounts};
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let store = h.open().await;
    let brand = waba("102290129340398");
    store
        .create_account(&brand, &account_draft("Brand", Some("BRAND_TOKEN")), t)
        .await
        .unwrap();
    // The default account's template of the same name is not the brand's.
    let name = TemplateId::parse("order_update", "en").unwrap();
    store
        .upsert_template(
            &name,
            &crate::cases::draft("Default {{1}}, welcome back.", Category::Utility),
            t,
        )
        .await
        .unwrap();
    let fetched = |body: &str, status: Status| FetchedTemplate {
        id: name.clone().in_account(brand.clone()),
        status,
        reason: String::new(),
        content: crate::cases::draft(body, Category::Utility),
        whatsapp_id: Some("594425479261596".into()),
    };
    let first = store
        .apply_template_sync(&brand, &[fetched("Brand {{1}}", Status::Approved)], &[], t)
        .await
        .unwrap();
    assert_eq!(
        first,
        SyncCounts {
            created: 1,
            ..Default::default()
        }
    );
    let later = t + chrono::Duration::minutes(15);
    let second = store
        .apply_template_sync(
            &brand,
            &[fetched("Brand v2 {{1}}", Status::Paused)],
            &[],
            later,
        )
        .await
        .unwrap();
    assert_eq!(second.updated, 1);

    drop(store);
    let store = h.open().await;
    let synced = store
        .template(&name.clone().in_account(brand.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (synced.content.body.as_str(), synced.status),
        ("Brand v2 {{1}}", Status::Paused)
    );
    assert_eq!((synced.created_at, synced.updated_at), (t, later));
    assert_eq!(synced.whatsapp_id.as_deref(), Some("594425479261596"));
    let default = store.template(&name).await.unwrap().unwrap();
    assert_eq!(
        default.content.body, "Default {{1}}, welcome back.",
        "another account's sync leaves it"
    );
    let report = store.account(&brand).await.unwrap().unwrap().sync.unwrap();
    assert_eq!(
        (report.attempted_at, report.last_good_at),
        (later, Some(later))
    );
    assert_eq!(report.counts.updated, 1);
    // A failure keeps the last good time.
    let failed = store
        .record_sync(
            &brand,
            Err("the Graph API answered 500".into()),
            later + chrono::Duration::minutes(15),
        )
        .await
        .unwrap()
        .sync
        .unwrap();
    assert_eq!(failed.last_good_at, Some(later));
    assert_eq!(failed.error, "the Graph API answered 500");
}
