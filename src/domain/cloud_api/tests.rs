use std::collections::BTreeMap;

use chrono::TimeZone;

use super::*;
use crate::domain::TemplateId;
use crate::domain::template::SendParameters;

fn message(content: Content) -> OutboxMessage {
    crate::domain::send::test_message(content)
}

#[test]
fn quick_reply_payloads_and_codes_are_button_parameters_in_button_order() {
    let body = message_body(&message(Content::Template {
        id: crate::domain::TemplateId::parse("otp", "en_US").unwrap(),
        parameters: crate::domain::SendParameters {
            buttons: [(1, "482913".to_owned())].into_iter().collect(),
            quick_replies: [(0, "not-me".to_owned())].into_iter().collect(),
            ..Default::default()
        },
    }));
    assert_eq!(
        body["template"]["components"],
        json!([
            { "type": "button", "sub_type": "quick_reply", "index": "0",
              "parameters": [{ "type": "payload", "payload": "not-me" }] },
            { "type": "button", "sub_type": "url", "index": "1",
              "parameters": [{ "type": "text", "text": "482913" }] }
        ])
    );
}

#[test]
fn template_media_and_location_headers_are_header_parameters() {
    let send = |header_media| {
        message_body(&message(Content::Template {
            id: crate::domain::TemplateId::parse("invoice", "en_US").unwrap(),
            parameters: crate::domain::SendParameters {
                header_media: Some(header_media),
                ..Default::default()
            },
        }))["template"]["components"][0]
            .clone()
    };
    let document = send(crate::domain::template::HeaderValue::Media {
        kind: crate::domain::template::HeaderMedia::Document,
        source: crate::domain::rich::MediaSource::Id("42".into()),
        filename: Some("invoice.pdf".into()),
    });
    assert_eq!(
        document,
        json!({ "type": "header", "parameters": [
            { "type": "document", "document": { "id": "42", "filename": "invoice.pdf" } }
        ] })
    );
    let place = send(crate::domain::template::HeaderValue::Location(
        crate::domain::rich::Location::new(-33.9, 18.4, "Gardens", "").unwrap(),
    ));
    assert_eq!(
        place,
        json!({ "type": "header", "parameters": [
            { "type": "location", "location": { "latitude": -33.9, "longitude": 18.4, "name": "Gardens" } }
        ] })
    );
}

#[test]
fn text_body() {
    let body = message_body(&message(Content::Text("Hi there".into())));
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "27821234567",
            "type": "text",
            "text": { "preview_url": false, "body": "Hi there" }
        })
    );
}

#[test]
fn template_body_with_header_body_and_url_button() {
    let parameters = SendParameters {
        header: ComponentParameters {
            positional: vec!["A-1001".into()],
            ..Default::default()
        },
        body: ComponentParameters {
            named: BTreeMap::from([("first_name".into(), "Ann".into())]),
            ..Default::default()
        },
        buttons: BTreeMap::from([(0, "track/A-1001".into())]),
        header_media: None,
        quick_replies: BTreeMap::new(),
    };
    let body = message_body(&message(Content::Template {
        id: TemplateId::parse("order_update", "en_US").unwrap(),
        parameters,
    }));
    assert_eq!(
        body["template"],
        json!({
            "name": "order_update",
            "language": { "code": "en_US" },
            "components": [
                { "type": "header", "parameters": [{ "type": "text", "text": "A-1001" }] },
                { "type": "body", "parameters": [
                    { "type": "text", "parameter_name": "first_name", "text": "Ann" }
                ] },
                { "type": "button", "sub_type": "url", "index": "0",
                  "parameters": [{ "type": "text", "text": "track/A-1001" }] }
            ]
        })
    );
    assert_eq!(body["type"], "template");
}

#[test]
fn template_without_parameters_has_no_components() {
    let body = message_body(&message(Content::Template {
        id: TemplateId::parse("hello_world", "en_US").unwrap(),
        parameters: SendParameters::default(),
    }));
    assert!(body["template"].get("components").is_none());
}

#[test]
fn webhook_messages_statuses_and_template_updates() {
    let notification = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [
                { "field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": { "display_phone_number": "15550001111", "phone_number_id": "106540352242922" },
                    "contacts": [{ "profile": { "name": "Ann" }, "wa_id": "27821234567" }],
                    "messages": [
                        { "from": "27821234567", "id": "wamid.in1", "timestamp": "1764061200",
                          "type": "text", "text": { "body": "hi" } },
                        { "from": "27821234568", "id": "wamid.in2", "timestamp": "1764061201",
                          "type": "text", "text": { "body": "from the ad" },
                          "referral": { "source_url": "https://fb.me/x", "source_id": "120", "source_type": "ad",
                                        "ctwa_clid": "ARAk" } },
                        { "from": "27821234569", "id": "wamid.in3", "timestamp": "1764061202", "type": "system",
                          "system": { "body": "changed number" } }
                    ],
                    "statuses": [
                        { "id": "wamid.out1", "status": "delivered", "timestamp": "1764061203", "recipient_id": "27821234567" },
                        { "id": "wamid.out2", "status": "failed", "timestamp": "1764061204", "recipient_id": "27821234567",
                          "errors": [{ "code": 131026, "title": "Message undeliverable" }] },
                        { "id": "wamid.out3", "status": "deleted", "timestamp": "1764061205" }
                    ]
                }},
                { "field": "message_template_status_update", "value": {
                    "event": "PAUSED", "message_template_id": 594425479261596_i64,
                    "message_template_name": "order_update", "message_template_language": "en_US",
                    "reason": "Low quality" } },
                { "field": "message_template_status_update", "value": {
                    "event": "APPROVED", "message_template_name": "welcome",
                    "message_template_language": "pt_BR", "reason": "NONE" } },
                { "field": "account_update", "value": { "event": "VERIFIED_ACCOUNT" } }
            ]
        }]
    });
    let at = |s| Utc.timestamp_opt(s, 0).unwrap();
    let events = webhook_events(&notification);
    assert_eq!(
        events,
        vec![
            WebhookEvent::Inbound {
                phone_number_id: "106540352242922".into(),
                display_phone_number: "15550001111".into(),
                customer: "27821234567".into(),
                wamid: "wamid.in1".into(),
                received_at: at(1764061200),
                entry_point: EntryPoint::Organic,
                text: Some("hi".into()),
            },
            WebhookEvent::Inbound {
                phone_number_id: "106540352242922".into(),
                display_phone_number: "15550001111".into(),
                customer: "27821234568".into(),
                wamid: "wamid.in2".into(),
                received_at: at(1764061201),
                entry_point: EntryPoint::ClickToWhatsAppAd,
                text: Some("from the ad".into()),
            },
            WebhookEvent::Unhandled {
                kind: "message:system".into()
            },
            WebhookEvent::Status {
                wamid: "wamid.out1".into(),
                status: DeliveryStatus::Delivered,
                error: None,
            },
            WebhookEvent::Status {
                wamid: "wamid.out2".into(),
                status: DeliveryStatus::Failed,
                error: Some(DeliveryError {
                    code: 131026,
                    title: "Message undeliverable".into()
                }),
            },
            WebhookEvent::Unhandled {
                kind: "status:deleted".into()
            },
            WebhookEvent::TemplateStatus {
                waba_id: "102290129340398".into(),
                name: "order_update".into(),
                language: "en_US".into(),
                status: Status::Paused,
                reason: "Low quality".into(),
            },
            WebhookEvent::TemplateStatus {
                waba_id: "102290129340398".into(),
                name: "welcome".into(),
                language: "pt_BR".into(),
                status: Status::Approved,
                reason: String::new(),
            },
            WebhookEvent::Unhandled {
                kind: "field:account_update".into()
            },
        ]
    );
}

#[test]
fn malformed_notifications_are_unhandled_not_errors() {
    assert_eq!(
        webhook_events(&json!({ "object": "page" })),
        vec![WebhookEvent::Unhandled {
            kind: "malformed".into()
        }]
    );
    let missing_id = json!({ "entry": [{ "changes": [{ "field": "messages", "value": {
        "metadata": { "display_phone_number": "15550001111", "phone_number_id": "1" },
        "messages": [{ "from": "27821234567", "timestamp": "1764061200", "type": "text" }]
    }}]}]});
    assert_eq!(
        webhook_events(&missing_id),
        vec![WebhookEvent::Unhandled {
            kind: "message:malformed".into()
        }]
    );
    let flagged = json!({ "entry": [{ "changes": [{ "field": "message_template_status_update",
        "value": { "event": "FLAGGED", "message_template_name": "x", "message_template_language": "en" } }]}]});
    assert_eq!(
        webhook_events(&flagged),
        vec![WebhookEvent::Unhandled {
            kind: "template:FLAGGED".into()
        }]
    );
}
