//! Sweeping: drops windows closed longer than the retention, inbound ids and
//! idempotency records past their age. Each walks its time index from the
//! oldest entry, never the primary tree, and works in small, paced
//! transactions so requests interleave with a large sweep.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sled::Transactional;

use super::records::{EarlyStatusRecord, IdempotencyRecord, InboundRecord, WindowRecord, decode};
use super::{Store, StoreError, TxResult, abort, finish, keys};
use crate::domain::send::IDEMPOTENCY_TTL;
use crate::telemetry;

/// Index entries visited per transaction. Small, because a sled
/// transaction holds its global lock and every request waits behind it.
const CHUNK: usize = 128;

/// Time the sweeper rests after each step, as a multiple of the step's own
/// time: it gets at most a quarter of one core, which still removes tens of
/// thousands of records a second, far beyond any real expiry rate.
const REST_PER_WORK: u32 = 3;

/// How long a status webhook for an unknown wamid waits for its message. A
/// wamid that never arrives was sent by something other than wagate.
const EARLY_STATUS_TTL: TimeDelta = TimeDelta::hours(24);

/// How long swept things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How long a closed window is kept before the pair reads NEVER_OPENED.
    pub closed_windows: TimeDelta,
    /// How long an inbound message id is remembered for dedupe (SPEC: at least 7 days).
    pub inbound_ids: TimeDelta,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            closed_windows: TimeDelta::days(30),
            inbound_ids: TimeDelta::days(7),
        }
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub windows: u64,
    pub inbound_ids: u64,
    pub idempotency_keys: u64,
    pub early_statuses: u64,
}

impl std::ops::AddAssign for SweepCounts {
    fn add_assign(&mut self, other: SweepCounts) {
        self.windows += other.windows;
        self.inbound_ids += other.inbound_ids;
        self.idempotency_keys += other.idempotency_keys;
        self.early_statuses += other.early_statuses;
    }
}

/// One bounded step of a sweep.
struct Step {
    removed: SweepCounts,
    /// Index entries dropped, including stale ones whose record moved on;
    /// zero means the sweep is complete.
    visited: usize,
}

impl Store {
    /// Removes everything past its retention as of `now`, in one go.
    pub fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<SweepCounts, StoreError> {
        let mut total = SweepCounts::default();
        loop {
            let step = self.sweep_step(now, retention)?;
            total += step.removed;
            if step.visited == 0 {
                return Ok(total);
            }
        }
    }

    /// At most one chunk from each index.
    fn sweep_step(&self, now: DateTime<Utc>, retention: &Retention) -> Result<Step, StoreError> {
        let t = &*self.trees;
        let (visited_windows, windows) = sweep_chunk(
            &t.window_expiry,
            &t.windows,
            now - retention.closed_windows,
            |v| Ok(decode::<WindowRecord>(v)?.expires_at_micros()),
        )?;
        let (visited_ids, inbound_ids) = sweep_chunk(
            &t.inbound_age,
            &t.inbound_ids,
            now - retention.inbound_ids,
            |v| Ok(decode::<InboundRecord>(v)?.recorded_at),
        )?;
        let (visited_keys, idempotency_keys) = sweep_chunk(
            &t.idempotency_age,
            &t.idempotency,
            now - IDEMPOTENCY_TTL,
            |v| Ok(decode::<IdempotencyRecord>(v)?.created_at),
        )?;
        let (visited_early, early_statuses) = sweep_chunk(
            &t.early_status_age,
            &t.early_statuses,
            now - EARLY_STATUS_TTL,
            |v| Ok(decode::<EarlyStatusRecord>(v)?.received_at),
        )?;
        Ok(Step {
            removed: SweepCounts {
                windows,
                inbound_ids,
                idempotency_keys,
                early_statuses,
            },
            visited: visited_windows + visited_ids + visited_keys + visited_early,
        })
    }

    /// Sweeps every `interval` until the returned handle is aborted. Each
    /// sweep runs in paced steps so that requests keep their latency while a
    /// large backlog (a million expiries) drains.
    pub fn spawn_sweeper(
        &self,
        retention: Retention,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let started = Instant::now();
                let swept = store.paced_sweep(Utc::now(), retention).await;
                if let Ok(counts) = &swept {
                    metrics::counter!(telemetry::SWEEPER_RUNS).increment(1);
                    for (kind, count) in [
                        ("window", counts.windows),
                        ("inbound_id", counts.inbound_ids),
                        ("idempotency_key", counts.idempotency_keys),
                        ("early_status", counts.early_statuses),
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

    pub(super) async fn paced_sweep(
        &self,
        now: DateTime<Utc>,
        retention: Retention,
    ) -> Result<SweepCounts, StoreError> {
        let mut total = SweepCounts::default();
        loop {
            let began = Instant::now();
            let store = self.clone();
            let step = tokio::task::spawn_blocking(move || store.sweep_step(now, &retention))
                .await
                .map_err(|error| StoreError::Backend(format!("sweep task failed: {error}")))??;
            total += step.removed;
            if step.visited == 0 {
                return Ok(total);
            }
            tokio::time::sleep(began.elapsed() * REST_PER_WORK).await;
        }
    }
}

/// Removes up to [`CHUNK`] index entries at or before `cutoff`, with their
/// primary record when the record's own time still matches the entry (a
/// record that moved on, such as an extended window, keeps its newer index
/// entry). Returns the entries visited and the records removed.
fn sweep_chunk(
    index: &sled::Tree,
    primary: &sled::Tree,
    cutoff: DateTime<Utc>,
    indexed_micros: impl Fn(&[u8]) -> Result<i64, super::records::DecodeError>,
) -> Result<(usize, u64), StoreError> {
    let end = keys::instant(cutoff + TimeDelta::microseconds(1));
    let chunk: Vec<sled::IVec> = index
        .range(..end.as_slice())
        .keys()
        .take(CHUNK)
        .collect::<Result<_, _>>()?;
    if chunk.is_empty() {
        return Ok((0, 0));
    }
    let result = (index, primary).transaction(|(index, primary)| -> TxResult<u64> {
        let mut count = 0;
        for entry in &chunk {
            let Some((instant, primary_key)) = keys::split_timed(entry) else {
                return abort(StoreError::Corrupt {
                    tree: "index",
                    detail: "index key shorter than its timestamp".into(),
                });
            };
            index.remove(entry)?;
            let Some(value) = primary.get(primary_key)? else {
                continue;
            };
            let matches = indexed_micros(&value)
                .map(|micros| keys::instant_of_micros(micros) == instant)
                .or_else(|error| {
                    abort(StoreError::Corrupt {
                        tree: "sweep",
                        detail: error.to_string(),
                    })
                })?;
            if matches {
                primary.remove(primary_key)?;
                count += 1;
            }
        }
        Ok(count)
    });
    Ok((chunk.len(), finish(result)?))
}
