use std::collections::BTreeMap;

use super::*;
use crate::domain::TemplateId;
use crate::domain::delivery::PROVIDER_CODES;
use crate::domain::rich::{Media, MediaKind, MediaSource};
use crate::domain::send::test_message;
use crate::domain::template::SendParameters;

fn template(parameters: SendParameters) -> Content {
    Content::Template {
        id: TemplateId::parse("order_update", "en_US").unwrap(),
        parameters,
    }
}

fn positional(values: &[&str]) -> ComponentParameters {
    ComponentParameters {
        positional: values.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn integration_ids_and_secrets_are_checked() {
    assert!(IntegrationId::parse("a1b2c3d4-e5f6_78").is_ok());
    for bad in ["", "has space", "slash/", &"x".repeat(65)] {
        let refused = IntegrationId::parse(bad).unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidAccount, "{bad:?}");
    }
    let id = IntegrationId::parse("abc").unwrap();
    let key = Credentials::env_var("KEY").unwrap();
    let refused = Integration::new(id.clone(), key.clone(), Credentials::None).unwrap_err();
    assert_eq!(refused.field.as_deref(), Some("clickatell.callback_token"));
    let refused = Integration::new(id, Credentials::None, key).unwrap_err();
    assert_eq!(refused.field.as_deref(), Some("clickatell.api_key"));
}

#[test]
fn text_goes_as_content_on_the_whatsapp_channel() {
    let message = test_message(Content::text("Your order shipped").unwrap());
    assert_eq!(
        message_body(&message),
        json!({ "messages": [{
            "channel": "whatsapp",
            "to": "27821234567",
            "clientMessageId": "00000000-0000-0000-0000-000000000000",
            "content": "Your order shipped",
        }]})
    );
}

#[test]
fn a_template_goes_as_hsm_with_numbered_parameters() {
    let message = test_message(template(SendParameters {
        body: positional(&["Ann", "A-17"]),
        ..Default::default()
    }));
    let body = message_body(&message);
    assert_eq!(
        body["messages"][0]["hsm"],
        json!({ "template": "order_update", "parameters": { "1": "Ann", "2": "A-17" } })
    );
    assert_eq!(body["messages"][0]["channel"], "whatsapp");
    assert!(body["messages"][0].get("content").is_none());
    assert!(check_carries(&message.request.content).is_ok());
}

#[test]
fn what_the_payload_cannot_carry_is_refused_not_dropped() {
    let named = SendParameters {
        body: ComponentParameters {
            named: BTreeMap::from([("name".to_owned(), "Ann".to_owned())]),
            ..Default::default()
        },
        ..Default::default()
    };
    let header = SendParameters {
        header: positional(&["Spring sale"]),
        ..Default::default()
    };
    let button = SendParameters {
        buttons: BTreeMap::from([(0, "A-17".to_owned())]),
        ..Default::default()
    };
    let quick_reply = SendParameters {
        quick_replies: BTreeMap::from([(1, "stop".to_owned())]),
        ..Default::default()
    };
    let media = Content::Media(Media {
        kind: MediaKind::Image,
        source: MediaSource::Link("https://example.com/a.jpg".into()),
        caption: None,
        filename: None,
    });
    for (content, says) in [
        (template(named), "named template parameters"),
        (template(header), "template header parameters"),
        (template(button), "template button parameters"),
        (template(quick_reply), "template button parameters"),
        (media, "media"),
    ] {
        let refused = check_carries(&content).unwrap_err();
        assert_eq!(refused.reason, Reason::NotSupportedByProvider);
        assert_eq!(refused.kind(), crate::domain::RejectionKind::Precondition);
        assert!(refused.message.contains(says), "{}", refused.message);
        assert_eq!(
            refused.metadata.get("provider").map(String::as_str),
            Some("clickatell")
        );
    }
    assert!(check_carries(&Content::text("hi").unwrap()).is_ok());
}

fn refused_with(attempt: Attempt) -> (i64, String) {
    match attempt {
        Attempt::Refused(error) => {
            let (source, code) = error.source();
            assert_eq!(source.as_str(), "clickatell");
            (code, error.title)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn answers_are_classified() {
    let accepted = r#"{"messages":[{"apiMessageId":"fd496adebb6e4225","accepted":true,"to":"27821234567","error":null}],"error":null}"#;
    assert_eq!(
        classify(202, accepted),
        Attempt::Submitted {
            wamid: "fd496adebb6e4225".into()
        }
    );
    // Rate limits (with HTTP 400 or 503), 429, 5xx: again later.
    for (status, body) in [
        (
            400,
            r#"{"messages":[],"error":{"code":43,"description":"Rate limit"}}"#,
        ),
        (
            503,
            r#"{"error":{"code":19,"description":"Too many requests"}}"#,
        ),
        (400, r#"{"error":{"code":"18","description":"Throttled"}}"#),
        (429, ""),
        (500, "oops"),
        (502, r#"{"error":{"code":7,"description":"?"}}"#),
    ] {
        assert!(
            matches!(classify(status, body), Attempt::Retry { .. }),
            "{status} {body}"
        );
    }
    // Every other code fails the message, with Clickatell's code and text.
    assert_eq!(
        refused_with(classify(
            401,
            r#"{"error":{"code":1,"description":"Invalid or missing integration API Key"}}"#
        )),
        (
            1,
            "Clickatell 1: Invalid or missing integration API Key".into()
        )
    );
    let per_message = r#"{"messages":[{"apiMessageId":"","accepted":false,"to":"27821234567","error":{"code":20,"description":"Insufficient balance"}}],"error":null}"#;
    assert_eq!(refused_with(classify(202, per_message)).0, 20);
    assert_eq!(
        refused_with(classify(202, r#"{"messages":[{"accepted":true}]}"#)).0,
        0
    );
    assert_eq!(refused_with(classify(404, "not json")).0, 404);
}

#[test]
fn provider_codes_never_read_as_whatsapp_codes() {
    let clickatell = DeliveryError::clickatell(20, "Insufficient balance");
    assert_eq!(clickatell.source().1, 20);
    assert_ne!(clickatell.code, 20);
    let whatsapp = DeliveryError {
        code: 131026,
        title: "Message undeliverable".into(),
    };
    assert_eq!(whatsapp.source().0.as_str(), "whatsapp");
    assert_eq!(whatsapp.source().1, 131026);
}

fn status_item(code: i64, status: &str) -> Value {
    json!({
        "channel": "whatsapp",
        "messageId": "api-1",
        "clientMessageId": "0b6f5a3e-0000-4000-8000-000000000001",
        "statusCode": code,
        "status": status,
        "timestamp": 1_764_230_400_000_i64,
    })
}

fn status_of(event: &CallbackEvent) -> (Option<DeliveryStatus>, Option<i64>) {
    match event {
        CallbackEvent::Status { status, error, .. } => (*status, error.as_ref().map(|e| e.code)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn statuses_map_to_delivery_statuses() {
    let body = json!({
        "integrationId": "abc",
        "integrationName": "Shop",
        "event": { "messageStatusUpdate": [
            status_item(2, "QUEUED"),
            status_item(3, "SCHEDULED"),
            status_item(4, "SENT_TO_SUPPLIER"),
            status_item(5, "DEVICE_ACK"),
            status_item(6, "READ"),
            status_item(131, "WHATSAPP_RE_ENGAGEMENT_REQUIRED"),
            status_item(20, "INSUFFICIENT_ACCOUNT_BALANCE"),
            status_item(1, "UNKNOWN"),
        ]},
    });
    assert_eq!(callback_integration(&body), Some("abc"));
    let events = callback_events(&body);
    let got: Vec<_> = events[..7].iter().map(status_of).collect();
    assert_eq!(
        got,
        [
            (None, None),
            (None, None),
            (Some(DeliveryStatus::Sent), None),
            (Some(DeliveryStatus::Delivered), None),
            (Some(DeliveryStatus::Read), None),
            // The window-closed failure, under WhatsApp's own code.
            (Some(DeliveryStatus::Failed), Some(131047)),
            (Some(DeliveryStatus::Failed), Some(PROVIDER_CODES + 20)),
        ]
    );
    assert_eq!(
        events[7],
        CallbackEvent::Unhandled {
            kind: "status_unknown".into()
        }
    );
    let CallbackEvent::Status {
        api_message_id,
        client_message_id,
        ..
    } = &events[2]
    else {
        panic!()
    };
    assert_eq!(api_message_id, "api-1");
    assert_eq!(
        client_message_id.as_deref(),
        Some("0b6f5a3e-0000-4000-8000-000000000001")
    );
}

#[test]
fn customer_messages_become_inbound_events() {
    let body = json!({
        "integrationId": "abc",
        "event": {
            "moText": [{
                "channel": "whatsapp", "messageId": "mo-1", "from": "27821234567",
                "to": "15550001111", "timestamp": 1_764_230_400_123_i64,
                "content": "Hi", "charset": "UTF-8",
            }],
            "moMedia": [{ "messageId": "mo-2", "from": "+27821234567", "timestamp": 1_764_230_401_000_i64 }],
            "moLocation": [{ "messageId": "mo-3", "from": "27821234567" }],
            "messageFallback": [{ "messageId": "x" }],
            "somethingNew": [{}],
        },
    });
    let events = callback_events(&body);
    assert!(events.contains(&CallbackEvent::Inbound {
        customer: "+27821234567".into(),
        message_id: "mo-1".into(),
        received_at: DateTime::from_timestamp_millis(1_764_230_400_123).unwrap(),
        text: Some("Hi".into()),
    }));
    assert!(events.contains(&CallbackEvent::Inbound {
        customer: "+27821234567".into(),
        message_id: "mo-2".into(),
        received_at: DateTime::from_timestamp_millis(1_764_230_401_000).unwrap(),
        text: None,
    }));
    for kind in ["malformed_moLocation", "messageFallback", "other"] {
        assert!(
            events.contains(&CallbackEvent::Unhandled { kind: kind.into() }),
            "{kind}: {events:?}"
        );
    }
    assert_eq!(
        callback_events(&json!({ "integrationId": "abc" })),
        [CallbackEvent::Unhandled {
            kind: "malformed".into()
        }]
    );
}
