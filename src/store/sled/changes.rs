//! The window-change log on sled (see `domain::window_events`): three
//! trees written together by the section that records the inbound.
//!
//! - `window_changes/v2`: `recorded_at ++ id` → the change (pair, kind,
//!   window). On sled a change's id is its stamp, unique in the store.
//! - `window_change_expiry/v2`: `expires_at ++ id` → the change's key.
//! - `window_change_pairs/v1`: `pair \0 recorded_at ++ id` → nothing; a
//!   pair's changes in order, to tell whether a state was superseded.
//!
//! The first two are packed up to 64 entries to a sled entry (`packed`): they
//! grow as time goes and are swept, and are read only in key ranges.

use chrono::{DateTime, Utc};
use sled::IVec;

use super::records::{ChangeRecord, decode, encode};
use super::wal::{Section, Tree};
use super::{Settled, SledStore, Trees, keys, packed};
use crate::domain::window_events::{ChangeKind, ChangeOrder, ChangePosition, WindowChange};
use crate::domain::{Pair, Window};
use crate::store::StoreError;

pub const WINDOW_CHANGES: &str = "window_changes/v2";

/// Entries removed per sweep step.
const SWEEP_CHUNK: usize = 128;

/// `at ++ id`: a place in either order, sorting as it.
fn position_key(at_micros: i64, id: i64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&keys::instant_of_micros(at_micros));
    key[8..].copy_from_slice(&keys::instant_of_micros(id));
    key
}

fn position_of(key: &[u8]) -> Result<(i64, i64), StoreError> {
    let bytes: [u8; 16] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(WINDOW_CHANGES, "a key not 16 bytes long"))?;
    let number = |b: &[u8]| {
        let raw = u64::from_be_bytes(b.try_into().unwrap_or_default());
        (raw ^ (1 << 63)) as i64
    };
    Ok((number(&bytes[..8]), number(&bytes[8..])))
}

/// `pair \0`: the prefix of one pair's entries in the pair index.
fn pair_prefix(pair_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(pair_key.len() + 17);
    key.extend_from_slice(pair_key);
    key.push(0);
    key
}

/// Logs that the inbound staged in `w` left `pair`'s window as `window`.
pub(super) fn log(
    w: &mut Section<'_>,
    pair_key: &[u8],
    kind: ChangeKind,
    pair: &Pair,
    window: &Window,
) {
    let stamp = w.stamp();
    let key = position_key(stamp, stamp);
    let mut by_pair = pair_prefix(pair_key);
    by_pair.extend_from_slice(&key);
    w.insert(
        Tree::WindowChanges,
        key.to_vec(),
        encode(&ChangeRecord::new(pair, kind, window)),
    );
    w.insert(
        Tree::ChangeExpiry,
        position_key(window.expires_at.timestamp_micros(), stamp).to_vec(),
        IVec::from(&key[..]),
    );
    w.insert(Tree::ChangePairs, by_pair, IVec::default());
}

/// The latest stamp in the log, so stamps keep rising across restarts.
pub(super) fn last_stamp(trees: &Trees) -> Result<i64, StoreError> {
    match packed::last_key(&trees.window_changes)? {
        Some(key) => Ok(position_of(&key)?.1),
        None => Ok(i64::MIN),
    }
}

fn change(key: &[u8], value: &[u8]) -> Result<WindowChange, StoreError> {
    let (recorded_at, id) = position_of(key)?;
    decode::<ChangeRecord>(value)
        .and_then(|record| record.into_change(recorded_at, id))
        .map_err(|error| StoreError::corrupt(WINDOW_CHANGES, error))
}

impl Settled {
    /// Reads the log itself in record order, or the expiry index (whose
    /// values name the log's keys) in expiry order.
    pub(super) fn window_changes(
        &self,
        order: ChangeOrder,
        from: ChangePosition,
        through: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WindowChange>, StoreError> {
        let start = position_key(from.at.timestamp_micros(), from.id);
        let end = position_key(through.timestamp_micros(), i64::MAX);
        let index = match order {
            ChangeOrder::Recorded => &self.window_changes,
            ChangeOrder::Expiring => &self.change_expiry,
        };
        let mut found = Vec::new();
        let mut log = packed::Lookup::new(&self.window_changes);
        for entry in packed::range(index, &start, &end) {
            let (key, value) = entry?;
            let (key, value) = match order {
                ChangeOrder::Recorded => (key, Some(value)),
                // A change swept between the two reads is simply gone.
                ChangeOrder::Expiring => (value.clone(), log.get(&value)?),
            };
            if let Some(value) = value {
                found.push(change(&key, &value)?);
            }
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    pub(super) fn next_changes(
        &self,
        changes: &[(Pair, ChangePosition)],
    ) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
        changes
            .iter()
            .map(|(pair, position)| {
                let prefix = pair_prefix(&keys::pair(pair));
                let mut start = prefix.clone();
                start.extend_from_slice(&position_key(position.at.timestamp_micros(), position.id));
                let next = self
                    .change_pairs
                    .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
                    .keys()
                    .next()
                    .transpose()?;
                match next {
                    Some(key) if key.starts_with(&prefix) => {
                        let (at, _) = position_of(&key[prefix.len()..])?;
                        Ok(DateTime::from_timestamp_micros(at))
                    }
                    _ => Ok(None),
                }
            })
            .collect()
    }
}

impl SledStore {
    /// Removes up to a chunk of changes recorded before `cutoff`, with
    /// their index entries. Returns the changes visited and removed.
    pub(super) fn sweep_changes(
        &self,
        t: &Settled,
        cutoff: DateTime<Utc>,
    ) -> Result<(usize, u64), StoreError> {
        let end = keys::instant(cutoff);
        let chunk = packed::entries_before(&t.window_changes, &end, SWEEP_CHUNK)?;
        if chunk.is_empty() {
            return Ok((0, 0));
        }
        let mut w = self.wal.section()?;
        for (key, value) in &chunk {
            let change = change(key, value)?;
            let (_, id) = position_of(key)?;
            let mut by_pair = pair_prefix(&keys::pair(&change.pair));
            by_pair.extend_from_slice(key);
            w.remove(Tree::WindowChanges, key.to_vec());
            w.remove(
                Tree::ChangeExpiry,
                position_key(change.window.expires_at.timestamp_micros(), id).to_vec(),
            );
            w.remove(Tree::ChangePairs, by_pair);
        }
        // The caller waits for the log once every chunk is staged.
        w.commit();
        Ok((chunk.len(), chunk.len() as u64))
    }
}
