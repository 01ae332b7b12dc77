//! WatchWindows' read loop: a watcher pulls its events from the store's
//! window-change log, from its own position, at its own pace. Nothing is
//! pushed to it, so a slow watcher costs no memory beyond one batch and
//! its stream's buffer, and every replica serves every replica's changes.

use chrono::TimeDelta;

use crate::domain::window_events::{
    self, ChangeOrder, EventKey, LogRead, WatchFilter, WindowEvent,
};
use crate::store::{Storage, StoreError};

/// Rows read from each of the log's orders per batch.
const BATCH: usize = 512;

/// One watcher's place in the event stream.
pub struct Watcher {
    filter: WatchFilter,
    after: EventKey,
}

/// One batch of events and whether the watcher has caught up with the log.
pub struct Batch {
    pub events: Vec<WindowEvent>,
    pub caught_up: bool,
}

impl Watcher {
    /// A watcher after `after`: a resume token's key, or `now` for a new
    /// watch (events from this instant on).
    pub fn new(filter: WatchFilter, after: EventKey) -> Watcher {
        Watcher { filter, after }
    }

    /// The next events in order, up to what the log holds for certain, and
    /// moves past them.
    pub async fn next_batch(&mut self, store: &dyn Storage) -> Result<Batch, StoreError> {
        let horizon = store.changes_settled().await?;
        if horizon < self.after.at {
            return Ok(Batch {
                events: Vec::new(),
                caught_up: true,
            });
        }
        let (recorded_from, point_froms) = window_events::read_from(&self.after, &self.filter);
        let recorded = store
            .window_changes(ChangeOrder::Recorded, recorded_from, horizon, BATCH)
            .await?;
        let mut read = LogRead {
            limit: BATCH,
            recorded,
            by_point: Vec::new(),
        };
        for (lead, from) in self.filter.points().zip(point_froms) {
            let through = horizon + lead.unwrap_or(TimeDelta::zero());
            let rows = store
                .window_changes(ChangeOrder::Expiring, from, through, BATCH)
                .await?;
            read.by_point.push(rows);
        }
        let (mut events, reach) =
            window_events::candidates(&self.after, horizon, &self.filter, &read);
        // Each point's pair's next change, asked in the events' order and
        // so answered in it.
        let asks: Vec<_> = events
            .iter()
            .filter(|event| event.is_point())
            .map(|event| (event.pair.clone(), event.change))
            .collect();
        let mut next = store.next_changes(&asks).await?.into_iter();
        events.retain(|event| !event.is_point() || !event.superseded(next.next().flatten()));
        let caught_up = reach >= EventKey::through(horizon);
        self.after = self.after.max(reach);
        Ok(Batch { events, caught_up })
    }
}
