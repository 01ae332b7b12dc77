//! Protobuf ⇄ domain. Requests are parsed here, once, into trusted domain
//! values; every refusal names the request field it came from.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::account::AccountId;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::placeholder::ParameterFormat;
use crate::domain::template::{ButtonDraft, ComponentParameters, TemplateDraft};
use crate::domain::{
    Button, Category, Content, EntryPoint, InboundKind, InboundOutcome, MessageKind, MessageStatus,
    OutboxMessage, Pair, PhoneNumber, PricingCategory, Reason, Rejection, SendParameters, Status,
    Template, TemplateId, WindowState, WindowView,
};
use crate::pb;
use crate::store::MessageState;

/// The server clock, at the precision wagate keeps (`domain::time`).
pub fn now() -> DateTime<Utc> {
    crate::domain::time::stored(Utc::now())
}

pub fn pair(business: &str, customer: &str) -> Result<Pair, Rejection> {
    Ok(Pair {
        business: PhoneNumber::parse(business).map_err(|e| e.at("business_number"))?,
        customer: PhoneNumber::parse(customer).map_err(|e| e.at("customer_number"))?,
    })
}

/// google.protobuf.Timestamp's range, in seconds: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z. A time outside it is not a timestamp, whatever
/// chrono could represent.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

pub fn time(timestamp: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, Rejection> {
    if !TIMESTAMP_SECONDS.contains(&timestamp.seconds) {
        return Err(Rejection::new(
            Reason::InvalidTimestamp,
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z \
             (google.protobuf.Timestamp's range)",
        )
        .at(field));
    }
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .filter(|_| (0..1_000_000_000).contains(&timestamp.nanos))
        .map(crate::domain::time::stored)
        .ok_or_else(|| {
            Rejection::new(Reason::InvalidTimestamp, "is not a valid timestamp").at(field)
        })
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn duration(span: TimeDelta) -> prost_types::Duration {
    prost_types::Duration {
        seconds: span.num_seconds(),
        nanos: span.subsec_nanos(),
    }
}

/// Reads an enum field, refusing numbers this API does not define.
pub fn known<E: TryFrom<i32>>(value: i32, field: &str) -> Result<E, Rejection> {
    E::try_from(value).map_err(|_| {
        Rejection::new(
            Reason::InvalidEnumValue,
            format!("{value} is not a defined value"),
        )
        .at(field)
    })
}

pub fn inbound_kind(value: i32) -> Result<InboundKind, Rejection> {
    Ok(match known(value, "kind")? {
        pb::InboundKind::Unspecified | pb::InboundKind::Message => InboundKind::Message,
        pb::InboundKind::VoiceCall => InboundKind::VoiceCall,
    })
}

pub fn entry_point(value: i32) -> Result<EntryPoint, Rejection> {
    Ok(match known(value, "entry_point")? {
        pb::EntryPoint::Unspecified => EntryPoint::Organic,
        pb::EntryPoint::ClickToWhatsappAd => EntryPoint::ClickToWhatsAppAd,
        pb::EntryPoint::FacebookPageCta => EntryPoint::FacebookPageCta,
    })
}

pub fn inbound_outcome(outcome: InboundOutcome) -> pb::InboundOutcome {
    match outcome {
        InboundOutcome::Opened => pb::InboundOutcome::Opened,
        InboundOutcome::Extended => pb::InboundOutcome::Extended,
        InboundOutcome::Unchanged => pb::InboundOutcome::Unchanged,
        InboundOutcome::TooOld => pb::InboundOutcome::TooOld,
        InboundOutcome::Duplicate => pb::InboundOutcome::Duplicate,
    }
}

pub fn window(pair: &Pair, view: &WindowView) -> pb::Window {
    pb::Window {
        business_number: pair.business.as_str().to_owned(),
        customer_number: pair.customer.as_str().to_owned(),
        state: match view.state {
            WindowState::Open => pb::WindowState::Open,
            WindowState::Closed => pb::WindowState::Closed,
            WindowState::NeverOpened => pb::WindowState::NeverOpened,
        } as i32,
        last_inbound_at: view.last_inbound_at.map(timestamp),
        expires_at: view.expires_at.map(timestamp),
        remaining: Some(duration(view.remaining)),
        free_until: view.free_until.map(timestamp),
    }
}

pub fn content(content: Option<pb::send_message_request::Content>) -> Result<Content, Rejection> {
    use pb::send_message_request::Content as C;
    match content {
        None => Err(Rejection::new(
            Reason::MissingContent,
            "is required: set text, template, media, interactive, location or reaction",
        )
        .at("content")),
        Some(C::Text(text)) => Content::text(&text.body),
        Some(C::Media(media)) => super::rich::media(media),
        Some(C::Interactive(interactive)) => super::rich::interactive(interactive),
        Some(C::Location(location)) => super::rich::location(location),
        Some(C::Reaction(reaction)) => super::rich::reaction(reaction),
        Some(C::Template(template)) => {
            let id = TemplateId::parse(&template.name, &template.language)
                .map_err(|e| e.within("template"))?;
            let mut buttons = BTreeMap::new();
            for parameter in template.button_parameters {
                if buttons
                    .insert(parameter.button_index, parameter.value)
                    .is_some()
                {
                    return Err(Rejection::new(
                        Reason::TemplateParameterMismatch,
                        format!(
                            "button index {} is given more than once",
                            parameter.button_index
                        ),
                    )
                    .at("template.button_parameters"));
                }
            }
            let mut quick_replies = BTreeMap::new();
            for payload in template.quick_reply_payloads {
                if quick_replies
                    .insert(payload.button_index, payload.payload)
                    .is_some()
                {
                    return Err(Rejection::new(
                        Reason::TemplateParameterMismatch,
                        format!(
                            "button index {} is given more than once",
                            payload.button_index
                        ),
                    )
                    .at("template.quick_reply_payloads"));
                }
            }
            let header_media = template
                .header
                .map(super::rich::template_header)
                .transpose()
                .map_err(|e| e.within("template.header"))?;
            Ok(Content::Template {
                id,
                parameters: SendParameters {
                    body: component(template.body_parameters),
                    header: component(template.header_parameters),
                    header_media,
                    buttons,
                    quick_replies,
                },
            })
        }
    }
}

fn component(parameters: Option<pb::TemplateParameters>) -> ComponentParameters {
    let parameters = parameters.unwrap_or_default();
    ComponentParameters {
        positional: parameters.positional,
        named: parameters.named.into_iter().collect(),
    }
}

pub fn send_response(message: &OutboxMessage, dry_run: bool) -> pb::SendMessageResponse {
    let accepted = &message.accepted;
    pb::SendMessageResponse {
        message_id: message.message_id.to_string(),
        kind: match accepted.kind {
            MessageKind::FreeForm => pb::MessageKind::FreeForm,
            MessageKind::Template => pb::MessageKind::Template,
        } as i32,
        rendered_text: accepted.rendered_text.clone(),
        template_category: accepted
            .template_category
            .map_or(pb::TemplateCategory::Unspecified, category_to_pb)
            as i32,
        pricing_category: match accepted.pricing.category {
            PricingCategory::Service => pb::PricingCategory::Service,
            PricingCategory::ReferralConversion => pb::PricingCategory::ReferralConversion,
            PricingCategory::Utility => pb::PricingCategory::Utility,
            PricingCategory::Marketing => pb::PricingCategory::Marketing,
            PricingCategory::Authentication => pb::PricingCategory::Authentication,
        } as i32,
        billable: accepted.pricing.billable,
        accepted_at: Some(timestamp(message.accepted_at)),
        status: match message.status {
            MessageStatus::Accepted => pb::MessageStatus::Accepted,
        } as i32,
        dry_run,
        free_until: accepted.free_until.map(timestamp),
        content: Some(super::rich::message_content(&message.request.content)),
    }
}

/// A message id as the API carries it (a UUID string), parsed once here.
pub fn message_id(value: &str, field: &str) -> Result<uuid::Uuid, Rejection> {
    uuid::Uuid::parse_str(value.trim()).map_err(|_| {
        Rejection::new(
            Reason::InvalidMessageId,
            "is not a message id SendMessage returned (a UUID)",
        )
        .at(field)
    })
}

pub fn outbound_message(state: &MessageState) -> pb::OutboundMessage {
    let message = &state.message;
    let delivery = state.delivery.as_ref();
    let status = delivery.map_or(pb::MessageStatus::Accepted, |d| match d.status {
        DeliveryStatus::Accepted => pb::MessageStatus::Accepted,
        DeliveryStatus::Submitted => pb::MessageStatus::Submitted,
        DeliveryStatus::Sent => pb::MessageStatus::Sent,
        DeliveryStatus::Delivered => pb::MessageStatus::Delivered,
        DeliveryStatus::Read => pb::MessageStatus::Read,
        DeliveryStatus::Failed => pb::MessageStatus::Failed,
    });
    let error = delivery.and_then(|d| d.error.as_ref());
    pb::OutboundMessage {
        message_id: message.message_id.to_string(),
        business_number: message.request.pair.business.as_str().to_owned(),
        customer_number: message.request.pair.customer.as_str().to_owned(),
        kind: match message.accepted.kind {
            MessageKind::FreeForm => pb::MessageKind::FreeForm,
            MessageKind::Template => pb::MessageKind::Template,
        } as i32,
        rendered_text: message.accepted.rendered_text.clone(),
        status: status as i32,
        wamid: delivery.and_then(|d| d.wamid.clone()).unwrap_or_default(),
        accepted_at: Some(timestamp(message.accepted_at)),
        updated_at: Some(timestamp(
            delivery.map_or(message.accepted_at, |d| d.updated_at),
        )),
        attempts: delivery.map_or(0, |d| d.attempts),
        next_attempt_at: delivery.and_then(|d| d.next_attempt_at).map(timestamp),
        error_code: error.map_or(0, |e| e.source().1),
        error_title: error.map(|e| e.title.clone()).unwrap_or_default(),
        error_source: error.map_or_else(String::new, |e| e.source().0.as_str().to_owned()),
        idempotency_key: message.request.idempotency_key.as_str().to_owned(),
        content: Some(super::rich::message_content(&message.request.content)),
    }
}

fn category_to_pb(category: Category) -> pb::TemplateCategory {
    match category {
        Category::Marketing => pb::TemplateCategory::Marketing,
        Category::Utility => pb::TemplateCategory::Utility,
        Category::Authentication => pb::TemplateCategory::Authentication,
    }
}

/// `None` for unspecified: "any" in filters, "missing" in templates.
pub fn category(value: i32, field: &str) -> Result<Option<Category>, Rejection> {
    Ok(match known(value, field)? {
        pb::TemplateCategory::Unspecified => None,
        pb::TemplateCategory::Marketing => Some(Category::Marketing),
        pb::TemplateCategory::Utility => Some(Category::Utility),
        pb::TemplateCategory::Authentication => Some(Category::Authentication),
    })
}

const STATUSES: [(pb::TemplateStatus, Status); 10] = [
    (pb::TemplateStatus::Pending, Status::Pending),
    (pb::TemplateStatus::Approved, Status::Approved),
    (pb::TemplateStatus::Rejected, Status::Rejected),
    (pb::TemplateStatus::Paused, Status::Paused),
    (pb::TemplateStatus::Disabled, Status::Disabled),
    (pb::TemplateStatus::InAppeal, Status::InAppeal),
    (pb::TemplateStatus::PendingDeletion, Status::PendingDeletion),
    (pb::TemplateStatus::LimitExceeded, Status::LimitExceeded),
    (pb::TemplateStatus::Archived, Status::Archived),
    (pb::TemplateStatus::Deleted, Status::Deleted),
];

/// `None` for unspecified.
pub fn status(value: i32, field: &str) -> Result<Option<Status>, Rejection> {
    let status: pb::TemplateStatus = known(value, field)?;
    Ok(STATUSES.iter().find(|(p, _)| *p == status).map(|(_, s)| *s))
}

fn status_to_pb(status: Status) -> pb::TemplateStatus {
    STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or(pb::TemplateStatus::Unspecified, |(p, _)| *p)
}

/// A request's `waba_id` (empty: the default account).
pub fn account_id(waba_id: &str) -> Result<AccountId, Rejection> {
    AccountId::parse(waba_id).map_err(|e| e.at("waba_id"))
}

/// A template named by a request's (waba_id, name, language).
pub fn template_id(waba_id: &str, name: &str, language: &str) -> Result<TemplateId, Rejection> {
    let account = account_id(waba_id)?;
    Ok(TemplateId::parse(name, language)?.in_account(account))
}

/// The submitted template's identity and content, not yet validated.
pub fn template_draft(template: pb::Template) -> Result<(TemplateId, TemplateDraft), Rejection> {
    let id = template_id(&template.waba_id, &template.name, &template.language)?;
    let category = category(template.category, "category")?;
    let buttons = template
        .buttons
        .into_iter()
        .enumerate()
        .map(|(index, button)| {
            use pb::template_button::Kind;
            match button.kind {
                Some(Kind::QuickReply(b)) => Ok(ButtonDraft::QuickReply { text: b.text }),
                Some(Kind::Url(b)) => Ok(ButtonDraft::Url {
                    text: b.text,
                    url: b.url,
                }),
                Some(Kind::PhoneNumber(b)) => Ok(ButtonDraft::PhoneNumber {
                    text: b.text,
                    phone_number: b.phone_number,
                }),
                Some(Kind::CopyCode(b)) => Ok(ButtonDraft::CopyCode { text: b.text }),
                None => Err(Rejection::new(
                    Reason::InvalidTemplate,
                    "is required: quick_reply, url, phone_number or copy_code",
                )
                .at(format!("buttons[{index}].kind"))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((
        id,
        TemplateDraft {
            category,
            body: template.body,
            header_text: template.header_text,
            header_media: super::rich::header_format(template.header_format)?,
            footer_text: template.footer_text,
            buttons,
        },
    ))
}

pub fn template(template: &Template) -> pb::Template {
    use pb::template_button::Kind;
    let content = &template.content;
    pb::Template {
        name: template.id.name().to_owned(),
        language: template.id.language().to_owned(),
        waba_id: template.id.account().as_str().to_owned(),
        whatsapp_id: template.whatsapp_id.clone().unwrap_or_default(),
        category: category_to_pb(content.category) as i32,
        status: status_to_pb(template.status) as i32,
        status_reason: template.status_reason.clone(),
        body: content.body.clone(),
        header_text: content.header_text.clone().unwrap_or_default(),
        footer_text: content.footer_text.clone().unwrap_or_default(),
        buttons: content
            .buttons
            .iter()
            .map(|button| pb::TemplateButton {
                kind: Some(match button {
                    Button::QuickReply { text } => {
                        Kind::QuickReply(pb::QuickReplyButton { text: text.clone() })
                    }
                    Button::Url { text, url } => Kind::Url(pb::UrlButton {
                        text: text.clone(),
                        url: url.clone(),
                    }),
                    Button::PhoneNumber { text, phone_number } => {
                        Kind::PhoneNumber(pb::PhoneNumberButton {
                            text: text.clone(),
                            phone_number: phone_number.as_str().to_owned(),
                        })
                    }
                    Button::CopyCode { text } => {
                        Kind::CopyCode(pb::CopyCodeButton { text: text.clone() })
                    }
                }),
            })
            .collect(),
        parameter_format: match template.parameter_format() {
            ParameterFormat::None => pb::ParameterFormat::None,
            ParameterFormat::Positional => pb::ParameterFormat::Positional,
            ParameterFormat::Named => pb::ParameterFormat::Named,
        } as i32,
        create_time: Some(timestamp(template.created_at)),
        update_time: Some(timestamp(template.updated_at)),
        header_format: super::rich::header_format_to_pb(content) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_checked() {
        let ok = prost_types::Timestamp {
            seconds: 1_764_000_000,
            nanos: 5_000,
        };
        assert_eq!(timestamp(time(&ok, "received_at").unwrap()), ok);
        let finer = prost_types::Timestamp {
            seconds: 1_764_000_000,
            nanos: 5_999,
        };
        let kept = timestamp(time(&finer, "received_at").unwrap());
        assert_eq!(kept, ok, "kept to the microsecond");
        for edge in [-62_135_596_800, 253_402_300_799] {
            let at = prost_types::Timestamp {
                seconds: edge,
                nanos: 0,
            };
            assert_eq!(timestamp(time(&at, "received_at").unwrap()), at);
        }
        for bad in [
            prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            },
            prost_types::Timestamp {
                seconds: 0,
                nanos: 1_000_000_000,
            },
            prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            },
            // Before year 1: chrono has it, protobuf's Timestamp does not.
            prost_types::Timestamp {
                seconds: -62_135_596_801,
                nanos: 0,
            },
            prost_types::Timestamp {
                seconds: 253_402_300_800,
                nanos: 0,
            },
        ] {
            let err = time(&bad, "received_at").unwrap_err();
            assert_eq!(
                (err.reason, err.field.as_deref()),
                (Reason::InvalidTimestamp, Some("received_at"))
            );
        }
    }

    #[test]
    fn unknown_enum_numbers_are_refused() {
        assert_eq!(inbound_kind(0).unwrap(), InboundKind::Message);
        assert_eq!(inbound_kind(2).unwrap(), InboundKind::VoiceCall);
        assert_eq!(
            inbound_kind(77).unwrap_err().reason,
            Reason::InvalidEnumValue
        );
        assert_eq!(
            entry_point(-1).unwrap_err().field.as_deref(),
            Some("entry_point")
        );
        assert_eq!(status(0, "status").unwrap(), None);
        for (p, s) in STATUSES {
            assert_eq!(status(p as i32, "status").unwrap(), Some(s));
            assert_eq!(status_to_pb(s), p);
        }
    }

    #[test]
    fn missing_content_and_duplicate_button_indexes() {
        assert_eq!(content(None).unwrap_err().reason, Reason::MissingContent);
        let template = pb::TemplateContent {
            name: "t".into(),
            language: "en".into(),
            button_parameters: vec![
                pb::ButtonParameter {
                    button_index: 0,
                    value: "a".into(),
                },
                pb::ButtonParameter {
                    button_index: 0,
                    value: "b".into(),
                },
            ],
            ..Default::default()
        };
        let err = content(Some(pb::send_message_request::Content::Template(template))).unwrap_err();
        assert_eq!(err.reason, Reason::TemplateParameterMismatch);
    }
}
