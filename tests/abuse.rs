//! Cheap attacks against the real binary (issue: hold up under abuse):
//! stalled calls, garbage and doubled messages, and unbounded streams must
//! neither starve well-behaved callers nor be blamed on the server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;

fn get_window_request() -> pb::GetWindowRequest {
    pb::GetWindowRequest {
        business_number: BUSINESS.into(),
        customer_number: "+27820000001".into(),
    }
}

/// Calls of `method` (a `grpc_method`) handled with `code`, from a scrape.
async fn requests_counted(server: &Server, method: &str, code: &str) -> f64 {
    let labels = [
        format!("grpc_method=\"{method}\""),
        format!("grpc_code=\"{code}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    metric_sum(server, "grpc_server_handled_total", &labels)
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_never_send_their_message_hold_no_slot_and_are_ended() {
    let server = Server::start_with(&[
        "--max-concurrent-calls",
        "8",
        "--request-message-timeout",
        "2s",
    ]);
    // Many more stalled calls than slots, all headers and no message.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(start_slow_get_window(&server, &[]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut gateway = server.gateway().await;
    for n in 0..20 {
        gateway
            .record_inbound(inbound(&format!("+2782000{n:04}"), &format!("ok-{n}")))
            .await
            .unwrap_or_else(|status| panic!("call {n} starved: {status:?}"));
    }

    let started = Instant::now();
    for (response, _stream, _client) in stalled {
        let refused = refusal::<()>(Err(raw_status(response).await));
        assert_eq!(refused.code, Code::DeadlineExceeded, "{refused:?}");
        assert_eq!(refused.reason, "REQUEST_MESSAGE_TIMEOUT", "{refused:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stalled calls were not ended by the message deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_missing_and_doubled_messages_are_malformed_requests() {
    let server = Server::start();
    let valid = grpc_frame(&get_window_request());
    let mut doubled = valid.to_vec();
    doubled.extend_from_slice(&valid);
    let cases: [(&str, Vec<u8>); 5] = [
        ("no message", vec![]),
        ("two messages", doubled),
        ("cut-off frame", valid[..valid.len() - 2].to_vec()),
        ("not protobuf", vec![0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]),
        ("bad flag", {
            let mut frame = valid.to_vec();
            frame[0] = 7;
            frame
        }),
    ];
    for (what, body) in cases {
        let (response, mut stream, _client) =
            raw_call(&server, "/wagate.v1.Gateway/GetWindow", &[]).await;
        stream.send_data(body.into(), true).unwrap();
        let refused = refusal::<()>(Err(raw_status(response).await));
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (Code::InvalidArgument, "MALFORMED_REQUEST"),
            "{what}: {refused:?}"
        );
    }
    // A health check with garbage is the client's fault too.
    let (response, mut stream, _client) =
        raw_call(&server, "/grpc.health.v1.Health/Check", &[]).await;
    stream
        .send_data(vec![0, 0, 0, 0, 2, 0x0a, 0x05].into(), true)
        .unwrap();
    let refused = refusal::<()>(Err(raw_status(response).await));
    assert_eq!(refused.code, Code::InvalidArgument, "{refused:?}");

    assert_eq!(
        requests_counted(&server, "GetWindow", "INVALID_ARGUMENT").await,
        5.0
    );
    assert_eq!(
        requests_counted(&server, "GetWindow", "INTERNAL").await,
        0.0
    );
    // The server is fine and still answers properly formed calls.
    let method = "/wagate.v1.Gateway/GetWindow";
    let (response, mut stream, _client) = raw_call(&server, method, &[]).await;
    stream.send_data(valid, true).unwrap();
    assert_eq!(raw_status(response).await.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_have_a_budget_of_their_own_held_until_they_end() {
    let server = Server::start_with(&[
        "--max-concurrent-streams",
        "3",
        "--max-concurrent-calls",
        "2",
    ]);
    let mut gateway = server.gateway().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let watch = || pb::WatchMessagesRequest::default();
    let first = gateway.watch_messages(watch()).await.unwrap().into_inner();
    let second = gateway.watch_messages(watch()).await.unwrap().into_inner();
    // Health Watch needs no token, so it must be counted too.
    let third = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    for attempt in 0..2 {
        let refused = refusal(gateway.watch_messages(watch()).await);
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (Code::ResourceExhausted, "OVERLOADED"),
            "attempt {attempt}: {refused:?}"
        );
    }
    let refused = refusal(
        health
            .watch(tonic_health::pb::HealthCheckRequest::default())
            .await,
    );
    assert_eq!(refused.code, Code::ResourceExhausted, "{refused:?}");

    // Open streams take nothing from unary calls, nor from health checks.
    for n in 0..5 {
        gateway
            .record_inbound(inbound(&format!("+2782100{n:04}"), &format!("s-{n}")))
            .await
            .unwrap();
    }
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    // A stream that ends gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let fourth = loop {
        match gateway.watch_messages(watch()).await {
            Ok(stream) => break stream,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(Instant::now() < deadline, "the ended stream kept its slot");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop((second, third, fourth));
}

/// Reads (and drops) whatever the server sends until it closes the
/// connection; false if it is still open after `within`.
async fn closed_within(socket: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_handshake_are_closed() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with(&["--handshake-timeout", "1s"]);
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Half of the HTTP/2 preface, then nothing.
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

    // Well-behaved clients are served meanwhile, and after the deadline:
    // a client that did its handshake is not cut off.
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound("+27820000301", "h-1"))
        .await
        .unwrap();
    let started = Instant::now();
    for (n, socket) in silent.iter_mut().chain([&mut partial]).enumerate() {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "socket {n} still open after {:?}",
            started.elapsed()
        );
    }
    gateway
        .record_inbound(inbound("+27820000302", "h-2"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_logged_and_counted() {
    let server = Server::start_with(&["--max-connections", "16", "--handshake-timeout", "60s"]);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    // The log line is read from the server's stderr as it comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logs().contains("too many open connections") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = metric_sum(
        &server,
        "wagate_connections_refused_total",
        &["listener=\"grpc\""],
    )
    .await;
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");

    // Closing connections makes room again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answered = async {
            let channel = tonic::transport::Channel::from_shared(server.url())
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            pb::gateway_client::GatewayClient::new(channel)
                .get_window(get_window_request())
                .await
                .map_err(|e| e.to_string())
        };
        match answered.await {
            Ok(_) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "no room after closing: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_client_trickling_its_request_head_is_closed() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with(&[
        "--handshake-timeout",
        "1s",
        "--app-secret",
        "s3cret",
        "--webhook-verify-token",
        "verify-me",
        "--webhook-listen",
        "127.0.0.1:0",
    ]);
    let url = logged_after(&server, "receiving webhooks on ");
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook")
        .to_owned();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    let trickling = tokio::spawn(async move {
        trickle
            .write_all(b"GET /webhook HTTP/1.1\r\n")
            .await
            .unwrap();
        for byte in b"X-Slow: ".iter().cycle().take(100) {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(
        trickling.await.unwrap(),
        "a trickled request head kept the connection open for {:?}",
        started.elapsed()
    );
    // The receiver still answers a proper request.
    let verified = reqwest::get(format!(
        "{url}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=42"
    ))
    .await
    .unwrap();
    assert_eq!(verified.status(), 200);
    assert_eq!(verified.text().await.unwrap(), "42");
}

#[test]
fn the_open_files_limit_is_raised_and_logged() {
    let server = Server::start();
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("open files limit"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("soft=") && line.contains("hard="), "{line}");
    let field = |name: &str| {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    assert_eq!(field("soft"), field("hard"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_gaps_are_closed_with_clear_reasons() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let ancient = pb::RecordInboundRequest {
        received_at: Some(prost_types::Timestamp {
            seconds: -62_135_596_801, // a second before 0001-01-01
            nanos: 0,
        }),
        ..inbound("+27820000401", "ancient")
    };
    let refused = refusal(gateway.record_inbound(ancient).await);
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (Code::InvalidArgument, "INVALID_TIMESTAMP"),
        "{refused:?}"
    );
    for number in [
        "+27(82 123 4567",
        "+2782) 123 4567",
        "(+)27821234567",
        "+27((82)) 1234567",
    ] {
        let refused = refusal(gateway.record_inbound(inbound(number, "paren")).await);
        assert_eq!(
            refused.reason, "INVALID_PHONE_NUMBER",
            "{number}: {refused:?}"
        );
    }
    gateway
        .record_inbound(inbound("+27820000402", "open"))
        .await
        .unwrap();
    for body in ["nul\0inside", "\u{1b}[31mred", "carriage\rreturn"] {
        let refused = refusal(
            gateway
                .send_message(text("+27820000402", "ctl", body))
                .await,
        );
        assert_eq!(refused.reason, "INVALID_TEXT", "{body:?}: {refused:?}");
    }
    let mut templates = server.templates().await;
    let refused = refusal(
        templates
            .upsert_template(pb::UpsertTemplateRequest {
                template: Some(template(
                    "ctl_tpl",
                    pb::TemplateCategory::Utility,
                    "Hi\0{{1}}",
                )),
            })
            .await,
    );
    assert_eq!(refused.reason, "INVALID_TEMPLATE", "{refused:?}");
    approved_template(
        &server,
        "ok_tpl",
        pb::TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    )
    .await;
    let refused = refusal(
        templates
            .set_template_status(pb::SetTemplateStatusRequest {
                name: "ok_tpl".into(),
                language: "en_US".into(),
                status: pb::TemplateStatus::Paused as i32,
                reason: "quality\u{1b}[0m".into(),
                waba_id: String::new(),
            })
            .await,
    );
    assert_eq!(refused.reason, "INVALID_TEMPLATE_STATUS", "{refused:?}");
    // Tab and newline are WhatsApp's own and pass.
    gateway
        .send_message(text("+27820000402", "tab", "Line one\n\tLine two"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_take_no_slot_when_auth_is_on() {
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, "billing:billing-token-0123456789\n").unwrap();
    let server = Server::start_with(&[
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
        "--max-concurrent-calls",
        "4",
    ]);
    // Headers without credentials, and no message: refused at once.
    let mut anonymous = Vec::new();
    for _ in 0..20 {
        anonymous.push(start_slow_get_window(&server, &[]).await);
    }
    for (response, _stream, _client) in anonymous {
        let refused = refusal::<()>(Err(raw_status(response).await));
        assert_eq!(refused.reason, "MISSING_CREDENTIALS", "{refused:?}");
    }
    // A caller with a token is served meanwhile.
    let mut gateway = server.gateway().await;
    let mut request = tonic::Request::new(get_window_request());
    request.metadata_mut().insert(
        "authorization",
        "Bearer billing-token-0123456789".parse().unwrap(),
    );
    gateway.get_window(request).await.unwrap();
}
