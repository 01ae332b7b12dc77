//! Delivery rules: a message's status as WhatsApp reports it (statuses only
//! move forward, so duplicated and out-of-order webhooks are harmless), how a
//! Cloud API answer is classified, the retry backoff, and the per-number
//! send rate. Pure: time and randomness are passed in.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Where an accepted message is on its way to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// In the outbox, not yet handed to the Cloud API.
    Accepted,
    /// The Cloud API took it and gave it a wamid.
    Submitted,
    /// WhatsApp sent it (webhook `sent`).
    Sent,
    /// It reached the customer's device (webhook `delivered`).
    Delivered,
    /// The customer read it (webhook `read`).
    Read,
    /// It will not be delivered: a permanent Cloud API error or a `failed` webhook.
    Failed,
}

impl DeliveryStatus {
    /// Order of progress. Failed ranks above Sent (a sent message can still
    /// fail) but below Delivered: once delivered, a late failure changes nothing.
    fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Accepted => 0,
            DeliveryStatus::Submitted => 1,
            DeliveryStatus::Sent => 2,
            DeliveryStatus::Failed => 3,
            DeliveryStatus::Delivered => 4,
            DeliveryStatus::Read => 5,
        }
    }

    /// Whether a report of `next` moves a message that is at `self`.
    pub fn advances_to(self, next: DeliveryStatus) -> bool {
        next.rank() > self.rank()
    }

    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Read | DeliveryStatus::Failed)
    }

    /// The webhook `status` value, if it is one WhatsApp sends for messages.
    pub fn from_webhook(status: &str) -> Option<DeliveryStatus> {
        Some(match status {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// Why WhatsApp refused or failed a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// WhatsApp's code; a provider's own codes are kept apart from
    /// WhatsApp's above [`PROVIDER_CODES`] (see [`DeliveryError::source`]).
    pub code: i64,
    pub title: String,
}

/// Where a provider's own error codes start in [`DeliveryError::code`]:
/// Clickatell's code 20 is stored as `PROVIDER_CODES + 20`, so it is never
/// read as WhatsApp's (or Graph API's) code 20, in the store or the API.
pub const PROVIDER_CODES: i64 = 1_000_000_000;

/// Whose code a [`DeliveryError`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// WhatsApp's or the Graph API's code.
    WhatsApp,
    Clickatell,
    /// wagate's own (code 0): it gave up, or had no route.
    Wagate,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::WhatsApp => "whatsapp",
            ErrorSource::Clickatell => "clickatell",
            ErrorSource::Wagate => "wagate",
        }
    }
}

impl DeliveryError {
    /// A Clickatell error code and its text.
    pub fn clickatell(code: i64, description: &str) -> DeliveryError {
        let text = if description.is_empty() {
            "no description".to_owned()
        } else {
            description.to_owned()
        };
        DeliveryError {
            code: PROVIDER_CODES.saturating_add(code.clamp(0, PROVIDER_CODES - 1)),
            title: format!("Clickatell {code}: {text}"),
        }
    }

    /// Whose code this is, and the code as that source numbers it.
    pub fn source(&self) -> (ErrorSource, i64) {
        match self.code {
            0 => (ErrorSource::Wagate, 0),
            code if code >= PROVIDER_CODES => (ErrorSource::Clickatell, code - PROVIDER_CODES),
            code => (ErrorSource::WhatsApp, code),
        }
    }
}

/// The delivery state kept beside an outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub status: DeliveryStatus,
    /// WhatsApp's message id, once the Cloud API answered.
    pub wamid: Option<String>,
    /// Cloud API calls made so far.
    pub attempts: u32,
    /// When the next attempt is due; `None` once handed over or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: Option<DeliveryError>,
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    /// A newly accepted message, due for delivery at once.
    /// This delivery with its times at the precision the store keeps.
    pub fn at_stored_precision(&self) -> Delivery {
        Delivery {
            next_attempt_at: self.next_attempt_at.map(super::time::stored),
            updated_at: super::time::stored(self.updated_at),
            ..self.clone()
        }
    }

    pub fn queued(now: DateTime<Utc>) -> Delivery {
        Delivery {
            status: DeliveryStatus::Accepted,
            wamid: None,
            attempts: 0,
            next_attempt_at: Some(now),
            error: None,
            updated_at: now,
        }
    }

    /// Applies a status report; `None` when it changes nothing (a duplicate,
    /// or older than what is already known).
    pub fn report(
        &self,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
        now: DateTime<Utc>,
    ) -> Option<Delivery> {
        if !self.status.advances_to(status) {
            return None;
        }
        Some(Delivery {
            status,
            error: if status == DeliveryStatus::Failed {
                error
            } else {
                None
            },
            next_attempt_at: None,
            updated_at: now,
            ..self.clone()
        })
    }

    /// The Cloud API took the message.
    pub fn submitted(&self, wamid: String, now: DateTime<Utc>) -> Delivery {
        Delivery {
            // A webhook may have arrived first and already moved it further.
            status: if self.status.advances_to(DeliveryStatus::Submitted) {
                DeliveryStatus::Submitted
            } else {
                self.status
            },
            wamid: Some(wamid),
            attempts: self.attempts + 1,
            next_attempt_at: None,
            error: self.error.clone(),
            updated_at: now,
        }
    }

    /// WhatsApp refused the attempt for the pair rate (131056): due again
    /// after 4^n seconds, never failed for it.
    pub fn paced(&self, now: DateTime<Utc>) -> Delivery {
        self.retry(now + pair_rate_wait(self.attempts + 1), now)
    }

    /// An attempt failed in a way worth retrying at `retry_at`.
    pub fn retry(&self, retry_at: DateTime<Utc>, now: DateTime<Utc>) -> Delivery {
        Delivery {
            attempts: self.attempts + 1,
            next_attempt_at: Some(retry_at),
            updated_at: now,
            ..self.clone()
        }
    }

    /// An attempt failed for a reason worth retrying (`why`): due again after
    /// the backoff, or FAILED with code 0 once it was the last attempt the
    /// policy allows.
    pub fn retry_or_give_up(
        &self,
        why: &str,
        policy: &RetryPolicy,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Delivery {
        let attempts = self.attempts + 1;
        if attempts >= policy.max_attempts {
            let error = DeliveryError {
                code: 0,
                title: format!("gave up after {attempts} attempts; last: {why}"),
            };
            return self.refused(error, now);
        }
        let wait = backoff(attempts, policy.base, policy.cap, jitter);
        let retry_at = TimeDelta::from_std(wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.retry(retry_at, now)
    }

    /// The Cloud API refused the message for good.
    pub fn refused(&self, error: DeliveryError, now: DateTime<Utc>) -> Delivery {
        Delivery {
            status: DeliveryStatus::Failed,
            attempts: self.attempts + 1,
            next_attempt_at: None,
            error: Some(error),
            updated_at: now,
            ..self.clone()
        }
    }
}

/// How long a status webhook for an unknown wamid waits for its message. A
/// wamid that never arrives was sent by something other than wagate.
pub const EARLY_STATUS_TTL: TimeDelta = TimeDelta::hours(24);

/// A status webhook that arrived before its message's wamid was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyStatus {
    pub status: DeliveryStatus,
    pub error: Option<DeliveryError>,
    pub received_at: DateTime<Utc>,
}

/// What the store knows about the message a status webhook names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusTarget {
    /// A message with this wamid, and its delivery.
    Known(Delivery),
    /// No message has this wamid (yet); an earlier early status, if any.
    Unknown(Option<EarlyStatus>),
}

/// What a status webhook writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusPlan {
    /// The message's delivery moves on to this.
    Apply(Delivery),
    /// Keep the report until the wamid arrives (replacing an older one).
    KeepEarly(EarlyStatus),
    /// A duplicate, or older than what is known.
    Unchanged,
}

/// Plans applying a status report to what the store holds for its wamid.
pub fn plan_status(
    target: &StatusTarget,
    status: DeliveryStatus,
    error: Option<&DeliveryError>,
    now: DateTime<Utc>,
) -> StatusPlan {
    match target {
        StatusTarget::Known(delivery) => match delivery.report(status, error.cloned(), now) {
            Some(next) => StatusPlan::Apply(next),
            None => StatusPlan::Unchanged,
        },
        StatusTarget::Unknown(Some(early)) if !early.status.advances_to(status) => {
            StatusPlan::Unchanged
        }
        StatusTarget::Unknown(_) => StatusPlan::KeepEarly(EarlyStatus {
            status,
            error: error.cloned(),
            received_at: now,
        }),
    }
}

/// Plans storing an attempt's outcome `next`: a status that arrived before
/// the wamid (`early`) is applied now.
pub fn plan_finish(next: Delivery, early: Option<&EarlyStatus>, now: DateTime<Utc>) -> Delivery {
    match early {
        Some(early) => next
            .report(early.status, early.error.clone(), now)
            .unwrap_or(next),
        None => next,
    }
}

/// Plans giving a message the provider's id of a send whose answer never
/// reached wagate (it timed out after the provider took the message), as a
/// status callback naming both ids reveals: the message is submitted under
/// that id and no longer retried, and the status kept for that id
/// (`early`) applies. `None` when it has an id already.
pub fn plan_attach(
    delivery: &Delivery,
    provider_id: &str,
    early: Option<&EarlyStatus>,
    now: DateTime<Utc>,
) -> Option<Delivery> {
    if delivery.wamid.is_some() {
        return None;
    }
    let submitted = Delivery {
        status: if delivery.status.advances_to(DeliveryStatus::Submitted) {
            DeliveryStatus::Submitted
        } else {
            delivery.status
        },
        wamid: Some(provider_id.to_owned()),
        next_attempt_at: None,
        updated_at: now,
        ..delivery.clone()
    };
    Some(plan_finish(submitted, early, now))
}

/// When a claim taken at `now` lapses: the attempt's own timeout plus a
/// margin, after which another claim may take the message.
pub fn lease_until(now: DateTime<Utc>, lease: TimeDelta) -> DateTime<Utc> {
    now.checked_add_signed(lease)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What to do after one Cloud API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Taken; WhatsApp's id for the message.
    Submitted { wamid: String },
    /// Worth trying again later (rate limits, WhatsApp-side trouble, timeouts).
    Retry { why: String },
    /// Will never succeed as sent; the message fails with this error.
    Refused(DeliveryError),
    /// Over WhatsApp's pair rate (131056): the message waits, growing on
    /// repeats, and is never failed for it.
    PairRateHit,
}

/// WhatsApp's error for too many messages to one person too fast.
pub const PAIR_RATE_CODE: i64 = 131_056;

/// Cloud API error codes that mean "not now" rather than "never": generic
/// and service errors, throttling, and per-pair or spam rate limits.
const RETRYABLE_CODES: &[i64] = &[
    1, 2, 4, 17, 341, 80007, 130429, 131000, 131016, 131048, 133004,
];

/// Classifies a Cloud API answer: its HTTP status and body.
pub fn classify(http_status: u16, body: &str) -> Attempt {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    if (200..300).contains(&http_status) {
        let wamid = json
            .as_ref()
            .and_then(|j| j["messages"][0]["id"].as_str())
            .map(str::to_owned);
        return match wamid {
            Some(wamid) => Attempt::Submitted { wamid },
            // Success without an id: the send may have happened; retrying
            // could send twice, and there is nothing to track. Fail loudly.
            None => Attempt::Refused(DeliveryError {
                code: 0,
                title: format!("HTTP {http_status} without a message id"),
            }),
        };
    }
    let error = json.as_ref().map(|j| &j["error"]);
    let code = error.and_then(|e| e["code"].as_i64());
    let title = error
        .and_then(|e| {
            e["error_data"]["details"]
                .as_str()
                .or(e["message"].as_str())
        })
        .unwrap_or("")
        .to_owned();
    if code == Some(PAIR_RATE_CODE) {
        return Attempt::PairRateHit;
    }
    let retryable = http_status == 429
        || http_status >= 500
        || code.is_some_and(|c| RETRYABLE_CODES.contains(&c));
    if retryable {
        return Attempt::Retry {
            why: format!(
                "HTTP {http_status}{}",
                code.map_or(String::new(), |c| format!(", code {c}"))
            ),
        };
    }
    Attempt::Refused(DeliveryError {
        code: code.unwrap_or(i64::from(http_status)),
        title: if title.is_empty() {
            format!("HTTP {http_status}")
        } else {
            title
        },
    })
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's ceiling; it doubles per attempt.
    pub base: Duration,
    /// The longest ceiling.
    pub cap: Duration,
    /// Attempts before the message fails.
    pub max_attempts: u32,
}

/// Retry spacing: exponential from `base`, capped, with full jitter
/// (`jitter` in [0, 1) picks the point in [0, ceiling]), so retries of many
/// messages spread out instead of arriving together.
pub fn backoff(attempts: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exponent).min(cap);
    // Never zero: a retry always waits a little.
    ceiling
        .mul_f64(jitter.clamp(0.0, 1.0))
        .max(Duration::from_millis(10))
}

/// A send rate kept as GCRA (the generic cell rate algorithm), whose whole
/// state is one instant per key (the theoretical arrival time), so replicas
/// can share it in one stored row: one send per `interval`, in bursts of up
/// to `burst` borrowed from later time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRate {
    interval: TimeDelta,
    burst: u32,
}

/// WhatsApp's pair rate: about one message every 6 seconds from a business
/// number to one person, in bursts of up to 45 (error 131056 beyond it).
pub const PAIR_INTERVAL: TimeDelta = TimeDelta::seconds(6);
pub const PAIR_BURST: u32 = 45;

impl SendRate {
    /// A business number's rate: `per_second` sends a second, in bursts of
    /// up to one second's worth.
    pub fn new(per_second: u32) -> SendRate {
        let per_second = per_second.max(1);
        SendRate {
            interval: TimeDelta::microseconds(1_000_000 / i64::from(per_second)),
            burst: per_second,
        }
    }

    /// One send per `interval` with bursts of `burst`: a pair's rate.
    pub fn every(interval: TimeDelta, burst: u32) -> SendRate {
        SendRate {
            interval: interval.max(TimeDelta::microseconds(1)),
            burst: burst.max(1),
        }
    }

    /// Takes a send slot at `now` given the key's stored arrival time
    /// (`None`: never sent): the arrival time to store, or how long until a
    /// slot frees up.
    pub fn take(
        &self,
        tat: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, TimeDelta> {
        let tolerance = self.interval * (self.burst as i32 - 1);
        let tat = tat.map_or(now, |tat| tat.max(now));
        let allowed_at = tat - tolerance;
        if now < allowed_at {
            Err(allowed_at - now)
        } else {
            Ok(tat + self.interval)
        }
    }
}

/// The key a pair's send rate is kept under, apart from any number's.
pub fn pair_rate_key(pair: &super::Pair) -> String {
    format!("{}>{}", pair.business.as_str(), pair.customer.as_str())
}

/// How long a message waits after WhatsApp's pair-rate error (131056) on
/// its `attempt`-th try: 4^attempt seconds, at most 4^6 (about an hour).
pub fn pair_rate_wait(attempt: u32) -> TimeDelta {
    TimeDelta::seconds(4_i64.pow(attempt.clamp(1, 6)))
}

#[cfg(test)]
mod tests;
