//! A transaction whose BEGIN goes out with its first statements and whose
//! COMMIT goes out with its last ones, instead of a round trip each.
//!
//! tokio-postgres's `Transaction` awaits BEGIN before anything else can be
//! sent and commits by consuming itself, so a use case paid four round
//! trips (BEGIN; its reads; its writes; COMMIT) where two carry the same
//! messages in the same order: tokio-postgres sends requests in the order
//! they are first polled, and the server runs them in that order.
//!
//! Order is kept strictly: the requests of a `Tx` go out in the order its
//! statements were first polled, BEGIN ahead of the first (sent by it,
//! [`Connection::take_begin`]) and COMMIT behind the last. A statement not
//! yet prepared on this connection waits for its Parse, and the ones polled
//! after it wait their [`Ticket`]'s turn, so statements written one after
//! another (a row, then one that refers to it) run in that order even when
//! sent together.
//!
//! A `Tx` dropped between BEGIN and COMMIT or ROLLBACK (its call was
//! cancelled) takes its connection out of the pool: closing it rolls the
//! transaction back, and no later call can run inside it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, StatementCache};
use tokio::sync::Notify;
use tokio_postgres::{Client, IsolationLevel};

use super::conn::Connection;
use super::db_error;
use crate::store::StoreError;

pub(super) struct Tx {
    /// `None` only once dropped.
    object: Option<Object>,
    begin: &'static str,
    /// BEGIN has been handed to a statement to send.
    began: AtomicBool,
    /// COMMIT or ROLLBACK has gone out.
    ended: AtomicBool,
    turns: Turns,
}

impl Tx {
    /// A transaction on `object`; nothing is sent until its first statement.
    pub(super) fn new(object: Object, isolation: IsolationLevel) -> Tx {
        let begin = match isolation {
            IsolationLevel::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            IsolationLevel::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            IsolationLevel::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            _ => "BEGIN",
        };
        Tx {
            object: Some(object),
            begin,
            began: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            turns: Turns::default(),
        }
    }

    fn object(&self) -> &Object {
        self.object
            .as_ref()
            .expect("a live transaction has its connection")
    }

    /// Sends COMMIT behind every statement polled before this call, and
    /// waits for the answer. Polled together with the last writes
    /// (see [`pipelined_then_commit`]) it costs no round trip of its own.
    /// A no-op when nothing was sent, or once COMMIT or ROLLBACK went out.
    ///
    /// When a statement before it failed, the server answers this COMMIT
    /// with a rollback, not an error: the caller must check the
    /// statements' results first.
    pub(super) async fn commit(&self) -> Result<(), StoreError> {
        let ticket = self.ticket();
        ticket.turn().await;
        if !self.began.load(Ordering::Acquire) || self.ended.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.client()
            .batch_execute("COMMIT")
            .await
            .map_err(db_error("commit"))
    }

    /// Ends a transaction whose use case failed, keeping the connection
    /// when the server confirms.
    pub(super) async fn rollback(&mut self) {
        if !self.began.load(Ordering::Acquire) || self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.client().batch_execute("ROLLBACK").await.is_err() {
            self.discard();
        }
    }

    /// Closes the connection instead of returning it to the pool.
    fn discard(&mut self) {
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.began.load(Ordering::Acquire) && !self.ended.load(Ordering::Acquire) {
            self.discard();
        }
    }
}

impl Connection for Tx {
    fn client(&self) -> &Client {
        self.object()
    }
    fn statements(&self) -> &StatementCache {
        &self.object().statement_cache
    }
    fn take_begin(&self) -> Option<&'static str> {
        (!self.began.swap(true, Ordering::AcqRel)).then_some(self.begin)
    }
    fn ticket(&self) -> Ticket<'_> {
        self.turns.issue()
    }
    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

/// Who sends next among a transaction's statements.
#[derive(Default)]
struct Turns {
    state: Mutex<TurnState>,
    changed: Notify,
}

impl Turns {
    fn issue(&self) -> Ticket<'_> {
        let mut state = self.state.lock().expect("turns are never poisoned");
        let number = state.issued;
        state.issued += 1;
        Ticket(Some((self, number)))
    }
}

#[derive(Default)]
struct TurnState {
    /// Tickets handed out.
    issued: u64,
    /// The lowest ticket not done: its turn.
    turn: u64,
    /// Tickets done out of order, above `turn`.
    done: BTreeSet<u64>,
}

/// A statement's place in its transaction's order; done when its request
/// has gone out, or when it is dropped unsent (an error, a cancellation).
pub(super) struct Ticket<'a>(Option<(&'a Turns, u64)>);

impl Ticket<'_> {
    /// A ticket whose turn is always now: outside a [`Tx`].
    pub(super) fn now() -> Ticket<'static> {
        Ticket(None)
    }

    /// Waits until every earlier ticket is done.
    pub(super) async fn turn(&self) {
        let Some((turns, number)) = self.0 else {
            return;
        };
        loop {
            let changed = turns.changed.notified();
            if turns.state.lock().expect("turns are never poisoned").turn == number {
                return;
            }
            changed.await;
        }
    }

    /// This statement's request has gone out: the next one's turn.
    pub(super) fn done(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some((turns, number)) = self.0.take() else {
            return;
        };
        let mut state = turns.state.lock().expect("turns are never poisoned");
        state.done.insert(number);
        loop {
            let turn = state.turn;
            if !state.done.remove(&turn) {
                break;
            }
            state.turn += 1;
        }
        drop(state);
        turns.changed.notify_waiters();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `pipelined!(…)` with COMMIT sent right behind: the last step of a use
/// case. Each statement future must send all its requests when first
/// polled (one statement, or several `pipelined!`), never one after
/// awaiting another: that one would go out after COMMIT (`conn::run`
/// refuses it). Its value is the statements' values; their failure comes before
/// COMMIT's, which the server turns into a rollback after a failure.
macro_rules! pipelined_then_commit {
    ($tx:expr, $($statement:expr),+ $(,)?) => {{
        let (written, committed) = tokio::join!(
            async { $crate::store::postgres::conn::pipelined!($($statement),+) },
            $tx.commit(),
        );
        let written = written?;
        committed?;
        written
    }};
}
pub(super) use pipelined_then_commit;

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn each_ticket_waits_for_every_earlier_one_even_if_a_later_one_is_done_first() {
        let turns = Turns::default();
        let (first, second, third) = (turns.issue(), turns.issue(), turns.issue());
        assert!(first.turn().now_or_never().is_some());
        assert!(second.turn().now_or_never().is_none());
        // The second gives up unsent (an error, a cancellation) before the
        // first went out: the third still waits for the first.
        drop(second);
        assert!(third.turn().now_or_never().is_none());
        first.done();
        assert!(third.turn().now_or_never().is_some());
        third.done();
        assert!(turns.issue().turn().now_or_never().is_some());
    }

    #[test]
    fn outside_a_transaction_the_turn_is_now() {
        assert!(Ticket::now().turn().now_or_never().is_some());
    }
}
