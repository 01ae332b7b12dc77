//! Clickatell's One API as a WhatsApp provider: the integration a business
//! number sends through, what its payload can carry, the send body, how an
//! answer is classified, and what its callbacks report. Pure translation;
//! the HTTP lives in `crate::cloud`.
//!
//! The gate does not depend on the provider: a Clickatell number is gated,
//! priced and stored exactly as a Cloud API number; only the last hop and
//! the callbacks differ.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::account::Credentials;
use super::delivery::{Attempt, DeliveryError, DeliveryStatus};
use super::error::{Reason, Rejection};
use super::send::{Content, OutboxMessage};
use super::template::ComponentParameters;

/// Clickatell's id of an integration (one WhatsApp number in its portal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntegrationId(String);

impl IntegrationId {
    pub fn parse(raw: &str) -> Result<IntegrationId, Rejection> {
        let raw = raw.trim();
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "a Clickatell integration id is 1-64 letters, digits, '-' and '_'",
            )
            .at("clickatell.integration_id"));
        }
        Ok(IntegrationId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a business number reaches Clickatell. The secrets stay out of the
/// store: it keeps where they are, as an account does its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub id: IntegrationId,
    /// The integration's API key, sent raw in `Authorization`.
    pub api_key: Credentials,
    /// The secret in this number's callback URLs.
    pub callback_token: Credentials,
}

impl Integration {
    pub fn new(
        id: IntegrationId,
        api_key: Credentials,
        callback_token: Credentials,
    ) -> Result<Integration, Rejection> {
        for (credentials, field) in [(&api_key, "api_key"), (&callback_token, "callback_token")] {
            if !credentials.is_some() {
                return Err(Rejection::new(
                    Reason::InvalidAccount,
                    format!(
                        "a Clickatell number needs its {field} (an environment variable or a file)"
                    ),
                )
                .at(format!("clickatell.{field}")));
            }
        }
        Ok(Integration {
            id,
            api_key,
            callback_token,
        })
    }
}

/// Refuses, before anything is stored, what the One API's documented
/// WhatsApp payload cannot carry. Sending it anyway would drop parts of
/// the message silently.
pub fn check_carries(content: &Content) -> Result<(), Rejection> {
    let refuse = |what: &str| {
        Err(Rejection::new(
            Reason::NotSupportedByProvider,
            format!(
                "this business number sends through Clickatell, whose One API cannot carry {what}"
            ),
        )
        .with_metadata("provider", "clickatell"))
    };
    match content {
        Content::Text(_) => Ok(()),
        Content::Template { parameters, .. } => {
            if !parameters.body.named.is_empty() {
                return refuse("named template parameters");
            }
            if parameters.header != ComponentParameters::default()
                || parameters.header_media.is_some()
            {
                return refuse("template header parameters");
            }
            if !parameters.buttons.is_empty() || !parameters.quick_replies.is_empty() {
                return refuse("template button parameters");
            }
            Ok(())
        }
        // Sending by file id needs field names this release does not have
        // from Clickatell's reference; refusing beats guessing.
        Content::Media(_) => refuse("media messages yet"),
        Content::Interactive(_) => refuse("interactive messages"),
        Content::Location(_) => refuse("location messages"),
        Content::Reaction(_) => refuse("reactions"),
    }
}

/// The `POST /v1/message` body for an accepted message: one message, on
/// the WhatsApp channel (Clickatell's default channel is SMS).
pub fn message_body(message: &OutboxMessage) -> Value {
    let to = message.request.pair.customer.digits();
    let mut one = json!({
        "channel": "whatsapp",
        "to": to,
        "clientMessageId": message.message_id.to_string(),
    });
    match &message.request.content {
        Content::Template { id, parameters } => {
            // Positional values as "1", "2", ...; the template's language is
            // the one it was approved in at Clickatell.
            let values: serde_json::Map<String, Value> = parameters
                .body
                .positional
                .iter()
                .enumerate()
                .map(|(i, value)| ((i + 1).to_string(), json!(value)))
                .collect();
            one["hsm"] = json!({ "template": id.name(), "parameters": values });
        }
        // `check_carries` let only text through otherwise.
        content => {
            one["content"] = json!(content.free_form_text().unwrap_or_default());
        }
    }
    json!({ "messages": [one] })
}

/// Error codes that mean "not now": 18, 19 and 43 are rate limits (sent
/// with HTTP 400 or 503).
const RETRYABLE_CODES: &[i64] = &[18, 19, 43];

/// Classifies a One API answer: its HTTP status and body. Errors come at
/// the top level (the whole request) or per message.
pub fn classify(http_status: u16, body: &str) -> Attempt {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message = &json["messages"][0];
    let error = [&json["error"], &message["error"]]
        .into_iter()
        .find(|e| e.is_object())
        .map(|e| {
            (
                e["code"]
                    .as_i64()
                    .or_else(|| e["code"].as_str().and_then(|c| c.parse().ok())),
                e["description"].as_str().unwrap_or("").to_owned(),
            )
        });
    let retry = |why: String| Attempt::Retry { why };
    match error {
        Some((Some(code), _)) if RETRYABLE_CODES.contains(&code) => {
            return retry(format!("HTTP {http_status}, Clickatell code {code}"));
        }
        _ if http_status == 429 || http_status >= 500 => {
            return retry(format!("HTTP {http_status}"));
        }
        Some((Some(code), description)) => {
            return Attempt::Refused(DeliveryError::clickatell(code, &description));
        }
        Some((None, description)) => {
            return Attempt::Refused(DeliveryError::clickatell(
                i64::from(http_status),
                &description,
            ));
        }
        None => {}
    }
    let accepted = message["accepted"].as_bool().unwrap_or(false);
    match message["apiMessageId"].as_str() {
        Some(id) if (200..300).contains(&http_status) && accepted && !id.is_empty() => {
            Attempt::Submitted {
                wamid: id.to_owned(),
            }
        }
        // A success without an id may still have sent: retrying could send
        // twice. Fail loudly, as for the Cloud API.
        _ if (200..300).contains(&http_status) => Attempt::Refused(DeliveryError::clickatell(
            0,
            &format!("HTTP {http_status} without an accepted apiMessageId"),
        )),
        _ => Attempt::Refused(DeliveryError::clickatell(
            i64::from(http_status),
            &format!("HTTP {http_status}"),
        )),
    }
}

/// Which of a number's two callback URLs Clickatell called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackKind {
    Status,
    Reply,
}

impl CallbackKind {
    pub fn from_path(segment: &str) -> Option<CallbackKind> {
        match segment {
            "status" => Some(CallbackKind::Status),
            "reply" => Some(CallbackKind::Reply),
            _ => None,
        }
    }
}

/// One thing a callback reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackEvent {
    /// A status of a message wagate sent. `status` is `None` for statuses
    /// that change nothing (queued at Clickatell).
    Status {
        api_message_id: String,
        client_message_id: Option<String>,
        status: Option<DeliveryStatus>,
        error: Option<DeliveryError>,
    },
    /// A customer's message to the business number.
    Inbound {
        /// The customer's number, `+` and digits.
        customer: String,
        message_id: String,
        received_at: DateTime<Utc>,
        /// What the customer wrote (`moText`), for opt-out keywords.
        text: Option<String>,
    },
    /// Seen but not acted on; `kind` says what, for counting.
    Unhandled { kind: String },
}

/// The integration a callback says it is from.
pub fn callback_integration(body: &Value) -> Option<&str> {
    body["integrationId"].as_str()
}

/// Every event in a callback body. Anything not understood becomes
/// `Unhandled`, never an error: Clickatell must get its 200.
pub fn callback_events(body: &Value) -> Vec<CallbackEvent> {
    let Some(event) = body["event"].as_object() else {
        return vec![unhandled("malformed")];
    };
    let mut events = Vec::new();
    for (kind, items) in event {
        let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
        match kind.as_str() {
            "messageStatusUpdate" => events.extend(items.iter().map(status_event)),
            "moText" | "moMedia" | "moLocation" => {
                events.extend(items.iter().map(|item| inbound_event(kind, item)))
            }
            other => events.extend(items.iter().map(|_| unhandled(&bounded(other)))),
        }
    }
    events
}

/// Clickatell's WHATSAPP_RE_ENGAGEMENT_REQUIRED: the window had closed.
const RE_ENGAGEMENT_REQUIRED: i64 = 131;
/// WhatsApp's own code for the same failure, so both providers report it alike.
const WINDOW_CLOSED_CODE: i64 = 131047;

fn status_event(item: &Value) -> CallbackEvent {
    let Some(api_message_id) = item["messageId"].as_str().filter(|id| !id.is_empty()) else {
        return unhandled("malformed_status");
    };
    let code = item["statusCode"].as_i64().unwrap_or(-1);
    let name = item["status"].as_str().unwrap_or("");
    let (status, error) = match code {
        2 | 3 => (None, None),
        4 => (Some(DeliveryStatus::Sent), None),
        5 => (Some(DeliveryStatus::Delivered), None),
        6 => (Some(DeliveryStatus::Read), None),
        RE_ENGAGEMENT_REQUIRED => (
            Some(DeliveryStatus::Failed),
            Some(DeliveryError {
                code: WINDOW_CLOSED_CODE,
                title: format!("the customer service window had closed (Clickatell {code} {name})"),
            }),
        ),
        20.. => (
            Some(DeliveryStatus::Failed),
            Some(DeliveryError::clickatell(code, name)),
        ),
        _ => return unhandled("status_unknown"),
    };
    CallbackEvent::Status {
        api_message_id: api_message_id.to_owned(),
        client_message_id: item["clientMessageId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        status,
        error,
    }
}

fn inbound_event(kind: &str, item: &Value) -> CallbackEvent {
    let from = item["from"].as_str().unwrap_or("");
    let message_id = item["messageId"].as_str().unwrap_or("");
    let received_at = item["timestamp"]
        .as_i64()
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    match received_at {
        Some(received_at) if !from.is_empty() && !message_id.is_empty() => CallbackEvent::Inbound {
            customer: format!("+{}", from.trim_start_matches('+')),
            message_id: message_id.to_owned(),
            received_at,
            text: item["content"].as_str().map(str::to_owned),
        },
        _ => unhandled(&format!("malformed_{kind}")),
    }
}

fn unhandled(kind: &str) -> CallbackEvent {
    CallbackEvent::Unhandled {
        kind: kind.to_owned(),
    }
}

/// Event kinds Clickatell documents that wagate does not act on; any other
/// is counted as "other", so a caller cannot grow the metric's labels.
const KNOWN_UNHANDLED: &[&str] = &["messageFallback", "statusIsTyping"];

fn bounded(kind: &str) -> String {
    if KNOWN_UNHANDLED.contains(&kind) {
        kind.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests;
