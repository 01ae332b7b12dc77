//! Bringing an older directory's layout up to this build's, at start,
//! before the log is replayed (the log's records name entries, not how
//! sled stores them, so they replay into either layout).
//!
//! - 1 → 2: nothing to move; from 2 on the log comes first.
//! - 2 → 3: the windows' expiry index, the age indexes of inbound ids and
//!   idempotency keys and the window-change log's two orders are packed
//!   (see `packed`): each `…/v1` tree's entries move into its `…/v2` tree,
//!   then the `…/v1` tree is dropped. Moving is idempotent, and the old
//!   tree is dropped only once the new one is flushed, so a start cut short
//!   redoes the move.

use sled::IVec;

use super::changes::WINDOW_CHANGES;
use super::packed;
use super::trees::{CHANGE_EXPIRY, IDEMPOTENCY_AGE, INBOUND_AGE, WINDOW_EXPIRY};

/// Entries moved per batch, bounding the memory a large index needs.
const BATCH: usize = 16_384;

/// Packs the trees layout 2 kept an entry a key. Returns how many entries
/// moved.
pub(super) fn pack_time_indexes(db: &sled::Db) -> sled::Result<usize> {
    let names = db.tree_names();
    let mut moved = 0;
    for (old, new) in [
        ("window_expiry/v1", WINDOW_EXPIRY),
        ("inbound_age/v1", INBOUND_AGE),
        ("idempotency_age/v1", IDEMPOTENCY_AGE),
        ("window_changes/v1", WINDOW_CHANGES),
        ("window_change_expiry/v1", CHANGE_EXPIRY),
    ] {
        if !names.iter().any(|name| name == old.as_bytes()) {
            continue;
        }
        let from = db.open_tree(old)?;
        let into = db.open_tree(new)?;
        let mut batch: Vec<(IVec, Option<IVec>)> = Vec::with_capacity(BATCH);
        for entry in from.iter() {
            let (key, value) = entry?;
            batch.push((key, Some(value)));
            if batch.len() == BATCH {
                moved += move_batch(&into, &mut batch)?;
            }
        }
        moved += move_batch(&into, &mut batch)?;
        db.flush()?;
        db.drop_tree(old)?;
    }
    Ok(moved)
}

fn move_batch(into: &sled::Tree, batch: &mut Vec<(IVec, Option<IVec>)>) -> sled::Result<usize> {
    packed::apply(into, batch.iter().map(|(key, value)| (&key[..], value)))?;
    let moved = batch.len();
    batch.clear();
    Ok(moved)
}
