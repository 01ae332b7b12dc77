//! Logs, traces and metrics: the tracing subscriber (text or JSON logs, and
//! OTLP span export when an endpoint is configured), the Prometheus recorder
//! with the `/metrics` endpoint on its own port, and the names every part of
//! wagate records metrics under.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs the process-wide subscriber: logs on stderr in the configured
/// format, and call spans exported over OTLP when `--otlp-endpoint` is set.
/// Returns the tracer provider to shut down (flush) on exit. Must run inside
/// the tokio runtime, which carries the exporter's gRPC client.
pub fn init_tracing(config: &Config) -> Result<Option<SdkTracerProvider>, BoxError> {
    use std::io::IsTerminal;
    // Config parsing has already refused a malformed filter.
    let filter = EnvFilter::new(&config.log_level);
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match config.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let provider = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("wagate")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("wagate")));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(filter)
        .try_init()?;
    Ok(provider)
}

/// Calls started, by `grpc_type`, `grpc_service` and `grpc_method` (the
/// names go-grpc-prometheus and its dashboards use).
pub const GRPC_STARTED: &str = "grpc_server_started_total";
/// Calls finished, by the labels above, `grpc_code` and `caller`; a
/// stream when it ends.
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
/// Time from a call's headers to its end, seconds, by type, service,
/// method and code.
pub const GRPC_HANDLING: &str = "grpc_server_handling_seconds";
/// Health and reflection calls finished: probes and tools, not traffic.
pub const GRPC_INFRASTRUCTURE: &str = "wagate_grpc_infrastructure_handled_total";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "wagate_build_info";
/// SendMessage outcomes: `ACCEPTED`, `REPLAYED`, `DRY_RUN` or the refusal reason.
pub const SEND_DECISIONS: &str = "wagate_send_decisions_total";
/// Inbound outcomes (`OPENED`, `DUPLICATE`, ... or the refusal reason), by
/// `source`: `grpc` (RecordInbound) or `webhook`.
pub const INBOUND_OUTCOMES: &str = "wagate_inbound_outcomes_total";
/// Windows open now (recounted at a scrape when [`Recount`] says so).
pub const OPEN_WINDOWS: &str = "wagate_open_windows";
/// Bytes the store occupies on disk.
pub const STORE_BYTES: &str = "wagate_store_size_bytes";
/// Completed sweeps.
pub const SWEEPER_RUNS: &str = "wagate_sweeper_runs_total";
/// Records removed by the sweeper, by kind.
pub const SWEPT_ITEMS: &str = "wagate_swept_items_total";
/// Writes made durable by one group-commit flush.
pub const GROUP_COMMIT_BATCH: &str = "wagate_group_commit_batch_size";
/// Counter: database transactions run again, labelled by `cause`
/// (serialization, deadlock, unique, failover, connection).
pub const STORE_RETRIES: &str = "wagate_store_transaction_retries_total";
pub const TEMPLATE_SYNCS: &str = "wagate_template_syncs_total";
/// Gauges of the database connection pool: connections open, idle, and
/// callers waiting for one.
pub const POOL_CONNECTIONS: &str = "wagate_store_pool_connections";
pub const POOL_IDLE: &str = "wagate_store_pool_idle_connections";
pub const POOL_WAITING: &str = "wagate_store_pool_waiting";
/// Histogram: GetWindow reads answered by one gathered read of the
/// database (PostgreSQL, under load; one statement pair per 256 reads; see
/// `store::postgres::window_reads`).
pub const READS_GATHERED: &str = "wagate_store_window_reads_gathered";
/// Gauge: 1 while the store answers its health check, 0 while it does not.
pub const STORE_UP: &str = "wagate_store_up";
/// Failed writes of the store's log, by cause (`disk_full`, `io`, `apply`).
pub const STORE_WRITE_FAILURES: &str = "wagate_store_write_failures_total";
/// Connections open now, by listener (`grpc`, `webhook`).
pub const OPEN_CONNECTIONS: &str = "wagate_open_connections";
/// Connections closed at once because the listener had too many open.
pub const CONNECTIONS_REFUSED: &str = "wagate_connections_refused_total";
/// Cloud API delivery attempts by outcome.
pub const DELIVERIES: &str = "wagate_deliveries_total";
/// WatchWindows streams open now.
pub const WINDOW_WATCHERS: &str = "wagate_window_watchers";
/// Window events handed to watchers, by type.
pub const WINDOW_EVENTS_SENT: &str = "wagate_window_events_sent_total";
/// Window events read for a watcher and not handed to it because it was
/// ended for lag (it reads them again when it resumes).
pub const WINDOW_EVENTS_DROPPED: &str = "wagate_window_events_dropped_total";
/// Webhook events by kind and whether they were acted on.
pub const WEBHOOK_EVENTS: &str = "wagate_webhook_events_total";

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide metrics recorder. Call once, before anything records.
pub fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(GRPC_HANDLING.to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_BATCH.to_owned()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(READS_GATHERED.to_owned()), BATCH_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(GRPC_STARTED, "gRPC calls started on the server");
    metrics::describe_counter!(
        GRPC_HANDLED,
        "gRPC calls completed on the server, regardless of success or failure"
    );
    metrics::describe_histogram!(
        GRPC_HANDLING,
        metrics::Unit::Seconds,
        "time to complete a gRPC call on the server"
    );
    metrics::describe_counter!(
        GRPC_INFRASTRUCTURE,
        "health and reflection calls completed (kept apart from traffic)"
    );
    metrics::describe_gauge!(BUILD_INFO, "wagate's version; always 1");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::describe_counter!(
        SEND_DECISIONS,
        "SendMessage decisions by outcome or refusal reason"
    );
    metrics::describe_counter!(INBOUND_OUTCOMES, "RecordInbound outcomes");
    metrics::describe_gauge!(
        OPEN_WINDOWS,
        "customer service windows open, as of the last count (counts are 15 s or more apart, further on a large store)"
    );
    metrics::describe_gauge!(STORE_BYTES, metrics::Unit::Bytes, "store size on disk");
    metrics::describe_counter!(SWEEPER_RUNS, "completed sweeps");
    metrics::describe_gauge!(OPEN_CONNECTIONS, "connections open now, by listener");
    metrics::describe_gauge!(STORE_UP, "1 while the store can take writes, else 0");
    metrics::describe_counter!(STORE_RETRIES, "database transactions run again, by cause");
    metrics::describe_counter!(
        TEMPLATE_SYNCS,
        "template syncs from the Graph API, by account and outcome (ok, failed)"
    );
    metrics::describe_gauge!(POOL_CONNECTIONS, "database connections open");
    metrics::describe_gauge!(POOL_IDLE, "database connections idle");
    metrics::describe_gauge!(POOL_WAITING, "callers waiting for a database connection");
    metrics::describe_histogram!(
        READS_GATHERED,
        "GetWindow reads answered by one gathered database read"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "connections closed at once because the listener had too many open"
    );
    metrics::describe_counter!(
        STORE_WRITE_FAILURES,
        "failed writes of the store's log, by cause"
    );
    metrics::describe_counter!(SWEPT_ITEMS, "records removed by the sweeper");
    metrics::describe_gauge!(WINDOW_WATCHERS, "WatchWindows streams open now");
    metrics::describe_counter!(
        WINDOW_EVENTS_SENT,
        "window events sent to watchers, by type"
    );
    metrics::describe_counter!(
        WINDOW_EVENTS_DROPPED,
        "window events not sent because their watcher was ended for lag"
    );
    metrics::describe_histogram!(GROUP_COMMIT_BATCH, "writes made durable per flush");
    metrics::describe_counter!(DELIVERIES, "Cloud API delivery attempts by outcome");
    metrics::describe_counter!(
        WEBHOOK_EVENTS,
        "webhook events by kind and whether they were acted on"
    );
    Ok(handle)
}

/// A template sync of `account` ended `outcome` ("ok" or "failed").
pub fn record_template_sync(account: &str, outcome: &'static str) {
    metrics::counter!(TEMPLATE_SYNCS, "account" => account.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn record_delivery(outcome: &'static str) {
    metrics::counter!(DELIVERIES, "outcome" => outcome).increment(1);
}

/// What became of a webhook event, the `handled` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Acted on.
    Yes,
    /// Seen and not acted on (not understood, refused, or not for us).
    No,
    /// Delivered again by Meta and already acted on: not counted twice.
    Duplicate,
}

/// `event` must come from a bounded set: see `domain::cloud_api`.
pub fn record_webhook(event: &str, handled: Handled) {
    let handled = match handled {
        Handled::Yes => "true",
        Handled::No => "false",
        Handled::Duplicate => "duplicate",
    };
    metrics::counter!(WEBHOOK_EVENTS, "event" => event.to_owned(), "handled" => handled)
        .increment(1);
}

/// A RecordInbound outcome (or refusal reason), from a gRPC call or a
/// webhook (`source`), so every inbound is counted in one family.
pub fn record_inbound(source: &'static str, outcome: String) {
    metrics::counter!(INBOUND_OUTCOMES, "outcome" => outcome, "source" => source).increment(1);
}

/// What a call's metrics are labelled with.
#[derive(Debug, Clone)]
pub struct CallLabels {
    /// `unary`, `server_stream`, `client_stream`, `bidi_stream`.
    pub grpc_type: &'static str,
    /// Shared with every call of the method: cloning one is a count.
    pub service: metrics::SharedString,
    pub method: metrics::SharedString,
    /// Health or reflection: counted apart from traffic.
    pub infrastructure: bool,
    pub caller: String,
    /// The method's series, shared by its calls.
    pub series: Arc<CallSeries>,
}

/// How many gRPC codes there are (`OK` is 0, `UNAUTHENTICATED` 16).
const CODES: usize = 17;

/// The metric handles of one method's calls, each registered at its first
/// use. Looking a series up in the registry at every call (its labels
/// built, hashed and compared) cost about 3% of wagate's CPU under load
/// (BENCHMARKS.md); a handle reaches its series directly. The recorder
/// never drops a series (no idle timeout), so a handle stays good.
#[derive(Default)]
pub struct CallSeries {
    started: OnceLock<metrics::Counter>,
    /// By code.
    handling: [OnceLock<metrics::Histogram>; CODES],
    /// By caller (a configured name, `-` or `unauthenticated`), then code.
    handled: Mutex<HashMap<String, Arc<[OnceLock<metrics::Counter>; CODES]>>>,
}

impl std::fmt::Debug for CallSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSeries").finish_non_exhaustive()
    }
}

impl CallSeries {
    /// The handled counters of `caller`'s calls, by code.
    fn handled_by(&self, caller: &str) -> Arc<[OnceLock<metrics::Counter>; CODES]> {
        let mut by_caller = self
            .handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match by_caller.get(caller) {
            Some(codes) => Arc::clone(codes),
            None => Arc::clone(by_caller.entry(caller.to_owned()).or_default()),
        }
    }
}

pub fn record_started(labels: &CallLabels) {
    if labels.infrastructure {
        return;
    }
    labels
        .series
        .started
        .get_or_init(|| {
            metrics::counter!(
                GRPC_STARTED,
                "grpc_type" => labels.grpc_type,
                "grpc_service" => labels.service.clone(),
                "grpc_method" => labels.method.clone()
            )
        })
        .increment(1);
}

pub fn record_handled(labels: &CallLabels, code: tonic::Code, elapsed: Duration) {
    let name = code_name(code);
    if labels.infrastructure {
        metrics::counter!(
            GRPC_INFRASTRUCTURE,
            "grpc_service" => labels.service.clone(),
            "grpc_method" => labels.method.clone(),
            "grpc_code" => name
        )
        .increment(1);
        return;
    }
    // `code_name` names every code there is, and each is below `CODES`.
    let index = code as usize;
    labels.series.handled_by(&labels.caller)[index]
        .get_or_init(|| {
            metrics::counter!(
                GRPC_HANDLED,
                "grpc_type" => labels.grpc_type,
                "grpc_service" => labels.service.clone(),
                "grpc_method" => labels.method.clone(),
                "grpc_code" => name,
                "caller" => labels.caller.clone()
            )
        })
        .increment(1);
    labels.series.handling[index]
        .get_or_init(|| {
            metrics::histogram!(
                GRPC_HANDLING,
                "grpc_type" => labels.grpc_type,
                "grpc_service" => labels.service.clone(),
                "grpc_method" => labels.method.clone(),
                "grpc_code" => name
            )
        })
        .record(elapsed.as_secs_f64());
}

/// A gRPC code as the spec and every gRPC library spell it: `OK`,
/// `FAILED_PRECONDITION`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// When a gauge that walks the store (the open windows) is counted again.
///
/// Counting walks the open part of the expiry index: 0.3–0.85 s of one core
/// at a million open windows (measured 2026-11-28). Counted at every scrape,
/// two Prometheus servers scraping every 15 s would spend several percent of
/// a core on it, which the durable writes need. So a scrape counts only when
/// the last count began at least [`Recount::AFTER`] ago and at least
/// [`Recount::COST_SHARE`] times as long ago as it took (at most 1% of a
/// core); in between, scrapes report the last count.
#[derive(Debug, Default)]
pub struct Recount {
    /// When the last count began and how long it took.
    last: Option<(std::time::Instant, Duration)>,
}

impl Recount {
    pub const AFTER: Duration = Duration::from_secs(15);
    pub const COST_SHARE: u32 = 100;

    /// Whether a count should begin at `now`; if so, it is taken as begun
    /// (a scrape arriving meanwhile does not start a second one).
    pub fn begin(&mut self, now: std::time::Instant) -> bool {
        let due = self.last.is_none_or(|(began, took)| {
            now.saturating_duration_since(began) >= Self::AFTER.max(took * Self::COST_SHARE)
        });
        if due {
            self.last = Some((now, Duration::ZERO));
        }
        due
    }

    /// The count begun at `began` has ended, `took` later.
    pub fn ended(&mut self, began: std::time::Instant, took: Duration) {
        self.last = Some((began, took));
    }
}

/// Binds the metrics port; the returned future serves `/metrics` until
/// dropped. `refresh` runs (on a blocking thread) before each scrape, for
/// gauges that are read from the store rather than counted as they happen.
pub async fn serve(
    listen: SocketAddr,
    handle: PrometheusHandle,
    refresh: impl Fn() + Clone + Send + Sync + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let drained = handle.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let refresh = refresh.clone();
            async move {
                if let Err(error) = tokio::task::spawn_blocking(refresh).await {
                    tracing::warn!(%error, "refreshing gauges failed");
                }
                handle.run_upkeep();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    // Histogram samples pile up in memory until drained; scrapes drain
    // them, but nothing may be scraping.
    let upkeep = async move {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            ticks.tick().await;
            drained.run_upkeep();
        }
    };
    Ok((address, async move {
        tokio::select! {
            served = axum::serve(listener, app) => served,
            () = upkeep => Ok(()),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_open_windows_are_counted_first_then_at_most_as_often_as_their_cost_allows() {
        let mut recount = Recount::default();
        let start = Instant::now();
        assert!(recount.begin(start), "the first scrape counts");
        assert!(
            !recount.begin(start),
            "a scrape during the count does not count again"
        );
        recount.ended(start, Duration::from_millis(10));
        let cheap_wait = Recount::AFTER;
        assert!(!recount.begin(start + cheap_wait - Duration::from_millis(1)));
        assert!(
            recount.begin(start + cheap_wait),
            "a cheap count repeats after 15 s"
        );

        // A count of a large store waits a hundred times what it took.
        let again = start + cheap_wait;
        recount.ended(again, Duration::from_millis(850));
        assert!(!recount.begin(again + Duration::from_secs(84)));
        assert!(recount.begin(again + Duration::from_secs(85)));
    }

    /// The cached handles count each call under its own labels: the caller
    /// and the code pick the series, as a registry lookup would.
    #[test]
    fn cached_handles_count_each_call_under_its_own_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut labels = CallLabels {
                grpc_type: "unary",
                service: metrics::SharedString::const_str("wagate.v1.Gateway"),
                method: metrics::SharedString::const_str("SendMessage"),
                infrastructure: false,
                caller: "billing".to_owned(),
                series: Arc::default(),
            };
            let mut call = |caller: &str, code| {
                labels.caller = caller.to_owned();
                record_started(&labels);
                record_handled(&labels, code, Duration::from_millis(3));
            };
            call("billing", tonic::Code::Ok);
            call("billing", tonic::Code::Ok);
            call("support", tonic::Code::Ok);
            call("billing", tonic::Code::FailedPrecondition);
        });
        let text = handle.render();
        let method =
            r#"grpc_type="unary",grpc_service="wagate.v1.Gateway",grpc_method="SendMessage""#;
        for (series, value) in [
            (format!("grpc_server_started_total{{{method}}}"), 4),
            (
                format!(r#"grpc_server_handled_total{{{method},grpc_code="OK",caller="billing"}}"#),
                2,
            ),
            (
                format!(r#"grpc_server_handled_total{{{method},grpc_code="OK",caller="support"}}"#),
                1,
            ),
            (
                format!(
                    r#"grpc_server_handled_total{{{method},grpc_code="FAILED_PRECONDITION",caller="billing"}}"#
                ),
                1,
            ),
            (
                format!(r#"grpc_server_handling_seconds_count{{{method},grpc_code="OK"}}"#),
                3,
            ),
        ] {
            assert!(
                text.lines().any(|line| line == format!("{series} {value}")),
                "{series} {value} in:\n{text}"
            );
        }
    }
}
