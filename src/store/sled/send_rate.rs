//! Send rates in sled: `send_rates/v1` holds each rate key's theoretical
//! arrival time (a business number's, or a pair's), `send_rate_age/v1`
//! indexes it by that time for the sweep. Kept in the store, not in memory,
//! so a restart (a rolling deploy) does not forget the pacing and let a
//! pair's burst through again while WhatsApp still counts the last one.
//!
//! A slot is not waited on for durability: losing the last moments of
//! pacing in a crash allows at most a short burst, which WhatsApp answers
//! with 131056 and the message waits; a delivery is never held on an fsync
//! for it.

use chrono::{DateTime, TimeDelta};
use serde::{Deserialize, Serialize};

use super::records::{self, DecodeError, decode, encode};
use super::wal::Tree;
use super::{SledStore, StoreError, corrupt};
use crate::store::RatePlanner;

pub(super) const SEND_RATES: &str = "send_rates/v1";
pub(super) const SEND_RATE_AGE: &str = "send_rate_age/v1";

#[derive(Serialize, Deserialize)]
struct SendRateRecord {
    tat: i64,
}

/// A rate record's arrival time, for the sweep.
pub(super) fn tat_micros(bytes: &[u8]) -> Result<i64, DecodeError> {
    Ok(decode::<SendRateRecord>(bytes)?.tat)
}

impl SledStore {
    pub(super) fn take_slot(
        &self,
        key: &str,
        plan: RatePlanner<'_>,
    ) -> Result<Result<(), TimeDelta>, StoreError> {
        let key = key.as_bytes();
        let mut w = self.wal.section()?;
        let stored: Option<DateTime<chrono::Utc>> = w
            .get(Tree::SendRates, key)?
            .map(|bytes| tat_micros(&bytes).and_then(records::time))
            .transpose()
            .map_err(corrupt(SEND_RATES))?;
        let next = match plan(stored) {
            Ok(next) => next,
            Err(wait) => return Ok(Err(wait)),
        };
        super::reindex(&mut w, Tree::SendRateAge, key, stored, next);
        let record = SendRateRecord {
            tat: records::micros(next),
        };
        w.insert(Tree::SendRates, key.to_vec(), encode(&record));
        w.commit();
        Ok(Ok(()))
    }
}
