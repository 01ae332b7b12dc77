//! Caller authentication by bearer tokens.
//!
//! Tokens come from a file of `caller-name:token` lines (blank lines and `#`
//! comments allowed). A presented token is compared with every known token
//! through SHA-256 digests in constant time, so neither the match position
//! nor the token's length shows in the timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Known callers and their token digests.
#[derive(Clone)]
pub struct Callers {
    entries: Vec<(String, [u8; 32])>,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokensFileError {
    #[error("line {line}: expected `caller-name:token`")]
    Malformed { line: usize },
    #[error("line {line}: caller name must be 1-64 of [A-Za-z0-9._-]")]
    BadName { line: usize },
    #[error("line {line}: token must be at least 16 characters")]
    ShortToken { line: usize },
    #[error("line {line}: caller {name} is listed twice")]
    DuplicateName { line: usize, name: String },
    #[error("no tokens in the file")]
    Empty,
}

const MIN_TOKEN_CHARS: usize = 16;

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Callers {
    pub fn parse(text: &str) -> Result<Callers, TokensFileError> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (name, token) = trimmed
                .split_once(':')
                .ok_or(TokensFileError::Malformed { line })?;
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !name_ok {
                return Err(TokensFileError::BadName { line });
            }
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(TokensFileError::ShortToken { line });
            }
            if entries.iter().any(|(known, _)| known == name) {
                return Err(TokensFileError::DuplicateName {
                    line,
                    name: name.to_owned(),
                });
            }
            entries.push((name.to_owned(), digest(token.as_bytes())));
        }
        if entries.is_empty() {
            return Err(TokensFileError::Empty);
        }
        Ok(Callers { entries })
    }

    /// The caller an `authorization` header value names, if its bearer token
    /// is known. Every entry is compared, match or not.
    pub fn identify(&self, authorization: &[u8]) -> Option<&str> {
        let token = bearer_token(authorization)?;
        let presented = digest(token);
        let mut found = None;
        for (name, known) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# wagate callers\n\nbilling:0123456789abcdef\nsupport-bot:fedcba9876543210XYZ\n";

    #[test]
    fn identifies_callers_by_bearer_token() {
        let callers = Callers::parse(FILE).unwrap();
        assert_eq!(
            callers.identify(b"Bearer 0123456789abcdef"),
            Some("billing")
        );
        assert_eq!(
            callers.identify(b"bearer fedcba9876543210XYZ"),
            Some("support-bot")
        );
    }

    #[test]
    fn refuses_unknown_missing_and_malformed_credentials() {
        let callers = Callers::parse(FILE).unwrap();
        assert_eq!(callers.identify(b"Bearer 0123456789abcdeX"), None);
        assert_eq!(callers.identify(b"Bearer 0123456789abcde"), None);
        assert_eq!(callers.identify(b"Basic 0123456789abcdef"), None);
        assert_eq!(callers.identify(b"0123456789abcdef"), None);
        assert_eq!(callers.identify(b"Bearer "), None);
        assert_eq!(callers.identify(b""), None);
    }

    #[test]
    fn refuses_bad_files() {
        assert_eq!(
            Callers::parse("billing 0123456789abcdef").err(),
            Some(TokensFileError::Malformed { line: 1 })
        );
        assert_eq!(
            Callers::parse("\nbill ing:0123456789abcdef").err(),
            Some(TokensFileError::BadName { line: 2 })
        );
        assert_eq!(
            Callers::parse("billing:short").err(),
            Some(TokensFileError::ShortToken { line: 1 })
        );
        assert!(matches!(
            Callers::parse("a:0123456789abcdef\na:0123456789abcdeg").err(),
            Some(TokensFileError::DuplicateName { line: 2, .. })
        ));
        assert_eq!(
            Callers::parse("# nothing\n").err(),
            Some(TokensFileError::Empty)
        );
    }
}
