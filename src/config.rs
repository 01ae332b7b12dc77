//! Configuration by flags and `WAGATE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The minimum SPEC §2 allows for remembering inbound message ids.
const MIN_INBOUND_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// wagate: WhatsApp customer service windows, templates and sends, over gRPC.
#[derive(Debug, Clone, Parser)]
// The last of a repeated flag wins, as wrappers that append flags expect.
#[command(version, about, args_override_self = true)]
pub struct Config {
    /// Address to serve gRPC on; port 0 picks a free port.
    #[arg(long, env = "WAGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory of the embedded sled store (used when no database URL is
    /// given).
    #[arg(long, env = "WAGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// PostgreSQL to keep state in instead of sled, so several replicas can
    /// share it: a libpq-style URL or key=value string; list several hosts
    /// with `target_session_attrs=read-write` to follow a failover. TLS as
    /// libpq's `sslmode` (`require`, `verify-ca`, `verify-full` with
    /// `sslrootcert`).
    #[arg(long, env = "WAGATE_DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<Secret>,

    /// File holding the database URL (a mounted Secret, say).
    #[arg(
        long,
        env = "WAGATE_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// Regions (ISO 3166, comma-separated) whose customers WhatsApp delivers
    /// no MARKETING templates to: such sends are refused up front
    /// (MARKETING_PAUSED_FOR_REGION, 131049). `none` lifts the pause.
    #[arg(long, env = "WAGATE_MARKETING_PAUSED_REGIONS", default_value = "US", value_parser = parse_paused_regions)]
    pub marketing_paused_regions: crate::domain::policy::SendPolicy,

    /// How long MARKETING templates to a customer wait after WhatsApp failed
    /// one with 131049 (doubling on each repeat).
    #[arg(long, env = "WAGATE_MARKETING_BACKOFF", default_value = "1d", value_parser = humantime::parse_duration)]
    pub marketing_backoff: Duration,

    /// The longest such wait.
    #[arg(long, env = "WAGATE_MARKETING_BACKOFF_MAX", default_value = "30d", value_parser = humantime::parse_duration)]
    pub marketing_backoff_max: Duration,

    /// Whole customer messages that opt them out of marketing templates
    /// (any case), comma-separated; `none` for no keywords.
    #[arg(
        long,
        env = "WAGATE_OPT_OUT_KEYWORDS",
        default_value = "STOP,UNSUBSCRIBE,BAJA,ALTO,PARAR,SAIR,ARRET,ARRÊT,STOPP"
    )]
    pub opt_out_keywords: String,

    /// WhatsApp's messaging limit of the business portfolio this deployment
    /// sends for: unique customers reached outside their window in a moving
    /// 24 hours (250, 2000, 10000, 100000 or `unlimited`; any count works,
    /// to keep a share for other senders). Beyond it, templates to new
    /// customers are refused (RESOURCE_EXHAUSTED, MESSAGING_LIMIT_REACHED).
    #[arg(long, env = "WAGATE_MESSAGING_LIMIT", default_value = "unlimited", value_parser = crate::domain::messaging_limit::MessagingLimit::parse)]
    pub messaging_limit: crate::domain::messaging_limit::MessagingLimit,

    /// Connections each replica keeps to PostgreSQL at most.
    #[arg(long, env = "WAGATE_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// How long a closed window is kept before the pair reads NEVER_OPENED.
    #[arg(long, env = "WAGATE_WINDOW_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub window_retention: Duration,

    /// How long inbound message ids are remembered for dedupe (at least 7d).
    #[arg(long, env = "WAGATE_INBOUND_ID_RETENTION", default_value = "7d", value_parser = parse_inbound_id_retention)]
    pub inbound_id_retention: Duration,

    /// How far back a WatchWindows resume token is honoured (at least 24h).
    #[arg(long, env = "WAGATE_WINDOW_EVENT_RETENTION", default_value = "24h", value_parser = parse_window_event_retention)]
    pub window_event_retention: Duration,

    /// How long a WatchWindows stream may leave its buffer full (the
    /// client not reading) before it is ended with WATCH_LAGGED.
    #[arg(long, env = "WAGATE_WATCH_LAG_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub watch_lag_timeout: Duration,

    /// How often the sweeper removes records past their retention.
    #[arg(long, env = "WAGATE_SWEEP_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// On SIGTERM/SIGINT, how long calls in flight may take to finish before
    /// wagate flushes and exits anyway.
    #[arg(long, env = "WAGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// sled page cache size in MiB.
    #[arg(long, env = "WAGATE_CACHE_MB", default_value_t = 128)]
    pub cache_mb: u64,

    /// Log filter, in tracing's EnvFilter syntax (for example "info" or "wagate=debug").
    #[arg(long, env = "WAGATE_LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "WAGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint (e.g. http://otel-collector:4317) to export call
    /// spans to; none by default.
    #[arg(long, env = "WAGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Address of the Prometheus endpoint (`/metrics`, plain HTTP); port 0 picks a free port.
    #[arg(long, env = "WAGATE_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,

    /// PEM certificate chain to serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "WAGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WAGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "WAGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// File of `caller-name:token` lines; when set, every call but health and
    /// reflection needs `authorization: Bearer <token>`.
    #[arg(long, env = "WAGATE_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Calls served at once; beyond it calls are refused at once with
    /// RESOURCE_EXHAUSTED rather than queued.
    #[arg(long, env = "WAGATE_MAX_CONCURRENT_CALLS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,

    /// Streams open at once (WatchMessages, health Watch, reflection), a
    /// budget apart from --max-concurrent-calls, held until each stream
    /// ends; beyond it new streams are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "WAGATE_MAX_CONCURRENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// How long a client has, from its call's headers, to send the request
    /// message; a call waiting for it holds no slot, and is ended after it.
    #[arg(long, env = "WAGATE_REQUEST_MESSAGE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_message_timeout: Duration,

    /// Connections each listener (gRPC, webhook) keeps open at most; beyond
    /// it new ones are closed at once, logged and counted. Lowered to fit
    /// the open files limit.
    #[arg(long, env = "WAGATE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How long a new connection has to finish its TLS handshake and send
    /// the HTTP/2 preface (or, on the webhook port, a request head); it is
    /// closed after that.
    #[arg(long, env = "WAGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "WAGATE_HTTP2_MAX_STREAMS_PER_CONNECTION", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams_per_connection: u32,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "WAGATE_MAX_REQUEST_BYTES", default_value_t = 256 * 1024)]
    pub max_request_bytes: usize,

    /// Longest a call may take; a shorter `grpc-timeout` from the caller wins.
    #[arg(long, env = "WAGATE_CALL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// Interval of HTTP/2 keepalive pings on idle connections.
    #[arg(long, env = "WAGATE_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "WAGATE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// On SIGTERM, how long health reports NOT_SERVING while calls are still
    /// served, so the mesh stops routing here before the listener closes
    /// (SIGINT, from a terminal, skips it).
    #[arg(long, env = "WAGATE_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    #[command(flatten)]
    pub cloud: CloudConfig,
}

/// A credential: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(Secret(value.trim().to_owned()))
}

/// The WhatsApp Cloud API: delivery out, webhooks in. Secrets come from the
/// environment or from files (the `*_FILE` forms), never from logs.
#[derive(Debug, Clone, clap::Args)]
pub struct CloudConfig {
    /// Deliver accepted messages through the Cloud API. Off by default:
    /// wagate then only decides and records.
    #[arg(long = "delivery", env = "WAGATE_DELIVERY", default_value_t = false)]
    pub delivery: bool,

    /// Graph API base URL.
    #[arg(
        long,
        env = "WAGATE_GRAPH_BASE_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub graph_base_url: String,

    /// Graph API version in the request path.
    #[arg(long, env = "WAGATE_GRAPH_API_VERSION", default_value = "v23.0")]
    pub graph_api_version: String,

    /// Clickatell One API base URL, for numbers registered with a
    /// Clickatell integration.
    #[arg(
        long,
        env = "WAGATE_CLICKATELL_BASE_URL",
        default_value = "https://platform.clickatell.com"
    )]
    pub clickatell_base_url: String,

    /// Serve Clickatell's callbacks (`/clickatell/{number}/{status|reply}/{token}`)
    /// on the webhook listener, with or without Meta's webhooks.
    #[arg(long, env = "WAGATE_CLICKATELL_CALLBACKS", default_value_t = false)]
    pub clickatell_callbacks: bool,

    /// Which Cloud API phone number id sends for each business number:
    /// `+15550001111=106540352242922`, comma-separated.
    #[arg(long, env = "WAGATE_PHONE_NUMBER_IDS", value_delimiter = ',', value_parser = parse_phone_number_id)]
    pub phone_number_ids: Vec<(String, String)>,

    /// System-user access token for the Cloud API.
    #[arg(long, env = "WAGATE_ACCESS_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub access_token: Option<Secret>,

    /// File holding the access token.
    #[arg(
        long,
        env = "WAGATE_ACCESS_TOKEN_FILE",
        conflicts_with = "access_token"
    )]
    pub access_token_file: Option<PathBuf>,

    /// Sends per second per business number.
    #[arg(long, env = "WAGATE_DELIVERY_RATE", default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_rate: u32,

    /// WhatsApp's pair rate: one message from a business number to one
    /// customer per this long (beyond the burst); the worker paces each pair
    /// so 131056 does not happen.
    #[arg(long, env = "WAGATE_PAIR_RATE_INTERVAL", default_value = "6s", value_parser = humantime::parse_duration)]
    pub pair_rate_interval: Duration,

    /// Messages to one customer that may go at once before the pair rate
    /// applies.
    #[arg(long, env = "WAGATE_PAIR_RATE_BURST", default_value_t = 45, value_parser = clap::value_parser!(u32).range(1..))]
    pub pair_rate_burst: u32,

    /// Longest a Cloud API call may take before it counts as failed (and is retried).
    #[arg(long, env = "WAGATE_DELIVERY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,

    /// First retry delay; doubles per attempt, with full jitter.
    #[arg(long, env = "WAGATE_DELIVERY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub delivery_backoff: Duration,

    /// Longest retry delay.
    #[arg(long, env = "WAGATE_DELIVERY_BACKOFF_MAX", default_value = "10m", value_parser = humantime::parse_duration)]
    pub delivery_backoff_max: Duration,

    /// How often the templates of every account with credentials are synced
    /// from the Graph API (also once at start); 0s: only on demand.
    #[arg(long, env = "WAGATE_TEMPLATE_SYNC_INTERVAL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub template_sync_interval: Duration,

    /// Attempts before a message is marked FAILED.
    #[arg(long, env = "WAGATE_DELIVERY_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_max_attempts: u32,

    /// Address of the webhook receiver (plain HTTP; put TLS in front). It
    /// runs when an app secret and a verify token are configured, or
    /// Clickatell's callbacks are on.
    #[arg(long, env = "WAGATE_WEBHOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub webhook_listen: SocketAddr,

    /// The Meta app secret that signs webhook bodies (X-Hub-Signature-256).
    #[arg(long, env = "WAGATE_APP_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub app_secret: Option<Secret>,

    /// File holding the app secret.
    #[arg(long, env = "WAGATE_APP_SECRET_FILE", conflicts_with = "app_secret")]
    pub app_secret_file: Option<PathBuf>,

    /// The token Meta echoes in the webhook verification handshake.
    #[arg(long, env = "WAGATE_WEBHOOK_VERIFY_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub webhook_verify_token: Option<Secret>,

    /// File holding the verify token.
    #[arg(
        long,
        env = "WAGATE_WEBHOOK_VERIFY_TOKEN_FILE",
        conflicts_with = "webhook_verify_token"
    )]
    pub webhook_verify_token_file: Option<PathBuf>,
}

fn parse_phone_number_id(value: &str) -> Result<(String, String), String> {
    let (number, id) = value
        .split_once('=')
        .ok_or("expected business_number=phone_number_id")?;
    let number = crate::domain::PhoneNumber::parse(number)
        .map_err(|e| format!("{number}: {}", e.description()))?;
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("phone number id {id:?} must be digits"));
    }
    Ok((number.as_str().to_owned(), id.to_owned()))
}

/// A secret from its value or its file (trailing whitespace trimmed).
pub fn resolve_secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<Secret>, String> {
    if let Some(secret) = value {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    parse_secret(&text)
        .map(Some)
        .map_err(|e| format!("the {what} file {}: {e}", path.display()))
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_paused_regions(value: &str) -> Result<crate::domain::policy::SendPolicy, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return crate::domain::policy::SendPolicy::with_paused_marketing_regions([]);
    }
    crate::domain::policy::SendPolicy::with_paused_marketing_regions(value.split(','))
}

fn parse_window_event_retention(value: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if retention < Duration::from_secs(24 * 3600) {
        return Err("must be at least 24h: a watcher may resume a day later".to_owned());
    }
    Ok(retention)
}

fn parse_inbound_id_retention(value: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if retention < MIN_INBOUND_ID_RETENTION {
        return Err("must be at least 7d: WhatsApp redelivers webhooks for days".to_owned());
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::try_parse_from(["wagate"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.window_retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.inbound_id_retention, MIN_INBOUND_ID_RETENTION);
        assert_eq!(
            config.window_event_retention,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(config.watch_lag_timeout, Duration::from_secs(30));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.metrics_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.tls_cert, None);
        assert_eq!(config.auth_tokens_file, None);
        assert_eq!(config.max_concurrent_calls, 512);
        assert_eq!(config.max_request_bytes, 256 * 1024);
        assert_eq!(config.call_timeout, Duration::from_secs(10));
        assert_eq!(config.max_concurrent_streams, 256);
        assert_eq!(config.request_message_timeout, Duration::from_secs(5));
        assert_eq!(config.http2_max_streams_per_connection, 200);
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.http2_keepalive_timeout, Duration::from_secs(10));
        assert_eq!(config.drain_delay, Duration::from_secs(5));
    }

    #[test]
    fn cloud_api_defaults_to_record_only_and_parses_number_ids() {
        let config = Config::try_parse_from(["wagate"]).unwrap();
        assert!(!config.cloud.delivery);
        assert_eq!(config.cloud.graph_base_url, "https://graph.facebook.com");
        assert_eq!(config.cloud.delivery_rate, 80);
        assert!(config.cloud.app_secret.is_none());
        let config = Config::try_parse_from([
            "wagate",
            "--delivery",
            "--phone-number-ids",
            "+1 555 000 1111=106540352242922,27820000000=2",
            "--access-token",
            "EAAG-secret",
        ])
        .unwrap();
        assert!(config.cloud.delivery);
        assert_eq!(
            config.cloud.phone_number_ids,
            vec![
                ("+15550001111".to_owned(), "106540352242922".to_owned()),
                ("+27820000000".to_owned(), "2".to_owned())
            ]
        );
        assert!(
            !format!("{config:?}").contains("EAAG-secret"),
            "secrets are not printed"
        );
        for bad in ["+15550001111", "+15550001111=abc", "12=1"] {
            assert!(
                Config::try_parse_from(["wagate", "--phone-number-ids", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_come_from_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let secret = resolve_secret(&None, &Some(path), "token")
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose(), "from-a-file");
        let missing = resolve_secret(&None, &Some(dir.path().join("nope")), "token");
        assert!(missing.is_err());
        assert_eq!(resolve_secret(&None, &None, "token"), Ok(None));
    }

    #[test]
    fn tls_needs_both_halves_and_mtls_needs_tls() {
        assert!(Config::try_parse_from(["wagate", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--tls-key", "k.pem"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--tls-client-ca", "ca.pem"]).is_err());
        let config =
            Config::try_parse_from(["wagate", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .unwrap();
        assert_eq!(config.tls_key, Some(PathBuf::from("k.pem")));
        assert!(Config::try_parse_from(["wagate", "--max-concurrent-calls", "0"]).is_err());
        let config =
            Config::try_parse_from(["wagate", "--drain-delay", "0s", "--drain-delay", "2s"])
                .unwrap();
        assert_eq!(config.drain_delay, Duration::from_secs(2));
    }

    #[test]
    fn flags_and_limits() {
        let config = Config::try_parse_from([
            "wagate",
            "--listen",
            "0.0.0.0:9000",
            "--window-retention",
            "2h",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.window_retention, Duration::from_secs(7200));
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(Config::try_parse_from(["wagate", "--inbound-id-retention", "6d"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--window-event-retention", "23h"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--window-retention", "soon"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--log-level", "wagate=debug,info"]).is_ok());
        assert!(Config::try_parse_from(["wagate", "--log-level", "wagate=loud"]).is_err());
    }
}
