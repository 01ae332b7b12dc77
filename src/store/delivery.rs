//! Delivery bookkeeping: the queue the worker claims from, the delivery
//! state beside each outbox message, wamid lookups for status webhooks, and
//! the broadcast of changes to watchers.
//!
//! The queue is an index of `(next attempt time, message id)`. Claiming moves
//! an entry a lease ahead, so a message is never handed to two attempts at
//! once; a crash leaves claims behind, which the next process releases.

use chrono::{DateTime, TimeDelta, Utc};
use sled::Transactional;
use uuid::Uuid;

use super::records::{DeliveryRecord, EarlyStatusRecord, OutboxRecord, decode, encode};
use super::{
    DELIVERIES, EARLY_STATUSES, OUTBOX, Store, StoreError, TxResult, WAMIDS, corrupt, finish, keys,
    read, read_record,
};
use crate::domain::OutboxMessage;
use crate::domain::delivery::{Delivery, DeliveryError, DeliveryStatus};

/// An outbound message and its delivery; `delivery` is `None` for a message
/// accepted while delivery was off (record-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub message: OutboxMessage,
    pub delivery: Option<Delivery>,
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

fn message_key(id: Uuid) -> [u8; 16] {
    id.into_bytes()
}

impl Store {
    pub fn message_state(&self, id: Uuid) -> Result<Option<MessageState>, StoreError> {
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

    /// Every change stored from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageState> {
        self.updates.subscribe()
    }

    pub(super) fn publish(&self, state: MessageState) {
        // No watchers is fine.
        let _ = self.updates.send(state);
    }

    /// Makes every delivery a previous process had claimed due at `now`.
    /// Only one process opens the store, so any claim found is stale.
    pub fn release_claims(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let t = &*self.trees;
        let mut released = 0;
        for entry in t.delivery_queue.iter().keys() {
            let entry = entry?;
            let Some((_, id)) = keys::split_timed(&entry) else {
                continue;
            };
            let id = id.to_vec();
            let result = (&t.deliveries, &t.delivery_queue).transaction(|(deliveries, queue)| {
                let Some(bytes) = deliveries.get(&id)? else {
                    queue.remove(&*entry)?;
                    return Ok(false);
                };
                let record: DeliveryRecord = decode(&bytes).map_err(corrupt(DELIVERIES))?;
                if !record.claimed {
                    return Ok(false);
                }
                let delivery = Delivery::try_from(record).map_err(corrupt(DELIVERIES))?;
                queue.remove(&*entry)?;
                queue.insert(keys::timed(now, &id), &[])?;
                let released = Delivery {
                    next_attempt_at: Some(now),
                    ..delivery
                };
                deliveries.insert(
                    id.as_slice(),
                    encode(&DeliveryRecord::new(&released, false)),
                )?;
                Ok(true)
            });
            if finish(result)? {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Claims up to `limit` deliveries due at `now` for one attempt each,
    /// pushing them `lease` ahead so no other attempt takes them meanwhile.
    pub fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: usize,
    ) -> Result<Vec<(OutboxMessage, Delivery)>, StoreError> {
        let t = &*self.trees;
        let end = keys::instant(now + TimeDelta::microseconds(1));
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
            let until = now + lease;
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
                        next_attempt_at: Some(until),
                        ..delivery.clone()
                    };
                    queue.insert(keys::timed(until, &id), &[])?;
                    deliveries
                        .insert(id.as_slice(), encode(&DeliveryRecord::new(&leased, true)))?;
                    Ok(Some(delivery))
                },
            );
            let Some(delivery) = finish(result)? else {
                continue;
            };
            let message = read::<OutboxRecord, OutboxMessage>(OUTBOX, t.outbox.get(&id)?)?
                .ok_or_else(|| StoreError::Corrupt {
                    tree: DELIVERIES,
                    detail: "a delivery names a missing outbox message".into(),
                })?;
            claimed.push((message, delivery));
        }
        Ok(claimed)
    }

    /// Stores the outcome of an attempt (or a deferral): the new delivery
    /// state, its queue entry when another attempt is due, and the wamid. A
    /// status webhook that arrived before the wamid is applied now.
    pub async fn finish_attempt(
        &self,
        id: Uuid,
        next: &Delivery,
        now: DateTime<Utc>,
    ) -> Result<MessageState, StoreError> {
        let t = &*self.trees;
        let key = message_key(id);
        let result = (
            &t.deliveries,
            &t.delivery_queue,
            &t.wamids,
            &t.early_statuses,
            &t.early_status_age,
        )
            .transaction(|(deliveries, queue, wamids, early, early_age)| {
                let current = read::<DeliveryRecord, Delivery>(DELIVERIES, deliveries.get(key)?)?;
                if let Some(at) = current.as_ref().and_then(|d| d.next_attempt_at) {
                    queue.remove(keys::timed(at, &key))?;
                }
                let mut next = next.clone();
                if let Some(wamid) = &next.wamid {
                    wamids.insert(wamid.as_bytes(), &key)?;
                    if let Some(seen) = read_record::<EarlyStatusRecord>(
                        EARLY_STATUSES,
                        early.remove(wamid.as_bytes())?,
                    )? {
                        let received_at =
                            DateTime::from_timestamp_micros(seen.received_at).unwrap_or(now);
                        early_age.remove(keys::timed(received_at, wamid.as_bytes()))?;
                        let (status, error) = seen.report().map_err(corrupt(EARLY_STATUSES))?;
                        if let Some(reported) = next.report(status, error, now) {
                            next = reported;
                        }
                    }
                }
                if let Some(at) = next.next_attempt_at {
                    queue.insert(keys::timed(at, &key), &[])?;
                }
                deliveries.insert(&key, encode(&DeliveryRecord::new(&next, false)))?;
                Ok(next)
            });
        let delivery = finish(result)?;
        self.durable().await?;
        let state = self.message_state(id)?.ok_or_else(|| StoreError::Corrupt {
            tree: OUTBOX,
            detail: "a delivery names a missing outbox message".into(),
        })?;
        debug_assert_eq!(state.delivery.as_ref(), Some(&delivery));
        self.publish(state.clone());
        Ok(state)
    }

    /// Applies a status webhook for `wamid`.
    pub async fn report_status(
        &self,
        wamid: &str,
        status: DeliveryStatus,
        error: Option<&DeliveryError>,
        now: DateTime<Utc>,
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
                    )?;
                    if let Some(seen) = &seen {
                        let (known, _) = seen.report().map_err(corrupt(EARLY_STATUSES))?;
                        if !known.advances_to(status) {
                            return Ok(None);
                        }
                        let received_at =
                            DateTime::from_timestamp_micros(seen.received_at).unwrap_or(now);
                        early_age.remove(keys::timed(received_at, wamid.as_bytes()))?;
                    }
                    early.insert(
                        wamid.as_bytes(),
                        encode(&EarlyStatusRecord::new(status, error, now)),
                    )?;
                    early_age.insert(keys::timed(now, wamid.as_bytes()), &[])?;
                    return Ok(Some(None));
                };
                let Some(delivery) =
                    read::<DeliveryRecord, Delivery>(DELIVERIES, deliveries.get(&id)?)?
                else {
                    return Ok(None);
                };
                let Some(next) = delivery.report(status, error.cloned(), now) else {
                    return Ok(None);
                };
                deliveries.insert(&id, encode(&DeliveryRecord::new(&next, false)))?;
                Ok(Some(Some(Uuid::from_slice(&id).map_err(|e| {
                    StoreError::Corrupt {
                        tree: WAMIDS,
                        detail: e.to_string(),
                    }
                })?)))
            });
        let outcome = match finish(result)? {
            None => return Ok(StatusReport::Unchanged),
            Some(None) => StatusReport::Early,
            Some(Some(id)) => {
                let state = self.message_state(id)?.ok_or_else(|| StoreError::Corrupt {
                    tree: WAMIDS,
                    detail: "a wamid names a missing outbox message".into(),
                })?;
                StatusReport::Applied(Box::new(state))
            }
        };
        self.durable().await?;
        if let StatusReport::Applied(state) = &outcome {
            self.publish((**state).clone());
        }
        Ok(outcome)
    }
}
