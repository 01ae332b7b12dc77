//! Protobuf ⇄ domain for the contents beyond text and templates (media,
//! interactive, location, reaction), and for `MessageContent`, which
//! answers carry back.

use crate::domain::rich::{
    self, Action, Interactive, InteractiveHeader, ListRow, ListSection, Location, Media,
    MediaDraft, MediaKind, MediaSource, Reaction, ReplyButton,
};
use crate::domain::template::{ComponentParameters, HeaderMedia, HeaderValue, TemplateContent};
use crate::domain::{Content, Rejection};
use crate::pb;

const MEDIA_TYPES: [(pb::MediaType, MediaKind); 5] = [
    (pb::MediaType::Image, MediaKind::Image),
    (pb::MediaType::Video, MediaKind::Video),
    (pb::MediaType::Audio, MediaKind::Audio),
    (pb::MediaType::Document, MediaKind::Document),
    (pb::MediaType::Sticker, MediaKind::Sticker),
];

pub fn media(media: pb::MediaContent) -> Result<Content, Rejection> {
    use pb::media_content::Source;
    // Unspecified and undefined numbers alike: the domain says it is required.
    let kind = pb::MediaType::try_from(media.r#type)
        .ok()
        .and_then(|t| MEDIA_TYPES.iter().find(|(p, _)| *p == t))
        .map(|(_, kind)| *kind);
    let (link, media_id) = match &media.source {
        Some(Source::Link(link)) => (link.as_str(), ""),
        Some(Source::MediaId(id)) => ("", id.as_str()),
        None => ("", ""),
    };
    Media::new(MediaDraft {
        kind,
        link,
        media_id,
        caption: &media.caption,
        filename: &media.filename,
    })
    .map(Content::Media)
    .map_err(|e| e.within("media"))
}

pub fn interactive(interactive: pb::InteractiveContent) -> Result<Content, Rejection> {
    use pb::interactive_content::Action as A;
    let action = interactive.action.map(|action| match action {
        A::Buttons(buttons) => Action::Buttons(
            buttons
                .buttons
                .into_iter()
                .map(|b| ReplyButton {
                    id: b.id,
                    title: b.title,
                })
                .collect(),
        ),
        A::List(list) => Action::List {
            button: list.button,
            sections: list
                .sections
                .into_iter()
                .map(|s| ListSection {
                    title: (!s.title.is_empty()).then_some(s.title),
                    rows: s
                        .rows
                        .into_iter()
                        .map(|r| ListRow {
                            id: r.id,
                            title: r.title,
                            description: (!r.description.is_empty()).then_some(r.description),
                        })
                        .collect(),
                })
                .collect(),
        },
        A::CtaUrl(cta) => Action::CallToActionUrl {
            display_text: cta.display_text,
            url: cta.url,
        },
    });
    use pb::interactive_content::Header;
    let (text, media) = match interactive.header {
        Some(Header::HeaderText(text)) => (text, None),
        Some(Header::HeaderImage(r)) => {
            (String::new(), Some((MediaKind::Image, r, "header_image")))
        }
        Some(Header::HeaderVideo(r)) => {
            (String::new(), Some((MediaKind::Video, r, "header_video")))
        }
        Some(Header::HeaderDocument(r)) => (
            String::new(),
            Some((MediaKind::Document, r, "header_document")),
        ),
        None => (String::new(), None),
    };
    let message = Interactive::new(&text, &interactive.body, &interactive.footer, action);
    let message = match (message, media) {
        (Ok(message), Some((kind, reference, field))) => {
            let (source, filename) = reference_of(&reference).map_err(|e| e.within(field))?;
            message.with_media_header(kind, source, filename)
        }
        (message, _) => message,
    };
    message
        .map(Content::Interactive)
        .map_err(|e| e.within("interactive"))
}

pub fn location(location: pb::LocationContent) -> Result<Content, Rejection> {
    Location::new(
        location.latitude,
        location.longitude,
        &location.name,
        &location.address,
    )
    .map(Content::Location)
    .map_err(|e| e.within("location"))
}

pub fn reaction(reaction: pb::ReactionContent) -> Result<Content, Rejection> {
    Reaction::new(&reaction.message_id, &reaction.emoji)
        .map(Content::Reaction)
        .map_err(|e| e.within("reaction"))
}

/// A media reference's source and file name, validated.
fn reference_of(
    reference: &pb::MediaReference,
) -> Result<(MediaSource, Option<String>), Rejection> {
    use pb::media_reference::Source;
    let (link, id) = match &reference.source {
        Some(Source::Link(link)) => (link.as_str(), ""),
        Some(Source::MediaId(id)) => ("", id.as_str()),
        None => ("", ""),
    };
    Ok((
        rich::media_source(link, id)?,
        rich::filename(&reference.filename)?,
    ))
}

fn reference_to_pb(source: &MediaSource, filename: &Option<String>) -> pb::MediaReference {
    pb::MediaReference {
        source: Some(match source {
            MediaSource::Link(link) => pb::media_reference::Source::Link(link.clone()),
            MediaSource::Id(id) => pb::media_reference::Source::MediaId(id.clone()),
        }),
        filename: filename.clone().unwrap_or_default(),
    }
}

/// A send's value for a template's media or location header.
pub fn template_header(header: pb::TemplateHeader) -> Result<HeaderValue, Rejection> {
    use pb::template_header::Value;
    let media = |kind: HeaderMedia, reference: pb::MediaReference, field: &str| {
        let (source, filename) = reference_of(&reference).map_err(|e| e.within(field))?;
        HeaderValue::media(kind, source, filename).map_err(|e| e.within(field))
    };
    match header.value {
        Some(Value::Image(r)) => media(HeaderMedia::Image, r, "image"),
        Some(Value::Video(r)) => media(HeaderMedia::Video, r, "video"),
        Some(Value::Document(r)) => media(HeaderMedia::Document, r, "document"),
        Some(Value::Location(l)) => Location::new(l.latitude, l.longitude, &l.name, &l.address)
            .map(HeaderValue::Location)
            .map_err(|e| e.within("location")),
        None => Err(Rejection::new(
            crate::domain::Reason::InvalidContent,
            "is required: set image, video, document or location (or leave header unset)",
        )),
    }
}

fn template_header_to_pb(value: &HeaderValue) -> pb::TemplateHeader {
    use pb::template_header::Value;
    pb::TemplateHeader {
        value: Some(match value {
            HeaderValue::Media {
                kind,
                source,
                filename,
            } => {
                let reference = reference_to_pb(source, filename);
                match kind {
                    HeaderMedia::Image => Value::Image(reference),
                    HeaderMedia::Video => Value::Video(reference),
                    // A media value is never of kind Location.
                    HeaderMedia::Document | HeaderMedia::Location => Value::Document(reference),
                }
            }
            HeaderValue::Location(l) => Value::Location(location_to_pb(l)),
        }),
    }
}

const HEADER_FORMATS: [(pb::HeaderFormat, HeaderMedia); 4] = [
    (pb::HeaderFormat::Image, HeaderMedia::Image),
    (pb::HeaderFormat::Video, HeaderMedia::Video),
    (pb::HeaderFormat::Document, HeaderMedia::Document),
    (pb::HeaderFormat::Location, HeaderMedia::Location),
];

/// A template's media header kind; `None` for text or no header.
pub fn header_format(value: i32) -> Result<Option<HeaderMedia>, Rejection> {
    let format: pb::HeaderFormat = super::convert::known(value, "header_format")?;
    Ok(HEADER_FORMATS
        .iter()
        .find(|(p, _)| *p == format)
        .map(|(_, h)| *h))
}

pub fn header_format_to_pb(content: &TemplateContent) -> pb::HeaderFormat {
    match content.header_media {
        Some(media) => HEADER_FORMATS
            .iter()
            .find(|(_, h)| *h == media)
            .map_or(pb::HeaderFormat::Unspecified, |(p, _)| *p),
        None if content.header_text.is_some() => pb::HeaderFormat::Text,
        None => pb::HeaderFormat::Unspecified,
    }
}

fn location_to_pb(l: &Location) -> pb::LocationContent {
    pb::LocationContent {
        latitude: l.latitude.get(),
        longitude: l.longitude.get(),
        name: l.name.clone().unwrap_or_default(),
        address: l.address.clone().unwrap_or_default(),
    }
}

fn parameters(component: &ComponentParameters) -> Option<pb::TemplateParameters> {
    (!component.positional.is_empty() || !component.named.is_empty()).then(|| {
        pb::TemplateParameters {
            positional: component.positional.clone(),
            named: component.named.clone().into_iter().collect(),
        }
    })
}

/// What a send carried, as answers report it.
pub fn message_content(content: &Content) -> pb::MessageContent {
    use pb::message_content::Content as C;
    let content = match content {
        Content::Text(body) => C::Text(pb::TextContent { body: body.clone() }),
        Content::Template { id, parameters: p } => C::Template(pb::TemplateContent {
            name: id.name().to_owned(),
            language: id.language().to_owned(),
            body_parameters: parameters(&p.body),
            header_parameters: parameters(&p.header),
            button_parameters: p
                .buttons
                .iter()
                .map(|(index, value)| pb::ButtonParameter {
                    button_index: *index,
                    value: value.clone(),
                })
                .collect(),
            header: p.header_media.as_ref().map(template_header_to_pb),
            quick_reply_payloads: p
                .quick_replies
                .iter()
                .map(|(index, payload)| pb::QuickReplyPayload {
                    button_index: *index,
                    payload: payload.clone(),
                })
                .collect(),
        }),
        Content::Media(m) => C::Media(pb::MediaContent {
            r#type: MEDIA_TYPES
                .iter()
                .find(|(_, kind)| *kind == m.kind)
                .map_or(pb::MediaType::Unspecified, |(p, _)| *p) as i32,
            source: Some(match &m.source {
                MediaSource::Link(link) => pb::media_content::Source::Link(link.clone()),
                MediaSource::Id(id) => pb::media_content::Source::MediaId(id.clone()),
            }),
            caption: m.caption.clone().unwrap_or_default(),
            filename: m.filename.clone().unwrap_or_default(),
        }),
        Content::Interactive(i) => C::Interactive(interactive_to_pb(i)),
        Content::Location(l) => C::Location(location_to_pb(l)),
        Content::Reaction(r) => C::Reaction(pb::ReactionContent {
            message_id: r.message_id.clone(),
            emoji: r.emoji.clone(),
        }),
    };
    pb::MessageContent {
        content: Some(content),
    }
}

fn interactive_to_pb(i: &Interactive) -> pb::InteractiveContent {
    use pb::interactive_content::Action as A;
    pb::InteractiveContent {
        header: i.header.as_ref().map(|header| {
            use pb::interactive_content::Header;
            match header {
                InteractiveHeader::Text(text) => Header::HeaderText(text.clone()),
                InteractiveHeader::Media {
                    kind,
                    source,
                    filename,
                } => {
                    let reference = reference_to_pb(source, filename);
                    match kind {
                        MediaKind::Image => Header::HeaderImage(reference),
                        MediaKind::Video => Header::HeaderVideo(reference),
                        // Audio and stickers are refused as headers.
                        _ => Header::HeaderDocument(reference),
                    }
                }
            }
        }),
        body: i.body.clone(),
        footer: i.footer.clone().unwrap_or_default(),
        action: Some(match &i.action {
            Action::Buttons(buttons) => A::Buttons(pb::ReplyButtons {
                buttons: buttons
                    .iter()
                    .map(|b| pb::ReplyButton {
                        id: b.id.clone(),
                        title: b.title.clone(),
                    })
                    .collect(),
            }),
            Action::List { button, sections } => A::List(pb::ListAction {
                button: button.clone(),
                sections: sections
                    .iter()
                    .map(|s| pb::ListSection {
                        title: s.title.clone().unwrap_or_default(),
                        rows: s
                            .rows
                            .iter()
                            .map(|r| pb::ListRow {
                                id: r.id.clone(),
                                title: r.title.clone(),
                                description: r.description.clone().unwrap_or_default(),
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            Action::CallToActionUrl { display_text, url } => A::CtaUrl(pb::CallToActionUrl {
                display_text: display_text.clone(),
                url: url.clone(),
            }),
        }),
    }
}
