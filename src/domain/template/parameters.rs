//! What a template send supplies (SendParameters), and WhatsApp's rules for
//! each value: checked against the template's placeholders when it is
//! filled.

use std::collections::{BTreeMap, BTreeSet};

use super::{HeaderValue, mismatch};
use crate::domain::error::{Reason, Rejection};
use crate::domain::placeholder::{Placeholders, Segment};

const MAX_PARAMETER_CHARS: usize = 1024;
const MAX_CONSECUTIVE_SPACES: usize = 4;

/// The values a send supplies for one component's placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComponentParameters {
    pub positional: Vec<String>,
    pub named: BTreeMap<String, String>,
}

/// Everything a template send supplies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendParameters {
    pub body: ComponentParameters,
    pub header: ComponentParameters,
    /// The media or location of a template with such a header.
    pub header_media: Option<HeaderValue>,
    /// Button index -> a URL button's `{{1}}` suffix, or a copy-code
    /// button's code (the Cloud API takes both as a URL button parameter).
    pub buttons: BTreeMap<u32, String>,
    /// Quick-reply button index -> the payload WhatsApp returns when the
    /// customer taps it (optional per button).
    pub quick_replies: BTreeMap<u32, String>,
}

impl ComponentParameters {
    pub(super) fn check_matches(
        &self,
        expected: &Placeholders,
        field: &str,
    ) -> Result<(), Rejection> {
        let given_named: BTreeSet<&String> = self.named.keys().collect();
        let expected_named: BTreeSet<&String> = expected.named.iter().collect();
        let problem = if !self.positional.is_empty() && !self.named.is_empty() {
            Some("give positional or named values, not both".to_owned())
        } else if self.positional.len() != expected.positional.len() {
            Some(format!(
                "template expects {} positional values, got {}",
                expected.positional.len(),
                self.positional.len()
            ))
        } else if given_named != expected_named {
            let missing: Vec<_> = expected_named.difference(&given_named).collect();
            let unexpected: Vec<_> = given_named.difference(&expected_named).collect();
            Some(format!(
                "template expects named values {expected_named:?}; missing {missing:?}, unexpected {unexpected:?}"
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(mismatch(problem).at(field)),
            None => Ok(()),
        }
    }

    pub(super) fn check_values(&self, field: &str) -> Result<(), Rejection> {
        for (index, value) in self.positional.iter().enumerate() {
            check_value(value).map_err(|e| e.at(format!("{field}.positional[{index}]")))?;
        }
        for (name, value) in &self.named {
            check_value(value).map_err(|e| e.at(format!("{field}.named[{name}]")))?;
        }
        Ok(())
    }

    pub(super) fn value(&self, segment: &Segment) -> Option<&str> {
        match segment {
            Segment::Positional(n) => self.positional.get(*n as usize - 1).map(String::as_str),
            Segment::Named(name) => self.named.get(name).map(String::as_str),
            Segment::Text(_) => None,
        }
    }
}

/// WhatsApp's rules for a parameter value: non-empty, at most 1024
/// characters, no newline or tab, at most 4 consecutive spaces.
pub fn check_value(value: &str) -> Result<(), Rejection> {
    let bad = |rule: &str| {
        Err(Rejection::new(
            Reason::InvalidTemplateParameter,
            rule.to_owned(),
        ))
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.chars().count() > MAX_PARAMETER_CHARS {
        return bad("must be at most 1024 characters");
    }
    if value.contains(['\n', '\r', '\t']) {
        return bad("must not contain newlines or tabs");
    }
    if value.contains(&" ".repeat(MAX_CONSECUTIVE_SPACES + 1)) {
        return bad("must not contain more than 4 consecutive spaces");
    }
    Ok(())
}
