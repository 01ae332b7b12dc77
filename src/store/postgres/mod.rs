//! The PostgreSQL store: any number of replicas on one database.
//!
//! Every use case is one transaction: read the planner's snapshot, run the
//! planner, write the plan, COMMIT, then answer. A serialization failure, a
//! deadlock or a lost connection re-runs the whole use case on a fresh
//! snapshot (planners are pure), so concurrent replicas agree without locks
//! of our own; re-running after a COMMIT whose outcome was lost finds the
//! idempotency key or inbound id it wrote and answers from it. The SQL
//! sticks to what CockroachDB and YugabyteDB also run.
//!
//! Isolation. Delivery state (claims, outcomes, statuses) and templates run
//! SERIALIZABLE: a status for a wamid not stored yet and the outcome that
//! stores it read what the other writes (write skew), which only
//! serializable isolation catches. RecordInbound and SendMessage, the hot
//! paths, run REPEATABLE READ: each writes every row whose reading decided
//! it (the inbound id and window; the idempotency key, and the window when
//! it changes), so two that collide write one row and the second fails to
//! serialize and re-runs. Write skew would need a transaction that reads
//! what one of them writes and writes what it read without writing it:
//! none does (a template, read by a send, is written by template changes,
//! which read no message, key or window). Serializable isolation would add
//! only false conflicts there: its locks on index pages read empty made
//! RecordInbounds of different new customers collide (1,515 retries in
//! 8,000 calls; BENCHMARKS.md).
//!
//! Only `store::postgres` names PostgreSQL.

mod accounts;
mod changes;
mod conn;
mod consent;
mod feed;
mod import;
mod queries;
mod reach;
mod rows;
mod schema;
mod tls;
mod tx;
mod window_reads;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{
    AttachPlanner, Claim, ConsentLearner, FinishPlanner, LimitScoper, MessageState, Planner,
    PoolStatus, RatePlanner, SendOutcome, StatusPlanner, StatusReport, Storage, StoreError,
    SweepCounts, SweepStep, TemplatePage,
};
use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, NumberSnapshot, NumberWrite, PhoneNumberId,
};
use crate::domain::delivery::{Delivery, StatusPlan, StatusTarget};
use crate::domain::retention::Cutoffs;
use crate::domain::send::{SendPlan, SendSnapshot};
use crate::domain::template::{TemplateFilter, TemplateWrite};
use crate::domain::template_sync::SyncPlan;
use crate::domain::window::{InboundPlan, InboundSnapshot};
use crate::domain::window_events::{ChangeOrder, ChangePosition, WindowChange};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{
    Inbound, InboundMessageId, Pair, PhoneNumber, SendRequest, Template, TemplateId, Window,
};

use queries::{
    MESSAGE_COLUMNS, insert_inbound_id, insert_message, message_state, note_change, put_early,
    put_key, put_template, read_inbound_id, read_template, read_window, send_limit, send_snapshot,
    state_of, write_delivery, write_window,
};

pub use schema::SCHEMA_VERSION;

/// Rows removed per table in one sweep step.
const SWEEP_CHUNK: i64 = 128;
/// Tries of one use case before its error is answered.
const MAX_TRIES: u32 = 24;

#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string; several hosts with
    /// `target_session_attrs=read-write` follow a failover.
    pub url: String,
    pub pool_size: usize,
}

/// Maps a database error to a store error with `context`.
pub(crate) fn db_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::unavailable(context, error)
}

/// The retry cause of a prepared statement the schema outgrew.
const STALE_STATEMENT: &str = "stale_statement";

/// Why a failed try may succeed when run again, as a metric label.
fn retry_cause(error: &StoreError) -> Option<&'static str> {
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

/// Runs `$body` in a SERIALIZABLE transaction named `$tx` (or, with
/// `snapshot:` first, a REPEATABLE READ one; see the module comment) and
/// commits; re-runs all of it while the failure is one a retry may cure.
macro_rules! in_transaction {
    (snapshot: $store:expr, $context:expr, |$tx:ident| $body:block) => {
        in_transaction!(@run IsolationLevel::RepeatableRead, $store, $context, |$tx| $body)
    };
    ($store:expr, $context:expr, |$tx:ident| $body:block) => {
        in_transaction!(@run IsolationLevel::Serializable, $store, $context, |$tx| $body)
    };
    (@run $isolation:expr, $store:expr, $context:expr, |$tx:ident| $body:block) => {{
        let mut attempt = 0u32;
        loop {
            let result: Result<_, StoreError> = async {
                let mut tx = crate::store::postgres::tx::Tx::new($store.client().await?, $isolation);
                let outcome: Result<_, StoreError> = async {
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
                Err(error) if attempt + 1 < MAX_TRIES => match retry_cause(&error) {
                    Some(cause) => {
                        metrics::counter!(crate::telemetry::STORE_RETRIES, "cause" => cause)
                            .increment(1);
                        if cause == STALE_STATEMENT {
                            $store.pool.manager().statement_caches.clear();
                        }
                        attempt += 1;
                        tokio::time::sleep(backoff(cause, attempt)).await;
                    }
                    None => break Err(error),
                },
                other => break other,
            }
        }
    }};
}

/// The schema's migrations, in order (version = index + 1): for tests that
/// build a database as an older release left it.
#[doc(hidden)]
pub fn migrations() -> &'static [&'static str] {
    schema::MIGRATIONS
}

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    updates: tokio::sync::broadcast::Sender<MessageState>,
    /// Taken by retried sends under a messaging limit (see `send`).
    limit_gate: Arc<tokio::sync::Mutex<()>>,
    /// GetWindow's reads, gathered under load.
    window_reads: Arc<window_reads::WindowReads>,
    _feed: Arc<feed::Feed>,
}

impl PgStore {
    /// Connects, applies missing migrations and starts following the
    /// change feed. Fails clearly (nothing written) when the database is
    /// unreachable, refuses the credentials or has a newer schema.
    pub async fn connect(config: &PgConfig) -> Result<PgStore, StoreError> {
        let (url, tls_options) = tls::take_tls_options(&config.url)?;
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|error| StoreError::unavailable("parse the database URL", error))?;
        let manager = Manager::from_config(
            pg,
            tls::connector(&tls_options)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| StoreError::unavailable("build the connection pool", error))?;
        let mut client = conn::checkout(&pool).await?;
        schema::migrate(&mut client).await?;
        let updates = tokio::sync::broadcast::channel(super::UPDATES_BUFFERED).0;
        let feed = feed::Feed::start(pool.clone(), updates.clone()).await?;
        Ok(PgStore {
            window_reads: Arc::new(window_reads::WindowReads::new(pool.clone())),
            pool,
            updates,
            limit_gate: Arc::default(),
            _feed: Arc::new(feed),
        })
    }

    /// How many GetWindow reads were answered by a gathered statement (see
    /// `window_reads`).
    pub fn reads_gathered(&self) -> u64 {
        self.window_reads.gathered()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        conn::checkout(&self.pool).await
    }
}

#[async_trait]
impl Storage for PgStore {
    async fn record_inbound(
        &self,
        pair: &Pair,
        id: &InboundMessageId,
        inbound: &Inbound,
        plan: Planner<'_, InboundSnapshot, InboundPlan>,
    ) -> Result<InboundPlan, StoreError> {
        in_transaction!(snapshot: self, "record an inbound", |tx| {
            let (seen_for, window) =
                conn::pipelined!(read_inbound_id(&tx, id), read_window(&tx, pair))?;
            let plan = plan(&InboundSnapshot { seen_for, window })?;
            tx::pipelined_then_commit!(
                tx,
                async {
                    match plan.remember_at {
                        Some(at) => insert_inbound_id(&tx, id, pair, inbound, at).await,
                        None => Ok(()),
                    }
                },
                async {
                    match &plan.write_window {
                        Some(window) => write_window(&tx, pair, window).await,
                        None => Ok(()),
                    }
                },
                async {
                    match plan.logged_change() {
                        Some((kind, window)) => changes::log(&tx, pair, kind, window).await,
                        None => Ok(()),
                    }
                },
            );
            plan
        })
    }

    async fn window(&self, pair: &Pair) -> Result<Option<Window>, StoreError> {
        let client = self.client().await?;
        read_window(&client, pair).await
    }

    async fn send_snapshot(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
    ) -> Result<SendSnapshot, StoreError> {
        in_transaction!(self, "read for a dry run", |tx| {
            let snapshot = send_snapshot(&tx, request).await?;
            send_limit(&tx, request, snapshot, limit).await?
        })
    }

    async fn send(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
        plan: Planner<'_, SendSnapshot, SendPlan>,
    ) -> Result<SendOutcome, StoreError> {
        // Every new reach of a messaging-limit scope rewrites its usage row,
        // so concurrent ones fail to serialize and run again. A try after
        // such a failure first takes this process's limit gate, before its
        // snapshot: this replica's contenders then take turns instead of
        // failing each other until their tries run out (a burst of a
        // campaign), and only other replicas' can still collide.
        let limited = std::sync::atomic::AtomicBool::new(false);
        in_transaction!(snapshot: self, "send", |tx| {
            let _turn = match limited.load(std::sync::atomic::Ordering::Relaxed) {
                true => Some(self.limit_gate.lock().await),
                false => None,
            };
            let snapshot = send_snapshot(&tx, request).await?;
            let snapshot = send_limit(&tx, request, snapshot, limit).await?;
            if snapshot.limit.is_some() {
                limited.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            match plan(&snapshot)? {
                SendPlan::Replay { message_id } => {
                    let state = message_state(&tx, message_id).await?.ok_or_else(|| {
                        StoreError::corrupt("outbox", "idempotency key names a missing message")
                    })?;
                    SendOutcome::Replayed(state.message)
                }
                SendPlan::Accept(accepted) => {
                    let m = &accepted.message;
                    // In this order: the delivery and the change refer to
                    // the message, and the server runs them as sent.
                    tx::pipelined_then_commit!(
                        tx,
                        insert_message(&tx, m),
                        put_key(&tx, request.idempotency_key.as_str(), &accepted.key),
                        async {
                            match &accepted.window {
                                Some(window) => write_window(&tx, &request.pair, window).await,
                                None => Ok(()),
                            }
                        },
                        async {
                            match &accepted.delivery {
                                Some(delivery) => write_delivery(&tx, m.message_id, delivery).await,
                                None => note_change(&tx, m.message_id, None).await,
                            }
                        },
                        async {
                            match &accepted.reach {
                                Some(r) => reach::write(&tx, &request.pair.customer, r).await,
                                None => Ok(()),
                            }
                        },
                    );
                    SendOutcome::Accepted(m.clone())
                }
            }
        })
    }

    async fn message(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
        in_transaction!(self, "read a message", |tx| {
            message_state(&tx, id).await?
        })
    }

    async fn template(&self, id: &TemplateId) -> Result<Option<Template>, StoreError> {
        in_transaction!(self, "read a template", |tx| {
            read_template(&tx, id).await?
        })
    }

    async fn change_template(
        &self,
        id: &TemplateId,
        plan: Planner<'_, Option<Template>, TemplateWrite>,
    ) -> Result<(Option<Template>, TemplateWrite), StoreError> {
        in_transaction!(self, "change a template", |tx| {
            let existing = read_template(&tx, id).await?;
            let write = plan(&existing)?;
            match &write {
                TemplateWrite::Put(template) => put_template(&tx, template).await?,
                TemplateWrite::Delete => {
                    conn::execute(
                        &tx,
                        "delete a template",
                        "DELETE FROM templates WHERE name = $1 AND language = $2 \
                            AND account = $3",
                        &[&id.name(), &id.language(), &id.account().as_str()],
                    )
                    .await?;
                }
                TemplateWrite::Keep => {}
            }
            (existing, write)
        })
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let client = self.client().await?;
        accounts::read_account(&client, id).await
    }

    async fn sync_templates(
        &self,
        account: &AccountId,
        plan: Planner<'_, Vec<Template>, SyncPlan>,
    ) -> Result<SyncPlan, StoreError> {
        in_transaction!(self, "sync templates", |tx| {
            let stored = conn::query(
                &tx,
                "read an account's templates",
                "SELECT * FROM templates WHERE account = $1",
                &[&account.as_str()],
            )
            .await?
            .iter()
            .map(rows::template)
            .collect::<Result<Vec<_>, _>>()?;
            let written = plan(&stored)?;
            for template in &written.puts {
                put_template(&tx, template).await?;
            }
            written
        })
    }

    async fn change_account(
        &self,
        id: &AccountId,
        plan: Planner<'_, Option<Account>, AccountWrite>,
    ) -> Result<AccountWrite, StoreError> {
        in_transaction!(self, "change an account", |tx| {
            let existing = accounts::read_account(&tx, id).await?;
            let write = plan(&existing)?;
            if let AccountWrite::Put(account) = &write {
                accounts::put_account(&tx, account).await?;
            }
            write
        })
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let client = self.client().await?;
        accounts::list_accounts(&client).await
    }

    async fn register_number(
        &self,
        number: &PhoneNumber,
        phone_number_id: Option<&PhoneNumberId>,
        account: &AccountId,
        plan: Planner<'_, NumberSnapshot, NumberWrite>,
    ) -> Result<NumberWrite, StoreError> {
        in_transaction!(self, "register a business number", |tx| {
            let by_id = async {
                match phone_number_id {
                    Some(id) => accounts::read_number_by_id(&tx, id).await,
                    None => Ok(None),
                }
            };
            let (account, by_number, by_phone_number_id) = conn::pipelined!(
                accounts::read_account(&tx, account),
                accounts::read_number(&tx, number),
                by_id,
            )?;
            let write = plan(&NumberSnapshot {
                account,
                by_number,
                by_phone_number_id,
            })?;
            // One row a number: a new id for it replaces the old in place.
            if let NumberWrite::Put { number, .. } = &write {
                accounts::put_number(&tx, number).await?;
            }
            write
        })
    }

    async fn window_and_consent(
        &self,
        pair: &Pair,
    ) -> Result<(Option<Window>, Option<crate::domain::consent::Consent>), StoreError> {
        self.window_reads.read(pair).await
    }

    async fn consent(
        &self,
        pair: &Pair,
    ) -> Result<Option<crate::domain::consent::Consent>, StoreError> {
        let client = self.client().await?;
        consent::read(&client, pair).await
    }

    async fn change_consent(
        &self,
        pair: &Pair,
        plan: Planner<
            '_,
            Option<crate::domain::consent::Consent>,
            Option<crate::domain::consent::Consent>,
        >,
    ) -> Result<Option<crate::domain::consent::Consent>, StoreError> {
        in_transaction!(self, "change consent", |tx| {
            let current = consent::read(&tx, pair).await?;
            let next = plan(&current)?;
            consent::keep(&tx, pair, &current, &next).await?;
            next
        })
    }

    async fn business_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError> {
        let client = self.client().await?;
        accounts::read_number(&client, number).await
    }

    async fn list_numbers(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError> {
        let client = self.client().await?;
        accounts::list_numbers(&client, account).await
    }

    async fn remove_number(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        in_transaction!(self, "remove a business number", |tx| {
            accounts::delete_number(&tx, number).await?
        })
    }

    async fn list_templates(
        &self,
        account: &AccountId,
        after: Option<&TemplateId>,
        limit: usize,
        filter: &TemplateFilter,
    ) -> Result<TemplatePage, StoreError> {
        let (after_name, after_language) = match after {
            Some(id) => (id.name(), id.language()),
            None => ("", ""),
        };
        let status = filter.status.map(|s| rows::name(rows::STATUSES, s));
        let category = filter.category.map(|c| rows::name(rows::CATEGORIES, c));
        let fetch = limit as i64 + 1;
        let client = self.client().await?;
        // Byte order ("C"), the order sled keeps: pages are stable across
        // backends and locales.
        let rows = conn::query(
            &client,
            "list templates",
            "SELECT * FROM templates \
                 WHERE (name COLLATE \"C\", language COLLATE \"C\") > ($1, $2) \
                   AND ($3::text IS NULL OR status = $3) \
                   AND ($4::text IS NULL OR category = $4) \
                   AND account = $6 \
                 ORDER BY name COLLATE \"C\", language COLLATE \"C\" LIMIT $5",
            &[
                &after_name,
                &after_language,
                &status,
                &category,
                &fetch,
                &account.as_str(),
            ],
        )
        .await?;
        let fetched = rows
            .iter()
            .map(rows::template)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TemplatePage::from_fetched(fetched, limit))
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let limit = limit as i64;
        in_transaction!(self, "claim deliveries", |tx| {
            // SKIP LOCKED: replicas claiming at once take different rows.
            let leased = conn::query(
                &tx,
                "claim deliveries",
                "WITH due AS (SELECT message_id, next_attempt_at AS was FROM deliveries \
                        WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3 \
                        FOR UPDATE SKIP LOCKED) \
                     UPDATE deliveries d SET next_attempt_at = $2, fence = d.fence + 1 \
                     FROM due WHERE d.message_id = due.message_id \
                     RETURNING d.message_id, due.was, d.fence",
                &[&now, &lease_until, &limit],
            )
            .await?;
            let mut claims = Vec::with_capacity(leased.len());
            for row in leased {
                let id: Uuid = row.get(0);
                let was: Option<DateTime<Utc>> = row.get(1);
                let fence: i64 = row.get(2);
                let state = message_state(&tx, id).await?.ok_or_else(|| {
                    StoreError::corrupt("deliveries", "a delivery names a missing message")
                })?;
                let delivery = state.delivery.ok_or_else(|| {
                    StoreError::corrupt("deliveries", "a claimed delivery vanished")
                })?;
                claims.push(Claim {
                    message: state.message,
                    delivery: Delivery {
                        next_attempt_at: was,
                        ..delivery
                    },
                    lease_until,
                    fence: fence as u64,
                });
            }
            claims
        })
    }

    async fn finish_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<MessageState, StoreError> {
        let id = claim.message.message_id;
        in_transaction!(self, "store a delivery outcome", |tx| {
            let fence: Option<i64> = conn::query_opt(
                &tx,
                "read a delivery",
                "SELECT fence FROM deliveries WHERE message_id = $1",
                &[&id],
            )
            .await?
            .map(|row| row.get(0));
            if fence != Some(claim.fence as i64) {
                return Err(StoreError::LeaseLost { message_id: id });
            }
            let mut early = None;
            if let Some(wamid) = &next.wamid
                && let Some(row) = conn::query_opt(
                    &tx,
                    "take an early status",
                    "DELETE FROM early_statuses WHERE wamid = $1 RETURNING *",
                    &[wamid],
                )
                .await?
            {
                early = Some(rows::early_status(&row)?);
            }
            let next = plan(next.clone(), early.as_ref());
            write_delivery(&tx, id, &next).await?;
            let state = message_state(&tx, id)
                .await?
                .ok_or_else(|| StoreError::corrupt("deliveries", "names a missing message"))?;
            consent::learn(&tx, &state, learn).await?;
            state
        })
    }

    async fn attach_wamid(
        &self,
        id: Uuid,
        wamid: &str,
        plan: AttachPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<Option<MessageState>, StoreError> {
        in_transaction!(self, "attach a provider id", |tx| {
            let (by_wamid, by_id): (conn::Params, conn::Params) = (&[&wamid], &[&id]);
            let (state, taken, early) = conn::pipelined!(
                message_state(&tx, id),
                conn::query_opt(
                    &tx,
                    "find a wamid",
                    "SELECT 1 FROM deliveries WHERE wamid = $1",
                    by_wamid,
                ),
                conn::query_opt(
                    &tx,
                    "read an early status",
                    "SELECT * FROM early_statuses WHERE wamid = $1",
                    by_wamid,
                ),
            )?;
            let early = early.map(|row| rows::early_status(&row)).transpose()?;
            let planned = match (&state, taken) {
                (
                    Some(MessageState {
                        delivery: Some(current),
                        ..
                    }),
                    None,
                ) => plan(current, early.as_ref()),
                _ => None,
            };
            match (state, planned) {
                (Some(state), Some(next)) => {
                    // A new fence: a claim on the message can no longer
                    // store its outcome.
                    conn::pipelined!(
                        write_delivery(&tx, id, &next),
                        conn::execute(
                            &tx,
                            "fence off claims",
                            "UPDATE deliveries SET fence = fence + 1 WHERE message_id = $1",
                            by_id,
                        ),
                        conn::execute(
                            &tx,
                            "take an early status",
                            "DELETE FROM early_statuses WHERE wamid = $1",
                            by_wamid,
                        ),
                    )?;
                    let state = MessageState {
                        message: state.message,
                        delivery: Some(next),
                    };
                    consent::learn(&tx, &state, learn).await?;
                    Some(state)
                }
                _ => None,
            }
        })
    }

    async fn report_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<StatusReport, StoreError> {
        in_transaction!(self, "apply a status", |tx| {
            let known = conn::query_opt(
                &tx,
                "find a wamid",
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM deliveries d \
                         JOIN outbox o ON o.message_id = d.message_id WHERE d.wamid = $1"
                ),
                &[&wamid],
            )
            .await?;
            match known {
                Some(row) => {
                    let state = state_of(&row)?;
                    let delivery = state.delivery.clone().ok_or_else(|| {
                        StoreError::corrupt("deliveries", "a wamid without a delivery")
                    })?;
                    match plan(&StatusTarget::Known(delivery)) {
                        StatusPlan::Apply(next) => {
                            let id = state.message.message_id;
                            write_delivery(&tx, id, &next).await?;
                            let state = MessageState {
                                message: state.message,
                                delivery: Some(next),
                            };
                            consent::learn(&tx, &state, learn).await?;
                            StatusReport::Applied(Box::new(state))
                        }
                        _ => StatusReport::Unchanged,
                    }
                }
                None => {
                    let seen = conn::query_opt(
                        &tx,
                        "read an early status",
                        "SELECT * FROM early_statuses WHERE wamid = $1",
                        &[&wamid],
                    )
                    .await?
                    .map(|row| rows::early_status(&row))
                    .transpose()?;
                    match plan(&StatusTarget::Unknown(seen)) {
                        StatusPlan::KeepEarly(keep) => {
                            put_early(&tx, wamid, &keep).await?;
                            StatusReport::Early
                        }
                        _ => StatusReport::Unchanged,
                    }
                }
            }
        })
    }

    async fn take_send_slot(
        &self,
        key: &str,
        plan: RatePlanner<'_>,
    ) -> Result<Result<(), TimeDelta>, StoreError> {
        // The column is named for the first key it held: a business number.
        let business = key;
        in_transaction!(self, "take a send slot", |tx| {
            let tat: Option<DateTime<Utc>> = conn::query_opt(
                &tx,
                "read the send rate",
                "SELECT tat FROM send_rate WHERE business = $1",
                &[&business],
            )
            .await?
            .map(|row| row.get(0));
            match plan(tat) {
                Ok(next) => {
                    conn::execute(
                        &tx,
                        "take a send slot",
                        "INSERT INTO send_rate (business, tat) VALUES ($1, $2) \
                         ON CONFLICT (business) DO UPDATE SET tat = EXCLUDED.tat",
                        &[&business, &next],
                    )
                    .await?;
                    Ok(())
                }
                Err(wait) => Err(wait),
            }
        })
    }

    async fn sweep_step(&self, cutoffs: &Cutoffs) -> Result<SweepStep, StoreError> {
        // Change-feed rows are kept as long as early statuses (24h): far
        // longer than any replica's feed lags.
        let changes_before = cutoffs.early_statuses;
        in_transaction!(self, "sweep", |tx| {
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

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageState> {
        self.updates.subscribe()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write was committed first.
        Ok(())
    }

    async fn changes_settled(&self) -> Result<DateTime<Utc>, StoreError> {
        changes::settled(&self.client().await?).await
    }

    async fn window_changes(
        &self,
        order: ChangeOrder,
        from: ChangePosition,
        through: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WindowChange>, StoreError> {
        let client = self.client().await?;
        changes::read(&client, order, from, through, limit).await
    }

    async fn next_changes(
        &self,
        changes: &[(Pair, ChangePosition)],
    ) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
        let client = self.client().await?;
        changes::next(&client, changes).await
    }

    async fn list_windows(
        &self,
        query: &WindowQuery,
        after: Option<&WindowCursor>,
        limit: usize,
    ) -> Result<Vec<(Pair, Window)>, StoreError> {
        if query.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
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

    async fn open_windows(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
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

    async fn check(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        conn::query_one(&client, "check the database", "SELECT 1", &[]).await?;
        Ok(())
    }

    fn pool(&self) -> Option<PoolStatus> {
        let status = self.pool.status();
        Some(PoolStatus {
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        })
    }

    async fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let bytes: i64 = conn::query_one(
            &client,
            "read the database size",
            "SELECT pg_database_size(current_database())",
            &[],
        )
        .await?
        .get(0);
        Ok(Some(bytes as u64))
    }
}
