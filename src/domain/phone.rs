//! WhatsApp numbers in E.164 (SPEC §1), parsed once at the edge.

use std::fmt;

use super::error::{Reason, Rejection};

/// Longest raw input looked at; anything longer cannot be 15 digits plus
/// reasonable punctuation, and is refused before any work is done on it.
const MAX_RAW_LEN: usize = 64;

/// Numbers parsed lately, as written, with their normal form. libphonenumber's
/// rules cost tens of microseconds a number (far more than a stored read;
/// NANP numbers test the patterns of every region sharing +1), and callers
/// ask about the same customers again and again. Parsing is a pure
/// function of the text, so a remembered answer is the answer. Refusals
/// are not kept: they are rare, and junk must not push customers out.
static PARSED: std::sync::LazyLock<quick_cache::sync::Cache<String, PhoneNumber>> =
    std::sync::LazyLock::new(|| quick_cache::sync::Cache::new(PARSED_KEPT));
/// About 3 MiB at most.
const PARSED_KEPT: usize = 32_768;

/// A normalised E.164 number: `+` then 8–15 digits, the first not 0.
///
/// `Display` and `Debug` mask the number (`+2782*****67`), because phone
/// numbers are personal data and most formatting ends up in logs. Use
/// [`PhoneNumber::as_str`] where the full number is really needed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts the number with or without `+`, spaces, dashes or parentheses,
    /// and applies libphonenumber's rules and metadata: a national trunk
    /// prefix written after the country code (`+44 (0) 20 …`) is dropped, so
    /// one customer has one key; a country code that does not exist, or a
    /// length no number of that country has, is refused.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        if let Some(known) = PARSED.get(raw) {
            return Ok(known);
        }
        let parsed = Self::parse_uncached(raw)?;
        PARSED.insert(raw.to_owned(), parsed.clone());
        Ok(parsed)
    }

    fn parse_uncached(raw: &str) -> Result<Self, Rejection> {
        let invalid = |rule: String| Rejection::new(Reason::InvalidPhoneNumber, rule);
        if raw.len() > MAX_RAW_LEN {
            return Err(invalid("must be an E.164 number of 8-15 digits".into()));
        }
        well_formed(raw).map_err(|rule| invalid(rule.into()))?;
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or(&compact);
        if digits.is_empty() {
            return Err(invalid(
                "is required: an E.164 number such as +27821234567".into(),
            ));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "may hold only digits, a leading '+', spaces, dashes and parentheses".into(),
            ));
        }
        if digits.starts_with('0') {
            return Err(invalid(
                "must start with a country code, not 0 (E.164 has no trunk or exit prefix)".into(),
            ));
        }
        if let Some(number) = Self::valid_as_written(digits) {
            return Ok(number);
        }
        Self::parse_digits(digits)
    }

    /// The number as written, when its digits after the country code are
    /// already a valid number of that country: the normal form, with no
    /// call into libphonenumber's parser. That parser finds the region
    /// first, and for +1 tries the patterns of up to 25 regions through a
    /// regex cache behind one mutex (~15% of wagate's CPU under a load of new
    /// customers); all it could add here is a stripped trunk prefix, and
    /// [`national_number`] keeps the digits as written over that whenever
    /// they are valid. So the answer is the one [`Self::parse_digits`]
    /// gives (a property test holds the two together), for the form most
    /// numbers arrive in.
    fn valid_as_written(digits: &str) -> Option<Self> {
        let code_len = country_code_len(digits);
        let code: u16 = digits.get(..code_len)?.parse().ok()?;
        let rules = CountryRules::for_code(code)?;
        let normal = format!("+{digits}");
        (rules.is_valid(&digits[code_len..]) && (9..=16).contains(&normal.len()))
            .then_some(PhoneNumber(normal))
    }

    /// The full rules, on digits that start with a country code.
    fn parse_digits(digits: &str) -> Result<Self, Rejection> {
        let invalid = |rule: String| Rejection::new(Reason::InvalidPhoneNumber, rule);
        let parsed = phonenumber::parse(None, format!("+{digits}")).map_err(|error| {
            invalid(match error {
                phonenumber::ParseError::InvalidCountryCode => {
                    "must start with a country code that exists".to_owned()
                }
                other => format!("is not a phone number: {other}"),
            })
        })?;
        let code = parsed.code().value();
        let as_written = &digits[code.to_string().len()..];
        let mut national = national_number(code, as_written, &parsed.national().to_string())
            .map_err(|rule| invalid(rule(code)))?;
        // The normal form must parse to itself. Where neither form was a
        // valid number, the chosen one can still lose another prefix on a
        // second parse; repeat until nothing changes (each round only
        // shortens it, so this ends quickly). A number kept as written is
        // the text just parsed, so it needs no second parse (the parse is
        // the costly part of a new number: ~30 µs for a +1 number).
        let rounds = if national == as_written {
            0
        } else {
            MAX_RAW_LEN
        };
        for _ in 0..rounds {
            let Ok(again) = phonenumber::parse(None, format!("+{code}{national}")) else {
                break;
            };
            match national_number(code, &national, &again.national().to_string()) {
                Ok(next) if next != national => national = next,
                _ => break,
            }
        }
        let normal = format!("+{code}{national}");
        if !(9..=16).contains(&normal.len()) {
            return Err(invalid("must have 8-15 digits (E.164)".into()));
        }
        Ok(PhoneNumber(normal))
    }

    /// The full normalised number, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits alone, as providers' APIs take a recipient.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The number with all but its country code and last two digits
    /// hidden: `+27*******67`, `+1********11`.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let shown = country_code_len(digits);
        let hidden = digits.len().saturating_sub(shown + 2);
        format!(
            "+{}{}{}",
            &digits[..shown],
            "*".repeat(hidden),
            &digits[shown + hidden..]
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

/// Loads libphonenumber's metadata now, before the first call needs it.
/// Each country's patterns still compile on its first use (a few ms, once):
/// compiling all of them up front measured 0.55 s, too much for startup.
pub fn load_metadata() {
    std::sync::LazyLock::force(&RULES);
}

/// What decides whether a national number exists under one country code:
/// every number type's pattern (all regions sharing the code) as one
/// anchored alternation, and every type's possible lengths. Compiled once,
/// by us: the crate's own pattern cache is a 100-entry LRU behind one mutex,
/// which a scan of all types of the 25 regions under +1 thrashes (measured:
/// 7 ms a parse against 5 µs for the crate's parse itself).
struct CountryRules {
    valid: Option<regex::Regex>,
    lengths: Vec<u16>,
}

/// Per country code, compiled on first use (or by [`load_metadata`]).
static RULES: std::sync::LazyLock<
    std::collections::HashMap<u16, std::sync::OnceLock<CountryRules>>,
> = std::sync::LazyLock::new(|| {
    phonenumber::metadata::DATABASE
        .iter()
        .map(|meta| (meta.country_code(), std::sync::OnceLock::new()))
        .collect()
});

impl CountryRules {
    fn for_code(code: u16) -> Option<&'static CountryRules> {
        let cell = RULES.get(&code)?;
        Some(cell.get_or_init(|| CountryRules::compile(code)))
    }

    fn compile(code: u16) -> CountryRules {
        let types = number_types(code);
        let mut lengths: Vec<u16> = types
            .iter()
            .flat_map(|d| d.possible_length())
            .copied()
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        let patterns: Vec<String> = types
            .iter()
            .map(|d| format!("(?:{})", d.national_number().as_str()))
            .collect();
        // A pattern the regex crate cannot compile leaves lengths alone to
        // decide, as for a code with no patterns.
        // The metadata writes its patterns for whitespace-insensitive mode.
        let valid = (!patterns.is_empty())
            .then(|| {
                regex::RegexBuilder::new(&format!("^(?:{})$", patterns.join("|")))
                    .ignore_whitespace(true)
                    .build()
                    .ok()
            })
            .flatten();
        CountryRules { valid, lengths }
    }

    fn is_valid(&self, national: &str) -> bool {
        self.lengths.contains(&(national.len() as u16))
            && self.valid.as_ref().is_some_and(|re| re.is_match(national))
    }

    fn is_possible(&self, national: &str) -> bool {
        self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16))
    }
}

/// The national number to keep under `code`: the digits as written, or
/// those with the trunk prefix libphonenumber stripped (`stripped`).
///
/// libphonenumber keeps a stripped prefix only when what remains still makes
/// sense; the crate strips unconditionally, so the choice is made here: a
/// valid number (by the metadata's patterns) wins, digits as written first,
/// then a number of a possible length. Choosing this way is idempotent: the
/// normal form parses to itself.
fn national_number(code: u16, as_written: &str, stripped: &str) -> Result<String, LengthRule> {
    let rules = CountryRules::for_code(code).ok_or(unknown_country as LengthRule)?;
    let candidates = [as_written, stripped];
    if let Some(n) = candidates.iter().find(|n| rules.is_valid(n)) {
        return Ok((*n).to_owned());
    }
    if let Some(n) = candidates.iter().find(|n| rules.is_possible(n)) {
        return Ok((*n).to_owned());
    }
    let length = as_written.len() as u16;
    let lengths = &rules.lengths;
    Err(if lengths.iter().all(|&l| length < l) {
        |code| format!("is too short for a +{code} number")
    } else if lengths.iter().all(|&l| length > l) {
        |code| format!("is too long for a +{code} number")
    } else {
        |code| format!("has a length no +{code} number has")
    })
}

/// The length of the country code `digits` starts with: ITU codes are
/// prefix-free, so the one prefix of 1-3 digits that is a code is it.
fn country_code_len(digits: &str) -> usize {
    (1..=3)
        .find(|&len| {
            digits
                .get(..len)
                .and_then(|code| code.parse::<u16>().ok())
                .is_some_and(|code| phonenumber::metadata::DATABASE.by_code(&code).is_some())
        })
        .unwrap_or(1)
}

/// Where `+` and parentheses may go: `+` first (or first inside a leading
/// parenthesis, `(+27) 82 …`), parentheses in pairs, not nested, around
/// digits (`+44 (0) 20 …`).
fn well_formed(raw: &str) -> Result<(), &'static str> {
    let mut open = None;
    for (at, c) in raw.trim_start().char_indices() {
        match (c, open) {
            // `+27 …` or `(+27) …`: the plus opens the number or its first
            // parenthesis, nowhere else.
            ('+', Some(0)) if at == 1 => {}
            ('+', _) if at > 0 => return Err("may hold '+' only as its first character"),
            ('(', Some(_)) => return Err("has parentheses inside parentheses"),
            ('(', None) => open = Some(0),
            (')', None) => return Err("closes a parenthesis it never opened"),
            (')', Some(0)) => return Err("has parentheses around no digits"),
            (')', Some(_)) => open = None,
            ('0'..='9', Some(digits)) => open = Some(digits + 1),
            _ => {}
        }
    }
    match open {
        Some(_) => Err("opens a parenthesis it never closes"),
        None => Ok(()),
    }
}

/// Builds the broken rule's message for a country code.
type LengthRule = fn(u16) -> String;

fn unknown_country(_: u16) -> String {
    "must start with a country code that exists".to_owned()
}

/// The kinds of number under a country code that WhatsApp can reach, from
/// libphonenumber's metadata (short codes and emergency numbers are left
/// out).
fn number_types(code: u16) -> Vec<&'static phonenumber::metadata::Descriptor> {
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return Vec::new();
    };
    regions
        .into_iter()
        .flat_map(|meta| {
            let d = meta.descriptors();
            [
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
        })
        .flatten()
        .collect()
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
    fn plus_and_parentheses_go_where_numbers_are_written_with_them() {
        for ok in [
            "+44 (0) 20 7946 0958",
            "+1 (555) 000-1111",
            " +27 82 123 4567",
        ] {
            assert!(PhoneNumber::parse(ok).is_ok(), "{ok}");
        }
        assert!(PhoneNumber::parse("(+1) 555 000 1111").is_ok());
        for bad in [
            "(+)15550001111",
            "+27(82 123 4567",
            "+2782) 123 4567",
            "+1 ((555)) 0001111",
            "+1 () 5550001111",
            "+1 555 +000 1111",
        ] {
            let err = PhoneNumber::parse(bad).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidPhoneNumber, "{bad}");
        }
    }

    #[test]
    fn masking_never_shows_more_than_the_country_code_and_two() {
        // Seychelles: 7 national digits, so 6 of 10 showed under the old
        // first-four-and-last-two rule.
        assert_eq!(
            PhoneNumber::parse("+248 2 512 345").unwrap().masked(),
            "+248*****45"
        );
        assert_eq!(
            PhoneNumber::parse("+15550001111").unwrap().masked(),
            "+1********11"
        );
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
    fn a_trunk_prefix_after_the_country_code_is_dropped() {
        // One customer, one key: the UK's "(0)" and Germany's "0" are
        // dialled only inside the country.
        for raw in [
            "+44 (0) 20 7946 0958",
            "+44 020 7946 0958",
            "+4402079460958",
            "+44 20 7946 0958",
        ] {
            assert_eq!(norm(raw), Ok("+442079460958".to_owned()), "{raw:?}");
        }
        assert_eq!(norm("+49 (0)30 1234567"), Ok("+49301234567".to_owned()));
        // Italy keeps its leading 0: it is part of the number, not a prefix.
        assert_eq!(norm("+39 06 6982 1234"), Ok("+390669821234".to_owned()));
    }

    #[test]
    fn unknown_country_codes_are_refused_with_the_rule() {
        for raw in ["+99912345678", "+42212345678", "+2821234567"] {
            let rejection = PhoneNumber::parse(raw).unwrap_err();
            assert_eq!(rejection.reason, Reason::InvalidPhoneNumber, "{raw:?}");
            assert!(
                rejection.message.contains("country code that exists"),
                "{raw:?}: {}",
                rejection.message
            );
        }
    }

    #[test]
    fn lengths_no_number_of_the_country_has_are_refused() {
        let rule = |raw: &str| PhoneNumber::parse(raw).unwrap_err().message;
        assert!(rule("+44 207 946").contains("too short for a +44 number"));
        assert!(rule("+44 20 7946 09581").contains("too long for a +44 number"));
        assert!(rule("+27 82 123 456789").contains("too long for a +27 number"));
        assert!(rule("+1 555 000 11111").contains("+1 number"));
        // Still E.164's 8-15 digits, whatever the metadata allows.
        assert_eq!(norm("+1234567"), Err(Reason::InvalidPhoneNumber));
        assert_eq!(norm("+1234567890123456"), Err(Reason::InvalidPhoneNumber));
        assert_eq!(norm("+1 555 000 1111"), Ok("+15550001111".to_owned()));
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
    fn valid_numbers_as_written_take_the_shortcut_and_others_do_not() {
        for valid in ["12015550123", "27821234567", "447946095800", "61412345678"] {
            assert_eq!(
                PhoneNumber::valid_as_written(valid).map(|n| n.0),
                Some(format!("+{valid}")),
                "{valid}"
            );
        }
        // An area code that does not exist, a trunk prefix, a short number.
        for other in ["12005550123", "4402079460958", "2782123"] {
            assert_eq!(PhoneNumber::valid_as_written(other), None, "{other}");
        }
    }

    #[test]
    fn display_and_debug_mask() {
        let phone = PhoneNumber::parse("+27821234567").unwrap();
        assert_eq!(phone.to_string(), "+27*******67");
        assert_eq!(format!("{phone:?}"), "PhoneNumber(+27*******67)");
        let short = PhoneNumber::parse("+3531234567").unwrap();
        assert_eq!(short.masked(), "+353*****67");
    }

    proptest! {
        #[test]
        fn a_remembered_answer_is_the_answer_parsing_gives(
            raw in r"\+?[1-9]([ ()-]?[0-9]){7,14}"
        ) {
            let fresh = PhoneNumber::parse_uncached(&raw);
            prop_assert_eq!(PhoneNumber::parse(&raw), fresh.clone());
            prop_assert_eq!(PhoneNumber::parse(&raw), fresh, "asked again");
        }

        #[test]
        fn the_shortcut_for_valid_numbers_gives_what_the_full_rules_give(
            code in prop::sample::select(vec![
                "1", "7", "20", "27", "33", "34", "39", "44", "49", "52", "55",
                "61", "62", "81", "91", "234", "254", "353", "971",
            ]),
            national in "[0-9]{6,11}",
        ) {
            let digits = format!("{code}{national}");
            if let Some(short) = PhoneNumber::valid_as_written(&digits) {
                prop_assert_eq!(Ok(short), PhoneNumber::parse_digits(&digits));
            }
        }

        #[test]
        fn normalising_is_idempotent(raw in r"\+?[1-9]([ ()-]?[0-9]){7,14}") {
            if let Ok(once) = PhoneNumber::parse(&raw) {
                prop_assert_eq!(PhoneNumber::parse(once.as_str()), Ok(once));
            }
        }

        #[test]
        fn south_african_mobiles_in_any_layout_are_one_number(
            rest in "[0-9]{7}", spaced in any::<bool>(), plus in any::<bool>(),
        ) {
            let plain = format!("+2782{rest}");
            let written = format!(
                "{}27{}82{}",
                if plus { "+" } else { "" },
                if spaced { " (0) " } else { "" },
                if spaced { format!(" {} {}", &rest[..3], &rest[3..]) } else { rest.clone() },
            );
            prop_assert_eq!(norm(&written), Ok(plain));
        }

        #[test]
        fn normalising_any_input_is_idempotent(raw in r"[+]?[0-9 ()a-]{0,20}") {
            if let Ok(once) = PhoneNumber::parse(&raw) {
                prop_assert_eq!(PhoneNumber::parse(once.as_str()), Ok(once));
            }
        }

        #[test]
        fn masked_shows_the_country_code_and_last_two_only(
            (code, rest) in prop_oneof![
                Just("27").prop_flat_map(|c| (Just(c), "82[0-9]{7}")),
                Just("1").prop_flat_map(|c| (Just(c), "555[0-9]{7}")),
                Just("44").prop_flat_map(|c| (Just(c), "20[0-9]{8}")),
            ]
        ) {
            let phone = PhoneNumber::parse(&format!("+{code}{rest}")).unwrap();
            let masked = phone.masked();
            prop_assert_eq!(masked.len(), phone.as_str().len());
            prop_assert_eq!(&masked[1..1 + code.len()], code);
            prop_assert!(masked[1 + code.len()..masked.len() - 2].bytes().all(|b| b == b'*'));
            prop_assert_eq!(&masked[masked.len() - 2..], &rest[rest.len() - 2..]);
        }
    }
}
