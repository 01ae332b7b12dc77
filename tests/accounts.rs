//! The account registry through the real binary: accounts and numbers
//! created, read, listed and removed over gRPC; every refusal with its
//! reason; a restart keeps them; `--phone-number-ids` registers its numbers
//! in the default account; two replicas on one PostgreSQL see one registry.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use common::*;
use tonic::Code;

const BRAND_A: &str = "102290129340398";
const BRAND_B: &str = "203301230451409";

fn account(waba_id: &str, name: &str) -> pb::Account {
    pb::Account {
        waba_id: waba_id.into(),
        display_name: name.into(),
        ..Default::default()
    }
}

fn register(number: &str, id: &str, waba_id: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number: number.into(),
        phone_number_id: id.into(),
        waba_id: waba_id.into(),
        ..Default::default()
    }
}

async fn create(server: &Server, account: pb::Account) -> pb::Account {
    server
        .accounts()
        .await
        .create_account(pb::CreateAccountRequest {
            account: Some(account),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

fn numbers_of(numbers: &[pb::BusinessNumber]) -> Vec<(&str, &str, &str)> {
    numbers
        .iter()
        .map(|n| {
            (
                n.number.as_str(),
                n.phone_number_id.as_str(),
                n.waba_id.as_str(),
            )
        })
        .collect()
}

#[tokio::test]
async fn accounts_and_numbers_are_kept_listed_and_survive_a_restart() {
    let mut server = Server::start();
    let created = create(
        &server,
        pb::Account {
            delivery: true,
            credentials: Some(pb::account::Credentials::TokenEnv("BRAND_A_TOKEN".into())),
            ..account(BRAND_A, "Brand A")
        },
    )
    .await;
    assert_eq!(created.waba_id, BRAND_A);
    assert!(created.create_time.is_some());
    assert_eq!(
        created.credentials,
        Some(pb::account::Credentials::TokenEnv("BRAND_A_TOKEN".into()))
    );
    create(&server, account(BRAND_B, "Brand B")).await;
    let mut accounts = server.accounts().await;
    // Any common format of the number is stored as E.164.
    let registered = accounts
        .register_number(register("+1 (555) 000-1111", "1065", BRAND_A))
        .await
        .unwrap()
        .into_inner();
    assert!(registered.changed);
    assert_eq!(registered.number.unwrap().number, BUSINESS);
    let again = accounts
        .register_number(register(BUSINESS, "1065", BRAND_A))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    accounts
        .register_number(register("+15550002222", "2077", BRAND_B))
        .await
        .unwrap();

    server.restart().await;
    let mut accounts = server.accounts().await;
    let listed = accounts
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|a| (a.waba_id.as_str(), a.display_name.as_str()))
        .collect();
    assert_eq!(names, [(BRAND_A, "Brand A"), (BRAND_B, "Brand B")]);
    // The start syncs the account's templates in the background; its token
    // is not set here, so that sync fails and says why. Under a loaded
    // machine the first read can come before it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (got, got_account) = loop {
        let got = accounts
            .get_account(pb::GetAccountRequest {
                waba_id: BRAND_A.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let got_account = got.account.clone().unwrap();
        if got_account.template_sync.is_some() {
            break (got, got_account);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the start's template sync recorded nothing in 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let start_sync = got_account.template_sync.clone().unwrap();
    assert!(
        start_sync.error.contains("BRAND_A_TOKEN is not set"),
        "{start_sync:?}"
    );
    assert_eq!(
        pb::Account {
            template_sync: None,
            ..got_account
        },
        created
    );
    assert_eq!(numbers_of(&got.numbers), [(BUSINESS, "1065", BRAND_A)]);
    let all = accounts
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .numbers;
    assert_eq!(
        numbers_of(&all),
        [
            (BUSINESS, "1065", BRAND_A),
            ("+15550002222", "2077", BRAND_B)
        ]
    );

    // Renaming keeps the creation time; removing frees the number.
    let updated = accounts
        .update_account(pb::UpdateAccountRequest {
            account: Some(account(BRAND_B, "Brand B (EU)")),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(updated.display_name, "Brand B (EU)");
    accounts
        .remove_number(pb::RemoveNumberRequest {
            number: "+15550002222".into(),
        })
        .await
        .unwrap();
    let of_b = accounts
        .list_numbers(pb::ListNumbersRequest {
            waba_id: BRAND_B.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .numbers;
    assert!(of_b.is_empty(), "{of_b:?}");
}

/// Brand A and Brand B, with BUSINESS registered in A (id 1065).
async fn two_brands_with_a_number(
    server: &Server,
) -> pb::account_registry_client::AccountRegistryClient<tonic::transport::Channel> {
    create(server, account(BRAND_A, "Brand A")).await;
    create(server, account(BRAND_B, "Brand B")).await;
    let mut accounts = server.accounts().await;
    accounts
        .register_number(register(BUSINESS, "1065", BRAND_A))
        .await
        .unwrap();
    accounts
}

#[tokio::test]
async fn bad_accounts_and_numbers_are_refused_with_a_reason() {
    let server = Server::start();
    let mut accounts = two_brands_with_a_number(&server).await;

    let malformed = refusal(
        accounts
            .create_account(pb::CreateAccountRequest {
                account: Some(account("waba-12", "x")),
            })
            .await,
    );
    assert_eq!(
        (malformed.code, malformed.reason.as_str()),
        (Code::InvalidArgument, "INVALID_ACCOUNT")
    );
    assert_eq!(malformed.fields, ["account.waba_id"]);
    assert_eq!(malformed.domain, "wagate");

    let bad_env = refusal(
        accounts
            .create_account(pb::CreateAccountRequest {
                account: Some(pb::Account {
                    credentials: Some(pb::account::Credentials::TokenEnv("EAAG token".into())),
                    ..account("556", "A token pasted where its name goes")
                }),
            })
            .await,
    );
    assert_eq!(bad_env.fields, ["account.token_env"]);

    let exists = refusal(
        accounts
            .create_account(pb::CreateAccountRequest {
                account: Some(account(BRAND_A, "again")),
            })
            .await,
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (Code::AlreadyExists, "ACCOUNT_EXISTS")
    );

    let unknown = refusal(
        accounts
            .register_number(register("+15550003333", "3088", "999"))
            .await,
    );
    assert_eq!(
        (unknown.code, unknown.reason.as_str()),
        (Code::NotFound, "ACCOUNT_NOT_FOUND")
    );
    let unknown_get = refusal(
        accounts
            .get_account(pb::GetAccountRequest {
                waba_id: "999".into(),
            })
            .await,
    );
    assert_eq!(unknown_get.reason, "ACCOUNT_NOT_FOUND");

    let two_accounts = refusal(
        accounts
            .register_number(register(BUSINESS, "1065", BRAND_B))
            .await,
    );
    assert_eq!(
        (two_accounts.code, two_accounts.reason.as_str()),
        (Code::AlreadyExists, "BUSINESS_NUMBER_IN_OTHER_ACCOUNT")
    );
    assert!(
        two_accounts
            .message
            .starts_with("number: +15550001111 belongs to account 102290129340398"),
        "{two_accounts:?}"
    );

    let id_taken = refusal(
        accounts
            .register_number(register("+15550003333", "1065", BRAND_A))
            .await,
    );
    assert_eq!(
        (id_taken.code, id_taken.reason.as_str()),
        (Code::AlreadyExists, "PHONE_NUMBER_ID_IN_USE")
    );
    assert!(
        id_taken.message.starts_with("phone_number_id:"),
        "{id_taken:?}"
    );

    let bad_id = refusal(
        accounts
            .register_number(register("+15550003333", "10-65", BRAND_A))
            .await,
    );
    assert_eq!(bad_id.reason, "INVALID_ACCOUNT");
    assert_eq!(bad_id.fields, ["phone_number_id"]);

    let bad_number = refusal(
        accounts
            .register_number(register("555-CALL-NOW", "4099", BRAND_A))
            .await,
    );
    assert_eq!(bad_number.reason, "INVALID_PHONE_NUMBER");
    assert_eq!(bad_number.fields, ["number"]);

    let not_registered = refusal(
        accounts
            .remove_number(pb::RemoveNumberRequest {
                number: "+15550009999".into(),
            })
            .await,
    );
    assert_eq!(
        (not_registered.code, not_registered.reason.as_str()),
        (Code::FailedPrecondition, "BUSINESS_NUMBER_NOT_REGISTERED")
    );

    // Nothing refused was stored.
    let all = accounts
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .numbers;
    assert_eq!(numbers_of(&all), [(BUSINESS, "1065", BRAND_A)]);
    let listed = accounts
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn phone_number_ids_flag_registers_its_numbers_in_the_default_account() {
    let mut server = Server::start_with(&[
        "--phone-number-ids",
        "+15550001111=106540352242922,+15550002222=106540352242933",
    ]);
    let mut accounts = server.accounts().await;
    let default = accounts
        .get_account(pb::GetAccountRequest {
            waba_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.account.unwrap().waba_id, "default");
    assert_eq!(
        numbers_of(&default.numbers),
        [
            (BUSINESS, "106540352242922", "default"),
            ("+15550002222", "106540352242933", "default")
        ]
    );

    // An operator moves one number to its own account; the flag, still
    // set, does not move it back at the next start.
    create(&server, account(BRAND_A, "Brand A")).await;
    accounts
        .remove_number(pb::RemoveNumberRequest {
            number: "+15550002222".into(),
        })
        .await
        .unwrap();
    accounts
        .register_number(register("+15550002222", "106540352242933", BRAND_A))
        .await
        .unwrap();
    server.restart().await;
    let all = server
        .accounts()
        .await
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .numbers;
    assert_eq!(
        numbers_of(&all),
        [
            (BUSINESS, "106540352242922", "default"),
            ("+15550002222", "106540352242933", BRAND_A)
        ]
    );
    assert!(
        server.logs().contains("BUSINESS_NUMBER_IN_OTHER_ACCOUNT"),
        "the start says why the flag's entry was not applied"
    );
}

#[tokio::test]
async fn replicas_on_one_postgresql_share_the_registry() {
    let database = pg::shared();
    let url = database.url(&database.create_database());
    let first = Server::start_with(&["--database-url", &url]);
    let second = Server::start_with(&["--database-url", &url]);
    create(&first, account(BRAND_A, "Brand A")).await;
    first
        .accounts()
        .await
        .register_number(register(BUSINESS, "1065", BRAND_A))
        .await
        .unwrap();
    let seen = second
        .accounts()
        .await
        .get_account(pb::GetAccountRequest {
            waba_id: BRAND_A.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.account.unwrap().display_name, "Brand A");
    assert_eq!(numbers_of(&seen.numbers), [(BUSINESS, "1065", BRAND_A)]);
    // The number is taken for every replica.
    create(&second, account(BRAND_B, "Brand B")).await;
    let taken = refusal(
        second
            .accounts()
            .await
            .register_number(register(BUSINESS, "2077", BRAND_B))
            .await,
    );
    assert_eq!(taken.reason, "BUSINESS_NUMBER_IN_OTHER_ACCOUNT");
}

#[tokio::test]
async fn templates_of_a_database_from_before_accounts_move_into_the_default_account() {
    let server = pg::shared();
    let database = server.create_database();
    // The schema as the release before accounts left it, with one template.
    server.psql(
        &database,
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    );
    for (index, sql) in wagate::store::postgres::migrations()[..5]
        .iter()
        .enumerate()
    {
        server.psql(&database, sql);
        server.psql(
            &database,
            &format!(
                "INSERT INTO schema_migrations (version) VALUES ({})",
                index + 1
            ),
        );
    }
    server.psql(
        &database,
        "INSERT INTO templates (name, language, category, status, status_reason, body, \
            buttons, created_at, updated_at) VALUES ('order_update', 'en_US', 'UTILITY', \
            'APPROVED', '', 'Hi {{1}}, your order {{2}} has shipped.', '[]', now(), now())",
    );

    let wagate = Server::start_with(&["--database-url", &server.url(&database)]);
    let template = wagate
        .templates()
        .await
        .get_template(pb::GetTemplateRequest {
            name: "order_update".into(),
            language: "en_US".into(),
            waba_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(template.waba_id, "default");
    assert_eq!(template.status(), pb::TemplateStatus::Approved);
    assert_eq!(template.body, "Hi {{1}}, your order {{2}} has shipped.");
    // And it sends as before, from a number no account holds.
    let sent = wagate
        .gateway()
        .await
        .send_message(template_send(
            "+27821234567",
            "before-accounts",
            "order_update",
            &["Ann", "A-1"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.rendered_text, "Hi Ann, your order A-1 has shipped.");
}

/// Upserts `template` into the account `waba_id` and approves it there.
async fn approve_in(server: &Server, waba_id: &str, template: pb::Template) {
    let in_account = pb::Template {
        waba_id: waba_id.into(),
        ..template
    };
    approve(server, in_account).await;
}

#[tokio::test]
async fn each_number_sends_its_own_accounts_template_over_grpc() {
    let server = Server::start();
    let mut accounts = two_brands_with_a_number(&server).await;
    accounts
        .register_number(register("+15550002222", "2077", BRAND_B))
        .await
        .unwrap();
    approve_in(
        &server,
        BRAND_A,
        template(
            "order_update",
            pb::TemplateCategory::Utility,
            "A: order {{1}} shipped.",
        ),
    )
    .await;
    approve_in(
        &server,
        BRAND_B,
        template(
            "order_update",
            pb::TemplateCategory::Marketing,
            "B: {{1}} is on its way!",
        ),
    )
    .await;

    let mut gateway = server.gateway().await;
    let from_a = gateway
        .send_message(template_send(
            "+27821234567",
            "a-1",
            "order_update",
            &["A-1"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_a.rendered_text, "A: order A-1 shipped.");
    assert_eq!(from_a.pricing_category(), pb::PricingCategory::Utility);
    let from_b = gateway
        .send_message(pb::SendMessageRequest {
            business_number: "+15550002222".into(),
            ..template_send("+27821234567", "b-1", "order_update", &["B-7"])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_b.rendered_text, "B: B-7 is on its way!");
    assert_eq!(from_b.pricing_category(), pb::PricingCategory::Marketing);

    // An unregistered number sends nothing once accounts exist.
    let unregistered = refusal(
        gateway
            .send_message(pb::SendMessageRequest {
                business_number: "+15550003333".into(),
                ..template_send("+27821234567", "c-1", "order_update", &["C-1"])
            })
            .await,
    );
    assert_eq!(
        (unregistered.code, unregistered.reason.as_str()),
        (Code::FailedPrecondition, "BUSINESS_NUMBER_NOT_REGISTERED")
    );

    // The registry answers per account; the default account has none.
    let mut templates = server.templates().await;
    let in_b = get_template_in(&server, BRAND_B, "order_update").await;
    assert_eq!(
        (in_b.waba_id.as_str(), in_b.body.as_str()),
        (BRAND_B, "B: {{1}} is on its way!")
    );
    let listed = templates
        .list_templates(pb::ListTemplatesRequest {
            waba_id: BRAND_A.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .templates;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body, "A: order {{1}} shipped.");
    let in_default = refusal(
        templates
            .get_template(pb::GetTemplateRequest {
                name: "order_update".into(),
                language: "en_US".into(),
                waba_id: String::new(),
            })
            .await,
    );
    assert_eq!(in_default.reason, "TEMPLATE_NOT_FOUND");
    let nowhere = refusal(
        templates
            .upsert_template(pb::UpsertTemplateRequest {
                template: Some(pb::Template {
                    waba_id: "999".into(),
                    ..template("order_update", pb::TemplateCategory::Utility, "x {{1}}")
                }),
            })
            .await,
    );
    assert_eq!(
        (nowhere.code, nowhere.reason.as_str()),
        (Code::NotFound, "ACCOUNT_NOT_FOUND")
    );
    let malformed = refusal(
        templates
            .list_templates(pb::ListTemplatesRequest {
                waba_id: "brand-b".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(malformed.reason, "INVALID_ACCOUNT");
    assert_eq!(malformed.fields, ["waba_id"]);
}
