//! The TemplateRegistry service end to end.

mod common;

use common::*;
use pb::{TemplateCategory, TemplateStatus};
use tonic::Code;

fn get(name: &str) -> pb::GetTemplateRequest {
    pb::GetTemplateRequest {
        name: name.into(),
        language: "en_US".into(),
        waba_id: String::new(),
    }
}

fn upsert(template: pb::Template) -> pb::UpsertTemplateRequest {
    pb::UpsertTemplateRequest {
        template: Some(template),
    }
}

fn set_status(name: &str, status: TemplateStatus, reason: &str) -> pb::SetTemplateStatusRequest {
    pb::SetTemplateStatusRequest {
        name: name.into(),
        language: "en_US".into(),
        status: status as i32,
        reason: reason.into(),
        waba_id: String::new(),
    }
}

#[tokio::test]
async fn upsert_get_approve_edit_and_delete() {
    let server = Server::start();
    let mut templates = server.templates().await;
    let full = pb::Template {
        header_text: "Order {{1}}".into(),
        footer_text: "Reply STOP to opt out".into(),
        buttons: vec![
            pb::TemplateButton {
                kind: Some(pb::template_button::Kind::Url(pb::UrlButton {
                    text: "Track".into(),
                    url: "https://example.com/t/{{1}}".into(),
                })),
            },
            pb::TemplateButton {
                kind: Some(pb::template_button::Kind::PhoneNumber(
                    pb::PhoneNumberButton {
                        text: "Call us".into(),
                        phone_number: "+1 555 000 2222".into(),
                    },
                )),
            },
        ],
        status: TemplateStatus::Approved as i32, // ignored: review decides
        ..template(
            "shipping_update",
            TemplateCategory::Utility,
            "Hi {{1}}, your order {{2}} ships today",
        )
    };
    let created = templates
        .upsert_template(upsert(full.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let stored = created.template.unwrap();
    assert_eq!(stored.status(), TemplateStatus::Pending);
    assert_eq!(stored.parameter_format(), pb::ParameterFormat::Positional);
    assert_eq!(stored.create_time, stored.update_time);
    let phone = match &stored.buttons[1].kind {
        Some(pb::template_button::Kind::PhoneNumber(b)) => b.phone_number.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(phone, "+15550002222", "normalised");

    let approved = templates
        .set_template_status(set_status("shipping_update", TemplateStatus::Approved, ""))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(approved.status(), TemplateStatus::Approved);

    let same = templates
        .upsert_template(upsert(full.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!same.created);
    assert_eq!(
        same.template.unwrap().status(),
        TemplateStatus::Approved,
        "an identical upsert keeps approval"
    );

    let edited = pb::Template {
        body: "Hi {{1}}, your order {{2}} ships tomorrow".into(),
        ..full
    };
    let edited = templates
        .upsert_template(upsert(edited))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(
        edited.status(),
        TemplateStatus::Pending,
        "an edit goes back to review"
    );
    assert_eq!(edited.create_time, stored.create_time);

    let read = templates
        .get_template(get("shipping_update"))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(read, edited);

    templates
        .delete_template(pb::DeleteTemplateRequest {
            name: "shipping_update".into(),
            language: "en_US".into(),
            waba_id: String::new(),
        })
        .await
        .unwrap();
    let err = refusal(templates.get_template(get("shipping_update")).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::NotFound, "TEMPLATE_NOT_FOUND")
    );
}

#[tokio::test]
async fn set_status_records_reason() {
    let server = Server::start();
    let mut templates = server.templates().await;
    templates
        .upsert_template(upsert(template(
            "promo",
            TemplateCategory::Marketing,
            "Sale!",
        )))
        .await
        .unwrap();
    let rejected = templates
        .set_template_status(set_status(
            "promo",
            TemplateStatus::Rejected,
            "INVALID_FORMAT",
        ))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(rejected.status(), TemplateStatus::Rejected);
    assert_eq!(rejected.status_reason, "INVALID_FORMAT");
}

#[tokio::test]
async fn list_pages_and_filters() {
    let server = Server::start();
    let mut templates = server.templates().await;
    for i in 0..7 {
        let category = if i % 2 == 0 {
            TemplateCategory::Utility
        } else {
            TemplateCategory::Marketing
        };
        templates
            .upsert_template(upsert(template(&format!("t{i}"), category, "Body")))
            .await
            .unwrap();
    }
    for name in ["t0", "t1", "t2"] {
        templates
            .set_template_status(set_status(name, TemplateStatus::Approved, ""))
            .await
            .unwrap();
    }

    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = templates
            .list_templates(pb::ListTemplatesRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.templates.len() <= 3);
        names.extend(page.templates.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);

    let approved_utility = templates
        .list_templates(pb::ListTemplatesRequest {
            status: TemplateStatus::Approved as i32,
            category: TemplateCategory::Utility as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = approved_utility
        .templates
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["t0", "t2"]);
    assert!(approved_utility.next_page_token.is_empty());
}

#[tokio::test]
async fn registry_refusals() {
    let server = Server::start();
    let mut templates = server.templates().await;
    let base = template(
        "ok_name",
        TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    );
    let invalid = [
        (
            pb::Template {
                name: "Bad Name".into(),
                ..base.clone()
            },
            "template.name",
        ),
        (
            pb::Template {
                language: "english".into(),
                ..base.clone()
            },
            "template.language",
        ),
        (
            pb::Template {
                category: 0,
                ..base.clone()
            },
            "template.category",
        ),
        (
            pb::Template {
                body: String::new(),
                ..base.clone()
            },
            "template.body",
        ),
        (
            pb::Template {
                body: "Hi {{1}} {{3}}".into(),
                ..base.clone()
            },
            "template.body",
        ),
        (
            pb::Template {
                body: "Hi {{1}} {{name}}".into(),
                ..base.clone()
            },
            "template.body",
        ),
        (
            pb::Template {
                body: "Hi {{1".into(),
                ..base.clone()
            },
            "template.body",
        ),
        (
            pb::Template {
                header_text: "{{1}} {{1}}".into(),
                ..base.clone()
            },
            "template.header_text",
        ),
        (
            pb::Template {
                footer_text: "Bye {{1}}".into(),
                ..base.clone()
            },
            "template.footer_text",
        ),
        (
            pb::Template {
                buttons: vec![pb::TemplateButton { kind: None }],
                ..base.clone()
            },
            "template.buttons[0].kind",
        ),
    ];
    for (template, field) in invalid {
        let err = refusal(templates.upsert_template(upsert(template)).await);
        assert_eq!(
            (err.code, err.reason.as_str()),
            (Code::InvalidArgument, "INVALID_TEMPLATE"),
            "{field}"
        );
        assert_eq!(err.fields, [field]);
    }
    let err = refusal(
        templates
            .upsert_template(pb::UpsertTemplateRequest { template: None })
            .await,
    );
    assert_eq!(
        (err.reason.as_str(), err.fields.as_slice()),
        ("INVALID_TEMPLATE", &["template".to_owned()][..])
    );
    let err = refusal(
        templates
            .upsert_template(upsert(pb::Template {
                category: 9,
                ..base.clone()
            }))
            .await,
    );
    assert_eq!(err.reason, "INVALID_ENUM_VALUE");

    let err = refusal(
        templates
            .set_template_status(set_status("missing", TemplateStatus::Approved, ""))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::NotFound, "TEMPLATE_NOT_FOUND")
    );
    templates.upsert_template(upsert(base)).await.unwrap();
    let err = refusal(
        templates
            .set_template_status(set_status("ok_name", TemplateStatus::Unspecified, ""))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::InvalidArgument, "INVALID_TEMPLATE_STATUS")
    );
    let err = refusal(
        templates
            .set_template_status(set_status(
                "ok_name",
                TemplateStatus::Rejected,
                &"r".repeat(1025),
            ))
            .await,
    );
    assert_eq!(
        (err.reason.as_str(), err.fields.as_slice()),
        ("INVALID_TEMPLATE_STATUS", &["reason".to_owned()][..])
    );
    let unchanged = templates
        .get_template(get("ok_name"))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(unchanged.status(), TemplateStatus::Pending);

    let err = refusal(
        templates
            .delete_template(pb::DeleteTemplateRequest {
                name: "missing".into(),
                language: "en_US".into(),
                waba_id: String::new(),
            })
            .await,
    );
    assert_eq!(err.reason, "TEMPLATE_NOT_FOUND");
    let err = refusal(
        templates
            .get_template(pb::GetTemplateRequest {
                name: "x".into(),
                language: String::new(),
                waba_id: String::new(),
            })
            .await,
    );
    assert_eq!(
        (err.reason.as_str(), err.fields.as_slice()),
        ("INVALID_TEMPLATE", &["language".to_owned()][..])
    );

    let err = refusal(
        templates
            .list_templates(pb::ListTemplatesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::InvalidArgument, "INVALID_PAGE_TOKEN")
    );
    let err = refusal(
        templates
            .list_templates(pb::ListTemplatesRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.reason, "INVALID_PAGE_SIZE");
    let err = refusal(
        templates
            .list_templates(pb::ListTemplatesRequest {
                status: 99,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (err.reason.as_str(), err.fields.as_slice()),
        ("INVALID_ENUM_VALUE", &["status".to_owned()][..])
    );
}
