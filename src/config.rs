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
#[command(version, about)]
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
