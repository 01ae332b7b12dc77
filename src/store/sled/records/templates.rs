//! Templates: the current record, and the older layouts it still reads.

use serde::{Deserialize, Serialize};

use super::{DecodeError, code_error, decode, micros, phone, time};
use crate::domain::template::HeaderMedia;
use crate::domain::{Button, Category, Status, Template, TemplateContent, TemplateId};

#[derive(Serialize, Deserialize)]
enum ButtonRecord {
    QuickReply {
        text: String,
    },
    Url {
        text: String,
        url: String,
    },
    PhoneNumber {
        text: String,
        phone_number: String,
    },
    /// Last, so that older records keep their variant indexes.
    CopyCode {
        text: String,
    },
}

#[derive(Serialize, Deserialize)]
pub struct TemplateRecord {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
    /// Added with media headers: records stored before end one field
    /// earlier ([`TemplateRecordV1`]).
    header_media: Option<String>,
    /// Added with template sync: records stored before end one field
    /// earlier ([`TemplateRecordV2`]).
    whatsapp_id: Option<String>,
}

/// A template as stored before template sync.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TemplateRecordV2 {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
    header_media: Option<String>,
}

/// A template as stored before media headers.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TemplateRecordV1 {
    name: String,
    language: String,
    category: u8,
    status: u8,
    status_reason: String,
    body: String,
    header_text: Option<String>,
    footer_text: Option<String>,
    buttons: Vec<ButtonRecord>,
    created_at: i64,
    updated_at: i64,
}

/// Decodes a template of any layout. An older record is one field short of
/// the next, so it fails the newer layouts (and a newer one, tried first,
/// never reads as an older).
pub fn decode_template(bytes: &[u8]) -> Result<TemplateRecord, DecodeError> {
    decode::<TemplateRecord>(bytes).or_else(|error| {
        if let Ok(v2) = decode::<TemplateRecordV2>(bytes) {
            return Ok(TemplateRecord {
                name: v2.name,
                language: v2.language,
                category: v2.category,
                status: v2.status,
                status_reason: v2.status_reason,
                body: v2.body,
                header_text: v2.header_text,
                footer_text: v2.footer_text,
                buttons: v2.buttons,
                created_at: v2.created_at,
                updated_at: v2.updated_at,
                header_media: v2.header_media,
                whatsapp_id: None,
            });
        }
        let Ok(v1) = decode::<TemplateRecordV1>(bytes) else {
            return Err(error);
        };
        Ok(TemplateRecord {
            name: v1.name,
            language: v1.language,
            category: v1.category,
            status: v1.status,
            status_reason: v1.status_reason,
            body: v1.body,
            header_text: v1.header_text,
            footer_text: v1.footer_text,
            buttons: v1.buttons,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            header_media: None,
            whatsapp_id: None,
        })
    })
}

pub(super) fn category_code(category: Category) -> u8 {
    match category {
        Category::Marketing => 1,
        Category::Utility => 2,
        Category::Authentication => 3,
    }
}

pub(super) fn category(code: u8) -> Result<Category, DecodeError> {
    Ok(match code {
        1 => Category::Marketing,
        2 => Category::Utility,
        3 => Category::Authentication,
        _ => return Err(code_error("category", code)),
    })
}

const STATUS_CODES: [(Status, u8); 10] = [
    (Status::Pending, 1),
    (Status::Approved, 2),
    (Status::Rejected, 3),
    (Status::Paused, 4),
    (Status::Disabled, 5),
    (Status::InAppeal, 6),
    (Status::PendingDeletion, 7),
    (Status::LimitExceeded, 8),
    (Status::Archived, 9),
    (Status::Deleted, 10),
];

fn status_code(status: Status) -> u8 {
    STATUS_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, c)| *c)
}

fn status(code: u8) -> Result<Status, DecodeError> {
    STATUS_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(s, _)| *s)
        .ok_or_else(|| code_error("status", code))
}

impl From<&Template> for TemplateRecord {
    fn from(template: &Template) -> Self {
        let content = &template.content;
        TemplateRecord {
            name: template.id.name().to_owned(),
            language: template.id.language().to_owned(),
            category: category_code(content.category),
            status: status_code(template.status),
            status_reason: template.status_reason.clone(),
            body: content.body.clone(),
            header_text: content.header_text.clone(),
            footer_text: content.footer_text.clone(),
            buttons: content
                .buttons
                .iter()
                .map(|button| match button {
                    Button::QuickReply { text } => ButtonRecord::QuickReply { text: text.clone() },
                    Button::Url { text, url } => ButtonRecord::Url {
                        text: text.clone(),
                        url: url.clone(),
                    },
                    Button::PhoneNumber { text, phone_number } => ButtonRecord::PhoneNumber {
                        text: text.clone(),
                        phone_number: phone_number.as_str().to_owned(),
                    },
                    Button::CopyCode { text } => ButtonRecord::CopyCode { text: text.clone() },
                })
                .collect(),
            created_at: micros(template.created_at),
            updated_at: micros(template.updated_at),
            header_media: content.header_media.map(|h| h.as_str().to_owned()),
            whatsapp_id: template.whatsapp_id.clone(),
        }
    }
}

impl TryFrom<TemplateRecord> for Template {
    type Error = DecodeError;
    fn try_from(record: TemplateRecord) -> Result<Self, DecodeError> {
        let buttons = record
            .buttons
            .into_iter()
            .map(|button| {
                Ok(match button {
                    ButtonRecord::QuickReply { text } => Button::QuickReply { text },
                    ButtonRecord::Url { text, url } => Button::Url { text, url },
                    ButtonRecord::PhoneNumber { text, phone_number } => Button::PhoneNumber {
                        text,
                        phone_number: phone(&phone_number)?,
                    },
                    ButtonRecord::CopyCode { text } => Button::CopyCode { text },
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Template {
            id: TemplateId::parse(&record.name, &record.language)
                .map_err(|e| DecodeError::Invalid(e.description()))?,
            content: TemplateContent {
                category: category(record.category)?,
                body: record.body,
                header_text: record.header_text,
                header_media: record
                    .header_media
                    .map(|name| {
                        HeaderMedia::parse(&name)
                            .ok_or_else(|| DecodeError::Invalid(format!("unknown header {name:?}")))
                    })
                    .transpose()?,
                footer_text: record.footer_text,
                buttons,
            },
            status: status(record.status)?,
            status_reason: record.status_reason,
            created_at: time(record.created_at)?,
            updated_at: time(record.updated_at)?,
            whatsapp_id: record.whatsapp_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::records::encode;

    #[test]
    fn templates_stored_before_media_headers_still_decode() {
        let old = TemplateRecordV1 {
            name: "order_update".into(),
            language: "en_US".into(),
            category: 2,
            status: 1,
            status_reason: String::new(),
            body: "Hi {{1}}".into(),
            header_text: Some("Order".into()),
            footer_text: None,
            buttons: vec![ButtonRecord::QuickReply {
                text: "Stop".into(),
            }],
            created_at: 1,
            updated_at: 2,
        };
        let template = Template::try_from(decode_template(&encode(&old)).unwrap()).unwrap();
        assert_eq!(template.content.header_text.as_deref(), Some("Order"));
        assert_eq!(template.content.header_media, None);
        assert_eq!(template.content.buttons.len(), 1);

        let with_media = Template {
            content: TemplateContent {
                header_text: None,
                header_media: Some(HeaderMedia::Document),
                ..template.content.clone()
            },
            ..template
        };
        let bytes = encode(&TemplateRecord::from(&with_media));
        let back = Template::try_from(decode_template(&bytes).unwrap()).unwrap();
        assert_eq!(back, with_media);

        // Stored before template sync: media header, no WhatsApp id.
        let v2 = TemplateRecordV2 {
            name: "order_update".into(),
            language: "en_US".into(),
            category: 2,
            status: 1,
            status_reason: String::new(),
            body: "Hi {{1}}".into(),
            header_text: None,
            footer_text: None,
            buttons: vec![],
            created_at: 1,
            updated_at: 2,
            header_media: Some("document".into()),
        };
        let read = Template::try_from(decode_template(&encode(&v2)).unwrap()).unwrap();
        assert_eq!(read.content.header_media, Some(HeaderMedia::Document));
        assert_eq!(read.whatsapp_id, None);
        let synced = Template {
            whatsapp_id: Some("594425479261596".into()),
            ..with_media
        };
        let bytes = encode(&TemplateRecord::from(&synced));
        assert_eq!(
            Template::try_from(decode_template(&bytes).unwrap()).unwrap(),
            synced
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for (s, code) in STATUS_CODES {
            assert_eq!(status(status_code(s)).unwrap(), s);
            assert_eq!(status_code(s), code);
        }
        assert!(status(0).is_err());
    }
}
