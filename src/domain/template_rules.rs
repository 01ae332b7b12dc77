//! What WhatsApp's review rejects in a template's body text, checked when a
//! template is registered by hand so the caller hears it at once instead of
//! as a REJECTED review days later. Not applied to templates synced from
//! WhatsApp, which were reviewed already.
//!
//! The rules, as Meta's guidelines and review messages state them: the body
//! may not start or end with a variable, may not put two variables side by
//! side with nothing between, and may not hold too many variables for its
//! length ("Template contains too many variable parameters relative to the
//! message length"). Meta does not publish the ratio; providers' measured
//! rule is words + variables >= 3 x variables + 1, which is what is used.
//! AUTHENTICATION templates are exempt: WhatsApp fixes their text ("{{1}}
//! is your verification code.").

use super::error::{Reason, Rejection};
use super::placeholder::{self, Segment};
use super::template::{Category, TemplateContent};

/// One of WhatsApp's body text rules, named in the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    StartsWithVariable,
    EndsWithVariable,
    AdjacentVariables,
    TooManyVariables,
}

impl TextRule {
    pub fn as_str(self) -> &'static str {
        match self {
            TextRule::StartsWithVariable => "BODY_STARTS_WITH_VARIABLE",
            TextRule::EndsWithVariable => "BODY_ENDS_WITH_VARIABLE",
            TextRule::AdjacentVariables => "ADJACENT_VARIABLES",
            TextRule::TooManyVariables => "TOO_MANY_VARIABLES_FOR_LENGTH",
        }
    }

    fn explain(self, variables: usize, words: usize) -> String {
        match self {
            TextRule::StartsWithVariable => {
                "WhatsApp rejects a body that starts with a variable: put text before it".to_owned()
            }
            TextRule::EndsWithVariable => {
                "WhatsApp rejects a body that ends with a variable: put text (a period will do) after it".to_owned()
            }
            TextRule::AdjacentVariables => {
                "WhatsApp rejects two variables side by side: put text between them".to_owned()
            }
            TextRule::TooManyVariables => format!(
                "WhatsApp rejects too many variables for the text's length: {variables} variables need at least {} words besides them, got {words}",
                2 * variables + 1
            ),
        }
    }
}

/// Checks a template registered by hand against WhatsApp's body text
/// rules; the refusal names the rule (`ErrorInfo` metadata `rule`).
pub fn check(content: &TemplateContent) -> Result<(), Rejection> {
    if content.category == Category::Authentication {
        return Ok(());
    }
    check_body(&content.body)
}

fn check_body(body: &str) -> Result<(), Rejection> {
    // Validated already; a body that does not parse has nothing to check.
    let Ok(segments) = placeholder::parse(body) else {
        return Ok(());
    };
    // Whitespace alone separates nothing.
    let meaningful: Vec<&Segment> = segments
        .iter()
        .filter(|s| !matches!(s, Segment::Text(text) if text.trim().is_empty()))
        .collect();
    let is_variable = |s: &&Segment| !matches!(s, Segment::Text(_));
    let variables = meaningful.iter().filter(|s| is_variable(s)).count();
    let words: usize = segments
        .iter()
        .map(|s| match s {
            Segment::Text(text) => text
                .split_whitespace()
                .filter(|word| word.chars().any(char::is_alphanumeric))
                .count(),
            _ => 0,
        })
        .sum();
    let broken = if meaningful.first().is_some_and(is_variable) {
        Some(TextRule::StartsWithVariable)
    } else if meaningful.last().is_some_and(is_variable) {
        Some(TextRule::EndsWithVariable)
    } else if meaningful
        .windows(2)
        .any(|pair| is_variable(&pair[0]) && is_variable(&pair[1]))
    {
        Some(TextRule::AdjacentVariables)
    } else if variables > 0 && words < 2 * variables + 1 {
        Some(TextRule::TooManyVariables)
    } else {
        None
    };
    match broken {
        None => Ok(()),
        Some(rule) => Err(
            Rejection::new(Reason::InvalidTemplate, rule.explain(variables, words))
                .at("body")
                .with_metadata("rule", rule.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(body: &str) -> Option<&'static str> {
        check_body(body)
            .err()
            .map(|r| {
                assert_eq!(r.reason, Reason::InvalidTemplate);
                assert_eq!(r.field.as_deref(), Some("body"));
                r.metadata["rule"].clone()
            })
            .map(|name| match name.as_str() {
                "BODY_STARTS_WITH_VARIABLE" => "starts",
                "BODY_ENDS_WITH_VARIABLE" => "ends",
                "ADJACENT_VARIABLES" => "adjacent",
                "TOO_MANY_VARIABLES_FOR_LENGTH" => "too many",
                other => panic!("{other}"),
            })
    }

    #[test]
    fn each_rule_at_its_edge() {
        assert_eq!(rule("Your order has shipped."), None);
        assert_eq!(rule("Hello {{1}}, your order has shipped."), None);
        assert_eq!(rule("{{1}}, your order has shipped."), Some("starts"));
        assert_eq!(rule("  {{1}} your order has shipped."), Some("starts"));
        assert_eq!(rule("Your order has shipped, {{1}}"), Some("ends"));
        assert_eq!(rule("Your order has shipped, {{1}} \n"), Some("ends"));
        assert_eq!(rule("Your order has shipped, {{1}}."), None);
        assert_eq!(
            rule("Dear guest, order {{1}}{{2}} has shipped."),
            Some("adjacent")
        );
        assert_eq!(
            rule("Dear guest, order {{1}} {{2}} has shipped."),
            Some("adjacent")
        );
        assert_eq!(rule("Dear guest, order {{1}} / {{2}} has shipped."), None);
        assert_eq!(rule("Order {{1}} / {{2}} shipped."), Some("too many"));
        // Three words besides one variable is the least: 3 x 1 + 1 in all.
        assert_eq!(rule("Hi {{1}} there."), Some("too many"));
        assert_eq!(rule("Hi {{1}} over there."), None);
        // Providers' published example, exactly at the limit.
        assert_eq!(
            rule("Dear Guest, Reservation {{1}} arriving from {{2}} departs on {{3}}."),
            None
        );
        assert_eq!(
            rule("Hello {{1}}, your order {{2}} for {{3}} will be delivered by {{4}}."),
            Some("too many")
        );
        assert_eq!(rule("Hi {{name}}, your order is on its way."), None);
    }

    #[test]
    fn authentication_templates_keep_whatsapps_fixed_text() {
        let content = |category| TemplateContent {
            category,
            body: "{{1}} is your verification code.".into(),
            header_text: None,
            header_media: None,
            footer_text: None,
            buttons: vec![],
        };
        assert!(check(&content(Category::Authentication)).is_ok());
        assert!(check(&content(Category::Utility)).is_err());
    }
}
