use std::collections::BTreeMap;

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn draft(body: &str) -> TemplateDraft {
    TemplateDraft {
        category: Some(Category::Utility),
        body: body.to_owned(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![],
        header_media: None,
    }
}

fn problem(draft: TemplateDraft) -> (String, String) {
    let err = draft.validate().unwrap_err();
    assert_eq!(err.reason, Reason::InvalidTemplate);
    (err.field.unwrap_or_default(), err.message)
}

fn approved(draft: TemplateDraft) -> Template {
    let id = TemplateId::parse("order_update", "en_US").unwrap();
    let (template, _) = Template::upsert(None, id, draft.validate().unwrap(), t0());
    template.with_status(Status::Approved, "", t0()).unwrap()
}

fn positional(values: &[&str]) -> ComponentParameters {
    ComponentParameters {
        positional: values.iter().map(|v| v.to_string()).collect(),
        named: BTreeMap::new(),
    }
}

fn named(pairs: &[(&str, &str)]) -> ComponentParameters {
    ComponentParameters {
        positional: vec![],
        named: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn body_only(body: ComponentParameters) -> SendParameters {
    SendParameters {
        body,
        ..SendParameters::default()
    }
}

#[test]
fn names_and_languages() {
    assert!(TemplateId::parse("order_update_2", "en").is_ok());
    assert!(TemplateId::parse(&"a".repeat(512), "pt_BR").is_ok());
    assert!(TemplateId::parse("fil_x", "fil").is_ok());
    for (name, language, field) in [
        ("", "en", "name"),
        ("Order", "en", "name"),
        ("order-update", "en", "name"),
        (&"a".repeat(513), "en", "name"),
        ("ok", "", "language"),
        ("ok", "EN", "language"),
        ("ok", "en_us", "language"),
        ("ok", "en-US", "language"),
        ("ok", "english", "language"),
        ("ok", "en_USA", "language"),
    ] {
        let err = TemplateId::parse(name, language).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{name:?}/{language:?}");
    }
}

#[test]
fn body_length_and_placeholders() {
    assert!(draft(&"x".repeat(1024)).validate().is_ok());
    assert_eq!(problem(draft("")).0, "body");
    assert!(problem(draft(&"x".repeat(1025))).1.contains("1025"));
    assert!(
        problem(draft("Hi {{1}} {{3}}"))
            .1
            .contains("{{2}} is missing")
    );
    assert!(problem(draft("Hi {{1}} {{name}}")).1.contains("mixes"));
    assert!(problem(draft("Hi {{1")).1.contains("without a closing"));
    assert!(draft("Hi {{name}}, {{order_id}}").validate().is_ok());
}

#[test]
fn category_is_required() {
    let mut d = draft("x");
    d.category = None;
    assert_eq!(problem(d).0, "category");
}

#[test]
fn header_rules() {
    let header = |text: &str| TemplateDraft {
        header_text: text.to_owned(),
        ..draft("Body {{1}}")
    };
    assert!(header("Order {{1}}").validate().is_ok());
    assert!(header(&"h".repeat(60)).validate().is_ok());
    assert_eq!(problem(header(&"h".repeat(61))).0, "header_text");
    assert!(problem(header("{{1}} and {{1}}")).1.contains("at most one"));
    assert!(problem(header("{{2}}")).1.contains("must be {{1}}"));
    assert!(problem(header("{{name}}")).1.contains("mix"));
    assert!(problem(header("two\nlines")).1.contains("single line"));
    let named = TemplateDraft {
        header_text: "For {{name}}".to_owned(),
        ..draft("Hi {{name}}")
    };
    assert!(named.validate().is_ok());
}

#[test]
fn footer_rules() {
    let footer = |text: &str| TemplateDraft {
        footer_text: text.to_owned(),
        ..draft("Body")
    };
    assert!(footer("Reply STOP to opt out").validate().is_ok());
    assert_eq!(problem(footer(&"f".repeat(61))).0, "footer_text");
    assert!(
        problem(footer("Hi {{1}}"))
            .1
            .contains("may not hold placeholders")
    );
}

#[test]
fn button_rules() {
    let with = |buttons: Vec<ButtonDraft>| TemplateDraft {
        buttons,
        ..draft("Body")
    };
    let quick = |text: &str| ButtonDraft::QuickReply {
        text: text.to_owned(),
    };
    let url = |url: &str| ButtonDraft::Url {
        text: "Track".to_owned(),
        url: url.to_owned(),
    };
    let phone = |number: &str| ButtonDraft::PhoneNumber {
        text: "Call us".to_owned(),
        phone_number: number.to_owned(),
    };
    let ok = with(vec![
        quick("Yes"),
        url("https://x.co/t/{{1}}"),
        phone("+27 82 123 4567"),
    ])
    .validate()
    .unwrap();
    assert_eq!(
        ok.buttons[2],
        Button::PhoneNumber {
            text: "Call us".to_owned(),
            phone_number: PhoneNumber::parse("+27821234567").unwrap()
        }
    );
    assert_eq!(problem(with(vec![quick("")])).0, "buttons[0].text");
    assert_eq!(
        problem(with(vec![quick(&"q".repeat(26))])).0,
        "buttons[0].text"
    );
    assert_eq!(problem(with(vec![quick("Hi {{1}}")])).0, "buttons[0].text");
    assert_eq!(problem(with(vec![quick("a"); 11])).0, "buttons");
    assert_eq!(problem(with(vec![url("https://a.co"); 3])).0, "buttons");
    assert_eq!(problem(with(vec![phone("+27821234567"); 2])).0, "buttons");
    assert_eq!(
        problem(with(vec![quick("a"), url("ftp://x")])).0,
        "buttons[1].url"
    );
    assert_eq!(problem(with(vec![url("https://")])).0, "buttons[0].url");
    assert_eq!(
        problem(with(vec![url("https://x.co/{{1}}/a")])).0,
        "buttons[0].url"
    );
    assert_eq!(
        problem(with(vec![url("https://x.co/{{2}}")])).0,
        "buttons[0].url"
    );
    assert_eq!(
        problem(with(vec![url("https://x.co/{{1}}{{1}}")])).0,
        "buttons[0].url"
    );
    let long = format!("https://x.co/{}", "p".repeat(2000));
    assert_eq!(problem(with(vec![url(&long)])).0, "buttons[0].url");
    assert_eq!(
        problem(with(vec![phone("12")])).0,
        "buttons[0].phone_number"
    );
}

#[test]
fn upsert_creates_pending_and_edit_returns_to_pending() {
    let id = TemplateId::parse("promo", "en").unwrap();
    let content = draft("Sale {{1}}").validate().unwrap();
    let (created, changed) = Template::upsert(None, id.clone(), content.clone(), t0());
    assert!(changed);
    assert_eq!(created.status, Status::Pending);
    let approved = created.with_status(Status::Approved, "", t0()).unwrap();

    let later = t0() + chrono::TimeDelta::hours(1);
    let (same, changed) = Template::upsert(Some(approved.clone()), id.clone(), content, later);
    assert!(!changed);
    assert_eq!(same, approved, "an identical upsert keeps the approval");

    let edited = draft("Big sale {{1}}").validate().unwrap();
    let (edited, changed) = Template::upsert(Some(approved), id, edited, later);
    assert!(changed);
    assert_eq!(edited.status, Status::Pending);
    assert_eq!(edited.created_at, t0());
    assert_eq!(edited.updated_at, later);
}

#[test]
fn status_reason_is_bounded() {
    let template = approved(draft("x"));
    let paused = template
        .clone()
        .with_status(Status::Paused, "low quality", t0())
        .unwrap();
    assert_eq!(paused.status_reason, "low quality");
    let err = template
        .with_status(Status::Rejected, &"r".repeat(1025), t0())
        .unwrap_err();
    assert_eq!(err.reason, Reason::InvalidTemplateStatus);
    let err = approved(draft("x"))
        .with_status(Status::Rejected, "bad\u{1b}[0m", t0())
        .unwrap_err();
    assert_eq!(
        (err.reason, err.field.as_deref()),
        (Reason::InvalidTemplateStatus, Some("reason"))
    );
}

#[test]
fn bodies_headers_and_footers_refuse_control_characters() {
    assert!(draft("Hi {{1}},\n\tyour order shipped.").validate().is_ok());
    assert_eq!(problem(draft("Hi\0{{1}}")).0, "body");
    let mut header = draft("x");
    header.header_text = "Order\r".into();
    assert_eq!(problem(header).0, "header_text");
}

#[test]
fn only_approved_is_sendable_with_whatsapp_codes() {
    let template = approved(draft("x"));
    assert!(template.check_sendable().is_ok());
    for (status, code) in [
        (Status::Paused, Some("132015")),
        (Status::Disabled, Some("132016")),
        (Status::Pending, None),
        (Status::Rejected, None),
        (Status::InAppeal, None),
    ] {
        let err = template
            .clone()
            .with_status(status, "", t0())
            .unwrap()
            .check_sendable()
            .unwrap_err();
        assert_eq!(err.reason, Reason::TemplateNotApproved);
        assert_eq!(err.metadata["status"], status.as_str());
        assert_eq!(
            err.metadata.get("whatsapp_code").map(String::as_str),
            code,
            "{status:?}"
        );
    }
}

#[test]
fn positional_fill_renders_header_body_footer() {
    let template = approved(TemplateDraft {
        header_text: "Order {{1}}".to_owned(),
        footer_text: "Thanks".to_owned(),
        ..draft("Hi {{1}}, order {{2}} ships {{1}}.")
    });
    let parameters = SendParameters {
        body: positional(&["Ann", "A-7"]),
        header: positional(&["A-7"]),
        buttons: BTreeMap::new(),
        header_media: None,
        quick_replies: BTreeMap::new(),
    };
    assert_eq!(template.parameter_format(), ParameterFormat::Positional);
    assert_eq!(
        template.fill(&parameters).unwrap(),
        "Order A-7\nHi Ann, order A-7 ships Ann.\nThanks"
    );
}

fn invoice(kind: HeaderMedia) -> HeaderValue {
    HeaderValue::Media {
        kind,
        source: MediaSource::Link("https://files.example.com/invoice.pdf".into()),
        filename: (kind == HeaderMedia::Document).then(|| "invoice.pdf".into()),
    }
}

#[test]
fn a_media_header_needs_its_media_of_its_kind_in_every_send() {
    let both = TemplateDraft {
        header_text: "Invoice".into(),
        header_media: Some(HeaderMedia::Document),
        ..draft("Your invoice {{1}}")
    };
    assert_eq!(problem(both).0, "header_format");

    let template = approved(TemplateDraft {
        header_media: Some(HeaderMedia::Document),
        ..draft("Your invoice {{1}}")
    });
    let with = |header_media| SendParameters {
        header_media,
        ..body_only(positional(&["A-1001"]))
    };
    assert_eq!(
        template
            .fill(&with(Some(invoice(HeaderMedia::Document))))
            .unwrap(),
        "[document: invoice.pdf]\nYour invoice A-1001"
    );
    for wrong in [
        None,
        Some(invoice(HeaderMedia::Image)),
        Some(HeaderValue::Location(
            Location::new(1.0, 2.0, "", "").unwrap(),
        )),
    ] {
        let err = template.fill(&with(wrong.clone())).unwrap_err();
        assert_eq!(err.reason, Reason::TemplateParameterMismatch, "{wrong:?}");
        assert_eq!(err.field.as_deref(), Some("header"), "{wrong:?}");
        assert_eq!(err.reason.whatsapp_code(), Some(132_000));
    }

    let located = approved(TemplateDraft {
        header_media: Some(HeaderMedia::Location),
        ..draft("Your parcel waits here")
    });
    let here = HeaderValue::Location(Location::new(-33.9, 18.4, "Gardens", "").unwrap());
    assert_eq!(
        located
            .fill(&SendParameters {
                header_media: Some(here),
                ..SendParameters::default()
            })
            .unwrap(),
        "[location -33.9, 18.4] Gardens\nYour parcel waits here"
    );

    // File names belong to documents; a location is no media.
    let named_image = HeaderValue::media(
        HeaderMedia::Image,
        MediaSource::Id("1".into()),
        Some("x.jpg".into()),
    );
    assert_eq!(named_image.unwrap_err().field.as_deref(), Some("filename"));
    assert!(HeaderValue::media(HeaderMedia::Location, MediaSource::Id("1".into()), None).is_err());

    // A template without a media header takes none.
    let plain = approved(draft("Hi {{1}}"));
    let err = plain
        .fill(&SendParameters {
            header_media: Some(invoice(HeaderMedia::Image)),
            ..body_only(positional(&["Ann"]))
        })
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("header"));
}

#[test]
fn copy_code_buttons_take_a_code_and_quick_replies_an_optional_payload() {
    let otp = |category| TemplateDraft {
        category: Some(category),
        buttons: vec![ButtonDraft::CopyCode {
            text: "Copy code".into(),
        }],
        ..draft("{{1}} is your verification code.")
    };
    assert_eq!(problem(otp(Category::Utility)).0, "buttons[0]");
    let two = TemplateDraft {
        buttons: vec![
            ButtonDraft::CopyCode { text: "A".into() },
            ButtonDraft::CopyCode { text: "B".into() },
        ],
        ..otp(Category::Authentication)
    };
    assert_eq!(problem(two).0, "buttons");

    let template = approved(otp(Category::Authentication));
    let with_code = |code: Option<&str>| SendParameters {
        buttons: code.map(|c| (0, c.to_owned())).into_iter().collect(),
        ..body_only(positional(&["482913"]))
    };
    assert!(template.fill(&with_code(Some("482913"))).is_ok());
    let missing = template.fill(&with_code(None)).unwrap_err();
    assert_eq!(missing.reason, Reason::TemplateParameterMismatch);
    assert_eq!(missing.field.as_deref(), Some("button_parameters"));
    for bad in ["1234567890123456", "12 34"] {
        let err = template.fill(&with_code(Some(bad))).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplateParameter, "{bad}");
        assert_eq!(err.field.as_deref(), Some("button_parameters[0].value"));
    }
    assert!(template.fill(&with_code(Some("123456789012345"))).is_ok());

    let replies = approved(TemplateDraft {
        buttons: vec![
            ButtonDraft::QuickReply { text: "Yes".into() },
            ButtonDraft::Url {
                text: "Track".into(),
                url: "https://t.example/{{1}}".into(),
            },
            ButtonDraft::QuickReply { text: "No".into() },
        ],
        ..draft("Keep your slot?")
    });
    let with = |payloads: &[(u32, &str)]| SendParameters {
        buttons: [(1, "A-1".to_owned())].into_iter().collect(),
        quick_replies: payloads.iter().map(|(i, p)| (*i, p.to_string())).collect(),
        ..SendParameters::default()
    };
    assert!(replies.fill(&with(&[])).is_ok());
    assert!(replies.fill(&with(&[(0, "keep"), (2, "release")])).is_ok());
    let wrong = replies.fill(&with(&[(1, "keep")])).unwrap_err();
    assert_eq!(wrong.reason, Reason::TemplateParameterMismatch);
    assert_eq!(wrong.field.as_deref(), Some("quick_reply_payloads"));
    let empty = replies.fill(&with(&[(0, "")])).unwrap_err();
    assert_eq!(
        empty.field.as_deref(),
        Some("quick_reply_payloads[0].payload")
    );
}

#[test]
fn named_fill() {
    let template = approved(draft("Hi {{name}}, order {{order_id}}"));
    let filled = template
        .fill(&body_only(named(&[("order_id", "42"), ("name", "Ann")])))
        .unwrap();
    assert_eq!(filled, "Hi Ann, order 42");
    assert_eq!(template.parameter_format(), ParameterFormat::Named);
}

#[test]
fn mismatched_parameters_are_refused() {
    let positional_template = approved(draft("Hi {{1}} {{2}}"));
    let named_template = approved(draft("Hi {{name}}"));
    let cases = [
        (
            &positional_template,
            body_only(positional(&["a"])),
            "body_parameters",
        ),
        (
            &positional_template,
            body_only(positional(&["a", "b", "c"])),
            "body_parameters",
        ),
        (
            &positional_template,
            body_only(named(&[("name", "a")])),
            "body_parameters",
        ),
        (&named_template, body_only(named(&[])), "body_parameters"),
        (
            &named_template,
            body_only(named(&[("nam", "a")])),
            "body_parameters",
        ),
        (
            &named_template,
            body_only(named(&[("name", "a"), ("x", "b")])),
            "body_parameters",
        ),
        (
            &named_template,
            body_only(positional(&["a"])),
            "body_parameters",
        ),
        (
            &named_template,
            SendParameters {
                body: named(&[("name", "a")]),
                header: positional(&["h"]),
                ..SendParameters::default()
            },
            "header_parameters",
        ),
    ];
    for (template, parameters, field) in cases {
        let err = template.fill(&parameters).unwrap_err();
        assert_eq!(
            err.reason,
            Reason::TemplateParameterMismatch,
            "{parameters:?}"
        );
        assert_eq!(err.metadata["whatsapp_code"], "132000");
        assert_eq!(err.field.as_deref(), Some(field));
    }
    let both = ComponentParameters {
        positional: vec!["a".into(), "b".into()],
        named: [("x".to_string(), "y".to_string())].into(),
    };
    let err = positional_template.fill(&body_only(both)).unwrap_err();
    assert!(err.message.contains("not both"));
}

#[test]
fn url_button_parameters() {
    let template = approved(TemplateDraft {
        buttons: vec![
            ButtonDraft::QuickReply {
                text: "Stop".into(),
            },
            ButtonDraft::Url {
                text: "Track".into(),
                url: "https://x.co/t/{{1}}".into(),
            },
        ],
        ..draft("Your parcel")
    });
    let with_buttons = |buttons: &[(u32, &str)]| SendParameters {
        buttons: buttons.iter().map(|(i, v)| (*i, v.to_string())).collect(),
        ..SendParameters::default()
    };
    assert_eq!(
        template.fill(&with_buttons(&[(1, "abc")])).unwrap(),
        "Your parcel"
    );
    for wrong in [&[][..], &[(0, "abc")], &[(1, "abc"), (2, "x")]] {
        let err = template.fill(&with_buttons(wrong)).unwrap_err();
        assert_eq!(err.reason, Reason::TemplateParameterMismatch);
        assert_eq!(err.field.as_deref(), Some("button_parameters"));
    }
    let err = template.fill(&with_buttons(&[(1, "a\tb")])).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("button_parameters[1].value"));
}

#[test]
fn parameter_value_rules() {
    assert!(check_value("Ann    Lee").is_ok(), "4 spaces are allowed");
    assert!(check_value(&"v".repeat(1024)).is_ok());
    assert!(
        check_value(&"é".repeat(1024)).is_ok(),
        "characters, not bytes"
    );
    for bad in ["", "a\nb", "a\tb", "a\rb", "Ann     Lee", &"v".repeat(1025)] {
        let err = check_value(bad).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplateParameter, "{bad:?}");
    }
    let template = approved(draft("Hi {{1}}"));
    let err = template
        .fill(&body_only(positional(&["a\nb"])))
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("body_parameters.positional[0]"));
    let template = approved(draft("Hi {{who}}"));
    let err = template
        .fill(&body_only(named(&[("who", "")])))
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("body_parameters.named[who]"));
}

fn value() -> impl Strategy<Value = String> {
    // Printable text, braces included, within the parameter rules.
    "[a-zA-Z0-9{}é ]{1,30}".prop_filter("parameter rules", |v| check_value(v).is_ok())
}

proptest! {
    /// render(parse(t), params) contains every parameter value, for any
    /// positional template text and any valid values.
    #[test]
    fn rendering_contains_every_value(
        literals in proptest::collection::vec("[a-z ,.!]{0,12}", 2..6),
        values in proptest::collection::vec(value(), 5),
        picks in proptest::collection::vec(0usize..5, 1..8),
    ) {
        let count = picks.iter().max().unwrap() + 1;
        // Every position 1..=count appears at least once, then the picks.
        let mut body = String::new();
        let order: Vec<usize> = (0..count).chain(picks.iter().copied()).collect();
        for (i, pick) in order.iter().enumerate() {
            body.push_str(&literals[i % literals.len()]);
            body.push_str(&format!("{{{{{}}}}}", pick + 1));
        }
        let template = approved(draft(&body));
        let given: Vec<&str> = values[..count].iter().map(String::as_str).collect();
        let rendered = template.fill(&body_only(positional(&given))).unwrap();
        for value in &values[..count] {
            prop_assert!(rendered.contains(value.as_str()), "{rendered:?} lacks {value:?}");
        }
    }
}
