//! Media, interactive, location and reaction messages, and templates with
//! a media header, run by `main.rs` on every backend: each is stored and
//! read back exactly as sent.

use chrono::Utc;
use uuid::Uuid;

use wagate::domain::rich::{
    Action, Interactive, ListRow, ListSection, Location, Media, MediaDraft, MediaKind, Reaction,
    ReplyButton,
};
use wagate::domain::template::{
    Category, HeaderMedia, HeaderValue, SendParameters, Status, TemplateDraft, TemplateId,
};
use wagate::domain::{
    Content, EntryPoint, IdempotencyKey, Inbound, InboundKind, InboundMessageId, Pair, PhoneNumber,
    SendRequest,
};

use crate::cases::Harness;

fn contents() -> Vec<Content> {
    let media = Media::new(MediaDraft {
        kind: Some(MediaKind::Document),
        link: "https://files.example.com/invoice.pdf",
        media_id: "",
        caption: "Your invoice",
        filename: "invoice.pdf",
    })
    .unwrap();
    let sticker = Media::new(MediaDraft {
        kind: Some(MediaKind::Sticker),
        link: "",
        media_id: "1013859600285441",
        caption: "",
        filename: "",
    })
    .unwrap();
    let buttons = Interactive::new(
        "Delivery",
        "Which slot suits you?",
        "",
        Some(Action::Buttons(vec![ReplyButton {
            id: "am".into(),
            title: "Morning".into(),
        }])),
    )
    .unwrap();
    let list = Interactive::new(
        "",
        "Pick a branch",
        "Open daily",
        Some(Action::List {
            button: "Branches".into(),
            sections: vec![ListSection {
                title: None,
                rows: vec![ListRow {
                    id: "ct-1".into(),
                    title: "Gardens".into(),
                    description: Some("Until 18:00".into()),
                }],
            }],
        }),
    )
    .unwrap();
    vec![
        Content::Media(media),
        Content::Media(sticker),
        Content::Interactive(buttons),
        Content::Interactive(list),
        Content::Location(Location::new(-33.9249, 18.4241, "Gardens", "").unwrap()),
        Content::Reaction(Reaction::new("wamid.HBgL", "").unwrap()),
    ]
}

pub async fn rich_contents_are_stored_and_read_back_as_sent(h: &dyn Harness) {
    let store = h.open().await;
    let pair = Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse("+27821234567").unwrap(),
    };
    let inbound = Inbound {
        received_at: Utc::now(),
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    };
    store
        .record_inbound(
            &pair,
            &InboundMessageId::parse("in").unwrap(),
            &inbound,
            Utc::now(),
        )
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (i, content) in contents().into_iter().enumerate() {
        let request = SendRequest {
            pair: pair.clone(),
            idempotency_key: IdempotencyKey::parse(&format!("rich-{i}")).unwrap(),
            content,
        };
        let id = Uuid::now_v7();
        store.send(&request, id, Utc::now(), false).await.unwrap();
        sent.push((id, request));
    }
    // Read back through a fresh open (sled: the same files; PostgreSQL: a
    // new pool), so nothing answers from memory.
    // A template with a document header, and a send that fills it.
    let invoice = TemplateId::parse("invoice_ready", "en_US").unwrap();
    let content = TemplateDraft {
        category: Some(Category::Utility),
        body: "Your invoice {{1}} is ready to download.".into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![wagate::domain::template::ButtonDraft::QuickReply {
            text: "I paid".into(),
        }],
        header_media: Some(HeaderMedia::Document),
    }
    .validate()
    .unwrap();
    store
        .upsert_template(&invoice, &content, Utc::now())
        .await
        .unwrap();
    store
        .set_template_status(&invoice, Status::Approved, "", Utc::now())
        .await
        .unwrap();
    let request = SendRequest {
        pair: pair.clone(),
        idempotency_key: IdempotencyKey::parse("rich-template").unwrap(),
        content: Content::Template {
            id: invoice.clone(),
            parameters: SendParameters {
                body: wagate::domain::template::ComponentParameters {
                    positional: vec!["A-1001".into()],
                    named: Default::default(),
                },
                header_media: Some(HeaderValue::Media {
                    kind: HeaderMedia::Document,
                    source: wagate::domain::rich::MediaSource::Id("42".into()),
                    filename: Some("invoice.pdf".into()),
                }),
                quick_replies: [(0, "paid".to_owned())].into_iter().collect(),
                ..SendParameters::default()
            },
        },
    };
    let id = Uuid::now_v7();
    store.send(&request, id, Utc::now(), false).await.unwrap();
    sent.push((id, request));

    drop(store);
    let store = h.open().await;
    assert_eq!(
        store.template(&invoice).await.unwrap().unwrap().content,
        content
    );
    // An authentication template's copy-code button.
    let otp = TemplateId::parse("login_code", "en_US").unwrap();
    let otp_content = TemplateDraft {
        category: Some(Category::Authentication),
        body: "{{1}} is your code.".into(),
        header_text: String::new(),
        footer_text: String::new(),
        buttons: vec![wagate::domain::template::ButtonDraft::CopyCode {
            text: "Copy code".into(),
        }],
        header_media: None,
    }
    .validate()
    .unwrap();
    store
        .upsert_template(&otp, &otp_content, Utc::now())
        .await
        .unwrap();
    drop(store);
    let store = h.open().await;
    assert_eq!(
        store.template(&otp).await.unwrap().unwrap().content,
        otp_content
    );
    for (id, request) in sent {
        let message = store.message(id).await.unwrap().unwrap().message;
        assert_eq!(message.request, request);
        assert_eq!(message.fingerprint, request.fingerprint());
    }
}
