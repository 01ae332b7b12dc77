//! Client-supplied identifiers: the inbound provider message id and the
//! send idempotency key. Both are printable ASCII of bounded length.

use super::error::{Reason, Rejection};

fn printable_ascii(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len()) && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The provider's id for an inbound message, such as a `wamid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboundMessageId(String);

impl InboundMessageId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(value: &str) -> Result<Self, Rejection> {
        if !printable_ascii(value, Self::MAX_LEN) {
            return Err(Rejection::new(
                Reason::InvalidMessageId,
                format!("must be 1-{} printable ASCII characters", Self::MAX_LEN),
            )
            .at("message_id"));
        }
        Ok(InboundMessageId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's idempotency key for a send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, Rejection> {
        if !printable_ascii(value, Self::MAX_LEN) {
            return Err(Rejection::new(
                Reason::InvalidIdempotencyKey,
                format!(
                    "is required: 1-{} printable ASCII characters",
                    Self::MAX_LEN
                ),
            )
            .at("idempotency_key"));
        }
        Ok(IdempotencyKey(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::parse("order-42/confirmation").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", &"k".repeat(129), "tab\there", "naïve", "nul\0"] {
            let err = IdempotencyKey::parse(bad).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidIdempotencyKey, "{bad:?}");
            assert_eq!(err.field.as_deref(), Some("idempotency_key"));
        }
    }

    #[test]
    fn inbound_message_id_bounds() {
        assert!(InboundMessageId::parse("wamid.HBgLMjc4MjEyMzQ1NjcVAgASGBQ=").is_ok());
        assert!(InboundMessageId::parse(&"w".repeat(256)).is_ok());
        for bad in ["", &"w".repeat(257), "line\nbreak"] {
            assert_eq!(
                InboundMessageId::parse(bad).unwrap_err().reason,
                Reason::InvalidMessageId
            );
        }
    }
}
