//! A customer's wishes and WhatsApp's limits, per (business number,
//! customer) pair: opt-outs (by request, by a keyword in their message, or
//! WhatsApp's 131050) and the marketing backoff after WhatsApp's 131049.
//! Checked before a template is stored, so the caller hears the reason at
//! once instead of a failed delivery later.

use chrono::{DateTime, TimeDelta, Utc};

use super::delivery::DeliveryError;
use super::error::{Reason, Rejection};
use super::template::Category;

/// WhatsApp: the customer stopped marketing messages from this business.
pub const STOPPED_MARKETING: i64 = 131_050;
/// WhatsApp: a marketing template was not delivered (per-person limits,
/// or a paused region).
pub const MARKETING_NOT_DELIVERED: i64 = 131_049;

/// What an opt-out stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// MARKETING templates.
    Marketing,
    /// MARKETING and UTILITY templates (authentication codes the customer
    /// asks for, and replies inside their window, still go).
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Marketing => "MARKETING",
            Scope::All => "ALL",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        match raw {
            "MARKETING" => Some(Scope::Marketing),
            "ALL" => Some(Scope::All),
            _ => None,
        }
    }
}

/// How an opt-out was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RecordOptOut: the caller's own records.
    Request,
    /// An opt-out keyword (STOP, BAJA, ...) in the customer's message.
    Keyword,
    /// WhatsApp failed a marketing template with 131050.
    WhatsApp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Request => "REQUEST",
            Source::Keyword => "KEYWORD",
            Source::WhatsApp => "WHATSAPP",
        }
    }

    pub fn parse(raw: &str) -> Option<Source> {
        match raw {
            "REQUEST" => Some(Source::Request),
            "KEYWORD" => Some(Source::Keyword),
            "WHATSAPP" => Some(Source::WhatsApp),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub scope: Scope,
    pub source: Source,
    pub at: DateTime<Utc>,
}

/// What is kept for one pair; absent when there is nothing to keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Consent {
    pub opt_out: Option<OptOut>,
    /// MARKETING templates outside a window are refused until then.
    pub marketing_limited_until: Option<DateTime<Utc>>,
    /// 131049s in a row, which grow the backoff.
    pub marketing_limits: u32,
}

impl Consent {
    fn into_stored(self) -> Option<Consent> {
        (self != Consent::default()).then_some(self)
    }
}

/// How long marketing waits after a 131049: `base` doubled per repeat, at
/// most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketingBackoff {
    pub base: TimeDelta,
    pub cap: TimeDelta,
}

impl Default for MarketingBackoff {
    /// A day, then two, four, ... at most 30 days: WhatsApp's per-person
    /// marketing limits work over days, and say nothing of when they lift.
    fn default() -> Self {
        MarketingBackoff {
            base: TimeDelta::days(1),
            cap: TimeDelta::days(30),
        }
    }
}

/// An opt-out of `scope` from `source`; a wider one already kept stays.
pub fn plan_opt_out(
    existing: Option<&Consent>,
    scope: Scope,
    source: Source,
    now: DateTime<Utc>,
) -> Option<Consent> {
    let mut next = existing.cloned().unwrap_or_default();
    match &next.opt_out {
        Some(kept) if kept.scope >= scope => {}
        _ => {
            next.opt_out = Some(OptOut {
                scope,
                source,
                at: now,
            })
        }
    }
    next.into_stored()
}

/// The customer opted back in: every opt-out goes; a backoff WhatsApp
/// imposed stays.
pub fn plan_opt_in(existing: Option<&Consent>) -> Option<Consent> {
    let mut next = existing.cloned().unwrap_or_default();
    next.opt_out = None;
    next.into_stored()
}

/// WhatsApp did not deliver a marketing template (131049): further ones
/// wait, longer on each repeat.
pub fn plan_marketing_limited(
    existing: Option<&Consent>,
    backoff: &MarketingBackoff,
    now: DateTime<Utc>,
) -> Option<Consent> {
    let mut next = existing.cloned().unwrap_or_default();
    let doublings = next.marketing_limits.min(16);
    let wait = backoff
        .base
        .checked_mul(1 << doublings)
        .map_or(backoff.cap, |wait| wait.min(backoff.cap));
    next.marketing_limits = next.marketing_limits.saturating_add(1);
    next.marketing_limited_until = Some(now + wait);
    next.into_stored()
}

/// What a failed delivery teaches about the pair, if anything: 131050 is
/// an opt-out of marketing; 131049 on a MARKETING template (to a customer
/// outside the paused regions, which are refused before sending) starts or
/// grows the backoff.
pub fn plan_after_failure(
    existing: Option<&Consent>,
    error: &DeliveryError,
    category: Option<Category>,
    backoff: &MarketingBackoff,
    now: DateTime<Utc>,
) -> Option<Option<Consent>> {
    match (error.code, category) {
        (STOPPED_MARKETING, _) => Some(plan_opt_out(
            existing,
            Scope::Marketing,
            Source::WhatsApp,
            now,
        )),
        (MARKETING_NOT_DELIVERED, Some(Category::Marketing)) => {
            Some(plan_marketing_limited(existing, backoff, now))
        }
        _ => None,
    }
}

/// Refuses a template the pair's consent rules out. Free-form messages are
/// replies inside the customer's own window and always pass; so do
/// AUTHENTICATION templates, which carry codes the customer asked for.
pub fn check_send(
    consent: Option<&Consent>,
    category: Option<Category>,
    window_open: bool,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let Some(consent) = consent else {
        return Ok(());
    };
    let opted_out = |scope: Scope| {
        Rejection::new(
            Reason::CustomerOptedOut,
            format!(
                "the customer opted out of {} templates from this business number; RecordOptIn when they opt back in",
                match scope {
                    Scope::Marketing => "MARKETING",
                    Scope::All => "MARKETING and UTILITY",
                }
            ),
        )
        .with_metadata("scope", scope.as_str())
    };
    match (&consent.opt_out, category) {
        (Some(out), Some(Category::Marketing)) => return Err(opted_out(out.scope)),
        (
            Some(
                out @ OptOut {
                    scope: Scope::All, ..
                },
            ),
            Some(Category::Utility),
        ) => return Err(opted_out(out.scope)),
        _ => {}
    }
    if let (Some(until), Some(Category::Marketing), false) =
        (consent.marketing_limited_until, category, window_open)
        && now < until
    {
        let wait = (until - now).to_std().unwrap_or_default();
        return Err(Rejection::new(
            Reason::MarketingLimited,
            format!(
                "WhatsApp did not deliver this customer's last marketing template (error {MARKETING_NOT_DELIVERED}); marketing templates to them wait until {until}"
            ),
        )
        .with_metadata("retry_after", until.to_rfc3339())
        .retry_after(wait));
    }
    Ok(())
}

/// Whether a customer's message is an opt-out keyword: the whole message,
/// any case, surrounding spaces and a final period or exclamation aside.
pub fn is_opt_out_keyword(text: &str, keywords: &[String]) -> bool {
    let said = text
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_lowercase();
    keywords.iter().any(|k| k.to_lowercase() == said)
}

#[cfg(test)]
mod tests;
