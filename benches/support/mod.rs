//! Shared by the benchmarks: starting servers, measuring processes, driving
//! load with the generated tonic client.
#![allow(dead_code)] // Each bench uses a different part.

pub mod anchors;
pub mod noop;
pub mod workload;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;
use wagate::pb;
use wagate::pb::gateway_client::GatewayClient;
use wagate::pb::template_registry_client::TemplateRegistryClient;

pub const BUSINESS: &str = "+15550001111";

/// Runs a bench's `main` on the load generator's runtime: two workers,
/// like the machine's two cores.
pub fn block_on(run: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run);
}

/// A server process under measurement.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub startup: Duration,
    /// Where wagate serves Prometheus metrics, from its "serving metrics
    /// on" line (which comes before "listening on"); other servers have none.
    metrics: Arc<OnceLock<SocketAddr>>,
    /// Every stderr line, until taken by [`Process::log_lines`].
    log: Option<mpsc::Receiver<String>>,
}

impl Process {
    /// Starts `program` and waits for its "listening on ADDR" log line.
    pub fn start(mut command: Command) -> Process {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let (log_tx, log) = mpsc::channel();
        let metrics = Arc::new(OnceLock::new());
        let metrics_found = metrics.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving metrics on http://").nth(1)
                    && let Some(addr) = rest.split('/').next().and_then(|a| a.parse().ok())
                {
                    let _ = metrics_found.set(addr);
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':'))
                        .collect();
                    let _ = tx.send(addr);
                }
                if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("server: {line}");
                }
                let _ = log_tx.send(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server did not start");
        Process {
            startup: started.elapsed(),
            child,
            addr: addr.parse().unwrap(),
            metrics,
            log: Some(log),
        }
    }

    /// A template registry client on this process.
    pub async fn templates(&self) -> TemplateRegistryClient<Channel> {
        TemplateRegistryClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the template registry")
    }

    pub fn wagate(data_dir: &Path, extra: &[&str]) -> Process {
        Process::wagate_logging(data_dir, "warn,wagate::server=info", extra)
    }

    pub fn wagate_logging(data_dir: &Path, log_level: &str, extra: &[&str]) -> Process {
        // WAGATE_BENCH_BINARY runs another build (an older commit, say)
        // under the same load, for a before/after on one machine.
        let binary = std::env::var_os("WAGATE_BENCH_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_wagate").into());
        let mut command = Command::new(binary);
        command
            .args(["--listen", "127.0.0.1:0", "--log-level", log_level])
            .args(["--metrics-listen", "127.0.0.1:0", "--drain-delay", "0s"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        Process::start(command)
    }

    /// The server's stderr lines from startup on; once.
    pub fn log_lines(&mut self) -> mpsc::Receiver<String> {
        self.log.take().expect("log lines already taken")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu(&self) -> Duration {
        stat_cpu(&format!("/proc/{}/stat", self.pid()))
    }

    /// CPU time (user + system) the process's threads named in `names`
    /// have used so far, together; `None` when it has none of them.
    pub fn threads_cpu(&self, names: &[&str]) -> Option<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        let used = tasks.filter_map(Result::ok).filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            names
                .contains(&comm.trim_end())
                .then(|| stat_cpu(&task.path().join("stat").to_string_lossy()))
        });
        used.reduce(|a, b| a + b)
    }

    /// The sum of every sample of the Prometheus metric `name` (a counter,
    /// or a histogram's `_count` or `_sum`) wagate exports now; `None` for a
    /// server without metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let addr = self.metrics.get()?;
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        // The exposition parser the tests use; a histogram's `_count` and
        // `_sum` come out as samples of their own.
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).ok()?;
        let values = scrape.samples.iter().filter(|s| s.metric == name);
        Some(
            values
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum(),
        )
    }

    /// Peak resident set size so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_kib(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    /// Current resident set size (VmRSS), MiB.
    pub fn rss_mib(&self) -> f64 {
        status_kib(self.pid(), "VmRSS:") as f64 / 1024.0
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) the load generator (this process) has used.
pub fn own_cpu() -> Duration {
    stat_cpu("/proc/self/stat")
}

/// User plus system time from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the ")" that closes the command name; utime and stime
    // are fields 14 and 15 of the whole line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((field(11) + field(12)) * 1000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output();
        out.ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Area codes in use (US and Canada), which customers' numbers have.
const AREA_CODES: [u16; 32] = [
    201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 301, 302, 303,
    305, 310, 312, 403, 404, 415, 416, 512, 514, 604, 617, 702, 713,
];

/// The n-th distinct customer, for 256 million customers: a NANP number as
/// customers have them, an area code in use and an exchange of 2-9, so
/// valid by libphonenumber's patterns. (Until 2026-11-27 the area code was
/// any of 200-999 and the exchange could start with 0 or 1: numbers that
/// are possible but not valid, each of which took libphonenumber's slowest
/// path, one a real customer rarely has; [`unusual_customer`] keeps that
/// case for the phone bench.)
pub fn customer(n: u64) -> String {
    let area = AREA_CODES[(n / 8_000_000) as usize % AREA_CODES.len()];
    format!("+1{area}{}", 2_000_000 + n % 8_000_000)
}

/// The n-th distinct number that is possible but not valid as written
/// (area code 200 is not in use): it needs libphonenumber's full rules.
pub fn unusual_customer(n: u64) -> String {
    format!("+1200{:07}", n % 10_000_000)
}

pub fn get_window(customer: String) -> pb::GetWindowRequest {
    pb::GetWindowRequest {
        business_number: BUSINESS.into(),
        customer_number: customer,
    }
}

pub fn record_inbound(
    customer: String,
    message_id: String,
    received_at: Option<prost_types::Timestamp>,
) -> pb::RecordInboundRequest {
    pb::RecordInboundRequest {
        business_number: BUSINESS.into(),
        customer_number: customer,
        message_id,
        received_at,
        ..Default::default()
    }
}

pub const TEMPLATE: &str = "bench_order_update";

pub fn send_template(customer: String, key: String) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_number: BUSINESS.into(),
        customer_number: customer,
        idempotency_key: key,
        content: Some(pb::send_message_request::Content::Template(
            pb::TemplateContent {
                name: TEMPLATE.into(),
                language: "en_US".into(),
                body_parameters: Some(pb::TemplateParameters {
                    positional: vec!["Ann".into(), "A-1001".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        dry_run: false,
    }
}

pub async fn channels(addr: SocketAddr, count: usize) -> Vec<GatewayClient<Channel>> {
    let mut clients = Vec::new();
    for _ in 0..count {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(GatewayClient::new(channel));
    }
    clients
}

/// Latencies in microseconds, with the count of failed calls.
pub struct Sample {
    pub latencies: Histogram<u64>,
    pub errors: u64,
    /// Failed calls by gRPC code, so a table can say why they failed.
    pub error_codes: std::collections::BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Sample {
    pub fn new() -> Sample {
        Sample {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            errors: 0,
            error_codes: Default::default(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn failed(&mut self, status: &tonic::Status) {
        self.errors += 1;
        *self
            .error_codes
            .entry(format!("{:?}", status.code()))
            .or_default() += 1;
    }

    /// The failed calls, with their codes: `42 (ResourceExhausted 42)`.
    pub fn errors_shown(&self) -> String {
        if self.errors == 0 {
            return "0".into();
        }
        let codes: Vec<String> = self
            .error_codes
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        format!("{} ({})", self.errors, codes.join(", "))
    }

    pub fn merge(&mut self, other: &Sample) {
        self.latencies.add(&other.latencies).unwrap();
        self.errors += other.errors;
        for (code, n) in &other.error_codes {
            *self.error_codes.entry(code.clone()).or_default() += n;
        }
    }

    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }
}
