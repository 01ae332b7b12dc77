//! Clients other than our own: grpcurl through reflection alone (running the
//! README's session as pasted), and the Python and Node examples
//! (examples/python, examples/node) as a caller would run them.
//!
//! The tools come from PyPI (tests/python/requirements.txt) and npm
//! (examples/node/package-lock.json); scripts/test.sh installs them and
//! points WAGATE_GRPCURL and WAGATE_PYTHON at them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from the environment variable, else the project's .venv.
fn tool(variable: &str, venv_name: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".venv/bin").join(venv_name));
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs tests/python/requirements.txt), or set {variable}",
        path.display()
    );
    path
}

/// The `n`th (from 1) ```sh block after the README heading `heading`.
fn readme_block(heading: &str, n: usize) -> String {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has a section {heading:?}"));
    let block = section.split("```sh\n").nth(n).expect("a sh block");
    block.split("\n```").next().unwrap().to_owned()
}

/// Runs the README's `n`th block under `heading` as pasted against
/// `server`, in an empty directory (no proto files anywhere near): its
/// transcript.
fn run_readme_block(heading: &str, n: usize, server: &Server) -> String {
    let grpcurl = tool("WAGATE_GRPCURL", "grpcurl");
    let session = readme_block(heading, n).replace("localhost:50051", &server.addr.to_string());
    assert!(session.contains("grpcurl"), "{session}");
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{session}"))
        .current_dir(empty.path())
        .env("PATH", path)
        .output()
        .expect("run bash");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Each marker in `transcript`, in this order.
fn assert_in_order(transcript: &str, expected: &[&str]) {
    let mut rest = transcript;
    for marker in expected {
        let at = rest.find(marker).unwrap_or_else(|| {
            panic!("{marker:?} missing (or out of order) in the transcript:\n{transcript}")
        });
        rest = &rest[at + marker.len()..];
    }
}

#[test]
fn the_readme_accounts_session_works_through_reflection_alone() {
    let server = Server::start();
    let transcript = run_readme_block("## Business accounts and numbers", 1, &server);
    assert_in_order(
        &transcript,
        &[
            "\"wabaId\": \"102290129340398\"",
            "\"tokenFile\": \"/run/secrets/brand-a-token\"",
            "\"phoneNumberId\": \"106540352242922\"",
            "\"changed\": true",
            "\"displayName\": \"Brand A\"",
            "\"number\": \"+15550001111\"",
        ],
    );
    // Then a hand-kept account's template, listed there.
    let transcript = run_readme_block("## Business accounts and numbers", 2, &server);
    assert_in_order(
        &transcript,
        &[
            "\"wabaId\": \"203301230451409\"",
            "\"created\": true",
            "\"body\": \"Brand B: order {{1}} shipped.\"",
            "\"wabaId\": \"203301230451409\"",
        ],
    );
    // The first account syncs; here its token file is not mounted, so the
    // sync is refused as unavailable and says why.
    let transcript = run_readme_block("## Business accounts and numbers", 3, &server);
    assert_in_order(
        &transcript,
        &[
            "Code: Unavailable",
            "cannot read the account's token file /run/secrets/brand-a-token",
            "\"reason\":\"TEMPLATE_SYNC_FAILED\"",
        ],
    );
}

#[test]
fn the_readme_clickatell_number_is_registered_through_reflection_alone() {
    let server = Server::start();
    let transcript = run_readme_block("## Clickatell as the provider of a number", 1, &server);
    assert_in_order(
        &transcript,
        &[
            "\"wabaId\": \"302211009988776\"",
            "\"integrationId\": \"3f1a9c5e7b2d4f6081a2\"",
            "\"apiKeyFile\": \"/run/secrets/clickatell-key\"",
            "\"changed\": true",
            "Code: FailedPrecondition",
            "\"reason\":\"NOT_SUPPORTED_BY_PROVIDER\"",
        ],
    );
}

#[test]
fn the_readme_grpcurl_session_works_through_reflection_alone() {
    let server = Server::start();
    let transcript = run_readme_block("A grpcurl session", 1, &server);

    // What each step of the session answers, in order.
    let expected = [
        "\"status\": \"SERVING\"",
        "wagate.v1.Gateway",
        "wagate.v1.TemplateRegistry",
        "rpc SendMessage",
        "\"outcome\": \"INBOUND_OUTCOME_OPENED\"",
        "\"state\": \"WINDOW_STATE_OPEN\"",
        "\"windows\": [",
        "\"pricingCategory\": \"PRICING_CATEGORY_SERVICE\"",
        "\"renderedText\": \"[document: invoice-1001.pdf] Your invoice\"",
        "\"renderedText\": \"Which slot suits you?\\n[Morning]\\n[Afternoon]\"",
        "Code: FailedPrecondition",
        // grpcurl prints detail fields alphabetically: metadata before reason.
        "\"whatsapp_code\":\"131047\"",
        "\"reason\":\"WINDOW_CLOSED\"",
        "\"status\": \"TEMPLATE_STATUS_PENDING\"",
        "\"status\": \"TEMPLATE_STATUS_APPROVED\"",
        "\"renderedText\": \"Hi Ann, your order A-1001 has shipped.\"",
        "\"pricingCategory\": \"PRICING_CATEGORY_UTILITY\"",
        "\"billable\": true",
    ];
    assert_in_order(&transcript, &expected);
}

/// Every rich content as grpcurl's JSON, through reflection alone: what an
/// engineer debugging by hand would type.
#[test]
fn grpcurl_sends_every_rich_content() {
    let grpcurl = tool("WAGATE_GRPCURL", "grpcurl");
    let server = Server::start();
    let addr = server.addr.to_string();
    let call = |method: &str, json: &str| {
        let output = Command::new(&grpcurl)
            .args(["-plaintext", "-d", json, &addr, method])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "grpcurl {json}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        answer
    };
    call(
        "wagate.v1.Gateway/RecordInbound",
        r#"{"business_number": "+15550001111", "customer_number": "+27821234567", "message_id": "wamid.grpcurl-1"}"#,
    );
    let contents = [
        (
            r#""media": {"type": "MEDIA_TYPE_VIDEO", "media_id": "7", "caption": "How to unpack"}"#,
            "[video] How to unpack",
        ),
        (
            r#""media": {"type": "MEDIA_TYPE_AUDIO", "link": "https://files.example.com/note.ogg"}"#,
            "[audio]",
        ),
        (
            r#""media": {"type": "MEDIA_TYPE_STICKER", "media_id": "8"}"#,
            "[sticker]",
        ),
        (
            r#""interactive": {"header_document": {"link": "https://files.example.com/terms.pdf", "filename": "terms.pdf"},
                "body": "Do you accept?", "buttons": {"buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]}}"#,
            "[document: terms.pdf]\nDo you accept?\n[Yes]\n[No]",
        ),
        (
            r#""interactive": {"header_text": "Branches", "body": "Pick one", "footer": "Open daily",
                "list": {"button": "Show", "sections": [{"rows": [{"id": "g", "title": "Gardens"}]}]}}"#,
            "Branches\nPick one\nOpen daily\n[Show]\n- Gardens",
        ),
        (
            r#""interactive": {"body": "Your receipt", "cta_url": {"display_text": "Open", "url": "https://r.example.com/1"}}"#,
            "Your receipt\n[Open](https://r.example.com/1)",
        ),
        (
            r#""location": {"latitude": 51.5, "longitude": -0.12, "address": "London"}"#,
            "[location 51.5, -0.12] London",
        ),
        (
            r#""reaction": {"message_id": "wamid.grpcurl-1", "emoji": ""}"#,
            "[reaction removed]",
        ),
    ];
    for (n, (content, rendered)) in contents.iter().enumerate() {
        let json = format!(
            r#"{{"business_number": "+15550001111", "customer_number": "+27821234567",
                "idempotency_key": "grpcurl-{n}", {content}}}"#
        );
        let answer = call("wagate.v1.Gateway/SendMessage", &json);
        assert_eq!(answer["renderedText"], *rendered, "{content}");
        assert_eq!(
            answer["pricingCategory"], "PRICING_CATEGORY_SERVICE",
            "{content}"
        );
        assert!(answer["content"].is_object(), "{answer}");
    }
}

#[test]
fn grpcurl_checks_health_and_describes_messages() {
    let grpcurl = tool("WAGATE_GRPCURL", "grpcurl");
    let server = Server::start();
    let addr = server.addr.to_string();
    let run = |args: &[&str]| {
        let output = Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "grpcurl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(
        run(&[
            "-d",
            r#"{"service":""}"#,
            &addr,
            "grpc.health.v1.Health/Check"
        ])
        .contains("SERVING")
    );
    let described = run(&[&addr, "describe", "wagate.v1.Template"]);
    assert!(
        described.contains("repeated .wagate.v1.TemplateButton buttons"),
        "{described}"
    );
    let methods = run(&[&addr, "list", "wagate.v1.TemplateRegistry"]);
    for rpc in [
        "UpsertTemplate",
        "GetTemplate",
        "ListTemplates",
        "SetTemplateStatus",
        "DeleteTemplate",
    ] {
        assert!(
            methods.contains(&format!("wagate.v1.TemplateRegistry.{rpc}")),
            "{methods}"
        );
    }
}

/// Runs an example client against a fresh server; returns its output.
fn run_example(program: &Path, script: &str) -> String {
    let server = Server::start();
    let output = Command::new(program)
        .arg(manifest_dir().join(script))
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What both examples print when every step answered as documented.
fn example_succeeded(stdout: &str, client: &str) -> bool {
    stdout.contains(&format!("{client} example ok: message "))
        && stdout.contains("MESSAGE_STATUS_ACCEPTED, refused WINDOW_CLOSED (whatsapp_code 131047)")
}

#[test]
fn the_python_example_records_sends_watches_and_reads_a_refusal() {
    let python = tool("WAGATE_PYTHON", "python");
    let stdout = run_example(&python, "examples/python/example.py");
    assert!(example_succeeded(&stdout, "python"), "{stdout}");
}

#[test]
fn the_python_rich_messages_example_sends_every_content_and_a_document_header() {
    let python = tool("WAGATE_PYTHON", "python");
    let stdout = run_example(&python, "examples/python/rich_messages.py");
    let expected = [
        "sent media: '[document: invoice-1001.pdf] Your invoice'",
        "sent media: '[image] Your parcel'",
        "sent interactive: 'Which slot suits you?\\n[Morning]\\n[Afternoon]'",
        "sent interactive: 'Pick a branch\\n[Branches]\\nCape Town\\n- Gardens: Open until 18:00'",
        "sent interactive: 'Track your parcel\\n[Track](https://track.example.com/A-1001)'",
        "sent location: '[location -33.9249, 18.4241] Gardens branch'",
        "sent reaction: '[reaction 👍]'",
        "refused INVALID_CONTENT at media.caption",
        "sent template: '[document: invoice-1001.pdf]\\nHi Ann, your invoice is attached.'",
        "python rich messages ok",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "{stdout}");
}

#[test]
fn the_node_example_records_sends_watches_and_reads_a_refusal() {
    let modules = manifest_dir().join("examples/node/node_modules");
    assert!(
        modules.exists(),
        "{} missing: run scripts/test.sh (it runs npm ci there)",
        modules.display()
    );
    let node = std::env::var_os("WAGATE_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let stdout = run_example(&node, "examples/node/example.js");
    assert!(example_succeeded(&stdout, "node"), "{stdout}");
}

/// Waits until the server counts `count` WatchWindows streams.
async fn watchers_become(server: &Server, count: f64) {
    for _ in 0..300 {
        let now = common::metric_sum(server, "wagate_window_watchers", &[]).await;
        if now.unwrap_or(0.0) == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server never counted {count} watchers");
}

/// Runs the closing-reminder example until it has sent one reminder,
/// recording inbounds once it watches: `soon` closes in 30 minutes
/// (inside the 1-hour lead), `later` in 24 hours (nothing to do yet).
/// Returns the message it reports.
async fn remind_once(
    server: &Server,
    extra: &[&str],
    soon: &str,
    later: &str,
) -> common::pb::OutboundMessage {
    use std::io::{BufRead, BufReader};
    let python = tool("WAGATE_PYTHON", "python");
    watchers_become(server, 0.0).await;
    let mut child = Command::new(&python)
        .arg(manifest_dir().join("examples/python/closing_reminder.py"))
        .arg(server.addr.to_string())
        .args(["--exit-after", "1"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next_line = || {
        read.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the example prints")
    };
    assert!(next_line().starts_with("watching for windows closing within 3600s"));
    // The stream is open once the server counts it.
    watchers_become(server, 1.0).await;
    let mut gateway = server.gateway().await;
    let now = chrono::Utc::now();
    for (customer, received) in [
        (later, now),
        (soon, now - chrono::TimeDelta::minutes(23 * 60 + 30)),
    ] {
        gateway
            .record_inbound(common::pb::RecordInboundRequest {
                received_at: Some(common::timestamp(received)),
                ..common::inbound(customer, &format!("wamid.remind-{customer}"))
            })
            .await
            .unwrap();
    }
    let sent = next_line();
    assert!(sent.contains(&format!(" to {soon} ")), "{sent}");
    assert_eq!(next_line(), "closing reminder ok: sent 1");
    assert!(child.wait().unwrap().success());
    let message_id = sent.split(' ').nth(1).unwrap().to_owned();
    gateway
        .get_message(common::pb::GetMessageRequest { message_id })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap()
}

#[tokio::test]
async fn the_closing_reminder_example_sends_before_the_window_closes() {
    let server = Server::start();
    let text = remind_once(&server, &[], "+27821110001", "+27821110002").await;
    assert_eq!(text.customer_number, "+27821110001");
    assert_eq!(text.kind, common::pb::MessageKind::FreeForm as i32);
    assert_eq!(
        text.rendered_text,
        "Anything else we can help with? Just reply here."
    );

    common::approved_template(
        &server,
        "closing_offer",
        common::pb::TemplateCategory::Utility,
        "Your chat with us is closing soon.",
    )
    .await;
    let args = ["--template", "closing_offer", "--language", "en_US"];
    let template = remind_once(&server, &args, "+27821110003", "+27821110004").await;
    assert_eq!(template.customer_number, "+27821110003");
    assert_eq!(template.kind, common::pb::MessageKind::Template as i32);
    assert_eq!(template.rendered_text, "Your chat with us is closing soon.");
}

/// The README's two WatchWindows lines, continuation lines joined.
fn readme_watch_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("### Watching windows by hand")
        .nth(1)
        .expect("README shows how to watch by hand");
    let block = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("\n```")
        .next()
        .unwrap();
    block
        .replace("\\\n", " ")
        .lines()
        .filter(|line| line.starts_with("grpcurl"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_readme_watch_lines_stream_and_resume() {
    let grpcurl = tool("WAGATE_GRPCURL", "grpcurl");
    let server = Server::start();
    let lines = readme_watch_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let run = |line: &str| {
        let line = line
            .replace("localhost:50051", &server.addr.to_string())
            .replacen("grpcurl", &format!("{} -max-time 4", grpcurl.display()), 1);
        Command::new("bash")
            .arg("-c")
            .arg(line)
            .stdout(std::process::Stdio::piped())
            // It ends at -max-time, saying so on stderr.
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    watchers_become(&server, 0.0).await;
    let watching = run(&lines[0]);
    watchers_become(&server, 1.0).await;
    // 30 minutes left: OPENED, then CLOSING for the 1-hour lead at once.
    let received = chrono::Utc::now() - chrono::TimeDelta::minutes(23 * 60 + 30);
    server
        .gateway()
        .await
        .record_inbound(common::pb::RecordInboundRequest {
            received_at: Some(common::timestamp(received)),
            ..common::inbound("+27821230001", "wamid.readme-watch")
        })
        .await
        .unwrap();
    let first = String::from_utf8(watching.wait_with_output().unwrap().stdout).unwrap();
    assert!(first.contains("WINDOW_EVENT_TYPE_OPENED"), "{first}");
    assert!(first.contains("WINDOW_EVENT_TYPE_CLOSING"), "{first}");
    let token = first
        .split("\"resumeToken\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a resume token");
    let resumed = run(&lines[1].replace("LAST_TOKEN", token));
    let rest = String::from_utf8(resumed.wait_with_output().unwrap().stdout).unwrap();
    assert!(rest.contains("WINDOW_EVENT_TYPE_CLOSING"), "{rest}");
    assert!(!rest.contains("WINDOW_EVENT_TYPE_OPENED"), "{rest}");
}
