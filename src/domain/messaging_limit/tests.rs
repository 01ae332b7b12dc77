use chrono::TimeZone;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 30).unwrap()
}

fn reach(
    limit: u32,
    snapshot: &LimitSnapshot,
    at: DateTime<Utc>,
) -> Result<Option<ReachWrite>, Rejection> {
    plan_reach(
        MessagingLimit::Customers(limit),
        &LimitScope::portfolio(),
        true,
        Some(snapshot),
        at,
    )
}

/// The snapshot after `n` new customers reached at `at`.
fn used(n: u32, at: DateTime<Utc>) -> LimitSnapshot {
    let mut snapshot = LimitSnapshot::default();
    for _ in 0..n {
        snapshot.usage = reach(u32::MAX, &snapshot, at).unwrap().unwrap().usage;
    }
    snapshot
}

#[test]
fn tiers_and_counts_parse_and_nonsense_does_not() {
    assert_eq!(
        MessagingLimit::parse("unlimited"),
        Ok(MessagingLimit::Unlimited)
    );
    assert_eq!(
        MessagingLimit::parse("250"),
        Ok(MessagingLimit::Customers(250))
    );
    assert_eq!(
        MessagingLimit::parse("2K"),
        Ok(MessagingLimit::Customers(2_000))
    );
    assert_eq!(
        MessagingLimit::parse("100,000"),
        Ok(MessagingLimit::Customers(100_000))
    );
    for bad in ["0", "-1", "lots", "", "5000000k"] {
        assert!(MessagingLimit::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(MessagingLimit::Customers(2_000).to_string(), "2000");
}

#[test]
fn the_limit_plus_one_new_customer_is_refused_with_when_to_retry() {
    let snapshot = used(3, now());
    assert_eq!(snapshot.usage.counted(now()), 3);
    let later = now() + TimeDelta::hours(2);
    let refused = reach(3, &snapshot, later).unwrap_err();
    assert_eq!(refused.reason, Reason::MessagingLimitReached);
    assert_eq!(refused.kind(), crate::domain::RejectionKind::Exhausted);
    assert_eq!(refused.metadata["messaging_limit"], "3");
    // The first reach was at 09:00:30, in the 09:00 bucket: it counts until
    // 09:01 the next day.
    let until = Utc.with_ymd_and_hms(2026, 11, 28, 9, 1, 0).unwrap();
    assert_eq!(refused.retry_after, Some((until - later).to_std().unwrap()));
    assert_eq!(refused.metadata["retry_after"], until.to_rfc3339());
    // One under the limit still goes.
    assert!(reach(4, &snapshot, later).unwrap().is_some());
}

#[test]
fn a_customer_reached_in_the_last_day_is_not_counted_again() {
    let mut snapshot = used(3, now());
    snapshot.reached_at = Some(now() - TimeDelta::hours(23));
    assert_eq!(
        reach(3, &snapshot, now()),
        Ok(None),
        "no new reach, no refusal"
    );
    snapshot.reached_at = Some(now() - TimeDelta::hours(24));
    assert_eq!(
        reach(3, &snapshot, now()).unwrap_err().reason,
        Reason::MessagingLimitReached,
        "a day later the customer is new again"
    );
}

#[test]
fn replies_in_a_window_and_unlimited_deployments_count_nothing() {
    let snapshot = used(3, now());
    let planned = plan_reach(
        MessagingLimit::Customers(3),
        &LimitScope::portfolio(),
        false,
        Some(&snapshot),
        now(),
    );
    assert_eq!(planned, Ok(None));
    let planned = plan_reach(
        MessagingLimit::Unlimited,
        &LimitScope::portfolio(),
        true,
        Some(&snapshot),
        now(),
    );
    assert_eq!(planned, Ok(None));
}

#[test]
fn usage_rolls_off_after_a_day_and_stays_small() {
    let snapshot = used(3, now());
    let day_later = now() + TimeDelta::hours(24) + TimeDelta::minutes(1);
    assert_eq!(snapshot.usage.counted(day_later), 0);
    let next = reach(3, &snapshot, day_later).unwrap().unwrap();
    assert_eq!(next.usage.buckets().len(), 1, "lapsed buckets dropped");
    assert_eq!(next.usage.counted(day_later), 1);
    assert_eq!(next.reached_at, day_later);

    // Two days of one reach every 10 s keep at most a day of minutes, and
    // count a day's reaches (a minute's more at most).
    let mut snapshot = LimitSnapshot::default();
    for step in 0..(2 * 8_640) {
        let at = now() + TimeDelta::seconds(10 * step);
        snapshot.usage = reach(u32::MAX, &snapshot, at).unwrap().unwrap().usage;
    }
    assert!(snapshot.usage.buckets().len() <= 24 * 60 + 1);
    let end = now() + TimeDelta::seconds(10 * (2 * 8_640 - 1));
    let counted = snapshot.usage.counted(end);
    assert!((8_640..=8_640 + 6).contains(&counted), "{counted}");
}

#[test]
fn times_at_the_end_of_the_calendar_do_not_panic() {
    let usage = Usage::from_buckets(vec![(i64::MAX, 1), (i64::MIN, 1)]);
    assert_eq!(usage.counted(now()), 1, "the far-future bucket counts");
    assert_eq!(usage.next_release(now()), Some(DateTime::<Utc>::MAX_UTC));
    assert!(still_reached(DateTime::<Utc>::MAX_UTC, now()));
    let snapshot = LimitSnapshot {
        reached_at: None,
        usage,
    };
    let refused = reach(1, &snapshot, now()).unwrap_err();
    assert_eq!(refused.reason, Reason::MessagingLimitReached);
}

#[test]
fn stored_usage_is_normalised() {
    let usage = Usage::from_buckets(vec![(120, 2), (60, 0), (0, 1)]);
    assert_eq!(usage.buckets(), &[(0, 1), (120, 2)]);
}

#[test]
fn an_accounts_own_limit_wins_over_the_deployments() {
    use crate::domain::account::{AccountDraft, AccountWrite, Credentials, plan_create};
    let account = |limit| {
        let draft = AccountDraft {
            display_name: "Brand".into(),
            delivery: false,
            credentials: Credentials::None,
            messaging_limit: limit,
        };
        let id = AccountId::parse("111").unwrap();
        match plan_create(None, &id, &draft, now()).unwrap() {
            AccountWrite::Put(account) => account,
            other => panic!("{other:?}"),
        }
    };
    let deployment = MessagingLimit::Customers(250);
    let own = account(Some(MessagingLimit::Customers(2_000)));
    assert_eq!(
        applicable(deployment, Some(&own)),
        Some((
            LimitScope::stored("account:111"),
            MessagingLimit::Customers(2_000)
        ))
    );
    let sharing = account(None);
    assert_eq!(
        applicable(deployment, Some(&sharing)),
        Some((LimitScope::portfolio(), deployment))
    );
    assert_eq!(
        applicable(deployment, None),
        Some((LimitScope::portfolio(), deployment))
    );
    let unlimited = account(Some(MessagingLimit::Unlimited));
    assert_eq!(applicable(deployment, Some(&unlimited)), None);
    assert_eq!(applicable(MessagingLimit::Unlimited, Some(&sharing)), None);
}
