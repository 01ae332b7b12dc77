//! The window-change log behind WatchWindows, run by `main.rs` on every
//! backend like the cases in `cases.rs`: what is logged, both read orders,
//! a pair's next change, the watcher on top, and the sweep.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use wagate::domain::retention::Cutoffs;
use wagate::domain::window_events::{
    ChangeKind, ChangeOrder, ChangePosition, EventKey, Leads, WatchFilter, WindowChange,
    WindowEventType,
};
use wagate::domain::{EntryPoint, Inbound, InboundKind, InboundMessageId, Pair, PhoneNumber};
use wagate::service::Service;
use wagate::service::watch::Watcher;

use crate::cases::Harness;

fn pair(customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

async fn record(store: &Service, customer: &str, id: &str, received_at: DateTime<Utc>) {
    let inbound = Inbound {
        received_at,
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    };
    let id = InboundMessageId::parse(id).unwrap();
    store
        .record_inbound(&pair(customer), &id, &inbound, Utc::now())
        .await
        .unwrap();
}

/// Before every change here (and inside PostgreSQL's range of instants).
const FIRST: ChangePosition = ChangePosition {
    at: DateTime::<Utc>::UNIX_EPOCH,
    id: i64::MIN,
};

/// Every change, once the store says all of them are settled.
async fn settled_changes(store: &Service, expected: usize) -> (Vec<WindowChange>, DateTime<Utc>) {
    let storage = store.store();
    for _ in 0..100 {
        let settled = storage.changes_settled().await.unwrap();
        let changes = storage
            .window_changes(ChangeOrder::Recorded, FIRST, settled, 100)
            .await
            .unwrap();
        if changes.len() >= expected {
            return (changes, settled);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log never settled {expected} changes");
}

pub async fn window_changes_are_logged_read_in_order_and_swept(h: &dyn Harness) {
    let store = h.open().await;
    let now = wagate::domain::time::stored(Utc::now());
    let (a, b) = ("+27821234567", "+27821234568");
    record(&store, a, "c.1", now - TimeDelta::hours(1)).await;
    record(&store, a, "c.2", now).await; // extends
    record(&store, a, "c.0", now - TimeDelta::hours(2)).await; // older: nothing
    record(&store, a, "c.2", now).await; // a repeat: nothing
    record(&store, b, "c.3", now - TimeDelta::minutes(23 * 60 + 30)).await; // 30 min left
    let after_writes = Utc::now();

    let (changes, settled) = settled_changes(&store, 3).await;
    assert!(settled >= changes[2].recorded_at);
    let summary: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.pair.customer.as_str().to_owned(),
                c.kind,
                c.window.expires_at,
            )
        })
        .collect();
    let day = TimeDelta::hours(24);
    assert_eq!(
        summary,
        vec![
            (
                a.to_owned(),
                ChangeKind::Opened,
                now - TimeDelta::hours(1) + day
            ),
            (a.to_owned(), ChangeKind::Extended, now + day),
            (
                b.to_owned(),
                ChangeKind::Opened,
                now + TimeDelta::minutes(30)
            ),
        ]
    );
    for pair in changes.windows(2) {
        assert!(pair[0].position() < pair[1].position());
    }
    for change in &changes {
        assert!(change.recorded_at >= now - TimeDelta::seconds(5));
        assert!(change.recorded_at <= after_writes + TimeDelta::seconds(5));
    }

    // Another replica reads the same log.
    let replica = h.another_replica(&store).await;
    let seen = replica
        .store()
        .window_changes(ChangeOrder::Recorded, FIRST, settled, 100)
        .await
        .unwrap();
    assert_eq!(seen, changes);

    // Paging from a position includes the change at it.
    let storage = store.store();
    let first_two = storage
        .window_changes(ChangeOrder::Recorded, FIRST, settled, 2)
        .await
        .unwrap();
    assert_eq!(first_two, changes[..2]);
    let from_second = storage
        .window_changes(ChangeOrder::Recorded, changes[1].position(), settled, 100)
        .await
        .unwrap();
    assert_eq!(from_second, changes[1..]);
    let until_first = storage
        .window_changes(ChangeOrder::Recorded, FIRST, changes[0].recorded_at, 100)
        .await
        .unwrap();
    assert_eq!(until_first, changes[..1]);

    // In expiry order: B, then A's first state, then A's extension.
    let far = now + TimeDelta::days(3);
    let by_expiry = storage
        .window_changes(ChangeOrder::Expiring, FIRST, far, 100)
        .await
        .unwrap();
    assert_eq!(
        by_expiry,
        vec![changes[2].clone(), changes[0].clone(), changes[1].clone()]
    );
    let from_a = ChangePosition {
        at: changes[0].window.expires_at,
        id: changes[0].id,
    };
    let later = storage
        .window_changes(ChangeOrder::Expiring, from_a, far, 1)
        .await
        .unwrap();
    assert_eq!(later, vec![changes[0].clone()]);
    let none_yet = storage
        .window_changes(
            ChangeOrder::Expiring,
            FIRST,
            now + TimeDelta::minutes(29),
            100,
        )
        .await
        .unwrap();
    assert!(none_yet.is_empty());

    // A pair's next change.
    let next = storage
        .next_changes(&[
            (pair(a), changes[0].position()),
            (pair(a), changes[1].position()),
            (pair(b), changes[2].position()),
        ])
        .await
        .unwrap();
    assert_eq!(next, vec![Some(changes[1].recorded_at), None, None]);
    assert!(storage.next_changes(&[]).await.unwrap().is_empty());

    // The watcher on this store: B's 1h point was already past when it was
    // recorded, so it fires with the record; nothing else is due yet.
    let filter = WatchFilter {
        businesses: vec![],
        leads: Leads::new(vec![TimeDelta::hours(1)]).unwrap(),
    };
    let mut watcher = Watcher::new(filter, EventKey::before(changes[0].recorded_at));
    let batch = watcher.next_batch(&**storage).await.unwrap();
    let kinds: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.kind, e.pair.customer.as_str().to_owned()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (WindowEventType::Opened, a.to_owned()),
            (WindowEventType::Extended, a.to_owned()),
            (WindowEventType::Opened, b.to_owned()),
            (WindowEventType::Closing, b.to_owned()),
        ]
    );
    assert!(batch.caught_up);
    assert!(
        watcher
            .next_batch(&**storage)
            .await
            .unwrap()
            .events
            .is_empty()
    );

    // The sweep removes changes older than its cutoff, and only those.
    let long_ago = now - TimeDelta::days(400);
    let cutoffs = |window_changes| Cutoffs {
        windows: long_ago,
        inbound_ids: long_ago,
        idempotency_keys: long_ago,
        early_statuses: long_ago,
        window_changes,
        reaches: long_ago,
        send_rates: long_ago,
    };
    let step = storage
        .sweep_step(&cutoffs(changes[1].recorded_at))
        .await
        .unwrap();
    assert_eq!(step.removed.window_changes, 1);
    let left = storage
        .window_changes(ChangeOrder::Recorded, FIRST, settled, 100)
        .await
        .unwrap();
    assert_eq!(left, changes[1..]);
    let by_expiry = storage
        .window_changes(ChangeOrder::Expiring, FIRST, far, 100)
        .await
        .unwrap();
    assert_eq!(by_expiry, vec![changes[2].clone(), changes[1].clone()]);
    storage
        .sweep_step(&cutoffs(settled + TimeDelta::seconds(1)))
        .await
        .unwrap();
    assert!(
        storage
            .window_changes(ChangeOrder::Recorded, FIRST, settled, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .window_changes(ChangeOrder::Expiring, FIRST, far, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
