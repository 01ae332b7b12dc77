//! Messaging limits: how many unique customers a business may message
//! outside their customer service window in a moving 24 hours.
//!
//! WhatsApp sets the limit per business portfolio (since 7 October 2025;
//! before, per phone number), shared by every number in it: 250 for a new
//! portfolio, then 2,000, 10,000, 100,000 or unlimited. Beyond it WhatsApp
//! fails the delivery later; wagate refuses the send at once instead.
//!
//! A customer counts once from the template that reached them outside a
//! window (their *reach*) for 24 hours; more templates to them in that time
//! count nothing more. Sends inside an open window never count. The count is
//! kept in one usage record per scope, in minute buckets, so a backend reads
//! two records (the customer's reach and the usage) and writes two: every
//! backend serializes new reaches on the usage record, which keeps the count
//! exact across replicas.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::account::{Account, AccountId};
use super::error::{Reason, Rejection};

/// How long a reached customer counts against the limit.
pub const ROLLING: TimeDelta = TimeDelta::hours(24);

/// The width of one usage bucket. A customer counts until the end of their
/// bucket's 24 hours: at most this much longer than WhatsApp would count
/// them, never shorter.
const BUCKET: TimeDelta = TimeDelta::minutes(1);

/// The tiers WhatsApp grants, smallest first.
pub const TIERS: [u32; 4] = [250, 2_000, 10_000, 100_000];

/// The limit a deployment's business numbers send under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessagingLimit {
    /// No limit: nothing is counted or stored.
    #[default]
    Unlimited,
    /// At most this many unique customers reached in a moving 24 hours.
    Customers(u32),
}

impl MessagingLimit {
    /// `unlimited`, a tier (`250`, `2000`, `2k`, `10K`, `100000`, `100k`),
    /// or any positive count (a tier less a share kept for other senders).
    pub fn parse(raw: &str) -> Result<MessagingLimit, String> {
        let raw = raw.trim().to_ascii_lowercase().replace([',', '_'], "");
        if raw == "unlimited" || raw == "none" {
            return Ok(MessagingLimit::Unlimited);
        }
        let (digits, scale) = match raw.strip_suffix('k') {
            Some(digits) => (digits, 1_000),
            None => (raw.as_str(), 1),
        };
        match digits
            .parse::<u32>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
        {
            Some(n) if n > 0 => Ok(MessagingLimit::Customers(n)),
            _ => Err(format!(
                "{raw:?} is not a messaging limit: unlimited, or a number of customers such as {}",
                TIERS.map(|t| t.to_string()).join(", ")
            )),
        }
    }

    pub fn customers(self) -> Option<u32> {
        match self {
            MessagingLimit::Unlimited => None,
            MessagingLimit::Customers(n) => Some(n),
        }
    }
}

impl fmt::Display for MessagingLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessagingLimit::Unlimited => f.write_str("unlimited"),
            MessagingLimit::Customers(n) => write!(f, "{n}"),
        }
    }
}

/// Whose count a send is held to. WhatsApp counts per business portfolio:
/// the deployment's own portfolio (every account without a limit of its
/// own shares it), or an account set up as a portfolio of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitScope(String);

impl LimitScope {
    pub fn portfolio() -> LimitScope {
        LimitScope("portfolio".to_owned())
    }

    pub fn account(id: &AccountId) -> LimitScope {
        LimitScope(format!("account:{id}"))
    }

    /// A scope as stored.
    pub fn stored(name: &str) -> LimitScope {
        LimitScope(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// New reaches per minute, for the last 24 hours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// (bucket start, Unix seconds; customers reached in it), oldest first.
    buckets: Vec<(i64, u32)>,
}

impl Usage {
    /// Usage as stored; buckets in any order, empty ones dropped.
    pub fn from_buckets(mut buckets: Vec<(i64, u32)>) -> Usage {
        buckets.retain(|(_, n)| *n > 0);
        buckets.sort_unstable();
        Usage { buckets }
    }

    pub fn buckets(&self) -> &[(i64, u32)] {
        &self.buckets
    }

    /// Customers that still count at `now`.
    pub fn counted(&self, now: DateTime<Utc>) -> u64 {
        self.live(now).map(|(_, n)| u64::from(*n)).sum()
    }

    /// When the oldest counted customer stops counting.
    pub fn next_release(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.live(now).next().map(|(start, _)| released_at(*start))
    }

    fn live(&self, now: DateTime<Utc>) -> impl Iterator<Item = &(i64, u32)> {
        self.buckets
            .iter()
            .filter(move |(start, _)| released_at(*start) > now)
    }

    /// This usage with one more customer reached at `now`, lapsed buckets
    /// dropped (so the record stays at most a day of minutes).
    fn with_reach(&self, now: DateTime<Utc>) -> Usage {
        let bucket = now.timestamp().div_euclid(BUCKET.num_seconds()) * BUCKET.num_seconds();
        let mut buckets: Vec<(i64, u32)> = self.live(now).copied().collect();
        match buckets.iter_mut().find(|(start, _)| *start == bucket) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => buckets.push((bucket, 1)),
        }
        Usage::from_buckets(buckets)
    }
}

/// When a bucket's customers stop counting. A stored start outside the
/// calendar (a corrupt record) does not panic: one in the far past has
/// lapsed, one in the far future counts until the end of time.
fn released_at(bucket_start: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(bucket_start, 0)
        .and_then(|start| start.checked_add_signed(BUCKET + ROLLING))
        .unwrap_or(if bucket_start < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// The limit a send from `account` counts against, and where: the
/// account's own when it has one, else the deployment's; `None` when that
/// is unlimited (nothing is counted).
pub fn applicable(
    deployment: MessagingLimit,
    account: Option<&Account>,
) -> Option<(LimitScope, MessagingLimit)> {
    let (scope, limit) = match account.and_then(|a| a.messaging_limit.map(|l| (a, l))) {
        Some((account, own)) => (LimitScope::account(&account.id), own),
        None => (LimitScope::portfolio(), deployment),
    };
    (limit != MessagingLimit::Unlimited).then_some((scope, limit))
}

/// What a send under a limit reads: when the customer was last reached
/// (if ever, as far as the store still knows) and the scope's usage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitSnapshot {
    pub reached_at: Option<DateTime<Utc>>,
    pub usage: Usage,
}

/// What a send writes for the limit: the customer's new reach and the
/// scope's usage with it counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachWrite {
    pub scope: LimitScope,
    pub reached_at: DateTime<Utc>,
    pub usage: Usage,
}

/// Whether a customer reached at `reached_at` still counts at `now`.
pub fn still_reached(reached_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    reached_at
        .checked_add_signed(ROLLING)
        .is_none_or(|until| now < until)
}

/// Plans a send under `limit`: nothing for a send inside an open window,
/// a free-form message, or a customer reached in the last 24 hours; a new
/// reach otherwise, or a refusal when the scope has reached its limit.
pub fn plan_reach(
    limit: MessagingLimit,
    scope: &LimitScope,
    business_initiated: bool,
    snapshot: Option<&LimitSnapshot>,
    now: DateTime<Utc>,
) -> Result<Option<ReachWrite>, Rejection> {
    let Some(most) = limit.customers() else {
        return Ok(None);
    };
    if !business_initiated {
        return Ok(None);
    }
    let empty = LimitSnapshot::default();
    let snapshot = snapshot.unwrap_or(&empty);
    if snapshot.reached_at.is_some_and(|at| still_reached(at, now)) {
        return Ok(None);
    }
    if snapshot.usage.counted(now) >= u64::from(most) {
        let until = snapshot.usage.next_release(now).unwrap_or(now + ROLLING);
        let wait = (until - now).to_std().unwrap_or(Duration::ZERO);
        return Err(Rejection::new(
            Reason::MessagingLimitReached,
            format!(
                "the messaging limit of {most} unique customers outside their window in 24 hours is reached; WhatsApp would not deliver this template. Customers already reached, and replies inside a window, still go; a new customer can be reached from {until}"
            ),
        )
        .with_metadata("messaging_limit", most.to_string())
        .with_metadata("retry_after", until.to_rfc3339())
        .retry_after(wait));
    }
    Ok(Some(ReachWrite {
        scope: scope.clone(),
        reached_at: now,
        usage: snapshot.usage.with_reach(now),
    }))
}

#[cfg(test)]
mod tests;
