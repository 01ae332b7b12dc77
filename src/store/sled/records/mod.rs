//! On-disk values: one version byte, then a postcard-encoded record. The
//! records are the store's own types with stable numeric codes, so the API
//! and the domain can evolve without silently changing what is on disk; a
//! later release reads the version byte and migrates.

mod messages;
mod templates;
mod windows;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

use crate::domain::PhoneNumber;

pub use messages::{DeliveryRecord, EarlyStatusRecord, IdempotencyRecord, OutboxRecord};
pub use templates::{TemplateRecord, decode_template};
pub use windows::{ChangeRecord, InboundRecord, WindowRecord};

/// The only value encoding so far.
const ENCODING_V1: u8 = 1;

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unknown encoding version {0}")]
    UnknownVersion(u8),
    #[error("undecodable record: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("invalid field: {0}")]
    Invalid(String),
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![ENCODING_V1];
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_io(record, &mut out).expect("postcard encodes into a Vec");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&ENCODING_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&version, _)) => Err(DecodeError::UnknownVersion(version)),
    }
}

pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(super) fn time(micros: i64) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DecodeError::Invalid(format!("timestamp {micros} out of range")))
}

pub(super) fn phone(number: &str) -> Result<PhoneNumber, DecodeError> {
    PhoneNumber::parse(number).map_err(|e| DecodeError::Invalid(e.description()))
}

fn code_error(what: &str, code: u8) -> DecodeError {
    DecodeError::Invalid(format!("unknown {what} code {code}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_a_version_byte() {
        let record = IdempotencyRecord {
            fingerprint: [7; 32],
            message_id: [1; 16],
            created_at: 42,
        };
        let bytes = encode(&record);
        assert_eq!(bytes[0], ENCODING_V1);
        let back: IdempotencyRecord = decode(&bytes).unwrap();
        assert_eq!(
            (back.fingerprint, back.message_id, back.created_at),
            ([7; 32], [1; 16], 42)
        );

        let mut future = bytes.clone();
        future[0] = 2;
        assert!(matches!(
            decode::<IdempotencyRecord>(&future),
            Err(DecodeError::UnknownVersion(2))
        ));
        assert!(matches!(
            decode::<IdempotencyRecord>(&[]),
            Err(DecodeError::Empty)
        ));
        assert!(
            decode::<IdempotencyRecord>(&bytes[..10]).is_err(),
            "truncated"
        );
    }
}
