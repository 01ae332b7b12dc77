use super::*;
use crate::domain::PhoneNumber;
use crate::domain::pricing::PricingCategory;
use crate::domain::template::{Status, TemplateDraft};
use crate::domain::window::{EntryPoint, Inbound, InboundKind};
use chrono::{TimeDelta, TimeZone};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn window(entry_point: EntryPoint) -> Window {
    let inbound = Inbound {
        received_at: t0(),
        kind: InboundKind::Message,
        entry_point,
    };
    Window::record_inbound(None, &inbound, t0()).0.unwrap()
}

fn template(category: Category) -> Template {
    let draft = TemplateDraft {
        category: Some(category),
        body: "Hi {{1}}".into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![],
        header_media: None,
    };
    let id = TemplateId::parse("greet", "en").unwrap();
    Template::upsert(None, id, draft.validate().unwrap(), t0())
        .0
        .with_status(Status::Approved, "", t0())
        .unwrap()
}

fn template_content() -> Content {
    Content::Template {
        id: TemplateId::parse("greet", "en").unwrap(),
        parameters: SendParameters {
            body: ComponentParameters {
                positional: vec!["Ann".into()],
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

fn text() -> Content {
    Content::text("hello").unwrap()
}

#[test]
fn text_length_rules() {
    assert!(Content::text(&"é".repeat(4096)).is_ok());
    assert!(Content::text("line one\n\tline two").is_ok());
    for bad in ["", &"x".repeat(4097), "nul\0inside", "\u{1b}[2Jclear"] {
        let err = Content::text(bad).unwrap_err();
        assert_eq!(
            (err.reason, err.field.as_deref()),
            (Reason::InvalidText, Some("text.body"))
        );
    }
}

#[test]
fn free_form_needs_an_open_window() {
    let open = window(EntryPoint::Organic);
    let decision = decide(&text(), None, Some(&open), t0() + TimeDelta::hours(1)).unwrap();
    assert_eq!(decision.accepted.kind, MessageKind::FreeForm);
    assert_eq!(decision.accepted.rendered_text, "hello");
    assert_eq!(decision.accepted.pricing.category, PricingCategory::Service);
    assert!(!decision.accepted.pricing.billable);
    assert_eq!(decision.window_update, None);

    for (window, at) in [(None, t0()), (Some(&open), t0() + TimeDelta::hours(24))] {
        let err = decide(&text(), None, window, at).unwrap_err();
        assert_eq!(err.reason, Reason::WindowClosed);
        assert_eq!(err.metadata["whatsapp_code"], "131047");
    }
}

#[test]
fn templates_go_out_without_a_window_and_are_priced_by_category() {
    let utility = template(Category::Utility);
    let closed = decide(&template_content(), Some(&utility), None, t0())
        .unwrap()
        .accepted;
    assert_eq!(closed.rendered_text, "Hi Ann");
    assert_eq!(closed.template_category, Some(Category::Utility));
    assert_eq!(
        (closed.pricing.category, closed.pricing.billable),
        (PricingCategory::Utility, true)
    );

    let open = window(EntryPoint::Organic);
    let inside = decide(&template_content(), Some(&utility), Some(&open), t0())
        .unwrap()
        .accepted;
    assert!(!inside.pricing.billable);

    let marketing = template(Category::Marketing);
    let inside = decide(&template_content(), Some(&marketing), Some(&open), t0())
        .unwrap()
        .accepted;
    assert_eq!(
        (inside.pricing.category, inside.pricing.billable),
        (PricingCategory::Marketing, true)
    );
}

#[test]
fn missing_and_unapproved_templates() {
    let err = decide(&template_content(), None, None, t0()).unwrap_err();
    assert_eq!(err.reason, Reason::TemplateNotFound);
    assert_eq!(err.metadata["whatsapp_code"], "132001");
    let paused = template(Category::Utility)
        .with_status(Status::Paused, "", t0())
        .unwrap();
    let err = decide(&template_content(), Some(&paused), None, t0()).unwrap_err();
    assert_eq!(err.reason, Reason::TemplateNotApproved);
}

#[test]
fn parameter_errors_name_the_template_field() {
    let content = Content::Template {
        id: TemplateId::parse("greet", "en").unwrap(),
        parameters: SendParameters::default(),
    };
    let err = decide(&content, Some(&template(Category::Utility)), None, t0()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.body_parameters"));
}

#[test]
fn first_reply_to_an_ad_starts_a_free_period_for_everything() {
    let ad = window(EntryPoint::ClickToWhatsAppAd);
    let reply_at = t0() + TimeDelta::hours(1);
    let first = decide(&text(), None, Some(&ad), reply_at).unwrap();
    let free_until = reply_at + TimeDelta::hours(72);
    assert_eq!(
        first.accepted.pricing.category,
        PricingCategory::ReferralConversion
    );
    assert_eq!(first.accepted.free_until, Some(free_until));
    let after = first.window_update.expect("free period stored");
    assert_eq!(after.free_until, Some(free_until));

    // Two days later the 24h window is closed: marketing templates are still free.
    let later = reply_at + TimeDelta::hours(48);
    let marketing = template(Category::Marketing);
    let sent = decide(&template_content(), Some(&marketing), Some(&after), later).unwrap();
    assert_eq!(
        sent.accepted.pricing.category,
        PricingCategory::ReferralConversion
    );
    assert!(!sent.accepted.pricing.billable);
    // ...but free-form still needs the 24h window.
    assert_eq!(
        decide(&text(), None, Some(&after), later)
            .unwrap_err()
            .reason,
        Reason::WindowClosed
    );
    // After 72h it is billable again.
    let over = decide(
        &template_content(),
        Some(&marketing),
        Some(&after),
        free_until,
    )
    .unwrap();
    assert!(over.accepted.pricing.billable);
    assert_eq!(over.accepted.free_until, None);
}

#[test]
fn idempotency_keys_replay_for_24h_and_refuse_other_requests() {
    let (first, other) = ([1u8; 32], [2u8; 32]);
    let within = t0() + IDEMPOTENCY_TTL - TimeDelta::microseconds(1);
    assert_eq!(
        check_key_reuse(&first, t0(), &first, within),
        Ok(KeyUse::Replay)
    );
    let err = check_key_reuse(&first, t0(), &other, within).unwrap_err();
    assert_eq!(
        (err.reason, err.field.as_deref()),
        (Reason::IdempotencyKeyReused, Some("idempotency_key"))
    );
    let after = t0() + IDEMPOTENCY_TTL;
    assert_eq!(
        check_key_reuse(&first, t0(), &other, after),
        Ok(KeyUse::Expired)
    );
    assert_eq!(
        check_key_reuse(&first, t0(), &first, after),
        Ok(KeyUse::Expired)
    );
}

#[test]
fn fingerprint_tells_requests_apart() {
    let pair = Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse("+27821234567").unwrap(),
    };
    let request = |content: Content| SendRequest {
        pair: pair.clone(),
        idempotency_key: IdempotencyKey::parse("k").unwrap(),
        content,
    };
    let a = request(text()).fingerprint();
    assert_eq!(a, request(text()).fingerprint());
    assert_ne!(a, request(Content::text("hello!").unwrap()).fingerprint());
    assert_ne!(a, request(template_content()).fingerprint());
    let other_key = SendRequest {
        idempotency_key: IdempotencyKey::parse("other").unwrap(),
        ..request(text())
    };
    assert_eq!(
        a,
        other_key.fingerprint(),
        "the key is not part of what is asked"
    );
}
