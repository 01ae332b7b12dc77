//! Rules WhatsApp enforces after the fact, refused up front through the
//! real binary: the marketing pause by region (a US and a Canadian number
//! share +1), opt-outs, template text rules and the messaging limit.

mod common;

use common::*;
use tonic::Code;
use tonic_types::StatusExt;

const US_CUSTOMER: &str = "+12125550100";
const CANADIAN_CUSTOMER: &str = "+14165550100";

fn marketing_and_utility() -> [pb::Template; 2] {
    [
        template(
            "spring_sale",
            pb::TemplateCategory::Marketing,
            "Hello {{1}}, our spring sale starts this week.",
        ),
        template(
            "order_shipped",
            pb::TemplateCategory::Utility,
            "Hello {{1}}, your order has shipped today.",
        ),
    ]
}

async fn send_template(
    server: &Server,
    customer: &str,
    key: &str,
    name: &str,
    dry_run: bool,
) -> Result<pb::SendMessageResponse, tonic::Status> {
    server
        .gateway()
        .await
        .send_message(pb::SendMessageRequest {
            dry_run,
            ..template_send(customer, key, name, &["Ann"])
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn marketing_to_a_paused_region_is_refused_before_anything_is_stored() {
    let mut server = Server::start();
    for template in marketing_and_utility() {
        approve(&server, template).await;
    }
    for round in ["before a restart", "after a restart"] {
        for dry_run in [true, false] {
            let refused =
                refusal(send_template(&server, US_CUSTOMER, "m-us", "spring_sale", dry_run).await);
            assert_eq!(
                (refused.code, refused.reason.as_str()),
                (Code::FailedPrecondition, "MARKETING_PAUSED_FOR_REGION"),
                "{round}, dry run {dry_run}"
            );
            assert_eq!(refused.metadata["whatsapp_code"], "131049");
            assert_eq!(refused.metadata["region"], "US");
        }
        // Nothing was stored under the key: it is free for a utility send.
        send_template(
            &server,
            US_CUSTOMER,
            &format!("u-us-{round}"),
            "order_shipped",
            false,
        )
        .await
        .expect("a utility template to the US goes");
        // +1 but Canada: marketing goes.
        send_template(
            &server,
            CANADIAN_CUSTOMER,
            &format!("m-ca-{round}"),
            "spring_sale",
            false,
        )
        .await
        .expect("marketing to Canada goes");
        let counted = metric_sum(
            &server,
            "wagate_send_decisions_total",
            &["MARKETING_PAUSED_FOR_REGION"],
        )
        .await;
        assert_eq!(
            counted,
            Some(2.0),
            "refusals (a dry run too) are counted by reason"
        );
        server.restart().await;
    }
    // The key of the refused send was never used.
    send_template(&server, US_CUSTOMER, "m-us", "order_shipped", false)
        .await
        .expect("the refused send's key is free");
}

#[tokio::test]
async fn the_pause_follows_configuration() {
    let lifted = Server::start_with(&["--marketing-paused-regions", "none"]);
    let extended = Server::start_with(&["--marketing-paused-regions", "US,CA"]);
    for server in [&lifted, &extended] {
        for template in marketing_and_utility() {
            approve(server, template).await;
        }
    }
    send_template(&lifted, US_CUSTOMER, "m-1", "spring_sale", false)
        .await
        .expect("lifted: marketing to the US goes");
    let refused =
        refusal(send_template(&extended, CANADIAN_CUSTOMER, "m-2", "spring_sale", false).await);
    assert_eq!(refused.metadata["region"], "CA");
    let bad = refused_start(&[], &["--marketing-paused-regions", "USA"]);
    assert!(bad.contains("not a region"), "{bad}");
}
#[tokio::test]
async fn template_bodies_breaking_whatsapps_text_rules_are_refused_with_the_rule_named() {
    let server = Server::start();
    let mut templates = server.templates().await;
    for (body, rule) in [
        (
            "{{1}}, your order has shipped today.",
            "BODY_STARTS_WITH_VARIABLE",
        ),
        (
            "Your order has shipped today, {{1}}",
            "BODY_ENDS_WITH_VARIABLE",
        ),
        (
            "Dear guest, order {{1}} {{2}} has shipped.",
            "ADJACENT_VARIABLES",
        ),
        (
            "Order {{1}} for {{2}} shipped.",
            "TOO_MANY_VARIABLES_FOR_LENGTH",
        ),
    ] {
        let refused = refusal(
            templates
                .upsert_template(pb::UpsertTemplateRequest {
                    template: Some(template("bad_body", pb::TemplateCategory::Utility, body)),
                })
                .await,
        );
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (Code::InvalidArgument, "INVALID_TEMPLATE"),
            "{body}"
        );
        assert_eq!(refused.metadata["rule"], rule, "{body}");
        assert_eq!(refused.fields, ["template.body"], "{body}");
    }
    let missing = refusal(
        templates
            .get_template(pb::GetTemplateRequest {
                name: "bad_body".into(),
                language: "en_US".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(missing.reason, "TEMPLATE_NOT_FOUND", "nothing was stored");
    templates
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(template(
                "good_body",
                pb::TemplateCategory::Utility,
                "Dear {{1}}, order {{2}} has shipped and arrives tomorrow.",
            )),
        })
        .await
        .expect("a body within the rules is kept");
}

#[tokio::test]
async fn opt_outs_by_rpc_refuse_their_scope_across_a_restart_until_opt_in() {
    let mut server = Server::start();
    for template in marketing_and_utility() {
        approve(&server, template).await;
    }
    let customer = "+27821234567";
    let consent = server
        .gateway()
        .await
        .record_opt_out(pb::RecordOptOutRequest {
            business_number: BUSINESS.into(),
            customer_number: customer.into(),
            scope: pb::ConsentScope::All as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert_eq!(consent.opted_out(), pb::ConsentScope::All);
    assert_eq!(consent.opt_out_source(), pb::ConsentSource::Request);
    server.restart().await;
    for (key, name) in [("o-1", "spring_sale"), ("o-2", "order_shipped")] {
        for dry_run in [true, false] {
            let refused = refusal(send_template(&server, customer, key, name, dry_run).await);
            assert_eq!(
                (refused.code, refused.reason.as_str()),
                (Code::FailedPrecondition, "CUSTOMER_OPTED_OUT"),
                "{name}"
            );
            assert_eq!(refused.metadata["scope"], "ALL");
        }
    }
    assert_eq!(
        consent_of(&server, customer).await.opted_out(),
        pb::ConsentScope::All
    );
    let bad_scope = refusal(
        server
            .gateway()
            .await
            .record_opt_out(pb::RecordOptOutRequest {
                business_number: BUSINESS.into(),
                customer_number: customer.into(),
                scope: 9,
            })
            .await,
    );
    assert_eq!(bad_scope.reason, "INVALID_ENUM_VALUE");
    assert_eq!(
        opt_in(&server, customer).await.opted_out(),
        pb::ConsentScope::Unspecified
    );
    send_template(&server, customer, "o-3", "spring_sale", false)
        .await
        .expect("opted back in");
}

#[tokio::test]
async fn the_messaging_limit_refuses_the_next_new_customer_but_serves_reached_ones() {
    let mut server = Server::start_with(&["--messaging-limit", "3"]);
    for template in marketing_and_utility() {
        approve(&server, template).await;
    }
    let customer = |n: u32| format!("+2782555{n:04}");
    for n in 0..3 {
        send_template(
            &server,
            &customer(n),
            &format!("new-{n}"),
            "order_shipped",
            false,
        )
        .await
        .expect("within the limit");
    }
    // A customer who wrote in is answered inside the window, uncounted.
    server
        .gateway()
        .await
        .record_inbound(inbound(&customer(9), "wamid.limit-9"))
        .await
        .unwrap();
    send_template(&server, &customer(9), "writer", "order_shipped", false)
        .await
        .expect("inside the window the limit does not apply");
    for round in ["before a restart", "after a restart"] {
        for dry_run in [true, false] {
            let status = send_template(&server, &customer(3), "new-3", "order_shipped", dry_run)
                .await
                .unwrap_err();
            let wait = status
                .get_error_details()
                .retry_info()
                .expect("RetryInfo")
                .retry_delay
                .unwrap();
            assert!(
                (23 * 3600..=24 * 3600 + 60).contains(&wait.as_secs()),
                "{round}: {wait:?}"
            );
            let refused = refusal::<()>(Err(status));
            assert_eq!(
                (refused.code, refused.reason.as_str()),
                (Code::ResourceExhausted, "MESSAGING_LIMIT_REACHED"),
                "{round}, dry run {dry_run}"
            );
            assert_eq!(refused.metadata["messaging_limit"], "3");
        }
        // A customer reached in the last 24 hours is served, any category.
        send_template(
            &server,
            &customer(0),
            &format!("again-{round}"),
            "spring_sale",
            false,
        )
        .await
        .expect("a reached customer is not counted again");
        server.restart().await;
    }
    let bad = refused_start(&[], &["--messaging-limit", "lots"]);
    assert!(bad.contains("not a messaging limit"), "{bad}");
}

#[tokio::test]
async fn an_account_of_its_own_portfolio_sends_under_its_own_messaging_limit() {
    const BRAND: &str = "102290129340398";
    // The deployment's portfolio is unlimited; the brand's is not.
    let mut server = Server::start();
    let mut accounts = server.accounts().await;
    let limit = |limit| pb::Account {
        waba_id: BRAND.into(),
        display_name: "Brand".into(),
        messaging_limit: Some(pb::MessagingLimit { limit: Some(limit) }),
        ..Default::default()
    };
    let bad = refusal(
        accounts
            .create_account(pb::CreateAccountRequest {
                account: Some(limit(pb::messaging_limit::Limit::Customers(0))),
            })
            .await,
    );
    assert_eq!(
        (bad.code, bad.reason.as_str()),
        (Code::InvalidArgument, "INVALID_ACCOUNT")
    );
    assert_eq!(bad.fields, ["account.messaging_limit"]);
    accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(limit(pb::messaging_limit::Limit::Customers(1))),
        })
        .await
        .unwrap();
    accounts
        .register_number(pb::RegisterNumberRequest {
            number: BUSINESS.into(),
            phone_number_id: "106540352242922".into(),
            waba_id: BRAND.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let [_, utility] = marketing_and_utility();
    approve(
        &server,
        pb::Template {
            waba_id: BRAND.into(),
            ..utility
        },
    )
    .await;
    send_template(&server, "+27825550001", "first", "order_shipped", false)
        .await
        .expect("the brand's first customer");
    server.restart().await;
    let kept = server
        .accounts()
        .await
        .get_account(pb::GetAccountRequest {
            waba_id: BRAND.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(
        kept.messaging_limit.and_then(|l| l.limit),
        Some(pb::messaging_limit::Limit::Customers(1))
    );
    let refused =
        refusal(send_template(&server, "+27825550002", "second", "order_shipped", false).await);
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (Code::ResourceExhausted, "MESSAGING_LIMIT_REACHED")
    );
    assert_eq!(refused.metadata["messaging_limit"], "1");
    // Unlimited, set through the API: the brand's next customer goes.
    server
        .accounts()
        .await
        .update_account(pb::UpdateAccountRequest {
            account: Some(limit(pb::messaging_limit::Limit::Unlimited(true))),
        })
        .await
        .unwrap();
    send_template(&server, "+27825550002", "second", "order_shipped", false)
        .await
        .expect("unlimited");
}
