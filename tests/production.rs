//! The production surface, against the real binary: Prometheus metrics,
//! per-call tracing, TLS and mTLS, bearer-token callers, load shedding,
//! request size and deadline limits, and draining on SIGTERM.

mod common;

use std::time::Duration;

use common::*;
use pb::WindowState;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CUSTOMER: &str = "+27821234567";

/// GETs `url` (plain HTTP/1.0) and returns the body.
async fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tcp.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    body.to_owned()
}

async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let body = http_get(&metrics_url(server)).await;
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{body}"))
}

/// The value of the sample `name` whose labels include every pair in `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_count_calls_decisions_windows_sweeps_and_commits() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "m-1"))
        .await
        .unwrap();
    gateway
        .send_message(text(CUSTOMER, "k-1", "hello"))
        .await
        .unwrap();
    let closed = gateway
        .send_message(text("+27829999999", "k-2", "hello"))
        .await;
    assert_eq!(refusal(closed).reason, "WINDOW_CLOSED");
    let mut templates = server.templates().await;
    templates
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(template(
                "draft_only",
                pb::TemplateCategory::Utility,
                "Hi {{1}}, thanks for your order.",
            )),
        })
        .await
        .unwrap();
    let pending = gateway
        .send_message(template_send(CUSTOMER, "k-3", "draft_only", &["Ann"]))
        .await;
    assert_eq!(refusal(pending).reason, "TEMPLATE_NOT_APPROVED");

    // A made-up method: UNIMPLEMENTED, counted without minting a label.
    call_unknown_method(&server, "/wagate.v1.Gateway/MadeUp").await;

    // A health probe: counted apart from traffic.
    tonic_health::pb::health_client::HealthClient::new(server.channel().await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    let scrape = scrape(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "unknown"),
                ("grpc_method", "unknown"),
                ("grpc_code", "UNIMPLEMENTED")
            ]
        ),
        Some(1.0)
    );
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("MadeUp")))
    );
    let send = [
        ("grpc_type", "unary"),
        ("grpc_service", "wagate.v1.Gateway"),
        ("grpc_method", "SendMessage"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels = send.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    assert_eq!(
        sample(&scrape, "grpc_server_started_total", &send),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &with(&[("grpc_code", "OK")])
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &with(&[("grpc_code", "FAILED_PRECONDITION"), ("caller", "-")])
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handling_seconds_count",
            &with(&[("grpc_code", "FAILED_PRECONDITION")])
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_started_total",
            &[("grpc_service", "grpc.health.v1.Health")]
        ),
        None,
        "health probes are not traffic"
    );
    assert_eq!(
        sample(
            &scrape,
            "wagate_grpc_infrastructure_handled_total",
            &[
                ("grpc_service", "grpc.health.v1.Health"),
                ("grpc_method", "Check"),
                ("grpc_code", "OK")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "wagate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&scrape, process, &[]).is_some(), "no {process}");
    }
    for (decision, count) in [
        ("ACCEPTED", 1.0),
        ("WINDOW_CLOSED", 1.0),
        ("TEMPLATE_NOT_APPROVED", 1.0),
    ] {
        assert_eq!(
            sample(
                &scrape,
                "wagate_send_decisions_total",
                &[("decision", decision)]
            ),
            Some(count),
            "{decision}"
        );
    }
    assert_eq!(
        sample(
            &scrape,
            "wagate_inbound_outcomes_total",
            &[("outcome", "OPENED"), ("source", "grpc")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&scrape, "wagate_open_windows", &[]), Some(1.0));
    assert!(sample(&scrape, "wagate_store_size_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&scrape, "wagate_sweeper_runs_total", &[]).unwrap() >= 1.0);
    assert!(
        sample(&scrape, "wagate_swept_items_total", &[("kind", "window")]).is_some(),
        "swept items are exported per kind"
    );
    // Every acknowledged write went through a group-commit flush.
    assert!(sample(&scrape, "wagate_group_commit_batch_size_count", &[]).unwrap() >= 3.0);
}

#[tokio::test]
async fn a_call_logs_one_span_with_method_status_latency_and_the_callers_trace() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let mut request = tonic::Request::new(inbound(CUSTOMER, "t-1"));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    gateway.record_inbound(request).await.unwrap();
    let refused = gateway
        .send_message(text("+27829999999", "k-1", "hello"))
        .await;
    assert_eq!(refusal(refused).code, Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = server.logs();
    let finished: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("call finished"))
        .collect();
    assert_eq!(finished.len(), 2, "{logs}");
    let inbound_line = finished[0];
    for part in [
        "method=/wagate.v1.Gateway/RecordInbound",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736",
        "parent_span_id=00f067aa0ba902b7",
        "code=OK",
        "latency_ms=",
    ] {
        assert!(
            inbound_line.contains(part),
            "{part} missing: {inbound_line}"
        );
    }
    assert!(
        finished[1].contains("code=FAILED_PRECONDITION"),
        "{}",
        finished[1]
    );
    assert!(!finished[1].contains("trace_id="), "{}", finished[1]);
    // The inbound's own log line sits inside the call's span.
    let recorded = logs
        .lines()
        .find(|l| l.contains("inbound recorded"))
        .unwrap();
    assert!(
        recorded.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "{recorded}"
    );
    assert!(
        !logs.contains("27821234567"),
        "a phone number leaked:\n{logs}"
    );
}

fn write(dir: &std::path::Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn bearer_tokens_name_callers_and_everything_else_is_unauthenticated() {
    let files = tempfile::tempdir().unwrap();
    let tokens = write(
        files.path(),
        "tokens",
        "# caller:token\nbilling:billing-token-0123456789\n",
    );
    let server = Server::start_with(&["--auth-tokens-file", &tokens]);
    let channel = server.channel().await;
    let mut gateway = pb::gateway_client::GatewayClient::new(channel.clone());

    let missing = refusal(gateway.get_window(get_window(CUSTOMER)).await);
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.domain.as_str()
        ),
        (Code::Unauthenticated, "MISSING_CREDENTIALS", "wagate")
    );
    let wrong = refusal(
        gateway
            .get_window(with_token(get_window(CUSTOMER), "billing-token-0123456780"))
            .await,
    );
    assert_eq!(
        (wrong.code, wrong.reason.as_str()),
        (Code::Unauthenticated, "INVALID_CREDENTIALS")
    );
    let window = gateway
        .get_window(with_token(get_window(CUSTOMER), "billing-token-0123456789"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(window.window.unwrap().state(), WindowState::NeverOpened);

    // Health and reflection need no token.
    let health = HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
        ..Default::default()
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.message().await.unwrap().is_some());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(logs.contains("caller=billing"), "{logs}");
    assert!(!logs.contains("billing-token"), "a token leaked:\n{logs}");
    let scrape = scrape(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &[("grpc_method", "GetWindow"), ("caller", "billing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "GetWindow"),
                ("caller", "unauthenticated"),
                ("grpc_code", "UNAUTHENTICATED")
            ]
        ),
        Some(2.0)
    );
}

fn get_window(customer: &str) -> pb::GetWindowRequest {
    pb::GetWindowRequest {
        business_number: BUSINESS.into(),
        customer_number: customer.into(),
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// made fresh for the test.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wagate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("billing", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

async fn tls_channel(server: &Server, pki: &Pki, client_identity: bool) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if client_identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn serves_over_tls_and_refuses_plaintext() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(files.path(), "server.pem", &pki.server_cert);
    let key = write(files.path(), "server.key", &pki.server_key);
    let server = Server::start_with(&["--tls-cert", &cert, "--tls-key", &key]);

    let channel = tls_channel(&server, &pki, false).await.unwrap();
    let reply = pb::gateway_client::GatewayClient::new(channel)
        .record_inbound(inbound(CUSTOMER, "tls-1"))
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().window.unwrap().state(),
        WindowState::Open
    );

    let plaintext = match Channel::from_shared(server.url()).unwrap().connect().await {
        Err(_) => None,
        Ok(channel) => Some(
            pb::gateway_client::GatewayClient::new(channel)
                .get_window(get_window(CUSTOMER))
                .await,
        ),
    };
    assert!(
        !matches!(plaintext, Some(Ok(_))),
        "a plaintext call must not be answered: {plaintext:?}"
    );
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(files.path(), "server.pem", &pki.server_cert);
    let key = write(files.path(), "server.key", &pki.server_key);
    let server = Server::start_with(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--handshake-timeout",
        "1s",
    ]);
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of a ClientHello, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    for socket in [&mut silent, &mut stalled] {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an unfinished TLS handshake was kept open");
    }
    // A client that finishes its handshake is served, after the deadline too.
    let channel = tls_channel(&server, &pki, false).await.unwrap();
    pb::gateway_client::GatewayClient::new(channel)
        .get_window(get_window(CUSTOMER))
        .await
        .unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(files.path(), "server.pem", &pki.server_cert);
    let key = write(files.path(), "server.key", &pki.server_key);
    let ca = write(files.path(), "ca.pem", &pki.ca);
    let server = Server::start_with(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);

    let channel = tls_channel(&server, &pki, true).await.unwrap();
    pb::gateway_client::GatewayClient::new(channel)
        .get_window(get_window(CUSTOMER))
        .await
        .unwrap();

    let anonymous = match tls_channel(&server, &pki, false).await {
        Err(error) => Err(error),
        Ok(channel) => pb::gateway_client::GatewayClient::new(channel)
            .get_window(get_window(CUSTOMER))
            .await
            .map_err(|status| format!("{status:?}")),
    };
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served"
    );
}

#[tokio::test]
async fn a_flood_beyond_the_concurrency_limit_is_shed_with_resource_exhausted() {
    let server = Server::start_with(&["--max-concurrent-calls", "2"]);
    let channels = [server.channel().await, server.channel().await];
    let calls: Vec<_> = (0..400)
        .map(|n| {
            let mut gateway = pb::gateway_client::GatewayClient::new(channels[n % 2].clone());
            tokio::spawn(async move {
                gateway
                    .record_inbound(inbound(&format!("+2782{n:07}"), &format!("flood-{n}")))
                    .await
            })
        })
        .collect();
    let (mut served, mut shed) = (Vec::new(), 0);
    for (n, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Ok(_) => served.push(n),
            Err(status) => {
                let refused = refusal::<()>(Err(status));
                assert_eq!(
                    (refused.code, refused.reason.as_str()),
                    (Code::ResourceExhausted, "OVERLOADED")
                );
                shed += 1;
            }
        }
    }
    assert!(
        !served.is_empty() && shed > 0,
        "served {}, shed {shed}",
        served.len()
    );
    // Still healthy and serving afterwards, and every served write is there.
    for n in served {
        let window = window(&server, &format!("+2782{n:07}")).await;
        assert_eq!(window.state(), WindowState::Open, "customer {n}");
    }
    let health = HealthClient::new(server.channel().await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let scrape = scrape(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "RecordInbound"),
                ("grpc_code", "RESOURCE_EXHAUSTED")
            ]
        ),
        Some(shed as f64)
    );
}

#[tokio::test]
async fn an_oversized_request_is_refused_with_resource_exhausted() {
    let server = Server::start_with(&["--max-request-bytes", "4096"]);
    let big = "x".repeat(5000);
    let refused = refusal(
        server
            .gateway()
            .await
            .send_message(text(CUSTOMER, "big-1", &big))
            .await,
    );
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (Code::ResourceExhausted, "REQUEST_TOO_LARGE")
    );
    // A request under the limit is judged on its content as usual.
    let refused = refusal(
        server
            .gateway()
            .await
            .send_message(text(CUSTOMER, "small-1", "hi"))
            .await,
    );
    assert_eq!(refused.reason, "WINDOW_CLOSED");
}

/// Reads a raw HTTP/2 gRPC response's status code, from headers or
/// trailers, and its body; a trailers-only refusal also yields its reason.
async fn grpc_status(response: h2::client::ResponseFuture) -> (String, Vec<u8>) {
    let response = response.await.expect("response headers");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        let reason = refusal::<()>(Err(status)).reason;
        let code = response.headers()["grpc-status"]
            .to_str()
            .unwrap()
            .to_owned();
        return (code, reason.into_bytes());
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("grpc trailers");
    (trailers["grpc-status"].to_str().unwrap().to_owned(), bytes)
}

#[tokio::test]
async fn a_call_past_the_callers_grpc_timeout_gets_deadline_exceeded() {
    let server = Server::start();
    // The body never comes: the call can only end by its deadline.
    let (response, _stream, _client) =
        start_slow_get_window(&server, &[("grpc-timeout", "300m")]).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), grpc_status(response))
        .await
        .expect("the deadline must end the call");
    assert_eq!(answered.0, (Code::DeadlineExceeded as i32).to_string());
    assert_eq!(answered.1, b"DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn the_servers_call_timeout_bounds_calls_without_a_deadline() {
    let server = Server::start_with(&["--call-timeout", "300ms"]);
    let (response, _stream, _client) = start_slow_get_window(&server, &[]).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), grpc_status(response))
        .await
        .expect("the call timeout must end the call");
    assert_eq!(answered.0, (Code::DeadlineExceeded as i32).to_string());
    assert_eq!(answered.1, b"DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn sigterm_reports_not_serving_while_draining_then_finishes_the_call_in_flight() {
    let mut server = Server::start_with(&["--drain-delay", "2s"]);
    server
        .gateway()
        .await
        .record_inbound(inbound(CUSTOMER, "d-1"))
        .await
        .unwrap();
    let channel = server.channel().await;
    let (response, mut stream, _client) = start_slow_get_window(&server, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "wagate.v1.Gateway", "wagate.v1.TemplateRegistry"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::NotServing, "{service:?}");
    }
    let live = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(live, ServingStatus::Serving, "alive while draining");
    // Not ready, but alive: calls that still arrive during the drain are served.
    pb::gateway_client::GatewayClient::new(channel)
        .get_window(get_window(CUSTOMER))
        .await
        .expect("served while draining");
    assert!(server.is_running());

    stream
        .send_data(grpc_frame(&get_window(CUSTOMER)), true)
        .unwrap();
    let (status, body) = grpc_status(response).await;
    assert_eq!(status, "0");
    let reply = pb::GetWindowResponse::decode(&body[5..]).unwrap();
    assert_eq!(reply.window.unwrap().state(), WindowState::Open);
    let exit = server.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
}

mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// An OTLP/gRPC collector on an ephemeral port that keeps what it gets.
    #[derive(Clone, Default)]
    pub struct Collector {
        pub spans: Arc<Mutex<Vec<Span>>>,
        pub resources: Arc<Mutex<Vec<Resource>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap();
            for resource in request.into_inner().resource_spans {
                if let Some(kept) = resource.resource {
                    self.resources.lock().unwrap().push(kept);
                }
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    pub async fn start() -> (Collector, std::net::SocketAddr) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, addr)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute's value as text (strings as they are, numbers in decimal).
fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(n) => n.to_string(),
        Value::DoubleValue(n) => n.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn call_spans_follow_the_rpc_conventions_under_the_callers_trace() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let (collector, collector_addr) = otlp::start().await;
    let endpoint = format!("http://{collector_addr}");
    let mut server = Server::start_with(&["--otlp-endpoint", &endpoint]);
    let mut request = tonic::Request::new(inbound(CUSTOMER, "otlp-1"));
    for (name, value) in [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=abc"),
        ("baggage", "tenant=acme"),
    ] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    server
        .gateway()
        .await
        .record_inbound(request)
        .await
        .unwrap();
    let refused = server
        .gateway()
        .await
        .send_message(text("+27829999999", "otlp-k", "hello"))
        .await;
    assert_eq!(refusal(refused).code, Code::FailedPrecondition);
    call_unknown_method(&server, "/wagate.v1.Gateway/MadeUp").await;
    // Shutdown flushes the batched spans.
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit}\n{}", server.logs());

    let spans = collector.spans.lock().unwrap().clone();
    let named = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no {name} span among {spans:#?}"))
            .clone()
    };
    let rpc = named("wagate.v1.Gateway/RecordInbound");
    assert_eq!(rpc.kind, SpanKind::Server as i32, "{rpc:#?}");
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "wagate.v1.Gateway"),
        ("rpc.method", "RecordInbound"),
        ("rpc.grpc.status_code", "0"),
        ("caller", "-"),
    ] {
        assert_eq!(
            attribute(&rpc.attributes, key).as_deref(),
            Some(value),
            "{key}: {rpc:#?}"
        );
    }
    assert_eq!(hex(&rpc.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&rpc.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        rpc.trace_state, "vendor=abc",
        "the caller's tracestate is kept"
    );
    assert_ne!(
        rpc.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    // A refusal is the caller's doing: its code, no error status.
    let send = named("wagate.v1.Gateway/SendMessage");
    assert_eq!(
        attribute(&send.attributes, "rpc.grpc.status_code").as_deref(),
        Some("9")
    );
    assert_ne!(
        send.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    // A method wagate does not serve is a server span in error, named for
    // the system rather than the made-up path.
    let unknown = named("grpc");
    assert_eq!(
        attribute(&unknown.attributes, "rpc.grpc.status_code").as_deref(),
        Some("12")
    );
    assert_eq!(
        unknown.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attribute(&unknown.attributes, "rpc.method").as_deref(),
        Some("_OTHER")
    );

    let resources = collector.resources.lock().unwrap().clone();
    let resource = resources.first().expect("a resource");
    assert_eq!(
        attribute(&resource.attributes, "service.name").as_deref(),
        Some("wagate")
    );
    assert_eq!(
        attribute(&resource.attributes, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        !format!("{spans:?}").contains("27821234567"),
        "a phone number was exported"
    );
}

/// Reads one HTTP/2 frame: (type, flags, payload); `None` at end of stream.
async fn read_frame(tcp: &mut tokio::net::TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await.ok()?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

#[tokio::test]
async fn keepalive_pings_idle_connections_and_drops_a_peer_that_never_answers() {
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    let server = Server::start_with(&[
        "--http2-keepalive-interval",
        "300ms",
        "--http2-keepalive-timeout",
        "300ms",
    ]);
    // A bare HTTP/2 peer: preface and empty SETTINGS, then silence.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .await
        .unwrap();

    let mut pinged = false;
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((kind, flags, _)) = read_frame(&mut tcp).await {
            match kind {
                // Acknowledge the server's settings, as any peer must.
                SETTINGS if flags & 1 == 0 => tcp
                    .write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0])
                    .await
                    .unwrap(),
                PING if flags & 1 == 0 => pinged = true,
                GOAWAY => return "goaway",
                _ => {}
            }
        }
        "closed"
    })
    .await;
    assert!(pinged, "no keepalive PING on an idle connection");
    assert!(
        outcome.is_ok(),
        "the connection stayed open though the PING was never answered"
    );
}

#[tokio::test]
async fn sigint_from_a_terminal_skips_the_drain_delay() {
    let mut server = Server::start_with(&["--drain-delay", "1h"]);
    server.signal("INT");
    // Far less than the hour SIGTERM would report NOT_SERVING for.
    let exit = server.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "exit status {exit}");
    assert!(
        server.logs().contains("drain_delay=0ns"),
        "{}",
        server.logs()
    );
}

async fn call_unknown_method(server: &Server, path: &str) {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://{}{path}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "12", "UNIMPLEMENTED");
}

#[tokio::test]
async fn a_stream_is_counted_when_it_ends_with_its_real_code_and_the_exposition_lints_clean() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let watch = [
        ("grpc_type", "server_stream"),
        ("grpc_service", "wagate.v1.Gateway"),
        ("grpc_method", "WatchMessages"),
    ];
    let stream = gateway
        .watch_messages(pb::WatchMessagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let open = scrape(&server).await;
    assert_eq!(
        sample(&open, "grpc_server_started_total", &watch),
        Some(1.0)
    );
    assert_eq!(
        sample(&open, "grpc_server_handled_total", &watch),
        None,
        "an open stream is not finished"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    let mut cancelled = watch.to_vec();
    cancelled.push(("grpc_code", "CANCELLED"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let ended = loop {
        let scraped = scrape(&server).await;
        if sample(&scraped, "grpc_server_handled_total", &cancelled).is_some() {
            break scraped;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ended stream was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample(&ended, "grpc_server_handled_total", &cancelled),
        Some(1.0)
    );
    let duration = ended
        .samples
        .iter()
        .find(|s| {
            s.metric == "grpc_server_handling_seconds"
                && cancelled.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().find(|b| b.count > 0.0).map(|b| b.less_than)
            }
            _ => None,
        });
    assert!(
        duration.flatten().is_some_and(|le| le >= 0.25),
        "the stream's duration is its life, not its headers': {duration:?}"
    );

    lint_metrics(&metrics_text(&server).await);
}
