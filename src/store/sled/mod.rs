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
mod keys;
mod listing;
mod reach;
mod records;
mod rekey;
mod send_rate;
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
use crate::domain::send::{KeyRecord, SendPlan, SendSnapshot};
use crate::domain::template::{TemplateFilter, TemplateWrite};
use crate::domain::template_sync::SyncPlan;
use crate::domain::window::{InboundPlan, InboundSnapshot};
use crate::domain::window_events::{ChangeOrder, ChangePosition, WindowChange};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{
    Inbound, InboundMessageId, OutboxMessage, Pair, PhoneNumber, SendRequest, Template, TemplateId,
    Window,
};

use records::{
    DecodeError, DeliveryRecord, IdempotencyRecord, InboundRecord, OutboxRecord, WindowRecord,
    decode, encode,
};
pub(crate) use settled::Settled;
use templates::{template_from, templates_named};
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
const SCHEMA_VERSION: u8 = 2;

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
            None | Some([1]) => {
                // New, or layout 1: from here on the log comes first.
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

fn key_record(record: IdempotencyRecord) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        fingerprint: record.fingerprint,
        message_id: Uuid::from_bytes(record.message_id),
        created_at: DateTime::from_timestamp_micros(record.created_at).ok_or_else(|| {
            StoreError::corrupt(
                IDEMPOTENCY,
                format!("created_at {} out of range", record.created_at),
            )
        })?,
    })
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
        let pair_key = keys::pair(pair);
        let id = message_id.as_str().as_bytes();
        let (plan, lsn) = {
            let mut w = self.wal.section()?;
            let window: Option<Window> =
                read::<WindowRecord, _>(WINDOWS, w.get(Tree::Windows, &pair_key)?)?;
            let seen_for = read_record::<InboundRecord>(INBOUND_IDS, w.get(Tree::InboundIds, id)?)?
                .map(|seen| seen.pair().map_err(corrupt(INBOUND_IDS)))
                .transpose()?;
            let plan = plan(&InboundSnapshot {
                seen_for,
                window: window.clone(),
            })
            .map_err(StoreError::Rejected)?;
            if let Some(at) = plan.remember_at {
                let record = InboundRecord::new(
                    pair,
                    inbound.received_at,
                    inbound.kind,
                    inbound.entry_point,
                    at,
                );
                w.insert(Tree::InboundIds, id, encode(&record));
                w.insert(Tree::InboundAge, keys::timed(at, id), IVec::default());
            }
            if let Some((kind, next)) = plan.logged_change() {
                changes::log(&mut w, &pair_key, kind, pair, next);
            }
            if let Some(next) = &plan.write_window {
                reindex(
                    &mut w,
                    Tree::WindowExpiry,
                    &pair_key,
                    window.as_ref().map(|current| current.expires_at),
                    next.expires_at,
                );
                w.insert(Tree::Windows, pair_key, encode(&WindowRecord::from(next)));
            }
            (plan, w.commit())
        };
        // Duplicates wait too: the first recording may still be in flight.
        self.durable(lsn).await?;
        Ok(plan)
    }

    async fn window(&self, pair: &Pair) -> Result<Option<Window>, StoreError> {
        self.settled().await?.read_window(pair)
    }

    async fn send_snapshot(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
    ) -> Result<SendSnapshot, StoreError> {
        let t = self.settled().await?;
        let key = request.idempotency_key.as_str().as_bytes();
        let mut snapshot = SendSnapshot {
            first: read_record::<IdempotencyRecord>(IDEMPOTENCY, t.idempotency.get(key)?)?
                .map(key_record)
                .transpose()?,
            window: t.read_window(&request.pair)?,
            consent: match request.content {
                crate::domain::Content::Template { .. } => t.read_consent(&request.pair)?,
                _ => None,
            },
            ..t.send_registry(request)?
        };
        if let Some(scope) = limit(&snapshot) {
            snapshot.limit = Some(reach::read(&t, &scope, &request.pair.customer)?);
        }
        Ok(snapshot)
    }

    async fn send(
        &self,
        request: &SendRequest,
        limit: LimitScoper<'_>,
        plan: Planner<'_, SendSnapshot, SendPlan>,
    ) -> Result<SendOutcome, StoreError> {
        let key = request.idempotency_key.as_str().as_bytes();
        let pair_key = keys::pair(&request.pair);
        let registry = self.settled().await?.send_registry(request)?;
        let (outcome, stored, lsn) = {
            let mut w = self.wal.section()?;
            let mut snapshot = SendSnapshot {
                first: read_record::<IdempotencyRecord>(
                    IDEMPOTENCY,
                    w.get(Tree::Idempotency, key)?,
                )?
                .map(key_record)
                .transpose()?,
                window: read::<WindowRecord, Window>(WINDOWS, w.get(Tree::Windows, &pair_key)?)?,
                consent: match request.content {
                    crate::domain::Content::Template { .. } => consent::read_in(&w, &request.pair)?,
                    _ => None,
                },
                ..registry
            };
            if let Some(scope) = limit(&snapshot) {
                snapshot.limit = Some(reach::read_in(&w, &scope, &request.pair.customer)?);
            }
            match plan(&snapshot).map_err(StoreError::Rejected)? {
                SendPlan::Replay { message_id } => {
                    let stored = w.get(Tree::Outbox, &message_id.into_bytes())?;
                    let Some(message) = read::<OutboxRecord, OutboxMessage>(OUTBOX, stored)? else {
                        return Err(StoreError::corrupt(
                            OUTBOX,
                            "idempotency record names a missing message",
                        ));
                    };
                    (SendOutcome::Replayed(message), None, w.commit())
                }
                SendPlan::Accept(accepted) => {
                    let message = &accepted.message;
                    let id = message.message_id.into_bytes();
                    if let Some(expired) = &accepted.expired {
                        w.remove(Tree::IdempotencyAge, keys::timed(expired.created_at, key));
                    }
                    // The message before the key that names it, the delivery
                    // before its queue entry: a reader never follows a
                    // reference to nothing.
                    w.insert(Tree::Outbox, id, encode(&OutboxRecord::from(message)));
                    let record = IdempotencyRecord {
                        fingerprint: accepted.key.fingerprint,
                        message_id: accepted.key.message_id.into_bytes(),
                        created_at: accepted.key.created_at.timestamp_micros(),
                    };
                    w.insert(Tree::Idempotency, key, encode(&record));
                    w.insert(
                        Tree::IdempotencyAge,
                        keys::timed(accepted.key.created_at, key),
                        IVec::default(),
                    );
                    if let Some(window) = &accepted.window {
                        w.insert(Tree::Windows, pair_key, encode(&WindowRecord::from(window)));
                    }
                    if let Some(reach) = &accepted.reach {
                        reach::write_in(&mut w, &request.pair.customer, reach)?;
                    }
                    if let Some(delivery) = &accepted.delivery {
                        w.insert(
                            Tree::Deliveries,
                            id,
                            encode(&DeliveryRecord::new(delivery, false)),
                        );
                        if let Some(at) = delivery.next_attempt_at {
                            w.insert(Tree::DeliveryQueue, keys::timed(at, &id), IVec::default());
                        }
                    }
                    let state = MessageState {
                        message: message.clone(),
                        delivery: accepted.delivery.clone(),
                    };
                    (
                        SendOutcome::Accepted(message.clone()),
                        Some(state),
                        w.commit(),
                    )
                }
            }
        };
        // Replays wait too: the first send may still be in flight.
        self.durable(lsn).await?;
        if let Some(state) = stored {
            self.publish(state);
        }
        Ok(outcome)
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
        for entry in t.window_expiry.range(after.as_slice()..).keys() {
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
