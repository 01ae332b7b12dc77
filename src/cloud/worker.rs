//! The delivery worker: claims due messages from the store, POSTs each to
//! its number's provider (the Cloud API or Clickatell, see `provider`), and
//! stores what happened. At least once: a message is
//! claimed under a lease before the call and its outcome stored after, so a
//! crash between the two sends it again once the lease lapses (on this
//! process after a restart, or on another replica), and never otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rand::Rng;
use tokio::task::JoinSet;

use crate::config::Secret;
use crate::domain::account::{self, Credentials, PhoneNumberId, Route};
use crate::domain::delivery::{self, Attempt, Delivery, DeliveryError, RetryPolicy, SendRate};
use crate::domain::{OutboxMessage, Pair, PhoneNumber};
use crate::service::Service;
use crate::store::Claim;
use crate::telemetry;

/// Messages claimed per pass.
const BATCH: usize = 64;
/// Cloud API calls in flight at once.
const IN_FLIGHT: usize = 16;
/// How long a claim outlives the call's own timeout: time to store the
/// outcome. A claim of a crashed process is due again after this.
const LEASE_OVER_TIMEOUT: TimeDelta = TimeDelta::seconds(5);
/// How long a message waits when its number's send rate cannot be read.
const RATE_UNKNOWN_WAIT: TimeDelta = TimeDelta::seconds(1);
/// Pause when nothing is due.
const IDLE: Duration = Duration::from_millis(100);

pub struct DeliverySettings {
    pub endpoints: super::provider::Endpoints,
    /// The process-wide token: the default account's, and what
    /// `--phone-number-ids` numbers send with.
    pub access_token: Option<Secret>,
    /// Business number (E.164) -> Cloud API phone number id.
    pub phone_number_ids: HashMap<String, String>,
    pub rate_per_second: u32,
    /// Each (business number, customer) pair's rate: WhatsApp's pair rate.
    pub pair_rate: SendRate,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// Why a message has no way out now.
enum RouteError {
    /// Not without a change to the registry: the attempt is refused.
    Refused(String),
    /// Perhaps on a later try (the store, a token not yet mounted).
    Unavailable(String),
}

struct Worker {
    store: Service,
    http: reqwest::Client,
    settings: DeliverySettings,
    rate: SendRate,
}

/// Starts delivering; the handle stops it when aborted.
pub fn spawn(
    store: Service,
    settings: DeliverySettings,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let http = reqwest::Client::builder()
        .timeout(settings.timeout)
        .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let worker = Arc::new(Worker {
        store,
        http,
        rate: SendRate::new(settings.rate_per_second),
        settings,
    });
    Ok(tokio::spawn(async move { worker.run().await }))
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let lease = TimeDelta::from_std(self.settings.timeout).unwrap_or(TimeDelta::MAX)
            + LEASE_OVER_TIMEOUT;
        let mut calls = JoinSet::new();
        loop {
            let room = IN_FLIGHT.saturating_sub(calls.len()).min(BATCH);
            let claimed = if room == 0 {
                Vec::new()
            } else {
                match self.store.claim_due(Utc::now(), lease, room).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::error!(%error, "cannot claim due deliveries");
                        Vec::new()
                    }
                }
            };
            let idle = claimed.is_empty();
            for claim in claimed {
                let worker = self.clone();
                calls.spawn(async move { worker.deliver(claim).await });
            }
            if idle {
                tokio::select! {
                    Some(_) = calls.join_next() => {}
                    () = tokio::time::sleep(IDLE) => {}
                }
            } else {
                // Reap what finished without waiting.
                while calls.try_join_next().is_some() {}
            }
        }
    }

    async fn deliver(&self, claim: Claim) {
        let (message, delivery) = (&claim.message, &claim.delivery);
        let id = message.message_id;
        let slot = self.take_slots(&message.request.pair).await;
        let next = match slot {
            // Over the number's rate (on any replica): due again when a slot
            // frees up; not an attempt.
            Err(wait) => Delivery {
                next_attempt_at: Some(Utc::now() + wait),
                ..delivery.clone()
            },
            Ok(()) => self.attempt(message, delivery).await,
        };
        // A failure's lesson for the pair's consent (131049, 131050) is
        // kept in the same write. On an error the claim lapses and the
        // message is tried again.
        if let Err(error) = self.store.finish_attempt(&claim, &next, Utc::now()).await {
            tracing::error!(%error, message_id = %id, "cannot store a delivery outcome")
        }
    }

    /// A send slot of the business number (its rate, on any replica) and
    /// of the pair (WhatsApp's pair rate), or how long until both are free.
    async fn take_slots(&self, pair: &Pair) -> Result<(), TimeDelta> {
        let unknown = |error: crate::store::StoreError| {
            tracing::warn!(%error, "cannot read the send rate; trying again shortly");
            Err(RATE_UNKNOWN_WAIT)
        };
        let number = self
            .store
            .take_send_slot(pair.business.as_str(), &self.rate, Utc::now())
            .await
            .unwrap_or_else(unknown);
        number?;
        self.store
            .take_send_slot(
                &delivery::pair_rate_key(pair),
                &self.settings.pair_rate,
                Utc::now(),
            )
            .await
            .unwrap_or_else(unknown)
    }

    async fn attempt(&self, message: &OutboxMessage, delivery: &Delivery) -> Delivery {
        let id = message.message_id;
        let business = message.request.pair.business.as_str();
        let now = || Utc::now();
        let route = match self.route(&message.request.pair.business).await {
            Ok(route) => Ok(route),
            Err(RouteError::Refused(why)) => {
                tracing::warn!(message_id = %id, %business, %why, "no route to a provider for this business number");
                telemetry::record_delivery("NO_PHONE_NUMBER_ID");
                return delivery.refused(
                    DeliveryError {
                        code: 0,
                        title: why,
                    },
                    now(),
                );
            }
            Err(RouteError::Unavailable(why)) => Err(why),
        };
        let outcome = match route {
            Ok((route, secret)) => {
                let handoff =
                    super::provider::handoff(&self.settings.endpoints, &route, &secret, message);
                self.call(handoff).await
            }
            Err(why) => Attempt::Retry { why },
        };
        self.store_outcome(id, delivery, outcome)
    }

    /// The route and its secret for a business number: the registry's (its
    /// route, and its account's token or its integration's key), else
    /// `--phone-number-ids` with the process's token.
    async fn route(&self, business: &PhoneNumber) -> Result<(Route, Secret), RouteError> {
        let unavailable = |error: crate::store::StoreError| {
            RouteError::Unavailable(format!("cannot read the account registry: {error}"))
        };
        let registered = self
            .store
            .business_number(business)
            .await
            .map_err(unavailable)?;
        if registered.is_none()
            && let Some(id) = self.settings.phone_number_ids.get(business.as_str())
        {
            let id = PhoneNumberId::parse(id)
                .map_err(|rejection| RouteError::Refused(rejection.to_string()))?;
            // As the default account does: the process's token.
            let token =
                super::account_token(&Credentials::None, self.settings.access_token.as_ref())
                    .map_err(RouteError::Unavailable)?;
            return Ok((Route::CloudApi(id), token));
        }
        let account = match &registered {
            Some(number) => self
                .store
                .account(&number.account)
                .await
                .map_err(unavailable)?,
            None => None,
        };
        let (route, credentials) =
            account::delivery_route(business, registered.as_ref(), account.as_ref())
                .map_err(RouteError::Refused)?;
        let secret = super::account_token(&credentials, self.settings.access_token.as_ref())
            .map_err(RouteError::Unavailable)?;
        Ok((route, secret))
    }

    async fn call(&self, handoff: super::provider::Handoff) -> Attempt {
        let answer = self
            .http
            .post(&handoff.url)
            .header(reqwest::header::AUTHORIZATION, &handoff.authorization)
            .json(&handoff.body)
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (handoff.classify)(status, &text)
            }
            Err(error) => Attempt::Retry {
                why: if error.is_timeout() {
                    format!("{} timed out", handoff.provider)
                } else {
                    format!("{} transport: {error}", handoff.provider)
                },
            },
        }
    }

    fn store_outcome(&self, id: uuid::Uuid, delivery: &Delivery, outcome: Attempt) -> Delivery {
        let now = || Utc::now();
        match outcome {
            Attempt::Submitted { wamid } => {
                tracing::info!(message_id = %id, %wamid, "submitted to the provider");
                telemetry::record_delivery("SUBMITTED");
                delivery.submitted(wamid, now())
            }
            Attempt::Refused(error) => {
                tracing::warn!(message_id = %id, code = error.code, title = %error.title, "the provider refused the message");
                telemetry::record_delivery("REFUSED");
                delivery.refused(error, now())
            }
            Attempt::PairRateHit => {
                let next = delivery.paced(now());
                tracing::info!(message_id = %id, retry_at = ?next.next_attempt_at, "over WhatsApp's pair rate (131056); the message waits");
                telemetry::record_delivery("PAIR_RATE");
                next
            }
            Attempt::Retry { why } => {
                let jitter = rand::rng().random::<f64>();
                let next = delivery.retry_or_give_up(&why, &self.settings.retry, jitter, now());
                match next.next_attempt_at {
                    Some(at) => {
                        tracing::info!(message_id = %id, %why, retry_at = %at, "delivery will be retried");
                        telemetry::record_delivery("RETRY");
                    }
                    None => {
                        tracing::warn!(message_id = %id, %why, attempts = next.attempts, "giving up");
                        telemetry::record_delivery("GAVE_UP");
                    }
                }
                next
            }
        }
    }
}
