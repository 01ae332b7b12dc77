//! The reads and writes the PostgreSQL use cases share: one function a
//! statement (or a few sent together), each taking the transaction it runs in.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{accounts, conn, consent, reach, rows};
use crate::domain::delivery::{Delivery, EarlyStatus};
use crate::domain::send::{KeyRecord, SendSnapshot};
use crate::domain::{
    Inbound, InboundKind, InboundMessageId, OutboxMessage, Pair, SendRequest, Template, TemplateId,
    Window,
};
use crate::store::{LimitScoper, MessageState, StoreError};

pub(super) const MESSAGE_COLUMNS: &str = "o.*, d.status AS d_status, d.updated_at AS d_updated_at, \
    d.wamid, d.attempts, d.next_attempt_at, d.error_code, d.error_title, d.fence";

pub(super) async fn message_state(
    tx: &impl conn::Connection,
    id: Uuid,
) -> Result<Option<MessageState>, StoreError> {
    let row = conn::query_opt(
        tx,
        "read a message",
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox o \
                 LEFT JOIN deliveries d ON d.message_id = o.message_id WHERE o.message_id = $1"
        ),
        &[&id],
    )
    .await?;
    row.map(|row| state_of(&row)).transpose()
}

pub(super) fn state_of(row: &Row) -> Result<MessageState, StoreError> {
    let has_delivery: Option<&str> = row.get("d_status");
    Ok(MessageState {
        message: rows::outbox_message(row)?,
        delivery: has_delivery.map(|_| rows::delivery(row)).transpose()?,
    })
}

/// Adds a change to the feed, with the delivery state it wrote (`None`: a
/// message recorded without delivery).
pub(super) async fn note_change(
    tx: &impl conn::Connection,
    id: Uuid,
    delivery: Option<&Delivery>,
) -> Result<(), StoreError> {
    conn::execute(
        tx,
        "record a change",
        "INSERT INTO changes (message_id, delivery) VALUES ($1, $2)",
        &[&id, &delivery.map(rows::delivery_json)],
    )
    .await?;
    Ok(())
}

pub(super) async fn write_delivery(
    tx: &impl conn::Connection,
    id: Uuid,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let attempts = delivery.attempts as i32;
    let (code, title) = match &delivery.error {
        Some(e) => (Some(e.code), Some(e.title.as_str())),
        None => (None, None),
    };
    let status = rows::delivery_status_name(delivery.status);
    let params: conn::Params = &[
        &id,
        &status,
        &delivery.wamid,
        &attempts,
        &delivery.next_attempt_at,
        &code,
        &title,
        &delivery.updated_at,
    ];
    // Both at once: a use case may send COMMIT right behind them.
    conn::pipelined!(
        conn::execute(
            tx,
            "write a delivery",
            "INSERT INTO deliveries (message_id, status, wamid, attempts, next_attempt_at, \
                error_code, error_title, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (message_id) DO UPDATE SET status = EXCLUDED.status, \
                wamid = EXCLUDED.wamid, attempts = EXCLUDED.attempts, \
                next_attempt_at = EXCLUDED.next_attempt_at, error_code = EXCLUDED.error_code, \
                error_title = EXCLUDED.error_title, updated_at = EXCLUDED.updated_at",
            params,
        ),
        note_change(tx, id, Some(delivery)),
    )?;
    Ok(())
}

pub(super) async fn write_window(
    tx: &impl conn::Connection,
    pair: &Pair,
    w: &Window,
) -> Result<(), StoreError> {
    conn::execute(
        tx,
        "write a window",
        "INSERT INTO windows (business, customer, last_inbound_at, expires_at, \
            free_entry_deadline, free_until) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (business, customer) DO UPDATE SET \
            last_inbound_at = EXCLUDED.last_inbound_at, expires_at = EXCLUDED.expires_at, \
            free_entry_deadline = EXCLUDED.free_entry_deadline, free_until = EXCLUDED.free_until",
        &[
            &pair.business.as_str(),
            &pair.customer.as_str(),
            &w.last_inbound_at,
            &w.expires_at,
            &w.free_entry_deadline,
            &w.free_until,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn read_window(
    db: &impl conn::Connection,
    pair: &Pair,
) -> Result<Option<Window>, StoreError> {
    Ok(conn::query_opt(
        &db,
        "read a window",
        "SELECT * FROM windows WHERE business = $1 AND customer = $2",
        &[&pair.business.as_str(), &pair.customer.as_str()],
    )
    .await?
    .map(|row| rows::window(&row)))
}

pub(super) async fn read_template(
    tx: &impl conn::Connection,
    id: &TemplateId,
) -> Result<Option<Template>, StoreError> {
    conn::query_opt(
        tx,
        "read a template",
        "SELECT * FROM templates WHERE name = $1 AND language = $2 AND account = $3",
        &[&id.name(), &id.language(), &id.account().as_str()],
    )
    .await?
    .map(|row| rows::template(&row))
    .transpose()
}

/// The template named as `id` is, in every account that has one.
async fn read_templates_named(
    tx: &impl conn::Connection,
    id: &TemplateId,
) -> Result<Vec<Template>, StoreError> {
    conn::query(
        tx,
        "read a template in every account",
        "SELECT * FROM templates WHERE name = $1 AND language = $2",
        &[&id.name(), &id.language()],
    )
    .await?
    .iter()
    .map(rows::template)
    .collect()
}

/// What a send reads in one round trip; the messaging limit's records,
/// whose scope depends on what this read, come after (see `send_limit`).
pub(super) async fn send_snapshot(
    tx: &impl conn::Connection,
    request: &SendRequest,
) -> Result<SendSnapshot, StoreError> {
    let key = request.idempotency_key.as_str();
    let template = request.content.template_id();
    let (first, window, templates, sender, any_account, consent, accounts) = conn::pipelined!(
        read_key(tx, key),
        read_window(tx, &request.pair),
        async {
            match template {
                Some(id) => read_templates_named(tx, id).await,
                None => Ok(Vec::new()),
            }
        },
        accounts::read_number(tx, &request.pair.business),
        accounts::any_account(tx),
        async {
            match template {
                Some(_) => consent::read(tx, &request.pair).await,
                None => Ok(None),
            }
        },
        async {
            match template {
                Some(_) => accounts::read_sending_accounts(tx, &request.pair.business).await,
                None => Ok(Vec::new()),
            }
        },
    )?;
    Ok(SendSnapshot {
        first,
        window,
        templates,
        sender,
        any_account,
        consent,
        accounts,
        limit: None,
    })
}

/// The send's snapshot with the messaging limit's records, when `limit`
/// names a scope for it: one more round trip, for limited templates only.
pub(super) async fn send_limit(
    tx: &impl conn::Connection,
    request: &SendRequest,
    mut snapshot: SendSnapshot,
    limit: LimitScoper<'_>,
) -> Result<SendSnapshot, StoreError> {
    if let Some(scope) = limit(&snapshot) {
        snapshot.limit = Some(reach::read(tx, &scope, &request.pair.customer).await?);
    }
    Ok(snapshot)
}

async fn read_key(tx: &impl conn::Connection, key: &str) -> Result<Option<KeyRecord>, StoreError> {
    let row = conn::query_opt(
        tx,
        "read an idempotency key",
        "SELECT * FROM idempotency_keys WHERE key = $1",
        &[&key],
    )
    .await?;
    row.map(|row| {
        let fingerprint: Vec<u8> = row.get("fingerprint");
        Ok(KeyRecord {
            fingerprint: fingerprint.try_into().map_err(|_| {
                StoreError::corrupt("idempotency_keys", "fingerprint is not 32 bytes")
            })?,
            message_id: row.get("message_id"),
            created_at: row.get("created_at"),
        })
    })
    .transpose()
}

/// The pair an inbound id was recorded for, if it was.
pub(super) async fn read_inbound_id(
    tx: &impl conn::Connection,
    id: &InboundMessageId,
) -> Result<Option<Pair>, StoreError> {
    conn::query_opt(
        tx,
        "read an inbound id",
        "SELECT business, customer FROM inbound_ids WHERE message_id = $1",
        &[&id.as_str()],
    )
    .await?
    .map(|row| rows::pair("inbound_ids", row.get(0), row.get(1)))
    .transpose()
}

pub(super) async fn insert_inbound_id(
    tx: &impl conn::Connection,
    id: &InboundMessageId,
    pair: &Pair,
    inbound: &Inbound,
    recorded_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let kind = match inbound.kind {
        InboundKind::Message => "MESSAGE",
        InboundKind::VoiceCall => "VOICE_CALL",
    };
    conn::execute(
        tx,
        "remember an inbound id",
        "INSERT INTO inbound_ids (message_id, business, customer, received_at, kind, \
            entry_point, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (message_id) DO NOTHING",
        &[
            &id.as_str(),
            &pair.business.as_str(),
            &pair.customer.as_str(),
            &inbound.received_at,
            &kind,
            &rows::entry_point_name(inbound.entry_point),
            &recorded_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_message(
    tx: &impl conn::Connection,
    m: &OutboxMessage,
) -> Result<(), StoreError> {
    let a = &m.accepted;
    conn::execute(
        tx,
        "store a message",
        "INSERT INTO outbox (message_id, business, customer, idempotency_key, content, \
            fingerprint, kind, rendered_text, template_category, pricing_category, billable, \
            free_until, accepted_at, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'ACCEPTED')",
        &[
            &m.message_id,
            &m.request.pair.business.as_str(),
            &m.request.pair.customer.as_str(),
            &m.request.idempotency_key.as_str(),
            &rows::content(&m.request.content),
            &m.fingerprint.as_slice(),
            &rows::kind_name(a.kind),
            &a.rendered_text,
            &a.template_category.map(|c| rows::name(rows::CATEGORIES, c)),
            &rows::pricing_name(a.pricing.category),
            &a.pricing.billable,
            &a.free_until,
            &m.accepted_at,
        ],
    )
    .await?;
    Ok(())
}

/// Stores an idempotency key's first use (taking over an expired one).
pub(super) async fn put_key(
    tx: &impl conn::Connection,
    key: &str,
    record: &KeyRecord,
) -> Result<(), StoreError> {
    conn::execute(
        tx,
        "store an idempotency key",
        "INSERT INTO idempotency_keys (key, fingerprint, message_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET \
            fingerprint = EXCLUDED.fingerprint, message_id = EXCLUDED.message_id, \
            created_at = EXCLUDED.created_at",
        &[
            &key,
            &record.fingerprint.as_slice(),
            &record.message_id,
            &record.created_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_template(
    tx: &impl conn::Connection,
    t: &Template,
) -> Result<(), StoreError> {
    let c = &t.content;
    conn::execute(
        tx,
        "write a template",
        "INSERT INTO templates (name, language, category, status, status_reason, body, \
            header_text, footer_text, buttons, created_at, updated_at, header_media, account, \
            whatsapp_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (name, language, account) DO UPDATE SET category = EXCLUDED.category, \
            status = EXCLUDED.status, status_reason = EXCLUDED.status_reason, \
            body = EXCLUDED.body, header_text = EXCLUDED.header_text, \
            footer_text = EXCLUDED.footer_text, buttons = EXCLUDED.buttons, \
            created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
            header_media = EXCLUDED.header_media, whatsapp_id = EXCLUDED.whatsapp_id",
        &[
            &t.id.name(),
            &t.id.language(),
            &rows::name(rows::CATEGORIES, c.category),
            &rows::name(rows::STATUSES, t.status),
            &t.status_reason,
            &c.body,
            &c.header_text,
            &c.footer_text,
            &rows::buttons(&c.buttons),
            &t.created_at,
            &t.updated_at,
            &c.header_media.map(|h| h.as_str()),
            &t.id.account().as_str(),
            &t.whatsapp_id,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_early(
    tx: &impl conn::Connection,
    wamid: &str,
    early: &EarlyStatus,
) -> Result<(), StoreError> {
    let (code, title) = match &early.error {
        Some(e) => (Some(e.code), Some(e.title.as_str())),
        None => (None, None),
    };
    conn::execute(
        tx,
        "keep an early status",
        "INSERT INTO early_statuses (wamid, status, error_code, error_title, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (wamid) DO UPDATE SET \
            status = EXCLUDED.status, error_code = EXCLUDED.error_code, \
            error_title = EXCLUDED.error_title, received_at = EXCLUDED.received_at",
        &[
            &wamid,
            &rows::delivery_status_name(early.status),
            &code,
            &title,
            &early.received_at,
        ],
    )
    .await?;
    Ok(())
}
