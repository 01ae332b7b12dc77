//! The template registry's rules (SPEC §5): what a well-formed template is,
//! how its status changes, and how a send fills and renders it (SPEC §3.2).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::AccountId;
use super::error::{Reason, Rejection};
use super::phone::PhoneNumber;
use super::placeholder::{self, ParameterFormat, Placeholders, Segment};
use super::rich::{Location, MediaSource};

mod draft;
mod parameters;

use draft::check_chars;
pub use draft::{ButtonDraft, TemplateDraft};
pub use parameters::{ComponentParameters, SendParameters, check_value};

const MAX_NAME_LEN: usize = 512;
const MAX_STATUS_REASON_CHARS: usize = 1024;
/// WhatsApp's limit for a one-time passcode in a copy-code button.
const MAX_CODE_CHARS: usize = 15;

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidTemplate, message)
}

/// A template's identity: (account, name, language), name and language
/// validated. As on WhatsApp, the same name may mean different templates in
/// different accounts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateId {
    account: AccountId,
    name: String,
    language: String,
}

impl TemplateId {
    pub fn parse(name: &str, language: &str) -> Result<Self, Rejection> {
        let name_ok = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(invalid(format!(
                "must be 1-{MAX_NAME_LEN} of lowercase letters, digits and underscores"
            ))
            .at("name"));
        }
        if !is_whatsapp_locale(language) {
            return Err(invalid(
                "must be a WhatsApp locale code such as \"en\", \"en_US\" or \"pt_BR\"",
            )
            .at("language"));
        }
        Ok(TemplateId {
            account: AccountId::default_account(),
            name: name.to_owned(),
            language: language.to_owned(),
        })
    }

    /// The same (name, language) in `account` (parsed ids are in the
    /// default account).
    pub fn in_account(self, account: AccountId) -> Self {
        TemplateId { account, ..self }
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn language(&self) -> &str {
        &self.language
    }
}

/// `ll`, `lll`, or either followed by `_RR` (for example `pt_BR`).
fn is_whatsapp_locale(code: &str) -> bool {
    let (lang, region) = match code.split_once('_') {
        Some((lang, region)) => (lang, Some(region)),
        None => (code, None),
    };
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok =
        region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()));
    lang_ok && region_ok
}

/// What a template is for; decides pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

/// Review status as WhatsApp reports it. Only `Approved` may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Paused,
    Disabled,
    InAppeal,
    PendingDeletion,
    LimitExceeded,
    Archived,
    /// Gone from WhatsApp (a sync found it no longer there): never sent.
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
            Status::Paused => "PAUSED",
            Status::Disabled => "DISABLED",
            Status::InAppeal => "IN_APPEAL",
            Status::PendingDeletion => "PENDING_DELETION",
            Status::LimitExceeded => "LIMIT_EXCEEDED",
            Status::Archived => "ARCHIVED",
            Status::Deleted => "DELETED",
        }
    }

    /// WhatsApp's error code for sending a template in this status.
    fn send_error_code(self) -> Option<u32> {
        match self {
            Status::Paused => Some(132_015),
            Status::Disabled => Some(132_016),
            // WhatsApp no longer has it: as a name it does not know.
            Status::Deleted => Some(132_001),
            _ => None,
        }
    }
}

/// A button under the template's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Button {
    QuickReply {
        text: String,
    },
    Url {
        text: String,
        url: String,
    },
    PhoneNumber {
        text: String,
        phone_number: PhoneNumber,
    },
    /// An authentication template's one-time-passcode button: each send
    /// gives the code, which the customer copies with one tap.
    CopyCode {
        text: String,
    },
}

/// A header that is not text: its media (or place) is given by each send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMedia {
    Image,
    Video,
    Document,
    Location,
}

impl HeaderMedia {
    pub const ALL: [HeaderMedia; 4] = [
        HeaderMedia::Image,
        HeaderMedia::Video,
        HeaderMedia::Document,
        HeaderMedia::Location,
    ];

    /// The Cloud API's name for it (a header parameter's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderMedia::Image => "image",
            HeaderMedia::Video => "video",
            HeaderMedia::Document => "document",
            HeaderMedia::Location => "location",
        }
    }

    pub fn parse(name: &str) -> Option<HeaderMedia> {
        HeaderMedia::ALL.into_iter().find(|h| h.as_str() == name)
    }
}

/// What a send puts in a template's media or location header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderValue {
    Media {
        /// Image, video or document, as the send said (it must match the
        /// template's).
        kind: HeaderMedia,
        source: MediaSource,
        /// Documents only: the name the customer sees.
        filename: Option<String>,
    },
    Location(Location),
}

impl HeaderValue {
    /// An image, video or document for a header; a file name on documents
    /// only (refused at `filename`).
    pub fn media(
        kind: HeaderMedia,
        source: MediaSource,
        filename: Option<String>,
    ) -> Result<HeaderValue, Rejection> {
        if kind == HeaderMedia::Location {
            return Err(Rejection::new(
                Reason::InvalidContent,
                "a location header takes a location, not media",
            ));
        }
        if filename.is_some() && kind != HeaderMedia::Document {
            return Err(Rejection::new(
                Reason::InvalidContent,
                "is allowed on document headers only",
            )
            .at("filename"));
        }
        Ok(HeaderValue::Media {
            kind,
            source,
            filename,
        })
    }
}

/// The editable part of a template, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContent {
    pub category: Category,
    pub body: String,
    pub header_text: Option<String>,
    /// An image, video, document or location header instead of text.
    pub header_media: Option<HeaderMedia>,
    pub footer_text: Option<String>,
    pub buttons: Vec<Button>,
}

impl Button {
    /// Whether every send gives this button a value: a URL's `{{1}}`
    /// suffix, or the code of a copy-code button.
    fn takes_value(&self) -> bool {
        matches!(self, Button::Url { url, .. } if url.ends_with("{{1}}"))
            || matches!(self, Button::CopyCode { .. })
    }
}

/// A registered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: TemplateId,
    pub content: TemplateContent,
    pub status: Status,
    pub status_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// WhatsApp's id for the template, once a sync has seen it.
    pub whatsapp_id: Option<String>,
}

impl Template {
    /// Creates a template (PENDING) or replaces an existing one's content. A
    /// content change returns it to PENDING, as an edit does on WhatsApp; an
    /// identical upsert returns the template unchanged. Returns whether
    /// anything changed.
    pub fn upsert(
        existing: Option<Template>,
        id: TemplateId,
        content: TemplateContent,
        now: DateTime<Utc>,
    ) -> (Template, bool) {
        match existing {
            Some(existing) if existing.content == content => (existing, false),
            Some(existing) => (
                Template {
                    content,
                    status: Status::Pending,
                    status_reason: String::new(),
                    updated_at: now,
                    ..existing
                },
                true,
            ),
            None => (
                Template {
                    id,
                    content,
                    status: Status::Pending,
                    status_reason: String::new(),
                    created_at: now,
                    updated_at: now,
                    whatsapp_id: None,
                },
                true,
            ),
        }
    }

    pub fn with_status(
        self,
        status: Status,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Template, Rejection> {
        check_chars(reason, MAX_STATUS_REASON_CHARS, "reason")
            .map_err(|e| Rejection::new(Reason::InvalidTemplateStatus, e.message).at("reason"))?;
        Ok(Template {
            status,
            status_reason: reason.to_owned(),
            updated_at: now,
            ..self
        })
    }

    /// Positional or named, across header and body.
    pub fn parameter_format(&self) -> ParameterFormat {
        let mut all = self.placeholders_of(&self.content.body);
        if let Some(header) = &self.content.header_text {
            all.merge(&self.placeholders_of(header));
        }
        all.format()
    }

    fn placeholders_of(&self, text: &str) -> Placeholders {
        Placeholders::of(&segments(text))
    }

    /// Only APPROVED templates may be sent (WhatsApp 132015 when paused,
    /// 132016 when disabled).
    pub fn check_sendable(&self) -> Result<(), Rejection> {
        if self.status == Status::Approved {
            return Ok(());
        }
        let mut rejection = Rejection::new(
            Reason::TemplateNotApproved,
            format!(
                "template {}/{} is {}; only APPROVED templates may be sent",
                self.id.name,
                self.id.language,
                self.status.as_str()
            ),
        )
        .with_metadata("status", self.status.as_str());
        if let Some(code) = self.status.send_error_code() {
            rejection = rejection.with_metadata("whatsapp_code", code.to_string());
        }
        Err(rejection)
    }

    /// Checks the send's parameters against the placeholders (SPEC §3.2) and
    /// renders the text exactly as the customer will read it: header, body
    /// and footer, each on its own line.
    pub fn fill(&self, parameters: &SendParameters) -> Result<String, Rejection> {
        let body = segments(&self.content.body);
        let header = self
            .content
            .header_text
            .as_deref()
            .map(segments)
            .unwrap_or_default();
        parameters
            .body
            .check_matches(&Placeholders::of(&body), "body_parameters")?;
        parameters
            .header
            .check_matches(&Placeholders::of(&header), "header_parameters")?;
        self.check_button_parameters(parameters)?;
        let header_media = self.check_header_media(parameters.header_media.as_ref())?;

        parameters.body.check_values("body_parameters")?;
        parameters.header.check_values("header_parameters")?;
        for (index, value) in &parameters.buttons {
            check_value(value).map_err(|e| e.at(format!("button_parameters[{index}].value")))?;
        }
        for (index, payload) in &parameters.quick_replies {
            check_value(payload)
                .map_err(|e| e.at(format!("quick_reply_payloads[{index}].payload")))?;
        }

        let mut parts = Vec::with_capacity(3);
        parts.extend(header_media);
        if !header.is_empty() {
            parts.push(placeholder::render(&header, |s| parameters.header.value(s)));
        }
        parts.push(placeholder::render(&body, |s| parameters.body.value(s)));
        if let Some(footer) = &self.content.footer_text {
            parts.push(footer.clone());
        }
        Ok(parts.join("\n"))
    }

    /// A media header needs its media in every send, of its kind, and a
    /// template without one takes none (WhatsApp 132000). Returns the
    /// header as the customer reads it.
    fn check_header_media(&self, given: Option<&HeaderValue>) -> Result<Option<String>, Rejection> {
        let kind = self.content.header_media;
        let text = match (kind, given) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(mismatch(
                    "the template has no media header; leave header empty".into(),
                )
                .at("header"));
            }
            (Some(kind), None) => {
                let what = match kind {
                    HeaderMedia::Location => "a location",
                    _ => "its media (link or media_id)",
                };
                return Err(mismatch(format!(
                    "the template has a {} header: give {what}",
                    kind.as_str()
                ))
                .at("header"));
            }
            (Some(kind), Some(value)) => {
                let given = match value {
                    HeaderValue::Location(_) => HeaderMedia::Location,
                    HeaderValue::Media { kind, .. } => *kind,
                };
                if given != kind {
                    return Err(mismatch(format!(
                        "the template has a {} header, not a {} one",
                        kind.as_str(),
                        given.as_str()
                    ))
                    .at("header"));
                }
                match value {
                    HeaderValue::Location(location) => super::rich::location_summary(location),
                    HeaderValue::Media { filename, .. } => {
                        super::rich::media_label(kind.as_str(), filename.as_deref())
                    }
                }
            }
        };
        Ok(Some(text))
    }

    fn check_button_parameters(&self, parameters: &SendParameters) -> Result<(), Rejection> {
        let indexes = |want: fn(&Button) -> bool| -> BTreeSet<u32> {
            (0u32..)
                .zip(&self.content.buttons)
                .filter(|(_, button)| want(button))
                .map(|(index, _)| index)
                .collect()
        };
        let expected = indexes(Button::takes_value);
        let given: BTreeSet<u32> = parameters.buttons.keys().copied().collect();
        if expected != given {
            return Err(mismatch(format!(
                "template expects values for URL and copy-code buttons at indexes {expected:?}; got indexes {given:?}"
            ))
            .at("button_parameters"));
        }
        let quick_replies = indexes(|b| matches!(b, Button::QuickReply { .. }));
        if let Some(index) = parameters
            .quick_replies
            .keys()
            .find(|index| !quick_replies.contains(index))
        {
            return Err(mismatch(format!(
                "button {index} is not a quick-reply button; quick replies are at indexes {quick_replies:?}"
            ))
            .at("quick_reply_payloads"));
        }
        for (index, button) in (0u32..).zip(&self.content.buttons) {
            if let (Button::CopyCode { .. }, Some(code)) = (button, parameters.buttons.get(&index))
            {
                let chars = code.chars().count();
                if !(1..=MAX_CODE_CHARS).contains(&chars) || code.contains(char::is_whitespace) {
                    return Err(Rejection::new(
                        Reason::InvalidTemplateParameter,
                        format!(
                            "a code is 1-{MAX_CODE_CHARS} characters without spaces, got {chars}"
                        ),
                    )
                    .at(format!("button_parameters[{index}].value")));
                }
            }
        }
        Ok(())
    }
}

/// Template text is validated before it is stored, so parsing it again cannot fail.
fn segments(text: &str) -> Vec<Segment> {
    placeholder::parse(text).unwrap_or_else(|_| vec![Segment::Text(text.to_owned())])
}

fn mismatch(message: String) -> Rejection {
    Rejection::new(Reason::TemplateParameterMismatch, message)
}

/// What a template change writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateWrite {
    /// Store this version.
    Put(Box<Template>),
    /// Remove the template.
    Delete,
    /// Leave the store as it is.
    Keep,
}

/// Plans an upsert of `content` over what is stored.
pub fn plan_upsert(
    existing: Option<&Template>,
    id: &TemplateId,
    content: &TemplateContent,
    now: DateTime<Utc>,
) -> TemplateWrite {
    match Template::upsert(existing.cloned(), id.clone(), content.clone(), now) {
        (template, true) => TemplateWrite::Put(Box::new(template)),
        (_, false) => TemplateWrite::Keep,
    }
}

/// Plans a review status change; a missing template keeps the store as is.
pub fn plan_status(
    existing: Option<&Template>,
    status: Status,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<TemplateWrite, Rejection> {
    match existing {
        Some(template) => Ok(TemplateWrite::Put(Box::new(
            template.clone().with_status(status, reason, now)?,
        ))),
        None => Ok(TemplateWrite::Keep),
    }
}

/// Plans a deletion.
pub fn plan_delete(existing: Option<&Template>) -> TemplateWrite {
    match existing {
        Some(_) => TemplateWrite::Delete,
        None => TemplateWrite::Keep,
    }
}

/// Which templates a listing keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemplateFilter {
    pub status: Option<Status>,
    pub category: Option<Category>,
}

impl TemplateFilter {
    pub fn keeps(&self, template: &Template) -> bool {
        self.status.is_none_or(|s| template.status == s)
            && self.category.is_none_or(|c| template.content.category == c)
    }
}

#[cfg(test)]
mod tests;
