//! Sweeping: drops windows closed longer than the retention, inbound ids,
//! idempotency records and early statuses past their age. Each walks its
//! time index from the oldest entry, never the primary tree, and works in
//! small chunks so requests interleave with a large sweep (the service layer
//! paces the steps).

use chrono::{DateTime, TimeDelta, Utc};

use super::records::{EarlyStatusRecord, IdempotencyRecord, InboundRecord, WindowRecord, decode};
use super::wal::{Tree, Wal};
use super::{Settled, SledStore, Trees, keys};
use crate::domain::retention::Cutoffs;
use crate::store::{StoreError, SweepCounts, SweepStep};

/// Index entries visited per section. Small, because a section holds the
/// log lock and every write waits behind it.
const CHUNK: usize = 128;

impl SledStore {
    /// At most one chunk from each index.
    pub(super) fn sweep_chunks(
        &self,
        t: &Settled,
        cutoffs: &Cutoffs,
    ) -> Result<SweepStep, StoreError> {
        let wal = &*self.wal;
        let (visited_windows, windows) = sweep_chunk(
            wal,
            t,
            Tree::WindowExpiry,
            Tree::Windows,
            cutoffs.windows,
            |v| Ok(decode::<WindowRecord>(v)?.expires_at_micros()),
        )?;
        let (visited_ids, inbound_ids) = sweep_chunk(
            wal,
            t,
            Tree::InboundAge,
            Tree::InboundIds,
            cutoffs.inbound_ids,
            |v| Ok(decode::<InboundRecord>(v)?.recorded_at),
        )?;
        let (visited_keys, idempotency_keys) = sweep_chunk(
            wal,
            t,
            Tree::IdempotencyAge,
            Tree::Idempotency,
            cutoffs.idempotency_keys,
            |v| Ok(decode::<IdempotencyRecord>(v)?.created_at),
        )?;
        let (visited_early, early_statuses) = sweep_chunk(
            wal,
            t,
            Tree::EarlyStatusAge,
            Tree::EarlyStatuses,
            cutoffs.early_statuses,
            |v| Ok(decode::<EarlyStatusRecord>(v)?.received_at),
        )?;
        let (visited_changes, window_changes) = self.sweep_changes(t, cutoffs.window_changes)?;
        // Not counted: reaches that no longer count, and send rates whose
        // arrival time has passed (both say nothing more).
        let (visited_reaches, _) = sweep_chunk(
            wal,
            t,
            Tree::ReachAge,
            Tree::Reaches,
            cutoffs.reaches,
            super::reach::reached_at_micros,
        )?;
        let (visited_rates, _) = sweep_chunk(
            wal,
            t,
            Tree::SendRateAge,
            Tree::SendRates,
            cutoffs.send_rates,
            super::send_rate::tat_micros,
        )?;
        Ok(SweepStep {
            removed: SweepCounts {
                windows,
                inbound_ids,
                idempotency_keys,
                early_statuses,
                window_changes,
            },
            visited: visited_windows
                + visited_ids
                + visited_keys
                + visited_early
                + visited_changes
                + visited_reaches
                + visited_rates,
        })
    }
}

/// Removes up to [`CHUNK`] index entries at or before `cutoff`, with their
/// primary record when the record's own time still matches the entry (a
/// record that moved on, such as an extended window, keeps its newer index
/// entry). Returns the entries visited and the records removed.
///
/// The scan reads sled, which lags the log by at most one group commit: an
/// entry staged since is swept next time, and every entry is checked again
/// inside the section before anything is removed.
fn sweep_chunk(
    wal: &Wal,
    trees: &Trees,
    index: Tree,
    primary: Tree,
    cutoff: DateTime<Utc>,
    indexed_micros: impl Fn(&[u8]) -> Result<i64, super::records::DecodeError>,
) -> Result<(usize, u64), StoreError> {
    let end = keys::instant(cutoff + TimeDelta::microseconds(1));
    let chunk = trees.keys_before(index, &end, CHUNK)?;
    if chunk.is_empty() {
        return Ok((0, 0));
    }
    let mut w = wal.section()?;
    let mut count = 0;
    for entry in &chunk {
        let Some((instant, primary_key)) = keys::split_timed(entry) else {
            return Err(StoreError::corrupt(
                "index",
                "index key shorter than its timestamp",
            ));
        };
        if w.get(index, entry)?.is_none() {
            continue;
        }
        w.remove(index, &**entry);
        let Some(value) = w.get(primary, primary_key)? else {
            continue;
        };
        let matches = indexed_micros(&value)
            .map(|micros| keys::instant_of_micros(micros) == instant)
            .map_err(|error| StoreError::corrupt("sweep", error))?;
        if matches {
            w.remove(primary, primary_key);
            count += 1;
        }
    }
    // The caller waits for the log once all four chunks are staged.
    w.commit();
    Ok((chunk.len(), count))
}
