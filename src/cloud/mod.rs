//! The WhatsApp Cloud API side: the delivery worker (messages out) and the
//! webhook receiver (messages, statuses and template reviews in). Both are
//! off unless configured, so wagate runs record-only without an account.

pub mod webhook;
pub mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::{CloudConfig, resolve_secret};
use crate::domain::delivery::RetryPolicy;
use crate::net::ConnectionLimits;
use crate::service::Service;

/// What is running, to stop on shutdown.
pub struct Running {
    pub worker: Option<tokio::task::JoinHandle<()>>,
    pub webhook: Option<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

impl Running {
    pub fn stop(self) {
        if let Some(worker) = self.worker {
            worker.abort();
        }
        if let Some((_, webhook)) = self.webhook {
            webhook.abort();
        }
    }
}

/// Starts what the configuration asks for; refuses half a configuration.
pub async fn start(
    config: &CloudConfig,
    store: &Service,
    limits: ConnectionLimits,
) -> Result<Running, String> {
    let worker = if config.delivery {
        // Numbers may come from the account registry, each account with its
        // own token; the process-wide token is for the default account.
        let access_token = resolve_secret(
            &config.access_token,
            &config.access_token_file,
            "access token",
        )?;
        if access_token.is_none() {
            tracing::info!(
                "no WAGATE_ACCESS_TOKEN: only accounts with their own credentials deliver"
            );
        }
        let settings = worker::DeliverySettings {
            api_root: format!(
                "{}/{}",
                config.graph_base_url.trim_end_matches('/'),
                config.graph_api_version.trim_matches('/')
            ),
            access_token,
            phone_number_ids: config.phone_number_ids.iter().cloned().collect(),
            rate_per_second: config.delivery_rate,
            timeout: config.delivery_timeout,
            retry: RetryPolicy {
                base: config.delivery_backoff,
                cap: config.delivery_backoff_max,
                max_attempts: config.delivery_max_attempts,
            },
        };
        tracing::info!(
            graph = %settings.api_root,
            numbers = settings.phone_number_ids.len(),
            rate_per_second = settings.rate_per_second,
            "delivering through the Cloud API"
        );
        Some(worker::spawn(store.clone(), settings)?)
    } else {
        tracing::info!("delivery is off: accepted messages are recorded, not sent");
        None
    };

    let app_secret = resolve_secret(&config.app_secret, &config.app_secret_file, "app secret")?;
    let verify_token = resolve_secret(
        &config.webhook_verify_token,
        &config.webhook_verify_token_file,
        "webhook verify token",
    )?;
    let webhook = match (app_secret, verify_token) {
        (None, None) => None,
        (Some(app_secret), Some(verify_token)) => {
            let business_numbers: HashMap<String, String> = config
                .phone_number_ids
                .iter()
                .map(|(number, id)| (id.clone(), number.clone()))
                .collect();
            let settings = webhook::WebhookSettings {
                app_secret,
                verify_token,
                business_numbers,
            };
            let (address, serving) =
                webhook::serve(config.webhook_listen, store.clone(), settings, limits)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot listen for webhooks on {}: {e}",
                            config.webhook_listen
                        )
                    })?;
            tracing::info!(%address, "receiving webhooks on http://{address}/webhook");
            Some((address, tokio::spawn(serving)))
        }
        _ => {
            return Err(
                "webhooks need both the app secret and the verify token (WAGATE_APP_SECRET, WAGATE_WEBHOOK_VERIFY_TOKEN)".into(),
            );
        }
    };
    Ok(Running { worker, webhook })
}
