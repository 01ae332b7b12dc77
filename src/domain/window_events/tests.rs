//! The event rules on a log held in memory, with the clock passed in: a
//! watcher's reads are played against it exactly as a store answers them.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::domain::window::{EntryPoint, Inbound, InboundKind, InboundSnapshot, plan_inbound};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn h(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

fn m(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn pair(customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

/// A log in memory, answering the reads a store answers.
#[derive(Default)]
struct Log {
    changes: Vec<WindowChange>,
}

impl Log {
    /// Records that an inbound at `recorded_at` left the pair's window
    /// expiring at `expires_at`.
    fn record(&mut self, customer: &str, recorded_at: DateTime<Utc>, expires_at: DateTime<Utc>) {
        let id = self.changes.len() as i64 + 1;
        let kind = if self.changes.iter().any(|c| c.pair == pair(customer)) {
            ChangeKind::Extended
        } else {
            ChangeKind::Opened
        };
        self.changes.push(WindowChange {
            id,
            recorded_at,
            pair: pair(customer),
            kind,
            window: Window {
                last_inbound_at: expires_at - WINDOW_LENGTH,
                expires_at,
                free_entry_deadline: None,
                free_until: None,
            },
        });
    }

    fn read(
        &self,
        after: &EventKey,
        horizon: DateTime<Utc>,
        filter: &WatchFilter,
        batch: usize,
    ) -> LogRead {
        let (recorded_from, point_froms) = read_from(after, filter);
        let mut recorded: Vec<WindowChange> = self
            .changes
            .iter()
            .filter(|c| c.position() >= recorded_from && c.recorded_at <= horizon)
            .cloned()
            .collect();
        recorded.sort_by_key(WindowChange::position);
        recorded.truncate(batch);
        let by_point = filter
            .points()
            .zip(point_froms)
            .map(|(lead, from)| {
                let through = horizon + lead.unwrap_or(TimeDelta::zero());
                let expiry = |c: &WindowChange| ChangePosition {
                    at: c.window.expires_at,
                    id: c.id,
                };
                let mut rows: Vec<WindowChange> = self
                    .changes
                    .iter()
                    .filter(|c| expiry(c) >= from && c.window.expires_at <= through)
                    .cloned()
                    .collect();
                rows.sort_by_key(expiry);
                rows.truncate(batch);
                rows
            })
            .collect();
        LogRead {
            limit: batch,
            recorded,
            by_point,
        }
    }

    fn next_change(&self, event: &WindowEvent) -> Option<DateTime<Utc>> {
        self.changes
            .iter()
            .filter(|c| c.pair == event.pair && c.position() > event.change)
            .map(|c| c.recorded_at)
            .min()
    }

    /// Every event after `after` a watcher gets by `now`, read `batch`
    /// rows at a time, as the service's watcher reads them.
    fn watch(
        &self,
        filter: &WatchFilter,
        mut after: EventKey,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Vec<WindowEvent> {
        let mut seen = Vec::new();
        loop {
            let read = self.read(&after, now, filter, batch);
            let (events, reach) = candidates(&after, now, filter, &read);
            seen.extend(
                events
                    .into_iter()
                    .filter(|e| !e.superseded(self.next_change(e))),
            );
            assert!(reach >= after, "a watcher never moves back");
            after = reach;
            if reach >= EventKey::through(now) {
                return seen;
            }
        }
    }
}

fn filter(leads: &[TimeDelta]) -> WatchFilter {
    WatchFilter {
        businesses: vec![],
        leads: Leads::new(leads.to_vec()).unwrap(),
    }
}

fn summary(
    events: &[WindowEvent],
) -> Vec<(WindowEventType, String, DateTime<Utc>, Option<TimeDelta>)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.pair.customer.as_str().to_owned(),
                e.occurred_at(),
                e.lead,
            )
        })
        .collect()
}

use WindowEventType::{Closed, Closing, Extended, Opened};

const A: &str = "+27821234567";
const B: &str = "+447700900123";

#[test]
fn each_event_fires_at_its_instant_for_every_lead() {
    let mut log = Log::default();
    let e = t0() + h(24);
    log.record(A, t0(), e);
    let f = filter(&[h(1), m(15)]);
    let start = EventKey::before(t0());
    // Nothing past the clock: at 22:59 only the opening.
    let early = log.watch(&f, start, e - h(1) - TimeDelta::microseconds(1), 7);
    assert_eq!(summary(&early), vec![(Opened, A.into(), t0(), None)]);
    let all = log.watch(&f, start, e + h(1), 7);
    assert_eq!(
        summary(&all),
        vec![
            (Opened, A.into(), t0(), None),
            (Closing, A.into(), e - h(1), Some(h(1))),
            (Closing, A.into(), e - m(15), Some(m(15))),
            (Closed, A.into(), e, None),
        ]
    );
}

#[test]
fn an_extension_before_a_lead_point_moves_it() {
    let mut log = Log::default();
    let (e1, e2) = (t0() + h(24), t0() + h(25));
    log.record(A, t0(), e1);
    log.record(A, e1 - h(2), e2);
    let all = log.watch(&filter(&[h(1)]), EventKey::before(t0()), e2 + h(1), 5);
    assert_eq!(
        summary(&all),
        vec![
            (Opened, A.into(), t0(), None),
            (Extended, A.into(), e1 - h(2), None),
            (Closing, A.into(), e2 - h(1), Some(h(1))),
            (Closed, A.into(), e2, None),
        ]
    );
}

#[test]
fn an_extension_at_the_lead_point_wins_and_one_after_it_does_not() {
    let mut at = Log::default();
    let (e1, e2) = (t0() + h(24), t0() + h(26));
    at.record(A, t0(), e1);
    at.record(A, e1 - h(1), e2);
    let events = at.watch(&filter(&[h(1)]), EventKey::before(t0()), e2, 3);
    assert_eq!(
        summary(&events),
        vec![
            (Opened, A.into(), t0(), None),
            (Extended, A.into(), e1 - h(1), None),
            (Closing, A.into(), e2 - h(1), Some(h(1))),
            (Closed, A.into(), e2, None),
        ]
    );

    let mut after = Log::default();
    after.record(A, t0(), e1);
    after.record(A, e1 - m(30), e2);
    let events = after.watch(&filter(&[h(1), m(15)]), EventKey::before(t0()), e2, 3);
    assert_eq!(
        summary(&events),
        vec![
            (Opened, A.into(), t0(), None),
            (Closing, A.into(), e1 - h(1), Some(h(1))),
            (Extended, A.into(), e1 - m(30), None),
            (Closing, A.into(), e2 - h(1), Some(h(1))),
            (Closing, A.into(), e2 - m(15), Some(m(15))),
            (Closed, A.into(), e2, None),
        ]
    );
}

#[test]
fn a_reopened_window_closes_twice() {
    let mut log = Log::default();
    let e1 = t0() + h(24);
    log.record(A, t0(), e1);
    log.record(A, e1 + h(1), e1 + h(25));
    let events = log.watch(&filter(&[]), EventKey::before(t0()), e1 + h(26), 2);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![Opened, Closed, Extended, Closed]);
}

#[test]
fn points_already_past_when_recorded_fire_at_the_record() {
    let mut log = Log::default();
    // An inbound whose own timestamp is 23.5h old: 30 minutes left.
    let e = t0() + m(30);
    log.record(A, t0(), e);
    let events = log.watch(&filter(&[h(1), m(15)]), EventKey::before(t0()), e, 4);
    assert_eq!(
        summary(&events),
        vec![
            (Opened, A.into(), t0(), None),
            (Closing, A.into(), t0(), Some(h(1))),
            (Closing, A.into(), e - m(15), Some(m(15))),
            (Closed, A.into(), e, None),
        ]
    );
}

#[test]
fn an_out_of_order_inbound_logs_nothing() {
    let a = pair(A);
    let now = t0();
    let newer = Inbound::new(Some(now), InboundKind::Message, EntryPoint::Organic, now).unwrap();
    let opened = plan_inbound(&InboundSnapshot::default(), &a, &newer, now).unwrap();
    assert_eq!(opened.log_change, Some(ChangeKind::Opened));
    let older = Inbound::new(
        Some(now - h(2)),
        InboundKind::Message,
        EntryPoint::Organic,
        now,
    )
    .unwrap();
    let snapshot = InboundSnapshot {
        seen_for: None,
        window: opened.window.clone(),
    };
    let late = plan_inbound(&snapshot, &a, &older, now + m(1)).unwrap();
    assert_eq!(late.log_change, None, "{late:?}");
    let later = plan_inbound(&snapshot, &a, &newer, now + m(1));
    assert_eq!(
        later.unwrap().log_change,
        None,
        "a repeat of the same instant"
    );
    let extended = Inbound::new(
        Some(now + m(1)),
        InboundKind::Message,
        EntryPoint::Organic,
        now + m(1),
    );
    let extended = plan_inbound(&snapshot, &a, &extended.unwrap(), now + m(1)).unwrap();
    assert_eq!(extended.log_change, Some(ChangeKind::Extended));
}

/// A busy log: many pairs, extensions at all sorts of moments, many
/// changes in the same microsecond and windows expiring together.
fn busy_log() -> Log {
    let mut log = Log::default();
    let customers: Vec<String> = (0..40)
        .map(|i| format!("+2782{:07}", 1_000_000 + i))
        .collect();
    let mut state: u64 = 7;
    let mut random = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut expiry = std::collections::HashMap::new();
    for step in 0..400 {
        let at = t0() + m(random(3) as i64 * 10 + step / 4 * 30);
        let customer = &customers[random(40) as usize];
        let current = expiry.get(customer).copied().unwrap_or(at);
        let next = (at + h(24) - m(random(600) as i64)).max(current + m(1));
        // Windows often expire at one shared instant.
        let next = if random(4) == 0 { t0() + h(30) } else { next };
        if next <= current {
            continue;
        }
        expiry.insert(customer.clone(), next);
        log.record(customer, at, next);
    }
    log.changes.sort_by_key(|c| (c.recorded_at, c.id));
    log
}

#[test]
fn paging_and_resuming_from_any_event_give_the_same_stream() {
    let log = busy_log();
    let f = filter(&[h(2), m(45)]);
    let start = EventKey::before(t0());
    let end = t0() + h(80);
    let whole = log.watch(&f, start, end, 100_000);
    assert!(whole.len() > 400, "{}", whole.len());
    for pair in whole.windows(2) {
        assert!(pair[0].key < pair[1].key, "in order, none twice");
    }
    for batch in [2, 3, 17] {
        assert_eq!(log.watch(&f, start, end, batch), whole, "batch {batch}");
    }
    for cut in [0, 1, 57, whole.len() / 2, whole.len() - 1] {
        let resumed = log.watch(&f, whole[cut].key, end, 5);
        assert_eq!(
            resumed,
            whole[cut + 1..].to_vec(),
            "resumed after event {cut}"
        );
    }
    // Watching in steps of the clock gives the stream too.
    let mut stepped = Vec::new();
    let mut after = start;
    let mut now = t0();
    while now < end {
        now += m(37);
        let got = log.watch(&f, after, now, 9);
        if let Some(last) = got.last() {
            after = last.key;
        }
        stepped.extend(got);
    }
    assert_eq!(stepped, whole);
    // No CLOSING or CLOSED stands for a state already left when it fired.
    for event in &whole {
        assert!(!event.superseded(log.next_change(event)), "{event:?}");
    }
}

#[test]
fn a_business_filter_keeps_its_own_pairs() {
    let mut log = Log::default();
    log.record(A, t0(), t0() + h(24));
    log.record(B, t0(), t0() + h(24));
    let mut other = log.changes[1].clone();
    other.id = 3;
    other.pair.business = PhoneNumber::parse("+15550002222").unwrap();
    log.changes.push(other);
    let f = WatchFilter {
        businesses: vec![PhoneNumber::parse("+15550002222").unwrap()],
        leads: Leads::default(),
    };
    let events = log.watch(&f, EventKey::before(t0()), t0() + h(25), 2);
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.pair.business.as_str() == "+15550002222")
    );
}

#[test]
fn leads_are_checked() {
    assert!(Leads::new(vec![m(1), h(23)]).is_ok());
    for bad in [
        vec![TimeDelta::seconds(59)],
        vec![h(23) + TimeDelta::seconds(1)],
        vec![h(1), h(1)],
        vec![m(1), m(2), m(3), m(4), m(5)],
        vec![-m(5)],
    ] {
        let refused = Leads::new(bad.clone()).unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidClosingLead, "{bad:?}");
        assert!(refused.field.unwrap().starts_with("closing_leads"));
    }
}

#[test]
fn the_log_is_kept_a_window_longer_than_tokens() {
    let resumable_from = t0();
    let kept = WindowChange::kept_from(resumable_from);
    assert_eq!(resumable_from - kept, h(24) + m(5));
}
