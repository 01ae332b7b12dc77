//! The sweeper: removes what is past its retention, in paced steps so that
//! requests keep their latency while a large backlog (a million expiries)
//! drains. Safe to run on every replica: each step removes only what is
//! past its cutoff, whoever removes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::domain::retention::Retention;
use crate::store::{Storage, StoreError, SweepCounts};
use crate::telemetry;

/// Time the sweeper rests after each step, as a multiple of the step's own
/// time: it gets at most a quarter of one core, which still removes tens of
/// thousands of records a second, far beyond any real expiry rate.
const REST_PER_WORK: u32 = 3;

/// Removes everything past its retention as of `now`, one step after
/// another, resting `REST_PER_WORK` times each step's time between steps
/// when `paced`.
pub async fn sweep(
    store: &dyn Storage,
    now: DateTime<Utc>,
    retention: &Retention,
    paced: bool,
) -> Result<SweepCounts, StoreError> {
    let cutoffs = retention.cutoffs(now);
    let mut total = SweepCounts::default();
    loop {
        let began = Instant::now();
        let step = store.sweep_step(&cutoffs).await?;
        total += step.removed;
        if step.visited == 0 {
            return Ok(total);
        }
        if paced {
            tokio::time::sleep(began.elapsed() * REST_PER_WORK).await;
        }
    }
}

/// Sweeps every `interval` until the returned handle is aborted.
pub fn spawn_sweeper(
    store: Arc<dyn Storage>,
    retention: Retention,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let swept = sweep(&*store, Utc::now(), &retention, true).await;
            if let Ok(counts) = &swept {
                metrics::counter!(telemetry::SWEEPER_RUNS).increment(1);
                for (kind, count) in [
                    ("window", counts.windows),
                    ("inbound_id", counts.inbound_ids),
                    ("idempotency_key", counts.idempotency_keys),
                    ("early_status", counts.early_statuses),
                    ("window_change", counts.window_changes),
                ] {
                    metrics::counter!(telemetry::SWEPT_ITEMS, "kind" => kind).increment(count);
                }
            }
            match swept {
                Ok(counts) if counts != SweepCounts::default() => {
                    tracing::info!(?counts, took = ?started.elapsed(), "sweep removed expired records");
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "sweep failed"),
            }
        }
    })
}
