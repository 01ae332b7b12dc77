//! The messaging limit in PostgreSQL: `limit_reaches` holds when each
//! customer was last reached in a scope, `limit_usage` each scope's usage
//! buckets. Every new reach rewrites its scope's usage row, so two sends
//! that read the same usage cannot both commit: under REPEATABLE READ the
//! second update of the row fails to serialize and the send runs again on
//! the new count. That is what keeps the limit exact across replicas.

use chrono::{DateTime, Utc};

use super::conn;
use crate::domain::PhoneNumber;
use crate::domain::messaging_limit::{LimitScope, LimitSnapshot, ReachWrite, Usage};
use crate::store::StoreError;

/// The customer's reach and the scope's usage, in one statement.
pub(super) async fn read(
    tx: &impl conn::Connection,
    scope: &LimitScope,
    customer: &PhoneNumber,
) -> Result<LimitSnapshot, StoreError> {
    let row = conn::query_one(
        tx,
        "read a messaging-limit reach",
        "SELECT r.reached_at, u.bucket_starts, u.bucket_counts \
         FROM (SELECT $1::text AS scope) s \
         LEFT JOIN limit_reaches r ON r.scope = s.scope AND r.customer = $2 \
         LEFT JOIN limit_usage u ON u.scope = s.scope",
        &[&scope.as_str(), &customer.as_str()],
    )
    .await?;
    let starts: Option<Vec<i64>> = row.get("bucket_starts");
    let counts: Option<Vec<i32>> = row.get("bucket_counts");
    let usage = match (starts, counts) {
        (None, None) => Usage::default(),
        (Some(starts), Some(counts)) if starts.len() == counts.len() => {
            let buckets = starts
                .into_iter()
                .zip(counts)
                .map(|(start, n)| Ok((start, u32::try_from(n)?)))
                .collect::<Result<Vec<_>, std::num::TryFromIntError>>()
                .map_err(|_| StoreError::corrupt("limit_usage", "a negative bucket count"))?;
            Usage::from_buckets(buckets)
        }
        _ => {
            return Err(StoreError::corrupt(
                "limit_usage",
                "bucket starts and counts differ in length",
            ));
        }
    };
    Ok(LimitSnapshot {
        reached_at: row.get("reached_at"),
        usage,
    })
}

/// Writes a new reach and its scope's usage (sent together).
pub(super) async fn write(
    tx: &impl conn::Connection,
    customer: &PhoneNumber,
    reach: &ReachWrite,
) -> Result<(), StoreError> {
    conn::pipelined!(
        write_reach(tx, &reach.scope, customer, reach.reached_at),
        write_usage(tx, &reach.scope, &reach.usage),
    )?;
    Ok(())
}

pub(super) async fn write_reach(
    tx: &impl conn::Connection,
    scope: &LimitScope,
    customer: &PhoneNumber,
    reached_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    conn::execute(
        tx,
        "record a messaging-limit reach",
        "INSERT INTO limit_reaches (scope, customer, reached_at) VALUES ($1, $2, $3) \
         ON CONFLICT (scope, customer) DO UPDATE SET reached_at = EXCLUDED.reached_at",
        &[&scope.as_str(), &customer.as_str(), &reached_at],
    )
    .await
}

pub(super) async fn write_usage(
    tx: &impl conn::Connection,
    scope: &LimitScope,
    usage: &Usage,
) -> Result<u64, StoreError> {
    let (starts, counts): (Vec<i64>, Vec<i32>) = usage
        .buckets()
        .iter()
        .map(|(start, n)| (*start, i32::try_from(*n).unwrap_or(i32::MAX)))
        .unzip();
    conn::execute(
        tx,
        "count a messaging-limit reach",
        "INSERT INTO limit_usage (scope, bucket_starts, bucket_counts) VALUES ($1, $2, $3) \
         ON CONFLICT (scope) DO UPDATE SET bucket_starts = EXCLUDED.bucket_starts, \
            bucket_counts = EXCLUDED.bucket_counts",
        &[&scope.as_str(), &starts, &counts],
    )
    .await
}
