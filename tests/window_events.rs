//! WatchWindows against the real binary: events at their instants, resume
//! after a disconnect and after SIGKILL, a watcher too slow to keep up,
//! bad requests, and 100,000 windows closing in one minute.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use common::{BUSINESS, Server, inbound, pb, refusal, time, timestamp};
use tonic::Streaming;
use tonic::transport::Channel;
use wagate::pb::gateway_client::GatewayClient;

const OPENED: i32 = pb::WindowEventType::Opened as i32;
const EXTENDED: i32 = pb::WindowEventType::Extended as i32;
const CLOSING: i32 = pb::WindowEventType::Closing as i32;
const CLOSED: i32 = pb::WindowEventType::Closed as i32;

/// One event, as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Seen {
    kind: i32,
    customer: String,
    occurred_at: DateTime<Utc>,
    lead_seconds: Option<i64>,
    expires_at: DateTime<Utc>,
    token: String,
}

fn seen(response: pb::WatchWindowsResponse) -> Seen {
    let event = response.event.expect("event");
    let window = event.window.expect("window");
    Seen {
        kind: event.r#type,
        customer: window.customer_number,
        occurred_at: time(&event.occurred_at.expect("occurred_at")),
        lead_seconds: event.lead.map(|lead| lead.seconds),
        expires_at: time(&window.expires_at.expect("expires_at")),
        token: event.resume_token,
    }
}

fn request(leads: &[i64], token: &str) -> pb::WatchWindowsRequest {
    pb::WatchWindowsRequest {
        business_numbers: vec![],
        closing_leads: leads
            .iter()
            .map(|&seconds| prost_types::Duration { seconds, nanos: 0 })
            .collect(),
        resume_token: token.into(),
    }
}

async fn watch(
    gateway: &mut GatewayClient<Channel>,
    leads: &[i64],
    token: &str,
) -> Streaming<pb::WatchWindowsResponse> {
    gateway
        .watch_windows(request(leads, token))
        .await
        .expect("watch windows")
        .into_inner()
}

/// Reads events until `done` holds for the list so far.
async fn read_until(
    stream: &mut Streaming<pb::WatchWindowsResponse>,
    within: Duration,
    done: impl Fn(&[Seen]) -> bool,
) -> Vec<Seen> {
    let mut events = Vec::new();
    let deadline = Instant::now() + within;
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(seen(event)),
            Ok(other) => panic!("stream ended: {other:?} after {events:?}"),
            Err(_) => panic!("timed out after {} events: {events:#?}", events.len()),
        }
    }
    events
}

/// A customer's inbound received `age` ago: its window expires at
/// `received + 24h`.
async fn record(
    gateway: &mut GatewayClient<Channel>,
    customer: &str,
    id: &str,
    received: DateTime<Utc>,
) -> pb::RecordInboundResponse {
    gateway
        .record_inbound(pb::RecordInboundRequest {
            received_at: Some(timestamp(received)),
            ..inbound(customer, id)
        })
        .await
        .expect("record inbound")
        .into_inner()
}

fn day() -> TimeDelta {
    TimeDelta::hours(24)
}

#[tokio::test]
async fn events_fire_at_their_instants_and_resume_where_they_left_off() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let leads = [60, 120];
    let mut full = watch(&mut gateway, &leads, "").await;
    let mut partial = watch(&mut gateway, &leads, "").await;
    let now = Utc::now().trunc_subsecs(3);

    // A: 3 s left, inside both leads: OPENED, both CLOSING at once, CLOSED.
    let (a, b, c) = ("+27820000001", "+27820000002", "+27820000003");
    record(&mut gateway, a, "a-1", now - day() + TimeDelta::seconds(3)).await;
    // B: 65 s left, inside the 2-minute lead only; the 1-minute point is 5 s away.
    record(&mut gateway, b, "b-1", now - day() + TimeDelta::seconds(65)).await;
    // C: 4 s left, then extended to 8 s before it closes: one CLOSED, at 8 s.
    record(&mut gateway, c, "c-1", now - day() + TimeDelta::seconds(4)).await;
    let extended = record(&mut gateway, c, "c-2", now - day() + TimeDelta::seconds(8)).await;
    assert_eq!(extended.outcome, pb::InboundOutcome::Extended as i32);
    // An older inbound for C changes nothing and fires nothing.
    record(&mut gateway, c, "c-0", now - day() + TimeDelta::seconds(2)).await;

    let wanted = |events: &[Seen]| {
        events
            .iter()
            .any(|e| e.customer == b && e.lead_seconds == Some(60))
            && events.iter().any(|e| e.customer == c && e.kind == CLOSED)
    };
    let events = read_until(&mut full, Duration::from_secs(30), wanted).await;
    let received_by = Utc::now();
    let of = |customer: &str| -> Vec<(i32, Option<i64>, DateTime<Utc>)> {
        events
            .iter()
            .filter(|e| e.customer == customer)
            .map(|e| (e.kind, e.lead_seconds, e.occurred_at))
            .collect()
    };
    let expires = |customer: &str| {
        events
            .iter()
            .find(|e| e.customer == customer)
            .unwrap()
            .expires_at
    };
    let opened_at = |customer: &str| of(customer)[0].2;
    let (ea, eb) = (expires(a), expires(b));
    assert_eq!(
        of(a),
        vec![
            (OPENED, None, opened_at(a)),
            (CLOSING, Some(60), opened_at(a)),
            (CLOSING, Some(120), opened_at(a)),
            (CLOSED, None, ea),
        ]
    );
    assert_eq!(ea, now + TimeDelta::seconds(3));
    assert_eq!(
        of(b),
        vec![
            (OPENED, None, opened_at(b)),
            (CLOSING, Some(120), opened_at(b)),
            (CLOSING, Some(60), eb - TimeDelta::seconds(60)),
        ]
    );
    let c_events = of(c);
    let c_extended_at = c_events[3].2;
    assert_eq!(
        c_events,
        vec![
            (OPENED, None, opened_at(c)),
            (CLOSING, Some(60), opened_at(c)),
            (CLOSING, Some(120), opened_at(c)),
            (EXTENDED, None, c_extended_at),
            (CLOSING, Some(60), c_extended_at),
            (CLOSING, Some(120), c_extended_at),
            (CLOSED, None, now + TimeDelta::seconds(8)),
        ],
        "no CLOSED at C's first expiry: it was extended first"
    );
    // Events in the order they happened; none before its instant.
    for pair in events.windows(2) {
        assert!(pair[0].occurred_at <= pair[1].occurred_at, "{pair:?}");
    }
    for event in &events {
        assert!(event.occurred_at <= received_by, "{event:?}");
    }
    let closed_a = events
        .iter()
        .find(|e| e.customer == a && e.kind == CLOSED)
        .unwrap();
    assert!(closed_a.occurred_at >= now + TimeDelta::seconds(3));

    // The other watcher leaves after three events and comes back with the
    // last token: together it sees exactly what the first one saw.
    let first = read_until(&mut partial, Duration::from_secs(10), |e| e.len() == 3).await;
    drop(partial);
    let mut resumed = watch(&mut gateway, &leads, &first[2].token).await;
    let rest = read_until(&mut resumed, Duration::from_secs(30), |e| {
        e.len() == events.len() - 3
    })
    .await;
    let together: Vec<Seen> = first.into_iter().chain(rest).collect();
    assert_eq!(together, events, "none lost, none twice");
    // A fresh watch starts from now: nothing already past.
    let mut fresh = watch(&mut gateway, &leads, "").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), fresh.message())
            .await
            .is_err(),
        "a watch from now replays nothing"
    );
}

#[tokio::test]
async fn a_watcher_resumes_after_the_server_is_killed_without_loss() {
    let mut server = Server::start();
    let mut gateway = server.gateway().await;
    let mut watcher = watch(&mut gateway, &[], "").await;
    let now = Utc::now().trunc_subsecs(3);
    let customers: Vec<String> = (0..20).map(|i| format!("+2782100{i:04}")).collect();
    for (i, customer) in customers.iter().enumerate() {
        let left = TimeDelta::milliseconds(2_000 + 200 * i as i64);
        record(
            &mut gateway,
            customer,
            &format!("k-{i}"),
            now - day() + left,
        )
        .await;
    }
    let before = read_until(&mut watcher, Duration::from_secs(10), |e| e.len() == 25).await;
    assert_eq!(before.iter().filter(|e| e.kind == OPENED).count(), 20);

    server.kill();
    // The rest of the windows close while nothing runs.
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.start_again();
    let mut gateway = server.gateway().await;
    let mut resumed = watch(&mut gateway, &[], &before[24].token).await;
    let after = read_until(&mut resumed, Duration::from_secs(20), |e| e.len() == 15).await;
    let all: Vec<Seen> = before.into_iter().chain(after).collect();
    let closed: HashSet<&str> = all
        .iter()
        .filter(|e| e.kind == CLOSED)
        .map(|e| e.customer.as_str())
        .collect();
    assert_eq!(closed.len(), 20, "every window's CLOSED, across the kill");
    let distinct: HashSet<&Seen> = all.iter().collect();
    assert_eq!(distinct.len(), 40, "none twice");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), resumed.message())
            .await
            .is_err(),
        "nothing more"
    );
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_ended_and_resumes_without_loss() {
    const WINDOWS: usize = 3_000;
    let server = Server::start_with(&["--watch-lag-timeout", "1s"]);
    let mut gateway = server.gateway().await;
    let mut fast = watch(&mut gateway, &[60], "").await;
    // The slow client takes no more than HTTP/2's default 64 KiB window
    // (hyper's own default of 2 MiB would hold every event here).
    let narrow = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = watch(&mut GatewayClient::new(narrow), &[60], "").await;
    let now = Utc::now().trunc_subsecs(3);
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                for n in (writer..WINDOWS).step_by(16) {
                    let left = TimeDelta::seconds(3) + TimeDelta::milliseconds(n as i64);
                    record(
                        &mut gateway,
                        &format!("+2782{n:07}"),
                        &format!("s-{n}"),
                        now - day() + left,
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // OPENED, CLOSING (already inside the lead) and CLOSED for each.
    let total = WINDOWS * 3;
    let everything = read_until(&mut fast, Duration::from_secs(60), |e| e.len() == total).await;

    let first = seen(slow.message().await.unwrap().unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = vec![first];
    let lagged = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), slow.message());
        match next.await.expect("the slow watcher was never ended") {
            Ok(Some(event)) => got.push(seen(event)),
            Ok(None) => panic!("ended without a status after {} events", got.len()),
            Err(status) => break status,
        }
    };
    assert!(got.len() < total, "the watcher was ended before the end");
    let refused = refusal::<()>(Err(lagged));
    assert_eq!(refused.code, tonic::Code::Aborted);
    assert_eq!(refused.reason, "WATCH_LAGGED");
    let last = got.last().unwrap().token.clone();
    assert_eq!(refused.metadata["resume_token"], last);
    let mut resumed = watch(&mut gateway, &[60], &last).await;
    let rest_len = total - got.len();
    got.extend(
        read_until(&mut resumed, Duration::from_secs(60), |e| {
            e.len() == rest_len
        })
        .await,
    );
    assert_eq!(got, everything, "resumed without loss or repeats");
    let dropped = common::metric_sum(&server, "wagate_window_events_dropped_total", &[]).await;
    assert!(dropped.unwrap_or(0.0) >= 1.0, "{dropped:?}");
}

#[tokio::test]
async fn bad_watch_requests_are_refused_and_affect_nothing() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    record(&mut gateway, "+27820000009", "bad-0", Utc::now()).await;
    record(&mut gateway, "+27820000008", "bad-00", Utc::now()).await;
    let client = gateway.clone();
    let refused = |request: pb::WatchWindowsRequest| {
        let mut gateway = client.clone();
        async move { refusal(gateway.watch_windows(request).await) }
    };
    for (leads, field) in [
        (vec![59], "closing_leads[0]"),
        (vec![23 * 3600 + 1], "closing_leads[0]"),
        (vec![60, -60], "closing_leads[1]"),
        (vec![3600, 3600], "closing_leads[1]"),
        (vec![60, 120, 180, 240, 300], "closing_leads"),
    ] {
        let r = refused(request(&leads, "")).await;
        assert_eq!(r.code, tonic::Code::InvalidArgument, "{leads:?}");
        assert_eq!(r.reason, "INVALID_CLOSING_LEAD", "{leads:?}");
        assert_eq!(r.fields, vec![field.to_owned()], "{leads:?}");
    }
    let r = refused(pb::WatchWindowsRequest {
        business_numbers: vec!["not a number".into()],
        ..request(&[], "")
    })
    .await;
    assert_eq!(
        (r.code, r.reason.as_str()),
        (tonic::Code::InvalidArgument, "INVALID_PHONE_NUMBER")
    );

    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let page_token = gateway
        .clone()
        .list_windows(pb::ListWindowsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!page_token.is_empty());
    let future = Utc::now() + TimeDelta::hours(1);
    for token in [
        "garbage!".to_owned(),
        b64("ww1:1.2.3"),
        b64("ww1:x.0.0.0"),
        page_token,
        b64(&format!("ww1:{}.0.0.0", future.timestamp_micros())),
    ] {
        let r = refused(request(&[], &token)).await;
        assert_eq!(r.code, tonic::Code::InvalidArgument, "{token}");
        assert_eq!(r.reason, "INVALID_RESUME_TOKEN", "{token}");
    }
    let old = Utc::now() - TimeDelta::hours(25);
    let r = refused(request(
        &[],
        &b64(&format!("ww1:{}.0.0.0", old.timestamp_micros())),
    ))
    .await;
    assert_eq!(r.code, tonic::Code::OutOfRange);
    assert_eq!(r.reason, "RESUME_TOKEN_EXPIRED");

    // Nothing else was touched: the window is there, and a good watch works.
    let window = common::window(&server, "+27820000009").await;
    assert_eq!(window.state, pb::WindowState::Open as i32);
    let mut good = watch(&mut gateway, &[60], "").await;
    record(&mut gateway, "+27820000010", "bad-1", Utc::now()).await;
    let events = read_until(&mut good, Duration::from_secs(10), |e| !e.is_empty()).await;
    assert_eq!(
        (events[0].kind, events[0].customer.as_str()),
        (OPENED, "+27820000010")
    );
    let _ = BUSINESS;
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_hundred_thousand_windows_closing_in_one_minute_reach_two_watchers() {
    const WINDOWS: usize = 100_000;
    const WRITERS: usize = 64;
    let server = Server::start();
    let gateway = server.gateway().await;
    let started = Instant::now();
    let close_from = Utc::now().trunc_subsecs(3) + TimeDelta::seconds(110);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                for n in (writer..WINDOWS).step_by(WRITERS) {
                    // Spread over one minute, many sharing a millisecond.
                    let left = TimeDelta::milliseconds((n % 60_000) as i64);
                    let received = close_from - day() + left;
                    record(
                        &mut gateway,
                        &format!("+2783{n:07}"),
                        &format!("m-{n}"),
                        received,
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let recorded_in = started.elapsed();
    assert!(
        Utc::now() < close_from,
        "recording {WINDOWS} windows took {recorded_in:?}, past the closing minute"
    );

    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                let mut stream = watch(&mut gateway, &[], "").await;
                let mut closed = HashSet::new();
                while closed.len() < WINDOWS {
                    let next = tokio::time::timeout(Duration::from_secs(150), stream.message());
                    let event = seen(next.await.expect("events keep coming").unwrap().unwrap());
                    assert_eq!(event.kind, CLOSED, "{event:?}");
                    assert!(closed.insert(event.customer), "none twice");
                }
                closed.len()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watching = common::metric_sum(&server, "wagate_window_watchers", &[]).await;
    assert_eq!(watching, Some(2.0), "both watchers counted");
    let pid = server.pid();
    let baseline = rss_kib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        })
    };
    let reader = {
        let done = done.clone();
        let mut gateway = gateway.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                n = (n * 7919 + 13) % WINDOWS;
                let asked = Instant::now();
                gateway
                    .get_window(pb::GetWindowRequest {
                        business_number: BUSINESS.into(),
                        customer_number: format!("+2783{n:07}"),
                    })
                    .await
                    .expect("GetWindow while windows close");
                if Utc::now() >= close_from {
                    latencies.push(asked.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies
        })
    };
    for watcher in watchers {
        assert_eq!(watcher.await.unwrap(), WINDOWS);
    }
    let delivered_at = Utc::now();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    let mut latencies = reader.await.unwrap();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{WINDOWS} windows recorded in {recorded_in:?}; every CLOSED reached both watchers \
         {:.1}s after the last expiry; server RSS {} MiB before the closing minute, peak {} MiB; \
         GetWindow during it: {} calls, p50 {:?}, p99 {:?}",
        (delivered_at - (close_from + TimeDelta::seconds(60))).num_milliseconds() as f64 / 1000.0,
        baseline / 1024,
        peak / 1024,
        latencies.len(),
        at(0.5),
        at(0.99),
    );
    assert!(!latencies.is_empty());
    // Watchers read the log at their own pace: memory does not grow with
    // the number of events.
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
    let sent = common::metric_sum(
        &server,
        "wagate_window_events_sent_total",
        &["type=\"CLOSED\""],
    )
    .await;
    assert_eq!(sent, Some(2.0 * WINDOWS as f64));
    let dropped = common::metric_sum(&server, "wagate_window_events_dropped_total", &[]).await;
    assert_eq!(dropped.unwrap_or(0.0), 0.0);
}

#[tokio::test]
async fn a_shutdown_ends_watches_at_once_so_they_resume_elsewhere() {
    let mut server = Server::start();
    let mut gateway = server.gateway().await;
    let mut watcher = watch(&mut gateway, &[], "").await;
    record(&mut gateway, "+27820000077", "drain-1", Utc::now()).await;
    let opened = read_until(&mut watcher, Duration::from_secs(10), |e| !e.is_empty()).await;

    server.signal("TERM");
    let ended = tokio::time::timeout(Duration::from_secs(10), watcher.message())
        .await
        .expect("the watch ends when the server drains");
    let refused = refusal(ended);
    assert_eq!(refused.code, tonic::Code::Unavailable);
    assert_eq!(refused.reason, "SERVER_DRAINING");
    assert!(server.wait_exit(Duration::from_secs(15)).await.success());
    assert!(
        !server
            .logs()
            .contains("still in flight after the shutdown grace"),
        "{}",
        server.logs()
    );

    // Back up: the token still resumes, and new events follow.
    server.start_again();
    let mut gateway = server.gateway().await;
    let mut resumed = watch(&mut gateway, &[], &opened[0].token).await;
    record(&mut gateway, "+27820000078", "drain-2", Utc::now()).await;
    let next = read_until(&mut resumed, Duration::from_secs(10), |e| !e.is_empty()).await;
    assert_eq!(
        (next[0].kind, next[0].customer.as_str()),
        (OPENED, "+27820000078")
    );
}
