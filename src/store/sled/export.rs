//! Reads every record out, in backend-neutral form, for moving a data
//! directory into another store (`wagate migrate`).

use chrono::DateTime;

use super::records::{
    DeliveryRecord, EarlyStatusRecord, IdempotencyRecord, InboundRecord, OutboxRecord,
    WindowRecord, decode,
};
use super::sends::key_record;
use super::templates::template_from;
use super::{
    DELIVERIES, EARLY_STATUSES, IDEMPOTENCY, INBOUND_IDS, OUTBOX, Settled, TEMPLATES, WINDOWS,
    corrupt, read,
};
use crate::domain::delivery::Delivery;
use crate::domain::{IdempotencyKey, InboundMessageId, OutboxMessage, Pair, PhoneNumber};
use crate::store::{MessageState, Record, StoreError};

fn text(tree: &'static str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| StoreError::corrupt(tree, e))
}

/// A window's key, `business \0 customer`, back to its pair.
pub(super) fn pair_of(key: &[u8]) -> Result<Pair, StoreError> {
    let key = text(WINDOWS, key)?;
    let (business, customer) = key
        .split_once('\0')
        .ok_or_else(|| StoreError::corrupt(WINDOWS, "a key without its separator"))?;
    let phone =
        |n: &str| PhoneNumber::parse(n).map_err(|e| StoreError::corrupt(WINDOWS, e.description()));
    Ok(Pair {
        business: phone(business)?,
        customer: phone(customer)?,
    })
}

impl Settled {
    /// Every record, kind by kind, each in key order.
    pub(crate) fn export(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        let t = &**self;
        let windows = t.windows.iter().map(|entry| {
            let (key, value) = entry?;
            Ok(Record::Window {
                pair: pair_of(&key)?,
                window: read::<WindowRecord, _>(WINDOWS, Some(value))?
                    .ok_or_else(|| StoreError::corrupt(WINDOWS, "empty"))?,
            })
        });
        let inbound = t.inbound_ids.iter().map(|entry| {
            let (key, value) = entry?;
            let record: InboundRecord = decode(&value).map_err(corrupt(INBOUND_IDS))?;
            Ok(Record::InboundId {
                id: InboundMessageId::parse(&text(INBOUND_IDS, &key)?)
                    .map_err(|e| StoreError::corrupt(INBOUND_IDS, e.description()))?,
                pair: record.pair().map_err(corrupt(INBOUND_IDS))?,
                inbound: record.inbound().map_err(corrupt(INBOUND_IDS))?,
                recorded_at: DateTime::from_timestamp_micros(record.recorded_at)
                    .ok_or_else(|| StoreError::corrupt(INBOUND_IDS, "recorded_at out of range"))?,
            })
        });
        let templates = t.templates.iter().map(|entry| {
            let (key, value) = entry?;
            let template = template_from(&key, Some(value))?
                .ok_or_else(|| StoreError::corrupt(TEMPLATES, "empty"))?;
            Ok(Record::Template(Box::new(template)))
        });
        let messages = t.outbox.iter().map(move |entry| {
            let (key, value) = entry?;
            let message = read::<OutboxRecord, OutboxMessage>(OUTBOX, Some(value))?
                .ok_or_else(|| StoreError::corrupt(OUTBOX, "empty"))?;
            let delivery = read::<DeliveryRecord, Delivery>(DELIVERIES, t.deliveries.get(&key)?)?;
            Ok(Record::Message(Box::new(MessageState {
                message,
                delivery,
            })))
        });
        let keys = t.idempotency.iter().map(|entry| {
            let (key, value) = entry?;
            let record: IdempotencyRecord = decode(&value).map_err(corrupt(IDEMPOTENCY))?;
            Ok(Record::Key {
                key: IdempotencyKey::parse(&text(IDEMPOTENCY, &key)?)
                    .map_err(|e| StoreError::corrupt(IDEMPOTENCY, e.description()))?,
                record: key_record(record)?,
            })
        });
        let early = t.early_statuses.iter().map(|entry| {
            let (key, value) = entry?;
            let record: EarlyStatusRecord = decode(&value).map_err(corrupt(EARLY_STATUSES))?;
            Ok(Record::EarlyStatus {
                wamid: text(EARLY_STATUSES, &key)?,
                status: record.early_status().map_err(corrupt(EARLY_STATUSES))?,
            })
        });
        // Few: read at once.
        let accounts: Vec<Result<Record, StoreError>> = match self.all_accounts() {
            Ok(all) => all.into_iter().map(|a| Ok(Record::Account(a))).collect(),
            Err(error) => vec![Err(error)],
        };
        let numbers: Vec<Result<Record, StoreError>> = match self.numbers_of(None) {
            Ok(all) => all.into_iter().map(|n| Ok(Record::Number(n))).collect(),
            Err(error) => vec![Err(error)],
        };
        let consent: Vec<Result<Record, StoreError>> = match self.all_consent() {
            Ok(all) => all
                .into_iter()
                .map(|(pair, consent)| Ok(Record::Consent { pair, consent }))
                .collect(),
            Err(error) => vec![Err(error)],
        };
        let limit: Vec<Result<Record, StoreError>> = match self.limit_records() {
            Ok(all) => all.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        // Templates before messages, messages before keys: a reader of a
        // half-copied target never finds a key naming a missing message.
        // Accounts before their numbers, which refer to them.
        windows
            .chain(inbound)
            .chain(templates)
            .chain(messages)
            .chain(keys)
            .chain(early)
            .chain(accounts)
            .chain(numbers)
            .chain(consent)
            .chain(limit)
    }
}
