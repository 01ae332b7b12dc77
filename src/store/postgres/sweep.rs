//! The sweep in PostgreSQL: one transaction removes up to a chunk of each
//! kind of row past its retention (in no particular order), so a large
//! backlog goes in small steps that calls interleave with.

use super::retry::in_transaction;
use super::{PgStore, conn};
use crate::domain::retention::Cutoffs;
use crate::store::{StoreError, SweepCounts, SweepStep};

/// Rows removed per table in one sweep step.
const SWEEP_CHUNK: i64 = 128;

pub(super) async fn sweep_step(
    store: &PgStore,
    cutoffs: &Cutoffs,
) -> Result<SweepStep, StoreError> {
    // Change-feed rows are kept as long as early statuses (24h): far
    // longer than any replica's feed lags.
    let changes_before = cutoffs.early_statuses;
    in_transaction!(store, "sweep", |tx| {
        let mut removed = SweepCounts::default();
        for (count, sql, cutoff) in [
            (
                &mut removed.windows,
                "DELETE FROM windows WHERE (business, customer) IN (SELECT business, customer \
                 FROM windows WHERE expires_at <= $1 LIMIT $2)",
                cutoffs.windows,
            ),
            (
                &mut removed.inbound_ids,
                "DELETE FROM inbound_ids WHERE message_id IN (SELECT message_id \
                 FROM inbound_ids WHERE recorded_at <= $1 LIMIT $2)",
                cutoffs.inbound_ids,
            ),
            (
                &mut removed.idempotency_keys,
                "DELETE FROM idempotency_keys WHERE key IN (SELECT key \
                 FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)",
                cutoffs.idempotency_keys,
            ),
            (
                &mut removed.early_statuses,
                "DELETE FROM early_statuses WHERE wamid IN (SELECT wamid \
                 FROM early_statuses WHERE received_at <= $1 LIMIT $2)",
                cutoffs.early_statuses,
            ),
            (
                &mut removed.window_changes,
                "DELETE FROM window_changes WHERE id IN (SELECT id \
                 FROM window_changes WHERE recorded_at < $1 LIMIT $2)",
                cutoffs.window_changes,
            ),
        ] {
            *count = conn::execute(&tx, "sweep", sql, &[&cutoff, &SWEEP_CHUNK]).await?;
        }
        // Not counted: the change feed, and send rates whose arrival
        // time has passed (they say nothing more; the next send starts
        // afresh, and one row per pair served would pile up otherwise).
        // Nor messaging-limit reaches that no longer count. Each is
        // visited, though, so a step that removed some is followed by
        // another.
        let mut uncounted = 0;
        for (sql, cutoff) in [
            (
                "DELETE FROM changes WHERE seq IN (SELECT seq FROM changes \
                 WHERE changed_at <= $1 LIMIT $2)",
                changes_before,
            ),
            (
                "DELETE FROM send_rate WHERE business IN (SELECT business FROM send_rate \
                 WHERE tat <= $1 LIMIT $2)",
                cutoffs.send_rates,
            ),
            (
                "DELETE FROM limit_reaches WHERE (scope, customer) IN (SELECT scope, \
                 customer FROM limit_reaches WHERE reached_at <= $1 LIMIT $2)",
                cutoffs.reaches,
            ),
        ] {
            uncounted += conn::execute(&tx, "sweep", sql, &[&cutoff, &SWEEP_CHUNK]).await?;
        }
        let visited = uncounted
            + removed.windows
            + removed.inbound_ids
            + removed.idempotency_keys
            + removed.early_statuses
            + removed.window_changes;
        SweepStep {
            removed,
            visited: visited as usize,
        }
    })
}
