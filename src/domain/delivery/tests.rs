use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap()
}

#[test]
fn statuses_only_move_forward() {
    use DeliveryStatus::*;
    let submitted = Delivery::queued(t0()).submitted("wamid.1".into(), t0());
    let read = submitted.report(Read, None, t0()).unwrap();
    assert_eq!(read.status, Read);
    // Late and duplicate reports change nothing.
    assert_eq!(read.report(Delivered, None, t0()), None);
    assert_eq!(read.report(Sent, None, t0()), None);
    assert_eq!(read.report(Read, None, t0()), None);
    let failure = DeliveryError {
        code: 131026,
        title: "Message undeliverable".into(),
    };
    assert_eq!(read.report(Failed, Some(failure.clone()), t0()), None);
    // A sent message can still fail, and keeps the error.
    let sent = submitted.report(Sent, None, t0()).unwrap();
    let failed = sent.report(Failed, Some(failure.clone()), t0()).unwrap();
    assert_eq!((failed.status, failed.error), (Failed, Some(failure)));
    assert!(Accepted.advances_to(Submitted) && !Submitted.advances_to(Accepted));
}

#[test]
fn a_webhook_before_the_api_answer_is_kept() {
    let early = Delivery::queued(t0())
        .report(DeliveryStatus::Delivered, None, t0())
        .unwrap();
    let submitted = early.submitted("wamid.1".into(), t0());
    assert_eq!(submitted.status, DeliveryStatus::Delivered);
    assert_eq!(submitted.wamid.as_deref(), Some("wamid.1"));
}

#[test]
fn webhook_status_names() {
    assert_eq!(
        DeliveryStatus::from_webhook("delivered"),
        Some(DeliveryStatus::Delivered)
    );
    assert_eq!(DeliveryStatus::from_webhook("deleted"), None);
}

#[test]
fn classifies_cloud_api_answers() {
    let ok = r#"{"messaging_product":"whatsapp","contacts":[{"input":"27821234567","wa_id":"27821234567"}],"messages":[{"id":"wamid.HBgL"}]}"#;
    assert_eq!(
        classify(200, ok),
        Attempt::Submitted {
            wamid: "wamid.HBgL".into()
        }
    );
    assert!(matches!(classify(200, "{}"), Attempt::Refused(_)));
    assert!(matches!(classify(429, ""), Attempt::Retry { .. }));
    assert!(matches!(classify(503, "<html>"), Attempt::Retry { .. }));
    let throttled =
        r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429}}"#;
    assert!(matches!(classify(400, throttled), Attempt::Retry { .. }));
    for code in [131047, 132000, 132001, 132015, 132016, 131026] {
        let body = format!(
            r#"{{"error":{{"message":"(#{code}) problem","type":"OAuthException","code":{code},"error_data":{{"messaging_product":"whatsapp","details":"detail {code}"}}}}}}"#
        );
        assert_eq!(
            classify(400, &body),
            Attempt::Refused(DeliveryError {
                code,
                title: format!("detail {code}")
            }),
            "{code}"
        );
    }
    assert_eq!(
        classify(401, "nope"),
        Attempt::Refused(DeliveryError {
            code: 401,
            title: "HTTP 401".into()
        })
    );
}

#[test]
fn backoff_grows_exponentially_to_a_cap_with_full_jitter() {
    let base = Duration::from_secs(1);
    let cap = Duration::from_secs(60);
    assert_eq!(
        backoff(1, base, cap, 0.999_999),
        Duration::from_micros(999_999)
    );
    assert_eq!(backoff(3, base, cap, 0.5), Duration::from_secs(2));
    assert_eq!(backoff(30, base, cap, 0.5), Duration::from_secs(30));
    assert_eq!(backoff(3, base, cap, 0.0), Duration::from_millis(10));
    for attempts in 1..40 {
        assert!(backoff(attempts, base, cap, 0.999) <= cap);
    }
}

#[test]
fn retryable_failures_back_off_until_the_last_attempt_then_fail() {
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
        max_attempts: 3,
    };
    let first = Delivery::queued(t0()).retry_or_give_up("HTTP 503", &policy, 0.5, t0());
    assert_eq!(first.status, DeliveryStatus::Accepted);
    assert_eq!(first.attempts, 1);
    assert_eq!(
        first.next_attempt_at,
        Some(t0() + TimeDelta::milliseconds(500))
    );
    let second = first.retry_or_give_up("HTTP 503", &policy, 0.5, t0());
    assert_eq!(second.attempts, 2);
    assert_eq!(second.next_attempt_at, Some(t0() + TimeDelta::seconds(1)));
    let last = second.retry_or_give_up("timed out", &policy, 0.5, t0());
    assert_eq!(last.status, DeliveryStatus::Failed);
    assert_eq!(last.attempts, 3);
    assert_eq!(last.next_attempt_at, None);
    assert_eq!(
        last.error,
        Some(DeliveryError {
            code: 0,
            title: "gave up after 3 attempts; last: timed out".into()
        })
    );
    // A cap past the end of time waits until then rather than overflowing.
    let forever = RetryPolicy {
        base: Duration::from_secs(u64::MAX / 4),
        cap: Duration::MAX,
        ..policy
    };
    let far = Delivery::queued(t0()).retry_or_give_up("HTTP 503", &forever, 0.9, t0());
    assert_eq!(far.next_attempt_at, Some(DateTime::<Utc>::MAX_UTC));
}

#[test]
fn send_rate_allows_a_seconds_burst_then_one_per_interval() {
    let rate = SendRate::new(2);
    let first = rate.take(None, t0()).unwrap();
    let second = rate.take(Some(first), t0()).unwrap();
    let wait = rate.take(Some(second), t0()).unwrap_err();
    assert_eq!(wait, TimeDelta::milliseconds(500));
    // Half a second frees one slot.
    let half = t0() + TimeDelta::milliseconds(500);
    let third = rate.take(Some(second), half).unwrap();
    assert!(rate.take(Some(third), half).is_err());
    // Idle time never banks more than a second's worth.
    let later = t0() + TimeDelta::hours(1);
    let a = rate.take(Some(third), later).unwrap();
    let b = rate.take(Some(a), later).unwrap();
    assert!(rate.take(Some(b), later).is_err());
}
