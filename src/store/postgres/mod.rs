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
mod delivery;
mod feed;
mod import;
mod queries;
mod reach;
mod retry;
mod rows;
mod schema;
mod sweep;
mod templates;
mod tls;
mod tx;
mod window_listing;
mod window_reads;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use uuid::Uuid;

use super::{
    AttachPlanner, Claim, ConsentLearner, FinishPlanner, LimitScoper, MessageState, Planner,
    PoolStatus, RatePlanner, SendOutcome, StatusPlanner, StatusReport, Storage, StoreError,
    SweepStep, TemplatePage,
};
use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, NumberSnapshot, NumberWrite, PhoneNumberId,
};
use crate::domain::delivery::Delivery;
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
    insert_inbound_id, insert_message, message_state, note_change, put_early, put_key,
    put_template, read_inbound_id, read_window, send_limit, send_snapshot, write_delivery,
    write_window,
};

use retry::in_transaction;

pub use schema::SCHEMA_VERSION;

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
        templates::template(self, id).await
    }

    async fn change_template(
        &self,
        id: &TemplateId,
        plan: Planner<'_, Option<Template>, TemplateWrite>,
    ) -> Result<(Option<Template>, TemplateWrite), StoreError> {
        templates::change_template(self, id, plan).await
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
        templates::sync_templates(self, account, plan).await
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
        templates::list_templates(self, account, after, limit, filter).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        delivery::claim_due(self, now, lease_until, limit).await
    }

    async fn finish_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<MessageState, StoreError> {
        delivery::finish_attempt(self, claim, next, plan, learn).await
    }

    async fn attach_wamid(
        &self,
        id: Uuid,
        wamid: &str,
        plan: AttachPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<Option<MessageState>, StoreError> {
        delivery::attach_wamid(self, id, wamid, plan, learn).await
    }

    async fn report_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<StatusReport, StoreError> {
        delivery::report_status(self, wamid, plan, learn).await
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
        sweep::sweep_step(self, cutoffs).await
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
        window_listing::list_windows(self, query, after, limit).await
    }

    async fn open_windows(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        window_listing::open_windows(self, now).await
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
