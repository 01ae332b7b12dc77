//! The Gateway service end to end: a real server, the generated tonic client.

mod common;

use chrono::{SubsecRound, TimeDelta, Utc};
use common::*;
use pb::{InboundOutcome, PricingCategory, TemplateCategory, WindowState};
use tonic::Code;

const CUSTOMER: &str = "+27821234567";

#[tokio::test]
async fn inbound_opens_extends_and_dedupes_the_window() {
    let server = Server::start();
    let mut gateway = server.gateway().await;

    let never = window(&server, CUSTOMER).await;
    assert_eq!(never.state(), WindowState::NeverOpened);
    assert_eq!((never.expires_at, never.last_inbound_at), (None, None));
    assert_eq!(never.remaining.unwrap().seconds, 0);

    let before = Utc::now();
    let opened = gateway
        .record_inbound(pb::RecordInboundRequest {
            business_number: "+1 (555) 000-1111".into(),
            customer_number: "27 82 123 4567".into(),
            ..inbound(CUSTOMER, "wamid.A")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.outcome(), InboundOutcome::Opened);
    let w = opened.window.unwrap();
    assert_eq!(
        (w.business_number.as_str(), w.customer_number.as_str()),
        (BUSINESS, CUSTOMER),
        "normalised"
    );
    assert_eq!(w.state(), WindowState::Open);
    let expires = time(w.expires_at.as_ref().unwrap());
    assert!(
        expires >= before + TimeDelta::hours(24) && expires <= Utc::now() + TimeDelta::hours(24)
    );
    assert!(w.remaining.unwrap().seconds > 86_000);

    let repeat = gateway
        .record_inbound(inbound(CUSTOMER, "wamid.A"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.outcome(), InboundOutcome::Duplicate);
    assert_eq!(
        repeat.window.unwrap().expires_at,
        w.expires_at,
        "a repeat changes nothing"
    );

    let extended = gateway
        .record_inbound(inbound(CUSTOMER, "wamid.B"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(extended.outcome(), InboundOutcome::Extended);
    assert!(time(extended.window.unwrap().expires_at.as_ref().unwrap()) > expires);

    let read = window(&server, CUSTOMER).await;
    assert_eq!(read.state(), WindowState::Open);
}

#[tokio::test]
async fn late_and_old_inbound_never_shrink_or_open() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "now"))
        .await
        .unwrap();
    let current = window(&server, CUSTOMER).await;

    let late = pb::RecordInboundRequest {
        received_at: Some(timestamp(Utc::now() - TimeDelta::hours(3))),
        ..inbound(CUSTOMER, "late")
    };
    let reply = gateway.record_inbound(late).await.unwrap().into_inner();
    assert_eq!(reply.outcome(), InboundOutcome::Unchanged);
    assert_eq!(reply.window.unwrap().expires_at, current.expires_at);

    let other = "+27820000002";
    let old = pb::RecordInboundRequest {
        received_at: Some(timestamp(Utc::now() - TimeDelta::hours(25))),
        ..inbound(other, "old")
    };
    let reply = gateway
        .record_inbound(old.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outcome(), InboundOutcome::TooOld);
    assert_eq!(reply.window.unwrap().state(), WindowState::NeverOpened);
    let again = gateway.record_inbound(old).await.unwrap().into_inner();
    assert_eq!(
        again.outcome(),
        InboundOutcome::Duplicate,
        "recorded for dedupe"
    );
}

#[tokio::test]
async fn a_window_closes_at_24h() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    // An inbound from 24h minus 1.5s ago: open now, closed two seconds later.
    // wagate keeps microseconds, so the test speaks in microseconds too.
    let received_at =
        (Utc::now() - TimeDelta::hours(24) + TimeDelta::milliseconds(1500)).trunc_subsecs(6);
    let reply = gateway
        .record_inbound(pb::RecordInboundRequest {
            received_at: Some(timestamp(received_at)),
            ..inbound(CUSTOMER, "edge")
        })
        .await
        .unwrap()
        .into_inner();
    let opened = reply.window.unwrap();
    assert_eq!(opened.state(), WindowState::Open);
    assert_eq!(
        time(opened.expires_at.as_ref().unwrap()),
        received_at + TimeDelta::hours(24)
    );
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let closed = window(&server, CUSTOMER).await;
    assert_eq!(closed.state(), WindowState::Closed);
    assert_eq!(
        closed.remaining.unwrap(),
        prost_types::Duration {
            seconds: 0,
            nanos: 0
        }
    );
    assert_eq!(closed.last_inbound_at, Some(timestamp(received_at)));
    let err = refusal(gateway.send_message(text(CUSTOMER, "late", "hello?")).await);
    assert_eq!(err.reason, "WINDOW_CLOSED");
}

#[tokio::test]
async fn voice_calls_open_windows_like_messages() {
    let server = Server::start();
    let reply = server
        .gateway()
        .await
        .record_inbound(pb::RecordInboundRequest {
            kind: pb::InboundKind::VoiceCall as i32,
            ..inbound(CUSTOMER, "call-1")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outcome(), InboundOutcome::Opened);
    assert_eq!(window(&server, CUSTOMER).await.state(), WindowState::Open);
}

#[tokio::test]
async fn inbound_refusals() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "taken"))
        .await
        .unwrap();
    let cases = [
        (
            inbound("12345", "m"),
            Code::InvalidArgument,
            "INVALID_PHONE_NUMBER",
            Some("customer_number"),
        ),
        (
            pb::RecordInboundRequest {
                business_number: "0821234567".into(),
                ..inbound(CUSTOMER, "m")
            },
            Code::InvalidArgument,
            "INVALID_PHONE_NUMBER",
            Some("business_number"),
        ),
        (
            inbound(CUSTOMER, ""),
            Code::InvalidArgument,
            "INVALID_MESSAGE_ID",
            Some("message_id"),
        ),
        (
            pb::RecordInboundRequest {
                received_at: Some(timestamp(Utc::now() + TimeDelta::minutes(6))),
                ..inbound(CUSTOMER, "m")
            },
            Code::InvalidArgument,
            "RECEIVED_AT_IN_FUTURE",
            Some("received_at"),
        ),
        (
            pb::RecordInboundRequest {
                received_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..inbound(CUSTOMER, "m")
            },
            Code::InvalidArgument,
            "INVALID_TIMESTAMP",
            Some("received_at"),
        ),
        (
            pb::RecordInboundRequest {
                entry_point: 42,
                ..inbound(CUSTOMER, "m")
            },
            Code::InvalidArgument,
            "INVALID_ENUM_VALUE",
            Some("entry_point"),
        ),
        (
            inbound("+27820000009", "taken"),
            Code::AlreadyExists,
            "INBOUND_MESSAGE_ID_REUSED",
            None,
        ),
    ];
    for (request, code, reason, field) in cases {
        let err = refusal(gateway.record_inbound(request).await);
        assert_eq!(
            (err.code, err.reason.as_str(), err.domain.as_str()),
            (code, reason, "wagate"),
            "{err:?}"
        );
        match field {
            Some(field) => {
                assert_eq!(err.fields, [field], "{err:?}");
                assert!(
                    err.message.starts_with(field),
                    "message names the field: {}",
                    err.message
                );
            }
            None => assert!(err.fields.is_empty()),
        }
    }
    // A skew of just under 5 minutes is clock drift, not an error.
    let skewed = pb::RecordInboundRequest {
        received_at: Some(timestamp(Utc::now() + TimeDelta::minutes(4))),
        ..inbound("+27820000003", "skewed")
    };
    assert_eq!(
        gateway
            .record_inbound(skewed)
            .await
            .unwrap()
            .into_inner()
            .outcome(),
        InboundOutcome::Opened
    );
    assert_eq!(
        window(&server, "+27820000009").await.state(),
        WindowState::NeverOpened
    );
}

#[tokio::test]
async fn a_trunk_prefix_does_not_split_a_customers_window() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound("+44 (0) 20 7946 0958", "uk-in"))
        .await
        .unwrap();
    // The same customer written as E.164 finds the window the inbound opened.
    assert_eq!(
        window(&server, "+442079460958").await.state(),
        WindowState::Open
    );
    gateway
        .send_message(text("+44 20 7946 0958", "uk-1", "Hello"))
        .await
        .expect("free-form inside the window the (0) inbound opened");

    // A country code no country has is refused with the rule it broke.
    let err = refusal(
        gateway
            .record_inbound(inbound("+99912345678", "nowhere"))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.fields.as_slice()),
        (
            Code::InvalidArgument,
            "INVALID_PHONE_NUMBER",
            ["customer_number".to_owned()].as_slice()
        )
    );
    assert!(
        err.message.contains("country code that exists"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn free_form_needs_an_open_window() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let err = refusal(gateway.send_message(text(CUSTOMER, "k0", "hello")).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::FailedPrecondition, "WINDOW_CLOSED")
    );
    assert_eq!(err.metadata["whatsapp_code"], "131047");

    gateway
        .record_inbound(inbound(CUSTOMER, "in"))
        .await
        .unwrap();
    let sent = gateway
        .send_message(text(CUSTOMER, "k1", "Hi Ann 👋"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.kind(), pb::MessageKind::FreeForm);
    assert_eq!(sent.rendered_text, "Hi Ann 👋");
    assert_eq!(sent.pricing_category(), PricingCategory::Service);
    assert!(!sent.billable);
    assert_eq!(sent.status(), pb::MessageStatus::Accepted);
    assert_eq!(sent.template_category(), TemplateCategory::Unspecified);
    let id = uuid::Uuid::parse_str(&sent.message_id).expect("message id is a UUID");
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn send_refusals() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "in"))
        .await
        .unwrap();
    let long = "x".repeat(4097);
    let cases = [
        (text(CUSTOMER, "k", ""), "INVALID_TEXT", "text.body"),
        (text(CUSTOMER, "k", &long), "INVALID_TEXT", "text.body"),
        (
            text(CUSTOMER, "", "hi"),
            "INVALID_IDEMPOTENCY_KEY",
            "idempotency_key",
        ),
        (
            text(CUSTOMER, &"k".repeat(129), "hi"),
            "INVALID_IDEMPOTENCY_KEY",
            "idempotency_key",
        ),
        (
            text("+27", "k", "hi"),
            "INVALID_PHONE_NUMBER",
            "customer_number",
        ),
        (
            pb::SendMessageRequest {
                content: None,
                ..text(CUSTOMER, "k", "hi")
            },
            "MISSING_CONTENT",
            "content",
        ),
        (
            template_send(CUSTOMER, "k", "Bad-Name", &[]),
            "INVALID_TEMPLATE",
            "template.name",
        ),
    ];
    for (request, reason, field) in cases {
        let err = refusal(gateway.send_message(request).await);
        assert_eq!(
            (err.code, err.reason.as_str()),
            (Code::InvalidArgument, reason),
            "{err:?}"
        );
        assert_eq!(err.fields, [field]);
    }
    assert_eq!(window(&server, CUSTOMER).await.free_until, None);
}

#[tokio::test]
async fn idempotent_sends_replay_and_reused_keys_are_refused() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "in"))
        .await
        .unwrap();

    let dry = gateway
        .send_message(pb::SendMessageRequest {
            dry_run: true,
            ..text(CUSTOMER, "order-1", "shipped")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run);
    let first = gateway
        .send_message(text(CUSTOMER, "order-1", "shipped"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        first.message_id, dry.message_id,
        "the dry run stored nothing"
    );
    assert!(!first.dry_run);
    let retry = gateway
        .send_message(text(CUSTOMER, "order-1", "shipped"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, first, "the first answer again");

    let err = refusal(
        gateway
            .send_message(text(CUSTOMER, "order-1", "cancelled"))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
    );
    let err = refusal(
        gateway
            .send_message(text("+27820000002", "order-1", "shipped"))
            .await,
    );
    assert_eq!(
        err.reason, "IDEMPOTENCY_KEY_REUSED",
        "another customer is another request"
    );

    // Concurrent retries of one key all get the same message.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move { gateway.send_message(text(CUSTOMER, "burst", "once")).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().into_inner().message_id);
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn template_sends_are_gated_and_priced() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    approved_template(
        &server,
        "shipping_update",
        TemplateCategory::Utility,
        "Your order {{1}} ships {{2}} as promised.",
    )
    .await;
    approved_template(
        &server,
        "weekly_offer",
        TemplateCategory::Marketing,
        "Hi {{1}}, 10% off",
    )
    .await;
    approved_template(
        &server,
        "login_code",
        TemplateCategory::Authentication,
        "Your code is {{1}}",
    )
    .await;

    // Outside any window: utility is billable, rendered exactly.
    let sent = gateway
        .send_message(template_send(
            CUSTOMER,
            "t1",
            "shipping_update",
            &["A-7", "today"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.kind(), pb::MessageKind::Template);
    assert_eq!(
        sent.rendered_text,
        "Your order A-7 ships today as promised."
    );
    assert_eq!(sent.template_category(), TemplateCategory::Utility);
    assert_eq!(
        (sent.pricing_category(), sent.billable),
        (PricingCategory::Utility, true)
    );

    gateway
        .record_inbound(inbound(CUSTOMER, "in"))
        .await
        .unwrap();
    let inside = gateway
        .send_message(template_send(
            CUSTOMER,
            "t2",
            "shipping_update",
            &["A-8", "now"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (inside.pricing_category(), inside.billable),
        (PricingCategory::Utility, false)
    );
    for (name, category, key) in [
        ("weekly_offer", PricingCategory::Marketing, "t3"),
        ("login_code", PricingCategory::Authentication, "t4"),
    ] {
        let sent = gateway
            .send_message(template_send(CUSTOMER, key, name, &["x"]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (sent.pricing_category(), sent.billable),
            (category, true),
            "{name}"
        );
    }
}

#[tokio::test]
async fn template_send_refusals_carry_whatsapp_codes() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    let mut templates = server.templates().await;
    approved_template(
        &server,
        "greet",
        TemplateCategory::Utility,
        "Hi {{1}}, thanks for your order.",
    )
    .await;

    let err = refusal(
        gateway
            .send_message(template_send(CUSTOMER, "a", "missing", &["x"]))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::NotFound, "TEMPLATE_NOT_FOUND")
    );
    assert_eq!(err.metadata["whatsapp_code"], "132001");

    let err = refusal(
        gateway
            .send_message(template_send(CUSTOMER, "b", "greet", &[]))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::InvalidArgument, "TEMPLATE_PARAMETER_MISMATCH")
    );
    assert_eq!(err.metadata["whatsapp_code"], "132000");
    assert_eq!(err.fields, ["template.body_parameters"]);

    let err = refusal(
        gateway
            .send_message(template_send(CUSTOMER, "c", "greet", &["two\nlines"]))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (Code::InvalidArgument, "INVALID_TEMPLATE_PARAMETER")
    );
    assert_eq!(err.fields, ["template.body_parameters.positional[0]"]);

    for (status, code) in [
        (pb::TemplateStatus::Paused, Some("132015")),
        (pb::TemplateStatus::Disabled, Some("132016")),
        (pb::TemplateStatus::Rejected, None),
    ] {
        templates
            .set_template_status(pb::SetTemplateStatusRequest {
                name: "greet".into(),
                language: "en_US".into(),
                status: status as i32,
                reason: "quality".into(),
                waba_id: String::new(),
            })
            .await
            .unwrap();
        let err = refusal(
            gateway
                .send_message(template_send(CUSTOMER, "d", "greet", &["x"]))
                .await,
        );
        assert_eq!(
            (err.code, err.reason.as_str()),
            (Code::FailedPrecondition, "TEMPLATE_NOT_APPROVED")
        );
        let name = status.as_str_name().trim_start_matches("TEMPLATE_STATUS_");
        assert_eq!(err.metadata["status"], name);
        assert_eq!(err.metadata.get("whatsapp_code").map(String::as_str), code);
    }
}

#[tokio::test]
async fn click_to_whatsapp_ad_makes_the_first_reply_free_for_72h() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    approved_template(
        &server,
        "weekly_offer",
        TemplateCategory::Marketing,
        "Hi {{1}}, 10% off",
    )
    .await;
    gateway
        .record_inbound(pb::RecordInboundRequest {
            entry_point: pb::EntryPoint::ClickToWhatsappAd as i32,
            ..inbound(CUSTOMER, "ad-click")
        })
        .await
        .unwrap();
    assert_eq!(
        window(&server, CUSTOMER).await.free_until,
        None,
        "starts at the first reply"
    );

    let reply = gateway
        .send_message(text(CUSTOMER, "r1", "Thanks for reaching out"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.pricing_category(), reply.billable),
        (PricingCategory::ReferralConversion, false)
    );
    let accepted_at = time(reply.accepted_at.as_ref().unwrap());
    let free_until = time(reply.free_until.as_ref().unwrap());
    assert_eq!(free_until, accepted_at + TimeDelta::hours(72));
    assert_eq!(window(&server, CUSTOMER).await.free_until, reply.free_until);

    let offer = gateway
        .send_message(template_send(CUSTOMER, "r2", "weekly_offer", &["Ann"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (offer.pricing_category(), offer.billable),
        (PricingCategory::ReferralConversion, false)
    );
    assert_eq!(
        offer.free_until, reply.free_until,
        "the second send does not restart it"
    );

    // An organic conversation gets nothing free.
    gateway
        .record_inbound(inbound("+27820000002", "organic"))
        .await
        .unwrap();
    let paid = gateway
        .send_message(template_send("+27820000002", "r3", "weekly_offer", &["Bo"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (paid.pricing_category(), paid.billable),
        (PricingCategory::Marketing, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_windows_pages_over_ten_thousand_windows_each_once_in_expiry_order() {
    const WINDOWS: usize = 10_000;
    const WRITERS: usize = 32;
    let server = Server::start();
    let gateway = server.gateway().await;
    let base = Utc::now().trunc_subsecs(3) - TimeDelta::hours(1);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                for n in (writer..WINDOWS).step_by(WRITERS) {
                    // A few windows share an expiry, so ties are ordered too.
                    let at = base + TimeDelta::milliseconds((n / 3) as i64);
                    gateway
                        .record_inbound(pb::RecordInboundRequest {
                            received_at: Some(timestamp(at)),
                            ..inbound(&format!("+2782{n:07}"), &format!("list-{n}"))
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let mut gateway = server.gateway().await;
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = gateway
            .list_windows(pb::ListWindowsRequest {
                page_size: 997,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.windows.len() <= 997);
        listed.extend(page.windows);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, WINDOWS.div_ceil(997));
    assert_eq!(listed.len(), WINDOWS);
    let keys: Vec<_> = listed
        .iter()
        .map(|w| {
            (
                time(w.expires_at.as_ref().unwrap()),
                w.business_number.clone(),
                w.customer_number.clone(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "each once, in expiry order");
    assert!(listed.iter().all(|w| w.state() == WindowState::Open));

    // Open windows closing within the first half-second of the run: 1,500.
    let soon = gateway
        .list_windows(pb::ListWindowsRequest {
            business_number: BUSINESS.into(),
            states: vec![WindowState::Open as i32],
            expires_before: Some(timestamp(
                base + TimeDelta::hours(24) + TimeDelta::milliseconds(500),
            )),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(soon.windows.len(), 1000);
    assert!(!soon.next_page_token.is_empty());
    let closed = gateway
        .list_windows(pb::ListWindowsRequest {
            states: vec![WindowState::Closed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(closed.windows.is_empty() && closed.next_page_token.is_empty());
}

#[tokio::test]
async fn list_windows_refuses_bad_filters_and_tokens() {
    let server = Server::start();
    let mut gateway = server.gateway().await;
    gateway
        .record_inbound(inbound(CUSTOMER, "lw-1"))
        .await
        .unwrap();
    let cases = [
        (
            pb::ListWindowsRequest {
                states: vec![WindowState::NeverOpened as i32],
                ..Default::default()
            },
            "INVALID_WINDOW_FILTER",
            "states",
        ),
        (
            pb::ListWindowsRequest {
                states: vec![WindowState::Unspecified as i32],
                ..Default::default()
            },
            "INVALID_WINDOW_FILTER",
            "states",
        ),
        (
            pb::ListWindowsRequest {
                states: vec![42],
                ..Default::default()
            },
            "INVALID_ENUM_VALUE",
            "states",
        ),
        (
            pb::ListWindowsRequest {
                page_size: -1,
                ..Default::default()
            },
            "INVALID_PAGE_SIZE",
            "page_size",
        ),
        (
            pb::ListWindowsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "INVALID_PAGE_TOKEN",
            "page_token",
        ),
        (
            pb::ListWindowsRequest {
                business_number: "12".into(),
                ..Default::default()
            },
            "INVALID_PHONE_NUMBER",
            "business_number",
        ),
        (
            pb::ListWindowsRequest {
                expires_before: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..Default::default()
            },
            "INVALID_TIMESTAMP",
            "expires_before",
        ),
    ];
    for (request, reason, field) in cases {
        let refused = refusal(gateway.list_windows(request.clone()).await);
        assert_eq!(refused.code, Code::InvalidArgument, "{request:?}");
        assert_eq!(refused.reason, reason, "{request:?}");
        assert_eq!(refused.fields, [field], "{request:?}");
    }
    // A template page's token is not a window page's.
    for name in ["first_tpl", "second_tpl"] {
        approved_template(
            &server,
            name,
            TemplateCategory::Utility,
            "Hi {{1}}, thanks for your order.",
        )
        .await;
    }
    let templates_token = server
        .templates()
        .await
        .list_templates(pb::ListTemplatesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(
        templates_token.is_empty() || {
            let refused = refusal(
                gateway
                    .list_windows(pb::ListWindowsRequest {
                        page_token: templates_token,
                        ..Default::default()
                    })
                    .await,
            );
            refused.reason == "INVALID_PAGE_TOKEN"
        }
    );
    // Nothing else was affected.
    let listed = gateway
        .list_windows(pb::ListWindowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.windows.len(), 1);
    assert_eq!(listed.windows[0].customer_number, CUSTOMER);
}
