//! Talking to WhatsApp, against the real binary and a local HTTP server that
//! speaks the Cloud API's formats: delivery out (JSON bodies, retries,
//! permanent errors, rate limit, restart), webhooks in (handshake,
//! signatures, messages, statuses, template reviews), and following a
//! message with GetMessage and WatchMessages.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use common::*;
use hmac::{Hmac, Mac};
use pb::{MessageStatus, WindowState};
use serde_json::{Value, json};
use sha2::Sha256;
use tonic::Code;

const CUSTOMER: &str = "+27821234567";
const PHONE_NUMBER_ID: &str = "106540352242922";
const TOKEN: &str = "EAAG-test-access-token";
const APP_SECRET: &str = "app-secret-for-tests";
const VERIFY_TOKEN: &str = "verify-me-please";

/// One request the fake Cloud API received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: String,
    body: Value,
    at: Instant,
    /// The status it answered.
    answered: u16,
}

/// A local stand-in for `graph.facebook.com`: records every POST and
/// answers from a script, then with success.
#[derive(Clone, Default)]
struct FakeGraph {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    /// While set, every call is answered 503.
    down: Arc<Mutex<bool>>,
    /// This many next calls hang for longer than any sane client timeout.
    hang: Arc<Mutex<u32>>,
    /// Calls that reached the server, answered or not (yet).
    arrived: Arc<Mutex<usize>>,
}

impl FakeGraph {
    async fn start() -> (FakeGraph, String) {
        let graph = FakeGraph::default();
        let app = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(answer))
            .with_state(graph.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (graph, url)
    }

    fn then(&self, status: u16, body: Value) {
        self.script.lock().unwrap().push_back((status, body));
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn to(&self, customer: &str) -> Vec<Received> {
        let to = customer.trim_start_matches('+');
        self.received()
            .into_iter()
            .filter(|r| r.body["to"] == to)
            .collect()
    }
}

async fn answer(
    State(graph): State<FakeGraph>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let body: Value = serde_json::from_str(&body).expect("the Cloud API gets JSON");
    *graph.arrived.lock().unwrap() += 1;
    let hang = {
        let mut hang = graph.hang.lock().unwrap();
        let now = *hang > 0;
        *hang = hang.saturating_sub(1);
        now
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let scripted = graph.script.lock().unwrap().pop_front();
    let (status, reply) = if *graph.down.lock().unwrap() {
        (
            503,
            json!({ "error": { "message": "Service temporarily unavailable", "code": 2 } }),
        )
    } else {
        scripted.unwrap_or_else(|| {
            let n = graph.received.lock().unwrap().len();
            (
                200,
                json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{ "input": body["to"], "wa_id": body["to"] }],
                    "messages": [{ "id": format!("wamid.fake{n}") }]
                }),
            )
        })
    };
    graph.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body,
        at: Instant::now(),
        answered: status,
    });
    (StatusCode::from_u16(status).unwrap(), reply.to_string())
}

fn cloud_args(graph_url: &str) -> Vec<String> {
    [
        "--delivery",
        "--graph-base-url",
        graph_url,
        "--graph-api-version",
        "v23.0",
        "--phone-number-ids",
        &format!("{BUSINESS}={PHONE_NUMBER_ID}"),
        "--access-token",
        TOKEN,
        "--delivery-backoff",
        "20ms",
        "--delivery-backoff-max",
        "100ms",
        "--app-secret",
        APP_SECRET,
        "--webhook-verify-token",
        VERIFY_TOKEN,
        "--webhook-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .into()
}

fn start(graph_url: &str, extra: &[&str]) -> Server {
    let mut args = cloud_args(graph_url);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&args)
}

fn webhook_url(server: &Server) -> String {
    logged_after(server, "receiving webhooks on ")
}

/// A WatchMessages stream on `server` following the message `id`.
async fn watch_one(server: &Server, id: &str) -> tonic::Streaming<pb::WatchMessagesResponse> {
    server
        .gateway()
        .await
        .watch_messages(pb::WatchMessagesRequest {
            message_ids: vec![id.to_owned()],
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until the message reaches `status`; the Cloud API side is async.
/// The statuses a watch stream reports, up to and including READ (10 s
/// for each update at most).
async fn statuses_until_read(
    watch: &mut tonic::Streaming<pb::WatchMessagesResponse>,
) -> Vec<MessageStatus> {
    let mut seen = Vec::new();
    while seen.last() != Some(&MessageStatus::Read) {
        let update = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a watch update")
            .unwrap()
            .unwrap();
        seen.push(update.message.unwrap().status());
    }
    seen
}

async fn open_window(server: &Server, customer: &str) {
    server
        .gateway()
        .await
        .record_inbound(inbound(customer, &format!("wamid.in.{customer}")))
        .await
        .unwrap();
}

fn signature(body: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a notification as Meta does: signed with the app secret.
async fn notify(server: &Server, notification: &Value) -> u16 {
    let body = notification.to_string();
    reqwest::Client::new()
        .post(webhook_url(server))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(&body, APP_SECRET))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn change(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{ "field": field, "value": value }] }]
    })
}

fn statuses(list: Value) -> Value {
    change(
        "messages",
        json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID },
            "statuses": list
        }),
    )
}

#[tokio::test]
async fn delivers_text_and_templates_as_cloud_api_json_and_keeps_the_wamid() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    approved_template(
        &server,
        "order_update",
        pb::TemplateCategory::Utility,
        "Hi {{1}}, your order {{2}} has shipped.",
    )
    .await;

    let text_id = send(&server, text(CUSTOMER, "t-1", "Your order shipped")).await;
    let text_message = wait_for(&server, &text_id, MessageStatus::Submitted).await;
    // A caller's retry with the same idempotency key is the same message:
    // answered again, not sent again.
    let retried = send(&server, text(CUSTOMER, "t-1", "Your order shipped")).await;
    assert_eq!(retried, text_id);
    let template_id = send(
        &server,
        template_send("+27821234568", "t-2", "order_update", &["Ann", "A-1001"]),
    )
    .await;
    let template_message = wait_for(&server, &template_id, MessageStatus::Submitted).await;

    let received = graph.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    for request in &received {
        assert_eq!(request.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
        assert_eq!(request.authorization, format!("Bearer {TOKEN}"));
    }
    assert_eq!(
        received[0].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "27821234567",
            "type": "text",
            "text": { "preview_url": false, "body": "Your order shipped" }
        })
    );
    assert_eq!(
        received[1].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "27821234568",
            "type": "template",
            "template": {
                "name": "order_update",
                "language": { "code": "en_US" },
                "components": [{ "type": "body", "parameters": [
                    { "type": "text", "text": "Ann" },
                    { "type": "text", "text": "A-1001" }
                ] }]
            }
        })
    );
    assert_eq!(text_message.wamid, "wamid.fake0");
    assert_eq!(text_message.attempts, 1);
    assert_eq!(template_message.wamid, "wamid.fake1");
    assert_eq!(
        template_message.rendered_text,
        "Hi Ann, your order A-1001 has shipped."
    );
    assert!(
        !server.logs().contains(TOKEN),
        "the access token was logged"
    );
}

/// Every free-form content beyond text, as the Cloud API's JSON, in the
/// order sent (one customer each, so they go out one by one).
#[tokio::test]
async fn delivers_media_interactive_location_and_reactions_as_cloud_api_json() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    let mut expected = Vec::new();
    let bodies = [
        json!({ "type": "document", "document": {
            "link": "https://files.example.com/invoice-1001.pdf",
            "caption": "Your invoice", "filename": "invoice-1001.pdf" } }),
        json!({ "type": "image", "image": { "id": "1013859600285441", "caption": "Your parcel" } }),
        json!({ "type": "video", "video": {
            "link": "https://files.example.com/unboxing.mp4", "caption": "How to unpack" } }),
        json!({ "type": "audio", "audio": { "id": "2013859600285441" } }),
        json!({ "type": "sticker", "sticker": { "link": "https://files.example.com/thanks.webp" } }),
        json!({ "type": "interactive", "interactive": {
            "type": "button",
            "header": { "type": "text", "text": "Delivery" },
            "body": { "text": "Which slot suits you?" },
            "footer": { "text": "Reply to choose" },
            "action": { "buttons": [
                { "type": "reply", "reply": { "id": "slot-am", "title": "Morning" } },
                { "type": "reply", "reply": { "id": "slot-pm", "title": "Afternoon" } }
            ] } } }),
        json!({ "type": "interactive", "interactive": {
            "type": "list",
            "body": { "text": "Pick a branch" },
            "action": { "button": "Branches", "sections": [{ "title": "Cape Town", "rows": [
                { "id": "ct-1", "title": "Gardens", "description": "Open until 18:00" }
            ] }] } } }),
        json!({ "type": "interactive", "interactive": {
            "type": "cta_url",
            "header": { "type": "image", "image": { "link": "https://files.example.com/parcel.jpg" } },
            "body": { "text": "Track your parcel" },
            "action": { "name": "cta_url", "parameters": {
                "display_text": "Track", "url": "https://track.example.com/A-1001" } } } }),
        json!({ "type": "location", "location": {
            "latitude": -33.9249, "longitude": 18.4241,
            "name": "Gardens branch", "address": "1 Kloof St, Cape Town" } }),
        json!({ "type": "reaction", "reaction": {
            "message_id": "wamid.HBgLMjc4MjEyMzQ1Njc", "emoji": "👍" } }),
    ];
    for (i, ((name, content), body)) in rich_contents().into_iter().zip(bodies).enumerate() {
        let customer = format!("+2782123{:04}", 5000 + i);
        open_window(&server, &customer).await;
        let id = send(&server, send_of(&customer, name, content)).await;
        wait_for(&server, &id, MessageStatus::Submitted).await;
        let mut full = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": customer.trim_start_matches('+'),
        });
        for (key, value) in body.as_object().unwrap() {
            full[key] = value.clone();
        }
        expected.push((name, full));
    }
    for (name, body) in expected {
        let to = body["to"].as_str().unwrap().to_owned();
        let received = graph.to(&to);
        assert_eq!(received.len(), 1, "{name}");
        assert_eq!(received[0].body, body, "{name}");
    }
}

/// A template's document header goes out as a header parameter.
#[tokio::test]
async fn delivers_a_template_document_header_as_a_header_parameter() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    approve(
        &server,
        pb::Template {
            header_format: pb::HeaderFormat::Document as i32,
            ..template(
                "invoice_ready",
                pb::TemplateCategory::Utility,
                "Hi {{1}}, your invoice is attached.",
            )
        },
    )
    .await;
    let mut request = template_send(CUSTOMER, "h-1", "invoice_ready", &["Ann"]);
    if let Some(pb::send_message_request::Content::Template(t)) = &mut request.content {
        t.header = Some(pb::TemplateHeader {
            value: Some(pb::template_header::Value::Document(pb::MediaReference {
                source: Some(pb::media_reference::Source::Link(
                    "https://files.example.com/invoice-1001.pdf".into(),
                )),
                filename: "invoice-1001.pdf".into(),
            })),
        });
    }
    let id = send(&server, request).await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(
        graph.to(CUSTOMER)[0].body["template"],
        json!({
            "name": "invoice_ready",
            "language": { "code": "en_US" },
            "components": [
                { "type": "header", "parameters": [{ "type": "document", "document": {
                    "link": "https://files.example.com/invoice-1001.pdf",
                    "filename": "invoice-1001.pdf" } }] },
                { "type": "body", "parameters": [{ "type": "text", "text": "Ann" }] }
            ]
        })
    );
}

/// A copy-code button's passcode and a quick reply's payload go out as
/// button parameters.
#[tokio::test]
async fn delivers_copy_codes_and_quick_reply_payloads_as_button_parameters() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    let button = |kind| pb::TemplateButton { kind: Some(kind) };
    approve(
        &server,
        pb::Template {
            buttons: vec![button(pb::template_button::Kind::CopyCode(
                pb::CopyCodeButton {
                    text: "Copy code".into(),
                },
            ))],
            ..template(
                "login_code",
                pb::TemplateCategory::Authentication,
                "{{1}} is your verification code.",
            )
        },
    )
    .await;
    approve(
        &server,
        pb::Template {
            buttons: vec![button(pb::template_button::Kind::QuickReply(
                pb::QuickReplyButton {
                    text: "Keep my slot".into(),
                },
            ))],
            ..template(
                "slot_reminder",
                pb::TemplateCategory::Utility,
                "Your slot is tomorrow.",
            )
        },
    )
    .await;
    let mut otp = template_send("+27821234501", "b-1", "login_code", &["482913"]);
    let mut slot = template_send("+27821234502", "b-2", "slot_reminder", &[]);
    if let Some(pb::send_message_request::Content::Template(t)) = &mut otp.content {
        t.button_parameters = vec![pb::ButtonParameter {
            button_index: 0,
            value: "482913".into(),
        }];
    }
    if let Some(pb::send_message_request::Content::Template(t)) = &mut slot.content {
        t.quick_reply_payloads = vec![pb::QuickReplyPayload {
            button_index: 0,
            payload: "keep:slot-17".into(),
        }];
    }
    for request in [otp, slot] {
        let id = send(&server, request).await;
        wait_for(&server, &id, MessageStatus::Submitted).await;
    }
    assert_eq!(
        graph.to("+27821234501")[0].body["template"]["components"],
        json!([
            { "type": "body", "parameters": [{ "type": "text", "text": "482913" }] },
            { "type": "button", "sub_type": "url", "index": "0",
              "parameters": [{ "type": "text", "text": "482913" }] }
        ])
    );
    assert_eq!(
        graph.to("+27821234502")[0].body["template"]["components"],
        json!([
            { "type": "button", "sub_type": "quick_reply", "index": "0",
              "parameters": [{ "type": "payload", "payload": "keep:slot-17" }] }
        ])
    );
}

/// A media link WhatsApp cannot fetch fails the message for good.
#[tokio::test]
async fn a_media_message_the_cloud_api_refuses_fails_with_its_code_and_is_not_retried() {
    let (graph, url) = FakeGraph::start().await;
    graph.then(
        400,
        json!({ "error": {
            "message": "(#131053) Media upload error",
            "type": "OAuthException", "code": 131053,
            "error_data": { "messaging_product": "whatsapp", "details": "Unable to download the media from the link" },
            "fbtrace_id": "AbCdEf"
        }}),
    );
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    let (name, document) = rich_contents().remove(0);
    assert_eq!(name, "document");
    let id = send(&server, send_of(CUSTOMER, "m-1", document)).await;
    let failed = wait_for(&server, &id, MessageStatus::Failed).await;
    assert_eq!(failed.error_code, 131053);
    assert_eq!(failed.attempts, 1);
    // The worker goes on; the refused message was sent once.
    let next = send(&server, text(CUSTOMER, "m-2", "hello")).await;
    wait_for(&server, &next, MessageStatus::Submitted).await;
    assert_eq!(graph.to(CUSTOMER).len(), 2);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_accepted() {
    let (graph, url) = FakeGraph::start().await;
    graph.then(
        429,
        json!({ "error": { "message": "(#130429) Rate limit hit", "code": 130429 } }),
    );
    graph.then(
        500,
        json!({ "error": { "message": "An unknown error occurred", "code": 1 } }),
    );
    graph.then(503, json!({}));
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "r-1", "hello")).await;
    let message = wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(message.attempts, 4);
    let answers: Vec<u16> = graph.to(CUSTOMER).iter().map(|r| r.answered).collect();
    assert_eq!(answers, vec![429, 500, 503, 200]);
    // Each retry waited longer than none at all: the backoff is in force.
    let times: Vec<Instant> = graph.to(CUSTOMER).iter().map(|r| r.at).collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]));
}

#[tokio::test]
async fn permanent_errors_fail_the_message_with_the_code_and_are_not_retried() {
    let (graph, url) = FakeGraph::start().await;
    graph.then(
        400,
        json!({ "error": {
            "message": "(#132001) Template name does not exist in the translation",
            "type": "OAuthException", "code": 132001,
            "error_data": { "messaging_product": "whatsapp", "details": "template name (order_update) does not exist in en_US" },
            "fbtrace_id": "AbCdEf"
        }}),
    );
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "p-1", "hello")).await;
    let failed = wait_for(&server, &id, MessageStatus::Failed).await;
    assert_eq!(failed.error_code, 132001);
    assert_eq!(
        failed.error_title,
        "template name (order_update) does not exist in en_US"
    );
    assert_eq!(failed.attempts, 1);
    // A later message still goes out: one failure does not stop the worker.
    let next = send(&server, text(CUSTOMER, "p-2", "hello again")).await;
    wait_for(&server, &next, MessageStatus::Submitted).await;
    assert_eq!(
        graph.to(CUSTOMER).len(),
        2,
        "the refused message was sent once"
    );
}

#[tokio::test]
async fn a_restart_resumes_pending_deliveries_and_sends_each_once() {
    let (graph, url) = FakeGraph::start().await;
    *graph.down.lock().unwrap() = true;
    // A claim the crash cuts short is due again when its lease (the call's
    // timeout and a margin) lapses: keep that well inside the wait below.
    let mut server = start(&url, &["--delivery-timeout", "2s"]);
    let customers: Vec<String> = (0..5).map(|n| format!("+2782555000{n}")).collect();
    let mut ids = Vec::new();
    for (n, customer) in customers.iter().enumerate() {
        open_window(&server, customer).await;
        ids.push(send(&server, text(customer, &format!("k-{n}"), "hello")).await);
    }
    // Every message has been tried (and refused with 503) at least once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !customers.iter().all(|c| !graph.to(c).is_empty()) {
        assert!(Instant::now() < deadline, "not every message was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.crash_and_restart();
    *graph.down.lock().unwrap() = false;
    for id in &ids {
        wait_for(&server, id, MessageStatus::Submitted).await;
    }
    for customer in &customers {
        let accepted = graph
            .to(customer)
            .iter()
            .filter(|r| r.answered == 200)
            .count();
        assert_eq!(accepted, 1, "{customer} got {accepted} accepted sends");
    }
}

#[tokio::test]
async fn sends_per_business_number_stay_under_the_rate() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &["--delivery-rate", "5"]);
    // The first Cloud API call sets up the HTTP client's connection, and
    // calls that take their slots meanwhile reach the server together with
    // it: the limit holds when slots are taken, the server sees them late.
    // One delivery first, then a rest that refills the burst, keeps that
    // out of what is measured.
    open_window(&server, CUSTOMER).await;
    let warm_up = send(&server, text(CUSTOMER, "rate-warm-up", "hello")).await;
    wait_for(&server, &warm_up, MessageStatus::Submitted).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut ids = Vec::new();
    for n in 0..15 {
        let customer = format!("+2782666{n:04}");
        open_window(&server, &customer).await;
        ids.push(send(&server, text(&customer, &format!("rate-{n}"), "hello")).await);
    }
    for id in &ids {
        wait_for(&server, id, MessageStatus::Submitted).await;
    }
    let times: Vec<Instant> = graph
        .received()
        .iter()
        .filter(|r| r.body["to"] != CUSTOMER.trim_start_matches('+'))
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 15, "each message sent once");
    // A rate of 5/s with a burst of 5 lets at most 9 start within one
    // second (5 at once, then one every 200 ms); 11 leaves room for arrival
    // jitter at the fake server, while no limit sends all 15 at once.
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 11, "{busiest} sends within one second");
}

#[tokio::test]
async fn record_only_by_default() {
    let server = Server::start();
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "ro-1", "hello")).await;
    let message = get_message(&server, &id).await;
    assert_eq!(message.status(), MessageStatus::Accepted);
    assert_eq!((message.attempts, message.wamid.as_str()), (0, ""));
    assert!(
        server.logs().contains("delivery is off"),
        "{}",
        server.logs()
    );
    assert!(!server.logs().contains("receiving webhooks"));
}

#[tokio::test]
async fn get_message_refuses_unknown_and_malformed_ids() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let missing = refusal(
        gateway
            .get_message(pb::GetMessageRequest {
                message_id: uuid::Uuid::now_v7().to_string(),
            })
            .await,
    );
    assert_eq!(
        (missing.code, missing.reason.as_str()),
        (Code::NotFound, "MESSAGE_NOT_FOUND")
    );
    let malformed = refusal(
        gateway
            .get_message(pb::GetMessageRequest {
                message_id: "wamid.123".into(),
            })
            .await,
    );
    assert_eq!(
        (malformed.code, malformed.reason.as_str(), malformed.fields),
        (
            Code::InvalidArgument,
            "INVALID_MESSAGE_ID",
            vec!["message_id".to_owned()]
        )
    );
}

#[tokio::test]
async fn the_webhook_handshake_echoes_the_challenge_for_the_right_token() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    let http = reqwest::Client::new();
    let verify = |token: &str| {
        http.get(webhook_url(&server))
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let ok = verify(VERIFY_TOKEN).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(verify("wrong-token").await.unwrap().status(), 403);
}

#[tokio::test]
async fn unsigned_or_badly_signed_notifications_are_refused() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    let body = statuses(json!([])).to_string();
    let post = |signature: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(webhook_url(&server))
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(signature(&body, "not-the-secret")))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(post(Some("sha256=zz".into())).await.unwrap().status(), 403);
    assert_eq!(
        post(Some(signature(&body, APP_SECRET)))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn inbound_webhooks_open_windows_and_ad_referrals_start_the_free_period() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    let at = Utc::now().timestamp() - 60;
    let messages = change(
        "messages",
        json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID },
            "contacts": [{ "profile": { "name": "Ann" }, "wa_id": "27821234567" }],
            "messages": [
                { "from": "27821234567", "id": "wamid.in.organic", "timestamp": at.to_string(),
                  "type": "text", "text": { "body": "hi" } },
                { "from": "27821234568", "id": "wamid.in.ad", "timestamp": at.to_string(),
                  "type": "text", "text": { "body": "I saw your ad" },
                  "referral": { "source_url": "https://fb.me/ad", "source_id": "120", "source_type": "ad",
                                "headline": "Sale", "ctwa_clid": "ARAkLkA8" } }
            ]
        }),
    );
    assert_eq!(notify(&server, &messages).await, 200);
    // Meta delivers at least once: the same notification again changes nothing.
    assert_eq!(notify(&server, &messages).await, 200);

    let organic = window(&server, CUSTOMER).await;
    assert_eq!(organic.state(), WindowState::Open);
    assert_eq!(organic.last_inbound_at.unwrap().seconds, at);
    let free = server
        .gateway()
        .await
        .send_message(text("+27821234568", "ad-1", "Thanks for writing!"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        free.pricing_category(),
        pb::PricingCategory::ReferralConversion
    );
    assert!(free.free_until.is_some());
    assert!(!free.billable);

    // The replay is counted as a duplicate, not handled twice, and webhook
    // inbounds count with every other inbound.
    let metrics = http_get_text(&metrics_url(&server)).await;
    for line in [
        r#"wagate_webhook_events_total{event="message",handled="true"} 2"#,
        r#"wagate_webhook_events_total{event="message",handled="duplicate"} 2"#,
        r#"wagate_inbound_outcomes_total{outcome="OPENED",source="webhook"} 2"#,
        r#"wagate_inbound_outcomes_total{outcome="DUPLICATE",source="webhook"} 2"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn status_webhooks_move_messages_forward_and_watchers_see_each_change() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "s-1", "hello")).await;
    let submitted = wait_for(&server, &id, MessageStatus::Submitted).await;
    let wamid = submitted.wamid.clone();

    let mut watch = watch_one(&server, &id).await;
    let first = watch.message().await.unwrap().unwrap().message.unwrap();
    assert_eq!(first.status(), MessageStatus::Submitted);

    let report = |status: &str| {
        json!({ "id": wamid, "status": status, "timestamp": Utc::now().timestamp().to_string(),
                "recipient_id": "27821234567" })
    };
    // Out of order and duplicated, as webhooks may come.
    assert_eq!(
        notify(&server, &statuses(json!([report("delivered")]))).await,
        200
    );
    assert_eq!(
        notify(&server, &statuses(json!([report("sent")]))).await,
        200
    );
    assert_eq!(
        notify(&server, &statuses(json!([report("read"), report("read")]))).await,
        200
    );
    assert_eq!(
        notify(&server, &statuses(json!([report("delivered")]))).await,
        200
    );

    let seen = statuses_until_read(&mut watch).await;
    assert_eq!(seen, vec![MessageStatus::Delivered, MessageStatus::Read]);
    assert_eq!(
        get_message(&server, &id).await.status(),
        MessageStatus::Read
    );

    // A failure report carries WhatsApp's code.
    let other = send(&server, text(CUSTOMER, "s-2", "again")).await;
    let other_wamid = wait_for(&server, &other, MessageStatus::Submitted)
        .await
        .wamid;
    let failed = json!([{ "id": other_wamid, "status": "failed", "timestamp": Utc::now().timestamp().to_string(),
                          "recipient_id": "27821234567",
                          "errors": [{ "code": 131026, "title": "Message undeliverable" }] }]);
    assert_eq!(notify(&server, &statuses(failed)).await, 200);
    let failed = wait_for(&server, &other, MessageStatus::Failed).await;
    assert_eq!(
        (failed.error_code, failed.error_title.as_str()),
        (131026, "Message undeliverable")
    );
}

#[tokio::test]
async fn template_review_webhooks_update_the_registry_and_unknown_events_are_counted() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    approved_template(
        &server,
        "order_update",
        pb::TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    )
    .await;
    let paused = change(
        "message_template_status_update",
        json!({ "event": "PAUSED", "message_template_id": 594425479261596_i64,
                "message_template_name": "order_update", "message_template_language": "en_US",
                "reason": "Low quality rating" }),
    );
    assert_eq!(notify(&server, &paused).await, 200);
    let template = get_template(&server, "order_update").await;
    assert_eq!(template.status(), pb::TemplateStatus::Paused);
    assert_eq!(template.status_reason, "Low quality rating");
    let refused = refusal(
        server
            .gateway()
            .await
            .send_message(template_send(CUSTOMER, "tp-1", "order_update", &["Ann"]))
            .await,
    );
    assert_eq!(refused.reason, "TEMPLATE_NOT_APPROVED");
    assert_eq!(refused.metadata["whatsapp_code"], "132015");

    let unknown = change("account_update", json!({ "event": "VERIFIED_ACCOUNT" }));
    assert_eq!(notify(&server, &unknown).await, 200);
    // A field nobody documents does not mint a new series.
    let made_up = change("x-made-up-field-8271", json!({}));
    assert_eq!(notify(&server, &made_up).await, 200);
    let metrics = http_get_text(&metrics_url(&server)).await;
    assert!(
        metrics.contains(
            r#"wagate_webhook_events_total{event="field:account_update",handled="false"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wagate_webhook_events_total{event="field:unknown",handled="false"} 1"#)
            && !metrics.contains("made-up"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"wagate_webhook_events_total{event="template_status",handled="true"} 1"#),
        "{metrics}"
    );
}

async fn http_get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_call_that_times_out_is_retried() {
    let (graph, url) = FakeGraph::start().await;
    *graph.hang.lock().unwrap() = 1;
    let server = start(&url, &["--delivery-timeout", "300ms"]);
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "to-1", "hello")).await;
    let message = wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(message.attempts, 2, "the hung call counts as one attempt");
    assert!(server.logs().contains("timed out"), "{}", server.logs());
}

#[tokio::test]
async fn a_watcher_that_falls_far_behind_is_told_so() {
    const SENT: usize = 6000;
    let server = Server::start();
    open_window(&server, CUSTOMER).await;
    // A tiny flow-control window makes the server's sends block almost at
    // once, so the watcher's place in the update buffer stops moving.
    let slow_reader = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut watch = pb::gateway_client::GatewayClient::new(slow_reader)
        .watch_messages(pb::WatchMessagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let gateway = server.gateway().await;
    let senders: Vec<_> = (0..32)
        .map(|worker| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                for n in (worker..SENT).step_by(32) {
                    gateway
                        .send_message(text(CUSTOMER, &format!("lag-{n}"), "hello"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let mut seen = 0;
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => seen += 1,
                Ok(None) => panic!("the stream ended without saying why after {seen}"),
                Err(status) => break status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream kept going after {seen} without a lag error"));
    let refused = refusal::<()>(Err(ended));
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (Code::Aborted, "WATCH_LAGGED")
    );
    assert!(seen < SENT, "it fell behind, so it cannot have seen all");
}

#[tokio::test]
async fn secrets_from_files_and_the_environment_are_used_and_never_logged() {
    let (graph, url) = FakeGraph::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("access-token");
    let verify_file = secrets.path().join("verify-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&verify_file, VERIFY_TOKEN).unwrap();
    let phone_number_ids = format!("{BUSINESS}={PHONE_NUMBER_ID}");
    let server = Server::start_with_env(&[
        ("WAGATE_LOG_LEVEL", "debug"),
        ("WAGATE_LOG_FORMAT", "text"),
        ("WAGATE_DELIVERY", "true"),
        ("WAGATE_GRAPH_BASE_URL", &url),
        ("WAGATE_PHONE_NUMBER_IDS", &phone_number_ids),
        ("WAGATE_ACCESS_TOKEN_FILE", token_file.to_str().unwrap()),
        ("WAGATE_APP_SECRET", APP_SECRET),
        (
            "WAGATE_WEBHOOK_VERIFY_TOKEN_FILE",
            verify_file.to_str().unwrap(),
        ),
        ("WAGATE_WEBHOOK_LISTEN", "127.0.0.1:0"),
    ]);
    open_window(&server, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "secret-1", "hello")).await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(graph.received()[0].authorization, format!("Bearer {TOKEN}"));

    let handshake = reqwest::Client::new()
        .get(webhook_url(&server))
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "42"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    assert_eq!(notify(&server, &statuses(json!([]))).await, 200);

    let logs = server.logs();
    assert!(logs.contains("DEBUG"), "debug logging was on: {logs}");
    for secret in [TOKEN, APP_SECRET, VERIFY_TOKEN] {
        assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_on_a_killed_replica_are_finished_once_by_the_others() {
    let (graph, url) = FakeGraph::start().await;
    let postgres = pg::shared();
    let database = postgres.url(&postgres.create_database());
    // The lease is the call's timeout plus a margin: 2 s + 5 s.
    let replica = || {
        start(
            &url,
            &["--database-url", &database, "--delivery-timeout", "2s"],
        )
    };
    let customers: Vec<String> = (0..3).map(|n| format!("+2782777000{n}")).collect();
    *graph.hang.lock().unwrap() = customers.len() as u32;
    let mut first = replica();
    let mut ids = Vec::new();
    for (n, customer) in customers.iter().enumerate() {
        open_window(&first, customer).await;
        ids.push(send(&first, text(customer, &format!("inflight-{n}"), "hello")).await);
    }
    // Every message is in a call that will not be answered before the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while *graph.arrived.lock().unwrap() < customers.len() {
        assert!(Instant::now() < deadline, "the first replica did not call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();

    let (second, third) = (replica(), replica());
    for id in &ids {
        let message = wait_for(&second, id, MessageStatus::Submitted).await;
        assert_eq!(get_message(&third, id).await.wamid, message.wamid);
    }
    for customer in &customers {
        let answered: Vec<_> = graph
            .to(customer)
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect();
        assert_eq!(
            answered.len(),
            1,
            "{customer} was sent {} times",
            answered.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_what_another_replica_stores_in_order() {
    let (_graph, url) = FakeGraph::start().await;
    let postgres = pg::shared();
    let database = postgres.url(&postgres.create_database());
    let watched = start(&url, &["--database-url", &database]);
    let writer = start(&url, &["--database-url", &database]);
    open_window(&writer, CUSTOMER).await;
    let id = send(&writer, text(CUSTOMER, "cross-watch-1", "hello")).await;
    let mut watch = watch_one(&watched, &id).await;
    let submitted = wait_for(&writer, &id, MessageStatus::Submitted).await;
    let report = |status: &str| {
        json!({ "id": submitted.wamid, "status": status,
                "timestamp": Utc::now().timestamp().to_string(), "recipient_id": "27821234567" })
    };
    for status in ["sent", "delivered", "read"] {
        assert_eq!(
            notify(&writer, &statuses(json!([report(status)]))).await,
            200
        );
    }
    let mut seen = statuses_until_read(&mut watch).await;
    seen.dedup();
    // The current state first (whatever it was when the watch began), then
    // every later change in order.
    let from = seen
        .iter()
        .position(|s| *s == MessageStatus::Sent)
        .expect("SENT was seen");
    assert_eq!(
        seen[from..],
        [
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read
        ],
        "{seen:?}"
    );
    assert!(
        seen[..from]
            .iter()
            .all(|s| matches!(s, MessageStatus::Accepted | MessageStatus::Submitted)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_account_registered_through_the_api_delivers_with_its_own_token() {
    let (graph, url) = FakeGraph::start().await;
    // No --phone-number-ids and no process-wide token: the route and the
    // token come from the account registry alone.
    let server = Server::start_with(&[
        "--delivery",
        "--graph-base-url",
        &url,
        "--graph-api-version",
        "v23.0",
        "--delivery-backoff",
        "20ms",
        "--delivery-backoff-max",
        "100ms",
    ]);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("brand-b-token");
    std::fs::write(&token_file, "EAAG-brand-b-token\n").unwrap();
    let mut accounts = server.accounts().await;
    let brand_b = pb::Account {
        waba_id: "203301230451409".into(),
        display_name: "Brand B".into(),
        delivery: true,
        credentials: Some(pb::account::Credentials::TokenFile(
            token_file.display().to_string(),
        )),
        ..Default::default()
    };
    accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(brand_b.clone()),
        })
        .await
        .unwrap();
    accounts
        .register_number(pb::RegisterNumberRequest {
            number: BUSINESS.into(),
            phone_number_id: "777000111".into(),
            waba_id: "203301230451409".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    open_window(&server, CUSTOMER).await;

    let id = send(&server, text(CUSTOMER, "acct-1", "Hello from brand B")).await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    let calls = graph.to(CUSTOMER);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/v23.0/777000111/messages");
    assert_eq!(calls[0].authorization, "Bearer EAAG-brand-b-token");
    assert!(
        !server.logs().contains("EAAG-brand-b-token"),
        "the token is never logged"
    );

    // With the account's delivery off, a message has no way out: it fails
    // with the reason instead of going out with another account's token.
    accounts
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                delivery: false,
                ..brand_b
            }),
        })
        .await
        .unwrap();
    let refused = send(&server, text(CUSTOMER, "acct-2", "Hello again")).await;
    let failed = wait_for(&server, &refused, MessageStatus::Failed).await;
    assert!(
        failed
            .error_title
            .contains("delivery is off for account 203301230451409"),
        "{failed:?}"
    );
    assert_eq!(
        graph.to(CUSTOMER).len(),
        1,
        "nothing more reached the Cloud API"
    );
}

#[tokio::test]
async fn a_template_review_applies_to_the_template_of_the_account_it_came_from() {
    let (_graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    // The default account's order_update, and the WABA's own one.
    approved_template(
        &server,
        "order_update",
        pb::TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    )
    .await;
    server
        .accounts()
        .await
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                waba_id: "102290129340398".into(),
                display_name: "Brand".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut templates = server.templates().await;
    templates
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(pb::Template {
                waba_id: "102290129340398".into(),
                ..template(
                    "order_update",
                    pb::TemplateCategory::Utility,
                    "Brand news: order {{1}} is ready.",
                )
            }),
        })
        .await
        .unwrap();

    // `change` sends as WABA 102290129340398.
    let approved = change(
        "message_template_status_update",
        json!({ "event": "APPROVED", "message_template_name": "order_update",
                "message_template_language": "en_US", "reason": "NONE" }),
    );
    assert_eq!(notify(&server, &approved).await, 200);
    let brand = get_template_in(&server, "102290129340398", "order_update").await;
    assert_eq!(brand.status(), pb::TemplateStatus::Approved);
    let paused = change(
        "message_template_status_update",
        json!({ "event": "PAUSED", "message_template_name": "order_update",
                "message_template_language": "en_US", "reason": "Low quality rating" }),
    );
    assert_eq!(notify(&server, &paused).await, 200);
    let brand = get_template_in(&server, "102290129340398", "order_update").await;
    assert_eq!(brand.status(), pb::TemplateStatus::Paused);
    assert_eq!(brand.status_reason, "Low quality rating");
    let default = get_template(&server, "order_update").await;
    assert_eq!(
        default.status(),
        pb::TemplateStatus::Approved,
        "another account's review leaves the default account's template alone"
    );
}

#[tokio::test]
async fn whatsapps_131049_and_131050_and_a_stop_keyword_refuse_later_templates_up_front() {
    use tonic_types::StatusExt;
    let (_graph, url) = FakeGraph::start().await;
    let mut server = start(&url, &[]);
    let mut gateway = server.gateway().await;
    approve(
        &server,
        template(
            "spring_sale",
            pb::TemplateCategory::Marketing,
            "Hello {{1}}, our spring sale starts this week.",
        ),
    )
    .await;
    approve(
        &server,
        template(
            "order_shipped",
            pb::TemplateCategory::Utility,
            "Hello {{1}}, your order has shipped today.",
        ),
    )
    .await;
    let failed = |wamid: &str, code: i64| {
        statuses(json!([{ "id": wamid, "status": "failed",
            "timestamp": Utc::now().timestamp().to_string(), "recipient_id": "27821234567",
            "errors": [{ "code": code, "title": "Message not delivered" }] }]))
    };

    // 131049 on a marketing template: the next one waits, with RetryInfo.
    let id = send(
        &server,
        template_send(CUSTOMER, "m-1", "spring_sale", &["Ann"]),
    )
    .await;
    let wamid = wait_for(&server, &id, MessageStatus::Submitted).await.wamid;
    assert_eq!(notify(&server, &failed(&wamid, 131049)).await, 200);
    let status = gateway
        .send_message(template_send(CUSTOMER, "m-2", "spring_sale", &["Ann"]))
        .await
        .unwrap_err();
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "MARKETING_LIMITED");
    let wait = details.retry_info().unwrap().retry_delay.unwrap();
    assert!(
        (23 * 3600..=24 * 3600).contains(&wait.as_secs()),
        "{wait:?}"
    );
    assert!(
        consent_of(&server, CUSTOMER)
            .await
            .marketing_limited_until
            .is_some()
    );
    gateway
        .send_message(template_send(CUSTOMER, "u-1", "order_shipped", &["Ann"]))
        .await
        .expect("utility templates are not limited");

    // 131050: the customer stopped marketing, as WhatsApp says.
    let other = "+27821234568";
    let id = send(&server, template_send(other, "m-3", "spring_sale", &["Bo"])).await;
    let wamid = wait_for(&server, &id, MessageStatus::Submitted).await.wamid;
    assert_eq!(notify(&server, &failed(&wamid, 131050)).await, 200);
    let consent = consent_of(&server, other).await;
    assert_eq!(
        (consent.opted_out(), consent.opt_out_source()),
        (pb::ConsentScope::Marketing, pb::ConsentSource::Whatsapp)
    );
    let refused = refusal(
        gateway
            .send_message(template_send(other, "m-4", "spring_sale", &["Bo"]))
            .await,
    );
    assert_eq!(refused.reason, "CUSTOMER_OPTED_OUT");

    // "STOP" as a customer's whole message opts them out; RecordOptIn
    // brings them back.
    let third = "+27821234569";
    let stop = change(
        "messages",
        json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID },
            "messages": [{ "from": "27821234569", "id": "wamid.in.stop",
                "timestamp": Utc::now().timestamp().to_string(),
                "type": "text", "text": { "body": "STOP" } }]
        }),
    );
    assert_eq!(notify(&server, &stop).await, 200);
    assert_eq!(
        consent_of(&server, third).await.opt_out_source(),
        pb::ConsentSource::Keyword
    );
    let refused = refusal(
        gateway
            .send_message(template_send(third, "m-5", "spring_sale", &["Cy"]))
            .await,
    );
    assert_eq!(refused.reason, "CUSTOMER_OPTED_OUT");
    opt_in(&server, third).await;
    gateway
        .send_message(template_send(third, "m-6", "spring_sale", &["Cy"]))
        .await
        .expect("opted back in");

    // What WhatsApp said is kept: after a restart the same refusals hold.
    drop(gateway);
    server.restart().await;
    let mut gateway = server.gateway().await;
    for (customer, key, reason) in [
        (CUSTOMER, "m-7", "MARKETING_LIMITED"),
        (other, "m-8", "CUSTOMER_OPTED_OUT"),
    ] {
        let refused = refusal(
            gateway
                .send_message(template_send(customer, key, "spring_sale", &["Ann"]))
                .await,
        );
        assert_eq!(refused.reason, reason, "{customer} after a restart");
    }
}

#[tokio::test]
async fn a_burst_to_one_customer_is_paced_to_the_pair_rate_and_others_are_not_slowed() {
    let (graph, url) = FakeGraph::start().await;
    let interval = Duration::from_millis(400);
    let server = start(
        &url,
        &["--pair-rate-interval", "400ms", "--pair-rate-burst", "3"],
    );
    let other = "+27821234568";
    open_window(&server, CUSTOMER).await;
    open_window(&server, other).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(send(&server, text(CUSTOMER, &format!("p-{n}"), "hi")).await);
    }
    for n in 0..3 {
        ids.push(send(&server, text(other, &format!("q-{n}"), "hi")).await);
    }
    for id in &ids {
        wait_for(&server, id, MessageStatus::Submitted).await;
    }
    let mut to_customer: Vec<Instant> = graph.to(CUSTOMER).iter().map(|r| r.at).collect();
    to_customer.sort();
    assert_eq!(to_customer.len(), 6);
    // The burst goes at once; after it, none closer than the pair rate.
    let slack = Duration::from_millis(50);
    for (k, at) in to_customer.iter().enumerate().skip(3) {
        let since_first = *at - to_customer[0];
        assert!(
            since_first + slack >= interval * (k as u32 - 2),
            "send {k} came {since_first:?} after the first"
        );
    }
    let mut to_other: Vec<Instant> = graph.to(other).iter().map(|r| r.at).collect();
    to_other.sort();
    assert_eq!(to_other.len(), 3);
    assert!(
        to_other[2] < to_customer[5],
        "another customer waits for nobody's pair rate"
    );
}

#[tokio::test]
async fn the_pair_rate_is_kept_across_a_restart() {
    let (graph, url) = FakeGraph::start().await;
    let interval = Duration::from_secs(4);
    let mut server = start(
        &url,
        &["--pair-rate-interval", "4s", "--pair-rate-burst", "2"],
    );
    open_window(&server, CUSTOMER).await;
    for n in 0..2 {
        let id = send(&server, text(CUSTOMER, &format!("r-{n}"), "hi")).await;
        wait_for(&server, &id, MessageStatus::Submitted).await;
    }
    // A rolling deploy: the burst was used before it, so the next message
    // still waits its turn after it.
    server.restart().await;
    let id = send(&server, text(CUSTOMER, "r-2", "hi")).await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    let mut sent: Vec<Instant> = graph.to(CUSTOMER).iter().map(|r| r.at).collect();
    sent.sort();
    assert_eq!(sent.len(), 3);
    let slack = Duration::from_millis(50);
    assert!(
        sent[2] - sent[0] + slack >= interval,
        "the third came {:?} after the first",
        sent[2] - sent[0]
    );
}

#[tokio::test]
async fn a_pair_rate_error_makes_the_message_wait_not_fail() {
    let (graph, url) = FakeGraph::start().await;
    let server = start(&url, &[]);
    open_window(&server, CUSTOMER).await;
    graph.then(
        400,
        json!({ "error": { "message": "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                           "code": 131056 } }),
    );
    let id = send(&server, text(CUSTOMER, "pr-1", "hello")).await;
    // Waiting 4^1 seconds, not the general backoff of milliseconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = get_message(&server, &id).await;
    assert_eq!(waiting.status(), MessageStatus::Accepted, "{waiting:?}");
    assert_eq!(waiting.attempts, 1);
    assert_eq!(graph.to(CUSTOMER).len(), 1);
    let sent = wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(sent.attempts, 2);
    let calls = graph.to(CUSTOMER);
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(3900));
}
