//! On-disk values: one version byte, then a postcard-encoded record. The
//! records are the store's own types with stable numeric codes, so the API
//! and the domain can evolve without silently changing what is on disk; a
//! later release reads the version byte and migrates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::domain::delivery::{Delivery, DeliveryError, DeliveryStatus, EarlyStatus};
use crate::domain::send::Fingerprint;
use crate::domain::template::{ComponentParameters, HeaderMedia};
use crate::domain::window_events::{ChangeKind, WindowChange};
use crate::domain::{
    Accepted, Button, Category, Content, EntryPoint, IdempotencyKey, InboundKind, MessageKind,
    MessageStatus, OutboxMessage, Pair, PhoneNumber, Pricing, PricingCategory, SendParameters,
    SendRequest, Status, Template, TemplateContent, TemplateId, Window,
};

/// The only value encoding so far.
const ENCODING_V1: u8 = 1;

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unknown encoding version {0}")]
    UnknownVersion(u8),
    #[error("undecodable record: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("invalid field: {0}")]
    Invalid(String),
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![ENCODING_V1];
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_io(record, &mut out).expect("postcard encodes into a Vec");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&ENCODING_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&version, _)) => Err(DecodeError::UnknownVersion(version)),
    }
}

pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(super) fn time(micros: i64) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DecodeError::Invalid(format!("timestamp {micros} out of range")))
}

pub(super) fn phone(number: &str) -> Result<PhoneNumber, DecodeError> {
    PhoneNumber::parse(number).map_err(|e| DecodeError::Invalid(e.description()))
}

fn code_error(what: &str, code: u8) -> DecodeError {
    DecodeError::Invalid(format!("unknown {what} code {code}"))
}

#[derive(Serialize, Deserialize)]
pub struct WindowRecord {
    last_inbound_at: i64,
    expires_at: i64,
    free_entry_deadline: Option<i64>,
    free_until: Option<i64>,
}

impl WindowRecord {
    pub fn expires_at_micros(&self) -> i64 {
        self.expires_at
    }
}

impl From<&Window> for WindowRecord {
    fn from(window: &Window) -> Self {
        WindowRecord {
            last_inbound_at: micros(window.last_inbound_at),
            expires_at: micros(window.expires_at),
            free_entry_deadline: window.free_entry_deadline.map(micros),
            free_until: window.free_until.map(micros),
        }
    }
}

impl TryFrom<WindowRecord> for Window {
    type Error = DecodeError;
    fn try_from(record: WindowRecord) -> Result<Self, DecodeError> {
        Ok(Window {
            last_inbound_at: time(record.last_inbound_at)?,
            expires_at: time(record.expires_at)?,
            free_entry_deadline: record.free_entry_deadline.map(time).transpose()?,
            free_until: record.free_until.map(time).transpose()?,
        })
    }
}

/// A logged window change; its key holds when it was recorded and its id.
#[derive(Serialize, Deserialize)]
pub struct ChangeRecord {
    business: String,
    customer: String,
    kind: u8,
    window: WindowRecord,
}

impl ChangeRecord {
    pub fn new(pair: &Pair, kind: ChangeKind, window: &Window) -> ChangeRecord {
        ChangeRecord {
            business: pair.business.as_str().to_owned(),
            customer: pair.customer.as_str().to_owned(),
            kind: match kind {
                ChangeKind::Opened => 1,
                ChangeKind::Extended => 2,
            },
            window: WindowRecord::from(window),
        }
    }

    pub fn into_change(self, recorded_at: i64, id: i64) -> Result<WindowChange, DecodeError> {
        Ok(WindowChange {
            id,
            recorded_at: time(recorded_at)?,
            pair: Pair {
                business: phone(&self.business)?,
                customer: phone(&self.customer)?,
            },
            kind: match self.kind {
                1 => ChangeKind::Opened,
                2 => ChangeKind::Extended,
                other => return Err(code_error("window change", other)),
            },
            window: Window::try_from(self.window)?,
        })
    }
}

/// A seen inbound message id, kept for dedupe.
#[derive(Serialize, Deserialize)]
pub struct InboundRecord {
    pub business: String,
    pub customer: String,
    pub received_at: i64,
    pub recorded_at: i64,
    kind: u8,
    entry_point: u8,
}

impl InboundRecord {
    pub fn new(
        pair: &Pair,
        received_at: DateTime<Utc>,
        kind: InboundKind,
        entry_point: EntryPoint,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        InboundRecord {
            business: pair.business.as_str().to_owned(),
            customer: pair.customer.as_str().to_owned(),
            received_at: micros(received_at),
            recorded_at: micros(recorded_at),
            kind: match kind {
                InboundKind::Message => 1,
                InboundKind::VoiceCall => 2,
            },
            entry_point: match entry_point {
                EntryPoint::Organic => 0,
                EntryPoint::ClickToWhatsAppAd => 1,
                EntryPoint::FacebookPageCta => 2,
            },
        }
    }

    pub fn inbound(&self) -> Result<crate::domain::Inbound, DecodeError> {
        Ok(crate::domain::Inbound {
            received_at: time(self.received_at)?,
            kind: match self.kind {
                1 => InboundKind::Message,
                2 => InboundKind::VoiceCall,
                code => return Err(code_error("inbound kind", code)),
            },
            entry_point: match self.entry_point {
                0 => EntryPoint::Organic,
                1 => EntryPoint::ClickToWhatsAppAd,
                2 => EntryPoint::FacebookPageCta,
                code => return Err(code_error("entry point", code)),
            },
        })
    }

    pub fn pair(&self) -> Result<Pair, DecodeError> {
        Ok(Pair {
            business: phone(&self.business)?,
            customer: phone(&self.customer)?,
        })
    }
}

/// An idempotency key's first accepted send.
#[derive(Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: Fingerprint,
    pub message_id: [u8; 16],
    pub created_at: i64,
}

#[derive(Serialize, Deserialize)]
enum ButtonRecord {
    QuickReply {
        text: String,
    },
    Url {
        text: String,
        url: String,
    },
    PhoneNumber {
        text: String,
        phone_number: String,
    },
    /// Last, so that older records keep their variant indexes.
    CopyCode {
        text: String,
    },
}

#[derive(Serialize, Deserialize)]
pub struct TemplateRecord {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
    /// Added with media headers: records stored before end one field
    /// earlier ([`TemplateRecordV1`]).
    header_media: Option<String>,
    /// Added with template sync: records stored before end one field
    /// earlier ([`TemplateRecordV2`]).
    whatsapp_id: Option<String>,
}

/// A template as stored before template sync.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TemplateRecordV2 {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
    header_media: Option<String>,
}

/// A template as stored before media headers.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TemplateRecordV1 {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
}

/// Decodes a template of any layout. An older record is one field short of
/// the next, so it fails the newer layouts (and a newer one, tried first,
/// never reads as an older).
pub fn decode_template(bytes: &[u8]) -> Result<TemplateRecord, DecodeError> {
    decode::<TemplateRecord>(bytes).or_else(|error| {
        if let Ok(v2) = decode::<TemplateRecordV2>(bytes) {
            return Ok(TemplateRecord {
                name: v2.name,
                language: v2.language,
                category: v2.category,
                status: v2.status,
                status_reason: v2.status_reason,
                body: v2.body,
                header_text: v2.header_text,
                footer_text: v2.footer_text,
                buttons: v2.buttons,
                created_at: v2.created_at,
                updated_at: v2.updated_at,
                header_media: v2.header_media,
                whatsapp_id: None,
            });
        }
        let Ok(v1) = decode::<TemplateRecordV1>(bytes) else {
            return Err(error);
        };
        Ok(TemplateRecord {
            name: v1.name,
            language: v1.language,
            category: v1.category,
            status: v1.status,
            status_reason: v1.status_reason,
            body: v1.body,
            header_text: v1.header_text,
            footer_text: v1.footer_text,
            buttons: v1.buttons,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            header_media: None,
            whatsapp_id: None,
        })
    })
}

fn category_code(category: Category) -> u8 {
    match category {
        Category::Marketing => 1,
        Category::Utility => 2,
        Category::Authentication => 3,
    }
}

fn category(code: u8) -> Result<Category, DecodeError> {
    Ok(match code {
        1 => Category::Marketing,
        2 => Category::Utility,
        3 => Category::Authentication,
        _ => return Err(code_error("category", code)),
    })
}

const STATUS_CODES: [(Status, u8); 10] = [
    (Status::Pending, 1),
    (Status::Approved, 2),
    (Status::Rejected, 3),
    (Status::Paused, 4),
    (Status::Disabled, 5),
    (Status::InAppeal, 6),
    (Status::PendingDeletion, 7),
    (Status::LimitExceeded, 8),
    (Status::Archived, 9),
    (Status::Deleted, 10),
];

fn status_code(status: Status) -> u8 {
    STATUS_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, c)| *c)
}

fn status(code: u8) -> Result<Status, DecodeError> {
    STATUS_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(s, _)| *s)
        .ok_or_else(|| code_error("status", code))
}

impl From<&Template> for TemplateRecord {
    fn from(template: &Template) -> Self {
        let content = &template.content;
        TemplateRecord {
            name: template.id.name().to_owned(),
            language: template.id.language().to_owned(),
            category: category_code(content.category),
            status: status_code(template.status),
            status_reason: template.status_reason.clone(),
            body: content.body.clone(),
            header_text: content.header_text.clone(),
            footer_text: content.footer_text.clone(),
            buttons: content
                .buttons
                .iter()
                .map(|button| match button {
                    Button::QuickReply { text } => ButtonRecord::QuickReply { text: text.clone() },
                    Button::Url { text, url } => ButtonRecord::Url {
                        text: text.clone(),
                        url: url.clone(),
                    },
                    Button::PhoneNumber { text, phone_number } => ButtonRecord::PhoneNumber {
                        text: text.clone(),
                        phone_number: phone_number.as_str().to_owned(),
                    },
                    Button::CopyCode { text } => ButtonRecord::CopyCode { text: text.clone() },
                })
                .collect(),
            created_at: micros(template.created_at),
            updated_at: micros(template.updated_at),
            header_media: content.header_media.map(|h| h.as_str().to_owned()),
            whatsapp_id: template.whatsapp_id.clone(),
        }
    }
}

impl TryFrom<TemplateRecord> for Template {
    type Error = DecodeError;
    fn try_from(record: TemplateRecord) -> Result<Self, DecodeError> {
        let buttons = record
            .buttons
            .into_iter()
            .map(|button| {
                Ok(match button {
                    ButtonRecord::QuickReply { text } => Button::QuickReply { text },
                    ButtonRecord::Url { text, url } => Button::Url { text, url },
                    ButtonRecord::PhoneNumber { text, phone_number } => Button::PhoneNumber {
                        text,
                        phone_number: phone(&phone_number)?,
                    },
                    ButtonRecord::CopyCode { text } => Button::CopyCode { text },
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Template {
            id: TemplateId::parse(&record.name, &record.language)
                .map_err(|e| DecodeError::Invalid(e.description()))?,
            content: TemplateContent {
                category: category(record.category)?,
                body: record.body,
                header_text: record.header_text,
                header_media: record
                    .header_media
                    .map(|name| {
                        HeaderMedia::parse(&name)
                            .ok_or_else(|| DecodeError::Invalid(format!("unknown header {name:?}")))
                    })
                    .transpose()?,
                footer_text: record.footer_text,
                buttons,
            },
            status: status(record.status)?,
            status_reason: record.status_reason,
            created_at: time(record.created_at)?,
            updated_at: time(record.updated_at)?,
            whatsapp_id: record.whatsapp_id,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_stored_before_media_headers_still_decode() {
        let old = TemplateRecordV1 {
            name: "order_update".into(),
            language: "en_US".into(),
            category: 2,
            status: 1,
            status_reason: String::new(),
            body: "Hi {{1}}".into(),
            header_text: Some("Order".into()),
            footer_text: None,
            buttons: vec![ButtonRecord::QuickReply {
                text: "Stop".into(),
            }],
            created_at: 1,
            updated_at: 2,
        };
        let template = Template::try_from(decode_template(&encode(&old)).unwrap()).unwrap();
        assert_eq!(template.content.header_text.as_deref(), Some("Order"));
        assert_eq!(template.content.header_media, None);
        assert_eq!(template.content.buttons.len(), 1);

        let with_media = Template {
            content: TemplateContent {
                header_text: None,
                header_media: Some(HeaderMedia::Document),
                ..template.content.clone()
            },
            ..template
        };
        let bytes = encode(&TemplateRecord::from(&with_media));
        let back = Template::try_from(decode_template(&bytes).unwrap()).unwrap();
        assert_eq!(back, with_media);

        // Stored before template sync: media header, no WhatsApp id.
        let v2 = TemplateRecordV2 {
            name: "order_update".into(),
            language: "en_US".into(),
            category: 2,
            status: 1,
            status_reason: String::new(),
            body: "Hi {{1}}".into(),
            header_text: None,
            footer_text: None,
            buttons: vec![],
            created_at: 1,
            updated_at: 2,
            header_media: Some("document".into()),
        };
        let read = Template::try_from(decode_template(&encode(&v2)).unwrap()).unwrap();
        assert_eq!(read.content.header_media, Some(HeaderMedia::Document));
        assert_eq!(read.whatsapp_id, None);
        let synced = Template {
            whatsapp_id: Some("594425479261596".into()),
            ..with_media
        };
        let bytes = encode(&TemplateRecord::from(&synced));
        assert_eq!(
            Template::try_from(decode_template(&bytes).unwrap()).unwrap(),
            synced
        );
    }

    #[test]
    fn values_carry_a_version_byte() {
        let record = IdempotencyRecord {
            fingerprint: [7; 32],
            message_id: [1; 16],
            created_at: 42,
        };
        let bytes = encode(&record);
        assert_eq!(bytes[0], ENCODING_V1);
        let back: IdempotencyRecord = decode(&bytes).unwrap();
        assert_eq!(
            (back.fingerprint, back.message_id, back.created_at),
            ([7; 32], [1; 16], 42)
        );

        let mut future = bytes.clone();
        future[0] = 2;
        assert!(matches!(
            decode::<IdempotencyRecord>(&future),
            Err(DecodeError::UnknownVersion(2))
        ));
        assert!(matches!(
            decode::<IdempotencyRecord>(&[]),
            Err(DecodeError::Empty)
        ));
        assert!(
            decode::<IdempotencyRecord>(&bytes[..10]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for (s, code) in STATUS_CODES {
            assert_eq!(status(status_code(s)).unwrap(), s);
            assert_eq!(status_code(s), code);
        }
        assert!(status(0).is_err());
    }
}
