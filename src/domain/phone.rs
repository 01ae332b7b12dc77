//! WhatsApp numbers in E.164 (SPEC §1), parsed once at the edge.

use std::fmt;

use super::error::{Reason, Rejection};

/// Longest raw input looked at; anything longer cannot be 15 digits plus
/// reasonable punctuation, and is refused before any work is done on it.
const MAX_RAW_LEN: usize = 64;

/// A normalised E.164 number: `+` then 8–15 digits, the first not 0.
///
/// `Display` and `Debug` mask the number (`+2782*****67`), because phone
/// numbers are personal data and most formatting ends up in logs. Use
/// [`PhoneNumber::as_str`] where the full number is really needed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts the number with or without `+`, spaces, dashes or parentheses.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let invalid = |rule: &str| Rejection::new(Reason::InvalidPhoneNumber, rule.to_owned());
        if raw.len() > MAX_RAW_LEN {
            return Err(invalid("must be an E.164 number of 8-15 digits"));
        }
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or(&compact);
        if digits.is_empty() {
            return Err(invalid("is required: an E.164 number such as +27821234567"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "may hold only digits, a leading '+', spaces, dashes and parentheses",
            ));
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(invalid("must have 8-15 digits (E.164)"));
        }
        if digits.starts_with('0') {
            return Err(invalid(
                "must start with a country code, not 0 (E.164 has no trunk or exit prefix)",
            ));
        }
        Ok(PhoneNumber(format!("+{digits}")))
    }

    /// The full normalised number, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with all but the first four and last two digits hidden.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let hidden = digits.len() - 6;
        format!(
            "+{}{}{}",
            &digits[..4],
            "*".repeat(hidden),
            &digits[hidden + 4..]
        )
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// The (business number, customer) pair a window belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    pub business: PhoneNumber,
    pub customer: PhoneNumber,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> Result<String, Reason> {
        PhoneNumber::parse(raw)
            .map(|p| p.as_str().to_owned())
            .map_err(|r| r.reason)
    }

    #[test]
    fn accepts_common_forms() {
        for raw in [
            "+27821234567",
            "27821234567",
            "+27 82 123 4567",
            "+27-82-123-4567",
            "(+27) 82 123-4567",
            " 27821234567 ",
        ] {
            assert_eq!(norm(raw), Ok("+27821234567".to_owned()), "{raw:?}");
        }
    }

    #[test]
    fn length_bounds_are_8_to_15_digits() {
        assert_eq!(norm("+1234567"), Err(Reason::InvalidPhoneNumber));
        assert_eq!(norm("+12345678"), Ok("+12345678".to_owned()));
        assert_eq!(norm("+123456789012345"), Ok("+123456789012345".to_owned()));
        assert_eq!(norm("+1234567890123456"), Err(Reason::InvalidPhoneNumber));
    }

    #[test]
    fn refuses_bad_forms() {
        for raw in [
            "",
            "+",
            "   ",
            "0821234567",
            "+0821234567",
            "0027821234567",
            "27 82 ABC 4567",
            "27+821234567",
            "++27821234567",
            "+27.82.123.4567",
            "２７８２１２３４５６７",
            "+27821234567x12",
            &"1".repeat(100),
        ] {
            assert_eq!(norm(raw), Err(Reason::InvalidPhoneNumber), "{raw:?}");
        }
    }

    #[test]
    fn display_and_debug_mask() {
        let phone = PhoneNumber::parse("+27821234567").unwrap();
        assert_eq!(phone.to_string(), "+2782*****67");
        assert_eq!(format!("{phone:?}"), "PhoneNumber(+2782*****67)");
        let short = PhoneNumber::parse("12345678").unwrap();
        assert_eq!(short.masked(), "+1234**78");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in r"\+?[1-9]([ ()-]?[0-9]){7,14}") {
            let once = PhoneNumber::parse(&raw).expect("generated numbers are valid");
            let twice = PhoneNumber::parse(once.as_str()).expect("normal form parses");
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn normalising_any_input_is_idempotent(raw in r"[+]?[0-9 ()a-]{0,20}") {
            if let Ok(once) = PhoneNumber::parse(&raw) {
                prop_assert_eq!(PhoneNumber::parse(once.as_str()), Ok(once));
            }
        }

        #[test]
        fn masked_hides_all_but_four_and_two(digits in "[1-9][0-9]{7,14}") {
            let phone = PhoneNumber::parse(&digits).unwrap();
            let masked = phone.masked();
            prop_assert_eq!(masked.len(), phone.as_str().len());
            prop_assert_eq!(&masked[1..5], &digits[..4]);
            prop_assert!(masked[5..masked.len() - 2].bytes().all(|b| b == b'*'));
            prop_assert_eq!(&masked[masked.len() - 2..], &digits[digits.len() - 2..]);
        }
    }
}
