//! Accounts and business numbers, run by `main.rs` on every backend: the
//! registry's rules hold through the store, concurrent registrations of
//! one phone number id keep it on one number, and everything survives a
//! reopen.

use chrono::{TimeZone, Utc};

use wagate::domain::account::{AccountDraft, AccountId, Credentials, PhoneNumberId};
use wagate::domain::{PhoneNumber, Reason};
use wagate::store::StoreError;

use crate::cases::Harness;

fn waba(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn number(e164: &str) -> PhoneNumber {
    PhoneNumber::parse(e164).unwrap()
}

fn id(digits: &str) -> PhoneNumberId {
    PhoneNumberId::parse(digits).unwrap()
}

fn draft(name: &str, token_env: Option<&str>) -> AccountDraft {
    AccountDraft {
        display_name: name.to_owned(),
        delivery: token_env.is_some(),
        credentials: token_env.map_or(Credentials::None, |name| {
            Credentials::env_var(name).unwrap()
        }),
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
        .create_account(&brand_a, &draft("Brand A", Some("BRAND_A_TOKEN")), t)
        .await
        .unwrap();
    assert_eq!(a.display_name, "Brand A");
    assert_eq!(
        a.credentials,
        Credentials::EnvVar("BRAND_A_TOKEN".to_owned())
    );
    store
        .create_account(&brand_b, &draft("Brand B", None), t)
        .await
        .unwrap();
    assert_eq!(
        refused(
            store
                .create_account(&brand_b, &draft("again", None), t)
                .await
        ),
        Reason::AccountExists
    );
    assert_eq!(
        refused(
            store
                .update_account(&waba("999"), &draft("nobody", None), t)
                .await
        ),
        Reason::AccountNotFound
    );
    let later = t + chrono::Duration::minutes(5);
    let renamed = store
        .update_account(&brand_b, &draft("Brand B (EU)", None), later)
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
                n.phone_number_id.as_str().to_owned(),
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
        .create_account(&brand, &draft("Brand", None), t)
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
    assert_eq!(numbers[0].phone_number_id, id("4242"));
}
