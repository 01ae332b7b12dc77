//! Clickatell's callbacks: `POST /clickatell/{number}/{status|reply}/{token}`
//! on the webhook listener, one status URL and one reply URL per number.
//!
//! The One API signs nothing, so each URL carries the number's long random
//! secret, compared in constant time; a wrong number, kind or token is a
//! 404 (nothing here to find), and a body from another integration a 403.
//! Every event is stored before the 200; a storage failure answers 500 and
//! Clickatell delivers again. Repeats and reordering are harmless: inbound
//! ids dedupe and statuses only move forward.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use subtle::ConstantTimeEq;

use super::webhook::{CustomerMessage, Receiver};
use crate::domain::account::Route;
use crate::domain::clickatell::{self, CallbackEvent, CallbackKind, Integration};
use crate::domain::{EntryPoint, PhoneNumber};
use crate::store::{StatusReport, StoreError};
use crate::telemetry::{self, Handled};

pub(super) async fn callback(
    State(receiver): State<Arc<Receiver>>,
    Path((number, kind, token)): Path<(String, String, String)>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let integration = match authenticate(&receiver, &number, &kind, &token).await {
        Ok(found) => found,
        Err(Refusal::NotFound) => {
            telemetry::record_webhook("clickatell_unauthorized", Handled::No);
            return (StatusCode::NOT_FOUND, "not found");
        }
        Err(Refusal::Store(error)) => {
            tracing::error!(%error, "cannot read the number of a Clickatell callback");
            return (StatusCode::INTERNAL_SERVER_ERROR, "try again");
        }
    };
    let (business, integration) = integration;
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        telemetry::record_webhook("clickatell_malformed", Handled::No);
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    if clickatell::callback_integration(&body) != Some(integration.id.as_str()) {
        tracing::warn!(business = %business, "Clickatell callback for another integration; nothing recorded");
        telemetry::record_webhook("clickatell_unauthorized", Handled::No);
        return (StatusCode::FORBIDDEN, "wrong integration");
    }
    for event in clickatell::callback_events(&body) {
        if let Err(error) = handle(&receiver, &business, event).await {
            tracing::error!(%error, "cannot store a Clickatell callback event; it will come again");
            return (StatusCode::INTERNAL_SERVER_ERROR, "try again");
        }
    }
    (StatusCode::OK, "OK")
}

enum Refusal {
    NotFound,
    Store(StoreError),
}

/// The number a callback URL names, when it is a Clickatell number whose
/// callback token the URL carries.
async fn authenticate(
    receiver: &Receiver,
    number: &str,
    kind: &str,
    token: &str,
) -> Result<(PhoneNumber, Integration), Refusal> {
    CallbackKind::from_path(kind).ok_or(Refusal::NotFound)?;
    let digits = number.trim_start_matches('+');
    let business = PhoneNumber::parse(&format!("+{digits}")).map_err(|_| Refusal::NotFound)?;
    let registered = receiver
        .store
        .business_number(&business)
        .await
        .map_err(Refusal::Store)?;
    let Some(Route::Clickatell(integration)) = registered.map(|n| n.route) else {
        return Err(Refusal::NotFound);
    };
    let expected = match super::account_token(&integration.callback_token, None) {
        Ok(secret) => secret,
        Err(why) => {
            tracing::error!(%business, %why, "cannot read a Clickatell number's callback token");
            return Err(Refusal::NotFound);
        }
    };
    if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok((business, integration))
    } else {
        tracing::warn!(%business, "Clickatell callback with a wrong token; nothing recorded");
        Err(Refusal::NotFound)
    }
}

async fn handle(
    receiver: &Receiver,
    business: &PhoneNumber,
    event: CallbackEvent,
) -> Result<(), StoreError> {
    match event {
        CallbackEvent::Status {
            api_message_id,
            client_message_id,
            status: Some(status),
            error,
        } => {
            let report = receiver
                .report_status("clickatell_status", &api_message_id, status, error.as_ref())
                .await?;
            // An id wagate never stored, for a message wagate sent: the send
            // timed out after Clickatell took it. Attach the id, so the
            // message is not sent again and this status applies.
            if report == StatusReport::Early
                && let Some(message_id) = client_message_id
                    .as_deref()
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
            {
                let attached = receiver
                    .store
                    .attach_provider_id(message_id, &api_message_id, Utc::now())
                    .await?;
                tracing::info!(%message_id, %api_message_id, attached = attached.is_some(), "Clickatell id of a timed-out send");
            }
        }
        CallbackEvent::Status { status: None, .. } => {
            // Queued at Clickatell: nothing a caller needs to see.
            telemetry::record_webhook("clickatell_status", Handled::No);
        }
        CallbackEvent::Inbound {
            customer,
            message_id,
            received_at,
            text,
        } => {
            receiver
                .record_inbound(
                    "clickatell_message",
                    CustomerMessage {
                        business: business.as_str(),
                        customer: &customer,
                        message_id: &message_id,
                        received_at,
                        entry_point: EntryPoint::Organic,
                        text: text.as_deref(),
                    },
                )
                .await?;
        }
        CallbackEvent::Unhandled { kind } => {
            tracing::info!(%kind, "Clickatell callback event not handled");
            telemetry::record_webhook(&format!("clickatell_{kind}"), Handled::No);
        }
    }
    Ok(())
}
