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

    /// Directory of the embedded sled store.
    #[arg(long, env = "WAGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// How long a closed window is kept before the pair reads NEVER_OPENED.
    #[arg(long, env = "WAGATE_WINDOW_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub window_retention: Duration,

    /// How long inbound message ids are remembered for dedupe (at least 7d).
    #[arg(long, env = "WAGATE_INBOUND_ID_RETENTION", default_value = "7d", value_parser = parse_inbound_id_retention)]
    pub inbound_id_retention: Duration,

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
    /// served, so the mesh stops routing here before the listener closes.
    #[arg(long, env = "WAGATE_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
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
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.metrics_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.tls_cert, None);
        assert_eq!(config.auth_tokens_file, None);
        assert_eq!(config.max_concurrent_calls, 512);
        assert_eq!(config.max_request_bytes, 256 * 1024);
        assert_eq!(config.call_timeout, Duration::from_secs(10));
        assert_eq!(config.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.http2_keepalive_timeout, Duration::from_secs(10));
        assert_eq!(config.drain_delay, Duration::from_secs(5));
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
        assert!(Config::try_parse_from(["wagate", "--window-retention", "soon"]).is_err());
        assert!(Config::try_parse_from(["wagate", "--log-level", "wagate=debug,info"]).is_ok());
        assert!(Config::try_parse_from(["wagate", "--log-level", "wagate=loud"]).is_err());
    }
}
