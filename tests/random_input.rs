//! Random input through the real server (issue: hold up under abuse): raw
//! bytes, and truncated, mutated, doubled and misframed versions of a valid
//! message, for every RPC. A few thousand cases from a seed (printed; set
//! WAGATE_FUZZ_SEED to replay one run). The server must stay up, answer
//! every case with a code a client mistake can earn (never INTERNAL,
//! UNKNOWN, UNAVAILABLE or DATA_LOSS, never a hang), and keep what was
//! stored before intact.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use prost::Message;
use tonic::Code;

const CASES: usize = 3_000;
const CONNECTIONS: usize = 8;
const DEFAULT_SEED: u64 = 0x005e_ed0f_3a9e;

/// xorshift64*: small, and the same sequence from the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Every RPC with a valid request for it (none touching the data the test
/// checks afterwards).
fn valid_requests() -> Vec<(&'static str, Vec<u8>)> {
    let template = pb::Template {
        name: "fuzz_tpl".into(),
        language: "en_US".into(),
        category: pb::TemplateCategory::Utility as i32,
        body: "Hello {{1}}, thanks for your order.".into(),
        ..Default::default()
    };
    vec![
        (
            "/wagate.v1.Gateway/SendMessage",
            text("+27829990001", "fuzz-key", "hi").encode_to_vec(),
        ),
        (
            "/wagate.v1.Gateway/RecordInbound",
            pb::RecordInboundRequest {
                received_at: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp(),
                    nanos: 0,
                }),
                ..inbound("+27829990001", "fuzz-in")
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.Gateway/GetWindow",
            pb::GetWindowRequest {
                business_number: BUSINESS.into(),
                customer_number: "+27829990001".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.Gateway/GetMessage",
            pb::GetMessageRequest {
                message_id: "0192f0c4-7c1a-7cc4-8b7e-1a2b3c4d5e6f".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.Gateway/WatchMessages",
            pb::WatchMessagesRequest {
                message_ids: vec!["0192f0c4-7c1a-7cc4-8b7e-1a2b3c4d5e6f".into()],
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.TemplateRegistry/UpsertTemplate",
            pb::UpsertTemplateRequest {
                template: Some(template),
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.TemplateRegistry/GetTemplate",
            pb::GetTemplateRequest {
                name: "fuzz_tpl".into(),
                language: "en_US".into(),
                waba_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.TemplateRegistry/ListTemplates",
            pb::ListTemplatesRequest {
                page_size: 5,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.TemplateRegistry/SetTemplateStatus",
            pb::SetTemplateStatusRequest {
                name: "fuzz_tpl".into(),
                language: "en_US".into(),
                status: pb::TemplateStatus::Approved as i32,
                reason: String::new(),
                waba_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "/wagate.v1.TemplateRegistry/DeleteTemplate",
            pb::DeleteTemplateRequest {
                name: "fuzz_tpl".into(),
                language: "en_US".into(),
                waba_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "/grpc.health.v1.Health/Check",
            tonic_health::pb::HealthCheckRequest {
                service: "wagate.v1.Gateway".into(),
            }
            .encode_to_vec(),
        ),
    ]
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One case: a body derived from `valid` in one of several ways.
fn mutate(rng: &mut Rng, valid: &[u8]) -> (&'static str, Vec<u8>) {
    match rng.below(8) {
        0 => {
            let len = rng.below(200);
            ("raw bytes", rng.bytes(len))
        }
        1 => {
            let frame = framed(valid);
            let cut = rng.below(frame.len());
            ("truncated", frame[..cut].to_vec())
        }
        2 => {
            let mut payload = valid.to_vec();
            for _ in 0..=rng.below(4) {
                if !payload.is_empty() {
                    let at = rng.below(payload.len());
                    payload[at] = rng.next() as u8;
                }
            }
            ("bytes changed", framed(&payload))
        }
        3 => {
            let mut payload = valid.to_vec();
            let at = rng.below(payload.len() + 1);
            let len = 1 + rng.below(16);
            let inserted = rng.bytes(len);
            payload.splice(at..at, inserted);
            ("bytes inserted", framed(&payload))
        }
        4 => {
            let len = rng.below(300);
            ("random message", framed(&rng.bytes(len)))
        }
        5 => {
            let mut frame = framed(valid);
            let wrong = (rng.next() as u32).to_be_bytes();
            frame[1..5].copy_from_slice(&wrong);
            ("wrong length", frame)
        }
        6 => {
            let mut frame = framed(valid);
            frame.extend_from_slice(&framed(valid));
            ("two messages", frame)
        }
        _ => ("valid", framed(valid)),
    }
}

/// Codes a client's mistake (or a valid call) may earn.
fn acceptable(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::Unimplemented
    )
}

/// Sends one raw call and returns its code (OK for a stream that started).
async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
) -> Code {
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.expect("connection usable");
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    stream.send_data(Bytes::from(body), true).unwrap();
    let response = response.await.expect("response headers");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status.code();
    }
    if path.ends_with("/WatchMessages") {
        // A stream that started: it runs until the caller hangs up.
        return Code::Ok;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    tonic::Status::from_header_map(&trailers)
        .expect("grpc-status")
        .code()
}

/// The template stored before the random input, as GetTemplate reads it.
async fn known_template(server: &Server) -> pb::GetTemplateResponse {
    server
        .templates()
        .await
        .get_template(pb::GetTemplateRequest {
            name: "known_tpl".into(),
            language: "en_US".into(),
            waba_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_gets_client_error_codes_and_leaves_stored_data_intact() {
    let seed = std::env::var("WAGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("random input seed: {seed} (WAGATE_FUZZ_SEED={seed} replays it)");
    let mut server = Server::start();

    // What must come through intact.
    approved_template(
        &server,
        "known_tpl",
        pb::TemplateCategory::Utility,
        "Your order {{1}} has shipped.",
    )
    .await;
    let mut gateway = server.gateway().await;
    let mut known = Vec::new();
    for n in 0..5 {
        let customer = format!("+2782555000{n}");
        let key = format!("known-{n}");
        let window = gateway
            .record_inbound(inbound(&customer, &key))
            .await
            .unwrap()
            .into_inner()
            .window
            .unwrap();
        let sent = gateway
            .send_message(text(&customer, &key, STILL_THERE))
            .await
            .unwrap()
            .into_inner();
        known.push(Acknowledged {
            customer,
            key,
            message_id: sent.message_id,
            last_inbound_at: window.last_inbound_at,
        });
    }
    let template_before = known_template(&server).await;

    let requests = valid_requests();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let requests = requests.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
                tokio::spawn(connection);
                let mut rng = Rng(seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut wrong = Vec::new();
                for case in 0..CASES / CONNECTIONS {
                    let (path, valid) = &requests[rng.below(requests.len())];
                    let (how, body) = mutate(&mut rng, valid);
                    let answered = tokio::time::timeout(
                        Duration::from_secs(10),
                        call(&mut client, addr, path, body.clone()),
                    )
                    .await;
                    let Ok(code) = answered else {
                        wrong.push(format!("{path} {how} (case {worker}/{case}): no answer"));
                        continue;
                    };
                    *seen.entry(format!("{code:?}")).or_default() += 1;
                    if !acceptable(code) {
                        wrong.push(format!(
                            "{path} {how} (case {worker}/{case}): {code:?} for {body:02x?}"
                        ));
                    }
                }
                (seen, wrong)
            })
        })
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for worker in workers {
        let (codes, mistakes) = worker.await.unwrap();
        for (code, count) in codes {
            *seen.entry(code).or_default() += count;
        }
        wrong.extend(mistakes);
    }
    eprintln!("codes over {CASES} cases: {seen:?}");
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        seen.get("InvalidArgument").is_some_and(|&n| n > CASES / 4),
        "{seen:?}"
    );
    assert!(seen.get("Ok").is_some_and(|&n| n > 0), "{seen:?}");

    assert!(server.is_running(), "the server died");
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
    let mut gateway = server.gateway().await;
    for write in &known {
        assert!(still_there(&mut gateway, write).await, "{write:?}");
    }
    assert_eq!(known_template(&server).await, template_before);

    // And all of it is on disk: it survives a restart.
    server.restart().await;
    let mut gateway = server.gateway().await;
    for write in &known {
        assert!(still_there(&mut gateway, write).await, "{write:?}");
    }
}
