//! The WhatsApp Cloud API's formats: the JSON body that sends an outbox
//! message, and the events in a webhook notification. Pure translation; the
//! HTTP lives in `crate::cloud`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::delivery::{DeliveryError, DeliveryStatus};
use super::rich::{Action, Interactive, InteractiveHeader, Location, MediaSource};
use super::template::{ComponentParameters, HeaderValue, Status};
use super::{Content, EntryPoint, OutboxMessage};

/// The `POST /{phone_number_id}/messages` body for an accepted message.
pub fn message_body(message: &OutboxMessage) -> Value {
    let to = message.request.pair.customer.digits();
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
    });
    match &message.request.content {
        Content::Text(text) => {
            body["type"] = json!("text");
            body["text"] = json!({ "preview_url": false, "body": text });
        }
        Content::Template { id, parameters } => {
            let mut components = Vec::new();
            if let Some(header) = component("header", &parameters.header) {
                components.push(header);
            }
            if let Some(value) = &parameters.header_media {
                components
                    .push(json!({ "type": "header", "parameters": [header_parameter(value)] }));
            }
            if let Some(body) = component("body", &parameters.body) {
                components.push(body);
            }
            // URL suffixes and copy codes are both "url" parameters;
            // quick replies carry a payload. In button order.
            let mut buttons: Vec<(u32, Value)> = parameters
                .buttons
                .iter()
                .map(|(index, value)| {
                    (
                        *index,
                        json!({
                            "type": "button",
                            "sub_type": "url",
                            "index": index.to_string(),
                            "parameters": [{ "type": "text", "text": value }],
                        }),
                    )
                })
                .chain(parameters.quick_replies.iter().map(|(index, payload)| {
                    (
                        *index,
                        json!({
                            "type": "button",
                            "sub_type": "quick_reply",
                            "index": index.to_string(),
                            "parameters": [{ "type": "payload", "payload": payload }],
                        }),
                    )
                }))
                .collect();
            buttons.sort_by_key(|(index, _)| *index);
            components.extend(buttons.into_iter().map(|(_, button)| button));
            let mut template = json!({
                "name": id.name(),
                "language": { "code": id.language() },
            });
            if !components.is_empty() {
                template["components"] = Value::Array(components);
            }
            body["type"] = json!("template");
            body["template"] = template;
        }
        Content::Media(media) => {
            let kind = media.kind.as_str();
            let mut object = media_object(&media.source, &media.filename);
            if let Some(caption) = &media.caption {
                object["caption"] = json!(caption);
            }
            body["type"] = json!(kind);
            body[kind] = object;
        }
        Content::Interactive(interactive) => {
            body["type"] = json!("interactive");
            body["interactive"] = interactive_object(interactive);
        }
        Content::Location(location) => {
            body["type"] = json!("location");
            body["location"] = location_object(location);
        }
        Content::Reaction(reaction) => {
            body["type"] = json!("reaction");
            body["reaction"] = json!({
                "message_id": reaction.message_id,
                "emoji": reaction.emoji,
            });
        }
    }
    body
}

/// The `interactive` object of a message with reply buttons, a list or a
/// call-to-action URL button.
fn interactive_object(interactive: &Interactive) -> Value {
    let (kind, action) = match &interactive.action {
        Action::Buttons(buttons) => (
            "button",
            json!({ "buttons": buttons.iter().map(|b| json!({
                "type": "reply",
                "reply": { "id": b.id, "title": b.title },
            })).collect::<Vec<_>>() }),
        ),
        Action::List { button, sections } => (
            "list",
            json!({
                "button": button,
                "sections": sections.iter().map(|section| {
                    let mut object = json!({ "rows": section.rows.iter().map(|row| {
                        let mut object = json!({ "id": row.id, "title": row.title });
                        if let Some(description) = &row.description {
                            object["description"] = json!(description);
                        }
                        object
                    }).collect::<Vec<_>>() });
                    if let Some(title) = &section.title {
                        object["title"] = json!(title);
                    }
                    object
                }).collect::<Vec<_>>(),
            }),
        ),
        Action::CallToActionUrl { display_text, url } => (
            "cta_url",
            json!({
                "name": "cta_url",
                "parameters": { "display_text": display_text, "url": url },
            }),
        ),
    };
    let mut object = json!({
        "type": kind,
        "body": { "text": interactive.body },
        "action": action,
    });
    match &interactive.header {
        Some(InteractiveHeader::Text(text)) => {
            object["header"] = json!({ "type": "text", "text": text });
        }
        Some(InteractiveHeader::Media {
            kind,
            source,
            filename,
        }) => {
            let media = media_object(source, filename);
            object["header"] = json!({ "type": kind.as_str(), kind.as_str(): media });
        }
        None => {}
    }
    if let Some(footer) = &interactive.footer {
        object["footer"] = json!({ "text": footer });
    }
    object
}

/// A template header's image, video, document or location parameter.
fn header_parameter(value: &HeaderValue) -> Value {
    match value {
        HeaderValue::Location(location) => {
            json!({ "type": "location", "location": location_object(location) })
        }
        HeaderValue::Media {
            kind,
            source,
            filename,
        } => json!({ "type": kind.as_str(), kind.as_str(): media_object(source, filename) }),
    }
}

/// Media by link or id, with its file name where it has one: the object a
/// media message, an interactive header and a template header share.
fn media_object(source: &MediaSource, filename: &Option<String>) -> Value {
    let mut object = match source {
        MediaSource::Link(link) => json!({ "link": link }),
        MediaSource::Id(id) => json!({ "id": id }),
    };
    if let Some(name) = filename {
        object["filename"] = json!(name);
    }
    object
}

/// A location message's object, also a template's location header.
fn location_object(location: &Location) -> Value {
    let mut object = json!({
        "latitude": location.latitude.get(),
        "longitude": location.longitude.get(),
    });
    if let Some(name) = &location.name {
        object["name"] = json!(name);
    }
    if let Some(address) = &location.address {
        object["address"] = json!(address);
    }
    object
}

fn component(kind: &str, values: &ComponentParameters) -> Option<Value> {
    let parameters: Vec<Value> = if values.named.is_empty() {
        values
            .positional
            .iter()
            .map(|text| json!({ "type": "text", "text": text }))
            .collect()
    } else {
        values
            .named
            .iter()
            .map(|(name, text)| json!({ "type": "text", "parameter_name": name, "text": text }))
            .collect()
    };
    (!parameters.is_empty()).then(|| json!({ "type": kind, "parameters": parameters }))
}

/// One thing a webhook notification reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A customer's message to a business number.
    Inbound {
        phone_number_id: String,
        /// The business number as WhatsApp displays it (digits, maybe spaces).
        display_phone_number: String,
        customer: String,
        wamid: String,
        received_at: DateTime<Utc>,
        entry_point: EntryPoint,
        /// What the customer wrote (a text, or a quick-reply button's
        /// text), for opt-out keywords.
        text: Option<String>,
    },
    /// A status report for a message the business sent.
    Status {
        wamid: String,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    },
    /// WhatsApp's review changed a template's status.
    TemplateStatus {
        /// The WhatsApp Business Account the notification came from (the
        /// entry's id; empty when missing).
        waba_id: String,
        name: String,
        language: String,
        status: Status,
        reason: String,
    },
    /// Seen but not acted on; `kind` says what it was, for counting.
    Unhandled { kind: String },
}

/// Every event in a webhook notification body. Anything not understood
/// becomes `Unhandled`, never an error: WhatsApp must get its 200.
pub fn webhook_events(notification: &Value) -> Vec<WebhookEvent> {
    let mut events = Vec::new();
    let Some(entries) = notification["entry"].as_array() else {
        events.push(unhandled("malformed"));
        return events;
    };
    for entry in entries {
        for change in entry["changes"].as_array().into_iter().flatten() {
            let value = &change["value"];
            match change["field"].as_str() {
                Some("messages") => message_events(value, &mut events),
                Some("message_template_status_update") => {
                    events.push(template_event(entry["id"].as_str().unwrap_or(""), value))
                }
                Some(other) => events.push(unhandled(&bounded("field", other, KNOWN_FIELDS))),
                None => events.push(unhandled("malformed")),
            }
        }
    }
    events
}

/// Webhook `field`s of a WhatsApp Business Account that Meta documents.
const KNOWN_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "business_capability_update",
    "calls",
    "flows",
    "history",
    "message_echoes",
    "message_template_components_update",
    "message_template_quality_update",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_app_state_sync",
    "smb_message_echoes",
    "template_category_update",
    "user_preferences",
];

/// Message status names, including those wagate does not act on.
const KNOWN_STATUSES: &[&str] = &[
    "sent",
    "delivered",
    "read",
    "failed",
    "deleted",
    "warning",
    "played",
    "missing",
];

/// Template review events, including those that change no status.
const KNOWN_TEMPLATE_EVENTS: &[&str] = &["FLAGGED", "missing"];

/// `prefix:value` where `value` is known, else `prefix:unknown`: these name
/// metric series, and anyone who can reach the webhook must not be able to
/// mint new ones.
fn bounded(prefix: &str, value: &str, known: &[&str]) -> String {
    let value = if known.contains(&value) {
        value
    } else {
        "unknown"
    };
    format!("{prefix}:{value}")
}

fn unhandled(kind: &str) -> WebhookEvent {
    WebhookEvent::Unhandled {
        kind: kind.to_owned(),
    }
}

fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    let seconds = match value {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds, 0)
}

fn message_events(value: &Value, events: &mut Vec<WebhookEvent>) {
    let metadata = &value["metadata"];
    for message in value["messages"].as_array().into_iter().flatten() {
        let kind = message["type"].as_str().unwrap_or("unknown");
        // "system" messages (a customer changed number) and "unsupported"
        // ones are not the customer writing in; "errors" carries no message.
        if matches!(kind, "system" | "unsupported") {
            events.push(unhandled(&format!("message:{kind}")));
            continue;
        }
        let parsed = (|| {
            Some(WebhookEvent::Inbound {
                phone_number_id: metadata["phone_number_id"].as_str()?.to_owned(),
                display_phone_number: metadata["display_phone_number"].as_str()?.to_owned(),
                customer: message["from"].as_str()?.to_owned(),
                wamid: message["id"].as_str()?.to_owned(),
                received_at: timestamp(&message["timestamp"])?,
                entry_point: match message["referral"]["source_type"].as_str() {
                    Some("ad") => EntryPoint::ClickToWhatsAppAd,
                    Some("post") => EntryPoint::FacebookPageCta,
                    _ if message["referral"]["ctwa_clid"].is_string() => {
                        EntryPoint::ClickToWhatsAppAd
                    }
                    _ => EntryPoint::Organic,
                },
                text: message["text"]["body"]
                    .as_str()
                    .or(message["button"]["text"].as_str())
                    .map(str::to_owned),
            })
        })();
        events.push(parsed.unwrap_or_else(|| unhandled("message:malformed")));
    }
    for status in value["statuses"].as_array().into_iter().flatten() {
        let name = status["status"].as_str().unwrap_or("missing");
        let parsed = (|| {
            let reported = DeliveryStatus::from_webhook(name)?;
            let error = status["errors"][0].as_object().map(|error| DeliveryError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                title: error
                    .get("title")
                    .or(error.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
            Some(WebhookEvent::Status {
                wamid: status["id"].as_str()?.to_owned(),
                status: reported,
                error,
            })
        })();
        events.push(parsed.unwrap_or_else(|| unhandled(&bounded("status", name, KNOWN_STATUSES))));
    }
}

fn template_event(waba_id: &str, value: &Value) -> WebhookEvent {
    let event = value["event"].as_str().unwrap_or("missing");
    let status = match event {
        "APPROVED" | "REINSTATED" => Status::Approved,
        "REJECTED" => Status::Rejected,
        "PENDING" => Status::Pending,
        "PAUSED" => Status::Paused,
        "DISABLED" => Status::Disabled,
        "IN_APPEAL" => Status::InAppeal,
        "PENDING_DELETION" => Status::PendingDeletion,
        "LIMIT_EXCEEDED" => Status::LimitExceeded,
        "ARCHIVED" => Status::Archived,
        "DELETED" => Status::Deleted,
        // FLAGGED warns about quality; the status itself does not change.
        other => return unhandled(&bounded("template", other, KNOWN_TEMPLATE_EVENTS)),
    };
    let (Some(name), Some(language)) = (
        value["message_template_name"].as_str(),
        value["message_template_language"].as_str(),
    ) else {
        return unhandled("template:malformed");
    };
    let reason = match value["reason"].as_str() {
        None | Some("NONE") => String::new(),
        Some(reason) => reason.to_owned(),
    };
    WebhookEvent::TemplateStatus {
        waba_id: waba_id.to_owned(),
        name: name.to_owned(),
        language: language.to_owned(),
        status,
        reason,
    }
}

#[cfg(test)]
mod tests;
