//! Placeholder syntax of template text (SPEC §5): positional `{{1}}..{{n}}`
//! or named `{{order_id}}`, never mixed in one template.

use std::collections::BTreeSet;

/// A piece of template text: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Positional(u32),
    Named(String),
}

/// The placeholders a piece of text (or a whole template) uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placeholders {
    pub positional: BTreeSet<u32>,
    pub named: BTreeSet<String>,
}

/// How a template's placeholders are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterFormat {
    None,
    Positional,
    Named,
}

impl Placeholders {
    pub fn of(segments: &[Segment]) -> Self {
        let mut found = Placeholders::default();
        for segment in segments {
            match segment {
                Segment::Positional(n) => {
                    found.positional.insert(*n);
                }
                Segment::Named(name) => {
                    found.named.insert(name.clone());
                }
                Segment::Text(_) => {}
            }
        }
        found
    }

    pub fn count(&self) -> usize {
        self.positional.len() + self.named.len()
    }

    pub fn format(&self) -> ParameterFormat {
        match (self.positional.is_empty(), self.named.is_empty()) {
            (true, true) => ParameterFormat::None,
            (false, true) => ParameterFormat::Positional,
            _ => ParameterFormat::Named,
        }
    }

    /// Positional placeholders must be exactly 1..=n, no gaps; names and
    /// numbers never mix.
    pub fn check_consistent(&self) -> Result<(), String> {
        if !self.positional.is_empty() && !self.named.is_empty() {
            return Err(
                "mixes positional {{1}} and named {{name}} placeholders; use one style".to_owned(),
            );
        }
        for (expected, &found) in (1u32..).zip(&self.positional) {
            if expected != found {
                return Err(format!(
                    "positional placeholders must run {{{{1}}}}..{{{{n}}}} without gaps; {{{{{expected}}}}} is missing"
                ));
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &Placeholders) {
        self.positional.extend(&other.positional);
        self.named.extend(other.named.iter().cloned());
    }
}

/// Splits template text into literal text and placeholders, refusing
/// malformed braces with the first problem named.
pub fn parse(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let unmatched_close = |before: usize| {
            rest[..before].find("}}").map(|at| {
                format!(
                    "has '}}}}' without a matching '{{{{' at character {}",
                    char_offset(text, rest, at)
                )
            })
        };
        let Some(open) = rest.find("{{") else {
            if let Some(problem) = unmatched_close(rest.len()) {
                return Err(problem);
            }
            break;
        };
        if let Some(problem) = unmatched_close(open) {
            return Err(problem);
        }
        let inner_start = open + 2;
        let Some(len) = rest[inner_start..].find("}}") else {
            return Err(format!(
                "has '{{{{' without a closing '}}}}' at character {}",
                char_offset(text, rest, open)
            ));
        };
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        segments.push(placeholder(&rest[inner_start..inner_start + len])?);
        rest = &rest[inner_start + len + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    Ok(segments)
}

fn char_offset(text: &str, rest: &str, byte_in_rest: usize) -> usize {
    let byte = text.len() - rest.len() + byte_in_rest;
    text[..byte].chars().count()
}

fn placeholder(inner: &str) -> Result<Segment, String> {
    let bytes = inner.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        return match inner.parse::<u32>() {
            Ok(n) if n >= 1 && !inner.starts_with('0') => Ok(Segment::Positional(n)),
            _ => Err(format!(
                "has placeholder {{{{{inner}}}}}: positions are 1, 2, 3, ... without leading zeros"
            )),
        };
    }
    let named = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if named {
        Ok(Segment::Named(inner.to_owned()))
    } else {
        Err(format!(
            "has malformed placeholder {{{{{inner}}}}}: use {{{{1}}}} or a name of lowercase letters, digits and underscores starting with a letter"
        ))
    }
}

/// Fills placeholders in one pass: a value that itself looks like a
/// placeholder is shown literally, never substituted again.
pub fn render<'a>(segments: &[Segment], value: impl Fn(&Segment) -> Option<&'a str>) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Text(text) => out.push_str(text),
            placeholder => out.push_str(value(placeholder).unwrap_or_default()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.to_owned())
    }

    #[test]
    fn parses_positional_and_named() {
        assert_eq!(
            parse("Hi {{1}}, order {{2}}!").unwrap(),
            vec![
                text("Hi "),
                Segment::Positional(1),
                text(", order "),
                Segment::Positional(2),
                text("!")
            ]
        );
        assert_eq!(
            parse("{{order_id}} ships").unwrap(),
            vec![Segment::Named("order_id".to_owned()), text(" ships")]
        );
        assert_eq!(
            parse("no placeholders").unwrap(),
            vec![text("no placeholders")]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("a { b } c").unwrap(), vec![text("a { b } c")]);
    }

    #[test]
    fn refuses_malformed_braces() {
        for (input, expected) in [
            ("Hi {{1", "without a closing"),
            ("Hi 1}}", "without a matching"),
            ("{{}}", "malformed placeholder {{}}"),
            ("{{ 1 }}", "malformed placeholder {{ 1 }}"),
            ("{{Name}}", "malformed placeholder {{Name}}"),
            ("{{1a}}", "malformed placeholder {{1a}}"),
            ("{{order-id}}", "malformed placeholder"),
            ("{{{1}}}", "malformed placeholder {{{1}}"),
            ("{{0}}", "positions are 1, 2, 3"),
            ("{{01}}", "positions are 1, 2, 3"),
            ("{{99999999999}}", "positions are 1, 2, 3"),
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn problem_position_counts_characters() {
        assert!(parse("héllo }}").unwrap_err().contains("character 6"));
    }

    #[test]
    fn gaps_and_mixing_are_inconsistent() {
        let of = |s: &str| Placeholders::of(&parse(s).unwrap());
        assert!(of("{{1}} {{2}} {{1}}").check_consistent().is_ok());
        assert!(
            of("{{2}}")
                .check_consistent()
                .unwrap_err()
                .contains("{{1}} is missing")
        );
        assert!(
            of("{{1}} {{3}}")
                .check_consistent()
                .unwrap_err()
                .contains("{{2}} is missing")
        );
        assert!(
            of("{{1}} {{name}}")
                .check_consistent()
                .unwrap_err()
                .contains("mixes")
        );
        assert_eq!(of("{{1}} {{2}} {{1}}").count(), 2);
        assert_eq!(of("{{a}}").format(), ParameterFormat::Named);
        assert_eq!(of("x").format(), ParameterFormat::None);
    }

    #[test]
    fn render_substitutes_once() {
        let segments = parse("{{1}} and {{2}}").unwrap();
        let out = render(&segments, |s| match s {
            Segment::Positional(1) => Some("{{2}}"),
            Segment::Positional(2) => Some("two"),
            _ => None,
        });
        assert_eq!(out, "{{2}} and two");
    }
}
