//! Rules WhatsApp enforces only after the fact, as a failed delivery with a
//! numeric code long after the send: checked here, before a send is stored,
//! so the caller hears a clear reason at once.
//!
//! Marketing pause by region: WhatsApp has not delivered MARKETING
//! templates to US numbers since 1 April 2025 (error 131049). The paused
//! regions are configured, since WhatsApp may lift or extend the pause.

use std::collections::BTreeSet;

use super::consent::MarketingBackoff;
use super::error::{Reason, Rejection};
use super::messaging_limit::MessagingLimit;
use super::phone::PhoneNumber;
use super::template::Category;

/// WhatsApp's code for a marketing template it will not deliver.
pub const MARKETING_NOT_DELIVERED: u32 = 131_049;

/// The after-the-fact rules a send is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPolicy {
    /// ISO 3166 region codes whose customers get no MARKETING templates.
    paused_marketing_regions: BTreeSet<String>,
    /// How long marketing waits after WhatsApp's 131049.
    pub marketing_backoff: MarketingBackoff,
    /// Whole messages that opt a customer out of marketing.
    pub opt_out_keywords: Vec<String>,
    /// Unique customers the business may reach outside their window in a
    /// moving 24 hours (WhatsApp's messaging limit).
    pub messaging_limit: MessagingLimit,
}

/// Opt-out words in the languages WhatsApp businesses most often serve;
/// configurable, since a business knows its customers' languages.
pub const DEFAULT_OPT_OUT_KEYWORDS: &[&str] = &[
    "STOP",
    "UNSUBSCRIBE",
    "BAJA",
    "ALTO",
    "PARAR",
    "SAIR",
    "ARRET",
    "ARRÊT",
    "STOPP",
];

impl Default for SendPolicy {
    /// The pause in force (the US), WhatsApp-like backoff, common keywords.
    fn default() -> Self {
        SendPolicy {
            paused_marketing_regions: BTreeSet::from(["US".to_owned()]),
            marketing_backoff: MarketingBackoff::default(),
            opt_out_keywords: DEFAULT_OPT_OUT_KEYWORDS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            messaging_limit: MessagingLimit::Unlimited,
        }
    }
}

impl SendPolicy {
    /// A policy pausing marketing to these regions (two-letter ISO 3166
    /// codes, any case); none: marketing goes everywhere.
    pub fn with_paused_marketing_regions<'a>(
        regions: impl IntoIterator<Item = &'a str>,
    ) -> Result<SendPolicy, String> {
        let mut paused = BTreeSet::new();
        for region in regions {
            let region = region.trim().to_ascii_uppercase();
            if region.is_empty() {
                continue;
            }
            if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "{region:?} is not a region: two letters of ISO 3166, such as US"
                ));
            }
            paused.insert(region);
        }
        Ok(SendPolicy {
            paused_marketing_regions: paused,
            ..SendPolicy::default()
        })
    }

    /// This policy under another messaging limit.
    pub fn with_messaging_limit(self, messaging_limit: MessagingLimit) -> SendPolicy {
        SendPolicy {
            messaging_limit,
            ..self
        }
    }

    pub fn paused_marketing_regions(&self) -> impl Iterator<Item = &str> {
        self.paused_marketing_regions.iter().map(String::as_str)
    }

    /// Refuses a MARKETING template to a customer in a paused region.
    pub fn check_marketing(
        &self,
        customer: &PhoneNumber,
        category: Option<Category>,
    ) -> Result<(), Rejection> {
        if category != Some(Category::Marketing) || self.paused_marketing_regions.is_empty() {
            return Ok(());
        }
        let Some(region) = region_of(customer) else {
            return Ok(());
        };
        if !self.paused_marketing_regions.contains(&region) {
            return Ok(());
        }
        Err(Rejection::new(
            Reason::MarketingPausedForRegion,
            format!(
                "WhatsApp does not deliver MARKETING templates to customers in {region} (error {MARKETING_NOT_DELIVERED}); send a UTILITY template or reply inside the customer's window"
            ),
        )
        .with_metadata("region", region))
    }
}

/// The region libphonenumber assigns the number to (`US`, `CA`, ...), if
/// any: within a shared country code such as +1, the area code decides.
pub fn region_of(number: &PhoneNumber) -> Option<String> {
    let parsed = phonenumber::parse(None, number.as_str()).ok()?;
    parsed.country().id().map(|id| format!("{id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(e164: &str) -> PhoneNumber {
        PhoneNumber::parse(e164).unwrap()
    }

    #[test]
    fn regions_follow_libphonenumber_within_a_shared_country_code() {
        assert_eq!(region_of(&number("+12125550100")).as_deref(), Some("US"));
        assert_eq!(region_of(&number("+14165550100")).as_deref(), Some("CA"));
        assert_eq!(region_of(&number("+27821234567")).as_deref(), Some("ZA"));
    }

    #[test]
    fn marketing_to_a_paused_region_is_refused_and_utility_is_not() {
        let policy = SendPolicy::default();
        let us = number("+12125550100");
        let canada = number("+14165550100");
        let refused = policy
            .check_marketing(&us, Some(Category::Marketing))
            .unwrap_err();
        assert_eq!(refused.reason, Reason::MarketingPausedForRegion);
        assert_eq!(refused.kind(), super::super::RejectionKind::Precondition);
        assert_eq!(refused.metadata["whatsapp_code"], "131049");
        assert_eq!(refused.metadata["region"], "US");
        assert!(
            policy
                .check_marketing(&canada, Some(Category::Marketing))
                .is_ok()
        );
        assert!(policy.check_marketing(&us, Some(Category::Utility)).is_ok());
        assert!(policy.check_marketing(&us, None).is_ok());
        // Configured: lifted, or extended.
        let lifted = SendPolicy::with_paused_marketing_regions([]).unwrap();
        assert!(
            lifted
                .check_marketing(&us, Some(Category::Marketing))
                .is_ok()
        );
        let extended = SendPolicy::with_paused_marketing_regions(["us", " ca"]).unwrap();
        assert!(
            extended
                .check_marketing(&canada, Some(Category::Marketing))
                .is_err()
        );
        assert!(SendPolicy::with_paused_marketing_regions(["USA"]).is_err());
    }
}
