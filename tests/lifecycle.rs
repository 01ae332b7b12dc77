//! The process around the service: restarts, graceful shutdown, health,
//! reflection, logs and sweeping, against the real binary.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::*;
use pb::{TemplateCategory, WindowState};
use prost::Message;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CUSTOMER: &str = "+27821234567";

#[tokio::test]
async fn state_survives_a_restart() {
    let mut server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "before-restart"))
        .await
        .unwrap();
    approved_template(
        &server,
        "greet",
        TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    )
    .await;
    let text_sent = gateway
        .send_message(text(CUSTOMER, "text-1", "hello"))
        .await
        .unwrap()
        .into_inner();
    let template_sent = gateway
        .send_message(template_send(CUSTOMER, "tpl-1", "greet", &["Ann"]))
        .await
        .unwrap()
        .into_inner();
    let window_before = window(&server, CUSTOMER).await;

    server.restart().await;
    let mut gateway = server.gateway().await;
    let window_after = window(&server, CUSTOMER).await;
    assert_eq!(window_after.expires_at, window_before.expires_at);
    assert_eq!(window_after.last_inbound_at, window_before.last_inbound_at);
    assert_eq!(window_after.state(), WindowState::Open);

    let template = get_template(&server, "greet").await;
    assert_eq!(template.status(), pb::TemplateStatus::Approved);

    let replay = gateway
        .send_message(text(CUSTOMER, "text-1", "hello"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, text_sent, "idempotency holds across restarts");
    let replay = gateway
        .send_message(template_send(CUSTOMER, "tpl-1", "greet", &["Ann"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, template_sent);
    let err = refusal(
        gateway
            .send_message(text(CUSTOMER, "text-1", "different"))
            .await,
    );
    assert_eq!(err.reason, "IDEMPOTENCY_KEY_REUSED");
    let dedupe = gateway
        .record_inbound(inbound(CUSTOMER, "before-restart"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dedupe.outcome(), pb::InboundOutcome::Duplicate);
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = Server::start();
    let gateway = server.gateway().await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                let customer = format!("+2782{i:07}");
                gateway
                    .record_inbound(inbound(&customer, &format!("m{i}")))
                    .await
                    .unwrap();
                let sent = gateway
                    .send_message(text(&customer, &format!("k{i}"), "hi"))
                    .await
                    .unwrap();
                (i, customer, sent.into_inner())
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.push(task.await.unwrap());
    }
    // No graceful stop: whatever was acknowledged must already be on disk.
    server.crash_and_restart();
    let mut gateway = server.gateway().await;
    for (i, customer, sent) in acknowledged {
        assert_eq!(
            window(&server, &customer).await.state(),
            WindowState::Open,
            "{customer}"
        );
        let replay = gateway
            .send_message(text(&customer, &format!("k{i}"), "hi"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replay.message_id, sent.message_id);
    }
}

#[tokio::test]
async fn health_reports_serving() {
    let server = Server::start();
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "wagate.v1.Gateway", "wagate.v1.TemplateRegistry"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = Server::start();

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "wagate.v1.Gateway",
        "wagate.v1.TemplateRegistry",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "wagate.v1.Gateway".into(),
            ),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.package(), "wagate.v1");
}

#[tokio::test]
async fn logs_mask_phone_numbers() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "log-1"))
        .await
        .unwrap();
    gateway
        .send_message(text(CUSTOMER, "log-k", "hello"))
        .await
        .unwrap();
    let _ = gateway
        .send_message(text("+27829876543", "log-k2", "hello"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(
        logs.contains("+27*******67"),
        "masked number is logged:\n{logs}"
    );
    for full in [
        CUSTOMER,
        "27821234567",
        "+27829876543",
        "27829876543",
        "15550001111",
    ] {
        assert!(!logs.contains(full), "{full} appears unmasked:\n{logs}");
    }
}

async fn graceful_shutdown_finishes_the_call_in_flight(signal: &str) {
    let mut server = Server::start();
    server
        .gateway()
        .await
        .record_inbound(inbound(CUSTOMER, "in"))
        .await
        .unwrap();
    let (response, mut stream, _client) = start_slow_get_window(&server, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.signal(signal);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.is_running(),
        "wagate must wait for the call in flight"
    );

    let request = pb::GetWindowRequest {
        business_number: BUSINESS.into(),
        customer_number: CUSTOMER.into(),
    };
    stream.send_data(grpc_frame(&request), true).unwrap();
    let response = response.await.expect("response headers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("grpc trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let reply = pb::GetWindowResponse::decode(&bytes[5..]).unwrap();
    assert_eq!(reply.window.unwrap().state(), WindowState::Open);

    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(server.logs().contains("stopped"), "{}", server.logs());
}

#[tokio::test]
async fn sigterm_finishes_calls_in_flight() {
    graceful_shutdown_finishes_the_call_in_flight("TERM").await;
}

#[tokio::test]
async fn sigint_finishes_calls_in_flight() {
    graceful_shutdown_finishes_the_call_in_flight("INT").await;
}

#[tokio::test]
async fn shutdown_gives_up_on_a_call_that_never_finishes_after_the_grace_period() {
    let mut server = Server::start_with(&["--shutdown-grace", "1s"]);
    let (_response, _stream, _client) = start_slow_get_window(&server, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.is_running(), "still inside the grace period");
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        server.logs().contains("shutdown grace period"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn closed_windows_are_swept_after_retention() {
    let server = Server::start_with(&["--window-retention", "1s", "--sweep-interval", "200ms"]);
    let mut gateway = server.gateway().await;
    let closing = pb::RecordInboundRequest {
        received_at: Some(timestamp(
            Utc::now() - TimeDelta::hours(24) + TimeDelta::milliseconds(500),
        )),
        ..inbound(CUSTOMER, "closing")
    };
    gateway.record_inbound(closing).await.unwrap();
    gateway
        .record_inbound(inbound("+27820000002", "open"))
        .await
        .unwrap();
    assert_eq!(window(&server, CUSTOMER).await.state(), WindowState::Open);

    // Closed after 0.5s, swept 1s later; poll rather than guess the timing.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while window(&server, CUSTOMER).await.state() != WindowState::NeverOpened {
        assert!(
            std::time::Instant::now() < deadline,
            "window was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        window(&server, "+27820000002").await.state(),
        WindowState::Open,
        "open windows stay"
    );
    // The sweeper logs once its pass is over, a moment after the window
    // it removed stops reading as stored.
    while !server.logs().contains("sweep removed expired records") {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep was never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_fails_cleanly() {
    let server = Server::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wagate failed"), "{stderr}");
}

#[tokio::test]
async fn configured_by_environment_alone_with_json_logs() {
    let server = Server::start_with_env(&[
        ("WAGATE_LOG_FORMAT", "json"),
        ("WAGATE_LOG_LEVEL", "info"),
        ("WAGATE_WINDOW_RETENTION", "2h"),
    ]);
    server
        .gateway()
        .await
        .record_inbound(inbound(CUSTOMER, "json-1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let started = &lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on"))
        })
        .unwrap_or_else(|| panic!("no listening line:\n{logs}"))["fields"];
    assert_eq!(
        started["data_dir"],
        server.data_dir().display().to_string(),
        "WAGATE_DATA_DIR used"
    );
    let recorded = lines
        .iter()
        .find(|line| line["fields"]["message"] == "inbound recorded")
        .unwrap_or_else(|| panic!("no inbound log line:\n{logs}"));
    assert_eq!(recorded["fields"]["customer"], "+27*******67");
    assert_eq!(
        recorded["span"]["method"],
        "/wagate.v1.Gateway/RecordInbound"
    );
    assert!(!logs.contains("27821234567"), "{logs}");
}

#[test]
fn every_error_reason_is_exercised_by_an_integration_test() {
    let tests_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let sources: String = [
        "gateway.rs",
        "templates.rs",
        "lifecycle.rs",
        "clients.rs",
        "production.rs",
        "delivery.rs",
        "abuse.rs",
        "full_disk.rs",
        "window_events.rs",
        "rich_messages.rs",
        "accounts.rs",
        "template_sync.rs",
        "clickatell.rs",
        "policy.rs",
    ]
    .iter()
    .map(|file| std::fs::read_to_string(tests_dir.join(file)).unwrap())
    .collect();
    use wagate::grpc::edge;
    let edge_reasons = [
        edge::MISSING_CREDENTIALS,
        edge::INVALID_CREDENTIALS,
        edge::OVERLOADED,
        edge::REQUEST_TOO_LARGE,
        edge::DEADLINE_EXCEEDED,
        edge::REQUEST_MESSAGE_TIMEOUT,
        edge::MALFORMED_REQUEST,
        wagate::grpc::status::WATCH_LAGGED,
        wagate::grpc::status::RESUME_TOKEN_EXPIRED,
        wagate::grpc::status::SERVER_DRAINING,
        wagate::grpc::status::TEMPLATE_SYNC_FAILED,
    ];
    let domain_reasons = wagate::domain::Reason::ALL.iter().map(|r| r.as_str());
    for reason in domain_reasons.chain(edge_reasons) {
        let quoted = format!("\"{reason}\"");
        let uses = sources.matches(&quoted).count();
        assert!(uses > 0, "no integration test checks {quoted}");
    }
}
