//! Clients other than our own: grpcurl through reflection alone (running the
//! README's session as pasted), and a Python client generated from proto/.
//!
//! The tools come from PyPI (tests/python/requirements.txt); scripts/test.sh
//! installs them and points WAGATE_GRPCURL and WAGATE_PYTHON at them.

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

#[test]
fn a_generated_python_client_opens_a_window_and_sends_a_text() {
    let python = tool("WAGATE_PYTHON", "python");
    let server = Server::start();
    let output = Command::new(python)
        .arg(manifest_dir().join("tests/python/client.py"))
        .arg(server.addr.to_string())
        .arg(manifest_dir().join("proto"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python client ok"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
