//! What the listing RPCs share: page sizes, and page tokens (base64 text
//! that starts with a prefix of its own per RPC and format version, so a
//! token from another RPC, or an older format, is refused rather than
//! misread).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::{Reason, Rejection};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// 0 means the default; more than the maximum means the maximum.
pub fn size(requested: i32) -> Result<usize, Rejection> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
        Err(_) => {
            Err(Rejection::new(Reason::InvalidPageSize, "must not be negative").at("page_size"))
        }
    }
}

/// `text` after `prefix`, as an opaque token.
pub fn token(prefix: &str, text: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{prefix}{text}"))
}

/// The text a token made by [`token`] with `prefix` carries; `None` for
/// anything else (not base64, not text, another prefix).
pub fn token_text(token: &str, prefix: &str) -> Option<String> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    text.strip_prefix(prefix).map(str::to_owned)
}

/// A token `token` made with `prefix`, read back by `read`; empty is the
/// first page (`None`); anything else is INVALID_PAGE_TOKEN.
pub fn read_token<T>(
    token: &str,
    prefix: &str,
    read: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    if token.is_empty() {
        return Ok(None);
    }
    token_text(token, prefix)
        .and_then(|text| read(&text))
        .map(Some)
        .ok_or_else(|| {
            Rejection::new(
                Reason::InvalidPageToken,
                "is not a token this service issued; pass next_page_token unchanged",
            )
            .at("page_token")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(size(0).unwrap(), 50);
        assert_eq!(size(7).unwrap(), 7);
        assert_eq!(size(5000).unwrap(), 1000);
        assert_eq!(size(-1).unwrap_err().reason, Reason::InvalidPageSize);
    }

    #[test]
    fn tokens_carry_their_prefix() {
        let made = token("x1:", "abc");
        assert_eq!(
            read_token(&made, "x1:", |t| Some(t.to_owned())),
            Ok(Some("abc".to_owned()))
        );
        assert_eq!(read_token("", "x1:", |t| Some(t.to_owned())), Ok(None));
        for bad in [made.as_str(), "!!"] {
            let refused = read_token(bad, "y1:", |t| Some(t.to_owned())).unwrap_err();
            assert_eq!(refused.reason, Reason::InvalidPageToken);
        }
    }
}
