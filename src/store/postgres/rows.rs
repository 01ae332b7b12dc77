//! Rows to domain types and back. Enumerations are stored by name (as the
//! API spells them), so an operator can read and filter them in SQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use serde_json::{Value, json};
use tokio_postgres::Row;

use crate::domain::account::AccountId;
use crate::domain::delivery::{Delivery, DeliveryError, DeliveryStatus, EarlyStatus};
use crate::domain::template::{ComponentParameters, HeaderMedia};
use crate::domain::{
    Accepted, Button, Category, Content, EntryPoint, IdempotencyKey, MessageKind, MessageStatus,
    OutboxMessage, Pair, PhoneNumber, Pricing, PricingCategory, SendParameters, SendRequest,
    Status, Template, TemplateContent, TemplateId, Window,
};
use crate::store::StoreError;

/// A table of names for one enumeration.
type Names<T> = &'static [(T, &'static str)];

pub const CATEGORIES: Names<Category> = &[
    (Category::Marketing, "MARKETING"),
    (Category::Utility, "UTILITY"),
    (Category::Authentication, "AUTHENTICATION"),
];

pub const STATUSES: Names<Status> = &[
    (Status::Pending, "PENDING"),
    (Status::Approved, "APPROVED"),
    (Status::Rejected, "REJECTED"),
    (Status::Paused, "PAUSED"),
    (Status::Disabled, "DISABLED"),
    (Status::InAppeal, "IN_APPEAL"),
    (Status::PendingDeletion, "PENDING_DELETION"),
    (Status::LimitExceeded, "LIMIT_EXCEEDED"),
    (Status::Archived, "ARCHIVED"),
    (Status::Deleted, "DELETED"),
];

const PRICING: Names<PricingCategory> = &[
    (PricingCategory::Service, "SERVICE"),
    (PricingCategory::ReferralConversion, "REFERRAL_CONVERSION"),
    (PricingCategory::Utility, "UTILITY"),
    (PricingCategory::Marketing, "MARKETING"),
    (PricingCategory::Authentication, "AUTHENTICATION"),
];

const KINDS: Names<MessageKind> = &[
    (MessageKind::FreeForm, "FREE_FORM"),
    (MessageKind::Template, "TEMPLATE"),
];

const DELIVERY_STATUSES: Names<DeliveryStatus> = &[
    (DeliveryStatus::Accepted, "ACCEPTED"),
    (DeliveryStatus::Submitted, "SUBMITTED"),
    (DeliveryStatus::Sent, "SENT"),
    (DeliveryStatus::Delivered, "DELIVERED"),
    (DeliveryStatus::Read, "READ"),
    (DeliveryStatus::Failed, "FAILED"),
];

pub fn name<T: PartialEq + Copy>(names: Names<T>, value: T) -> &'static str {
    names
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("UNKNOWN", |(_, n)| n)
}

fn named<T: Copy>(names: Names<T>, what: &'static str, name: &str) -> Result<T, StoreError> {
    names
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(v, _)| *v)
        .ok_or_else(|| StoreError::corrupt(what, format!("unknown name {name:?}")))
}

pub fn phone(what: &'static str, number: &str) -> Result<PhoneNumber, StoreError> {
    PhoneNumber::parse(number).map_err(|e| StoreError::corrupt(what, e.description()))
}

pub fn pair(what: &'static str, business: &str, customer: &str) -> Result<Pair, StoreError> {
    Ok(Pair {
        business: phone(what, business)?,
        customer: phone(what, customer)?,
    })
}

pub fn window(row: &Row) -> Window {
    Window {
        last_inbound_at: row.get("last_inbound_at"),
        expires_at: row.get("expires_at"),
        free_entry_deadline: row.get("free_entry_deadline"),
        free_until: row.get("free_until"),
    }
}

pub fn buttons(buttons: &[Button]) -> Value {
    Value::Array(
        buttons
            .iter()
            .map(|button| match button {
                Button::QuickReply { text } => json!({"quick_reply": {"text": text}}),
                Button::Url { text, url } => json!({"url": {"text": text, "url": url}}),
                Button::PhoneNumber { text, phone_number } => json!({
                    "phone_number": {"text": text, "phone_number": phone_number.as_str()}
                }),
                Button::CopyCode { text } => json!({"copy_code": {"text": text}}),
            })
            .collect(),
    )
}

fn button(value: &Value) -> Result<Button, StoreError> {
    let text = |v: &Value, key: &str| -> Result<String, StoreError> {
        v[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::corrupt("templates", format!("button lacks {key}")))
    };
    if let Some(v) = value.get("quick_reply") {
        return Ok(Button::QuickReply {
            text: text(v, "text")?,
        });
    }
    if let Some(v) = value.get("url") {
        return Ok(Button::Url {
            text: text(v, "text")?,
            url: text(v, "url")?,
        });
    }
    if let Some(v) = value.get("phone_number") {
        return Ok(Button::PhoneNumber {
            text: text(v, "text")?,
            phone_number: phone("templates", &text(v, "phone_number")?)?,
        });
    }
    if let Some(v) = value.get("copy_code") {
        return Ok(Button::CopyCode {
            text: text(v, "text")?,
        });
    }
    Err(StoreError::corrupt("templates", "unknown button"))
}

pub fn template(row: &Row) -> Result<Template, StoreError> {
    let name: &str = row.get("name");
    let language: &str = row.get("language");
    let buttons: Value = row.get("buttons");
    Ok(Template {
        id: TemplateId::parse(name, language)
            .map_err(|e| StoreError::corrupt("templates", e.description()))?
            .in_account(
                AccountId::parse(row.get("account"))
                    .map_err(|e| StoreError::corrupt("templates", e.description()))?,
            ),
        content: TemplateContent {
            category: named(CATEGORIES, "templates", row.get("category"))?,
            body: row.get("body"),
            header_text: row.get("header_text"),
            header_media: row
                .get::<_, Option<&str>>("header_media")
                .map(|name| {
                    HeaderMedia::parse(name).ok_or_else(|| {
                        StoreError::corrupt("templates", format!("unknown header {name:?}"))
                    })
                })
                .transpose()?,
            footer_text: row.get("footer_text"),
            buttons: buttons
                .as_array()
                .map(|list| list.iter().map(button).collect::<Result<_, _>>())
                .transpose()?
                .unwrap_or_default(),
        },
        status: named(STATUSES, "templates", row.get("status"))?,
        status_reason: row.get("status_reason"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        whatsapp_id: row.get("whatsapp_id"),
    })
}

fn component(parameters: &ComponentParameters) -> Value {
    json!({"positional": parameters.positional, "named": parameters.named})
}

fn component_of(value: &Value) -> ComponentParameters {
    ComponentParameters {
        positional: value["positional"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        named: value["named"]
            .as_object()
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub fn content(content: &Content) -> Value {
    match content {
        Content::Text(body) => json!({"text": body}),
        Content::Template { id, parameters } => json!({"template": {
            "name": id.name(),
            "language": id.language(),
            "body": component(&parameters.body),
            "header": component(&parameters.header),
            "buttons": parameters.buttons.iter().map(|(i, v)| json!([i, v])).collect::<Vec<_>>(),
            "header_media": parameters.header_media,
            "quick_replies": parameters.quick_replies.iter().map(|(i, v)| json!([i, v])).collect::<Vec<_>>(),
        }}),
        rich => json!({ "rich": crate::store::rich_json::encode(rich) }),
    }
}

fn content_of(value: &Value) -> Result<Content, StoreError> {
    if let Some(body) = value["text"].as_str() {
        return Ok(Content::Text(body.to_owned()));
    }
    if let Some(rich) = value.get("rich") {
        return crate::store::rich_json::decode(rich)
            .map_err(|e| StoreError::corrupt("outbox", format!("content: {e}")));
    }
    let template = &value["template"];
    let id = TemplateId::parse(
        template["name"].as_str().unwrap_or_default(),
        template["language"].as_str().unwrap_or_default(),
    )
    .map_err(|e| StoreError::corrupt("outbox", e.description()))?;
    let indexed = |list: &Value| -> BTreeMap<u32, String> {
        list.as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|pair| {
                        Some((pair[0].as_u64()? as u32, pair[1].as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let buttons = indexed(&template["buttons"]);
    let quick_replies = indexed(&template["quick_replies"]);
    let header_media = match template.get("header_media") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value(value.clone())
                .map_err(|e| StoreError::corrupt("outbox", format!("template header: {e}")))?,
        ),
    };
    Ok(Content::Template {
        id,
        parameters: SendParameters {
            body: component_of(&template["body"]),
            header: component_of(&template["header"]),
            header_media,
            buttons,
            quick_replies,
        },
    })
}

pub fn entry_point_name(entry_point: EntryPoint) -> &'static str {
    match entry_point {
        EntryPoint::Organic => "ORGANIC",
        EntryPoint::ClickToWhatsAppAd => "CLICK_TO_WHATSAPP_AD",
        EntryPoint::FacebookPageCta => "FACEBOOK_PAGE_CTA",
    }
}

pub fn kind_name(kind: MessageKind) -> &'static str {
    name(KINDS, kind)
}

pub fn pricing_name(category: PricingCategory) -> &'static str {
    name(PRICING, category)
}

pub fn outbox_message(row: &Row) -> Result<OutboxMessage, StoreError> {
    let content_json: Value = row.get("content");
    let fingerprint: Vec<u8> = row.get("fingerprint");
    let template_category: Option<&str> = row.get("template_category");
    Ok(OutboxMessage {
        message_id: row.get("message_id"),
        request: SendRequest {
            pair: pair("outbox", row.get("business"), row.get("customer"))?,
            idempotency_key: IdempotencyKey::parse(row.get("idempotency_key"))
                .map_err(|e| StoreError::corrupt("outbox", e.description()))?,
            content: content_of(&content_json)?,
        },
        fingerprint: fingerprint
            .try_into()
            .map_err(|_| StoreError::corrupt("outbox", "fingerprint is not 32 bytes"))?,
        accepted: Accepted {
            kind: named(KINDS, "outbox", row.get("kind"))?,
            rendered_text: row.get("rendered_text"),
            template_category: template_category
                .map(|c| named(CATEGORIES, "outbox", c))
                .transpose()?,
            pricing: Pricing {
                category: named(PRICING, "outbox", row.get("pricing_category"))?,
                billable: row.get("billable"),
            },
            free_until: row.get("free_until"),
        },
        accepted_at: row.get("accepted_at"),
        status: MessageStatus::Accepted,
    })
}

pub fn delivery_status_name(status: DeliveryStatus) -> &'static str {
    name(DELIVERY_STATUSES, status)
}

fn error_of(code: Option<i64>, title: Option<String>) -> Option<DeliveryError> {
    Some(DeliveryError {
        code: code?,
        title: title.unwrap_or_default(),
    })
}

/// A delivery from a row of `deliveries` (columns prefixed `d_` where a
/// join could make them ambiguous are not used: callers select them plain).
pub fn delivery(row: &Row) -> Result<Delivery, StoreError> {
    let attempts: i32 = row.get("attempts");
    Ok(Delivery {
        status: named(DELIVERY_STATUSES, "deliveries", row.get("d_status"))?,
        wamid: row.get("wamid"),
        attempts: attempts.max(0) as u32,
        next_attempt_at: row.get("next_attempt_at"),
        error: error_of(row.get("error_code"), row.get("error_title")),
        updated_at: row.get("d_updated_at"),
    })
}

/// A delivery as a change-feed row carries it.
pub fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "status": delivery_status_name(delivery.status),
        "wamid": delivery.wamid,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at.map(|t| t.timestamp_micros()),
        "error_code": delivery.error.as_ref().map(|e| e.code),
        "error_title": delivery.error.as_ref().map(|e| e.title.clone()),
        "updated_at": delivery.updated_at.timestamp_micros(),
    })
}

pub fn delivery_of_json(value: &Value) -> Result<Delivery, StoreError> {
    let micros = |key: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        value[key]
            .as_i64()
            .map(|m| {
                DateTime::from_timestamp_micros(m)
                    .ok_or_else(|| StoreError::corrupt("changes", format!("{key} out of range")))
            })
            .transpose()
    };
    Ok(Delivery {
        status: named(
            DELIVERY_STATUSES,
            "changes",
            value["status"].as_str().unwrap_or_default(),
        )?,
        wamid: value["wamid"].as_str().map(str::to_owned),
        attempts: value["attempts"].as_u64().unwrap_or_default() as u32,
        next_attempt_at: micros("next_attempt_at")?,
        error: error_of(
            value["error_code"].as_i64(),
            value["error_title"].as_str().map(str::to_owned),
        ),
        updated_at: micros("updated_at")?
            .ok_or_else(|| StoreError::corrupt("changes", "a delivery without updated_at"))?,
    })
}

pub fn early_status(row: &Row) -> Result<EarlyStatus, StoreError> {
    Ok(EarlyStatus {
        status: named(DELIVERY_STATUSES, "early_statuses", row.get("status"))?,
        error: error_of(row.get("error_code"), row.get("error_title")),
        received_at: row.get("received_at"),
    })
}
