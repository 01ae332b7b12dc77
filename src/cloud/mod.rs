//! The providers' side: the delivery worker (messages out, through the
//! Cloud API or Clickatell per number) and the webhook receiver (Meta's
//! messages, statuses and template reviews, and Clickatell's callbacks).
//! Both are off unless configured, so wagate runs record-only without an
//! account.

pub mod callbacks;
pub mod provider;
pub mod sync;
pub mod webhook;
pub mod worker;

use std::net::SocketAddr;

use crate::config::{CloudConfig, Secret, resolve_secret};
use crate::domain::account::Credentials;
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
            endpoints: provider::Endpoints {
                graph_api_root: api_root(config),
                clickatell_base: config.clickatell_base_url.trim_end_matches('/').to_owned(),
            },
            access_token,
            phone_number_ids: config.phone_number_ids.iter().cloned().collect(),
            rate_per_second: config.delivery_rate,
            pair_rate: crate::domain::delivery::SendRate::every(
                chrono::TimeDelta::from_std(config.pair_rate_interval)
                    .map_err(|e| format!("--pair-rate-interval: {e}"))?,
                config.pair_rate_burst,
            ),
            timeout: config.delivery_timeout,
            retry: RetryPolicy {
                base: config.delivery_backoff,
                cap: config.delivery_backoff_max,
                max_attempts: config.delivery_max_attempts,
            },
        };
        tracing::info!(
            graph = %settings.endpoints.graph_api_root,
            clickatell = %settings.endpoints.clickatell_base,
            numbers = settings.phone_number_ids.len(),
            rate_per_second = settings.rate_per_second,
            "delivering through each number's provider (Cloud API or Clickatell)"
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
    let meta = match (app_secret, verify_token) {
        (None, None) => None,
        (Some(app_secret), Some(verify_token)) => Some(webhook::MetaSettings {
            app_secret,
            verify_token,
            business_numbers: config
                .phone_number_ids
                .iter()
                .map(|(number, id)| (id.clone(), number.clone()))
                .collect(),
        }),
        _ => {
            return Err(
                "webhooks need both the app secret and the verify token (WAGATE_APP_SECRET, WAGATE_WEBHOOK_VERIFY_TOKEN)".into(),
            );
        }
    };
    let webhook = if meta.is_some() || config.clickatell_callbacks {
        let settings_meta = meta.is_some();
        let settings = webhook::WebhookSettings {
            meta,
            clickatell: config.clickatell_callbacks,
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
        if settings_meta {
            tracing::info!(%address, "receiving webhooks on http://{address}/webhook");
        }
        if config.clickatell_callbacks {
            tracing::info!(%address, "receiving Clickatell callbacks on http://{address}/clickatell");
        }
        Some((address, tokio::spawn(serving)))
    } else {
        None
    };
    Ok(Running { worker, webhook })
}

/// The template syncer every account with credentials uses (the RPC and
/// the schedule), speaking to the configured Graph API.
pub fn syncer(config: &CloudConfig, store: &Service) -> Result<sync::Syncer, String> {
    sync::Syncer::new(
        store.clone(),
        sync::SyncSettings {
            api_root: api_root(config),
            access_token: resolve_secret(
                &config.access_token,
                &config.access_token_file,
                "access token",
            )?,
            timeout: config.delivery_timeout,
        },
    )
}

fn api_root(config: &CloudConfig) -> String {
    format!(
        "{}/{}",
        config.graph_base_url.trim_end_matches('/'),
        config.graph_api_version.trim_matches('/')
    )
}

/// An account's access token: from the environment variable or file its
/// credentials name, or the process's token for an account without its own
/// (the default account).
pub fn account_token(
    credentials: &Credentials,
    process_token: Option<&Secret>,
) -> Result<Secret, String> {
    match credentials {
        Credentials::None => process_token
            .cloned()
            .ok_or_else(|| "no access token (WAGATE_ACCESS_TOKEN)".to_owned()),
        Credentials::EnvVar(name) => std::env::var(name)
            .map(Secret::new)
            .map_err(|_| format!("the account's token variable {name} is not set")),
        // A small file on a local mount (a Secret): read in place.
        Credentials::File(path) => std::fs::read_to_string(path)
            .map(|text| Secret::new(text.trim_end()))
            .map_err(|error| {
                format!(
                    "cannot read the account's token file {}: {error}",
                    path.display()
                )
            }),
    }
}
