use clap::Parser;

use wagate::config::Config;
use wagate::{migrate, server, telemetry};

/// mimalloc rather than glibc's malloc: a call allocates many small, short
/// lived buffers on one worker thread and frees some on another (HTTP/2
/// frames, protobuf messages, sled's copied nodes on the log thread), and
/// glibc's arenas spent ~13% of wagate's CPU in `malloc`, `free` and their
/// consolidation under a load of durable writes (`perf record`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `wagate migrate --from <data-dir> --to <url>`.
async fn migrate() -> std::process::ExitCode {
    let args = migrate::MigrateArgs::parse_from(std::env::args().skip(1));
    match migrate::run(&args).await {
        Ok(counts) => {
            for (kind, count) in counts {
                println!("{count:>10} {kind}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wagate migrate: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return migrate().await;
    }
    let config = Config::parse();
    let traces = match telemetry::init_tracing(&config) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("wagate: cannot set up logging and tracing: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let metrics = match telemetry::install_metrics() {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "cannot install the metrics recorder");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = server::run(config, metrics, server::termination_signal()).await;
    if let Some(traces) = traces {
        // Exports the spans still batched.
        if let Err(error) = traces.shutdown() {
            tracing::warn!(%error, "flushing trace spans failed");
        }
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wagate failed");
            std::process::ExitCode::FAILURE
        }
    }
}
