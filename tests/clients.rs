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

/// The README's grpcurl session: the first ```sh block after the heading
/// "A grpcurl session".
fn readme_session() -> String {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("A grpcurl session")
        .nth(1)
        .expect("README has a grpcurl session");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("\n```").next().unwrap().to_owned()
}

#[test]
fn the_readme_grpcurl_session_works_through_reflection_alone() {
    let grpcurl = tool("WAGATE_GRPCURL", "grpcurl");
    let server = Server::start();
    let session = readme_session().replace("localhost:50051", &server.addr.to_string());
    assert!(session.contains("grpcurl"), "{session}");
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Run as pasted, in an empty directory: no proto files anywhere near.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{session}"))
        .current_dir(empty.path())
        .env("PATH", path)
        .output()
        .expect("run bash");
    let transcript = String::from_utf8_lossy(&output.stdout);

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
        "Code: FailedPrecondition",
        // grpcurl prints detail fields alphabetically: metadata before reason.
        "\"whatsapp_code\":\"131047\"",
        "\"reason\":\"WINDOW_CLOSED\"",
        "\"status\": \"TEMPLATE_STATUS_PENDING\"",
        "\"status\": \"TEMPLATE_STATUS_APPROVED\"",
        "\"renderedText\": \"Hi Ann, order A-1001 has shipped.\"",
        "\"pricingCategory\": \"PRICING_CATEGORY_UTILITY\"",
        "\"billable\": true",
    ];
    let mut rest = transcript.as_ref();
    for marker in expected {
        let at = rest.find(marker).unwrap_or_else(|| {
            panic!("{marker:?} missing (or out of order) in the transcript:\n{transcript}")
        });
        rest = &rest[at + marker.len()..];
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
