//! Clickatell's One API as a second provider, against the real binary and
//! local HTTP servers that speak the One API's and the Cloud API's formats:
//! sending (text, templates, what cannot be carried), classifying answers,
//! callbacks in (statuses, customer messages, authentication), a send that
//! timed out after Clickatell took it, and a restart during retries.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use pb::MessageStatus;
use serde_json::{Value, json};
use tonic::Code;

/// Sent for by Clickatell (the common helpers' business number).
const CLICKATELL_NUMBER: &str = BUSINESS;
/// Sent for by the Cloud API.
const META_NUMBER: &str = "+15550002222";
const PHONE_NUMBER_ID: &str = "106540352242922";
const META_TOKEN: &str = "EAAG-meta-token-for-tests";
const CUSTOMER: &str = "+27821234567";
const WABA: &str = "302211009988776";
const INTEGRATION: &str = "3f1a9c5e7b2d4f6081a2";
const API_KEY: &str = "ct-key-7Qm2xVb9Lp4Rz8Ty";
const CALLBACK_TOKEN: &str = "cb-5d1e8f3a9b7c2e4f6a8b0c1d3e5f7a9b";

/// One request a fake provider received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: String,
    body: Value,
    /// The status it answered.
    answered: u16,
}

/// A local stand-in for a provider: Clickatell's `POST /v1/message` and the
/// Cloud API's `POST /{version}/{id}/messages`. It checks what Clickatell
/// checks, records every call and answers from a script, then with success.
#[derive(Clone, Default)]
struct FakeProvider {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    /// This many next calls hang (and are recorded as they arrive).
    hang: Arc<Mutex<u32>>,
}

impl FakeProvider {
    async fn start() -> (FakeProvider, String) {
        let fake = FakeProvider::default();
        let app = Router::new()
            .route("/v1/message", post(answer))
            .route("/{version}/{phone_number_id}/messages", post(answer))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn then(&self, status: u16, body: Value) {
        self.script.lock().unwrap().push_back((status, body));
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Clickatell's answer to an accepted message.
fn accepted(api_message_id: &str, to: &Value) -> Value {
    json!({
        "messages": [{ "apiMessageId": api_message_id, "accepted": true, "to": to, "error": null }],
        "error": null,
    })
}

/// What a One API request breaks of Clickatell's rules, if anything.
fn one_api_problem(headers: &HeaderMap, body: &Value) -> Option<(u16, Value)> {
    let key = headers.get("authorization").and_then(|v| v.to_str().ok());
    if key != Some(API_KEY) {
        return Some((
            401,
            json!({ "error": { "code": 1, "description": "Invalid or missing integration API Key" } }),
        ));
    }
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let one = messages.first().unwrap_or(&Value::Null);
    let to_is_digits = one["to"]
        .as_str()
        .is_some_and(|to| !to.is_empty() && to.bytes().all(|b| b.is_ascii_digit()));
    if messages.len() != 1 || one["channel"] != "whatsapp" || !to_is_digits {
        return Some((
            400,
            json!({ "error": { "code": 101, "description": "fake: one WhatsApp message to digits expected" } }),
        ));
    }
    None
}

async fn answer(
    State(fake): State<FakeProvider>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let body: Value = serde_json::from_str(&body).expect("providers get JSON");
    let path = uri.path().to_owned();
    let clickatell = path == "/v1/message";
    let record = |answered: u16| Received {
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: body.clone(),
        answered,
    };
    let hang = {
        let mut hang = fake.hang.lock().unwrap();
        let now = *hang > 0;
        *hang = hang.saturating_sub(1);
        now
    };
    if hang {
        fake.received.lock().unwrap().push(record(0));
        tokio::time::sleep(Duration::from_secs(30)).await;
        return (StatusCode::GATEWAY_TIMEOUT, String::new());
    }
    let n = fake.received.lock().unwrap().len();
    let (status, reply) = match clickatell
        .then(|| one_api_problem(&headers, &body))
        .flatten()
    {
        Some(problem) => problem,
        None => fake.script.lock().unwrap().pop_front().unwrap_or_else(|| {
            if clickatell {
                (
                    202,
                    accepted(&format!("api-{n}"), &body["messages"][0]["to"]),
                )
            } else {
                (
                    200,
                    json!({ "messages": [{ "id": format!("wamid.fake{n}") }] }),
                )
            }
        }),
    };
    fake.received.lock().unwrap().push(record(status));
    (StatusCode::from_u16(status).unwrap(), reply.to_string())
}

/// wagate with delivery on, a Cloud API number from the flags, and a
/// Clickatell number registered in an account of its own (no Meta token).
struct Setup {
    server: Server,
    clickatell: FakeProvider,
    graph: FakeProvider,
}

async fn setup() -> Setup {
    let (clickatell, clickatell_url) = FakeProvider::start().await;
    let (graph, graph_url) = FakeProvider::start().await;
    let server = Server::start_with(&[
        "--delivery",
        "--clickatell-base-url",
        &clickatell_url,
        "--clickatell-callbacks",
        "--webhook-listen",
        "127.0.0.1:0",
        "--graph-base-url",
        &graph_url,
        "--phone-number-ids",
        &format!("{META_NUMBER}={PHONE_NUMBER_ID}"),
        "--access-token",
        META_TOKEN,
        "--delivery-timeout",
        "2s",
        "--delivery-backoff",
        "20ms",
        "--delivery-backoff-max",
        "100ms",
    ]);
    // Beside the data directory: removed with the server.
    let secrets = server.data_dir().parent().unwrap().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key_file = secrets.join("clickatell-key");
    let token_file = secrets.join("clickatell-callback-token");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    std::fs::write(&token_file, CALLBACK_TOKEN).unwrap();
    let mut accounts = server.accounts().await;
    accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                waba_id: WABA.into(),
                display_name: "Sent through Clickatell".into(),
                delivery: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let registered = accounts
        .register_number(pb::RegisterNumberRequest {
            number: CLICKATELL_NUMBER.into(),
            waba_id: WABA.into(),
            clickatell: Some(pb::ClickatellIntegration {
                integration_id: INTEGRATION.into(),
                api_key: Some(pb::clickatell_integration::ApiKey::ApiKeyFile(
                    key_file.display().to_string(),
                )),
                callback_token: Some(
                    pb::clickatell_integration::CallbackToken::CallbackTokenFile(
                        token_file.display().to_string(),
                    ),
                ),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let number = registered.number.unwrap();
    assert_eq!(number.phone_number_id, "");
    assert_eq!(number.clickatell.unwrap().integration_id, INTEGRATION);
    Setup {
        server,
        clickatell,
        graph,
    }
}

async fn open_window(server: &Server, business: &str, customer: &str) {
    server
        .gateway()
        .await
        .record_inbound(pb::RecordInboundRequest {
            business_number: business.into(),
            ..inbound(customer, &format!("in.{business}.{customer}"))
        })
        .await
        .unwrap();
}

fn from(business: &str, request: pb::SendMessageRequest) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_number: business.into(),
        ..request
    }
}

fn template_in_account(name: &str) -> pb::Template {
    pb::Template {
        waba_id: WABA.into(),
        ..template(
            name,
            pb::TemplateCategory::Utility,
            "Hi {{1}}, your order {{2}} has shipped.",
        )
    }
}

/// The base of the number's callback URLs, from wagate's start log.
fn callbacks_url(server: &Server) -> String {
    logged_after(server, "receiving Clickatell callbacks on ")
}

async fn callback(server: &Server, kind: &str, token: &str, body: &Value) -> u16 {
    let digits = CLICKATELL_NUMBER.trim_start_matches('+');
    reqwest::Client::new()
        .post(format!("{}/{digits}/{kind}/{token}", callbacks_url(server)))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn status_update(api_message_id: &str, client_message_id: &str, code: i64, status: &str) -> Value {
    json!({
        "integrationId": INTEGRATION,
        "integrationName": "Shop",
        "event": { "messageStatusUpdate": [{
            "channel": "whatsapp",
            "messageId": api_message_id,
            "clientMessageId": client_message_id,
            "statusCode": code,
            "status": status,
            "timestamp": chrono::Utc::now().timestamp_millis(),
        }]},
    })
}

#[tokio::test]
async fn each_number_reaches_its_own_provider_in_its_format() {
    let Setup {
        server,
        clickatell,
        graph,
        ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    open_window(&server, META_NUMBER, CUSTOMER).await;

    let by_clickatell = send(&server, text(CUSTOMER, "t-1", "Your order shipped")).await;
    let by_meta = send(
        &server,
        from(META_NUMBER, text(CUSTOMER, "t-2", "Your order shipped")),
    )
    .await;
    let submitted = wait_for(&server, &by_clickatell, MessageStatus::Submitted).await;
    wait_for(&server, &by_meta, MessageStatus::Submitted).await;

    let calls = clickatell.received();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].answered, 202);
    assert_eq!(calls[0].authorization, API_KEY, "the raw key, no Bearer");
    assert_eq!(
        calls[0].body,
        json!({ "messages": [{
            "channel": "whatsapp",
            "to": "27821234567",
            "clientMessageId": by_clickatell,
            "content": "Your order shipped",
        }]})
    );
    assert_eq!(submitted.wamid, "api-0", "Clickatell's id is kept");
    let meta_calls = graph.received();
    assert_eq!(meta_calls.len(), 1);
    assert_eq!(
        meta_calls[0].path,
        format!("/v23.0/{PHONE_NUMBER_ID}/messages")
    );
    assert_eq!(meta_calls[0].authorization, format!("Bearer {META_TOKEN}"));
    assert_eq!(meta_calls[0].body["text"]["body"], "Your order shipped");

    // A template, kept by hand for a Clickatell account, goes as `hsm`, to
    // a customer who never wrote in.
    approve(&server, template_in_account("order_shipped")).await;
    let id = send(
        &server,
        template_send("+27829876543", "t-3", "order_shipped", &["Ann", "A-17"]),
    )
    .await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    let call = clickatell.received().pop().unwrap();
    assert_eq!(
        call.body["messages"][0]["hsm"],
        json!({ "template": "order_shipped", "parameters": { "1": "Ann", "2": "A-17" } })
    );
    assert_eq!(call.body["messages"][0]["to"], "27829876543");

    let logs = server.logs();
    assert!(!logs.contains(API_KEY), "the key is never logged");
    assert!(
        !logs.contains(CALLBACK_TOKEN),
        "the callback token is never logged"
    );
}

#[tokio::test]
async fn what_clickatell_cannot_carry_is_refused_before_anything_is_stored() {
    let Setup {
        server, clickatell, ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    let named = pb::Template {
        waba_id: WABA.into(),
        ..template(
            "named_hello",
            pb::TemplateCategory::Utility,
            "Hi {{name}}, your order is ready.",
        )
    };
    approve(&server, named).await;
    let mut named_send = template_send(CUSTOMER, "r-1", "named_hello", &[]);
    if let Some(pb::send_message_request::Content::Template(t)) = &mut named_send.content {
        t.body_parameters = Some(pb::TemplateParameters {
            named: [("name".to_owned(), "Ann".to_owned())].into(),
            ..Default::default()
        });
    }
    let mut refused = vec![("named parameters", named_send)];
    for (name, content) in rich_contents() {
        refused.push((name, send_of(CUSTOMER, &format!("r-{name}"), content)));
    }
    let mut gateway = server.gateway().await;
    for (what, request) in refused.clone() {
        let refusal = refusal(gateway.send_message(request).await);
        assert_eq!(
            (refusal.code, refusal.reason.as_str()),
            (Code::FailedPrecondition, "NOT_SUPPORTED_BY_PROVIDER"),
            "{what}"
        );
        assert!(
            refusal.message.contains("Clickatell"),
            "{what}: {}",
            refusal.message
        );
    }
    // Nothing was stored: each key is still free for a text.
    for (what, request) in refused {
        let text = from(
            CLICKATELL_NUMBER,
            text(CUSTOMER, &request.idempotency_key, "plain text instead"),
        );
        assert!(gateway.send_message(text).await.is_ok(), "{what}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        clickatell
            .received()
            .iter()
            .all(|call| call.body["messages"][0]["content"] == "plain text instead"),
        "only the texts went out"
    );
}

#[tokio::test]
async fn answers_are_retried_or_fail_with_clickatells_code() {
    let Setup {
        server, clickatell, ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    // Rate limits (400 code 43, 503 code 19), 500 and a timeout are tried
    // again until Clickatell takes the message.
    clickatell.then(
        400,
        json!({ "messages": [], "error": { "code": 43, "description": "Rate limit" } }),
    );
    clickatell.then(
        503,
        json!({ "error": { "code": 19, "description": "Too many requests" } }),
    );
    clickatell.then(500, json!({}));
    *clickatell.hang.lock().unwrap() = 1;
    let id = send(&server, text(CUSTOMER, "c-1", "eventually")).await;
    let message = wait_for(&server, &id, MessageStatus::Submitted).await;
    assert_eq!(message.attempts, 5, "{message:?}");
    assert_eq!(
        clickatell
            .received()
            .iter()
            .map(|c| c.answered)
            .collect::<Vec<_>>(),
        [0, 400, 503, 500, 202]
    );

    // A per-message error and a top-level one fail the message with
    // Clickatell's code and text, told apart from WhatsApp's codes.
    let per_message = json!({
        "messages": [{ "apiMessageId": "", "accepted": false, "to": "27821234567",
                       "error": { "code": 20, "description": "Insufficient balance" } }],
        "error": null,
    });
    clickatell.then(202, per_message);
    let id = send(&server, text(CUSTOMER, "c-2", "no credit")).await;
    let failed = wait_for(&server, &id, MessageStatus::Failed).await;
    assert_eq!(
        (failed.error_code, failed.error_source.as_str()),
        (20, "clickatell")
    );
    assert_eq!(failed.error_title, "Clickatell 20: Insufficient balance");
    assert_eq!(failed.attempts, 1);

    clickatell.then(
        403,
        json!({ "error": { "code": 7, "description": "IP lockdown violation" } }),
    );
    let id = send(&server, text(CUSTOMER, "c-3", "blocked")).await;
    let failed = wait_for(&server, &id, MessageStatus::Failed).await;
    assert_eq!((failed.error_code, failed.attempts), (7, 1));
}

#[tokio::test]
async fn callbacks_move_statuses_forward_and_open_windows() {
    let Setup {
        server, clickatell, ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    let id = send(&server, text(CUSTOMER, "s-1", "hello")).await;
    let api_id = wait_for(&server, &id, MessageStatus::Submitted).await.wamid;

    // READ before DEVICE_ACK, and repeats: statuses only move forward.
    let read = status_update(&api_id, &id, 6, "READ");
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &read).await,
        200
    );
    assert_eq!(
        get_message(&server, &id).await.status(),
        MessageStatus::Read
    );
    for (code, status) in [(5, "DEVICE_ACK"), (4, "SENT_TO_SUPPLIER"), (6, "READ")] {
        let late = status_update(&api_id, &id, code, status);
        assert_eq!(
            callback(&server, "status", CALLBACK_TOKEN, &late).await,
            200
        );
    }
    assert_eq!(
        get_message(&server, &id).await.status(),
        MessageStatus::Read
    );

    // A wrong token, number or kind finds nothing; another integration is
    // refused. Nothing is recorded.
    let second = send(&server, text(CUSTOMER, "s-2", "again")).await;
    let second_api = wait_for(&server, &second, MessageStatus::Submitted)
        .await
        .wamid;
    let delivered = status_update(&second_api, &second, 5, "DEVICE_ACK");
    assert_eq!(
        callback(&server, "status", "wrong-token", &delivered).await,
        404
    );
    assert_eq!(
        callback(&server, "other", CALLBACK_TOKEN, &delivered).await,
        404
    );
    let mut foreign = delivered.clone();
    foreign["integrationId"] = json!("someone-else");
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &foreign).await,
        403
    );
    let unknown_number = reqwest::Client::new()
        .post(format!(
            "{}/15559999999/status/{CALLBACK_TOKEN}",
            callbacks_url(&server)
        ))
        .json(&delivered)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_number.status().as_u16(), 404);
    assert_eq!(
        get_message(&server, &second).await.status(),
        MessageStatus::Submitted
    );

    // The window-closed failure reads as WhatsApp's own code for it.
    let closed = status_update(&second_api, &second, 131, "WHATSAPP_RE_ENGAGEMENT_REQUIRED");
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &closed).await,
        200
    );
    let failed = get_message(&server, &second).await;
    assert_eq!(failed.status(), MessageStatus::Failed);
    assert_eq!(
        (failed.error_code, failed.error_source.as_str()),
        (131047, "whatsapp")
    );

    // Events wagate does not act on are answered 200 and counted.
    let unknown = json!({
        "integrationId": INTEGRATION,
        "event": {
            "messageFallback": [{ "messageId": "x" }],
            "statusIsTyping": [{ "messageId": "y" }],
            "somethingNew": [{ "z": 1 }],
        },
        "newTopLevelField": true,
    });
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &unknown).await,
        200
    );
    let counted = metric_sum(
        &server,
        "wagate_webhook_events_total",
        &["event=\"clickatell_messageFallback\""],
    )
    .await;
    assert_eq!(counted, Some(1.0));

    // A customer's message opens the window; a free-form reply follows.
    let newcomer = "+27825550000";
    let free_form = from(
        CLICKATELL_NUMBER,
        text(newcomer, "s-3", "Thanks for writing"),
    );
    let closed = refusal(server.gateway().await.send_message(free_form.clone()).await);
    assert_eq!(closed.reason, "WINDOW_CLOSED");
    let mo = json!({
        "integrationId": INTEGRATION,
        "event": { "moText": [{
            "channel": "whatsapp", "messageId": "mo-1", "from": "27825550000",
            "to": "15550001111", "timestamp": chrono::Utc::now().timestamp_millis(),
            "content": "Hello?",
        }]},
    });
    assert_eq!(callback(&server, "reply", CALLBACK_TOKEN, &mo).await, 200);
    assert_eq!(
        callback(&server, "reply", CALLBACK_TOKEN, &mo).await,
        200,
        "a repeat"
    );
    assert_eq!(
        window(&server, newcomer).await.state(),
        pb::WindowState::Open
    );
    let reply = send(&server, free_form).await;
    wait_for(&server, &reply, MessageStatus::Submitted).await;
    assert_eq!(
        clickatell.received().last().unwrap().body["messages"][0]["to"],
        "27825550000"
    );
}

#[tokio::test]
async fn a_send_that_timed_out_after_clickatell_took_it_is_not_sent_again() {
    let Setup {
        server, clickatell, ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    *clickatell.hang.lock().unwrap() = 1;
    let id = send(&server, text(CUSTOMER, "h-1", "taken, answer lost")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while clickatell.received().is_empty() {
        assert!(Instant::now() < deadline, "the send never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While wagate still waits for the answer, Clickatell reports the
    // message under an id wagate never saw, naming wagate's id.
    let sent = status_update("api-lost-answer", &id, 4, "SENT_TO_SUPPLIER");
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &sent).await,
        200
    );
    let message = wait_for(&server, &id, MessageStatus::Sent).await;
    assert_eq!(message.wamid, "api-lost-answer");
    // The timed-out call is not retried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        clickatell.received().len(),
        1,
        "{:?}",
        clickatell.received()
    );
    let message = get_message(&server, &id).await;
    assert_eq!(message.status(), MessageStatus::Sent);
    assert!(message.next_attempt_at.is_none());
    // Later statuses reach it by the attached id.
    let delivered = status_update("api-lost-answer", &id, 5, "DEVICE_ACK");
    assert_eq!(
        callback(&server, "status", CALLBACK_TOKEN, &delivered).await,
        200
    );
    assert_eq!(
        get_message(&server, &id).await.status(),
        MessageStatus::Delivered
    );
}

#[tokio::test]
async fn a_restart_during_retries_sends_nothing_twice() {
    let Setup {
        mut server,
        clickatell,
        ..
    } = setup().await;
    open_window(&server, CLICKATELL_NUMBER, CUSTOMER).await;
    for _ in 0..3 {
        clickatell.then(
            503,
            json!({ "error": { "code": 19, "description": "Too many requests" } }),
        );
    }
    let id = send(&server, text(CUSTOMER, "x-1", "through a restart")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while clickatell.received().is_empty() {
        assert!(Instant::now() < deadline, "the send never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart().await;
    wait_for(&server, &id, MessageStatus::Submitted).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken: Vec<_> = clickatell
        .received()
        .into_iter()
        .filter(|call| call.answered == 202)
        .collect();
    assert_eq!(taken.len(), 1, "Clickatell took the message once");
    assert_eq!(taken[0].body["messages"][0]["clientMessageId"], id.as_str());
}
