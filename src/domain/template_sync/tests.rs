use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::domain::Button;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

fn brand() -> AccountId {
    AccountId::parse("102290129340398").unwrap()
}

fn graph(name: &str, status: &str, body: &str) -> Value {
    json!({
        "name": name, "language": "en_US", "status": status, "category": "UTILITY",
        "id": "594425479261596",
        "components": [{ "type": "BODY", "text": body }],
    })
}

fn fetched(name: &str, status: &str, body: &str) -> FetchedTemplate {
    parse_graph_template(&brand(), &graph(name, status, body)).unwrap()
}

#[test]
fn a_graph_template_reads_into_the_registrys_terms() {
    let value = json!({
        "name": "order_update", "language": "en_US", "status": "REJECTED",
        "category": "MARKETING", "id": "1", "rejected_reason": "INVALID_FORMAT",
        "components": [
            { "type": "HEADER", "format": "DOCUMENT" },
            { "type": "BODY", "text": "Hi {{1}}, your order {{2}} shipped." },
            { "type": "FOOTER", "text": "Reply STOP to opt out" },
            { "type": "BUTTONS", "buttons": [
                { "type": "QUICK_REPLY", "text": "Stop" },
                { "type": "URL", "text": "Track", "url": "https://example.com/t/{{1}}" },
                { "type": "PHONE_NUMBER", "text": "Call us", "phone_number": "+15550001111" },
            ]},
        ],
    });
    let t = parse_graph_template(&brand(), &value).unwrap();
    assert_eq!(t.id.account(), &brand());
    assert_eq!((t.id.name(), t.id.language()), ("order_update", "en_US"));
    assert_eq!(t.status, Status::Rejected);
    assert_eq!(t.reason, "INVALID_FORMAT");
    assert_eq!(t.content.category, Category::Marketing);
    assert_eq!(t.content.header_media, Some(HeaderMedia::Document));
    assert_eq!(
        t.content.footer_text.as_deref(),
        Some("Reply STOP to opt out")
    );
    assert_eq!(t.content.buttons.len(), 3);
    assert!(matches!(&t.content.buttons[0], Button::QuickReply { text } if text == "Stop"));
}

#[test]
fn an_authentication_templates_copy_code_button_is_read() {
    let value = json!({
        "name": "login_code", "language": "en", "status": "APPROVED",
        "category": "AUTHENTICATION", "rejected_reason": "NONE",
        "components": [
            { "type": "BODY", "text": "{{1}} is your verification code." },
            { "type": "BUTTONS", "buttons": [
                { "type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code" } ] },
        ],
    });
    let t = parse_graph_template(&brand(), &value).unwrap();
    assert_eq!(t.reason, "");
    assert!(matches!(&t.content.buttons[..], [Button::CopyCode { .. }]));
}

#[test]
fn what_cannot_be_read_is_named_and_kept_apart() {
    let odd = json!({ "name": "odd", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "components": [{ "type": "CAROUSEL", "cards": [] }] });
    let unreadable = parse_graph_template(&brand(), &odd).unwrap_err();
    assert_eq!(
        unreadable.name_language,
        Some(("odd".to_owned(), "en".to_owned()))
    );
    assert!(unreadable.why.contains("CAROUSEL"), "{}", unreadable.why);
    let nameless = parse_graph_template(&brand(), &json!({ "status": "APPROVED" })).unwrap_err();
    assert_eq!(nameless.name_language, None);
    let status = parse_graph_template(&brand(), &graph("x", "SHINY", "Hi")).unwrap_err();
    assert!(status.why.contains("SHINY"));
}

#[test]
fn a_sync_creates_updates_marks_deleted_and_leaves_the_rest() {
    let first = plan_sync(
        &[],
        &[
            fetched("kept", "APPROVED", "Same {{1}}"),
            fetched("edited", "APPROVED", "Old {{1}}"),
            fetched("removed", "APPROVED", "Bye {{1}}"),
            fetched("reviewed", "PENDING", "New {{1}}"),
        ],
        &[],
        now(),
    );
    assert_eq!(
        first.counts,
        SyncCounts {
            created: 4,
            ..Default::default()
        }
    );
    let stored = first.puts;
    let later = now() + chrono::Duration::minutes(15);
    let odd = Unreadable {
        name_language: Some(("unreadable".into(), "en_US".into())),
        why: "carousel".into(),
    };
    let mut with_unreadable = stored.clone();
    with_unreadable.push(Template {
        id: TemplateId::parse("unreadable", "en_US")
            .unwrap()
            .in_account(brand()),
        ..stored[0].clone()
    });
    let second = plan_sync(
        &with_unreadable,
        &[
            fetched("kept", "APPROVED", "Same {{1}}"),
            fetched("edited", "APPROVED", "New text {{1}}"),
            fetched("reviewed", "REJECTED", "New {{1}}"),
            fetched("added", "APPROVED", "Welcome {{1}}"),
        ],
        &[odd],
        later,
    );
    assert_eq!(
        second.counts,
        SyncCounts {
            created: 1,
            updated: 2,
            deleted: 1,
            unchanged: 1,
            failed: 1,
        }
    );
    let by_name = |name: &str| second.puts.iter().find(|t| t.id.name() == name).unwrap();
    assert_eq!(by_name("edited").content.body, "New text {{1}}");
    assert_eq!(
        by_name("edited").created_at,
        now(),
        "the first sync's time stays"
    );
    assert_eq!(by_name("edited").updated_at, later);
    assert_eq!(by_name("reviewed").status, Status::Rejected);
    assert_eq!(by_name("removed").status, Status::Deleted);
    assert!(
        second.puts.iter().all(|t| t.id.name() != "unreadable"),
        "an unreadable template's stored copy is left alone"
    );

    // Once marked, a template still gone is unchanged.
    let mut after = with_unreadable.clone();
    for put in &second.puts {
        after.retain(|t| t.id != put.id);
        after.push(put.clone());
    }
    let third = plan_sync(
        &after,
        &[
            fetched("kept", "APPROVED", "Same {{1}}"),
            fetched("edited", "APPROVED", "New text {{1}}"),
            fetched("reviewed", "REJECTED", "New {{1}}"),
            fetched("added", "APPROVED", "Welcome {{1}}"),
            fetched("unreadable", "APPROVED", "Same {{1}}"),
        ],
        &[],
        later,
    );
    assert_eq!(third.counts.deleted, 0);
    assert_eq!(third.counts.unchanged, 6, "five seen, one already DELETED");
    assert!(third.puts.is_empty(), "{:?}", third.puts);
}
