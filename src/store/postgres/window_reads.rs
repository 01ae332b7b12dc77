//! GetWindow's reads, gathered under load.
//!
//! A GetWindow costs PostgreSQL two statements (window and consent) and a
//! wake-up of a backend process, which on a box shared with the callers is
//! most of the call's cost: at 256 streams one replica answered ~15k/s
//! where the no-op server answers ~75k/s (BENCHMARKS.md). So while a few
//! reads are running on their own connections, a new read joins a queue
//! instead, and one task answers everything queued with one pair of
//! statements over `unnest` of the pairs. At most [`GATHERERS`] such tasks
//! run at once: whatever arrives while one runs waits for the next, so the
//! busier the replica, the more each statement answers.
//!
//! Replicas still agree at once: a queued read is answered by statements
//! sent after it was queued, so it sees every write acknowledged before it
//! was asked. One read alone (the quiet case) runs directly, with no hop
//! through a task. Multi-argument `unnest` also runs on CockroachDB and
//! YugabyteDB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, oneshot};

use super::{conn, consent, queries, rows};
use crate::domain::consent::Consent;
use crate::domain::{Pair, Window};
use crate::store::StoreError;

/// A pair's window and consent.
pub(super) type WindowAndConsent = (Option<Window>, Option<Consent>);

/// Reads that run on their own connection at once; past these, reads are
/// gathered. Two keep a quiet replica's reads direct (no task hop) and
/// still leave the pool to the writers.
const DIRECT: usize = 2;
/// Gathered batches in flight at once. One answered the most: at 256
/// streams 38-42k req/s against 26-34k with two and 20-31k with four or
/// eight (`bench/run.sh --backend postgres getwindow`, three runs each),
/// as each batch then takes everything that queued while the last ran.
const GATHERERS: usize = 1;
/// Pairs one statement asks for at most; a longer queue is split.
const MOST_PER_STATEMENT: usize = 256;

/// What the queued reads share.
pub(super) struct WindowReads {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    queue: Mutex<Queue>,
    /// Reads running on their own connection now.
    direct: AtomicUsize,
    gatherers: Semaphore,
    /// Reads answered by a gathered statement, for tests and the curious.
    gathered: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// A gatherer is on its way for what is queued: newcomers just join.
    called: bool,
}

struct Waiter {
    pair: Pair,
    answer: oneshot::Sender<Result<WindowAndConsent, StoreError>>,
}

impl WindowReads {
    pub(super) fn new(pool: Pool) -> WindowReads {
        WindowReads {
            inner: Arc::new(Inner {
                pool,
                queue: Mutex::default(),
                direct: AtomicUsize::new(0),
                gatherers: Semaphore::new(GATHERERS),
                gathered: AtomicU64::new(0),
            }),
        }
    }

    /// How many reads were answered by a gathered statement so far.
    pub(super) fn gathered(&self) -> u64 {
        self.inner.gathered.load(Ordering::Relaxed)
    }

    pub(super) async fn read(&self, pair: &Pair) -> Result<WindowAndConsent, StoreError> {
        let inner = &self.inner;
        if inner.direct.fetch_add(1, Ordering::AcqRel) < DIRECT {
            let _running = Direct(&inner.direct);
            return read_one(&inner.pool, pair).await;
        }
        inner.direct.fetch_sub(1, Ordering::AcqRel);
        let (answer, answered) = oneshot::channel();
        let call = {
            let mut queue = inner.lock();
            queue.waiting.push(Waiter {
                pair: pair.clone(),
                answer,
            });
            !std::mem::replace(&mut queue.called, true)
        };
        if call {
            // A task of its own, so a caller that hangs up (its future
            // dropped) cannot strand the reads queued with it.
            tokio::spawn(gather(inner.clone()));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                "read a window",
                "the gathered read ended without an answer",
            ))
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent at every await-free step; a panic
        // elsewhere while holding it leaves nothing half done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Gives a direct read's place back when it ends (or is dropped).
struct Direct<'a>(&'a AtomicUsize);

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn read_one(pool: &Pool, pair: &Pair) -> Result<WindowAndConsent, StoreError> {
    let client = conn::checkout(pool).await?;
    conn::pipelined!(
        queries::read_window(&client, pair),
        consent::read(&client, pair)
    )
}

/// Waits for a gatherer's turn and a connection (reads keep queueing
/// meanwhile), then answers everything queued.
async fn gather(inner: Arc<Inner>) {
    let _turn = inner.gatherers.acquire().await;
    let client = conn::checkout(&inner.pool).await;
    let waiting = {
        let mut queue = inner.lock();
        queue.called = false;
        std::mem::take(&mut queue.waiting)
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            for waiter in waiting {
                let _ = waiter.answer.send(Err(share(&error)));
            }
            return;
        }
    };
    inner
        .gathered
        .fetch_add(waiting.len() as u64, Ordering::Relaxed);
    metrics::histogram!(crate::telemetry::READS_GATHERED).record(waiting.len() as f64);
    let mut waiting = waiting.into_iter().peekable();
    while waiting.peek().is_some() {
        let chunk: Vec<Waiter> = waiting.by_ref().take(MOST_PER_STATEMENT).collect();
        let pairs: Vec<&Pair> = chunk.iter().map(|w| &w.pair).collect();
        match read_many(&client, &pairs).await {
            Ok((windows, consents)) => {
                for waiter in chunk {
                    let key = key(&waiter.pair);
                    let window = windows.get(&key).cloned();
                    let consent = consents.get(&key).cloned();
                    let _ = waiter.answer.send(Ok((window, consent)));
                }
            }
            Err(error) => {
                // Every waiter gets the failure; none is worth more than
                // its text and kind (the reads are not retried).
                for waiter in chunk {
                    let _ = waiter.answer.send(Err(share(&error)));
                }
            }
        }
    }
}

type Key = (String, String);

fn key(pair: &Pair) -> Key {
    (
        pair.business.as_str().to_owned(),
        pair.customer.as_str().to_owned(),
    )
}

/// The windows and consents of `pairs`, by pair, in two statements sent
/// together.
async fn read_many(
    client: &deadpool_postgres::Object,
    pairs: &[&Pair],
) -> Result<(HashMap<Key, Window>, HashMap<Key, Consent>), StoreError> {
    let businesses: Vec<&str> = pairs.iter().map(|p| p.business.as_str()).collect();
    let customers: Vec<&str> = pairs.iter().map(|p| p.customer.as_str()).collect();
    let params: conn::Params<'_> = &[&businesses, &customers];
    let (windows, consents) = conn::pipelined!(
        conn::query(
            client,
            "read windows",
            "SELECT w.* FROM unnest($1::text[], $2::text[]) AS k(business, customer) \
             JOIN windows w ON w.business = k.business AND w.customer = k.customer",
            params,
        ),
        conn::query(
            client,
            "read consent",
            "SELECT c.* FROM unnest($1::text[], $2::text[]) AS k(business, customer) \
             JOIN consent c ON c.business = k.business AND c.customer = k.customer",
            params,
        ),
    )?;
    let keyed = |row: &tokio_postgres::Row| -> Key { (row.get("business"), row.get("customer")) };
    let windows = windows
        .iter()
        .map(|row| (keyed(row), rows::window(row)))
        .collect();
    let consents = consents
        .iter()
        .map(|row| Ok((keyed(row), consent::from_row(row)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((windows, consents))
}

/// The same failure for another waiter: its kind and text.
fn share(error: &StoreError) -> StoreError {
    match error {
        StoreError::Corrupt { what, detail } => StoreError::Corrupt {
            what,
            detail: detail.clone(),
        },
        other => StoreError::unavailable("read windows", other.to_string()),
    }
}
