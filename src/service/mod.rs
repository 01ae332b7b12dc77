//! The use cases: one async function each, shared by every transport.
//!
//! Each one hands the store a planner from `domain` to run on what it read,
//! so a rule lives once however many backends there are; nothing here knows
//! which backend it runs on.

mod accounts;
mod consent;
mod sweeper;
pub mod watch;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::account::AccountId;
use crate::domain::delivery::{self, Delivery, DeliveryError, DeliveryStatus};
use crate::domain::policy::SendPolicy;
use crate::domain::send::{self, DeliveryMode, SendPlan};
use crate::domain::template::{self, TemplateFilter, TemplateWrite};
use crate::domain::template_rules;
use crate::domain::time;
use crate::domain::window::{self, InboundOutcome};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{
    Inbound, InboundMessageId, Pair, SendRequest, Status, Template, TemplateContent, TemplateId,
    Window,
};
use crate::store::{
    Claim, MessageState, SendOutcome, StatusReport, Storage, StoreError, TemplatePage,
};

pub use sweeper::{spawn_sweeper, sweep};

/// A page of windows and where the next one starts (`None`: the last page).
pub struct WindowPage {
    pub windows: Vec<(Pair, Window)>,
    pub next_after: Option<WindowCursor>,
}

#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Storage>,
    mode: DeliveryMode,
    policy: Arc<SendPolicy>,
}

impl Service {
    /// A service with the after-the-fact rules in force by default.
    pub fn new(store: Arc<dyn Storage>, mode: DeliveryMode) -> Service {
        Service {
            store,
            mode,
            policy: Arc::new(SendPolicy::default()),
        }
    }

    /// The same, checking sends against `policy`.
    pub fn with_policy(self, policy: SendPolicy) -> Service {
        Service {
            policy: Arc::new(policy),
            ..self
        }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Records one inbound (deduplicated on its message id) and opens or
    /// extends the pair's window. Returns the outcome and the window now.
    pub async fn record_inbound(
        &self,
        pair: &Pair,
        id: &InboundMessageId,
        inbound: &Inbound,
        now: DateTime<Utc>,
    ) -> Result<(InboundOutcome, Option<Window>), StoreError> {
        let now = time::stored(now);
        let plan = self
            .store
            .record_inbound(pair, id, inbound, &|seen| {
                window::plan_inbound(seen, pair, inbound, now)
            })
            .await?;
        Ok((plan.outcome, plan.window))
    }

    pub async fn window(&self, pair: &Pair) -> Result<Option<Window>, StoreError> {
        self.store.window(pair).await
    }

    /// The pair's window and consent, read at once (GetWindow).
    pub async fn window_and_consent(
        &self,
        pair: &Pair,
    ) -> Result<(Option<Window>, Option<crate::domain::consent::Consent>), StoreError> {
        self.store.window_and_consent(pair).await
    }

    /// Gates and records one send; a dry run plans on what is stored and
    /// writes nothing.
    pub async fn send(
        &self,
        request: &SendRequest,
        message_id: Uuid,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SendOutcome, StoreError> {
        let now = time::stored(now);
        let (mode, policy) = (self.mode, &*self.policy);
        let plan = |snapshot: &send::SendSnapshot| {
            send::plan(snapshot, request, message_id, now, mode, policy)
        };
        let limit = |snapshot: &send::SendSnapshot| {
            send::messaging_limit_of(request, policy, snapshot).map(|(scope, _)| scope)
        };
        if !dry_run {
            return self.store.send(request, &limit, &plan).await;
        }
        let snapshot = self.store.send_snapshot(request, &limit).await?;
        match plan(&snapshot)? {
            SendPlan::Accept(accepted) => Ok(SendOutcome::DryRun(accepted.message)),
            SendPlan::Replay { message_id } => {
                let state = self.store.message(message_id).await?.ok_or_else(|| {
                    StoreError::corrupt("outbox", "idempotency record names a missing message")
                })?;
                Ok(SendOutcome::Replayed(state.message))
            }
        }
    }

    pub async fn message(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
        self.store.message(id).await
    }

    pub async fn template(&self, id: &TemplateId) -> Result<Option<Template>, StoreError> {
        self.store.template(id).await
    }

    /// Creates or replaces a template's content; returns it as stored and
    /// whether it was created.
    pub async fn upsert_template(
        &self,
        id: &TemplateId,
        content: &TemplateContent,
        now: DateTime<Utc>,
    ) -> Result<(Template, bool), StoreError> {
        let now = time::stored(now);
        self.editable_by_hand(id.account()).await?;
        // What WhatsApp's review would reject, refused now; a synced
        // template was reviewed already and does not come this way.
        template_rules::check(content)
            .map_err(|rule| StoreError::Rejected(rule.within("template")))?;
        let (before, write) = self
            .store
            .change_template(id, &|existing| {
                Ok(template::plan_upsert(existing.as_ref(), id, content, now))
            })
            .await?;
        let created = before.is_none();
        match (write, before) {
            (TemplateWrite::Put(template), _) => Ok((*template, created)),
            (TemplateWrite::Keep, Some(template)) => Ok((template, created)),
            _ => Err(StoreError::corrupt(
                "templates",
                "an upsert planned neither a write nor a kept template",
            )),
        }
    }

    /// Sets a template's review status; `None` when it does not exist.
    pub async fn set_template_status(
        &self,
        id: &TemplateId,
        status: Status,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Template>, StoreError> {
        let now = time::stored(now);
        let (_, write) = self
            .store
            .change_template(id, &|existing| {
                template::plan_status(existing.as_ref(), status, reason, now)
            })
            .await?;
        Ok(match write {
            TemplateWrite::Put(template) => Some(*template),
            TemplateWrite::Delete | TemplateWrite::Keep => None,
        })
    }

    /// Sets a template's status through the API: as `set_template_status`,
    /// refused in an account that syncs (WhatsApp's word is final there).
    pub async fn set_template_status_by_hand(
        &self,
        id: &TemplateId,
        status: Status,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Template>, StoreError> {
        self.editable_by_hand(id.account()).await?;
        self.set_template_status(id, status, reason, now).await
    }

    async fn editable_by_hand(&self, account: &AccountId) -> Result<(), StoreError> {
        if account.is_default() {
            return Ok(());
        }
        let stored = self.store.account(account).await?;
        Ok(crate::domain::account::check_hand_edit(
            account,
            stored.as_ref(),
        )?)
    }

    /// Removes a template; false when it did not exist.
    pub async fn delete_template(&self, id: &TemplateId) -> Result<bool, StoreError> {
        self.editable_by_hand(id.account()).await?;
        let (before, _) = self
            .store
            .change_template(id, &|existing| Ok(template::plan_delete(existing.as_ref())))
            .await?;
        Ok(before.is_some())
    }

    /// One page of the windows `query` matches, after `after`: one more
    /// than the page is fetched, so the last page says it is the last.
    pub async fn list_windows(
        &self,
        query: &WindowQuery,
        after: Option<&WindowCursor>,
        limit: usize,
    ) -> Result<WindowPage, StoreError> {
        let mut windows = self.store.list_windows(query, after, limit + 1).await?;
        let next_after = if windows.len() > limit {
            windows.truncate(limit);
            windows.last().map(|(pair, window)| WindowCursor {
                expires_at: window.expires_at,
                pair: pair.clone(),
            })
        } else {
            None
        };
        Ok(WindowPage {
            windows,
            next_after,
        })
    }

    /// `account`'s templates, a page at a time (`after` names a template
    /// of that account).
    pub async fn list_templates(
        &self,
        account: &AccountId,
        after: Option<&TemplateId>,
        limit: usize,
        filter: &TemplateFilter,
    ) -> Result<TemplatePage, StoreError> {
        let after = after.map(|id| id.clone().in_account(account.clone()));
        self.store
            .list_templates(account, after.as_ref(), limit, filter)
            .await
    }

    /// Claims up to `limit` due deliveries for one attempt each, leased for
    /// `lease` (the attempt's timeout and a margin).
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = time::stored(now);
        let until = delivery::lease_until(now, lease);
        self.store.claim_due(now, until, limit).await
    }

    /// Stores an attempt's outcome (or a deferral) under its claim.
    pub async fn finish_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        now: DateTime<Utc>,
    ) -> Result<MessageState, StoreError> {
        // The worker's clock is finer than the store: cut here, so what is
        // returned and published is what a read finds.
        let (next, now) = (&next.at_stored_precision(), time::stored(now));
        self.store
            .finish_attempt(
                claim,
                next,
                &|next, early| delivery::plan_finish(next, early, now),
                &self.consent_learner(now),
            )
            .await
    }

    /// Applies a status webhook for `wamid`.
    pub async fn report_status(
        &self,
        wamid: &str,
        status: DeliveryStatus,
        error: Option<&DeliveryError>,
        now: DateTime<Utc>,
    ) -> Result<StatusReport, StoreError> {
        let now = time::stored(now);
        self.store
            .report_status(
                wamid,
                &|target| delivery::plan_status(target, status, error, now),
                &self.consent_learner(now),
            )
            .await
    }

    /// Gives message `id` the provider's id `provider_id` when its send
    /// timed out after the provider took it: it is not sent again, and the
    /// status that revealed it applies. `None` when nothing changed.
    pub async fn attach_provider_id(
        &self,
        id: uuid::Uuid,
        provider_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<MessageState>, StoreError> {
        let now = time::stored(now);
        self.store
            .attach_wamid(
                id,
                provider_id,
                &|current, early| delivery::plan_attach(current, provider_id, early, now),
                &self.consent_learner(now),
            )
            .await
    }

    /// Takes a send slot under `key` (a business number, or a pair's rate
    /// key) at `rate`, shared by every replica of the store: `Ok(Err(wait))`
    /// when none is free for `wait`.
    pub async fn take_send_slot(
        &self,
        key: &str,
        rate: &delivery::SendRate,
        now: DateTime<Utc>,
    ) -> Result<Result<(), TimeDelta>, StoreError> {
        let now = time::stored(now);
        self.store
            .take_send_slot(key, &|tat| rate.take(tat, now))
            .await
    }

    /// Every change to an outbound message stored from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageState> {
        self.store.subscribe()
    }
}
