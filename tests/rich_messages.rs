//! Media, interactive, location and reaction messages through the real
//! binary (issue #14): each is free-form, so accepted inside the window,
//! priced SERVICE and refused outside it; bad ones are refused with
//! INVALID_CONTENT naming the field; they replay under their idempotency
//! key, dry-run, survive a restart, and GetMessage gives them back as sent.
//! Templates with an image, video, document or location header take the
//! media in every send; copy-code buttons take the code, quick replies an
//! optional payload.

mod common;

use common::*;
use pb::send_message_request::Content as C;
use tonic::Code;

const CUSTOMER: &str = "+27821234567";

/// A request's content as answers carry it.
fn carried(content: &C) -> pb::message_content::Content {
    use pb::message_content::Content as M;
    match content.clone() {
        C::Text(c) => M::Text(c),
        C::Template(c) => M::Template(c),
        C::Media(c) => M::Media(c),
        C::Interactive(c) => M::Interactive(c),
        C::Location(c) => M::Location(c),
        C::Reaction(c) => M::Reaction(c),
    }
}

#[tokio::test]
async fn every_rich_content_is_accepted_in_the_window_and_refused_outside_it() {
    let mut server = Server::start();
    let mut gateway = server.gateway().await;
    let outside = "+27821230000";
    gateway
        .record_inbound(inbound(CUSTOMER, "wamid.in.1"))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (name, content) in rich_contents() {
        let refused = refusal(
            gateway
                .send_message(send_of(outside, &format!("out-{name}"), content.clone()))
                .await,
        );
        assert_eq!(refused.code, Code::FailedPrecondition, "{name}");
        assert_eq!(refused.reason, "WINDOW_CLOSED", "{name}");
        assert_eq!(refused.metadata["whatsapp_code"], "131047", "{name}");

        let request = send_of(CUSTOMER, &format!("in-{name}"), content.clone());
        let dry = gateway
            .send_message(pb::SendMessageRequest {
                dry_run: true,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(dry.dry_run, "{name}");
        let accepted = gateway
            .send_message(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(accepted.kind, pb::MessageKind::FreeForm as i32, "{name}");
        assert_eq!(
            accepted.pricing_category,
            pb::PricingCategory::Service as i32,
            "{name}"
        );
        assert_eq!(dry.rendered_text, accepted.rendered_text, "{name}");
        assert_eq!(
            accepted.content.as_ref().and_then(|c| c.content.clone()),
            Some(carried(&content)),
            "{name}: the answer carries what was sent"
        );
        // The same key and content: the first answer again.
        let again = gateway
            .send_message(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.message_id, accepted.message_id, "{name}");
        sent.push((name, content, accepted));
    }
    // What the customer reads, as text.
    let rendered: Vec<&str> = sent
        .iter()
        .map(|(_, _, a)| a.rendered_text.as_str())
        .collect();
    assert_eq!(
        rendered,
        [
            "[document: invoice-1001.pdf] Your invoice",
            "[image] Your parcel",
            "[video] How to unpack",
            "[audio]",
            "[sticker]",
            "Delivery\nWhich slot suits you?\nReply to choose\n[Morning]\n[Afternoon]",
            "Pick a branch\n[Branches]\nCape Town\n- Gardens: Open until 18:00",
            "[image]\nTrack your parcel\n[Track](https://track.example.com/A-1001)",
            "[location -33.9249, 18.4241] Gardens branch 1 Kloof St, Cape Town",
            "[reaction 👍]",
        ]
    );
    // The same key with another content is a different request.
    let reused = refusal(
        gateway
            .send_message(send_of(CUSTOMER, "in-document", sent[1].1.clone()))
            .await,
    );
    assert_eq!(reused.reason, "IDEMPOTENCY_KEY_REUSED");

    // A restart keeps them, structured.
    server.restart().await;
    let mut gateway = server.gateway().await;
    for (name, content, accepted) in &sent {
        let message = gateway
            .get_message(pb::GetMessageRequest {
                message_id: accepted.message_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        assert_eq!(message.rendered_text, accepted.rendered_text, "{name}");
        assert_eq!(
            message.content.and_then(|c| c.content),
            Some(carried(content)),
            "{name}: GetMessage gives back what was sent"
        );
    }
}

/// Refusals name the field and the limit, and store nothing.
#[tokio::test]
async fn bad_rich_contents_are_refused_with_the_field_named() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "wamid.in.1"))
        .await
        .unwrap();
    let contents = rich_contents();
    let get = |name: &str| contents.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let with = |name: &str, change: &dyn Fn(&mut C)| {
        let mut content = get(name);
        change(&mut content);
        content
    };
    let cases: Vec<(C, &str)> = vec![
        (
            with("document", &|c| {
                if let C::Media(m) = c {
                    m.caption = "c".repeat(1025);
                }
            }),
            "media.caption",
        ),
        (
            with("document", &|c| {
                if let C::Media(m) = c {
                    m.source = None;
                }
            }),
            "media.link",
        ),
        (
            with("image", &|c| {
                if let C::Media(m) = c {
                    m.r#type = pb::MediaType::Audio as i32;
                }
            }),
            "media.caption",
        ),
        (
            with("buttons", &|c| {
                if let C::Interactive(i) = c
                    && let Some(pb::interactive_content::Action::Buttons(b)) = &mut i.action
                {
                    b.buttons[1].title = "t".repeat(21);
                }
            }),
            "interactive.buttons.buttons[1].title",
        ),
        (
            with("list", &|c| {
                if let C::Interactive(i) = c
                    && let Some(pb::interactive_content::Action::List(l)) = &mut i.action
                {
                    let row = l.sections[0].rows[0].clone();
                    l.sections[0].rows = vec![row; 11];
                }
            }),
            "interactive.list.sections",
        ),
        (
            with("cta_url", &|c| {
                if let C::Interactive(i) = c {
                    i.body = String::new();
                }
            }),
            "interactive.body",
        ),
        (
            with("location", &|c| {
                if let C::Location(l) = c {
                    l.latitude = 91.0;
                }
            }),
            "location.latitude",
        ),
        (
            with("reaction", &|c| {
                if let C::Reaction(r) = c {
                    r.emoji = "yes".into();
                }
            }),
            "reaction.emoji",
        ),
    ];
    for (i, (content, field)) in cases.into_iter().enumerate() {
        let refused = refusal(
            gateway
                .send_message(send_of(CUSTOMER, &format!("bad-{i}"), content))
                .await,
        );
        assert_eq!(refused.code, Code::InvalidArgument, "{field}");
        assert_eq!(refused.reason, "INVALID_CONTENT", "{field}");
        assert_eq!(refused.fields, [field.to_owned()], "{field}");
    }
    // Nothing was stored under those keys: a good send takes the first one.
    let taken = gateway
        .send_message(send_of(CUSTOMER, "bad-0", get("document")))
        .await
        .unwrap()
        .into_inner();
    assert!(!taken.message_id.is_empty());
}

fn invoice_template() -> pb::Template {
    pb::Template {
        header_format: pb::HeaderFormat::Document as i32,
        ..template(
            "invoice_ready",
            pb::TemplateCategory::Utility,
            "Hi {{1}}, your invoice is attached.",
        )
    }
}

fn invoice_send(key: &str, header: Option<pb::template_header::Value>) -> pb::SendMessageRequest {
    let mut request = template_send("+27829990000", key, "invoice_ready", &["Ann"]);
    if let Some(C::Template(t)) = &mut request.content {
        t.header = header.map(|value| pb::TemplateHeader { value: Some(value) });
    }
    request
}

fn document(link: &str) -> pb::template_header::Value {
    pb::template_header::Value::Document(pb::MediaReference {
        source: Some(pb::media_reference::Source::Link(link.into())),
        filename: "invoice-1001.pdf".into(),
    })
}

#[tokio::test]
async fn a_template_with_a_document_header_takes_the_document_in_every_send() {
    let mut server = Server::start();
    approve(&server, invoice_template()).await;
    let mut gateway = server.gateway().await;

    // No document, or media of another kind: WhatsApp's 132000, refused first.
    let image = pb::template_header::Value::Image(pb::MediaReference {
        source: Some(pb::media_reference::Source::MediaId("42".into())),
        filename: String::new(),
    });
    for (key, header) in [("no-header", None), ("image", Some(image))] {
        let refused = refusal(gateway.send_message(invoice_send(key, header)).await);
        assert_eq!(refused.code, Code::InvalidArgument, "{key}");
        assert_eq!(refused.reason, "TEMPLATE_PARAMETER_MISMATCH", "{key}");
        assert_eq!(refused.metadata["whatsapp_code"], "132000", "{key}");
        assert_eq!(refused.fields, ["template.header"], "{key}");
    }
    let bad_link = refusal(
        gateway
            .send_message(invoice_send(
                "bad-link",
                Some(document("ftp://files.example.com/x")),
            ))
            .await,
    );
    assert_eq!(bad_link.reason, "INVALID_CONTENT");
    assert_eq!(bad_link.fields, ["template.header.document.link"]);

    let request = invoice_send(
        "with-document",
        Some(document("https://files.example.com/invoice-1001.pdf")),
    );
    let accepted = gateway
        .send_message(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        accepted.rendered_text,
        "[document: invoice-1001.pdf]\nHi Ann, your invoice is attached."
    );
    assert_eq!(accepted.kind, pb::MessageKind::Template as i32);
    assert_eq!(
        accepted.pricing_category,
        pb::PricingCategory::Utility as i32
    );
    // Another document under the same key is another request.
    let reused = refusal(
        gateway
            .send_message(invoice_send(
                "with-document",
                Some(document("https://files.example.com/invoice-1002.pdf")),
            ))
            .await,
    );
    assert_eq!(reused.reason, "IDEMPOTENCY_KEY_REUSED");

    // A restart keeps the template's header format and the send's document.
    server.restart().await;
    let stored = get_template(&server, "invoice_ready").await;
    assert_eq!(stored.header_format, pb::HeaderFormat::Document as i32);
    let message = get_message(&server, &accepted.message_id).await;
    assert_eq!(
        message.content.and_then(|c| c.content),
        request.content.as_ref().map(carried)
    );
    let replayed = server
        .gateway()
        .await
        .send_message(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.message_id, accepted.message_id);
}

#[tokio::test]
async fn a_media_header_and_header_text_together_are_refused() {
    let server = Server::start();
    let refused = refusal(
        server
            .templates()
            .await
            .upsert_template(pb::UpsertTemplateRequest {
                template: Some(pb::Template {
                    header_text: "Your invoice".into(),
                    ..invoice_template()
                }),
            })
            .await,
    );
    assert_eq!(refused.reason, "INVALID_TEMPLATE");
    assert_eq!(refused.fields, ["template.header_format"]);
}

fn otp_template() -> pb::Template {
    pb::Template {
        buttons: vec![pb::TemplateButton {
            kind: Some(pb::template_button::Kind::CopyCode(pb::CopyCodeButton {
                text: "Copy code".into(),
            })),
        }],
        ..template(
            "login_code",
            pb::TemplateCategory::Authentication,
            "{{1}} is your verification code.",
        )
    }
}

fn otp_send(key: &str, code: Option<&str>) -> pb::SendMessageRequest {
    let mut request = template_send("+27829990001", key, "login_code", &["482913"]);
    if let Some(C::Template(t)) = &mut request.content {
        t.button_parameters = code
            .map(|code| pb::ButtonParameter {
                button_index: 0,
                value: code.into(),
            })
            .into_iter()
            .collect();
    }
    request
}

#[tokio::test]
async fn an_authentication_template_sends_its_code_in_the_copy_code_button() {
    let mut server = Server::start();
    approve(&server, otp_template()).await;
    let mut gateway = server.gateway().await;
    let missing = refusal(gateway.send_message(otp_send("no-code", None)).await);
    assert_eq!(missing.reason, "TEMPLATE_PARAMETER_MISMATCH");
    assert_eq!(missing.fields, ["template.button_parameters"]);
    let long = refusal(
        gateway
            .send_message(otp_send("long", Some("1234567890123456")))
            .await,
    );
    assert_eq!(long.reason, "INVALID_TEMPLATE_PARAMETER");
    let sent = gateway
        .send_message(otp_send("code", Some("482913")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sent.pricing_category,
        pb::PricingCategory::Authentication as i32
    );

    // The button is registered for good, and a utility template cannot have one.
    server.restart().await;
    let stored = get_template(&server, "login_code").await;
    assert_eq!(stored.buttons, otp_template().buttons);
    let refused = refusal(
        server
            .templates()
            .await
            .upsert_template(pb::UpsertTemplateRequest {
                template: Some(pb::Template {
                    category: pb::TemplateCategory::Utility as i32,
                    ..otp_template()
                }),
            })
            .await,
    );
    assert_eq!(refused.reason, "INVALID_TEMPLATE");
    assert_eq!(refused.fields, ["template.buttons[0]"]);
}

#[tokio::test]
async fn quick_reply_payloads_go_only_to_quick_reply_buttons() {
    let server = Server::start();
    approve(
        &server,
        pb::Template {
            buttons: vec![pb::TemplateButton {
                kind: Some(pb::template_button::Kind::QuickReply(
                    pb::QuickReplyButton {
                        text: "Keep my slot".into(),
                    },
                )),
            }],
            ..template(
                "slot_reminder",
                pb::TemplateCategory::Utility,
                "Your slot is tomorrow.",
            )
        },
    )
    .await;
    let mut gateway = server.gateway().await;
    let send = |key: &str, index: u32| {
        let mut request = template_send("+27829990002", key, "slot_reminder", &[]);
        if let Some(C::Template(t)) = &mut request.content {
            t.quick_reply_payloads = vec![pb::QuickReplyPayload {
                button_index: index,
                payload: "keep:slot-17".into(),
            }];
        }
        request
    };
    let accepted = gateway
        .send_message(send("payload", 0))
        .await
        .unwrap()
        .into_inner();
    let carried_payloads = match accepted.content.and_then(|c| c.content) {
        Some(pb::message_content::Content::Template(t)) => t.quick_reply_payloads,
        other => panic!("{other:?}"),
    };
    assert_eq!(carried_payloads.len(), 1);
    let refused = refusal(gateway.send_message(send("wrong-index", 1)).await);
    assert_eq!(refused.reason, "TEMPLATE_PARAMETER_MISMATCH");
    assert_eq!(refused.fields, ["template.quick_reply_payloads"]);
}
