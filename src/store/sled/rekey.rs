//! Keys written under older phone-number rules, moved to today's.
//!
//! Before libphonenumber's rules, `+44 (0) 20 7946 0958` was stored as
//! `+4402079460958`, so a customer who wrote both ways had two keys and a
//! window split in two. At start, once for each version of the rules,
//! every window key and inbound-id record is parsed again: a window the
//! rules now write under another key moves there, merged with any window
//! already there (`window::merge`: the customer keeps what either granted);
//! an inbound id's pair is rewritten, so a redelivered webhook is still a
//! duplicate. A key that no longer parses at all (a country code that does
//! not exist) stays as it was: nothing can ask for it, and the sweeper
//! removes it once it expires. Messages keep the numbers they were sent to.

use super::*;
use crate::domain::window;

/// The phone-number rules the stored keys follow: raise it with any change
/// of rules that writes some number differently.
const PHONE_RULES: u8 = 1;
const PHONE_RULES_KEY: &str = "phone_rules";

/// What one pass moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Windows moved to their normal key.
    pub windows: usize,
    /// Of those, how many met a window already there.
    pub merged: usize,
    /// Inbound-id records whose pair was rewritten.
    pub inbound_ids: usize,
}

/// Moves every key the current rules write differently, unless this data
/// directory already follows them; then records that it does.
pub(super) fn normalise_phone_keys(
    db: &sled::Db,
    meta: &sled::Tree,
    t: &Trees,
) -> Result<Rekeyed, StoreError> {
    if meta.get(PHONE_RULES_KEY)?.as_deref() == Some(&[PHONE_RULES]) {
        return Ok(Rekeyed::default());
    }
    let mut done = Rekeyed::default();
    for entry in t.windows.iter() {
        let (key, _) = entry?;
        let Some(pair) = renormalised(&key) else {
            continue;
        };
        let normal = keys::pair(&pair);
        // Runs before the log starts and before anything else can write,
        // straight into sled. The merged window is written before the old
        // key goes, so a crash in between leaves both, and the next start
        // merges them again to the same window.
        let Some(moving) = read::<WindowRecord, Window>(WINDOWS, t.windows.get(&key)?)? else {
            continue;
        };
        let there = read::<WindowRecord, Window>(WINDOWS, t.windows.get(&normal)?)?;
        let merged = match &there {
            Some(there) => window::merge(there, &moving),
            None => moving.clone(),
        };
        // The expiry index is packed: entries change through `packed`.
        let indexed = Some(IVec::default());
        if let Some(there) = &there {
            let old = keys::timed(there.expires_at, &normal);
            packed::apply(&t.window_expiry, [(&old[..], &None)])?;
        }
        let new = keys::timed(merged.expires_at, &normal);
        packed::apply(&t.window_expiry, [(&new[..], &indexed)])?;
        t.windows
            .insert(normal.as_slice(), encode(&WindowRecord::from(&merged)))?;
        let moved = keys::timed(moving.expires_at, &key);
        packed::apply(&t.window_expiry, [(&moved[..], &None)])?;
        t.windows.remove(&*key)?;
        done.windows += 1;
        done.merged += usize::from(there.is_some());
    }
    for entry in t.inbound_ids.iter() {
        let (id, value) = entry?;
        let mut record: InboundRecord = decode(&value).map_err(corrupt(INBOUND_IDS))?;
        let (Ok(business), Ok(customer)) = (
            PhoneNumber::parse(&record.business),
            PhoneNumber::parse(&record.customer),
        ) else {
            continue;
        };
        if business.as_str() != record.business || customer.as_str() != record.customer {
            record.business = business.as_str().to_owned();
            record.customer = customer.as_str().to_owned();
            t.inbound_ids.insert(id, encode(&record))?;
            done.inbound_ids += 1;
        }
    }
    meta.insert(PHONE_RULES_KEY, &[PHONE_RULES])?;
    db.flush()?;
    Ok(done)
}

/// The pair a stored window key names, when today's rules write it
/// differently.
fn renormalised(key: &[u8]) -> Option<Pair> {
    let (business, customer) = std::str::from_utf8(key).ok()?.split_once('\0')?;
    let pair = Pair {
        business: PhoneNumber::parse(business).ok()?,
        customer: PhoneNumber::parse(customer).ok()?,
    };
    (keys::pair(&pair) != key).then_some(pair)
}

/// Templates written before accounts (`name \0 language`) move into the
/// default account (`name \0 language \0 default`). The copy is written
/// before the old key goes, so a crash in between leaves both and the next
/// start finishes the move. Returns how many moved.
pub(super) fn templates_into_accounts(db: &sled::Db, t: &Trees) -> Result<usize, StoreError> {
    let mut moved = 0;
    for entry in t.templates.iter() {
        let (key, value) = entry?;
        if keys::template_account(&key).is_some() {
            continue;
        }
        let mut new_key = key.to_vec();
        new_key.push(0);
        new_key.extend_from_slice(crate::domain::account::DEFAULT_ACCOUNT.as_bytes());
        t.templates.insert(new_key, value)?;
        t.templates.remove(&key)?;
        moved += 1;
    }
    if moved > 0 {
        db.flush()?;
    }
    Ok(moved)
}
