//! The embedded sled store: one process, one data directory.
//!
//! Each use case is one [`wal::Section`]: it reads the planner's snapshot,
//! runs the planner and stages its plan's changes; the call then waits for
//! the log to sync them ([`wal`]), so it answers only once the change is on
//! disk. The log applies them to sled just after, and every read of sled
//! outside a section first waits for that ([`settled`]).

mod accounts;
mod changes;
mod consent;
mod delivery;
mod export;
mod inbound;
mod keys;
mod layout;
mod listing;
mod packed;
mod reach;
mod records;
mod rekey;
mod send_rate;
mod sends;
mod settled;
mod sweep;
mod templates;
mod trees;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use sled::IVec;
use uuid::Uuid;

use super::{
    AttachPlanner, Claim, ConsentLearner, FinishPlanner, LimitScoper, MessageState, Planner,
    RatePlanner, SendOutcome, StatusPlanner, StatusReport, Storage, StoreError, SweepStep,
    TemplatePage,
};
use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, NumberSnapshot, NumberWrite, PhoneNumberId,
};
use crate::domain::consent::Consent;
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

use records::{DecodeError, InboundRecord, WindowRecord, decode, encode};
pub(crate) use settled::Settled;
pub(crate) use trees::Trees;
pub use wal::CommitCounts;
use wal::{Tree, Wal};

/// The on-disk layout this build writes. Trees carry their layout version in
/// their names; a later layout gets new trees and migrates into them.
///
/// 2: changes reach sled through wagate's log (`wal/`), and sled alone may
/// miss acknowledged writes until the log is replayed. A build of layout 1
/// would ignore the log, so it must refuse the directory, which it does for
/// any version above its own. Layout 1 needs no change to become 2.
///
/// 3: the windows' expiry index, the age indexes of inbound ids and
/// idempotency keys and the window change log's two orders are packed up
/// to 64 entries to a sled entry (`packed`), in new trees a build of layout
/// 2 would not read. [`layout`] moves a layout 1 or 2 directory's entries.
const SCHEMA_VERSION: u8 = 3;

#[derive(Debug, Clone)]
pub struct SledConfig {
    pub path: PathBuf,
    pub cache_capacity_bytes: u64,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::unavailable("sled", error)
    }
}

fn corrupt(tree: &'static str) -> impl Fn(DecodeError) -> StoreError {
    move |error| StoreError::corrupt(tree, error)
}

/// Decodes a stored value that is its own record type.
fn read_record<R: DeserializeOwned>(
    tree: &'static str,
    bytes: Option<sled::IVec>,
) -> Result<Option<R>, StoreError> {
    bytes
        .map(|bytes| decode::<R>(&bytes))
        .transpose()
        .map_err(corrupt(tree))
}

/// Decodes a stored value into its domain type.
fn read<R, D>(tree: &'static str, bytes: Option<sled::IVec>) -> Result<Option<D>, StoreError>
where
    R: DeserializeOwned,
    D: TryFrom<R, Error = DecodeError>,
{
    read_record::<R>(tree, bytes)?
        .map(D::try_from)
        .transpose()
        .map_err(corrupt(tree))
}

const WINDOWS: &str = "windows/v1";
const INBOUND_IDS: &str = "inbound_ids/v1";
const TEMPLATES: &str = "templates/v1";
const OUTBOX: &str = "outbox/v1";
const IDEMPOTENCY: &str = "idempotency/v1";
const DELIVERIES: &str = "deliveries/v1";
const WAMIDS: &str = "wamids/v1";
const EARLY_STATUSES: &str = "early_statuses/v1";

#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    /// Holds sled's trees: a section reads them through the log's overlay,
    /// any other read through [`SledStore::settled`].
    wal: Arc<Wal>,
    /// Every stored change to an outbound message, for watchers.
    updates: tokio::sync::broadcast::Sender<MessageState>,
}

impl SledStore {
    /// Opens (or creates) the store, replaying what the log holds that sled
    /// may not.
    pub fn open(config: &SledConfig) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            // The log makes changes durable; sled is flushed only when a
            // checkpoint retires a log segment.
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")?.as_deref() {
            Some([SCHEMA_VERSION]) => {}
            None => {
                meta.insert("schema_version", &[SCHEMA_VERSION])?;
                db.flush()?;
            }
            Some([1 | 2]) => {
                let moved = layout::pack_time_indexes(&db)?;
                tracing::info!(entries = moved, "packed the time indexes (layout 3)");
                meta.insert("schema_version", &[SCHEMA_VERSION])?;
                db.flush()?;
            }
            Some([found]) if *found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: u32::from(*found),
                    supported: u32::from(SCHEMA_VERSION),
                });
            }
            Some(other) => {
                return Err(StoreError::corrupt(
                    "meta",
                    format!("schema_version is {other:?}"),
                ));
            }
        }
        let trees = Trees::open(&db)?;
        let trees = Arc::new(trees);
        // The log first: what it holds was acknowledged before any rekeying
        // below, which must see it (a later change of phone rules would
        // otherwise rekey sled and then have the log write old keys back).
        let (wal, replayed) = Wal::open(db.clone(), trees.clone(), &config.path)?;
        if replayed != wal::Replayed::default() {
            tracing::info!(
                segments = replayed.segments,
                records = replayed.records,
                "replayed the log into sled"
            );
        }
        // Nothing serves yet, so rekeying writes straight to sled, flushed.
        let moved = rekey::templates_into_accounts(&db, &trees)?;
        if moved > 0 {
            tracing::info!(
                templates = moved,
                "moved templates written before accounts into the default account"
            );
        }
        let rekeyed = rekey::normalise_phone_keys(&db, &meta, &trees)?;
        if rekeyed != rekey::Rekeyed::default() {
            tracing::info!(
                windows = rekeyed.windows,
                merged = rekeyed.merged,
                inbound_ids = rekeyed.inbound_ids,
                "moved keys written under older phone-number rules to their normal form"
            );
        }
        wal.stamps_after(changes::last_stamp(&trees)?);
        Ok(SledStore {
            db,
            wal: Arc::new(wal),
            updates: tokio::sync::broadcast::channel(super::UPDATES_BUFFERED).0,
        })
    }

    /// Returns once the record `lsn` (and all before it) is on disk.
    async fn durable(&self, lsn: u64) -> Result<(), StoreError> {
        self.wal.durable(lsn).await
    }

    /// Group commit at work: syncs and the records they covered.
    pub fn commit_counts(&self) -> CommitCounts {
        self.wal.counts()
    }

    fn publish(&self, state: MessageState) {
        // No watchers is fine.
        let _ = self.updates.send(state);
    }
}

/// Moves `key`'s entry in the time index `index` from `old` (when it had
/// one) to `new`, so the sweep finds the record at its new time only.
fn reindex(
    w: &mut wal::Section<'_>,
    index: Tree,
    key: &[u8],
    old: Option<DateTime<Utc>>,
    new: DateTime<Utc>,
) {
    if let Some(old) = old {
        w.remove(index, keys::timed(old, key));
    }
    w.insert(index, keys::timed(new, key), IVec::default());
}

#[async_trait]
impl Storage for SledStore {
    async fn record_inbound(
        &self,
        pair: &Pair,
        message_id: &InboundMessageId,
        inbound: &Inbound,
        plan: Planner<'_, InboundSnapshot, InboundPlan>,
    ) -> Result<InboundPlan, StoreError> {
        self.write_inbound(pair, message_id, inbound, plan).await
    }

    async fn window(&self, pair: &Pair) -> Result<Option<Window>, StoreError> {
        self.settled().await?.read_window(pair)
    }

    async fn send_snapshot(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
    ) -> Result<SendSnapshot, StoreError> {
        self.read_send_snapshot(request, limit).await
    }

    async fn send(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
        plan: Planner<'_, SendSnapshot, SendPlan>,
    ) -> Result<SendOutcome, StoreError> {
        self.write_send(request, limit, plan).await
    }

    async fn message(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
        self.settled().await?.message_state(id)
    }

    async fn template(&self, id: &TemplateId) -> Result<Option<Template>, StoreError> {
        self.settled().await?.read_template(id)
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.settled().await?.read_account(id)
    }

    async fn sync_templates(
        &self,
        account: &AccountId,
        plan: Planner<'_, Vec<Template>, SyncPlan>,
    ) -> Result<SyncPlan, StoreError> {
        self.sync_account_templates(account, plan).await
    }

    async fn change_account(
        &self,
        id: &AccountId,
        plan: Planner<'_, Option<Account>, AccountWrite>,
    ) -> Result<AccountWrite, StoreError> {
        self.write_account(id, plan).await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.settled().await?.all_accounts()
    }

    async fn register_number(
        &self,
        number: &PhoneNumber,
        phone_number_id: Option<&PhoneNumberId>,
        account: &AccountId,
        plan: Planner<'_, NumberSnapshot, NumberWrite>,
    ) -> Result<NumberWrite, StoreError> {
        self.write_number(number, phone_number_id, account, plan)
            .await
    }

    async fn window_and_consent(
        &self,
        pair: &Pair,
    ) -> Result<(Option<Window>, Option<Consent>), StoreError> {
        let t = self.settled().await?;
        Ok((t.read_window(pair)?, t.read_consent(pair)?))
    }

    async fn consent(&self, pair: &Pair) -> Result<Option<Consent>, StoreError> {
        self.settled().await?.read_consent(pair)
    }

    async fn change_consent(
        &self,
        pair: &Pair,
        plan: Planner<'_, Option<Consent>, Option<Consent>>,
    ) -> Result<Option<Consent>, StoreError> {
        self.write_consent(pair, plan).await
    }

    async fn business_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError> {
        self.settled().await?.read_number(number)
    }

    async fn list_numbers(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError> {
        self.settled().await?.numbers_of(account)
    }

    async fn remove_number(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        self.delete_number(number).await
    }

    async fn change_template(
        &self,
        id: &TemplateId,
        plan: Planner<'_, Option<Template>, TemplateWrite>,
    ) -> Result<(Option<Template>, TemplateWrite), StoreError> {
        self.write_template(id, plan).await
    }

    async fn list_templates(
        &self,
        account: &AccountId,
        after: Option<&TemplateId>,
        limit: usize,
        filter: &TemplateFilter,
    ) -> Result<TemplatePage, StoreError> {
        self.templates_page(account, after, limit, filter).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let t = self.settled().await?;
        let (claimed, lsn) = self.claim(&t, now, lease_until, limit)?;
        // A lease is on disk before its attempt starts, so a restart never
        // hands the same delivery out again while the lease runs.
        self.durable(lsn).await?;
        Ok(claimed)
    }

    async fn finish_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<MessageState, StoreError> {
        let (state, lsn) = self.store_attempt(claim, next, plan, learn)?;
        self.durable(lsn).await?;
        self.publish(state.clone());
        Ok(state)
    }

    async fn attach_wamid(
        &self,
        id: Uuid,
        wamid: &str,
        plan: AttachPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<Option<MessageState>, StoreError> {
        let (state, lsn) = self.attach(id, wamid, plan, learn)?;
        self.durable(lsn).await?;
        if let Some(state) = &state {
            self.publish(state.clone());
        }
        Ok(state)
    }

    async fn report_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<StatusReport, StoreError> {
        let (report, lsn) = self.apply_status(wamid, plan, learn)?;
        self.durable(lsn).await?;
        if let StatusReport::Applied(state) = &report {
            self.publish((**state).clone());
        }
        Ok(report)
    }

    async fn take_send_slot(
        &self,
        key: &str,
        plan: RatePlanner<'_>,
    ) -> Result<Result<(), TimeDelta>, StoreError> {
        self.take_slot(key, plan)
    }

    async fn sweep_step(&self, cutoffs: &Cutoffs) -> Result<SweepStep, StoreError> {
        let t = self.settled().await?;
        let store = self.clone();
        let cutoffs = *cutoffs;
        let step = tokio::task::spawn_blocking(move || store.sweep_chunks(&t, &cutoffs))
            .await
            .map_err(|error| StoreError::unavailable("sweep task", error))??;
        // Waited on so a read after the step sees what it removed, even
        // one straight from sled.
        self.flush().await?;
        Ok(step)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageState> {
        self.updates.subscribe()
    }

    /// Everything staged is on disk and in sled.
    async fn flush(&self) -> Result<(), StoreError> {
        self.wal.applied(self.wal.last_lsn()).await
    }

    async fn changes_settled(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.wal.settled())
    }

    async fn window_changes(
        &self,
        order: ChangeOrder,
        from: ChangePosition,
        through: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WindowChange>, StoreError> {
        self.settled()
            .await?
            .window_changes(order, from, through, limit)
    }

    async fn next_changes(
        &self,
        changes: &[(Pair, ChangePosition)],
    ) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
        self.settled().await?.next_changes(changes)
    }

    async fn open_windows(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let t = self.settled().await?;
        let after = keys::instant(now + chrono::TimeDelta::microseconds(1));
        let mut open = 0;
        for entry in packed::from(&t.window_expiry, &after) {
            entry?;
            open += 1;
        }
        Ok(open)
    }

    async fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.db.size_on_disk()?))
    }

    async fn list_windows(
        &self,
        query: &WindowQuery,
        after: Option<&WindowCursor>,
        limit: usize,
    ) -> Result<Vec<(Pair, Window)>, StoreError> {
        self.settled().await?.list_windows(query, after, limit)
    }

    /// Not ready while the log cannot write (reads still work).
    async fn check(&self) -> Result<(), StoreError> {
        self.wal.health()
    }
}

#[cfg(test)]
mod tests;
