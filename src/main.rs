use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use wagate::config::{Config, LogFormat};
use wagate::{server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    // Config parsing has already refused a malformed filter.
    let filter = EnvFilter::new(&config.log_level);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let metrics = match telemetry::install() {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "cannot install the metrics recorder");
            return std::process::ExitCode::FAILURE;
        }
    };
    match server::run(config, metrics, server::termination_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wagate failed");
            std::process::ExitCode::FAILURE
        }
    }
}
