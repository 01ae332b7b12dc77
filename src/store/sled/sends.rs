//! SendMessage on sled: the snapshot a send plans on and the writes of an
//! accepted send (the message, its idempotency key, the delivery and its
//! queue entry, the window, the messaging-limit reach), in one section.
//! The registries (the sending number, the template in every account, the
//! accounts) are read from sled before the section opens, as
//! `Settled::send_registry` explains.

use chrono::DateTime;
use sled::IVec;
use uuid::Uuid;

use super::records::{DeliveryRecord, IdempotencyRecord, OutboxRecord, WindowRecord, encode};
use super::wal::Tree;
use super::{IDEMPOTENCY, OUTBOX, SledStore, WINDOWS, consent, keys, reach, read, read_record};
use crate::domain::send::{KeyRecord, SendPlan, SendSnapshot};
use crate::domain::{OutboxMessage, SendRequest, Window};
use crate::store::{LimitScoper, MessageState, Planner, SendOutcome, StoreError};

/// An idempotency key's stored record, as the domain reads it.
pub(super) fn key_record(record: IdempotencyRecord) -> Result<KeyRecord, StoreError> {
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

impl SledStore {
    pub(super) async fn read_send_snapshot(
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

    pub(super) async fn write_send(
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
}
