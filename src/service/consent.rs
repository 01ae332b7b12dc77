//! Consent: opt-outs (by request, by keyword, by WhatsApp's 131050) and the
//! marketing backoff after WhatsApp's 131049, kept per pair for the send
//! plan to check.

use chrono::{DateTime, Utc};

use super::Service;
use crate::domain::consent::{self, Consent, Scope, Source};
use crate::domain::{Pair, time};
use crate::store::{MessageState, StoreError};

impl Service {
    pub async fn consent(&self, pair: &Pair) -> Result<Option<Consent>, StoreError> {
        self.store.consent(pair).await
    }

    /// The customer opted out of `scope`.
    pub async fn opt_out(
        &self,
        pair: &Pair,
        scope: Scope,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Option<Consent>, StoreError> {
        let now = time::stored(now);
        self.store
            .change_consent(pair, &|current| {
                Ok(consent::plan_opt_out(current.as_ref(), scope, source, now))
            })
            .await
    }

    /// The customer opted back in.
    pub async fn opt_in(&self, pair: &Pair) -> Result<Option<Consent>, StoreError> {
        self.store
            .change_consent(pair, &|current| Ok(consent::plan_opt_in(current.as_ref())))
            .await
    }

    /// A customer's message: an opt-out keyword opts them out of marketing.
    /// Whether it was one.
    pub async fn note_customer_text(
        &self,
        pair: &Pair,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if !consent::is_opt_out_keyword(text, &self.policy.opt_out_keywords) {
            return Ok(false);
        }
        self.opt_out(pair, Scope::Marketing, Source::Keyword, now)
            .await?;
        Ok(true)
    }

    /// What a failed delivery stored at `now` teaches about its pair (see
    /// `consent::plan_after_failure`): WhatsApp's 131050 and 131049 are kept
    /// for the pair, in the same write as the delivery state, so the next
    /// template is refused up front.
    pub(super) fn consent_learner(
        &self,
        now: DateTime<Utc>,
    ) -> impl Fn(&MessageState, Option<&Consent>) -> Option<Option<Consent>> + Send + Sync + use<>
    {
        let backoff = self.policy.marketing_backoff;
        move |state, current| {
            let error = state.error()?;
            let category = state.message.accepted.template_category;
            consent::plan_after_failure(current, error, category, &backoff, now)
        }
    }
}
