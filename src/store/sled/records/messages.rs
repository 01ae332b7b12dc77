//! Sends: idempotency keys, the outbox, deliveries and early statuses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::templates::{category, category_code};
use super::{DecodeError, code_error, micros, phone, time};
use crate::domain::delivery::{Delivery, DeliveryError, DeliveryStatus, EarlyStatus};
use crate::domain::send::Fingerprint;
use crate::domain::template::ComponentParameters;
use crate::domain::{
    Accepted, Content, IdempotencyKey, MessageKind, MessageStatus, OutboxMessage, Pair, Pricing,
    PricingCategory, SendParameters, SendRequest, TemplateId,
};

/// An idempotency key's first accepted send.
#[derive(Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: Fingerprint,
    pub message_id: [u8; 16],
    pub created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct ComponentRecord {
    positional: Vec<String>,
    named: Vec<(String, String)>,
}

impl From<&ComponentParameters> for ComponentRecord {
    fn from(parameters: &ComponentParameters) -> Self {
        ComponentRecord {
            positional: parameters.positional.clone(),
            named: parameters
                .named
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<ComponentRecord> for ComponentParameters {
    fn from(record: ComponentRecord) -> Self {
        ComponentParameters {
            positional: record.positional,
            named: record.named.into_iter().collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum ContentRecord {
    Text(String),
    Template {
        name: String,
        language: String,
        body: ComponentRecord,
        header: ComponentRecord,
        buttons: Vec<(u32, String)>,
    },
    /// Media, interactive, location, reaction: JSON (`store::rich_json`).
    /// Last, so that older records keep their variant index.
    Rich(String),
    /// A template send with a media or location header or quick-reply
    /// payloads: `Template`'s fields, the header's value as JSON, the
    /// payloads.
    TemplateV2 {
        name: String,
        language: String,
        body: ComponentRecord,
        header: ComponentRecord,
        buttons: Vec<(u32, String)>,
        header_media: Option<String>,
        quick_replies: Vec<(u32, String)>,
    },
}

/// An accepted send in the outbox.
#[derive(Serialize, Deserialize)]
pub struct OutboxRecord {
    message_id: [u8; 16],
    business: String,
    customer: String,
    idempotency_key: String,
    content: ContentRecord,
    fingerprint: Fingerprint,
    kind: u8,
    rendered_text: String,
    template_category: Option<u8>,
    pricing_category: u8,
    billable: bool,
    free_until: Option<i64>,
    accepted_at: i64,
    status: u8,
}

const PRICING_CODES: [(PricingCategory, u8); 5] = [
    (PricingCategory::Service, 1),
    (PricingCategory::ReferralConversion, 2),
    (PricingCategory::Utility, 3),
    (PricingCategory::Marketing, 4),
    (PricingCategory::Authentication, 5),
];

impl From<&OutboxMessage> for OutboxRecord {
    fn from(message: &OutboxMessage) -> Self {
        let request = &message.request;
        let accepted = &message.accepted;
        OutboxRecord {
            message_id: message.message_id.into_bytes(),
            business: request.pair.business.as_str().to_owned(),
            customer: request.pair.customer.as_str().to_owned(),
            idempotency_key: request.idempotency_key.as_str().to_owned(),
            content: match &request.content {
                Content::Text(body) => ContentRecord::Text(body.clone()),
                Content::Template { id, parameters } => {
                    let buttons = parameters
                        .buttons
                        .iter()
                        .map(|(i, v)| (*i, v.clone()))
                        .collect();
                    if parameters.header_media.is_none() && parameters.quick_replies.is_empty() {
                        ContentRecord::Template {
                            name: id.name().to_owned(),
                            language: id.language().to_owned(),
                            body: (&parameters.body).into(),
                            header: (&parameters.header).into(),
                            buttons,
                        }
                    } else {
                        ContentRecord::TemplateV2 {
                            name: id.name().to_owned(),
                            language: id.language().to_owned(),
                            body: (&parameters.body).into(),
                            header: (&parameters.header).into(),
                            buttons,
                            header_media: parameters.header_media.as_ref().map(|value| {
                                serde_json::to_string(value)
                                    .expect("a header value encodes as JSON")
                            }),
                            quick_replies: parameters
                                .quick_replies
                                .iter()
                                .map(|(i, v)| (*i, v.clone()))
                                .collect(),
                        }
                    }
                }
                rich => ContentRecord::Rich(
                    crate::store::rich_json::encode(rich)
                        .map(|json| json.to_string())
                        .unwrap_or_default(),
                ),
            },
            fingerprint: message.fingerprint,
            kind: match accepted.kind {
                MessageKind::FreeForm => 1,
                MessageKind::Template => 2,
            },
            rendered_text: accepted.rendered_text.clone(),
            template_category: accepted.template_category.map(category_code),
            pricing_category: PRICING_CODES
                .iter()
                .find(|(p, _)| *p == accepted.pricing.category)
                .map_or(0, |(_, c)| *c),
            billable: accepted.pricing.billable,
            free_until: accepted.free_until.map(micros),
            accepted_at: micros(message.accepted_at),
            status: match message.status {
                MessageStatus::Accepted => 1,
            },
        }
    }
}

impl TryFrom<OutboxRecord> for OutboxMessage {
    type Error = DecodeError;
    fn try_from(record: OutboxRecord) -> Result<Self, DecodeError> {
        let invalid = |e: crate::domain::Rejection| DecodeError::Invalid(e.description());
        let content = match record.content {
            ContentRecord::Text(body) => Content::Text(body),
            ContentRecord::Rich(json) => serde_json::from_str(&json)
                .and_then(|value: serde_json::Value| crate::store::rich_json::decode(&value))
                .map_err(|e| DecodeError::Invalid(format!("content: {e}")))?,
            ContentRecord::Template {
                name,
                language,
                body,
                header,
                buttons,
            } => Content::Template {
                id: TemplateId::parse(&name, &language).map_err(invalid)?,
                parameters: SendParameters {
                    body: body.into(),
                    header: header.into(),
                    header_media: None,
                    buttons: buttons.into_iter().collect::<BTreeMap<_, _>>(),
                    quick_replies: BTreeMap::new(),
                },
            },
            ContentRecord::TemplateV2 {
                name,
                language,
                body,
                header,
                buttons,
                header_media,
                quick_replies,
            } => Content::Template {
                id: TemplateId::parse(&name, &language).map_err(invalid)?,
                parameters: SendParameters {
                    body: body.into(),
                    header: header.into(),
                    header_media: header_media
                        .map(|json| serde_json::from_str(&json))
                        .transpose()
                        .map_err(|e| DecodeError::Invalid(format!("template header: {e}")))?,
                    buttons: buttons.into_iter().collect::<BTreeMap<_, _>>(),
                    quick_replies: quick_replies.into_iter().collect::<BTreeMap<_, _>>(),
                },
            },
        };
        Ok(OutboxMessage {
            message_id: Uuid::from_bytes(record.message_id),
            request: SendRequest {
                pair: Pair {
                    business: phone(&record.business)?,
                    customer: phone(&record.customer)?,
                },
                idempotency_key: IdempotencyKey::parse(&record.idempotency_key).map_err(invalid)?,
                content,
            },
            fingerprint: record.fingerprint,
            accepted: Accepted {
                kind: match record.kind {
                    1 => MessageKind::FreeForm,
                    2 => MessageKind::Template,
                    code => return Err(code_error("message kind", code)),
                },
                rendered_text: record.rendered_text,
                template_category: record.template_category.map(category).transpose()?,
                pricing: Pricing {
                    category: PRICING_CODES
                        .iter()
                        .find(|(_, c)| *c == record.pricing_category)
                        .map(|(p, _)| *p)
                        .ok_or_else(|| code_error("pricing category", record.pricing_category))?,
                    billable: record.billable,
                },
                free_until: record.free_until.map(time).transpose()?,
            },
            accepted_at: time(record.accepted_at)?,
            status: match record.status {
                1 => MessageStatus::Accepted,
                code => return Err(code_error("message status", code)),
            },
        })
    }
}

/// The delivery state of an outbox message.
#[derive(Serialize, Deserialize)]
pub struct DeliveryRecord {
    status: u8,
    wamid: Option<String>,
    attempts: u32,
    next_attempt_at: Option<i64>,
    error: Option<(i64, String)>,
    updated_at: i64,
    /// A claim holds it until `next_attempt_at` (the lease's end). Written
    /// for the on-disk layout's sake; nothing reads it since claims lapse
    /// with their lease instead of being released at start.
    pub claimed: bool,
}

const DELIVERY_STATUS_CODES: [(DeliveryStatus, u8); 6] = [
    (DeliveryStatus::Accepted, 1),
    (DeliveryStatus::Submitted, 2),
    (DeliveryStatus::Sent, 3),
    (DeliveryStatus::Delivered, 4),
    (DeliveryStatus::Read, 5),
    (DeliveryStatus::Failed, 6),
];

fn delivery_status_code(status: DeliveryStatus) -> u8 {
    DELIVERY_STATUS_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, c)| *c)
}

fn delivery_status(code: u8) -> Result<DeliveryStatus, DecodeError> {
    DELIVERY_STATUS_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(s, _)| *s)
        .ok_or_else(|| code_error("delivery status", code))
}

impl DeliveryRecord {
    pub fn new(delivery: &Delivery, claimed: bool) -> Self {
        DeliveryRecord {
            status: delivery_status_code(delivery.status),
            wamid: delivery.wamid.clone(),
            attempts: delivery.attempts,
            next_attempt_at: delivery.next_attempt_at.map(micros),
            error: delivery.error.as_ref().map(|e| (e.code, e.title.clone())),
            updated_at: micros(delivery.updated_at),
            claimed,
        }
    }
}

impl TryFrom<DeliveryRecord> for Delivery {
    type Error = DecodeError;
    fn try_from(record: DeliveryRecord) -> Result<Self, DecodeError> {
        Ok(Delivery {
            status: delivery_status(record.status)?,
            wamid: record.wamid,
            attempts: record.attempts,
            next_attempt_at: record.next_attempt_at.map(time).transpose()?,
            error: record
                .error
                .map(|(code, title)| DeliveryError { code, title }),
            updated_at: time(record.updated_at)?,
        })
    }
}

/// A status webhook for a wamid not stored yet (it can beat the Cloud API's
/// answer to the worker), kept until the wamid arrives or it ages out.
#[derive(Serialize, Deserialize)]
pub struct EarlyStatusRecord {
    status: u8,
    error: Option<(i64, String)>,
    pub received_at: i64,
}

impl From<&EarlyStatus> for EarlyStatusRecord {
    fn from(early: &EarlyStatus) -> Self {
        EarlyStatusRecord {
            status: delivery_status_code(early.status),
            error: early.error.as_ref().map(|e| (e.code, e.title.clone())),
            received_at: micros(early.received_at),
        }
    }
}

impl EarlyStatusRecord {
    pub fn early_status(&self) -> Result<EarlyStatus, DecodeError> {
        Ok(EarlyStatus {
            status: delivery_status(self.status)?,
            error: self
                .error
                .clone()
                .map(|(code, title)| DeliveryError { code, title }),
            received_at: time(self.received_at)?,
        })
    }
}
