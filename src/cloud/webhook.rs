//! The webhook receiver Meta calls: the verification handshake (GET) and
//! signed notifications (POST), turned into inbound records, delivery
//! statuses and template review updates.
//!
//! Every event is stored before the 200, so a 200 means "kept"; a storage
//! failure answers 500 and Meta delivers again. Repeats are harmless:
//! inbound ids dedupe, statuses only move forward, template statuses are
//! set, not toggled.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::config::Secret;
use crate::domain::account::{self, AccountId};
use crate::domain::cloud_api::{self, WebhookEvent};
use crate::domain::{
    Inbound, InboundKind, InboundMessageId, InboundOutcome, Pair, PhoneNumber, TemplateId,
};
use crate::net::{self, ConnectionLimits, Gatekeeper};
use crate::service::Service;
use crate::store::{StatusReport, StoreError};
use crate::telemetry::{self, Handled};

pub struct WebhookSettings {
    /// Meta's webhooks, when configured.
    pub meta: Option<MetaSettings>,
    /// Whether Clickatell's callbacks are served.
    pub clickatell: bool,
}

pub struct MetaSettings {
    pub app_secret: Secret,
    pub verify_token: Secret,
    /// Cloud API phone number id -> business number (E.164).
    pub business_numbers: HashMap<String, String>,
}

pub(super) struct Receiver {
    pub(super) store: Service,
    meta: Option<MetaSettings>,
}

/// Binds the webhook port; the returned future serves until dropped.
pub async fn serve(
    listen: SocketAddr,
    store: Service,
    settings: WebhookSettings,
    limits: ConnectionLimits,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let receiver = Arc::new(Receiver {
        store,
        meta: settings.meta,
    });
    let mut app = Router::new();
    if receiver.meta.is_some() {
        app = app.route("/webhook", get(verify).post(notify));
    }
    if settings.clickatell {
        app = app.route(
            "/clickatell/{number}/{kind}/{token}",
            post(super::callbacks::callback),
        );
    }
    let app = app.with_state(receiver);
    let gatekeeper = Gatekeeper::new(listener, "webhook", limits);
    Ok((address, net::serve_http1(gatekeeper, app)))
}

/// `GET /webhook?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...`
async fn verify(
    State(receiver): State<Arc<Receiver>>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or("");
    let challenge = query.get("hub.challenge").cloned().unwrap_or_default();
    let Some(meta) = &receiver.meta else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let expected = meta.verify_token.expose().as_bytes();
    let token_ok = bool::from(token.as_bytes().ct_eq(expected));
    if mode == Some("subscribe") && token_ok {
        tracing::info!("webhook subscription verified");
        (StatusCode::OK, challenge)
    } else {
        tracing::warn!("webhook verification refused: wrong mode or verify token");
        (StatusCode::FORBIDDEN, "verification failed".to_owned())
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
fn check_signature(secret: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<(), StatusCode> {
    let header = headers
        .get("x-hub-signature-256")
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let signature = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(StatusCode::FORBIDDEN)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    mac.update(body);
    // Constant time.
    mac.verify_slice(&signature)
        .map_err(|_| StatusCode::FORBIDDEN)
}

async fn notify(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(meta) = &receiver.meta else {
        return (StatusCode::NOT_FOUND, "");
    };
    if let Err(status) = check_signature(&meta.app_secret, &headers, &body) {
        tracing::warn!(%status, "webhook refused: missing or wrong signature");
        telemetry::record_webhook("unsigned", Handled::No);
        return (status, "bad signature");
    }
    let Ok(notification) = serde_json::from_slice::<serde_json::Value>(&body) else {
        telemetry::record_webhook("malformed", Handled::No);
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    for event in cloud_api::webhook_events(&notification) {
        if let Err(error) = receiver.handle(event).await {
            tracing::error!(%error, "cannot store a webhook event; Meta will deliver it again");
            return (StatusCode::INTERNAL_SERVER_ERROR, "try again");
        }
    }
    (StatusCode::OK, "EVENT_RECEIVED")
}

/// A customer's message as a provider reports it.
pub(super) struct CustomerMessage<'a> {
    pub business: &'a str,
    pub customer: &'a str,
    pub message_id: &'a str,
    pub received_at: chrono::DateTime<Utc>,
    pub entry_point: crate::domain::EntryPoint,
    /// What they wrote, when it was text.
    pub text: Option<&'a str>,
}

impl Receiver {
    /// Records a customer's message (from any provider), which opens or
    /// extends the window. `event` names it in the webhook metric.
    pub(super) async fn record_inbound(
        &self,
        event: &str,
        message: CustomerMessage<'_>,
    ) -> Result<(), StoreError> {
        let CustomerMessage {
            business,
            customer,
            message_id,
            received_at,
            entry_point,
            text,
        } = message;
        let now = Utc::now();
        let parsed = (|| {
            let pair = Pair {
                business: PhoneNumber::parse(business)?,
                customer: PhoneNumber::parse(customer)?,
            };
            let id = InboundMessageId::parse(message_id)?;
            let inbound = Inbound::new(Some(received_at), InboundKind::Message, entry_point, now)?;
            Ok::<_, crate::domain::Rejection>((pair, id, inbound))
        })();
        let (pair, id, inbound) = match parsed {
            Ok(parsed) => parsed,
            Err(rejection) => {
                tracing::warn!(%rejection, "webhook message not recorded");
                telemetry::record_webhook(event, Handled::No);
                telemetry::record_inbound("webhook", rejection.reason.as_str().to_owned());
                return Ok(());
            }
        };
        match self.store.record_inbound(&pair, &id, &inbound, now).await {
            Ok((outcome, _)) => {
                tracing::info!(business = %pair.business, customer = %pair.customer, ?outcome, ?entry_point, "webhook inbound recorded");
                let handled = if outcome == InboundOutcome::Duplicate {
                    Handled::Duplicate
                } else {
                    Handled::Yes
                };
                telemetry::record_webhook(event, handled);
                telemetry::record_inbound("webhook", outcome.as_str().to_owned());
                // "STOP": the customer opts out of marketing (a repeat of the
                // message changes nothing more).
                if let Some(text) = text
                    && self.store.note_customer_text(&pair, text, now).await?
                {
                    tracing::info!(business = %pair.business, customer = %pair.customer, "opt-out keyword: marketing templates are refused from now on");
                }
            }
            Err(StoreError::Rejected(rejection)) => {
                tracing::warn!(%rejection, "webhook message not recorded");
                telemetry::record_webhook(event, Handled::No);
                telemetry::record_inbound("webhook", rejection.reason.as_str().to_owned());
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Applies a delivery status (from any provider) to the message with
    /// this provider id. `event` names it in the webhook metric.
    pub(super) async fn report_status(
        &self,
        event: &str,
        provider_id: &str,
        status: crate::domain::delivery::DeliveryStatus,
        error: Option<&crate::domain::delivery::DeliveryError>,
    ) -> Result<StatusReport, StoreError> {
        let report = self
            .store
            .report_status(provider_id, status, error, Utc::now())
            .await?;
        tracing::info!(%provider_id, ?status, outcome = ?report_name(&report), "webhook status");
        let handled = match report {
            StatusReport::Applied(_) => Handled::Yes,
            // Providers deliver statuses again (and out of order): one
            // already stored, or already passed, is a replay.
            StatusReport::Unchanged => Handled::Duplicate,
            StatusReport::Early => Handled::No,
        };
        telemetry::record_webhook(event, handled);
        Ok(report)
    }

    /// Stores one event. Only storage failures are errors; anything else
    /// that cannot be used is counted and logged.
    async fn handle(&self, event: WebhookEvent) -> Result<(), StoreError> {
        let now = Utc::now();
        match event {
            WebhookEvent::Inbound {
                phone_number_id,
                display_phone_number,
                customer,
                wamid,
                received_at,
                entry_point,
                text,
            } => {
                let business = self
                    .meta
                    .as_ref()
                    .and_then(|meta| meta.business_numbers.get(&phone_number_id))
                    .cloned()
                    .unwrap_or(display_phone_number);
                self.record_inbound(
                    "message",
                    CustomerMessage {
                        business: &business,
                        customer: &customer,
                        message_id: &wamid,
                        received_at,
                        entry_point,
                        text: text.as_deref(),
                    },
                )
                .await?;
            }
            WebhookEvent::Status {
                wamid,
                status,
                error,
            } => {
                self.report_status("status", &wamid, status, error.as_ref())
                    .await?;
            }
            WebhookEvent::TemplateStatus {
                waba_id,
                name,
                language,
                status,
                reason,
            } => {
                let Ok(id) = TemplateId::parse(&name, &language) else {
                    telemetry::record_webhook("template_status", Handled::No);
                    return Ok(());
                };
                let registered = match AccountId::parse(&waba_id) {
                    Ok(account) if !account.is_default() => self.store.account(&account).await?,
                    _ => None,
                };
                let id = id.in_account(account::webhook_account(&waba_id, registered.as_ref()));
                let updated = match self
                    .store
                    .set_template_status(&id, status, &reason, now)
                    .await
                {
                    Ok(updated) => updated,
                    Err(StoreError::Rejected(rejection)) => {
                        tracing::warn!(%rejection, "template status not applied");
                        telemetry::record_webhook("template_status", Handled::No);
                        return Ok(());
                    }
                    Err(other) => return Err(other),
                };
                tracing::info!(template = %name, %language, status = status.as_str(), known = updated.is_some(), "webhook template status");
                let handled = if updated.is_some() {
                    Handled::Yes
                } else {
                    Handled::No
                };
                telemetry::record_webhook("template_status", handled);
            }
            WebhookEvent::Unhandled { kind } => {
                tracing::info!(%kind, "webhook event not handled");
                telemetry::record_webhook(&kind, Handled::No);
            }
        }
        Ok(())
    }
}

fn report_name(report: &StatusReport) -> &'static str {
    match report {
        StatusReport::Applied(_) => "applied",
        StatusReport::Unchanged => "unchanged",
        StatusReport::Early => "kept until the message is known",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let mut headers = HeaderMap::new();
        let value = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert("x-hub-signature-256", value.parse().unwrap());
        headers
    }

    #[test]
    fn signatures_are_checked_over_the_raw_body() {
        let secret = Secret::new("app-secret");
        let body = br#"{"object":"whatsapp_business_account"}"#;
        assert_eq!(
            check_signature(&secret, &signed("app-secret", body), body),
            Ok(())
        );
        assert_eq!(
            check_signature(&secret, &signed("other-secret", body), body),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check_signature(&secret, &signed("app-secret", body), b"{}"),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check_signature(&secret, &HeaderMap::new(), body),
            Err(StatusCode::UNAUTHORIZED)
        );
        let mut malformed = HeaderMap::new();
        malformed.insert("x-hub-signature-256", "sha1=abcd".parse().unwrap());
        assert_eq!(
            check_signature(&secret, &malformed, body),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
