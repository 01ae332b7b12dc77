//! A template as submitted (TemplateDraft), and the rules of SPEC §5 that
//! turn it into content the registry keeps: lengths, placeholders, headers,
//! footers and buttons, each refusal naming its field.

use super::{Button, Category, HeaderMedia, TemplateContent, invalid};
use crate::domain::error::Rejection;
use crate::domain::phone::PhoneNumber;
use crate::domain::placeholder::{self, ParameterFormat, Placeholders, Segment};
use crate::domain::text;

const MAX_BODY_CHARS: usize = 1024;
const MAX_HEADER_CHARS: usize = 60;
const MAX_FOOTER_CHARS: usize = 60;
const MAX_BUTTONS: usize = 10;
const MAX_URL_BUTTONS: usize = 2;
const MAX_PHONE_BUTTONS: usize = 1;
const MAX_BUTTON_TEXT_CHARS: usize = 25;
const MAX_URL_CHARS: usize = 2000;

/// A button as submitted, before validation (the phone is still raw text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonDraft {
    QuickReply { text: String },
    Url { text: String, url: String },
    PhoneNumber { text: String, phone_number: String },
    CopyCode { text: String },
}

/// A template's content as submitted; empty header or footer means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateDraft {
    pub category: Option<Category>,
    pub body: String,
    pub header_text: String,
    pub header_media: Option<HeaderMedia>,
    pub footer_text: String,
    pub buttons: Vec<ButtonDraft>,
}

impl TemplateDraft {
    /// Checks every rule of SPEC §5 and refuses with the first problem named.
    pub fn validate(self) -> Result<TemplateContent, Rejection> {
        let category = self.category.ok_or_else(|| {
            invalid("is required: MARKETING, UTILITY or AUTHENTICATION").at("category")
        })?;

        let body_chars = self.body.chars().count();
        if !(1..=MAX_BODY_CHARS).contains(&body_chars) {
            return Err(invalid(format!(
                "must be 1-{MAX_BODY_CHARS} characters, got {body_chars}"
            ))
            .at("body"));
        }
        text::refuse_controls(&self.body).map_err(|rule| invalid(rule).at("body"))?;
        let body = component_placeholders(&self.body, "body")?;

        let header_text = non_empty(self.header_text);
        if header_text.is_some() && self.header_media.is_some() {
            return Err(invalid(
                "a template has a text header or a media header, not both: clear header_text",
            )
            .at("header_format"));
        }
        let mut header = Placeholders::default();
        if let Some(text) = &header_text {
            check_chars(text, MAX_HEADER_CHARS, "header_text")?;
            if text.contains(['\n', '\r']) {
                return Err(invalid("must be a single line").at("header_text"));
            }
            let segments = parse_at(text, "header_text")?;
            let occurrences = segments
                .iter()
                .filter(|s| !matches!(s, Segment::Text(_)))
                .count();
            if occurrences > 1 {
                return Err(invalid("may hold at most one placeholder").at("header_text"));
            }
            header = Placeholders::of(&segments);
            if header.positional.iter().any(|&n| n != 1) {
                return Err(
                    invalid("a positional header placeholder must be {{1}}").at("header_text")
                );
            }
        }

        let footer_text = non_empty(self.footer_text);
        if let Some(text) = &footer_text {
            check_chars(text, MAX_FOOTER_CHARS, "footer_text")?;
            if Placeholders::of(&parse_at(text, "footer_text")?).count() > 0 {
                return Err(invalid("may not hold placeholders").at("footer_text"));
            }
        }

        if body.format() != ParameterFormat::None
            && header.format() != ParameterFormat::None
            && body.format() != header.format()
        {
            return Err(invalid(
                "header and body mix positional {{1}} and named {{name}} placeholders; use one style",
            )
            .at("header_text"));
        }

        let buttons = validate_buttons(self.buttons)?;
        if let Some(index) = buttons
            .iter()
            .position(|b| matches!(b, Button::CopyCode { .. }))
            && category != Category::Authentication
        {
            return Err(
                invalid("a copy-code button belongs to AUTHENTICATION templates only")
                    .at(format!("buttons[{index}]")),
            );
        }
        Ok(TemplateContent {
            category,
            body: self.body,
            header_text,
            header_media: self.header_media,
            footer_text,
            buttons,
        })
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub(super) fn check_chars(text: &str, max: usize, field: &str) -> Result<(), Rejection> {
    let chars = text.chars().count();
    if chars > max {
        return Err(invalid(format!("must be at most {max} characters, got {chars}")).at(field));
    }
    text::refuse_controls(text).map_err(|rule| invalid(rule).at(field))
}

fn parse_at(text: &str, field: &str) -> Result<Vec<Segment>, Rejection> {
    placeholder::parse(text).map_err(|problem| invalid(problem).at(field))
}

fn component_placeholders(text: &str, field: &str) -> Result<Placeholders, Rejection> {
    let placeholders = Placeholders::of(&parse_at(text, field)?);
    placeholders
        .check_consistent()
        .map_err(|problem| invalid(problem).at(field))?;
    Ok(placeholders)
}

fn validate_buttons(drafts: Vec<ButtonDraft>) -> Result<Vec<Button>, Rejection> {
    if drafts.len() > MAX_BUTTONS {
        return Err(invalid(format!(
            "at most {MAX_BUTTONS} buttons, got {}",
            drafts.len()
        ))
        .at("buttons"));
    }
    let count = |want: fn(&ButtonDraft) -> bool| drafts.iter().filter(|b| want(b)).count();
    if count(|b| matches!(b, ButtonDraft::Url { .. })) > MAX_URL_BUTTONS {
        return Err(invalid(format!("at most {MAX_URL_BUTTONS} URL buttons")).at("buttons"));
    }
    if count(|b| matches!(b, ButtonDraft::PhoneNumber { .. })) > MAX_PHONE_BUTTONS {
        return Err(
            invalid(format!("at most {MAX_PHONE_BUTTONS} phone number button")).at("buttons"),
        );
    }
    if count(|b| matches!(b, ButtonDraft::CopyCode { .. })) > 1 {
        return Err(invalid("at most 1 copy-code button").at("buttons"));
    }
    drafts
        .into_iter()
        .enumerate()
        .map(|(index, draft)| {
            validate_button(draft).map_err(|e| e.within(&format!("buttons[{index}]")))
        })
        .collect()
}

fn validate_button(draft: ButtonDraft) -> Result<Button, Rejection> {
    let label = |text: &str| {
        let chars = text.chars().count();
        if !(1..=MAX_BUTTON_TEXT_CHARS).contains(&chars) {
            return Err(invalid(format!(
                "must be 1-{MAX_BUTTON_TEXT_CHARS} characters, got {chars}"
            ))
            .at("text"));
        }
        if text.contains("{{") || text.contains("}}") || text.contains('\n') {
            return Err(invalid("must be a single line without placeholders").at("text"));
        }
        Ok(())
    };
    match draft {
        ButtonDraft::QuickReply { text } => {
            label(&text)?;
            Ok(Button::QuickReply { text })
        }
        ButtonDraft::Url { text, url } => {
            label(&text)?;
            check_url(&url).map_err(|e| e.at("url"))?;
            Ok(Button::Url { text, url })
        }
        ButtonDraft::PhoneNumber { text, phone_number } => {
            label(&text)?;
            let phone_number = PhoneNumber::parse(&phone_number)
                .map_err(|e| invalid(e.message).at("phone_number"))?;
            Ok(Button::PhoneNumber { text, phone_number })
        }
        ButtonDraft::CopyCode { text } => {
            label(&text)?;
            Ok(Button::CopyCode { text })
        }
    }
}

/// An http(s) URL that may end in one `{{1}}` placeholder (WhatsApp's
/// dynamic URL suffix).
fn check_url(url: &str) -> Result<(), Rejection> {
    check_chars(url, MAX_URL_CHARS, "url").map_err(|e| Rejection { field: None, ..e })?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    if rest.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(invalid("must be a URL with a host and no spaces"));
    }
    let fixed = url.strip_suffix("{{1}}").unwrap_or(url);
    if fixed.contains("{{") || fixed.contains("}}") {
        return Err(invalid(
            "may hold one placeholder only, {{1}} at the very end",
        ));
    }
    Ok(())
}
