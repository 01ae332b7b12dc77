//! Sweeping: drops windows closed longer than the retention, inbound ids,
//! idempotency records and early statuses past their age. Each walks its
//! time index from the oldest entry, never the primary tree, and works in
//! small chunks so requests interleave with a large sweep (the service layer
//! paces the steps).

use chrono::{DateTime, TimeDelta, Utc};
use sled::Transactional;

use super::records::{EarlyStatusRecord, IdempotencyRecord, InboundRecord, WindowRecord, decode};
use super::{SledStore, TxResult, abort, finish, keys};
use crate::domain::retention::Cutoffs;
use crate::store::{StoreError, SweepCounts, SweepStep};

/// Index entries visited per transaction. Small, because a sled
/// transaction holds its global lock and every request waits behind it.
const CHUNK: usize = 128;

impl SledStore {
    /// At most one chunk from each index.
    pub(super) fn sweep_chunks(&self, cutoffs: &Cutoffs) -> Result<SweepStep, StoreError> {
        let t = &*self.trees;
        let (visited_windows, windows) =
            sweep_chunk(&t.window_expiry, &t.windows, cutoffs.windows, |v| {
                Ok(decode::<WindowRecord>(v)?.expires_at_micros())
            })?;
        let (visited_ids, inbound_ids) =
            sweep_chunk(&t.inbound_age, &t.inbound_ids, cutoffs.inbound_ids, |v| {
                Ok(decode::<InboundRecord>(v)?.recorded_at)
            })?;
        let (visited_keys, idempotency_keys) = sweep_chunk(
            &t.idempotency_age,
            &t.idempotency,
            cutoffs.idempotency_keys,
            |v| Ok(decode::<IdempotencyRecord>(v)?.created_at),
        )?;
        let (visited_early, early_statuses) = sweep_chunk(
            &t.early_status_age,
            &t.early_statuses,
            cutoffs.early_statuses,
            |v| Ok(decode::<EarlyStatusRecord>(v)?.received_at),
        )?;
        Ok(SweepStep {
            removed: SweepCounts {
                windows,
                inbound_ids,
                idempotency_keys,
                early_statuses,
            },
            visited: visited_windows + visited_ids + visited_keys + visited_early,
        })
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
                return abort(StoreError::corrupt(
                    "index",
                    "index key shorter than its timestamp",
                ));
            };
            index.remove(entry)?;
            let Some(value) = primary.get(primary_key)? else {
                continue;
            };
            let matches = indexed_micros(&value)
                .map(|micros| keys::instant_of_micros(micros) == instant)
                .or_else(|error| abort(StoreError::corrupt("sweep", error)))?;
            if matches {
                primary.remove(primary_key)?;
                count += 1;
            }
        }
        Ok(count)
    });
    Ok((chunk.len(), finish(result)?))
}
