//! Template sync from the Graph API: pages through
//! `GET /{waba-id}/message_templates` for an account with credentials and
//! makes its registry what WhatsApp holds, at start, on a schedule and on
//! demand (`SyncTemplates`). Every page is fetched before anything is
//! written, so a failure part way (an HTTP error, a timeout, an expired
//! token) leaves the registry as it was; the failure is stored on the
//! account (GetAccount shows it) and counted in metrics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::Secret;
use crate::domain::account::{self, AccountId};
use crate::domain::template_sync::{self, FetchedTemplate, SyncCounts, Unreadable};
use crate::service::Service;
use crate::store::StoreError;
use crate::telemetry;

/// Templates asked for per page (the Graph API's largest is 100s; a page
/// this size keeps each answer small).
const PAGE_SIZE: u32 = 100;
/// Pages followed at most: a cursor that never ends must not loop forever.
const MAX_PAGES: usize = 1000;
/// What the registry keeps of each template.
const FIELDS: &str = "name,language,status,category,components,rejected_reason,id";

pub struct SyncSettings {
    /// `{graph_base_url}/{version}`, without a trailing slash.
    pub api_root: String,
    /// The process-wide token (the default account's).
    pub access_token: Option<Secret>,
    pub timeout: Duration,
}

/// Why a sync did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Not an account that syncs (refused before anything was asked).
    #[error(transparent)]
    Refused(#[from] crate::domain::Rejection),
    /// The Graph API or the token failed; the registry is as it was.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SyncError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(rejection) => SyncError::Refused(rejection),
            other => SyncError::Store(other),
        }
    }
}

/// What a successful sync changed, and when it ran.
#[derive(Debug, Clone, Copy)]
pub struct Synced {
    pub counts: SyncCounts,
    pub at: DateTime<Utc>,
}

pub struct Syncer {
    store: Service,
    http: reqwest::Client,
    settings: SyncSettings,
}

impl Syncer {
    pub fn new(store: Service, settings: SyncSettings) -> Result<Syncer, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Syncer {
            store,
            http,
            settings,
        })
    }

    /// Syncs one account's templates now.
    pub async fn sync(&self, id: &AccountId) -> Result<Synced, SyncError> {
        let stored = self.store.account(id).await?;
        let Some(stored) = stored else {
            return Err(SyncError::Refused(account::account_not_found(id)));
        };
        if !account::syncs_templates(&stored) {
            return Err(SyncError::Refused(
                crate::domain::Rejection::new(
                    crate::domain::Reason::TemplateSyncOff,
                    format!(
                        "account {id} has no credentials, so its templates are typed in, not synced"
                    ),
                )
                .at("waba_id"),
            ));
        }
        // As stored, so the answer and GetAccount agree to the microsecond.
        let now = crate::domain::time::stored(Utc::now());
        let fetched =
            match super::account_token(&stored.credentials, self.settings.access_token.as_ref()) {
                Ok(token) => self.fetch(id, &token).await,
                Err(why) => Err(why),
            };
        match fetched {
            Ok((templates, unreadable)) => {
                for u in &unreadable {
                    tracing::warn!(waba_id = %id, why = %u.why, "a template WhatsApp holds could not be read; its stored copy stays");
                }
                let counts = self
                    .store
                    .apply_template_sync(id, &templates, &unreadable, now)
                    .await?;
                telemetry::record_template_sync(id.as_str(), "ok");
                tracing::info!(
                    waba_id = %id,
                    created = counts.created,
                    updated = counts.updated,
                    deleted = counts.deleted,
                    unchanged = counts.unchanged,
                    failed = counts.failed,
                    "templates synced from WhatsApp"
                );
                Ok(Synced { counts, at: now })
            }
            Err(why) => {
                telemetry::record_template_sync(id.as_str(), "failed");
                tracing::warn!(waba_id = %id, %why, "template sync failed; the registry is unchanged");
                self.store.record_sync(id, Err(why.clone()), now).await?;
                Err(SyncError::Failed(why))
            }
        }
    }

    /// Every page of the account's templates, read.
    async fn fetch(
        &self,
        id: &AccountId,
        token: &Secret,
    ) -> Result<(Vec<FetchedTemplate>, Vec<Unreadable>), String> {
        let url = format!("{}/{}/message_templates", self.settings.api_root, id);
        let (mut templates, mut unreadable) = (Vec::new(), Vec::new());
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("fields", FIELDS.to_owned()),
                ("limit", PAGE_SIZE.to_string()),
            ];
            if let Some(cursor) = &after {
                query.push(("after", cursor.clone()));
            }
            let answer = self
                .http
                .get(&url)
                .query(&query)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        "the Graph API did not answer in time".to_owned()
                    } else {
                        format!("cannot reach the Graph API: {e}")
                    }
                })?;
            let status = answer.status().as_u16();
            let text = answer
                .text()
                .await
                .map_err(|e| format!("the Graph API's answer broke off: {e}"))?;
            let page: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status != 200 {
                return Err(graph_error(status, &page));
            }
            let Some(data) = page["data"].as_array() else {
                return Err("the Graph API answered without a data list".to_owned());
            };
            for value in data {
                match template_sync::parse_graph_template(id, value) {
                    Ok(template) => templates.push(template),
                    Err(failed) => unreadable.push(failed),
                }
            }
            // The last page has no `next`.
            match (
                page["paging"]["next"].as_str(),
                page["paging"]["cursors"]["after"].as_str(),
            ) {
                (Some(_), Some(cursor)) => after = Some(cursor.to_owned()),
                _ => return Ok((templates, unreadable)),
            }
        }
        Err(format!("more than {MAX_PAGES} pages of templates"))
    }

    /// Syncs every account that syncs, now and then every `interval`.
    pub fn spawn_schedule(
        self: std::sync::Arc<Self>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.store.list_accounts().await {
                    Ok(accounts) => {
                        for a in accounts.iter().filter(|a| account::syncs_templates(a)) {
                            // Each outcome is logged, counted and stored.
                            let _ = self.sync(&a.id).await;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot list accounts to sync"),
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// The Graph API's error, as its status, message and code (190: the token
/// expired or was revoked).
fn graph_error(status: u16, body: &Value) -> String {
    let error = &body["error"];
    match (error["message"].as_str(), error["code"].as_i64()) {
        (Some(message), Some(code)) => {
            format!("the Graph API answered {status}: {message} (code {code})")
        }
        _ => format!("the Graph API answered {status}"),
    }
}
