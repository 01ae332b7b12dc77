use chrono::TimeZone;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

fn reason(result: Result<(), Rejection>) -> Option<Reason> {
    result.err().map(|r| r.reason)
}

#[test]
fn opting_out_refuses_what_its_scope_covers() {
    let marketing = plan_opt_out(None, Scope::Marketing, Source::Request, now());
    let all = plan_opt_out(None, Scope::All, Source::Request, now());
    let check = |consent: &Option<Consent>, category| {
        reason(check_send(consent.as_ref(), category, false, now()))
    };
    assert_eq!(
        check(&marketing, Some(Category::Marketing)),
        Some(Reason::CustomerOptedOut)
    );
    assert_eq!(check(&marketing, Some(Category::Utility)), None);
    assert_eq!(
        check(&all, Some(Category::Utility)),
        Some(Reason::CustomerOptedOut)
    );
    assert_eq!(check(&all, Some(Category::Authentication)), None);
    assert_eq!(check(&all, None), None, "free-form replies go");
    let refused = check_send(all.as_ref(), Some(Category::Marketing), true, now()).unwrap_err();
    assert_eq!(refused.metadata["scope"], "ALL");
    // Opting back in clears it; nothing is left to keep.
    assert_eq!(plan_opt_in(all.as_ref()), None);
}

#[test]
fn a_wider_opt_out_is_not_narrowed() {
    let all = plan_opt_out(None, Scope::All, Source::Request, now());
    let again = plan_opt_out(all.as_ref(), Scope::Marketing, Source::Keyword, now());
    assert_eq!(again.unwrap().opt_out.unwrap().scope, Scope::All);
    let marketing = plan_opt_out(None, Scope::Marketing, Source::Keyword, now());
    let widened = plan_opt_out(marketing.as_ref(), Scope::All, Source::Request, now());
    assert_eq!(widened.unwrap().opt_out.unwrap().source, Source::Request);
}

#[test]
fn a_131049_backs_marketing_off_growing_on_repeats_outside_a_window() {
    let backoff = MarketingBackoff::default();
    let failed = DeliveryError {
        code: MARKETING_NOT_DELIVERED,
        title: "Message not delivered".into(),
    };
    let first = plan_after_failure(None, &failed, Some(Category::Marketing), &backoff, now())
        .expect("a marketing 131049 is learned from")
        .unwrap();
    assert_eq!(
        first.marketing_limited_until,
        Some(now() + TimeDelta::days(1))
    );
    let refused = check_send(Some(&first), Some(Category::Marketing), false, now()).unwrap_err();
    assert_eq!(refused.reason, Reason::MarketingLimited);
    assert_eq!(
        refused.retry_after,
        Some(std::time::Duration::from_secs(24 * 3600))
    );
    assert_eq!(refused.metadata["whatsapp_code"], "131049");
    // Inside the customer's window, and for utility, it does not apply.
    assert!(check_send(Some(&first), Some(Category::Marketing), true, now()).is_ok());
    assert!(check_send(Some(&first), Some(Category::Utility), false, now()).is_ok());
    // After the wait it goes; a repeat doubles the wait, up to the cap.
    let later = now() + TimeDelta::days(1);
    assert!(check_send(Some(&first), Some(Category::Marketing), false, later).is_ok());
    let second = plan_marketing_limited(Some(&first), &backoff, later).unwrap();
    assert_eq!(
        second.marketing_limited_until,
        Some(later + TimeDelta::days(2))
    );
    let mut many = second;
    for _ in 0..10 {
        many = plan_marketing_limited(Some(&many), &backoff, later).unwrap();
    }
    assert_eq!(
        many.marketing_limited_until,
        Some(later + TimeDelta::days(30))
    );
    // A 131049 on a utility template, or another code, teaches nothing.
    assert_eq!(
        plan_after_failure(None, &failed, Some(Category::Utility), &backoff, now()),
        None
    );
}

#[test]
fn a_131050_is_an_opt_out_of_marketing() {
    let stopped = DeliveryError {
        code: STOPPED_MARKETING,
        title: "User's number is part of an experiment".into(),
    };
    let learned = plan_after_failure(
        None,
        &stopped,
        Some(Category::Marketing),
        &MarketingBackoff::default(),
        now(),
    )
    .unwrap()
    .unwrap();
    let out = learned.opt_out.unwrap();
    assert_eq!(
        (out.scope, out.source),
        (Scope::Marketing, Source::WhatsApp)
    );
}

#[test]
fn keywords_are_the_whole_message_in_any_case() {
    let keywords: Vec<String> = ["STOP", "BAJA", "ARRÊT"].map(String::from).into();
    for said in ["stop", " STOP. ", "Baja!", "arrêt"] {
        assert!(is_opt_out_keyword(said, &keywords), "{said}");
    }
    for said in ["please don't stop", "stopwatch", ""] {
        assert!(!is_opt_out_keyword(said, &keywords), "{said}");
    }
}
