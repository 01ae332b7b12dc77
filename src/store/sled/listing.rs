//! ListWindows on sled: one scan of the expiry index, which sorts by expiry
//! and then by pair key (`business \0 customer`), the listing order.

use sled::IVec;

use super::export::pair_of;
use super::records::WindowRecord;
use super::{Settled, WINDOWS, keys, packed, read};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{Pair, Window};
use crate::store::StoreError;

impl Settled {
    pub(super) fn list_windows(
        &self,
        query: &WindowQuery,
        after: Option<&WindowCursor>,
        limit: usize,
    ) -> Result<Vec<(Pair, Window)>, StoreError> {
        let mut listed = Vec::new();
        if query.is_empty() || limit == 0 {
            return Ok(listed);
        }
        let from = query.from.map(|from| keys::instant(from).to_vec());
        // Just past the cursor's own entry: keys that extend it sort after it.
        let past_cursor = after.map(|cursor| {
            let mut key = keys::timed(cursor.expires_at, &keys::pair(&cursor.pair));
            key.push(0);
            key
        });
        let start = from
            .into_iter()
            .chain(past_cursor)
            .max()
            .unwrap_or_default();
        let end = query.to.map(keys::instant);
        let entries = packed::from(&self.window_expiry, &start).take_while(|entry| {
            let before_end = |(key, _): &(IVec, IVec)| end.is_none_or(|end| key[..] < end[..]);
            entry.as_ref().map_or(true, before_end)
        });
        for entry in entries {
            let (key, _) = entry?;
            let Some((_, pair_key)) = keys::split_timed(&key) else {
                return Err(StoreError::corrupt(
                    WINDOWS,
                    "an expiry index key too short",
                ));
            };
            // Other businesses' windows are passed over before any decoding.
            if let Some(business) = &query.business {
                let ours = pair_key
                    .strip_prefix(business.as_str().as_bytes())
                    .is_some_and(|rest| rest.first() == Some(&0));
                if !ours {
                    continue;
                }
            }
            let Some(window) = read::<WindowRecord, Window>(WINDOWS, self.windows.get(pair_key)?)?
            else {
                continue;
            };
            // An index entry always names its window's current expiry; one
            // that does not is skipped rather than listed out of order.
            if keys::timed(window.expires_at, pair_key) != key.as_ref() {
                continue;
            }
            let pair = pair_of(pair_key)?;
            if !query.matches(&pair, window.expires_at) {
                continue;
            }
            listed.push((pair, window));
            if listed.len() == limit {
                break;
            }
        }
        Ok(listed)
    }
}
