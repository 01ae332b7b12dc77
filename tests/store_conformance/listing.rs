//! ListWindows' store side, run by `main.rs` on every backend like the
//! cases in `cases.rs`.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use wagate::domain::window_query::{WindowCursor, WindowQuery};
use wagate::domain::{
    EntryPoint, Inbound, InboundKind, InboundMessageId, Pair, PhoneNumber, WindowState,
};

use crate::cases::Harness;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn pair(business: &str, customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse(business).unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

/// Every window the query matches, a page of `page` at a time, following
/// the cursor as the service layer hands it out.
async fn all_pages(
    store: &wagate::service::Service,
    query: &WindowQuery,
    page: usize,
) -> Vec<(String, DateTime<Utc>)> {
    let mut listed = Vec::new();
    let mut after: Option<WindowCursor> = None;
    loop {
        let got = store
            .list_windows(query, after.as_ref(), page)
            .await
            .unwrap();
        assert!(got.windows.len() <= page);
        listed.extend(got.windows.iter().map(|(pair, window)| {
            (
                format!("{} {}", pair.business.as_str(), pair.customer.as_str()),
                window.expires_at,
            )
        }));
        match got.next_after {
            Some(next) => after = Some(next),
            None => return listed,
        }
    }
}

pub async fn windows_are_listed_by_expiry_a_page_at_a_time(h: &dyn Harness) {
    let store = h.open().await;
    let b1 = "+15550001111";
    let b2 = "+15550002222";
    // (business, customer, hours after t0 of the inbound)
    let inbounds = [
        (b1, "+27821234567", 0),
        (b1, "+27821234568", 0), // same expiry: ordered by number
        (b2, "+27821234567", 0),
        (b1, "+27821234569", 3),
        (b2, "+27821234570", 10),
        (b1, "+27821234571", 12),
        (b1, "+27821234572", 1), // extended below: listed once, at its new expiry
    ];
    for (n, (business, customer, hours)) in inbounds.iter().enumerate() {
        let at = t0() + TimeDelta::hours(*hours);
        store
            .record_inbound(
                &pair(business, customer),
                &InboundMessageId::parse(&format!("wamid.list.{n}")).unwrap(),
                &Inbound {
                    received_at: at,
                    kind: InboundKind::Message,
                    entry_point: EntryPoint::Organic,
                },
                at,
            )
            .await
            .unwrap();
    }
    let extended_at = t0() + TimeDelta::hours(11);
    store
        .record_inbound(
            &pair(b1, "+27821234572"),
            &InboundMessageId::parse("wamid.list.again").unwrap(),
            &Inbound {
                received_at: extended_at,
                kind: InboundKind::Message,
                entry_point: EntryPoint::Organic,
            },
            extended_at,
        )
        .await
        .unwrap();

    let now = t0() + TimeDelta::hours(30);
    let all = WindowQuery::new(None, &[], None, None, now).unwrap();
    let listed = all_pages(&store, &all, 2).await;
    let expected: Vec<(String, DateTime<Utc>)> = [
        (b1, "+27821234567", 24),
        (b1, "+27821234568", 24),
        (b2, "+27821234567", 24),
        (b1, "+27821234569", 27),
        (b2, "+27821234570", 34),
        (b1, "+27821234572", 35),
        (b1, "+27821234571", 36),
    ]
    .iter()
    .map(|(b, c, h)| (format!("{b} {c}"), t0() + TimeDelta::hours(*h)))
    .collect();
    assert_eq!(listed, expected, "every window once, in expiry order");
    for page in [1, 3, 7, 100] {
        assert_eq!(
            all_pages(&store, &all, page).await,
            expected,
            "pages of {page}"
        );
    }

    let names = |q: &WindowQuery| {
        let q = q.clone();
        let store = &store;
        async move {
            all_pages(store, &q, 50)
                .await
                .into_iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        }
    };
    let open = WindowQuery::new(None, &[WindowState::Open], None, None, now).unwrap();
    assert_eq!(
        names(&open).await,
        [
            format!("{b2} +27821234570"),
            format!("{b1} +27821234572"),
            format!("{b1} +27821234571")
        ]
    );
    let closed = WindowQuery::new(None, &[WindowState::Closed], None, None, now).unwrap();
    assert_eq!(names(&closed).await.len(), 4);
    let one_business =
        WindowQuery::new(Some(PhoneNumber::parse(b2).unwrap()), &[], None, None, now).unwrap();
    assert_eq!(
        names(&one_business).await,
        [format!("{b2} +27821234567"), format!("{b2} +27821234570")]
    );
    // Closing within the next 5 hours, as of now.
    let soon = WindowQuery::new(
        None,
        &[WindowState::Open],
        None,
        Some(now + TimeDelta::hours(5)),
        now,
    )
    .unwrap();
    assert_eq!(names(&soon).await, [format!("{b2} +27821234570")]);
    // Bounds are exclusive.
    let between = WindowQuery::new(
        None,
        &[],
        Some(t0() + TimeDelta::hours(24)),
        Some(t0() + TimeDelta::hours(35)),
        now,
    )
    .unwrap();
    assert_eq!(
        names(&between).await,
        [format!("{b1} +27821234569"), format!("{b2} +27821234570")]
    );
    let nothing = WindowQuery::new(
        None,
        &[WindowState::Open],
        None,
        Some(now - TimeDelta::hours(1)),
        now,
    )
    .unwrap();
    assert!(names(&nothing).await.is_empty());
}
