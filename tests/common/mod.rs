//! Starts the real wagate binary on an ephemeral port with a temporary data
//! directory, and hands out generated tonic clients connected to it.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_types::StatusExt;
use wagate::pb::account_registry_client::AccountRegistryClient;
use wagate::pb::gateway_client::GatewayClient;
use wagate::pb::template_registry_client::TemplateRegistryClient;

pub use wagate::pb;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    data_dir: PathBuf,
    _temp: tempfile::TempDir,
    launch: Launch,
    logs: Arc<Mutex<Vec<String>>>,
}

/// How the binary is started: its arguments and `WAGATE_*` environment.
#[derive(Clone, Default)]
struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with flags: ephemeral gRPC and metrics ports, a temp data dir,
    /// text logs, no drain delay, then `extra_args` (which may override them).
    pub fn start_with(extra_args: &[&str]) -> Server {
        Server::launch(|data_dir| {
            let mut args: Vec<String> = [
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "text",
                "--log-level",
                "info",
                "--metrics-listen",
                "127.0.0.1:0",
                "--drain-delay",
                "0s",
            ]
            .map(String::from)
            .into();
            args.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
            args.extend(extra_args.iter().map(|s| s.to_string()));
            Launch { args, env: vec![] }
        })
    }

    /// Starts with no flags at all: `WAGATE_LISTEN` and `WAGATE_METRICS_LISTEN`
    /// (ephemeral ports), `WAGATE_DATA_DIR` (a temp dir), no drain delay, and
    /// then `env`.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::launch(|data_dir| {
            let mut vars = vec![
                ("WAGATE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
                ("WAGATE_DATA_DIR".to_owned(), data_dir.display().to_string()),
                ("WAGATE_METRICS_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
                ("WAGATE_DRAIN_DELAY".to_owned(), "0s".to_owned()),
            ];
            vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Launch {
                args: vec![],
                env: vars,
            }
        })
    }

    fn launch(configure: impl FnOnce(&Path) -> Launch) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let launch = configure(&data_dir);
        let (child, addr, logs) = spawn(&launch);
        Server {
            child,
            addr,
            data_dir,
            _temp: temp,
            launch,
            logs,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to wagate")
    }

    pub async fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::new(self.channel().await)
    }

    pub async fn templates(&self) -> TemplateRegistryClient<Channel> {
        TemplateRegistryClient::new(self.channel().await)
    }

    pub async fn accounts(&self) -> AccountRegistryClient<Channel> {
        AccountRegistryClient::new(self.channel().await)
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit by itself. Async, so the test's own
    /// client connections keep being driven (and can answer GOAWAY).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wagate did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops gracefully (SIGTERM) and starts again on the same data directory.
    pub async fn restart(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "graceful stop exited with {status}");
        self.start_again();
    }

    /// Kills with SIGKILL: no chance to flush or finish anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Kills with SIGKILL (no chance to flush) and starts again.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.start_again();
    }

    /// Starts the binary again (after `kill`) on the same data directory.
    pub fn start_again(&mut self) {
        let (child, addr, logs) = spawn(&self.launch);
        self.child = child;
        self.addr = addr;
        self.logs = logs;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(launch: &Launch) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wagate"));
    // Only the launch configures the server: the test tools' own variables
    // (WAGATE_GRPCURL, ...) and anything else inherited are dropped.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("WAGATE_")) {
        command.env_remove(key);
    }
    let mut child = command
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wagate");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (listening, address) = mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                // Text or JSON logs: the address runs until the first character
                // that cannot be part of one.
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
                    .collect();
                let _ = listening.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = address.recv_timeout(STARTUP_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "wagate did not start; logs:\n{}",
            logs.lock().unwrap().join("\n")
        )
    });
    (child, addr.parse().expect("listening address"), logs)
}

/// The pieces of a refusal tests check: code, ErrorInfo and field violations.
#[derive(Debug)]
pub struct Refusal {
    pub code: tonic::Code,
    pub message: String,
    pub reason: String,
    pub domain: String,
    pub metadata: std::collections::HashMap<String, String>,
    pub fields: Vec<String>,
}

pub fn refusal<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Refusal {
    let status = result.expect_err("expected the call to be refused");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
        .clone();
    Refusal {
        code: status.code(),
        message: status.message().to_owned(),
        reason: info.reason,
        domain: info.domain,
        metadata: info.metadata,
        fields: details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default(),
    }
}

pub const BUSINESS: &str = "+15550001111";

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn time(ts: &prost_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).unwrap()
}

pub fn inbound(customer: &str, message_id: &str) -> pb::RecordInboundRequest {
    pb::RecordInboundRequest {
        business_number: BUSINESS.into(),
        customer_number: customer.into(),
        message_id: message_id.into(),
        ..Default::default()
    }
}

pub fn text(customer: &str, key: &str, body: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_number: BUSINESS.into(),
        customer_number: customer.into(),
        idempotency_key: key.into(),
        content: Some(pb::send_message_request::Content::Text(pb::TextContent {
            body: body.into(),
        })),
        dry_run: false,
    }
}

pub fn template_send(
    customer: &str,
    key: &str,
    name: &str,
    positional: &[&str],
) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        content: Some(pb::send_message_request::Content::Template(
            pb::TemplateContent {
                name: name.into(),
                language: "en_US".into(),
                body_parameters: Some(pb::TemplateParameters {
                    positional: positional.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..text(customer, key, "")
    }
}

/// A send of any content.
pub fn send_of(
    customer: &str,
    key: &str,
    content: pb::send_message_request::Content,
) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        content: Some(content),
        ..text(customer, key, "")
    }
}

/// One of each free-form content beyond text, named: a document, an image
/// by media id, a video, audio, a sticker, reply buttons with a text header, a list, a call-to-action
/// URL with an image header, a location and a reaction.
pub fn rich_contents() -> Vec<(&'static str, pb::send_message_request::Content)> {
    use pb::send_message_request::Content as C;
    let interactive = |action| pb::InteractiveContent {
        header: Some(pb::interactive_content::Header::HeaderText(
            "Delivery".into(),
        )),
        body: "Which slot suits you?".into(),
        footer: "Reply to choose".into(),
        action: Some(action),
    };
    vec![
        (
            "document",
            C::Media(pb::MediaContent {
                r#type: pb::MediaType::Document as i32,
                source: Some(pb::media_content::Source::Link(
                    "https://files.example.com/invoice-1001.pdf".into(),
                )),
                caption: "Your invoice".into(),
                filename: "invoice-1001.pdf".into(),
            }),
        ),
        (
            "image",
            C::Media(pb::MediaContent {
                r#type: pb::MediaType::Image as i32,
                source: Some(pb::media_content::Source::MediaId(
                    "1013859600285441".into(),
                )),
                caption: "Your parcel".into(),
                filename: String::new(),
            }),
        ),
        (
            "video",
            C::Media(pb::MediaContent {
                r#type: pb::MediaType::Video as i32,
                source: Some(pb::media_content::Source::Link(
                    "https://files.example.com/unboxing.mp4".into(),
                )),
                caption: "How to unpack".into(),
                filename: String::new(),
            }),
        ),
        (
            "audio",
            C::Media(pb::MediaContent {
                r#type: pb::MediaType::Audio as i32,
                source: Some(pb::media_content::Source::MediaId(
                    "2013859600285441".into(),
                )),
                caption: String::new(),
                filename: String::new(),
            }),
        ),
        (
            "sticker",
            C::Media(pb::MediaContent {
                r#type: pb::MediaType::Sticker as i32,
                source: Some(pb::media_content::Source::Link(
                    "https://files.example.com/thanks.webp".into(),
                )),
                caption: String::new(),
                filename: String::new(),
            }),
        ),
        (
            "buttons",
            C::Interactive(interactive(pb::interactive_content::Action::Buttons(
                pb::ReplyButtons {
                    buttons: vec![
                        pb::ReplyButton {
                            id: "slot-am".into(),
                            title: "Morning".into(),
                        },
                        pb::ReplyButton {
                            id: "slot-pm".into(),
                            title: "Afternoon".into(),
                        },
                    ],
                },
            ))),
        ),
        (
            "list",
            C::Interactive(pb::InteractiveContent {
                header: None,
                body: "Pick a branch".into(),
                footer: String::new(),
                action: Some(pb::interactive_content::Action::List(pb::ListAction {
                    button: "Branches".into(),
                    sections: vec![pb::ListSection {
                        title: "Cape Town".into(),
                        rows: vec![pb::ListRow {
                            id: "ct-1".into(),
                            title: "Gardens".into(),
                            description: "Open until 18:00".into(),
                        }],
                    }],
                })),
            }),
        ),
        (
            "cta_url",
            C::Interactive(pb::InteractiveContent {
                header: Some(pb::interactive_content::Header::HeaderImage(
                    pb::MediaReference {
                        source: Some(pb::media_reference::Source::Link(
                            "https://files.example.com/parcel.jpg".into(),
                        )),
                        filename: String::new(),
                    },
                )),
                body: "Track your parcel".into(),
                footer: String::new(),
                action: Some(pb::interactive_content::Action::CtaUrl(
                    pb::CallToActionUrl {
                        display_text: "Track".into(),
                        url: "https://track.example.com/A-1001".into(),
                    },
                )),
            }),
        ),
        (
            "location",
            C::Location(pb::LocationContent {
                latitude: -33.9249,
                longitude: 18.4241,
                name: "Gardens branch".into(),
                address: "1 Kloof St, Cape Town".into(),
            }),
        ),
        (
            "reaction",
            C::Reaction(pb::ReactionContent {
                message_id: "wamid.HBgLMjc4MjEyMzQ1Njc".into(),
                emoji: "👍".into(),
            }),
        ),
    ]
}

pub fn template(name: &str, category: pb::TemplateCategory, body: &str) -> pb::Template {
    pb::Template {
        name: name.into(),
        language: "en_US".into(),
        category: category as i32,
        body: body.into(),
        ..Default::default()
    }
}

/// GetWindow's answer for (BUSINESS, customer) now.
pub async fn get_window(server: &Server, customer: &str) -> pb::GetWindowResponse {
    server
        .gateway()
        .await
        .get_window(pb::GetWindowRequest {
            business_number: BUSINESS.into(),
            customer_number: customer.into(),
        })
        .await
        .expect("get window")
        .into_inner()
}

/// The (BUSINESS, customer) window as GetWindow answers it now.
pub async fn window(server: &Server, customer: &str) -> pb::Window {
    get_window(server, customer).await.window.expect("window")
}

/// The (BUSINESS, customer) consent as GetWindow shows it now.
pub async fn consent_of(server: &Server, customer: &str) -> pb::Consent {
    get_window(server, customer).await.consent.expect("consent")
}

/// RecordOptIn for (BUSINESS, customer): the consent as kept.
pub async fn opt_in(server: &Server, customer: &str) -> pb::Consent {
    server
        .gateway()
        .await
        .record_opt_in(pb::RecordOptInRequest {
            business_number: BUSINESS.into(),
            customer_number: customer.into(),
        })
        .await
        .expect("opt in")
        .into_inner()
        .consent
        .expect("consent")
}

/// Registers a template and approves it, as the review webhook would.
pub async fn approved_template(
    server: &Server,
    name: &str,
    category: pb::TemplateCategory,
    body: &str,
) {
    approve(server, template(name, category, body)).await;
}

/// The registered template `name` (en_US) of the default account.
pub async fn get_template(server: &Server, name: &str) -> pb::Template {
    get_template_in(server, "", name).await
}

/// The registered template `name` (en_US) of the account `waba_id`.
pub async fn get_template_in(server: &Server, waba_id: &str, name: &str) -> pb::Template {
    server
        .templates()
        .await
        .get_template(pb::GetTemplateRequest {
            name: name.into(),
            language: "en_US".into(),
            waba_id: waba_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap()
}

/// The outbound message `id` as GetMessage answers.
pub async fn get_message(server: &Server, id: &str) -> pb::OutboundMessage {
    server
        .gateway()
        .await
        .get_message(pb::GetMessageRequest {
            message_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap()
}

/// Waits (15 s at most) until message `id` has `status`, and returns it.
pub async fn wait_for(server: &Server, id: &str, status: pb::MessageStatus) -> pb::OutboundMessage {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let message = get_message(server, id).await;
        if message.status() == status {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "message stayed {:?}, wanted {status:?}: {message:?}\n{}",
            message.status(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `request` and returns the accepted message's id.
pub async fn send(server: &Server, request: pb::SendMessageRequest) -> String {
    server
        .gateway()
        .await
        .send_message(request)
        .await
        .unwrap()
        .into_inner()
        .message_id
}

/// Registers `template` (in its `waba_id`'s account) and approves it as
/// WhatsApp's review would.
pub async fn approve(server: &Server, template: pb::Template) {
    let name = template.name.clone();
    let waba_id = template.waba_id.clone();
    let mut templates = server.templates().await;
    templates
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(template),
        })
        .await
        .expect("upsert");
    templates
        .set_template_status(pb::SetTemplateStatusRequest {
            name,
            language: "en_US".into(),
            status: pb::TemplateStatus::Approved as i32,
            reason: String::new(),
            waba_id,
        })
        .await
        .expect("approve");
}

/// Opens a raw HTTP/2 stream for GetWindow and sends only its headers (plus
/// `headers`), so the call is in flight until the body follows.
pub async fn start_slow_get_window(
    server: &Server,
    headers: &[(&str, &str)],
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<bytes::Bytes>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    raw_call(server, "/wagate.v1.Gateway/GetWindow", headers).await
}

/// Opens a raw HTTP/2 stream on a connection of its own for the gRPC
/// method at `path` and sends only its headers: the test sends the body
/// (or not) itself.
pub async fn raw_call(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<bytes::Bytes>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{}{path}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, stream) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    (response, stream, client)
}

/// The gRPC status a raw call ended with: from the headers of a
/// trailers-only answer, else from the trailers after the body.
pub async fn raw_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = response.await.expect("response headers");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().expect("grpc trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status in the trailers")
}

pub fn grpc_frame(message: &impl prost::Message) -> bytes::Bytes {
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

/// The word the server logged right after `announcement`, such as the URL
/// in "serving metrics on http://...".
pub fn logged_after(server: &Server, announcement: &str) -> String {
    let logs = server.logs();
    let at = logs
        .split(announcement)
        .nth(1)
        .unwrap_or_else(|| panic!("no {announcement:?} line in:\n{logs}"));
    at.split_whitespace().next().unwrap().to_owned()
}

/// The address of the Prometheus endpoint, from the server's log.
pub fn metrics_url(server: &Server) -> String {
    logged_after(server, "serving metrics on ")
}

/// The server's `/metrics` text, as Prometheus scrapes it.
pub async fn metrics_text(server: &Server) -> String {
    reqwest::get(metrics_url(server))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Lints a `/metrics` text as Prometheus would (`promtool check metrics`,
/// Debian `prometheus`).
pub fn lint_metrics(text: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
}

/// The sum of the samples of `metric` whose labels include each of
/// `labels` (written as exposed: `grpc_code="OK"`); `None` when none do.
pub async fn metric_sum(server: &Server, metric: &str, labels: &[&str]) -> Option<f64> {
    let text = metrics_text(server).await;
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            name == metric && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// One acknowledged write of the fault tests: the inbound that opened the
/// customer's window and the send accepted right after it (its text is
/// [`STILL_THERE`], so the check can replay it).
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub customer: String,
    pub key: String,
    pub message_id: String,
    /// The window's last inbound as acknowledged, where the test kept it.
    pub last_inbound_at: Option<prost_types::Timestamp>,
}

/// The text of every send the fault tests make.
pub const STILL_THERE: &str = "still there?";

/// Whether an acknowledged write is all still there: the pair's window open
/// (at the acknowledged inbound time, where known) and the idempotency key
/// replaying the same message id. Says what is missing when not.
pub async fn still_there(gateway: &mut GatewayClient<Channel>, write: &Acknowledged) -> bool {
    let window = gateway
        .get_window(pb::GetWindowRequest {
            business_number: BUSINESS.into(),
            customer_number: write.customer.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .window
        .unwrap();
    let replay = gateway
        .send_message(text(&write.customer, &write.key, STILL_THERE))
        .await;
    let window_kept = window.state() == pb::WindowState::Open
        && write
            .last_inbound_at
            .as_ref()
            .is_none_or(|at| window.last_inbound_at.as_ref() == Some(at));
    let send_kept = replay.is_ok_and(|r| r.into_inner().message_id == write.message_id);
    if !(window_kept && send_kept) {
        eprintln!(
            "lost: {} window_kept={window_kept} send_kept={send_kept}",
            write.customer
        );
    }
    window_kept && send_kept
}

/// Runs the binary with `args` (and `env`) expecting it to refuse to start;
/// returns its stderr.
pub fn refused_start(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
