//! Follows the `changes` table so that watchers on every replica hear every
//! replica's writes. Each write to a message adds a row in its own
//! transaction; this task polls rows after its cursor and publishes each
//! message's current state, so updates to one message arrive in order.
//!
//! Sequence numbers are taken before commit, so a later number can commit
//! first. A number skipped over is a hole, asked for again on every poll
//! for a while: a transaction that commits late is still heard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::{conn, db_error, message_state, rows};
use crate::store::{MessageState, StoreError};

/// How often the table is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long a hole is asked for before it is taken as a rolled-back write.
const HOLE_PATIENCE: Duration = Duration::from_secs(30);
/// Rows read per poll.
const BATCH: i64 = 1000;

/// The running follower; stops when dropped.
pub struct Feed(tokio::task::JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Feed {
    /// Starts after the newest change: watchers hear what happens from now.
    pub async fn start(
        pool: Pool,
        updates: tokio::sync::broadcast::Sender<MessageState>,
    ) -> Result<Feed, StoreError> {
        let client = conn::checkout(&pool).await?;
        let cursor: i64 = client
            .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])
            .await
            .map_err(db_error("read the change feed"))?
            .get(0);
        drop(client);
        let mut follower = Follower {
            pool,
            updates,
            cursor,
            holes: BTreeMap::new(),
        };
        Ok(Feed(tokio::spawn(async move {
            loop {
                if let Err(error) = follower.poll().await {
                    tracing::warn!(%error, "cannot follow the change feed; retrying");
                }
                tokio::time::sleep(POLL).await;
            }
        })))
    }
}

struct Follower {
    pool: Pool,
    updates: tokio::sync::broadcast::Sender<MessageState>,
    cursor: i64,
    /// Sequence numbers passed over, and since when.
    holes: BTreeMap<i64, Instant>,
}

impl Follower {
    async fn poll(&mut self) -> Result<(), StoreError> {
        let mut client = conn::checkout(&self.pool).await?;
        let holes: Vec<i64> = self.holes.keys().copied().collect();
        let rows = conn::query(
            &client,
            "read the change feed",
            "SELECT seq, message_id, delivery FROM changes WHERE seq > $1 OR seq = ANY($2) \
             ORDER BY seq LIMIT $3",
            &[&self.cursor, &holes, &BATCH],
        )
        .await?;
        let now = Instant::now();
        let mut changed: Vec<(Uuid, Option<serde_json::Value>)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.get(0);
            changed.push((row.get(1), row.get(2)));
            if self.holes.remove(&seq).is_none() && seq > self.cursor {
                for missing in self.cursor + 1..seq {
                    self.holes.insert(missing, now);
                }
                self.cursor = seq;
            }
        }
        self.holes
            .retain(|_, since| now.duration_since(*since) < HOLE_PATIENCE);
        if changed.is_empty() {
            return Ok(());
        }
        let tx = client
            .transaction()
            .await
            .map_err(db_error("read changed messages"))?;
        // The message as stored, with the delivery state of each change in
        // turn: every change is heard, in order, however close together.
        let mut messages = std::collections::HashMap::new();
        for (id, delivery) in changed {
            let message = match messages.entry(id) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let Some(state) = message_state(&tx, id).await? else {
                        continue;
                    };
                    slot.insert(state.message)
                }
            };
            let state = MessageState {
                message: message.clone(),
                delivery: delivery.as_ref().map(rows::delivery_of_json).transpose()?,
            };
            // No watchers is fine.
            let _ = self.updates.send(state);
        }
        tx.commit()
            .await
            .map_err(db_error("read changed messages"))?;
        Ok(())
    }
}
