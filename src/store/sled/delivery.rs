//! Delivery bookkeeping: the queue claims are taken from, the delivery
//! state beside each outbox message, wamid lookups for status webhooks.
//!
//! The queue is an index of `(next attempt time, message id)`. Claiming moves
//! an entry to the lease's end, so a message is never handed to two attempts
//! at once, and a claim whose process died is due again when its lease
//! lapses. The lease's end is the claim's fence: an outcome is stored only
//! while the delivery still waits on that same instant.

use chrono::{DateTime, Utc};
use sled::Transactional;
use uuid::Uuid;

use super::records::{DeliveryRecord, EarlyStatusRecord, OutboxRecord, encode};
use super::{
    DELIVERIES, EARLY_STATUSES, OUTBOX, SledStore, TxResult, WAMIDS, abort, corrupt, finish, keys,
    read, read_record,
};
use crate::domain::OutboxMessage;
use crate::domain::delivery::{Delivery, StatusPlan, StatusTarget};
use crate::store::{Claim, FinishPlanner, MessageState, StatusPlanner, StatusReport, StoreError};

fn message_key(id: Uuid) -> [u8; 16] {
    id.into_bytes()
}

/// A claim's fence: its lease's end, in microseconds.
fn fence(lease_until: DateTime<Utc>) -> u64 {
    lease_until.timestamp_micros() as u64
}

impl SledStore {
    pub(super) fn message_state(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
        let t = &*self.trees;
        let Some(message) =
            read::<OutboxRecord, OutboxMessage>(OUTBOX, t.outbox.get(message_key(id))?)?
        else {
            return Ok(None);
        };
        let delivery =
            read::<DeliveryRecord, Delivery>(DELIVERIES, t.deliveries.get(message_key(id))?)?;
        Ok(Some(MessageState { message, delivery }))
    }

    fn known_message(&self, id: Uuid, what: &'static str) -> Result<MessageState, StoreError> {
        self.message_state(id)?
            .ok_or_else(|| StoreError::corrupt(what, "names a missing outbox message"))
    }

    /// Claims up to `limit` deliveries due at `now` (a lapsed lease is due)
    /// until `lease_until`.
    pub(super) fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let t = &*self.trees;
        let end = keys::instant(now + chrono::TimeDelta::microseconds(1));
        let due: Vec<sled::IVec> = t
            .delivery_queue
            .range(..end.as_slice())
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()?;
        let mut claimed = Vec::with_capacity(due.len());
        for entry in due {
            let Some((_, id)) = keys::split_timed(&entry) else {
                continue;
            };
            let id = id.to_vec();
            let result = (&t.deliveries, &t.delivery_queue).transaction(
                |(deliveries, queue)| -> TxResult<Option<Delivery>> {
                    // Another claim may have moved it since the scan.
                    if queue.get(&*entry)?.is_none() {
                        return Ok(None);
                    }
                    queue.remove(&*entry)?;
                    let Some(delivery) =
                        read::<DeliveryRecord, Delivery>(DELIVERIES, deliveries.get(&id)?)?
                    else {
                        return Ok(None);
                    };
                    let leased = Delivery {
                        next_attempt_at: Some(lease_until),
                        ..delivery.clone()
                    };
                    queue.insert(keys::timed(lease_until, &id), &[])?;
                    deliveries
                        .insert(id.as_slice(), encode(&DeliveryRecord::new(&leased, true)))?;
                    Ok(Some(delivery))
                },
            );
            let Some(delivery) = finish(result)? else {
                continue;
            };
            let message = read::<OutboxRecord, OutboxMessage>(OUTBOX, t.outbox.get(&id)?)?
                .ok_or_else(|| {
                    StoreError::corrupt(DELIVERIES, "a delivery names a missing outbox message")
                })?;
            claimed.push(Claim {
                message,
                delivery,
                lease_until,
                fence: fence(lease_until),
            });
        }
        Ok(claimed)
    }

    /// Stores an attempt's outcome (or a deferral) under its claim: the new
    /// delivery state, its queue entry when another attempt is due, and the
    /// wamid, with a status that arrived before the wamid applied by `plan`.
    pub(super) fn store_attempt(
        &self,
        claim: &Claim,
        next: &Delivery,
        plan: FinishPlanner<'_>,
    ) -> Result<MessageState, StoreError> {
        let t = &*self.trees;
        let message_id = claim.message.message_id;
        let key = message_key(message_id);
        let result = (
            &t.deliveries,
            &t.delivery_queue,
            &t.wamids,
            &t.early_statuses,
            &t.early_status_age,
        )
            .transaction(|(deliveries, queue, wamids, early, early_age)| {
                let current = read::<DeliveryRecord, Delivery>(DELIVERIES, deliveries.get(key)?)?;
                let waiting_on = current.as_ref().and_then(|d| d.next_attempt_at);
                if waiting_on.map(fence) != Some(claim.fence) {
                    return abort(StoreError::LeaseLost { message_id });
                }
                if let Some(at) = waiting_on {
                    queue.remove(keys::timed(at, &key))?;
                }
                let mut seen = None;
                if let Some(wamid) = &next.wamid {
                    wamids.insert(wamid.as_bytes(), &key)?;
                    if let Some(record) = read_record::<EarlyStatusRecord>(
                        EARLY_STATUSES,
                        early.remove(wamid.as_bytes())?,
                    )? {
                        let status = record.early_status().map_err(corrupt(EARLY_STATUSES))?;
                        early_age.remove(keys::timed(status.received_at, wamid.as_bytes()))?;
                        seen = Some(status);
                    }
                }
                let next = plan(next.clone(), seen.as_ref());
                if let Some(at) = next.next_attempt_at {
                    queue.insert(keys::timed(at, &key), &[])?;
                }
                deliveries.insert(&key, encode(&DeliveryRecord::new(&next, false)))?;
                Ok(next)
            });
        let delivery = finish(result)?;
        let state = self.known_message(message_id, DELIVERIES)?;
        debug_assert_eq!(state.delivery.as_ref(), Some(&delivery));
        Ok(state)
    }

    /// Applies a status webhook for `wamid` as `plan` decides.
    pub(super) fn apply_status(
        &self,
        wamid: &str,
        plan: StatusPlanner<'_>,
    ) -> Result<StatusReport, StoreError> {
        let t = &*self.trees;
        let result = (
            &t.wamids,
            &t.deliveries,
            &t.early_statuses,
            &t.early_status_age,
        )
            .transaction(|(wamids, deliveries, early, early_age)| {
                let Some(id) = wamids.get(wamid.as_bytes())? else {
                    let seen = read_record::<EarlyStatusRecord>(
                        EARLY_STATUSES,
                        early.get(wamid.as_bytes())?,
                    )?
                    .map(|record| record.early_status().map_err(corrupt(EARLY_STATUSES)))
                    .transpose()?;
                    let StatusPlan::KeepEarly(keep) = plan(&StatusTarget::Unknown(seen.clone()))
                    else {
                        return Ok(None);
                    };
                    if let Some(seen) = &seen {
                        early_age.remove(keys::timed(seen.received_at, wamid.as_bytes()))?;
                    }
                    early.insert(wamid.as_bytes(), encode(&EarlyStatusRecord::from(&keep)))?;
                    early_age.insert(keys::timed(keep.received_at, wamid.as_bytes()), &[])?;
                    return Ok(Some(None));
                };
                let Some(delivery) =
                    read::<DeliveryRecord, Delivery>(DELIVERIES, deliveries.get(&id)?)?
                else {
                    return Ok(None);
                };
                let StatusPlan::Apply(next) = plan(&StatusTarget::Known(delivery)) else {
                    return Ok(None);
                };
                deliveries.insert(&id, encode(&DeliveryRecord::new(&next, false)))?;
                let id = Uuid::from_slice(&id).map_err(|e| StoreError::corrupt(WAMIDS, e))?;
                Ok(Some(Some(id)))
            });
        Ok(match finish(result)? {
            None => StatusReport::Unchanged,
            Some(None) => StatusReport::Early,
            Some(Some(id)) => StatusReport::Applied(Box::new(self.known_message(id, WAMIDS)?)),
        })
    }
}
