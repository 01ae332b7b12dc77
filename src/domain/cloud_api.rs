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
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::domain::TemplateId;
    use crate::domain::template::SendParameters;

    fn message(content: Content) -> OutboxMessage {
        crate::domain::send::test_message(content)
    }

    #[test]
    fn quick_reply_payloads_and_codes_are_button_parameters_in_button_order() {
        let body = message_body(&message(Content::Template {
            id: crate::domain::TemplateId::parse("otp", "en_US").unwrap(),
            parameters: crate::domain::SendParameters {
                buttons: [(1, "482913".to_owned())].into_iter().collect(),
                quick_replies: [(0, "not-me".to_owned())].into_iter().collect(),
                ..Default::default()
            },
        }));
        assert_eq!(
            body["template"]["components"],
            json!([
                { "type": "button", "sub_type": "quick_reply", "index": "0",
                  "parameters": [{ "type": "payload", "payload": "not-me" }] },
                { "type": "button", "sub_type": "url", "index": "1",
                  "parameters": [{ "type": "text", "text": "482913" }] }
            ])
        );
    }

    #[test]
    fn template_media_and_location_headers_are_header_parameters() {
        let send = |header_media| {
            message_body(&message(Content::Template {
                id: crate::domain::TemplateId::parse("invoice", "en_US").unwrap(),
                parameters: crate::domain::SendParameters {
                    header_media: Some(header_media),
                    ..Default::default()
                },
            }))["template"]["components"][0]
                .clone()
        };
        let document = send(crate::domain::template::HeaderValue::Media {
            kind: crate::domain::template::HeaderMedia::Document,
            source: crate::domain::rich::MediaSource::Id("42".into()),
            filename: Some("invoice.pdf".into()),
        });
        assert_eq!(
            document,
            json!({ "type": "header", "parameters": [
                { "type": "document", "document": { "id": "42", "filename": "invoice.pdf" } }
            ] })
        );
        let place = send(crate::domain::template::HeaderValue::Location(
            crate::domain::rich::Location::new(-33.9, 18.4, "Gardens", "").unwrap(),
        ));
        assert_eq!(
            place,
            json!({ "type": "header", "parameters": [
                { "type": "location", "location": { "latitude": -33.9, "longitude": 18.4, "name": "Gardens" } }
            ] })
        );
    }

    #[test]
    fn text_body() {
        let body = message_body(&message(Content::Text("Hi there".into())));
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "27821234567",
                "type": "text",
                "text": { "preview_url": false, "body": "Hi there" }
            })
        );
    }

    #[test]
    fn template_body_with_header_body_and_url_button() {
        let parameters = SendParameters {
            header: ComponentParameters {
                positional: vec!["A-1001".into()],
                ..Default::default()
            },
            body: ComponentParameters {
                named: BTreeMap::from([("first_name".into(), "Ann".into())]),
                ..Default::default()
            },
            buttons: BTreeMap::from([(0, "track/A-1001".into())]),
            header_media: None,
            quick_replies: BTreeMap::new(),
        };
        let body = message_body(&message(Content::Template {
            id: TemplateId::parse("order_update", "en_US").unwrap(),
            parameters,
        }));
        assert_eq!(
            body["template"],
            json!({
                "name": "order_update",
                "language": { "code": "en_US" },
                "components": [
                    { "type": "header", "parameters": [{ "type": "text", "text": "A-1001" }] },
                    { "type": "body", "parameters": [
                        { "type": "text", "parameter_name": "first_name", "text": "Ann" }
                    ] },
                    { "type": "button", "sub_type": "url", "index": "0",
                      "parameters": [{ "type": "text", "text": "track/A-1001" }] }
                ]
            })
        );
        assert_eq!(body["type"], "template");
    }

    #[test]
    fn template_without_parameters_has_no_components() {
        let body = message_body(&message(Content::Template {
            id: TemplateId::parse("hello_world", "en_US").unwrap(),
            parameters: SendParameters::default(),
        }));
        assert!(body["template"].get("components").is_none());
    }

    #[test]
    fn webhook_messages_statuses_and_template_updates() {
        let notification = json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "changes": [
                    { "field": "messages", "value": {
                        "messaging_product": "whatsapp",
                        "metadata": { "display_phone_number": "15550001111", "phone_number_id": "106540352242922" },
                        "contacts": [{ "profile": { "name": "Ann" }, "wa_id": "27821234567" }],
                        "messages": [
                            { "from": "27821234567", "id": "wamid.in1", "timestamp": "1764061200",
                              "type": "text", "text": { "body": "hi" } },
                            { "from": "27821234568", "id": "wamid.in2", "timestamp": "1764061201",
                              "type": "text", "text": { "body": "from the ad" },
                              "referral": { "source_url": "https://fb.me/x", "source_id": "120", "source_type": "ad",
                                            "ctwa_clid": "ARAk" } },
                            { "from": "27821234569", "id": "wamid.in3", "timestamp": "1764061202", "type": "system",
                              "system": { "body": "changed number" } }
                        ],
                        "statuses": [
                            { "id": "wamid.out1", "status": "delivered", "timestamp": "1764061203", "recipient_id": "27821234567" },
                            { "id": "wamid.out2", "status": "failed", "timestamp": "1764061204", "recipient_id": "27821234567",
                              "errors": [{ "code": 131026, "title": "Message undeliverable" }] },
                            { "id": "wamid.out3", "status": "deleted", "timestamp": "1764061205" }
                        ]
                    }},
                    { "field": "message_template_status_update", "value": {
                        "event": "PAUSED", "message_template_id": 594425479261596_i64,
                        "message_template_name": "order_update", "message_template_language": "en_US",
                        "reason": "Low quality" } },
                    { "field": "message_template_status_update", "value": {
                        "event": "APPROVED", "message_template_name": "welcome",
                        "message_template_language": "pt_BR", "reason": "NONE" } },
                    { "field": "account_update", "value": { "event": "VERIFIED_ACCOUNT" } }
                ]
            }]
        });
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let events = webhook_events(&notification);
        assert_eq!(
            events,
            vec![
                WebhookEvent::Inbound {
                    phone_number_id: "106540352242922".into(),
                    display_phone_number: "15550001111".into(),
                    customer: "27821234567".into(),
                    wamid: "wamid.in1".into(),
                    received_at: at(1764061200),
                    entry_point: EntryPoint::Organic,
                },
                WebhookEvent::Inbound {
                    phone_number_id: "106540352242922".into(),
                    display_phone_number: "15550001111".into(),
                    customer: "27821234568".into(),
                    wamid: "wamid.in2".into(),
                    received_at: at(1764061201),
                    entry_point: EntryPoint::ClickToWhatsAppAd,
                },
                WebhookEvent::Unhandled {
                    kind: "message:system".into()
                },
                WebhookEvent::Status {
                    wamid: "wamid.out1".into(),
                    status: DeliveryStatus::Delivered,
                    error: None,
                },
                WebhookEvent::Status {
                    wamid: "wamid.out2".into(),
                    status: DeliveryStatus::Failed,
                    error: Some(DeliveryError {
                        code: 131026,
                        title: "Message undeliverable".into()
                    }),
                },
                WebhookEvent::Unhandled {
                    kind: "status:deleted".into()
                },
                WebhookEvent::TemplateStatus {
                    waba_id: "102290129340398".into(),
                    name: "order_update".into(),
                    language: "en_US".into(),
                    status: Status::Paused,
                    reason: "Low quality".into(),
                },
                WebhookEvent::TemplateStatus {
                    waba_id: "102290129340398".into(),
                    name: "welcome".into(),
                    language: "pt_BR".into(),
                    status: Status::Approved,
                    reason: String::new(),
                },
                WebhookEvent::Unhandled {
                    kind: "field:account_update".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_notifications_are_unhandled_not_errors() {
        assert_eq!(
            webhook_events(&json!({ "object": "page" })),
            vec![WebhookEvent::Unhandled {
                kind: "malformed".into()
            }]
        );
        let missing_id = json!({ "entry": [{ "changes": [{ "field": "messages", "value": {
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": "1" },
            "messages": [{ "from": "27821234567", "timestamp": "1764061200", "type": "text" }]
        }}]}]});
        assert_eq!(
            webhook_events(&missing_id),
            vec![WebhookEvent::Unhandled {
                kind: "message:malformed".into()
            }]
        );
        let flagged = json!({ "entry": [{ "changes": [{ "field": "message_template_status_update",
            "value": { "event": "FLAGGED", "message_template_name": "x", "message_template_language": "en" } }]}]});
        assert_eq!(
            webhook_events(&flagged),
            vec![WebhookEvent::Unhandled {
                kind: "template:FLAGGED".into()
            }]
        );
    }
}
