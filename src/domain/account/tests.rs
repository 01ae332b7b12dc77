use chrono::TimeZone;

use super::*;
use crate::domain::clickatell::IntegrationId;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

fn waba(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn draft(name: &str) -> AccountDraft {
    AccountDraft {
        display_name: name.to_owned(),
        delivery: false,
        credentials: Credentials::None,
        messaging_limit: None,
    }
}

fn account(id: &str) -> Account {
    match plan_create(None, &waba(id), &draft("Brand"), now()).unwrap() {
        AccountWrite::Put(account) => account,
        other => panic!("{other:?}"),
    }
}

fn number(e164: &str, id: &str, account: &str) -> BusinessNumber {
    BusinessNumber {
        number: PhoneNumber::parse(e164).unwrap(),
        route: Route::CloudApi(PhoneNumberId::parse(id).unwrap()),
        account: waba(account),
        registered_at: now(),
    }
}

#[test]
fn account_ids_are_digits_or_the_default() {
    assert!(waba("").is_default());
    assert!(waba("default").is_default());
    assert_eq!(waba(" 102290129340398 ").as_str(), "102290129340398");
    for bad in ["abc", "12a", "-1", "123456789012345678901", "1.5"] {
        let refused = AccountId::parse(bad).unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidAccount, "{bad}");
    }
}

#[test]
fn credentials_are_a_reference_never_a_token() {
    assert_eq!(
        Credentials::env_var("WABA_BRAND_A_TOKEN").unwrap(),
        Credentials::EnvVar("WABA_BRAND_A_TOKEN".into())
    );
    for bad in ["", "1TOKEN", "MY-TOKEN", "EAAG token"] {
        assert_eq!(
            Credentials::env_var(bad).unwrap_err().reason,
            Reason::InvalidAccount,
            "{bad:?}"
        );
    }
    assert!(Credentials::file("/var/run/secrets/waba/token").is_ok());
    assert!(Credentials::file("token.txt").is_err());
}

#[test]
fn create_refuses_an_existing_account_and_update_a_missing_one() {
    let brand = account("102290129340398");
    let again = plan_create(Some(&brand), &brand.id, &draft("Other"), now()).unwrap_err();
    assert_eq!(again.reason, Reason::AccountExists);
    let missing = plan_update(None, &waba("555"), &draft("x"), now()).unwrap_err();
    assert_eq!(missing.reason, Reason::AccountNotFound);
    assert_eq!(missing.kind(), crate::domain::RejectionKind::NotFound);
}

#[test]
fn update_changes_what_differs_and_keeps_the_creation_time() {
    let brand = account("102290129340398");
    let later = now() + chrono::Duration::hours(1);
    let same = plan_update(Some(&brand), &brand.id, &draft("Brand"), later).unwrap();
    assert_eq!(same, AccountWrite::Keep(brand.clone()));
    let renamed = plan_update(Some(&brand), &brand.id, &draft("Brand B"), later).unwrap();
    let AccountWrite::Put(renamed) = renamed else {
        panic!("{renamed:?}")
    };
    assert_eq!(renamed.display_name, "Brand B");
    assert_eq!(renamed.created_at, now());
    assert_eq!(renamed.updated_at, later);
}

#[test]
fn cloud_api_numbers_need_their_accounts_token_except_in_the_default_account() {
    let delivering = AccountDraft {
        delivery: true,
        ..draft("Brand")
    };
    // An account without a token may deliver: its Clickatell numbers carry
    // their own keys.
    let Ok(AccountWrite::Put(tokenless)) = plan_create(None, &waba("777"), &delivering, now())
    else {
        panic!("a delivering account without a token is allowed")
    };
    let business = PhoneNumber::parse("+15550001111").unwrap();
    let cloud_api = number("+15550001111", "1065", "777");
    assert!(
        delivery_route(&business, Some(&cloud_api), Some(&tokenless))
            .unwrap_err()
            .contains("no access token"),
        "never sent with another account's token"
    );
    let clickatell = BusinessNumber {
        route: Route::Clickatell(integration()),
        ..cloud_api.clone()
    };
    assert!(delivery_route(&business, Some(&clickatell), Some(&tokenless)).is_ok());
    // The default account uses the process's token.
    let Ok(AccountWrite::Put(default)) =
        plan_create(None, &AccountId::default_account(), &delivering, now())
    else {
        panic!()
    };
    assert_eq!(
        delivery_route(&business, Some(&cloud_api), Some(&default))
            .unwrap()
            .1,
        Credentials::None
    );
}

#[test]
fn display_names_are_bounded() {
    let long = draft(&"x".repeat(257));
    assert_eq!(
        plan_create(None, &waba("1"), &long, now())
            .unwrap_err()
            .reason,
        Reason::InvalidAccount
    );
    assert!(plan_create(None, &waba("1"), &draft("Ünïcode ✓"), now()).is_ok());
}

#[test]
fn bootstrap_creates_the_default_account_once_and_follows_the_delivery_flag() {
    let AccountWrite::Put(created) = plan_bootstrap_default(None, false, now()).unwrap() else {
        panic!("the first start creates it")
    };
    assert!(created.id.is_default());
    assert!(!created.delivery);
    let renamed = Account {
        display_name: "Our numbers".into(),
        ..created
    };
    assert_eq!(
        plan_bootstrap_default(Some(&renamed), false, now()).unwrap(),
        AccountWrite::Keep(renamed.clone())
    );
    // Record-only first, then --delivery: the default account delivers.
    let later = now() + chrono::Duration::days(1);
    let AccountWrite::Put(delivering) =
        plan_bootstrap_default(Some(&renamed), true, later).unwrap()
    else {
        panic!("the flag changed")
    };
    assert!(delivering.delivery);
    assert_eq!(delivering.display_name, "Our numbers");
    assert_eq!(
        (delivering.created_at, delivering.updated_at),
        (now(), later)
    );
}

#[test]
fn a_number_belongs_to_one_account_and_an_id_sends_for_one_number() {
    let brand = account("111");
    let seen = |by_number, by_id| NumberSnapshot {
        account: Some(brand.clone()),
        by_number,
        by_phone_number_id: by_id,
    };
    let n = PhoneNumber::parse("+15550001111").unwrap();
    let id = PhoneNumberId::parse("106540352242922").unwrap();
    let route = Route::CloudApi(id.clone());
    // New.
    let write = plan_register(&seen(None, None), &n, &route, &brand.id, now()).unwrap();
    assert_eq!(
        write,
        NumberWrite::Put {
            number: number("+15550001111", "106540352242922", "111"),
            replaces: None
        }
    );
    // The same again changes nothing.
    let current = number("+15550001111", "106540352242922", "111");
    let again = plan_register(
        &seen(Some(current.clone()), Some(current.clone())),
        &n,
        &route,
        &brand.id,
        now(),
    )
    .unwrap();
    assert_eq!(again, NumberWrite::Keep(current.clone()));
    // In another account: refused.
    let elsewhere = number("+15550001111", "106540352242922", "222");
    let refused =
        plan_register(&seen(Some(elsewhere), None), &n, &route, &brand.id, now()).unwrap_err();
    assert_eq!(refused.reason, Reason::BusinessNumberInOtherAccount);
    assert_eq!(refused.kind(), crate::domain::RejectionKind::Conflict);
    // The id already sends for another number: refused.
    let other = number("+15550002222", "106540352242922", "111");
    let taken = plan_register(&seen(None, Some(other)), &n, &route, &brand.id, now()).unwrap_err();
    assert_eq!(taken.reason, Reason::PhoneNumberIdInUse);
    // A new id for the same number replaces the old one's lookup.
    let new_id = PhoneNumberId::parse("999").unwrap();
    let (moved, replaces) = put(plan_register(
        &seen(Some(current.clone()), None),
        &n,
        &Route::CloudApi(new_id.clone()),
        &brand.id,
        now(),
    ));
    assert_eq!(moved.phone_number_id(), Some(&new_id));
    assert_eq!(replaces, Some(id.clone()));
    // Moving it to Clickatell drops its phone number id's lookup; a
    // Clickatell number has no id another number could hold.
    let clickatell = Route::Clickatell(integration());
    let (moved, replaces) = put(plan_register(
        &seen(Some(current), Some(other_number_with(&id))),
        &n,
        &clickatell,
        &brand.id,
        now(),
    ));
    assert_eq!((moved.route, replaces), (clickatell, Some(id)));
}

/// The number a registration stores, and the phone number id it frees.
fn put(planned: Result<NumberWrite, Rejection>) -> (BusinessNumber, Option<PhoneNumberId>) {
    match planned {
        Ok(NumberWrite::Put { number, replaces }) => (number, replaces),
        other => panic!("{other:?}"),
    }
}

fn integration() -> Integration {
    Integration::new(
        IntegrationId::parse("a1b2c3d4e5f6").unwrap(),
        Credentials::env_var("CLICKATELL_KEY").unwrap(),
        Credentials::file("/run/secrets/clickatell-callback").unwrap(),
    )
    .unwrap()
}

fn other_number_with(id: &PhoneNumberId) -> BusinessNumber {
    number("+15550002222", id.as_str(), "111")
}

#[test]
fn registering_in_a_missing_account_is_refused() {
    let n = PhoneNumber::parse("+15550001111").unwrap();
    let id = Route::CloudApi(PhoneNumberId::parse("1").unwrap());
    let refused =
        plan_register(&NumberSnapshot::default(), &n, &id, &waba("333"), now()).unwrap_err();
    assert_eq!(refused.reason, Reason::AccountNotFound);
}

#[test]
fn sends_need_a_registered_number_once_any_account_exists() {
    let business = PhoneNumber::parse("+15550001111").unwrap();
    assert!(
        sending_account(&business, None, false)
            .unwrap()
            .is_default()
    );
    let refused = sending_account(&business, None, true).unwrap_err();
    assert_eq!(refused.reason, Reason::BusinessNumberNotRegistered);
    assert_eq!(refused.kind(), crate::domain::RejectionKind::Precondition);
    let registered = number("+15550001111", "1", "444");
    assert_eq!(
        sending_account(&business, Some(&registered), true).unwrap(),
        waba("444")
    );
}

#[test]
fn phone_number_ids_are_digits() {
    for bad in ["", "abc", "12 34", "123456789012345678901"] {
        assert_eq!(
            PhoneNumberId::parse(bad).unwrap_err().reason,
            Reason::InvalidAccount,
            "{bad:?}"
        );
    }
}

#[test]
fn a_message_goes_through_its_numbers_id_with_its_accounts_credentials() {
    let business = PhoneNumber::parse("+15550001111").unwrap();
    let registered = number("+15550001111", "1065", "111");
    let mut brand = account("111");
    assert!(
        delivery_route(&business, None, None)
            .unwrap_err()
            .contains("no phone number id")
    );
    assert!(
        delivery_route(&business, Some(&registered), None)
            .unwrap_err()
            .contains("not registered")
    );
    assert!(
        delivery_route(&business, Some(&registered), Some(&brand))
            .unwrap_err()
            .contains("delivery is off")
    );
    brand.delivery = true;
    brand.credentials = Credentials::env_var("BRAND_TOKEN").unwrap();
    assert_eq!(
        delivery_route(&business, Some(&registered), Some(&brand)).unwrap(),
        (
            Route::CloudApi(PhoneNumberId::parse("1065").unwrap()),
            Credentials::EnvVar("BRAND_TOKEN".into())
        )
    );
    // A Clickatell number sends with its integration's key, not the
    // account's token.
    let clickatell = BusinessNumber {
        route: Route::Clickatell(integration()),
        ..registered
    };
    assert_eq!(
        delivery_route(&business, Some(&clickatell), Some(&brand)).unwrap(),
        (
            Route::Clickatell(integration()),
            Credentials::EnvVar("CLICKATELL_KEY".into())
        )
    );
}

#[test]
fn a_template_review_is_for_the_account_it_came_from_when_registered() {
    let brand = account("102290129340398");
    assert_eq!(webhook_account("102290129340398", Some(&brand)), brand.id);
    assert!(webhook_account("102290129340398", None).is_default());
    assert!(webhook_account("", None).is_default());
    assert!(webhook_account("not-a-waba", Some(&brand)).is_default());
}
