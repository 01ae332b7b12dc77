use super::*;

fn field(result: Result<impl std::fmt::Debug, Rejection>) -> String {
    let rejection = result.unwrap_err();
    assert_eq!(rejection.reason, Reason::InvalidContent, "{rejection:?}");
    rejection.field.unwrap_or_default()
}

fn media(
    kind: MediaKind,
    link: &str,
    id: &str,
    caption: &str,
    filename: &str,
) -> Result<Media, Rejection> {
    Media::new(MediaDraft {
        kind: Some(kind),
        link,
        media_id: id,
        caption,
        filename,
    })
}

/// A captioned, named document by link.
fn invoice() -> Media {
    media(
        MediaKind::Document,
        "https://a.b/i.pdf",
        "",
        "Your invoice",
        "invoice.pdf",
    )
    .unwrap()
}

fn buttons(titles: &[&str]) -> Result<Interactive, Rejection> {
    let buttons = titles
        .iter()
        .enumerate()
        .map(|(i, t)| ReplyButton {
            id: format!("b{i}"),
            title: (*t).to_owned(),
        })
        .collect();
    Interactive::new(
        "",
        "Which slot suits you?",
        "",
        Some(Action::Buttons(buttons)),
    )
}

fn list(sections: Vec<ListSection>) -> Result<Interactive, Rejection> {
    Interactive::new(
        "",
        "Our branches",
        "",
        Some(Action::List {
            button: "Branches".into(),
            sections,
        }),
    )
}

fn rows(prefix: &str, n: usize) -> Vec<ListRow> {
    (0..n)
        .map(|i| ListRow {
            id: format!("{prefix}{i}"),
            title: format!("Row {i}"),
            description: None,
        })
        .collect()
}

#[test]
fn media_takes_exactly_one_source_and_a_caption_up_to_1024() {
    let ok = media(
        MediaKind::Image,
        "https://cdn.example/p.jpg",
        "",
        &"c".repeat(1024),
        "",
    );
    assert_eq!(ok.unwrap().caption.unwrap().chars().count(), 1024);
    let long = media(
        MediaKind::Image,
        "https://cdn.example/p.jpg",
        "",
        &"c".repeat(1025),
        "",
    );
    assert_eq!(field(long), "caption");
    assert_eq!(field(media(MediaKind::Image, "", "", "", "")), "link");
    assert_eq!(
        field(media(MediaKind::Image, "https://a.b/x", "123", "", "")),
        "link"
    );
    assert_eq!(
        field(media(MediaKind::Image, "http://a.b/x", "", "", "")),
        "link"
    );
    assert_eq!(
        field(media(MediaKind::Image, "https://", "", "", "")),
        "link"
    );
    assert!(media(MediaKind::Video, "", "1234567890", "", "").is_ok());
    assert_eq!(
        field(Media::new(MediaDraft {
            kind: None,
            link: "https://a.b/x",
            media_id: "",
            caption: "",
            filename: ""
        })),
        "type"
    );
}

#[test]
fn audio_and_stickers_take_no_caption_and_only_documents_a_file_name() {
    for kind in [MediaKind::Audio, MediaKind::Sticker] {
        assert_eq!(field(media(kind, "https://a.b/x", "", "hi", "")), "caption");
        assert!(media(kind, "https://a.b/x", "", "", "").is_ok());
    }
    let doc = invoice();
    assert_eq!(doc.filename.as_deref(), Some("invoice.pdf"));
    assert_eq!(
        field(media(MediaKind::Image, "https://a.b/x", "", "", "x.jpg")),
        "filename"
    );
}

#[test]
fn reply_buttons_are_1_to_3_with_titles_up_to_20_and_unique_ids() {
    assert!(buttons(&["Morning", "Afternoon", &"t".repeat(20)]).is_ok());
    assert_eq!(field(buttons(&[])), "buttons.buttons");
    assert_eq!(field(buttons(&["a", "b", "c", "d"])), "buttons.buttons");
    assert_eq!(
        field(buttons(&[&"t".repeat(21)])),
        "buttons.buttons[0].title"
    );
    assert_eq!(
        field(buttons(&["Same", "Same"])),
        "buttons.buttons[1].title"
    );
    let same_ids = Interactive::new(
        "",
        "body",
        "",
        Some(Action::Buttons(vec![
            ReplyButton {
                id: "x".into(),
                title: "A".into(),
            },
            ReplyButton {
                id: "x".into(),
                title: "B".into(),
            },
        ])),
    );
    assert_eq!(field(same_ids), "buttons.buttons[1].id");
    let long_id = Interactive::new(
        "",
        "body",
        "",
        Some(Action::Buttons(vec![ReplyButton {
            id: "i".repeat(257),
            title: "A".into(),
        }])),
    );
    assert_eq!(field(long_id), "buttons.buttons[0].id");
}

#[test]
fn header_body_and_footer_have_their_limits() {
    let action = || {
        Some(Action::Buttons(vec![ReplyButton {
            id: "a".into(),
            title: "A".into(),
        }]))
    };
    assert!(
        Interactive::new(
            &"h".repeat(60),
            &"b".repeat(1024),
            &"f".repeat(60),
            action()
        )
        .is_ok()
    );
    assert_eq!(
        field(Interactive::new(&"h".repeat(61), "b", "", action())),
        "header_text"
    );
    assert_eq!(
        field(Interactive::new("", &"b".repeat(1025), "", action())),
        "body"
    );
    assert_eq!(field(Interactive::new("", "", "", action())), "body");
    assert_eq!(
        field(Interactive::new("", "b", &"f".repeat(61), action())),
        "footer"
    );
    assert_eq!(field(Interactive::new("", "b", "", None)), "action");
}

#[test]
fn a_list_holds_1_to_10_sections_and_at_most_10_rows_in_all() {
    let section = |title: &str, rows: Vec<ListRow>| ListSection {
        title: (!title.is_empty()).then(|| title.to_owned()),
        rows,
    };
    assert!(list(vec![section("", rows("a", 10))]).is_ok());
    assert!(
        list(vec![
            section("North", rows("a", 5)),
            section("South", rows("b", 5))
        ])
        .is_ok()
    );
    assert_eq!(
        field(list(vec![section("", rows("a", 11))])),
        "list.sections"
    );
    assert_eq!(
        field(list(vec![
            section("N", rows("a", 6)),
            section("S", rows("b", 5))
        ])),
        "list.sections"
    );
    assert_eq!(field(list(vec![])), "list.sections");
    assert_eq!(
        field(list(vec![
            section("N", rows("a", 1)),
            section("", rows("b", 1))
        ])),
        "list.sections[1].title"
    );
    assert_eq!(
        field(list(vec![section(&"t".repeat(25), rows("a", 1))])),
        "list.sections[0].title"
    );
    assert_eq!(
        field(list(vec![section("N", vec![])])),
        "list.sections[0].rows"
    );
    assert_eq!(
        field(list(vec![
            section("N", rows("a", 2)),
            section("S", rows("a", 1))
        ])),
        "list.sections[1].rows[0].id"
    );
    let mut long = rows("a", 1);
    long[0].title = "t".repeat(25);
    assert_eq!(
        field(list(vec![section("", long)])),
        "list.sections[0].rows[0].title"
    );
    let mut described = rows("a", 1);
    described[0].description = Some("d".repeat(72));
    assert!(list(vec![section("", described.clone())]).is_ok());
    described[0].description = Some("d".repeat(73));
    assert_eq!(
        field(list(vec![section("", described)])),
        "list.sections[0].rows[0].description"
    );
    let mut long_id = rows("a", 1);
    long_id[0].id = "i".repeat(201);
    assert_eq!(
        field(list(vec![section("", long_id)])),
        "list.sections[0].rows[0].id"
    );
}

#[test]
fn a_call_to_action_needs_a_short_label_and_an_https_url() {
    let cta = |text: &str, url: &str| {
        Interactive::new(
            "",
            "Track your parcel",
            "",
            Some(Action::CallToActionUrl {
                display_text: text.into(),
                url: url.into(),
            }),
        )
    };
    assert!(cta(&"t".repeat(20), "https://track.example/123").is_ok());
    assert_eq!(
        field(cta(&"t".repeat(21), "https://track.example")),
        "cta_url.display_text"
    );
    assert_eq!(field(cta("Track", "ftp://track.example")), "cta_url.url");
}

#[test]
fn a_location_is_on_the_globe() {
    assert!(Location::new(90.0, -180.0, "Pole", "").is_ok());
    assert_eq!(field(Location::new(90.5, 0.0, "", "")), "latitude");
    assert_eq!(field(Location::new(0.0, 180.5, "", "")), "longitude");
    assert_eq!(field(Location::new(f64::NAN, 0.0, "", "")), "latitude");
    assert_eq!(
        field(Location::new(0.0, f64::INFINITY, "", "")),
        "longitude"
    );
}

#[test]
fn a_reaction_is_one_emoji_or_empty_on_a_wamid() {
    assert!(Reaction::new("wamid.HBgL", "👍").is_ok());
    assert!(Reaction::new("wamid.HBgL", "👨‍👩‍👧‍👦").is_ok());
    assert!(Reaction::new("wamid.HBgL", "").is_ok());
    assert_eq!(field(Reaction::new("wamid.HBgL", "ok")), "emoji");
    assert_eq!(field(Reaction::new("", "👍")), "message_id");
    assert_eq!(field(Reaction::new("wamid x", "👍")), "message_id");
}

#[test]
fn summaries_are_what_the_customer_reads() {
    let doc = invoice();
    assert_eq!(media_summary(&doc), "[document: invoice.pdf] Your invoice");
    let b = buttons(&["Morning", "Afternoon"]).unwrap();
    assert_eq!(
        interactive_summary(&b),
        "Which slot suits you?\n[Morning]\n[Afternoon]"
    );
    let r = Reaction::new("wamid.x", "").unwrap();
    assert_eq!(reaction_summary(&r), "[reaction removed]");
}

#[test]
fn media_headers_go_on_buttons_and_calls_to_action_but_not_on_lists() {
    let source = || MediaSource::Link("https://files.example.com/p.jpg".into());
    let with_buttons = buttons(&["Yes"]).unwrap();
    let headed = with_buttons
        .clone()
        .with_media_header(MediaKind::Image, source(), None)
        .unwrap();
    assert!(interactive_summary(&headed).starts_with("[image]\n"));
    let doc = with_buttons
        .clone()
        .with_media_header(MediaKind::Document, source(), Some("a.pdf".into()))
        .unwrap();
    assert!(interactive_summary(&doc).starts_with("[document: a.pdf]\n"));

    let on_list = list(vec![ListSection {
        title: None,
        rows: rows("a", 1),
    }])
    .unwrap()
    .with_media_header(MediaKind::Image, source(), None);
    assert_eq!(field(on_list), "header_image");
    assert_eq!(
        field(
            with_buttons
                .clone()
                .with_media_header(MediaKind::Audio, source(), None)
        ),
        "header_text"
    );
    assert_eq!(
        field(with_buttons.clone().with_media_header(
            MediaKind::Video,
            source(),
            Some("v.mp4".into())
        )),
        "header_video.filename"
    );
    let texted = Interactive::new(
        "Delivery",
        "body",
        "",
        Some(Action::Buttons(vec![ReplyButton {
            id: "a".into(),
            title: "A".into(),
        }])),
    )
    .unwrap();
    assert_eq!(
        field(texted.with_media_header(MediaKind::Image, source(), None)),
        "header_image"
    );
}

/// Every length limit: accepted at the limit, refused one past it with the
/// field named.
#[test]
fn every_limit_holds_at_its_edge() {
    fn text(n: usize) -> String {
        "x".repeat(n)
    }
    fn one_button(id: String, title: String) -> Result<Interactive, Rejection> {
        Interactive::new(
            "",
            "body",
            "",
            Some(Action::Buttons(vec![ReplyButton { id, title }])),
        )
    }
    fn one_row(section: Option<String>, row: ListRow) -> Result<Interactive, Rejection> {
        list(vec![ListSection {
            title: section,
            rows: vec![row],
        }])
    }
    fn row(id: usize, title: usize, description: usize) -> ListRow {
        ListRow {
            id: text(id),
            title: text(title),
            description: Some(text(description)),
        }
    }
    fn list_button(n: usize) -> Result<Interactive, Rejection> {
        Interactive::new(
            "",
            "body",
            "",
            Some(Action::List {
                button: text(n),
                sections: vec![ListSection {
                    title: None,
                    rows: rows("a", 1),
                }],
            }),
        )
    }
    fn sections(n: usize) -> Result<Interactive, Rejection> {
        list(
            (0..n)
                .map(|i| ListSection {
                    title: Some(format!("S{i}")),
                    rows: vec![ListRow {
                        id: format!("s{i}"),
                        title: "Row".into(),
                        description: None,
                    }],
                })
                .collect(),
        )
    }
    fn ok(r: Result<Interactive, Rejection>) -> Result<(), Rejection> {
        r.map(|_| ())
    }
    type Case = (
        &'static str,
        Box<dyn Fn(usize) -> Result<(), Rejection>>,
        usize,
    );
    let cases: Vec<Case> = vec![
        (
            "caption",
            Box::new(|n| media(MediaKind::Image, "https://a.b/x", "", &text(n), "").map(|_| ())),
            1024,
        ),
        (
            "filename",
            Box::new(|n| media(MediaKind::Document, "https://a.b/x", "", "", &text(n)).map(|_| ())),
            240,
        ),
        (
            "buttons.buttons[0].id",
            Box::new(|n| ok(one_button(text(n), "A".into()))),
            256,
        ),
        (
            "buttons.buttons[0].title",
            Box::new(|n| ok(one_button("a".into(), text(n)))),
            20,
        ),
        ("list.button", Box::new(|n| ok(list_button(n))), 20),
        ("list.sections", Box::new(|n| ok(sections(n))), 10),
        (
            "list.sections[0].title",
            Box::new(|n| ok(one_row(Some(text(n)), row(1, 1, 1)))),
            24,
        ),
        (
            "list.sections[0].rows[0].id",
            Box::new(|n| ok(one_row(None, row(n, 1, 1)))),
            200,
        ),
        (
            "list.sections[0].rows[0].title",
            Box::new(|n| ok(one_row(None, row(1, n, 1)))),
            24,
        ),
        (
            "list.sections[0].rows[0].description",
            Box::new(|n| ok(one_row(None, row(1, 1, n)))),
            72,
        ),
    ];
    for (name, case, limit) in cases {
        assert!(case(limit).is_ok(), "{name} at {limit}");
        let err = case(limit + 1).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidContent, "{name}");
        assert_eq!(err.field.as_deref(), Some(name), "{name}");
    }
}
