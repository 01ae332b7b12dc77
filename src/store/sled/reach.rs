//! The messaging limit in sled: `reaches/v1` holds when each customer was
//! last reached in a scope (`scope \0 customer`), `reach_age/v1` indexes it
//! by that time for the sweep, and `limit_usage/v1` holds each scope's
//! usage buckets. A send reads and writes them inside its section, so new
//! reaches are counted one after another.

use serde::{Deserialize, Serialize};

use super::records::{self, DecodeError, decode, encode};
use super::wal::{Section, Tree};
use super::{StoreError, corrupt};
use crate::domain::PhoneNumber;
use crate::domain::messaging_limit::{LimitScope, LimitSnapshot, ReachWrite, Usage};

pub(super) const REACHES: &str = "reaches/v1";
pub(super) const REACH_AGE: &str = "reach_age/v1";
pub(super) const LIMIT_USAGE: &str = "limit_usage/v1";

#[derive(Serialize, Deserialize)]
pub(super) struct ReachRecord {
    pub(super) reached_at: i64,
}

#[derive(Serialize, Deserialize)]
struct UsageRecord {
    buckets: Vec<(i64, u32)>,
}

/// `scope \0 customer`.
fn reach_key(scope: &LimitScope, customer: &PhoneNumber) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.as_str().len() + 1 + customer.as_str().len());
    key.extend_from_slice(scope.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(customer.as_str().as_bytes());
    key
}

/// What a send under the limit reads, as the section sees it.
pub(super) fn read_in(
    w: &Section<'_>,
    scope: &LimitScope,
    customer: &PhoneNumber,
) -> Result<LimitSnapshot, StoreError> {
    let reach = w.get(Tree::Reaches, &reach_key(scope, customer))?;
    let usage = w.get(Tree::LimitUsage, scope.as_str().as_bytes())?;
    snapshot(reach, usage)
}

/// The same, read from sled outside a section (for a dry run).
pub(super) fn read(
    trees: &super::Trees,
    scope: &LimitScope,
    customer: &PhoneNumber,
) -> Result<LimitSnapshot, StoreError> {
    let reach = trees.get(Tree::Reaches).get(reach_key(scope, customer))?;
    let usage = trees.get(Tree::LimitUsage).get(scope.as_str().as_bytes())?;
    snapshot(reach, usage)
}

fn snapshot(
    reach: Option<sled::IVec>,
    usage: Option<sled::IVec>,
) -> Result<LimitSnapshot, StoreError> {
    let reached_at = reach
        .map(|bytes| reached_at(&bytes))
        .transpose()
        .map_err(corrupt(REACHES))?;
    let usage = usage
        .map(|bytes| decode::<UsageRecord>(&bytes).map(|u| Usage::from_buckets(u.buckets)))
        .transpose()
        .map_err(corrupt(LIMIT_USAGE))?
        .unwrap_or_default();
    Ok(LimitSnapshot { reached_at, usage })
}

/// Stages a new reach: the customer's record, its age entry (replacing the
/// one of an older reach) and the scope's usage.
pub(super) fn write_in(
    w: &mut Section<'_>,
    customer: &PhoneNumber,
    reach: &ReachWrite,
) -> Result<(), StoreError> {
    let key = reach_key(&reach.scope, customer);
    let old = w
        .get(Tree::Reaches, &key)?
        .map(|bytes| reached_at(&bytes))
        .transpose()
        .map_err(corrupt(REACHES))?;
    super::reindex(w, Tree::ReachAge, &key, old, reach.reached_at);
    let record = ReachRecord {
        reached_at: records::micros(reach.reached_at),
    };
    w.insert(Tree::Reaches, key, encode(&record));
    let usage = UsageRecord {
        buckets: reach.usage.buckets().to_vec(),
    };
    w.insert(
        Tree::LimitUsage,
        reach.scope.as_str().as_bytes().to_vec(),
        encode(&usage),
    );
    Ok(())
}

impl super::Settled {
    /// Every reach and usage record, for `wagate migrate`.
    pub(super) fn limit_records(&self) -> Result<Vec<crate::store::Record>, StoreError> {
        use crate::store::Record;
        let mut all = Vec::new();
        for entry in self.get(Tree::Reaches).iter() {
            let (key, value) = entry?;
            let bad_key = || StoreError::corrupt(REACHES, "a key without scope and customer");
            let split = key.iter().position(|b| *b == 0).ok_or_else(bad_key)?;
            let scope = std::str::from_utf8(&key[..split]).map_err(|_| bad_key())?;
            let customer = std::str::from_utf8(&key[split + 1..]).map_err(|_| bad_key())?;
            all.push(Record::Reach {
                scope: LimitScope::stored(scope),
                customer: records::phone(customer).map_err(corrupt(REACHES))?,
                reached_at: reached_at(&value).map_err(corrupt(REACHES))?,
            });
        }
        for entry in self.get(Tree::LimitUsage).iter() {
            let (key, value) = entry?;
            let scope = std::str::from_utf8(&key)
                .map_err(|_| StoreError::corrupt(LIMIT_USAGE, "a scope that is not text"))?;
            let usage: UsageRecord = decode(&value).map_err(corrupt(LIMIT_USAGE))?;
            all.push(Record::LimitUsage {
                scope: LimitScope::stored(scope),
                usage: Usage::from_buckets(usage.buckets),
            });
        }
        Ok(all)
    }
}

/// A reach record's time, for the sweep.
pub(super) fn reached_at_micros(bytes: &[u8]) -> Result<i64, DecodeError> {
    Ok(decode::<ReachRecord>(bytes)?.reached_at)
}

fn reached_at(bytes: &[u8]) -> Result<chrono::DateTime<chrono::Utc>, DecodeError> {
    records::time(reached_at_micros(bytes)?)
}
