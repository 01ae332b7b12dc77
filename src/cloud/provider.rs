//! The last hop, per provider: the HTTP request that hands one message to
//! a provider and how its answer reads. Everything before it (the gate,
//! the outbox, leases, retries) is the same for every provider.

use serde_json::Value;

use crate::config::Secret;
use crate::domain::account::Route;
use crate::domain::delivery::{self, Attempt};
use crate::domain::{OutboxMessage, clickatell, cloud_api};

/// Where each provider is.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `{graph_base_url}/{version}`, without a trailing slash.
    pub graph_api_root: String,
    /// Clickatell's base URL, without a trailing slash.
    pub clickatell_base: String,
}

/// One message as one provider takes it.
pub struct Handoff {
    pub provider: &'static str,
    pub url: String,
    /// The `Authorization` header's value.
    pub authorization: String,
    pub body: Value,
    /// Reads the provider's answer: its HTTP status and body.
    pub classify: fn(u16, &str) -> Attempt,
}

/// The request that sends `message` along `route` with its secret (the
/// account's token for the Cloud API, the integration's key for Clickatell).
pub fn handoff(
    endpoints: &Endpoints,
    route: &Route,
    secret: &Secret,
    message: &OutboxMessage,
) -> Handoff {
    match route {
        Route::CloudApi(phone_number_id) => Handoff {
            provider: "cloud_api",
            url: format!(
                "{}/{}/messages",
                endpoints.graph_api_root,
                phone_number_id.as_str()
            ),
            authorization: format!("Bearer {}", secret.expose()),
            body: cloud_api::message_body(message),
            classify: delivery::classify,
        },
        // One message per request, so one answer is one message's outcome.
        Route::Clickatell(_) => Handoff {
            provider: "clickatell",
            url: format!("{}/v1/message", endpoints.clickatell_base),
            // The raw key: Clickatell takes no scheme.
            authorization: secret.expose().to_owned(),
            body: clickatell::message_body(message),
            classify: clickatell::classify,
        },
    }
}
