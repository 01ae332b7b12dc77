//! Consent on the wire: RecordOptOut, RecordOptIn, and the Consent GetWindow
//! shows.

use crate::domain::Rejection;
use crate::domain::consent::{Consent, Scope, Source};
use crate::pb;

use super::convert;

/// The scope a RecordOptOut asks for; unspecified is MARKETING.
pub fn scope(value: i32) -> Result<Scope, Rejection> {
    Ok(match convert::known(value, "scope")? {
        pb::ConsentScope::Unspecified | pb::ConsentScope::Marketing => Scope::Marketing,
        pb::ConsentScope::All => Scope::All,
    })
}

/// The pair's consent as the API shows it (all unset: nothing kept).
pub fn message(consent: Option<&Consent>) -> pb::Consent {
    let Some(consent) = consent else {
        return pb::Consent::default();
    };
    let out = consent.opt_out.as_ref();
    pb::Consent {
        opted_out: out.map_or(pb::ConsentScope::Unspecified, |o| match o.scope {
            Scope::Marketing => pb::ConsentScope::Marketing,
            Scope::All => pb::ConsentScope::All,
        }) as i32,
        opt_out_source: out.map_or(pb::ConsentSource::Unspecified, |o| match o.source {
            Source::Request => pb::ConsentSource::Request,
            Source::Keyword => pb::ConsentSource::Keyword,
            Source::WhatsApp => pb::ConsentSource::Whatsapp,
        }) as i32,
        opt_out_time: out.map(|o| convert::timestamp(o.at)),
        marketing_limited_until: consent
            .marketing_limited_until
            .filter(|until| *until > convert::now())
            .map(convert::timestamp),
    }
}
