//! Key layouts. Keys sort the way the store scans them: time-prefixed index
//! keys in time order, template keys in (name, language) order.

use chrono::{DateTime, Utc};

use crate::domain::{Pair, TemplateId};

/// Separates key parts; it cannot occur in phone numbers, template names or
/// languages, and sorts before every character they may hold.
const SEPARATOR: u8 = 0;

/// `business \0 customer`, E.164 text.
pub fn pair(pair: &Pair) -> Vec<u8> {
    let (business, customer) = (pair.business.as_str(), pair.customer.as_str());
    let mut key = Vec::with_capacity(business.len() + 1 + customer.len());
    key.extend_from_slice(business.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(customer.as_bytes());
    key
}

/// `name \0 language \0 account`: every account's template of one name and
/// language under one prefix, which a send reads at once.
pub fn template(id: &TemplateId) -> Vec<u8> {
    let mut key = template_name(id);
    key.extend_from_slice(id.account().as_str().as_bytes());
    key
}

/// `name \0 language \0`: the prefix of that template in every account.
pub fn template_name(id: &TemplateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.name().len() + id.language().len() + 2 + 20);
    key.extend_from_slice(id.name().as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(id.language().as_bytes());
    key.push(SEPARATOR);
    key
}

/// The account a template key names; `None` for a key written before
/// accounts (`name \0 language`), which the first start moves.
pub fn template_account(key: &[u8]) -> Option<&str> {
    let mut parts = key.splitn(3, |b| *b == SEPARATOR);
    let (_, _, account) = (parts.next()?, parts.next()?, parts.next()?);
    std::str::from_utf8(account).ok()
}

/// An instant as 8 big-endian bytes that sort in time order (the sign bit
/// flipped so instants before 1970 sort first too).
pub fn instant(at: DateTime<Utc>) -> [u8; 8] {
    instant_of_micros(at.timestamp_micros())
}

pub fn instant_of_micros(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

/// `instant ++ suffix`: an index entry that sorts by time.
pub fn timed(at: DateTime<Utc>, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + suffix.len());
    key.extend_from_slice(&instant(at));
    key.extend_from_slice(suffix);
    key
}

/// Splits a `timed` key into its instant bytes and suffix.
pub fn split_timed(key: &[u8]) -> Option<([u8; 8], &[u8])> {
    let (instant, suffix) = key.split_at_checked(8)?;
    Some((instant.try_into().ok()?, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use chrono::TimeZone;

    #[test]
    fn instants_sort_in_time_order() {
        let times = [
            Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 1).unwrap(),
        ];
        for pair in times.windows(2) {
            assert!(instant(pair[0]) < instant(pair[1]), "{pair:?}");
        }
        let key = timed(times[2], b"suffix");
        assert_eq!(split_timed(&key), Some((instant(times[2]), &b"suffix"[..])));
        assert_eq!(split_timed(b"short"), None);
    }

    #[test]
    fn template_keys_sort_by_name_then_language() {
        let id = |n: &str, l: &str| TemplateId::parse(n, l).unwrap();
        let ordered = [
            id("a", "en"),
            id("a", "en_US"),
            id("a_b", "en"),
            id("ab", "de"),
        ];
        for pair in ordered.windows(2) {
            assert!(template(&pair[0]) < template(&pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn pair_keys_separate_business_and_customer() {
        let phone = |s: &str| PhoneNumber::parse(s).unwrap();
        let key = pair(&Pair {
            business: phone("+15550001111"),
            customer: phone("+27821234567"),
        });
        assert_eq!(key, b"+15550001111\0+27821234567");
    }
}
