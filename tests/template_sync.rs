//! Template sync against a local stand-in for the Graph API: the real
//! binary pages through `GET /{waba-id}/message_templates`, reconciles the
//! account's registry, and leaves it as it was when the Graph API fails
//! part way (HTTP 500, a timeout, an expired token).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use common::*;
use serde_json::{Value, json};
use tonic::Code;

const WABA: &str = "102290129340398";
const TOKEN: &str = "EAAG-sync-token";

/// How the fake answers the next listing.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    /// Page 1 fine, then HTTP 500.
    FailOnSecondPage,
    /// Never answers within the client's timeout.
    Hang,
    /// Error 190: the token expired.
    ExpiredToken,
}

/// A request seen: (waba, after cursor, authorization).
type Seen = (String, Option<String>, String);

#[derive(Clone)]
struct FakeGraph {
    templates: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const PAGE: usize = 2;

async fn list(
    State(graph): State<FakeGraph>,
    Path((_version, waba)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let after = query.get("after").cloned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    graph
        .seen
        .lock()
        .unwrap()
        .push((waba, after.clone(), authorization));
    let mode = *graph.mode.lock().unwrap();
    let start: usize = after.as_deref().map_or(0, |a| a.parse().unwrap());
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Mode::ExpiredToken => {
            let body = json!({ "error": { "message": "Error validating access token: Session has expired",
                "type": "OAuthException", "code": 190, "fbtrace_id": "A1" } });
            return (StatusCode::UNAUTHORIZED, body.to_string());
        }
        Mode::FailOnSecondPage if start > 0 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "{}".to_owned());
        }
        _ => {}
    }
    let all = graph.templates.lock().unwrap().clone();
    let page: Vec<Value> = all.iter().skip(start).take(PAGE).cloned().collect();
    let next = start + PAGE;
    let mut body = json!({ "data": page, "paging": { "cursors": { "before": start.to_string(), "after": next.to_string() } } });
    if next < all.len() {
        body["paging"]["next"] = json!(format!("https://graph.example/next?after={next}"));
    }
    (StatusCode::OK, body.to_string())
}

impl FakeGraph {
    async fn start(templates: Vec<Value>) -> (FakeGraph, String) {
        let graph = FakeGraph {
            templates: Arc::new(Mutex::new(templates)),
            mode: Arc::new(Mutex::new(Mode::Serve)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/{version}/{waba}/message_templates", get(list))
            .with_state(graph.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (graph, url)
    }
}

fn graph_template(name: &str, status: &str, body: &str) -> Value {
    json!({
        "name": name, "language": "en_US", "status": status, "category": "UTILITY",
        "id": format!("id-{name}"),
        "components": [{ "type": "BODY", "text": body }],
    })
}

fn counts(c: &pb::SyncCounts) -> (u32, u32, u32, u32, u32) {
    (c.created, c.updated, c.deleted, c.unchanged, c.failed)
}

async fn sync(server: &Server) -> Result<pb::SyncTemplatesResponse, tonic::Status> {
    server
        .accounts()
        .await
        .sync_templates(pb::SyncTemplatesRequest {
            waba_id: WABA.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn bodies_and_statuses(server: &Server) -> Vec<(String, String, pb::TemplateStatus)> {
    server
        .templates()
        .await
        .list_templates(pb::ListTemplatesRequest {
            waba_id: WABA.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .templates
        .into_iter()
        .map(|t| {
            let status = t.status();
            (t.name, t.body, status)
        })
        .collect()
}

/// wagate against `graph_url`, with an account that syncs (token in a file).
async fn start_with_account(graph_url: &str, secrets: &tempfile::TempDir) -> Server {
    let server = Server::start_with(&[
        "--graph-base-url",
        graph_url,
        "--graph-api-version",
        "v23.0",
        "--delivery-timeout",
        "1s",
    ]);
    create_synced_account(&server, secrets).await;
    server
}

/// The account WABA, its token in a file under `secrets`.
async fn create_synced_account(server: &Server, secrets: &tempfile::TempDir) {
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    server
        .accounts()
        .await
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                waba_id: WABA.into(),
                display_name: "Brand".into(),
                credentials: Some(pb::account::Credentials::TokenFile(
                    token_file.display().to_string(),
                )),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// The account WABA as GetAccount answers.
async fn get_account(server: &Server) -> pb::Account {
    server
        .accounts()
        .await
        .get_account(pb::GetAccountRequest {
            waba_id: WABA.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

#[tokio::test]
async fn a_sync_pages_through_whatsapps_templates_and_reconciles_the_registry() {
    let (graph, url) = FakeGraph::start(vec![
        graph_template("kept", "APPROVED", "Same {{1}}"),
        graph_template("edited", "APPROVED", "Old text {{1}}"),
        graph_template("removed", "APPROVED", "Going {{1}}"),
        graph_template("reviewed", "PENDING", "Under review {{1}}"),
        graph_template("weird", "APPROVED", "x"),
    ])
    .await;
    // One WhatsApp holds but wagate cannot read (a carousel).
    graph.templates.lock().unwrap()[4] = json!({ "name": "weird", "language": "en_US",
        "status": "APPROVED", "category": "MARKETING",
        "components": [{ "type": "CAROUSEL", "cards": [] }] });
    let secrets = tempfile::tempdir().unwrap();
    let server = start_with_account(&url, &secrets).await;

    let first = sync(&server).await.unwrap();
    assert_eq!(counts(&first.counts.unwrap()), (4, 0, 0, 0, 1));
    let kept = get_template_in(&server, WABA, "kept").await;
    assert_eq!(kept.whatsapp_id, "id-kept", "WhatsApp's id is kept");
    assert!(first.last_good_sync_time.is_some());
    let seen = graph.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "three pages of two: {seen:?}");
    assert_eq!(seen[1].1.as_deref(), Some("2"), "the cursor is followed");
    assert!(
        seen.iter()
            .all(|(waba, _, auth)| waba == WABA && auth == &format!("Bearer {TOKEN}"))
    );

    // Between two syncs: one added, one changed, one removed, one rejected.
    {
        let mut t = graph.templates.lock().unwrap();
        t.retain(|v| v["name"] != "removed");
        t[1] = graph_template("edited", "APPROVED", "New text {{1}}");
        t[2] = json!({ "name": "reviewed", "language": "en_US", "status": "REJECTED",
            "category": "UTILITY", "rejected_reason": "INVALID_FORMAT",
            "components": [{ "type": "BODY", "text": "Under review {{1}}" }] });
        t.push(graph_template("added", "APPROVED", "Welcome {{1}}"));
    }
    let second = sync(&server).await.unwrap();
    assert_eq!(counts(&second.counts.unwrap()), (1, 2, 1, 1, 1));
    assert_eq!(
        bodies_and_statuses(&server).await,
        [
            (
                "added".into(),
                "Welcome {{1}}".into(),
                pb::TemplateStatus::Approved
            ),
            (
                "edited".into(),
                "New text {{1}}".into(),
                pb::TemplateStatus::Approved
            ),
            (
                "kept".into(),
                "Same {{1}}".into(),
                pb::TemplateStatus::Approved
            ),
            (
                "removed".into(),
                "Going {{1}}".into(),
                pb::TemplateStatus::Deleted
            ),
            (
                "reviewed".into(),
                "Under review {{1}}".into(),
                pb::TemplateStatus::Rejected
            ),
        ]
    );

    // A removed template is never sent; hand edits are refused there.
    server
        .accounts()
        .await
        .register_number(pb::RegisterNumberRequest {
            number: BUSINESS.into(),
            phone_number_id: "1065".into(),
            waba_id: WABA.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut gateway = server.gateway().await;
    let removed = refusal(
        gateway
            .send_message(template_send("+27821234567", "s-1", "removed", &["Ann"]))
            .await,
    );
    assert_eq!(removed.reason, "TEMPLATE_NOT_APPROVED");
    assert_eq!(removed.metadata["whatsapp_code"], "132001");
    let sent = gateway
        .send_message(template_send("+27821234567", "s-2", "edited", &["Ann"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.rendered_text, "New text Ann");
    let typed = refusal(
        server
            .templates()
            .await
            .upsert_template(pb::UpsertTemplateRequest {
                template: Some(pb::Template {
                    waba_id: WABA.into(),
                    ..template(
                        "typed_in",
                        pb::TemplateCategory::Utility,
                        "Hi {{1}}, thanks for your order.",
                    )
                }),
            })
            .await,
    );
    assert_eq!(
        (typed.code, typed.reason.as_str()),
        (Code::FailedPrecondition, "TEMPLATES_SYNCED_FROM_WHATSAPP")
    );

    // GetAccount shows the last sync.
    let account = get_account(&server).await;
    let last = account.template_sync.unwrap();
    assert_eq!(last.error, "");
    assert_eq!(counts(&last.counts.unwrap()), (1, 2, 1, 1, 1));
}

#[tokio::test]
async fn a_failed_sync_leaves_the_registry_as_it_was_and_says_why() {
    let (graph, url) = FakeGraph::start(vec![
        graph_template("one", "APPROVED", "One {{1}}"),
        graph_template("two", "APPROVED", "Two {{1}}"),
        graph_template("three", "APPROVED", "Three {{1}}"),
    ])
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let server = start_with_account(&url, &secrets).await;
    let good = sync(&server).await.unwrap();
    let before = bodies_and_statuses(&server).await;
    assert_eq!(before.len(), 3);

    // WhatsApp changed everything, but each sync now fails part way.
    {
        let mut t = graph.templates.lock().unwrap();
        t[0] = graph_template("one", "PAUSED", "One, edited {{1}}");
        t.remove(2);
        // Still two pages.
        t.push(graph_template("four", "APPROVED", "Four {{1}}"));
        t.push(graph_template("five", "APPROVED", "Five {{1}}"));
    }
    for (mode, expected) in [
        (Mode::FailOnSecondPage, "answered 500"),
        (Mode::Hang, "did not answer in time"),
        (Mode::ExpiredToken, "code 190"),
    ] {
        *graph.mode.lock().unwrap() = mode;
        let failed = refusal(sync(&server).await);
        assert_eq!(
            (failed.code, failed.reason.as_str()),
            (Code::Unavailable, "TEMPLATE_SYNC_FAILED")
        );
        assert!(failed.message.contains(expected), "{}", failed.message);
        assert_eq!(
            bodies_and_statuses(&server).await,
            before,
            "after {expected}"
        );
        let account = get_account(&server).await;
        let last = account.template_sync.unwrap();
        assert!(last.error.contains(expected), "{}", last.error);
        assert_eq!(
            last.last_good_sync_time, good.last_good_sync_time,
            "the last good sync is still the first"
        );
    }
    let metrics = reqwest::get(metrics_url(&server))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"wagate_template_syncs_total{{account="{WABA}",outcome="failed"}} 3"#
        )),
        "{metrics}"
    );

    // Once WhatsApp answers again, the registry catches up.
    *graph.mode.lock().unwrap() = Mode::Serve;
    let caught_up = sync(&server).await.unwrap();
    assert_eq!(counts(&caught_up.counts.unwrap()), (2, 1, 1, 1, 0));
}

#[tokio::test]
async fn only_accounts_with_credentials_sync() {
    let (_graph, url) = FakeGraph::start(vec![]).await;
    let server = Server::start_with(&["--graph-base-url", &url]);
    server
        .accounts()
        .await
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                waba_id: "555".into(),
                display_name: "Typed in".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut accounts = server.accounts().await;
    let off = refusal(
        accounts
            .sync_templates(pb::SyncTemplatesRequest {
                waba_id: "555".into(),
            })
            .await,
    );
    assert_eq!(
        (off.code, off.reason.as_str()),
        (Code::FailedPrecondition, "TEMPLATE_SYNC_OFF")
    );
    let unknown = refusal(
        accounts
            .sync_templates(pb::SyncTemplatesRequest {
                waba_id: "777".into(),
            })
            .await,
    );
    assert_eq!(unknown.reason, "ACCOUNT_NOT_FOUND");
    // Its templates are typed in as before.
    approve(
        &server,
        pb::Template {
            waba_id: "555".into(),
            ..template(
                "typed_in",
                pb::TemplateCategory::Utility,
                "Hi {{1}}, thanks for your order.",
            )
        },
    )
    .await;
    assert_eq!(
        get_template_in(&server, "555", "typed_in").await.body,
        "Hi {{1}}, thanks for your order."
    );
}

#[tokio::test]
async fn accounts_with_credentials_are_synced_on_a_schedule() {
    let (_graph, url) = FakeGraph::start(vec![graph_template(
        "scheduled",
        "APPROVED",
        "Hi {{1}}, thanks for your order.",
    )])
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let server = Server::start_with(&[
        "--graph-base-url",
        &url,
        "--template-sync-interval",
        "300ms",
    ]);
    create_synced_account(&server, &secrets).await;
    // Nobody calls SyncTemplates: the schedule does.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while bodies_and_statuses(&server).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "never synced:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bodies_and_statuses(&server).await,
        [(
            "scheduled".into(),
            "Hi {{1}}, thanks for your order.".into(),
            pb::TemplateStatus::Approved
        )]
    );
}
