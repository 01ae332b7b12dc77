//! Free-form contents beyond text (SPEC §3, issue #14): media,
//! interactive messages, locations and reactions. Like text, each may be
//! sent only inside an open customer service window and is priced as
//! SERVICE. Validation follows the Cloud API's limits, so WhatsApp does not
//! refuse after the fact what wagate accepted; a refusal names the field
//! and the limit (`INVALID_CONTENT`).
//!
//! Limits checked against the Cloud API reference (2026-11): caption 1,024;
//! reply buttons 1–3, id 256, title 20; list button 20, 1–10 sections, at
//! most 10 rows in all, row id 200 (the issue did not give one), row title
//! 24, description 72, section title 24 and required when there are
//! several sections; call-to-action display text 20; header text 60, body
//! 1,024, footer 60.
//!
//! The serde derives are the stored form of these contents (both stores
//! keep them as JSON): renaming a field or variant changes what a store
//! reads back, and the conformance suite round-trips every content.

use serde::{Deserialize, Serialize};

use super::error::{Reason, Rejection};

const MAX_CAPTION: usize = 1024;
const MAX_FILENAME: usize = 240;
const MAX_LINK: usize = 2000;
const MAX_MEDIA_ID: usize = 128;
const MAX_HEADER: usize = 60;
const MAX_BODY: usize = 1024;
const MAX_FOOTER: usize = 60;
const MAX_BUTTONS: usize = 3;
const MAX_BUTTON_ID: usize = 256;
const MAX_BUTTON_TITLE: usize = 20;
const MAX_LIST_BUTTON: usize = 20;
const MAX_SECTIONS: usize = 10;
const MAX_ROWS: usize = 10;
const MAX_SECTION_TITLE: usize = 24;
const MAX_ROW_ID: usize = 200;
const MAX_ROW_TITLE: usize = 24;
const MAX_ROW_DESCRIPTION: usize = 72;
const MAX_CTA_TEXT: usize = 20;
const MAX_LOCATION_TEXT: usize = 1000;
const MAX_WAMID: usize = 256;
/// An emoji with its modifiers and joiners (a family, a flag) stays far
/// below this; anything longer is not one emoji.
const MAX_EMOJI_CHARS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub const ALL: [MediaKind; 5] = [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Document,
        MediaKind::Sticker,
    ];

    /// The Cloud API's name for it (the message `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    pub fn parse(name: &str) -> Option<MediaKind> {
        MediaKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn takes_caption(self) -> bool {
        !matches!(self, MediaKind::Audio | MediaKind::Sticker)
    }
}

/// Where WhatsApp fetches the media from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// An https URL WhatsApp downloads.
    Link(String),
    /// The id of media already uploaded to the provider.
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub kind: MediaKind,
    pub source: MediaSource,
    pub caption: Option<String>,
    /// Documents only: the name the customer sees.
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyButton {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSection {
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Buttons(Vec<ReplyButton>),
    List {
        button: String,
        sections: Vec<ListSection>,
    },
    CallToActionUrl {
        display_text: String,
        url: String,
    },
}

/// An interactive message's header: text, or (reply buttons and
/// call-to-action URL only) an image, video or document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractiveHeader {
    Text(String),
    Media {
        kind: MediaKind,
        source: MediaSource,
        /// Documents only.
        filename: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    pub header: Option<InteractiveHeader>,
    pub body: String,
    pub footer: Option<String>,
    pub action: Action,
}

/// Degrees as given; never NaN (refused), so equality is well defined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Degrees(f64);

impl Eq for Degrees {}

impl Degrees {
    pub fn get(self) -> f64 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: Degrees,
    pub longitude: Degrees,
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The `wamid` of the customer's message reacted to.
    pub message_id: String,
    /// One emoji; empty removes the reaction.
    pub emoji: String,
}

/// Unvalidated media, as a transport received it.
pub struct MediaDraft<'a> {
    pub kind: Option<MediaKind>,
    pub link: &'a str,
    pub media_id: &'a str,
    pub caption: &'a str,
    pub filename: &'a str,
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidContent, message)
}

/// Up to `max` characters, no control characters but newline and tab;
/// `required` refuses empty.
fn check_text(text: &str, max: usize, required: bool, field: &str) -> Result<(), Rejection> {
    let chars = text.chars().count();
    if required && text.trim().is_empty() {
        return Err(invalid(format!("is required (1-{max} characters)")).at(field));
    }
    if chars > max {
        return Err(invalid(format!("must be at most {max} characters, got {chars}")).at(field));
    }
    super::text::refuse_controls(text).map_err(|rule| invalid(rule).at(field))
}

fn optional(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn check_https(url: &str, field: &str) -> Result<(), Rejection> {
    check_text(url, MAX_LINK, true, field)?;
    let host = url.strip_prefix("https://").unwrap_or_default();
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(invalid("must be an https:// URL with a host and no spaces").at(field));
    }
    Ok(())
}

impl Media {
    pub fn new(draft: MediaDraft<'_>) -> Result<Media, Rejection> {
        let kind = draft.kind.ok_or_else(|| {
            invalid("is required: IMAGE, VIDEO, AUDIO, DOCUMENT or STICKER").at("type")
        })?;
        let source = media_source(draft.link, draft.media_id)?;
        if !draft.caption.is_empty() && !kind.takes_caption() {
            return Err(
                invalid(format!("is not allowed on {} messages", kind.as_str())).at("caption"),
            );
        }
        check_text(draft.caption, MAX_CAPTION, false, "caption")?;
        if !draft.filename.is_empty() && kind != MediaKind::Document {
            return Err(invalid("is allowed on documents only").at("filename"));
        }
        Ok(Media {
            kind,
            source,
            caption: optional(draft.caption),
            filename: filename(draft.filename)?,
        })
    }
}

/// Exactly one of an https link and a provider media id.
pub fn media_source(link: &str, media_id: &str) -> Result<MediaSource, Rejection> {
    match (link.is_empty(), media_id.is_empty()) {
        (false, true) => {
            check_https(link, "link")?;
            Ok(MediaSource::Link(link.to_owned()))
        }
        (true, false) => {
            check_text(media_id, MAX_MEDIA_ID, true, "media_id")?;
            Ok(MediaSource::Id(media_id.to_owned()))
        }
        _ => Err(invalid("set exactly one of link and media_id").at("link")),
    }
}

/// A document's file name as the customer sees it; empty means none.
pub fn filename(name: &str) -> Result<Option<String>, Rejection> {
    check_text(name, MAX_FILENAME, false, "filename")?;
    Ok(optional(name))
}

impl Interactive {
    pub fn new(
        header: &str,
        body: &str,
        footer: &str,
        action: Option<Action>,
    ) -> Result<Interactive, Rejection> {
        check_text(header, MAX_HEADER, false, "header_text")?;
        check_text(body, MAX_BODY, true, "body")?;
        check_text(footer, MAX_FOOTER, false, "footer")?;
        let action = action
            .ok_or_else(|| invalid("is required: set buttons, list or cta_url").at("action"))?;
        check_action(&action)?;
        Ok(Interactive {
            header: optional(header).map(InteractiveHeader::Text),
            body: body.to_owned(),
            footer: optional(footer),
            action,
        })
    }

    /// Puts an image, video or document header on reply buttons or a
    /// call-to-action URL (a list takes a text header only).
    pub fn with_media_header(
        self,
        kind: MediaKind,
        source: MediaSource,
        filename: Option<String>,
    ) -> Result<Interactive, Rejection> {
        let field = match kind {
            MediaKind::Image => "header_image",
            MediaKind::Video => "header_video",
            MediaKind::Document => "header_document",
            MediaKind::Audio | MediaKind::Sticker => {
                return Err(invalid(
                    "an interactive header is text, an image, a video or a document",
                )
                .at("header_text"));
            }
        };
        if matches!(self.action, Action::List { .. }) {
            return Err(invalid("a list takes a text header only").at(field));
        }
        if self.header.is_some() {
            return Err(invalid("set one header: text, image, video or document").at(field));
        }
        if filename.is_some() && kind != MediaKind::Document {
            return Err(invalid("is allowed on documents only").at(format!("{field}.filename")));
        }
        Ok(Interactive {
            header: Some(InteractiveHeader::Media {
                kind,
                source,
                filename,
            }),
            ..self
        })
    }
}

fn check_unique<'a>(ids: impl Iterator<Item = (String, &'a str)>) -> Result<(), Rejection> {
    let mut seen = std::collections::HashSet::new();
    for (field, id) in ids {
        if !seen.insert(id) {
            return Err(invalid(format!("{id:?} is used twice; ids must be unique")).at(field));
        }
    }
    Ok(())
}

fn check_action(action: &Action) -> Result<(), Rejection> {
    match action {
        Action::Buttons(buttons) => {
            if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
                return Err(invalid(format!(
                    "must hold 1-{MAX_BUTTONS} buttons, got {}",
                    buttons.len()
                ))
                .at("buttons.buttons"));
            }
            for (i, b) in buttons.iter().enumerate() {
                check_text(
                    &b.id,
                    MAX_BUTTON_ID,
                    true,
                    &format!("buttons.buttons[{i}].id"),
                )?;
                check_text(
                    &b.title,
                    MAX_BUTTON_TITLE,
                    true,
                    &format!("buttons.buttons[{i}].title"),
                )?;
            }
            check_unique(
                buttons
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("buttons.buttons[{i}].id"), b.id.as_str())),
            )?;
            // WhatsApp shows titles side by side: two alike cannot be told apart.
            check_unique(
                buttons
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("buttons.buttons[{i}].title"), b.title.as_str())),
            )
        }
        Action::List { button, sections } => {
            check_text(button, MAX_LIST_BUTTON, true, "list.button")?;
            if sections.is_empty() || sections.len() > MAX_SECTIONS {
                return Err(invalid(format!(
                    "must hold 1-{MAX_SECTIONS} sections, got {}",
                    sections.len()
                ))
                .at("list.sections"));
            }
            let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
            if rows > MAX_ROWS {
                return Err(invalid(format!(
                    "may hold at most {MAX_ROWS} rows in all sections together, got {rows}"
                ))
                .at("list.sections"));
            }
            for (i, section) in sections.iter().enumerate() {
                let field = format!("list.sections[{i}]");
                let title = section.title.as_deref().unwrap_or_default();
                check_text(
                    title,
                    MAX_SECTION_TITLE,
                    sections.len() > 1,
                    &format!("{field}.title"),
                )?;
                if section.rows.is_empty() {
                    return Err(invalid("must hold at least one row").at(format!("{field}.rows")));
                }
                for (j, row) in section.rows.iter().enumerate() {
                    let field = format!("{field}.rows[{j}]");
                    check_text(&row.id, MAX_ROW_ID, true, &format!("{field}.id"))?;
                    check_text(&row.title, MAX_ROW_TITLE, true, &format!("{field}.title"))?;
                    let description = row.description.as_deref().unwrap_or_default();
                    check_text(
                        description,
                        MAX_ROW_DESCRIPTION,
                        false,
                        &format!("{field}.description"),
                    )?;
                }
            }
            check_unique(sections.iter().enumerate().flat_map(|(i, s)| {
                s.rows
                    .iter()
                    .enumerate()
                    .map(move |(j, r)| (format!("list.sections[{i}].rows[{j}].id"), r.id.as_str()))
            }))
        }
        Action::CallToActionUrl { display_text, url } => {
            check_text(display_text, MAX_CTA_TEXT, true, "cta_url.display_text")?;
            check_https(url, "cta_url.url")
        }
    }
}

impl Location {
    pub fn new(
        latitude: f64,
        longitude: f64,
        name: &str,
        address: &str,
    ) -> Result<Location, Rejection> {
        if !(-90.0..=90.0).contains(&latitude) {
            return Err(
                invalid(format!("must be between -90 and 90, got {latitude}")).at("latitude"),
            );
        }
        if !(-180.0..=180.0).contains(&longitude) {
            return Err(
                invalid(format!("must be between -180 and 180, got {longitude}")).at("longitude"),
            );
        }
        check_text(name, MAX_LOCATION_TEXT, false, "name")?;
        check_text(address, MAX_LOCATION_TEXT, false, "address")?;
        Ok(Location {
            latitude: Degrees(latitude),
            longitude: Degrees(longitude),
            name: optional(name),
            address: optional(address),
        })
    }
}

impl Reaction {
    pub fn new(message_id: &str, emoji: &str) -> Result<Reaction, Rejection> {
        check_text(message_id, MAX_WAMID, true, "message_id")?;
        if message_id.chars().any(char::is_whitespace) {
            return Err(
                invalid("must be a WhatsApp message id (wamid) without spaces").at("message_id"),
            );
        }
        let chars = emoji.chars().count();
        if chars > MAX_EMOJI_CHARS
            || emoji
                .chars()
                .any(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || c.is_control())
        {
            return Err(invalid("must be one emoji, or empty to remove the reaction").at("emoji"));
        }
        Ok(Reaction {
            message_id: message_id.to_owned(),
            emoji: emoji.to_owned(),
        })
    }
}

/// What the customer reads, as text: the caption, the buttons' titles,
/// the list's rows (SPEC §3: `rendered_text`).
/// How a piece of media reads as text: `[image]`, `[document: a.pdf]`;
/// shared by media messages, interactive and template headers.
pub fn media_label(kind: &str, filename: Option<&str>) -> String {
    match filename {
        Some(name) => format!("[{kind}: {name}]"),
        None => format!("[{kind}]"),
    }
}

pub fn media_summary(media: &Media) -> String {
    let mut text = media_label(media.kind.as_str(), media.filename.as_deref());
    if let Some(caption) = &media.caption {
        text.push(' ');
        text.push_str(caption);
    }
    text
}

pub fn interactive_summary(interactive: &Interactive) -> String {
    let mut lines = Vec::new();
    match &interactive.header {
        Some(InteractiveHeader::Text(text)) => lines.push(text.clone()),
        Some(InteractiveHeader::Media { kind, filename, .. }) => {
            lines.push(media_label(kind.as_str(), filename.as_deref()));
        }
        None => {}
    }
    lines.push(interactive.body.clone());
    lines.extend(interactive.footer.clone());
    match &interactive.action {
        Action::Buttons(buttons) => {
            lines.extend(buttons.iter().map(|b| format!("[{}]", b.title)));
        }
        Action::List { button, sections } => {
            lines.push(format!("[{button}]"));
            for section in sections {
                lines.extend(section.title.clone());
                for row in &section.rows {
                    lines.push(match &row.description {
                        Some(d) => format!("- {}: {d}", row.title),
                        None => format!("- {}", row.title),
                    });
                }
            }
        }
        Action::CallToActionUrl { display_text, url } => {
            lines.push(format!("[{display_text}]({url})"));
        }
    }
    lines.join("\n")
}

pub fn location_summary(location: &Location) -> String {
    let mut text = format!(
        "[location {}, {}]",
        location.latitude.0, location.longitude.0
    );
    for part in [&location.name, &location.address].into_iter().flatten() {
        text.push(' ');
        text.push_str(part);
    }
    text
}

pub fn reaction_summary(reaction: &Reaction) -> String {
    if reaction.emoji.is_empty() {
        "[reaction removed]".to_owned()
    } else {
        format!("[reaction {}]", reaction.emoji)
    }
}

#[cfg(test)]
mod tests;
