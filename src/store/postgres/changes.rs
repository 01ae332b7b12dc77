//! The window-change log on PostgreSQL (see `domain::window_events`).
//!
//! A change is stamped with the database's clock by its INSERT, sent with
//! the transaction's last writes just before COMMIT. A change therefore
//! becomes visible very shortly after its stamp; the log counts as settled
//! up to [`SETTLE`] before the database's clock, the time a transaction is
//! given between that INSERT and its COMMIT becoming visible. A commit
//! later than that (a stalled disk, a failover mid-commit) can be missed by
//! a watcher that had already moved past its stamp.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{conn, rows};
use crate::domain::window_events::{ChangeKind, ChangeOrder, ChangePosition, WindowChange};
use crate::domain::{Pair, Window};
use crate::store::StoreError;

/// How long after its stamp a change is taken to be visible.
pub const SETTLE: Duration = Duration::from_secs(1);

const COLUMNS: &str = "id, recorded_at, business, customer, kind, last_inbound_at, expires_at, \
                       free_entry_deadline, free_until";

fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Opened => "opened",
        ChangeKind::Extended => "extended",
    }
}

pub(super) async fn log(
    tx: &impl conn::Connection,
    pair: &Pair,
    kind: ChangeKind,
    w: &Window,
) -> Result<(), StoreError> {
    conn::execute(
        tx,
        "log a window change",
        "INSERT INTO window_changes (business, customer, kind, last_inbound_at, expires_at, \
            free_entry_deadline, free_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &pair.business.as_str(),
            &pair.customer.as_str(),
            &kind_name(kind),
            &w.last_inbound_at,
            &w.expires_at,
            &w.free_entry_deadline,
            &w.free_until,
        ],
    )
    .await?;
    Ok(())
}

fn change(row: &tokio_postgres::Row) -> Result<WindowChange, StoreError> {
    let kind: &str = row.get("kind");
    Ok(WindowChange {
        id: row.get("id"),
        recorded_at: row.get("recorded_at"),
        pair: rows::pair("window_changes", row.get("business"), row.get("customer"))?,
        kind: match kind {
            "opened" => ChangeKind::Opened,
            "extended" => ChangeKind::Extended,
            other => {
                return Err(StoreError::corrupt(
                    "window_changes",
                    format!("unknown kind {other:?}"),
                ));
            }
        },
        window: rows::window(row),
    })
}

pub(super) async fn settled(db: &impl conn::Connection) -> Result<DateTime<Utc>, StoreError> {
    let settle = i64::try_from(SETTLE.as_micros()).unwrap_or(i64::MAX);
    let row = conn::query_one(
        db,
        "read the database clock",
        "SELECT clock_timestamp() - make_interval(secs => $1::bigint / 1000000.0)",
        &[&settle],
    )
    .await?;
    Ok(row.get(0))
}

/// Changes from `from` in `order`, up to `through`.
pub(super) async fn read(
    db: &impl conn::Connection,
    order: ChangeOrder,
    from: ChangePosition,
    through: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<WindowChange>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = match order {
        ChangeOrder::Recorded => format!(
            "SELECT {COLUMNS} FROM window_changes \
             WHERE (recorded_at, id) >= ($1, $2) AND recorded_at <= $3 \
             ORDER BY recorded_at, id LIMIT $4"
        ),
        ChangeOrder::Expiring => format!(
            "SELECT {COLUMNS} FROM window_changes \
             WHERE (expires_at, id) >= ($1, $2) AND expires_at <= $3 \
             ORDER BY expires_at, id LIMIT $4"
        ),
    };
    conn::query(
        db,
        "read window changes",
        &sql,
        &[&from.at, &from.id, &through, &limit],
    )
    .await?
    .iter()
    .map(change)
    .collect()
}

pub(super) async fn next(
    db: &impl conn::Connection,
    changes: &[(Pair, ChangePosition)],
) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let businesses: Vec<&str> = changes.iter().map(|(p, _)| p.business.as_str()).collect();
    let customers: Vec<&str> = changes.iter().map(|(p, _)| p.customer.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = changes.iter().map(|(_, at)| at.at).collect();
    let ids: Vec<i64> = changes.iter().map(|(_, at)| at.id).collect();
    let rows = conn::query(
        db,
        "read window changes",
        "SELECT q.i, n.recorded_at \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[]) \
              WITH ORDINALITY AS q(business, customer, at, id, i) \
         LEFT JOIN LATERAL (SELECT c.recorded_at FROM window_changes c \
             WHERE c.business = q.business AND c.customer = q.customer \
               AND (c.recorded_at, c.id) > (q.at, q.id) \
             ORDER BY c.recorded_at, c.id LIMIT 1) n ON true",
        &[&businesses, &customers, &ats, &ids],
    )
    .await?;
    let mut next = vec![None; changes.len()];
    for row in rows {
        let i: i64 = row.get(0);
        if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| next.get_mut(i)) {
            *slot = row.get(1);
        }
    }
    Ok(next)
}
