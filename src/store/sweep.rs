//! Sweeping: drops windows closed longer than the retention, inbound ids and
//! idempotency records past their age. Each walks its time index from the
//! oldest entry, never the primary tree, and works in small transactions so
//! requests interleave with a large sweep.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sled::Transactional;

use super::records::{IdempotencyRecord, InboundRecord, WindowRecord, decode};
use super::{Store, StoreError, TxResult, abort, finish, keys};
use crate::domain::send::IDEMPOTENCY_TTL;

/// Entries removed per transaction.
const CHUNK: usize = 512;

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
}

impl Store {
    /// Removes everything past its retention as of `now`.
    pub fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<SweepCounts, StoreError> {
        let t = &*self.trees;
        let windows = sweep_index(
            &t.window_expiry,
            &t.windows,
            now - retention.closed_windows,
            |v| Ok(decode::<WindowRecord>(v)?.expires_at_micros()),
        )?;
        let inbound_ids = sweep_index(
            &t.inbound_age,
            &t.inbound_ids,
            now - retention.inbound_ids,
            |v| Ok(decode::<InboundRecord>(v)?.recorded_at),
        )?;
        let idempotency_keys = sweep_index(
            &t.idempotency_age,
            &t.idempotency,
            now - IDEMPOTENCY_TTL,
            |v| Ok(decode::<IdempotencyRecord>(v)?.created_at),
        )?;
        Ok(SweepCounts {
            windows,
            inbound_ids,
            idempotency_keys,
        })
    }

    /// Sweeps every `interval` until the returned handle is aborted.
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
                let store = store.clone();
                let swept =
                    tokio::task::spawn_blocking(move || store.sweep(Utc::now(), &retention)).await;
                match swept {
                    Ok(Ok(counts)) if counts != SweepCounts::default() => {
                        tracing::info!(?counts, "sweep removed expired records");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(%error, "sweep failed"),
                    Err(error) => tracing::error!(%error, "sweep task failed"),
                }
            }
        })
    }
}

/// Removes index entries at or before `cutoff`, with their primary record
/// when the record's own time still matches the entry (a record that moved
/// on, such as an extended window, keeps its newer index entry).
fn sweep_index(
    index: &sled::Tree,
    primary: &sled::Tree,
    cutoff: DateTime<Utc>,
    indexed_micros: impl Fn(&[u8]) -> Result<i64, super::records::DecodeError>,
) -> Result<u64, StoreError> {
    let end = keys::instant(cutoff + TimeDelta::microseconds(1));
    let mut removed = 0;
    loop {
        let chunk: Vec<sled::IVec> = index
            .range(..end.as_slice())
            .keys()
            .take(CHUNK)
            .collect::<Result<_, _>>()?;
        if chunk.is_empty() {
            return Ok(removed);
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
        removed += finish(result)?;
    }
}
