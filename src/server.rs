//! Wiring: open the store, start the sweeper, serve gRPC with health and
//! reflection, and shut down gracefully.

use std::future::Future;
use std::sync::Arc;

use chrono::TimeDelta;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::cloud;
use crate::config::Config;
use crate::domain::retention::Retention;
use crate::domain::send::DeliveryMode;
use crate::grpc::auth::Callers;
use crate::grpc::edge::{EdgeLayer, EdgePolicy};
use crate::grpc::{AccountRegistryService, GatewayService, TemplateRegistryService};
use crate::net::{self, ConnectionLimits, Gatekeeper};
use crate::pb::account_registry_server::AccountRegistryServer;
use crate::pb::gateway_server::GatewayServer;
use crate::pb::template_registry_server::TemplateRegistryServer;
use crate::service::{self, Service};
use crate::store::Storage;
use crate::store::postgres::{self, PgConfig, PgStore};
use crate::store::sled::{SledConfig, SledStore};
use crate::telemetry;

/// The health service name for liveness probes.
pub const LIVENESS: &str = "liveness";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs wagate until `shutdown` resolves; then reports NOT_SERVING for the
/// drain delay while still serving, stops taking new calls, finishes the
/// calls in flight and flushes the store.
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = Stop>,
) -> Result<(), BoxError> {
    let callers = match &config.auth_tokens_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let callers = Callers::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(callers)
        }
        None => None,
    };
    let tls = tls_acceptor(&config)?;
    let limits = connection_limits(&config);
    // Before the first call, not during it: loading libphonenumber's
    // metadata takes long enough to trip callers' deadlines.
    crate::domain::phone::load_metadata();
    let store = open_store(&config).await?;
    let mode = if config.cloud.delivery {
        DeliveryMode::Deliver
    } else {
        DeliveryMode::RecordOnly
    };
    let service = Service::new(store.clone(), mode).with_policy(send_policy(&config)?);
    let retention = Retention {
        closed_windows: TimeDelta::from_std(config.window_retention)?,
        inbound_ids: TimeDelta::from_std(config.inbound_id_retention)?,
        window_events: TimeDelta::from_std(config.window_event_retention)?,
    };
    let watch_limits = crate::grpc::WatchLimits {
        retention: retention.window_events,
        lag_timeout: config.watch_lag_timeout,
    };
    let sweeper = service::spawn_sweeper(store.clone(), retention, config.sweep_interval);
    register_flag_numbers(&config.cloud, &service).await?;
    let syncer = std::sync::Arc::new(cloud::syncer(&config.cloud, &service)?);
    let sync_schedule = (!config.cloud.template_sync_interval.is_zero()).then(|| {
        syncer
            .clone()
            .spawn_schedule(config.cloud.template_sync_interval)
    });
    let cloud = cloud::start(&config.cloud, &service, limits).await?;
    let gauge_store = store.clone();
    let recount = std::sync::Arc::new(std::sync::Mutex::new(telemetry::Recount::default()));
    let (metrics_address, metrics_server) =
        telemetry::serve(config.metrics_listen, metrics, move || {
            refresh_store_gauges(&*gauge_store, &recount)
        })
        .await?;
    let metrics_server = tokio::spawn(metrics_server);
    tracing::info!(%metrics_address, "serving metrics on http://{metrics_address}/metrics");

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Lets grpcurl decode the ErrorInfo and BadRequest details of refusals.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };

    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    health.set_serving::<GatewayServer<GatewayService>>().await;
    health
        .set_serving::<TemplateRegistryServer<TemplateRegistryService>>()
        .await;
    health
        .set_serving::<AccountRegistryServer<AccountRegistryService>>()
        .await;
    // Liveness stays SERVING while the process runs, draining included, so a
    // liveness probe does not restart an instance that is shutting down
    // cleanly; readiness ("" and the API services) goes NOT_SERVING.
    health
        .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
        .await;
    tracing::info!(
        %address,
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        mtls = config.tls_client_ca.is_some(),
        authenticated = callers.is_some(),
        "listening on {address}"
    );

    let readiness = spawn_readiness(store.clone(), health.clone());
    let (drain_started, mut draining_since) = tokio::sync::watch::channel(false);
    let draining = {
        let health = health.clone();
        async move {
            let drain_delay = match shutdown.await {
                Stop::Drain => config.drain_delay,
                Stop::Now => std::time::Duration::ZERO,
            };
            tracing::info!(
                ?drain_delay,
                "shutting down: reporting NOT_SERVING, still serving"
            );
            readiness.abort();
            health
                .set_not_serving::<GatewayServer<GatewayService>>()
                .await;
            health
                .set_not_serving::<TemplateRegistryServer<TemplateRegistryService>>()
                .await;
            health
                .set_not_serving::<AccountRegistryServer<AccountRegistryService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            // Probes and the mesh's endpoint updates need time to route away;
            // calls arriving meanwhile are still served.
            tokio::time::sleep(drain_delay).await;
            tracing::info!("closing the listener: finishing calls in flight");
            let _ = drain_started.send(true);
        }
    };
    let builder = Server::builder()
        .http2_keepalive_interval(Some(config.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout))
        .max_concurrent_streams(config.http2_max_streams_per_connection)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES);
    let serving = builder
        .layer(EdgeLayer::new(EdgePolicy {
            callers,
            max_concurrent_calls: config.max_concurrent_calls as usize,
            max_concurrent_streams: config.max_concurrent_streams as usize,
            call_timeout: config.call_timeout,
            request_message_timeout: config.request_message_timeout,
            max_request_bytes: config.max_request_bytes,
        }))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            GatewayServer::new(GatewayService::new(
                service.clone(),
                watch_limits,
                draining_since.clone(),
            ))
            .max_decoding_message_size(config.max_request_bytes),
        )
        .add_service(
            TemplateRegistryServer::new(TemplateRegistryService::new(service.clone()))
                .max_decoding_message_size(config.max_request_bytes),
        )
        .add_service(
            AccountRegistryServer::new(AccountRegistryService::new(service.clone(), syncer))
                .max_decoding_message_size(config.max_request_bytes),
        )
        .serve_with_incoming_shutdown(
            net::grpc_incoming(Gatekeeper::new(listener, "grpc", limits), tls),
            draining,
        );
    // A client that never closes its connection must not hold shutdown forever.
    let grace_expired = async {
        let _ = draining_since.wait_for(|started| *started).await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace_expired => {
            tracing::warn!(grace = ?config.shutdown_grace, "calls still in flight after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };

    sweeper.abort();
    if let Some(schedule) = sync_schedule {
        schedule.abort();
    }
    // An attempt cut off here keeps its claim until its lease lapses.
    cloud.stop();
    metrics_server.abort();
    store.flush().await?;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The largest header block a call may send (HTTP/2 SETTINGS): gRPC
/// metadata is small, and a large block costs memory per stream.
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// How often readiness asks the store whether it can serve.
const READINESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps readiness ("" and the API services) NOT_SERVING while the store
/// cannot serve (a database out of reach), so the mesh routes around this
/// replica; liveness is left alone: a restart would not bring the
/// database back.
fn spawn_readiness(
    store: Arc<dyn Storage>,
    health: tonic_health::server::HealthReporter,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut up = true;
        // The first tick is at once, so the first scrape already carries
        // `wagate_store_up`.
        let mut checks = tokio::time::interval(READINESS_CHECK);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            checks.tick().await;
            let check = tokio::time::timeout(READINESS_CHECK * 3, store.check()).await;
            let now_up = matches!(check, Ok(Ok(())));
            metrics::gauge!(telemetry::STORE_UP).set(if now_up { 1.0 } else { 0.0 });
            if now_up == up {
                continue;
            }
            up = now_up;
            let status = if up {
                tracing::info!("the store answers again: ready");
                tonic_health::ServingStatus::Serving
            } else {
                match check {
                    Ok(Err(error)) => tracing::warn!(%error, "the store cannot serve: not ready"),
                    _ => tracing::warn!("the store does not answer: not ready"),
                }
                tonic_health::ServingStatus::NotServing
            };
            for service in [
                "",
                "wagate.v1.Gateway",
                "wagate.v1.TemplateRegistry",
                "wagate.v1.AccountRegistry",
            ] {
                health.set_service_status(service, status).await;
            }
        }
    })
}

/// PostgreSQL when a database URL is given, else sled on the data dir.
async fn open_store(config: &Config) -> Result<Arc<dyn Storage>, BoxError> {
    let database_url = crate::config::resolve_secret(
        &config.database_url,
        &config.database_url_file,
        "database URL",
    )?;
    Ok(match &database_url {
        Some(url) => {
            let store = PgStore::connect(&PgConfig {
                url: url.expose().to_owned(),
                pool_size: config.database_pool_size,
            })
            .await
            .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
            tracing::info!(
                schema = postgres::SCHEMA_VERSION,
                "state is kept in PostgreSQL"
            );
            Arc::new(store)
        }
        None => Arc::new(
            SledStore::open(&SledConfig {
                path: config.data_dir.clone(),
                cache_capacity_bytes: config.cache_mb << 20,
            })
            .map_err(|e| {
                format!(
                    "cannot open the sled store in {}: {e}",
                    config.data_dir.display()
                )
            })?,
        ),
    })
}

fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, BoxError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let ca = config.tls_client_ca.as_deref().map(read).transpose()?;
    Ok(Some(net::tls_acceptor(
        &read(cert)?,
        &read(key)?,
        ca.as_deref(),
    )?))
}

/// Room kept in the open files limit for everything but connections: the
/// store's files, the log, the metrics port, outgoing HTTP.
const RESERVED_FILES: u64 = 256;

/// The configured limits, with the connection cap lowered where the open
/// files limit (raised to its hard limit first) would be reached before it.
fn connection_limits(config: &Config) -> ConnectionLimits {
    let files = net::raise_open_files_limit();
    let mut max_connections = config.max_connections as usize;
    if let Some(files) = files {
        // Two listeners share the descriptors.
        let fits = (files.saturating_sub(RESERVED_FILES) / 2).max(1) as usize;
        if fits < max_connections {
            // Expected wherever the limit is modest; not a fault.
            tracing::info!(
                configured = max_connections,
                open_files_limit = files,
                max_connections = fits,
                "connection cap lowered to fit the open files limit"
            );
            max_connections = fits;
        }
    }
    ConnectionLimits {
        max_connections,
        handshake_timeout: config.handshake_timeout,
    }
}

/// `--phone-number-ids` as it worked before accounts: its numbers are
/// registered in the default account at start, so today's deployments need
/// no change. What an operator registered through the API since wins.
async fn register_flag_numbers(
    config: &crate::config::CloudConfig,
    service: &Service,
) -> Result<(), BoxError> {
    if config.phone_number_ids.is_empty() {
        return Ok(());
    }
    let numbers = config
        .phone_number_ids
        .iter()
        .map(|(number, id)| {
            Ok((
                crate::domain::PhoneNumber::parse(number)?,
                crate::domain::account::PhoneNumberId::parse(id)?,
            ))
        })
        .collect::<Result<Vec<_>, crate::domain::Rejection>>()?;
    let refused = service
        .bootstrap_numbers(&numbers, config.delivery, chrono::Utc::now())
        .await?;
    for rejection in &refused {
        tracing::warn!(
            reason = rejection.reason.as_str(),
            "--phone-number-ids: {}; the registry's entry stays",
            rejection.description()
        );
    }
    tracing::info!(
        numbers = numbers.len() - refused.len(),
        "--phone-number-ids registered in the default account"
    );
    Ok(())
}

/// Sets the gauges read at scrape time: the process's (CPU, memory, open
/// files), and the store's: open windows (a walk of the open part of the
/// expiry index, so only as often as `recount` allows) and size on disk.
/// Runs on a blocking thread.
fn refresh_store_gauges(store: &dyn Storage, recount: &std::sync::Mutex<telemetry::Recount>) {
    // process_cpu_seconds_total, process_resident_memory_bytes,
    // process_open_fds, ...: the process collector's standard names.
    static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
        std::sync::LazyLock::new(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        });
    PROCESS.collect();
    let began = std::time::Instant::now();
    let count = recount
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .begin(began);
    tokio::runtime::Handle::current().block_on(async {
        if count {
            match store.open_windows(chrono::Utc::now()).await {
                Ok(open) => metrics::gauge!(telemetry::OPEN_WINDOWS).set(open as f64),
                Err(error) => tracing::warn!(%error, "cannot count open windows"),
            }
            recount
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .ended(began, began.elapsed());
        }
        if let Some(pool) = store.pool() {
            metrics::gauge!(telemetry::POOL_CONNECTIONS).set(pool.size as f64);
            metrics::gauge!(telemetry::POOL_IDLE).set(pool.available as f64);
            metrics::gauge!(telemetry::POOL_WAITING).set(pool.waiting as f64);
        }
        match store.size_on_disk().await {
            Ok(Some(bytes)) => metrics::gauge!(telemetry::STORE_BYTES).set(bytes as f64),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot read the store size"),
        }
    });
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An orchestrator asked (SIGTERM): report NOT_SERVING for the drain
    /// delay first, so traffic moves away before the listener closes.
    Drain,
    /// Someone at a terminal asked (SIGINT): nothing routes here through a
    /// mesh, so skip the drain delay; calls in flight still finish.
    Now,
}

/// Listens for SIGTERM and SIGINT from the moment it is called (so a signal
/// that arrives while wagate starts up is not lost to the default handler);
/// the future resolves on the first.
pub fn termination_signal() -> impl Future<Output = Stop> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .map_err(|error| tracing::error!(%error, "cannot listen for {name}"))
                .ok()
        };
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        let interrupt = listen(SignalKind::interrupt(), "SIGINT");
        async move {
            let next = |listener: Option<tokio::signal::unix::Signal>| async move {
                match listener {
                    Some(mut listener) => {
                        listener.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = next(interrupt) => Stop::Now,
                () = next(terminate) => Stop::Drain,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        Stop::Now
    }
}

/// The after-the-fact rules sends are checked against, as configured.
fn send_policy(config: &Config) -> Result<crate::domain::policy::SendPolicy, BoxError> {
    let mut policy = config
        .marketing_paused_regions
        .clone()
        .with_messaging_limit(config.messaging_limit);
    policy.marketing_backoff = crate::domain::consent::MarketingBackoff {
        base: TimeDelta::from_std(config.marketing_backoff)?,
        cap: TimeDelta::from_std(config.marketing_backoff_max)?,
    };
    policy.opt_out_keywords = if config.opt_out_keywords.trim().eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        config
            .opt_out_keywords
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    };
    Ok(policy)
}
