//! Re-running a use case whose try failed in a way a new try may cure: a
//! serialization failure, a deadlock, a lost connection, a failover, a
//! statement the schema outgrew. Each use case is one transaction of a
//! pure planner's reads and writes, so running all of it again on a fresh
//! snapshot is always safe (see the module comment of `store::postgres`).

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Tries of one use case before its error is answered.
pub(super) const MAX_TRIES: u32 = 24;

/// The retry cause of a prepared statement the schema outgrew.
const STALE_STATEMENT: &str = "stale_statement";

/// Why a failed try may succeed when run again, as a metric label.
pub(super) fn retry_cause(error: &StoreError) -> Option<&'static str> {
    let StoreError::Unavailable { source, .. } = error else {
        return None;
    };
    if let Some(error) = source.downcast_ref::<tokio_postgres::Error>() {
        return match error.code() {
            Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Some("serialization"),
            Some(&SqlState::T_R_DEADLOCK_DETECTED) => Some("deadlock"),
            // Two first writes of one key; the retry reads the winner's.
            Some(&SqlState::UNIQUE_VIOLATION) => Some("unique"),
            Some(&SqlState::ADMIN_SHUTDOWN)
            | Some(&SqlState::CRASH_SHUTDOWN)
            | Some(&SqlState::CANNOT_CONNECT_NOW)
            | Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => Some("failover"),
            // A replica of a newer wagate changed a table under a statement
            // this connection had prepared ("cached plan must not change
            // result type"): prepare again.
            Some(&SqlState::FEATURE_NOT_SUPPORTED)
                if error
                    .as_db_error()
                    .is_some_and(|e| e.message().starts_with("cached plan")) =>
            {
                Some(STALE_STATEMENT)
            }
            Some(_) => None,
            None => Some("connection"),
        };
    }
    source
        .downcast_ref::<deadpool_postgres::PoolError>()
        .map(|_| "connection")
}

/// How long to wait before try `attempt + 1`. Contention (two writers of
/// one row, an index page both touched) is over as soon as the other
/// transaction ends: a short random pause keeps the two apart. A lost
/// connection or a failover takes the database a while: back off.
fn backoff(cause: &str, attempt: u32) -> Duration {
    match cause {
        "serialization" | "deadlock" | "unique" | STALE_STATEMENT => {
            Duration::from_micros(rand::random_range(0..=500 * u64::from(attempt)))
        }
        _ => Duration::from_millis((5u64 << attempt.min(7)).min(500)),
    }
}

/// Counts a retry of `cause` and waits before try `attempt + 1`. A
/// statement the schema outgrew is dropped from every connection's cache
/// first, so the next try prepares it again.
pub(super) async fn before_retry(
    pool: &deadpool_postgres::Pool,
    cause: &'static str,
    attempt: u32,
) {
    metrics::counter!(crate::telemetry::STORE_RETRIES, "cause" => cause).increment(1);
    if cause == STALE_STATEMENT {
        pool.manager().statement_caches.clear();
    }
    tokio::time::sleep(backoff(cause, attempt)).await;
}

/// Runs `$body` in a SERIALIZABLE transaction named `$tx` (or, with
/// `snapshot:` first, a REPEATABLE READ one; see the module comment of
/// `store::postgres`) and commits; re-runs all of it while the failure is
/// one a retry may cure. Paths are absolute: it expands in every module of
/// the store.
macro_rules! in_transaction {
    (snapshot: $store:expr, $context:expr, |$tx:ident| $body:block) => {
        $crate::store::postgres::retry::in_transaction!(
            @run ::tokio_postgres::IsolationLevel::RepeatableRead, $store, $context, |$tx| $body
        )
    };
    ($store:expr, $context:expr, |$tx:ident| $body:block) => {
        $crate::store::postgres::retry::in_transaction!(
            @run ::tokio_postgres::IsolationLevel::Serializable, $store, $context, |$tx| $body
        )
    };
    (@run $isolation:expr, $store:expr, $context:expr, |$tx:ident| $body:block) => {{
        use $crate::store::postgres::retry;
        let mut attempt = 0u32;
        loop {
            let result: Result<_, $crate::store::StoreError> = async {
                let client = $store.client().await?;
                let mut tx = $crate::store::postgres::tx::Tx::new(client, $isolation);
                let outcome: Result<_, $crate::store::StoreError> = async {
                    let $tx = &tx;
                    Ok($body)
                }
                .await;
                match outcome {
                    Ok(value) => {
                        tx.commit().await?;
                        Ok(value)
                    }
                    Err(error) => {
                        tx.rollback().await;
                        Err(error)
                    }
                }
            }
            .await;
            match result {
                Err(error) if attempt + 1 < retry::MAX_TRIES => match retry::retry_cause(&error) {
                    Some(cause) => {
                        attempt += 1;
                        retry::before_retry(&$store.pool, cause, attempt).await;
                    }
                    None => break Err(error),
                },
                other => break other,
            }
        }
    }};
}

pub(super) use in_transaction;
