//! Consent in sled: `consent/v1`, one record per (business, customer) pair
//! that has an opt-out or a marketing backoff; a pair with neither has none.

use serde::{Deserialize, Serialize};

use super::records::{self, DecodeError, decode, encode};
use super::wal::{Section, Tree};
use super::{Settled, SledStore, StoreError, corrupt, keys};
use crate::domain::Pair;
use crate::domain::consent::{Consent, OptOut, Scope, Source};
use crate::store::{ConsentLearner, MessageState, Planner};

pub(super) const CONSENT: &str = "consent/v1";

#[derive(Serialize, Deserialize)]
pub(super) struct ConsentRecord {
    /// Scope, source (as named in the API) and when.
    opt_out: Option<(String, String, i64)>,
    marketing_limited_until: Option<i64>,
    marketing_limits: u32,
}

impl From<&Consent> for ConsentRecord {
    fn from(c: &Consent) -> Self {
        ConsentRecord {
            opt_out: c.opt_out.as_ref().map(|o| {
                (
                    o.scope.as_str().to_owned(),
                    o.source.as_str().to_owned(),
                    records::micros(o.at),
                )
            }),
            marketing_limited_until: c.marketing_limited_until.map(records::micros),
            marketing_limits: c.marketing_limits,
        }
    }
}

impl ConsentRecord {
    pub(super) fn consent(self) -> Result<Consent, DecodeError> {
        let invalid = |what: &str| DecodeError::Invalid(what.to_owned());
        Ok(Consent {
            opt_out: match self.opt_out {
                None => None,
                Some((scope, source, at)) => Some(OptOut {
                    scope: Scope::parse(&scope).ok_or_else(|| invalid("opt-out scope"))?,
                    source: Source::parse(&source).ok_or_else(|| invalid("opt-out source"))?,
                    at: records::time(at)?,
                }),
            },
            marketing_limited_until: self
                .marketing_limited_until
                .map(records::time)
                .transpose()?,
            marketing_limits: self.marketing_limits,
        })
    }
}

fn consent_from(bytes: Option<sled::IVec>) -> Result<Option<Consent>, StoreError> {
    bytes
        .map(|bytes| decode::<ConsentRecord>(&bytes).and_then(ConsentRecord::consent))
        .transpose()
        .map_err(corrupt(CONSENT))
}

/// The pair's consent as the section sees it.
pub(super) fn read_in(w: &Section<'_>, pair: &Pair) -> Result<Option<Consent>, StoreError> {
    consent_from(w.get(Tree::Consent, &keys::pair(pair))?)
}

/// Stages `next` as the pair's consent when it differs from `current`.
fn keep_in(w: &mut Section<'_>, pair: &Pair, current: &Option<Consent>, next: &Option<Consent>) {
    if next == current {
        return;
    }
    let key = keys::pair(pair);
    match next {
        Some(consent) => w.insert(Tree::Consent, key, encode(&ConsentRecord::from(consent))),
        None => w.remove(Tree::Consent, key),
    }
}

/// Stages what the failure in `state`, if any, teaches about its pair's
/// consent, in the section that stores the state.
pub(super) fn learn_in(
    w: &mut Section<'_>,
    state: &MessageState,
    learn: ConsentLearner<'_>,
) -> Result<(), StoreError> {
    if state.error().is_none() {
        return Ok(());
    }
    let pair = &state.message.request.pair;
    let current = read_in(w, pair)?;
    if let Some(next) = learn(state, current.as_ref()) {
        keep_in(w, pair, &current, &next);
    }
    Ok(())
}

impl SledStore {
    pub(super) async fn write_consent(
        &self,
        pair: &Pair,
        plan: Planner<'_, Option<Consent>, Option<Consent>>,
    ) -> Result<Option<Consent>, StoreError> {
        let (next, lsn) = {
            let mut w = self.wal.section()?;
            let current = read_in(&w, pair)?;
            let next = plan(&current).map_err(StoreError::Rejected)?;
            keep_in(&mut w, pair, &current, &next);
            (next, w.commit())
        };
        self.durable(lsn).await?;
        Ok(next)
    }
}

impl Settled {
    pub(super) fn read_consent(&self, pair: &Pair) -> Result<Option<Consent>, StoreError> {
        consent_from(self.consent.get(keys::pair(pair))?)
    }

    /// Every kept consent, for `wagate migrate`.
    pub(super) fn all_consent(&self) -> Result<Vec<(Pair, Consent)>, StoreError> {
        let mut all = Vec::new();
        for entry in self.consent.iter() {
            let (key, value) = entry?;
            let consent = consent_from(Some(value))?.expect("a value was read");
            all.push((super::export::pair_of(&key)?, consent));
        }
        Ok(all)
    }
}
