//! Listing windows in PostgreSQL (ListWindows, in expiry order with a
//! cursor) and counting the open ones (the open-windows gauge).

use chrono::{DateTime, Utc};

use super::{PgStore, conn, rows};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{Pair, PhoneNumber, Window};
use crate::store::StoreError;

pub(super) async fn list_windows(
    store: &PgStore,
    query: &WindowQuery,
    after: Option<&WindowCursor>,
    limit: usize,
) -> Result<Vec<(Pair, Window)>, StoreError> {
    if query.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let business = query.business.as_ref().map(PhoneNumber::as_str);
    let cursor_at = after.map(|cursor| cursor.expires_at);
    let cursor_business = after.map(|cursor| cursor.pair.business.as_str());
    let cursor_customer = after.map(|cursor| cursor.pair.customer.as_str());
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Numbers compare byte by byte ("C"), as sled's keys do, whatever
    // the database's collation: both stores list in the same order.
    let rows = conn::query(
        &client,
        "list windows",
        r#"SELECT * FROM windows
           WHERE ($1::timestamptz IS NULL OR expires_at >= $1)
             AND ($2::timestamptz IS NULL OR expires_at < $2)
             AND ($3::text IS NULL OR business = $3)
             AND ($4::timestamptz IS NULL
                  OR (expires_at, business COLLATE "C", customer COLLATE "C")
                     > ($4, $5::text COLLATE "C", $6::text COLLATE "C"))
           ORDER BY expires_at, business COLLATE "C", customer COLLATE "C"
           LIMIT $7"#,
        &[
            &query.from,
            &query.to,
            &business,
            &cursor_at,
            &cursor_business,
            &cursor_customer,
            &limit,
        ],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let pair = rows::pair("windows", row.get("business"), row.get("customer"))?;
            Ok((pair, rows::window(row)))
        })
        .collect()
}

pub(super) async fn open_windows(store: &PgStore, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let client = store.client().await?;
    let open: i64 = conn::query_one(
        &client,
        "count open windows",
        "SELECT count(*) FROM windows WHERE expires_at > $1",
        &[&now],
    )
    .await?
    .get(0);
    Ok(open as u64)
}
