//! Delivery bookkeeping: the queue claims are taken from, the delivery
//! state beside each outbox message, wamid lookups for status webhooks.
//!
//! The queue is an index of `(next attempt time, message id)`. Claiming moves
//! an entry to the lease's end, so a message is never handed to two attempts
//! at once, and a claim whose process died is due again when its lease
//! lapses. The lease's end is the claim's fence: an outcome is stored only
//! while the delivery still waits on that same instant.

use chrono::{DateTime, Utc};
use sled::IVec;
use uuid::Uuid;

use super::records::{DeliveryRecord, EarlyStatusRecord, OutboxRecord, encode};
use super::wal::{Section, Tree};
use super::{
    DELIVERIES, EARLY_STATUSES, OUTBOX, Settled, SledStore, WAMIDS, consent, corrupt, keys, read,
    read_record,
};
use crate::domain::OutboxMessage;
use crate::domain::delivery::{Delivery, EarlyStatus, StatusPlan, StatusTarget};
use crate::store::{
    AttachPlanner, Claim, ConsentLearner, FinishPlanner, MessageState, StatusPlanner, StatusReport,
    StoreError,
};

fn message_key(id: Uuid) -> [u8; 16] {
    id.into_bytes()
}

/// The outbox message a record in `what` names, as the section sees it: one
/// that is missing means the store is corrupt.
fn known_message(
    w: &Section<'_>,
    id: &[u8],
    what: &'static str,
) -> Result<OutboxMessage, StoreError> {
    read::<OutboxRecord, OutboxMessage>(OUTBOX, w.get(Tree::Outbox, id)?)?
        .ok_or_else(|| StoreError::corrupt(what, "names a missing outbox message"))
}

/// Removes and returns the status kept for `wamid` until its message knew it.
fn take_early(w: &mut Section<'_>, wamid: &str) -> Result<Option<EarlyStatus>, StoreError> {
    let early = w.take(Tree::EarlyStatuses, wamid.as_bytes())?;
    let Some(record) = read_record::<EarlyStatusRecord>(EARLY_STATUSES, early)? else {
        return Ok(None);
    };
    let status = record.early_status().map_err(corrupt(EARLY_STATUSES))?;
    w.remove(
        Tree::EarlyStatusAge,
        keys::timed(status.received_at, wamid.as_bytes()),
    );
    Ok(Some(status))
}

/// A claim's fence: its lease's end, in microseconds.
fn fence(lease_until: DateTime<Utc>) -> u64 {
    lease_until.timestamp_micros() as u64
}

impl Settled {
    pub(super) fn message_state(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
        let t = &**self;
        let Some(message) =
            read::<OutboxRecord, OutboxMessage>(OUTBOX, t.outbox.get(message_key(id))?)?
        else {
            return Ok(None);
        };
        let delivery =
            read::<DeliveryRecord, Delivery>(DELIVERIES, t.deliveries.get(message_key(id))?)?;
        Ok(Some(MessageState { message, delivery }))
    }
}

impl SledStore {
    /// Claims up to `limit` deliveries due at `now` (a lapsed lease is due)
    /// until `lease_until`: found in `t`, each checked again in the section.
    pub(super) fn claim(
        &self,
        t: &Settled,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<Claim>, u64), StoreError> {
        let end = keys::instant(now + chrono::TimeDelta::microseconds(1));
        let due: Vec<sled::IVec> = t
            .delivery_queue
            .range(..end.as_slice())
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()?;
        let mut claimed = Vec::with_capacity(due.len());
        let mut w = self.wal.section()?;
        for entry in due {
            let Some((_, id)) = keys::split_timed(&entry) else {
                continue;
            };
            let id = id.to_vec();
            // Another claim may have moved it since the scan.
            if w.get(Tree::DeliveryQueue, &entry)?.is_none() {
                continue;
            }
            w.remove(Tree::DeliveryQueue, &*entry);
            let Some(delivery) =
                read::<DeliveryRecord, Delivery>(DELIVERIES, w.get(Tree::Deliveries, &id)?)?
            else {
                continue;
            };
            let leased = Delivery {
                next_attempt_at: Some(lease_until),
                ..delivery.clone()
            };
            w.insert(
                Tree::DeliveryQueue,
                keys::timed(lease_until, &id),
                IVec::default(),
            );
            w.insert(
                Tree::Deliveries,
                id.as_slice(),
                encode(&DeliveryRecord::new(&leased, true)),
            );
            let message = known_message(&w, &id, DELIVERIES)?;
            claimed.push(Claim {
                message,
                delivery,
                lease_until,
                fence: fence(lease_until),
            });
        }
        Ok((claimed, w.commit()))
    }

    /// Stores an attempt's outcome (or a deferral) under its claim: the new
    /// delivery state, its queue entry when another attempt is due, and the
    /// wamid, with a status that arrived before the wamid applied by `plan`.
    pub(super) fn store_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<(MessageState, u64), StoreError> {
        let message_id = claim.message.message_id;
        let key = message_key(message_id);
        let mut w = self.wal.section()?;
        let current = read::<DeliveryRecord, Delivery>(DELIVERIES, w.get(Tree::Deliveries, &key)?)?;
        let waiting_on = current.as_ref().and_then(|d| d.next_attempt_at);
        if waiting_on.map(fence) != Some(claim.fence) {
            return Err(StoreError::LeaseLost { message_id });
        }
        if let Some(at) = waiting_on {
            w.remove(Tree::DeliveryQueue, keys::timed(at, &key));
        }
        let mut seen = None;
        if let Some(wamid) = &next.wamid {
            w.insert(Tree::Wamids, wamid.as_bytes(), key.as_slice());
            seen = take_early(&mut w, wamid)?;
        }
        let next = plan(next.clone(), seen.as_ref());
        if let Some(at) = next.next_attempt_at {
            w.insert(Tree::DeliveryQueue, keys::timed(at, &key), IVec::default());
        }
        w.insert(
            Tree::Deliveries,
            key,
            encode(&DeliveryRecord::new(&next, false)),
        );
        let message = known_message(&w, &key, DELIVERIES)?;
        let state = MessageState {
            message,
            delivery: Some(next),
        };
        consent::learn_in(&mut w, &state, learn)?;
        Ok((state, w.commit()))
    }

    /// Gives message `message_id` the provider id `wamid` as `plan` decides;
    /// moving its delivery off its queue entry fences off any claim.
    pub(super) fn attach(
        &self,
        message_id: Uuid,
        wamid: &str,
        plan: AttachPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<(Option<MessageState>, u64), StoreError> {
        let key = message_key(message_id);
        let mut w = self.wal.section()?;
        let current = read::<DeliveryRecord, Delivery>(DELIVERIES, w.get(Tree::Deliveries, &key)?)?;
        let Some(current) = current else {
            return Ok((None, w.commit()));
        };
        if w.get(Tree::Wamids, wamid.as_bytes())?.is_some() {
            return Ok((None, w.commit()));
        }
        let early = read_record::<EarlyStatusRecord>(
            EARLY_STATUSES,
            w.get(Tree::EarlyStatuses, wamid.as_bytes())?,
        )?
        .map(|record| record.early_status().map_err(corrupt(EARLY_STATUSES)))
        .transpose()?;
        let Some(next) = plan(&current, early.as_ref()) else {
            return Ok((None, w.commit()));
        };
        if let Some(at) = current.next_attempt_at {
            w.remove(Tree::DeliveryQueue, keys::timed(at, &key));
        }
        if let Some(at) = next.next_attempt_at {
            w.insert(Tree::DeliveryQueue, keys::timed(at, &key), IVec::default());
        }
        w.insert(Tree::Wamids, wamid.as_bytes(), key.as_slice());
        take_early(&mut w, wamid)?;
        w.insert(
            Tree::Deliveries,
            key,
            encode(&DeliveryRecord::new(&next, false)),
        );
        let message = known_message(&w, &key, DELIVERIES)?;
        let state = MessageState {
            message,
            delivery: Some(next),
        };
        consent::learn_in(&mut w, &state, learn)?;
        Ok((Some(state), w.commit()))
    }

    /// Applies a status webhook for `wamid` as `plan` decides.
    pub(super) fn apply_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
        learn: ConsentLearner<'_>,
    ) -> Result<(StatusReport, u64), StoreError> {
        let mut w = self.wal.section()?;
        let Some(id) = w.get(Tree::Wamids, wamid.as_bytes())? else {
            let seen = read_record::<EarlyStatusRecord>(
                EARLY_STATUSES,
                w.get(Tree::EarlyStatuses, wamid.as_bytes())?,
            )?
            .map(|record| record.early_status().map_err(corrupt(EARLY_STATUSES)))
            .transpose()?;
            let StatusPlan::KeepEarly(keep) = plan(&StatusTarget::Unknown(seen.clone())) else {
                return Ok((StatusReport::Unchanged, w.commit()));
            };
            if let Some(seen) = &seen {
                w.remove(
                    Tree::EarlyStatusAge,
                    keys::timed(seen.received_at, wamid.as_bytes()),
                );
            }
            w.insert(
                Tree::EarlyStatuses,
                wamid.as_bytes(),
                encode(&EarlyStatusRecord::from(&keep)),
            );
            w.insert(
                Tree::EarlyStatusAge,
                keys::timed(keep.received_at, wamid.as_bytes()),
                IVec::default(),
            );
            return Ok((StatusReport::Early, w.commit()));
        };
        let Some(delivery) =
            read::<DeliveryRecord, Delivery>(DELIVERIES, w.get(Tree::Deliveries, &id)?)?
        else {
            return Ok((StatusReport::Unchanged, w.commit()));
        };
        let StatusPlan::Apply(next) = plan(&StatusTarget::Known(delivery)) else {
            return Ok((StatusReport::Unchanged, w.commit()));
        };
        w.insert(
            Tree::Deliveries,
            id.to_vec(),
            encode(&DeliveryRecord::new(&next, false)),
        );
        let message = known_message(&w, &id, WAMIDS)?;
        let state = MessageState {
            message,
            delivery: Some(next),
        };
        consent::learn_in(&mut w, &state, learn)?;
        Ok((StatusReport::Applied(Box::new(state)), w.commit()))
    }
}
