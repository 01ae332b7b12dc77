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
use tokio_postgres::{Client, Row};

use super::db_error;
use super::tx::Ticket;
use crate::store::StoreError;

/// A connection from the pool, or why none could be had (the pool's error
/// kept as the source, so the retry wrapper sees a lost connection).
pub(super) async fn checkout(
    pool: &deadpool_postgres::Pool,
) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|error| StoreError::unavailable("connect to PostgreSQL", error))
}

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection (or a transaction on one) with its statement cache.
pub(super) trait Connection: Sync {
    fn client(&self) -> &Client;
    fn statements(&self) -> &StatementCache;
    /// The BEGIN the next statement must send ahead of itself, once: for a
    /// transaction that sends BEGIN with its first statements ([`Tx`]).
    fn take_begin(&self) -> Option<&'static str> {
        None
    }
    /// This statement's place among the transaction's requests, taken
    /// when it is first polled: it goes out after every earlier one
    /// ([`Tx`]). Outside such a transaction, its turn is now.
    fn ticket(&self) -> Ticket<'_> {
        Ticket::now()
    }
    /// A transaction whose COMMIT or ROLLBACK went out: a statement now
    /// would run outside it.
    fn ended(&self) -> bool {
        false
    }
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
    fn take_begin(&self) -> Option<&'static str> {
        (**self).take_begin()
    }
    fn ticket(&self) -> Ticket<'_> {
        (**self).ticket()
    }
    fn ended(&self) -> bool {
        (**self).ended()
    }
}

/// Runs one statement: prepared once per connection, sent behind the
/// transaction's BEGIN when it is the first, and in its turn (the order
/// first polled, whatever order the Parses are answered in). The rows it
/// returned and the rows it changed.
async fn run(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<(Vec<Row>, u64), StoreError> {
    if db.ended() {
        // A use case awaited a statement after the one it sent COMMIT
        // behind (`pipelined_then_commit!` takes statements that go out
        // on their first poll).
        debug_assert!(
            false,
            "{context}: a statement after its transaction's COMMIT"
        );
        return Err(StoreError::unavailable(
            context,
            "a statement after its transaction's COMMIT",
        ));
    }
    let ticket = db.ticket();
    let begin = db.take_begin();
    let begin = async {
        match begin {
            Some(begin) => db.client().batch_execute(begin).await,
            None => Ok(()),
        }
    };
    let statement = async {
        let statement = db.statements().prepare(db.client(), sql).await?;
        ticket.turn().await;
        let params = params.iter().map(|p| *p as &dyn ToSql);
        let mut call = std::pin::pin!(db.client().query_raw(&statement, params));
        // The first poll sends the request (tokio-postgres sends in the
        // order first polled).
        let first = futures_util::poll!(call.as_mut());
        ticket.done();
        let stream = match first {
            std::task::Poll::Ready(stream) => stream?,
            std::task::Poll::Pending => call.await?,
        };
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut stream).await? {
            rows.push(row);
        }
        let changed = stream.rows_affected().unwrap_or(0);
        Ok((rows, changed))
    };
    let ((), result) = futures_util::try_join!(begin, statement).map_err(db_error(context))?;
    Ok(result)
}

pub(super) async fn query(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    Ok(run(db, context, sql, params).await?.0)
}

pub(super) async fn query_opt(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let mut rows = query(db, context, sql, params).await?;
    if rows.len() > 1 {
        return Err(StoreError::corrupt(
            context,
            "more than one row where one was expected",
        ));
    }
    Ok(rows.pop())
}

pub(super) async fn query_one(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    query_opt(db, context, sql, params)
        .await?
        .ok_or_else(|| StoreError::corrupt(context, "no row where one was expected"))
}

pub(super) async fn execute(
    db: &impl Connection,
    context: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    Ok(run(db, context, sql, params).await?.1)
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
impl_pipelined!(A, B, C, D, E);
impl_pipelined!(A, B, C, D, E, F);
impl_pipelined!(A, B, C, D, E, F, G);

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
