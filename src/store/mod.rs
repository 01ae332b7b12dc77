//! Storage: one async interface that speaks domain types, and its backends.
//!
//! A backend decides nothing. For each use case it reads what the planner
//! needs (a snapshot), runs the planner — a pure function from `domain`,
//! handed in by the service layer — inside its own atomic section, writes
//! exactly what the planner returned, and answers only once that is durable.
//! Because planners are pure, a backend may run one again on a fresh
//! snapshot after a conflict; that is how its retries stay correct.
//!
//! Only `store::sled` names sled.

pub mod postgres;
mod rich_json;
pub mod sled;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, NumberSnapshot, NumberWrite, PhoneNumberId,
};
use crate::domain::consent::Consent;
use crate::domain::delivery::{Delivery, DeliveryError, EarlyStatus, StatusPlan, StatusTarget};
use crate::domain::messaging_limit::LimitScope;
use crate::domain::retention::Cutoffs;
use crate::domain::send::{SendPlan, SendSnapshot};
use crate::domain::template::{TemplateFilter, TemplateWrite};
use crate::domain::template_sync::SyncPlan;
use crate::domain::window::{InboundPlan, InboundSnapshot};
use crate::domain::window_events::{ChangeOrder, ChangePosition, WindowChange};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{
    Inbound, InboundMessageId, OutboxMessage, Pair, PhoneNumber, Rejection, SendRequest, Template,
    TemplateId, Window,
};

/// Message updates a slow watcher may fall behind by before it is dropped.
pub(crate) const UPDATES_BUFFERED: usize = 4096;

/// An error's cause, kept for logs and `source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request broke a rule that only the stored state could reveal.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The backend could not read or write (a full disk, a lost
    /// connection); nothing was acknowledged, and a retry may succeed.
    #[error("storage unavailable: {context}: {}", causes(.source.as_ref()))]
    Unavailable {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// A stored record cannot be read back; retrying will not help.
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The store was written by a newer wagate.
    #[error("the store holds schema version {found}; this build understands up to {supported}")]
    SchemaTooNew { found: u32, supported: u32 },
    /// A delivery claim lapsed and another claim took the message: this
    /// attempt's outcome must not overwrite the newer one.
    #[error("the delivery claim on message {message_id} lapsed before its outcome was stored")]
    LeaseLost { message_id: Uuid },
}

/// An error and its sources, outermost first: drivers often keep the
/// useful part (the server's own message) in a source.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

impl StoreError {
    pub fn unavailable(context: &'static str, source: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable {
            context,
            source: source.into(),
        }
    }

    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// A planner that may refuse: run inside the backend's atomic section.
pub type Planner<'a, S, P> = &'a (dyn Fn(&S) -> Result<P, Rejection> + Send + Sync);

/// Plans an attempt's stored outcome from the attempt's result and a
/// status that arrived before its wamid.
pub type FinishPlanner<'a> = &'a (dyn Fn(Delivery, Option<&EarlyStatus>) -> Delivery + Send + Sync);

/// Plans attaching a provider id to a message from its delivery and the
/// status kept for that id, if any: `None` leaves it as it is.
pub type AttachPlanner<'a> =
    &'a (dyn Fn(&Delivery, Option<&EarlyStatus>) -> Option<Delivery> + Send + Sync);

/// Plans a send slot from a number's stored arrival time.
pub type RatePlanner<'a> =
    &'a (dyn Fn(Option<DateTime<Utc>>) -> Result<DateTime<Utc>, TimeDelta> + Send + Sync);

/// Names the messaging-limit scope a send counts in, from the rest of its
/// snapshot; `None`: nothing is read for the limit.
pub type LimitScoper<'a> = &'a (dyn Fn(&SendSnapshot) -> Option<LimitScope> + Send + Sync);

/// Plans a status webhook from what is stored for its wamid.
pub type StatusPlanner<'a> = &'a (dyn Fn(&StatusTarget) -> StatusPlan + Send + Sync);

/// What a failed delivery teaches about its pair's consent
/// (`consent::plan_after_failure`): from the state just stored and the
/// pair's consent, the consent to keep, or `None` when it teaches nothing.
/// A store asks it only of a stored state with an error, and keeps the
/// answer in the same write as the state: a crash or a database failover
/// between two writes would lose the lesson for good, since the provider's
/// redelivered status then finds the state already stored.
pub type ConsentLearner<'a> =
    &'a (dyn Fn(&MessageState, Option<&Consent>) -> Option<Option<Consent>> + Send + Sync);

/// What SendMessage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored now.
    Accepted(OutboxMessage),
    /// The idempotency key's first answer, stored earlier.
    Replayed(OutboxMessage),
    /// Evaluated only; nothing stored.
    DryRun(OutboxMessage),
}

impl SendOutcome {
    pub fn message(&self) -> &OutboxMessage {
        match self {
            SendOutcome::Accepted(m) | SendOutcome::Replayed(m) | SendOutcome::DryRun(m) => m,
        }
    }
}

/// An outbound message and its delivery; `delivery` is `None` for a message
/// accepted while delivery was off (record-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub message: OutboxMessage,
    pub delivery: Option<Delivery>,
}

impl MessageState {
    /// Why its delivery failed, if it did.
    pub fn error(&self) -> Option<&DeliveryError> {
        self.delivery.as_ref()?.error.as_ref()
    }
}

/// What a status webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReport {
    /// The message moved on.
    Applied(Box<MessageState>),
    /// A duplicate, or older than what is known.
    Unchanged,
    /// No message has this wamid yet; kept until one does (or it ages out).
    Early,
}

/// A page of templates and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePage {
    pub templates: Vec<Template>,
    pub next_after: Option<TemplateId>,
}

impl TemplatePage {
    /// The page from up to `limit + 1` templates fetched in order: one
    /// more than the page means there is a next page (and no empty last
    /// page is ever handed out).
    pub fn from_fetched(mut fetched: Vec<Template>, limit: usize) -> TemplatePage {
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let next_after = more.then(|| fetched.last().map(|t| t.id.clone())).flatten();
        TemplatePage {
            templates: fetched,
            next_after,
        }
    }
}

/// One message claimed for one delivery attempt, until `lease_until`.
/// `fence` identifies this claim: storing the outcome checks that no later
/// claim took the message after this one lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub message: OutboxMessage,
    pub delivery: Delivery,
    pub lease_until: DateTime<Utc>,
    pub fence: u64,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub windows: u64,
    pub inbound_ids: u64,
    pub idempotency_keys: u64,
    pub early_statuses: u64,
    pub window_changes: u64,
}

impl std::ops::AddAssign for SweepCounts {
    fn add_assign(&mut self, other: SweepCounts) {
        self.windows += other.windows;
        self.inbound_ids += other.inbound_ids;
        self.idempotency_keys += other.idempotency_keys;
        self.early_statuses += other.early_statuses;
        self.window_changes += other.window_changes;
    }
}

/// One bounded step of a sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStep {
    pub removed: SweepCounts,
    /// Entries looked at, including stale index entries whose record moved
    /// on; zero means the sweep is complete.
    pub visited: usize,
}

/// One stored record in backend-neutral form: what moving a store from
/// one backend to another copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Window {
        pair: Pair,
        window: Window,
    },
    InboundId {
        id: InboundMessageId,
        pair: Pair,
        inbound: Inbound,
        recorded_at: DateTime<Utc>,
    },
    Template(Box<Template>),
    Message(Box<MessageState>),
    Key {
        key: crate::domain::IdempotencyKey,
        record: crate::domain::send::KeyRecord,
    },
    EarlyStatus {
        wamid: String,
        status: EarlyStatus,
    },
    Account(Account),
    Number(BusinessNumber),
    Consent {
        pair: Pair,
        consent: Consent,
    },
    /// A customer reached under the messaging limit.
    Reach {
        scope: LimitScope,
        customer: PhoneNumber,
        reached_at: DateTime<Utc>,
    },
    /// A messaging-limit scope's usage.
    LimitUsage {
        scope: LimitScope,
        usage: crate::domain::messaging_limit::Usage,
    },
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Looks up the inbound's message id and the pair's window, plans, and
    /// writes the plan: the id (with `inbound`) when the plan remembers it,
    /// the window when it changed.
    async fn record_inbound(
        &self,
        pair: &Pair,
        id: &InboundMessageId,
        inbound: &Inbound,
        plan: Planner<'_, InboundSnapshot, InboundPlan>,
    ) -> Result<InboundPlan, StoreError>;

    async fn window(&self, pair: &Pair) -> Result<Option<Window>, StoreError>;

    /// What `send` would read, for a dry run that writes nothing.
    async fn send_snapshot(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
    ) -> Result<SendSnapshot, StoreError>;

    /// Reads the key's first use, the window, the template and the
    /// registry; then, when `limit` names a scope for what was read, the
    /// customer's reach and the scope's usage; plans, and writes an
    /// accepted plan (message, key, window, delivery, reach) at once. Two
    /// sends that both write a scope's usage never both commit on the same
    /// reading of it.
    async fn send(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
        plan: Planner<'_, SendSnapshot, SendPlan>,
    ) -> Result<SendOutcome, StoreError>;

    async fn message(&self, id: Uuid) -> Result<Option<MessageState>, StoreError>;

    async fn template(&self, id: &TemplateId) -> Result<Option<Template>, StoreError>;

    /// Reads the template, plans, writes; returns the template as it was
    /// before and what was written.
    async fn change_template(
        &self,
        id: &TemplateId,
        plan: Planner<'_, Option<Template>, TemplateWrite>,
    ) -> Result<(Option<Template>, TemplateWrite), StoreError>;

    /// `account`'s templates after `after` in (name, language) order that
    /// `filter` keeps, at most `limit` of them.
    async fn list_templates(
        &self,
        account: &AccountId,
        after: Option<&TemplateId>,
        limit: usize,
        filter: &TemplateFilter,
    ) -> Result<TemplatePage, StoreError>;

    /// Claims up to `limit` deliveries due at `now` whose lease (if any) has
    /// lapsed, each until `lease_until`.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Stores an attempt's outcome under its claim: `plan` gets the status
    /// that arrived before the outcome's wamid, if any; `learn` what a
    /// failure teaches about the pair's consent. Refused with
    /// [`StoreError::LeaseLost`] when a later claim took the message.
    async fn finish_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<MessageState, StoreError>;

    /// Gives message `id` the provider's id `wamid` as `plan` decides from
    /// its delivery and the status kept for `wamid`; fences off any claim
    /// on it. `None` when the message is unknown, `wamid` already names a
    /// message, or the plan keeps it as it is.
    async fn attach_wamid(
        &self,
        id: Uuid,
        wamid: &str,
        plan: AttachPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<Option<MessageState>, StoreError>;

    /// Applies a status webhook for `wamid` as planned from what is known,
    /// with what a failure teaches about the pair's consent.
    async fn report_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<StatusReport, StoreError>;

    /// Takes a send slot under `key` (a business number, or a pair's
    /// `delivery::pair_rate_key`) as `plan` (the rate rule) decides from the
    /// key's stored arrival time; shared by every replica of the store.
    /// `Ok(Err(wait))`: no slot for `wait` yet.
    async fn take_send_slot(
        &self,
        key: &str,
        plan: RatePlanner<'_>,
    ) -> Result<Result<(), TimeDelta>, StoreError>;

    /// Removes a bounded chunk of what is past its cutoff.
    async fn sweep_step(&self, cutoffs: &Cutoffs) -> Result<SweepStep, StoreError>;

    /// Every change to an outbound message stored from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageState>;

    /// Makes everything written so far durable; for shutdown.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Windows `query` matches that come after `after` in listing order
    /// (expiry, then business and customer number), at most `limit`.
    async fn list_windows(
        &self,
        query: &WindowQuery,
        after: Option<&WindowCursor>,
        limit: usize,
    ) -> Result<Vec<(Pair, Window)>, StoreError>;

    /// The instant through which the window-change log is complete: every
    /// change stamped at or before it is durable and readable, and no
    /// change can be stamped at or before it any more.
    async fn changes_settled(&self) -> Result<DateTime<Utc>, StoreError>;

    /// Logged window changes at or after `from` in `order`, whose time in
    /// that order (recorded_at or expires_at) is at or before `through`;
    /// at most `limit`.
    async fn window_changes(
        &self,
        order: ChangeOrder,
        from: ChangePosition,
        through: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WindowChange>, StoreError>;

    /// For each logged change (its pair and place in record order): when
    /// the pair's next change was recorded, if there is one.
    async fn next_changes(
        &self,
        changes: &[(Pair, ChangePosition)],
    ) -> Result<Vec<Option<DateTime<Utc>>>, StoreError>;

    /// Windows open at `now`; for a periodic gauge, not a request path.
    async fn open_windows(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Bytes the store occupies, where it knows.
    async fn size_on_disk(&self) -> Result<Option<u64>, StoreError>;

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// Reads every template of `account`, plans (a template sync), and
    /// writes what the plan puts, all at once.
    async fn sync_templates(
        &self,
        account: &AccountId,
        plan: Planner<'_, Vec<Template>, SyncPlan>,
    ) -> Result<SyncPlan, StoreError>;

    /// Reads the account, plans, and writes what the plan puts.
    async fn change_account(
        &self,
        id: &AccountId,
        plan: Planner<'_, Option<Account>, AccountWrite>,
    ) -> Result<AccountWrite, StoreError>;

    /// Every account, by id. Accounts are few (one per brand or client), so
    /// there is no paging.
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// Reads the account, the number and the phone number id's current
    /// owner (a Cloud API number's), plans, and writes the number (and its
    /// id's lookup) at once.
    async fn register_number(
        &self,
        number: &PhoneNumber,
        phone_number_id: Option<&PhoneNumberId>,
        account: &AccountId,
        plan: Planner<'_, NumberSnapshot, NumberWrite>,
    ) -> Result<NumberWrite, StoreError>;

    async fn business_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError>;

    /// The pair's window and consent together, for GetWindow: one read
    /// (on PostgreSQL one round trip on one connection).
    async fn window_and_consent(
        &self,
        pair: &Pair,
    ) -> Result<(Option<Window>, Option<Consent>), StoreError>;

    /// The consent kept for a pair (opt-outs, marketing backoff).
    async fn consent(&self, pair: &Pair) -> Result<Option<Consent>, StoreError>;

    /// Reads the pair's consent, plans, and keeps what the plan answers
    /// (`None`: nothing to keep); returns it.
    async fn change_consent(
        &self,
        pair: &Pair,
        plan: Planner<'_, Option<Consent>, Option<Consent>>,
    ) -> Result<Option<Consent>, StoreError>;

    /// Registered numbers by number, of one account or of all.
    async fn list_numbers(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError>;

    /// Removes a registered number; whether there was one.
    async fn remove_number(&self, number: &PhoneNumber) -> Result<bool, StoreError>;

    /// Whether the store can serve now, writes included; readiness follows
    /// it (a database out of reach, a disk too full to write).
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Connections to a database server, where there is one.
    fn pool(&self) -> Option<PoolStatus> {
        None
    }
}

/// A connection pool's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open.
    pub size: usize,
    /// Of those, idle.
    pub available: usize,
    /// Callers waiting for one.
    pub waiting: usize,
}
