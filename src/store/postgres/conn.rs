//! Running statements on a pooled connection or in a transaction, each
//! prepared once per connection.
//!
//! A statement sent as text costs tokio-postgres a round trip to prepare
//! it and the server a parse and plan, on every call: more than the
//! statement itself for the short reads and writes wagate makes. So every
//! statement goes through the connection's cache (deadpool's), and a use
//! case sends its independent statements together (tokio-postgres
//! pipelines concurrent calls on one connection, in the order first
//! polled).

use deadpool_postgres::StatementCache;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::db_error;
use crate::store::StoreError;

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection (or a transaction on one) with its statement cache.
pub(super) trait Connection: Sync {
    fn client(&self) -> &Client;
    fn statements(&self) -> &StatementCache;
}

impl Connection for deadpool_postgres::Object {
    fn client(&self) -> &Client {
        self
    }
    fn statements(&self) -> &StatementCache {
        &self.statement_cache
    }
}

impl Connection for deadpool_postgres::Transaction<'_> {
    fn client(&self) -> &Client {
        (**self).client()
    }
    fn statements(&self) -> &StatementCache {
        &self.statement_cache
    }
}

impl<T: Connection> Connection for &T {
    fn client(&self) -> &Client {
        (**self).client()
    }
    fn statements(&self) -> &StatementCache {
        (**self).statements()
    }
}

async fn prepared(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
) -> Result<Statement, StoreError> {
    db.statements()
        .prepare(db.client(), sql)
        .await
        .map_err(db_error(context))
}

pub(super) async fn query(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = prepared(db, context, sql).await?;
    db.client()
        .query(&statement, params)
        .await
        .map_err(db_error(context))
}

pub(super) async fn query_opt(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = prepared(db, context, sql).await?;
    db.client()
        .query_opt(&statement, params)
        .await
        .map_err(db_error(context))
}

pub(super) async fn query_one(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = prepared(db, context, sql).await?;
    db.client()
        .query_one(&statement, params)
        .await
        .map_err(db_error(context))
}

pub(super) async fn execute(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = prepared(db, context, sql).await?;
    db.client()
        .execute(&statement, params)
        .await
        .map_err(db_error(context))
}

/// Sends independent statements of one transaction together and waits for
/// all: `pipelined!(a, b, …)` is `Ok((a, b, …))` when every one succeeded.
macro_rules! pipelined {
    ($($statement:expr),+ $(,)?) => {
        $crate::store::postgres::conn::Pipelined::all_ok(tokio::join!($($statement),+))
    };
}
pub(super) use pipelined;

/// The results of statements sent together, as one result.
pub(super) trait Pipelined {
    type Output;
    fn all_ok(self) -> Result<Self::Output, StoreError>;
}

macro_rules! impl_pipelined {
    ($($value:ident),+) => {
        impl<$($value),+> Pipelined for ($(Result<$value, StoreError>,)+) {
            type Output = ($($value,)+);
            #[allow(non_snake_case)]
            fn all_ok(self) -> Result<Self::Output, StoreError> {
                let ($($value,)+) = self;
                match ($($value,)+) {
                    ($(Ok($value),)+) => Ok(($($value,)+)),
                    ($($value,)+) => Err(cause([$($value.err()),+])),
                }
            }
        }
    };
}
impl_pipelined!(A, B);
impl_pipelined!(A, B, C);
impl_pipelined!(A, B, C, D);

/// Why a batch failed. Once one statement of a transaction fails, the
/// server answers the ones sent after it "current transaction is aborted",
/// which says nothing of why (and is no reason to retry); so the answer is
/// a failure other than that one, whatever order the statements went out
/// in (a statement not yet prepared on the connection goes out later).
fn cause<const N: usize>(errors: [Option<StoreError>; N]) -> StoreError {
    let mut errors: Vec<StoreError> = errors.into_iter().flatten().collect();
    let first = errors
        .iter()
        .position(|error| !is_aborted_transaction(error))
        .unwrap_or(0);
    errors.swap_remove(first)
}

fn is_aborted_transaction(error: &StoreError) -> bool {
    let StoreError::Unavailable { source, .. } = error else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|error| error.code())
        == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
}
