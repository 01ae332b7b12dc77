//! The `wagate.v1.AccountRegistry` service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::cloud::sync::{SyncError, Syncer};
use crate::domain::account::{
    self, Account, AccountDraft, AccountId, BusinessNumber, Credentials, PhoneNumberId, Route,
};
use crate::domain::clickatell::{Integration, IntegrationId};
use crate::domain::messaging_limit::MessagingLimit;
use crate::domain::template_sync::SyncCounts;
use crate::domain::{PhoneNumber, Reason, Rejection};
use crate::pb;
use crate::service::Service;

pub struct AccountRegistryService {
    store: Service,
    syncer: Arc<Syncer>,
}

impl AccountRegistryService {
    pub fn new(store: Service, syncer: Arc<Syncer>) -> Self {
        AccountRegistryService { store, syncer }
    }
}

fn counts_message(c: &SyncCounts) -> pb::SyncCounts {
    pb::SyncCounts {
        created: c.created,
        updated: c.updated,
        deleted: c.deleted,
        unchanged: c.unchanged,
        failed: c.failed,
    }
}

fn account_id(raw: &str) -> Result<AccountId, Status> {
    convert::account_id(raw).map_err(status::rejection)
}

fn business_number(raw: &str) -> Result<PhoneNumber, Status> {
    PhoneNumber::parse(raw).map_err(|e| status::rejection(e.at("number")))
}

/// The account's id and what the caller sets on it.
fn draft(account: Option<pb::Account>) -> Result<(AccountId, AccountDraft), Status> {
    let account = account.ok_or_else(|| {
        status::rejection(Rejection::new(Reason::InvalidAccount, "is required").at("account"))
    })?;
    let id = convert::account_id(&account.waba_id)
        .map_err(|e| status::rejection(e.within("account")))?;
    let credentials = match &account.credentials {
        None => Credentials::None,
        Some(pb::account::Credentials::TokenEnv(name)) => Credentials::env_var(name)
            .map_err(|e| status::rejection(e.at("token_env").within("account")))?,
        Some(pb::account::Credentials::TokenFile(path)) => Credentials::file(path)
            .map_err(|e| status::rejection(e.at("token_file").within("account")))?,
    };
    let messaging_limit = match account.messaging_limit.and_then(|l| l.limit) {
        None => None,
        Some(pb::messaging_limit::Limit::Customers(n)) if n > 0 => {
            Some(MessagingLimit::Customers(n))
        }
        Some(pb::messaging_limit::Limit::Unlimited(true)) => Some(MessagingLimit::Unlimited),
        Some(_) => {
            return Err(status::rejection(
                Rejection::new(
                    Reason::InvalidAccount,
                    "a messaging limit is a number of customers of at least 1, or unlimited: true",
                )
                .at("messaging_limit")
                .within("account"),
            ));
        }
    };
    let draft = AccountDraft {
        display_name: account.display_name,
        delivery: account.delivery,
        credentials,
        messaging_limit,
    };
    draft
        .validate()
        .map_err(|e| status::rejection(e.within("account")))?;
    Ok((id, draft))
}

fn account_message(account: &Account) -> pb::Account {
    pb::Account {
        waba_id: account.id.as_str().to_owned(),
        display_name: account.display_name.clone(),
        delivery: account.delivery,
        credentials: where_is(
            &account.credentials,
            pb::account::Credentials::TokenEnv,
            pb::account::Credentials::TokenFile,
        ),
        create_time: Some(convert::timestamp(account.created_at)),
        update_time: Some(convert::timestamp(account.updated_at)),
        template_sync: account.sync.as_ref().map(|s| pb::TemplateSync {
            attempt_time: Some(convert::timestamp(s.attempted_at)),
            error: s.error.clone(),
            counts: Some(counts_message(&s.counts)),
            last_good_sync_time: s.last_good_at.map(convert::timestamp),
        }),
        messaging_limit: account.messaging_limit.map(|l| pb::MessagingLimit {
            limit: Some(match l {
                MessagingLimit::Customers(n) => pb::messaging_limit::Limit::Customers(n),
                MessagingLimit::Unlimited => pb::messaging_limit::Limit::Unlimited(true),
            }),
        }),
    }
}

fn number_message(number: &BusinessNumber) -> pb::BusinessNumber {
    use pb::clickatell_integration::{ApiKey, CallbackToken};
    let clickatell = match &number.route {
        Route::CloudApi(_) => None,
        Route::Clickatell(integration) => Some(pb::ClickatellIntegration {
            integration_id: integration.id.as_str().to_owned(),
            api_key: where_is(&integration.api_key, ApiKey::ApiKeyEnv, ApiKey::ApiKeyFile),
            callback_token: where_is(
                &integration.callback_token,
                CallbackToken::CallbackTokenEnv,
                CallbackToken::CallbackTokenFile,
            ),
        }),
    };
    pb::BusinessNumber {
        number: number.number.as_str().to_owned(),
        phone_number_id: number
            .phone_number_id()
            .map_or_else(String::new, |id| id.as_str().to_owned()),
        waba_id: number.account.as_str().to_owned(),
        register_time: Some(convert::timestamp(number.registered_at)),
        clickatell,
    }
}

/// Where a secret is, as the wire's oneof says it.
fn where_is<T>(
    credentials: &Credentials,
    env: impl Fn(String) -> T,
    file: impl Fn(String) -> T,
) -> Option<T> {
    match credentials {
        Credentials::None => None,
        Credentials::EnvVar(name) => Some(env(name.clone())),
        Credentials::File(path) => Some(file(path.to_string_lossy().into_owned())),
    }
}

/// The route a RegisterNumber asks for: exactly one of a phone number id
/// and a Clickatell integration.
fn route(request: &pb::RegisterNumberRequest) -> Result<Route, Status> {
    use pb::clickatell_integration::{ApiKey, CallbackToken};
    let route = match (
        &request.clickatell,
        request.phone_number_id.trim().is_empty(),
    ) {
        (None, _) => PhoneNumberId::parse(&request.phone_number_id).map(Route::CloudApi),
        (Some(c), true) => (|| {
            let api_key = match &c.api_key {
                Some(ApiKey::ApiKeyEnv(name)) => Credentials::env_var(name),
                Some(ApiKey::ApiKeyFile(path)) => Credentials::file(path),
                None => Ok(Credentials::None),
            }
            .map_err(|r| r.at("clickatell.api_key"))?;
            let callback_token = match &c.callback_token {
                Some(CallbackToken::CallbackTokenEnv(name)) => Credentials::env_var(name),
                Some(CallbackToken::CallbackTokenFile(path)) => Credentials::file(path),
                None => Ok(Credentials::None),
            }
            .map_err(|r| r.at("clickatell.callback_token"))?;
            Integration::new(
                IntegrationId::parse(&c.integration_id)?,
                api_key,
                callback_token,
            )
            .map(Route::Clickatell)
        })(),
        (Some(_), false) => Err(Rejection::new(
            Reason::InvalidAccount,
            "a number is sent for by a phone number id or a Clickatell integration, not both",
        )
        .at("clickatell")),
    };
    route.map_err(status::rejection)
}

#[tonic::async_trait]
impl pb::account_registry_server::AccountRegistry for AccountRegistryService {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let (id, draft) = draft(request.into_inner().account)?;
        let account = self
            .store
            .create_account(&id, &draft, convert::now())
            .await
            .map_err(status::store)?;
        tracing::info!(waba_id = %id, delivery = account.delivery, "account created");
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(account_message(&account)),
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        let (id, draft) = draft(request.into_inner().account)?;
        let account = self
            .store
            .update_account(&id, &draft, convert::now())
            .await
            .map_err(status::store)?;
        tracing::info!(waba_id = %id, delivery = account.delivery, "account updated");
        Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(account_message(&account)),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let id = account_id(&request.get_ref().waba_id)?;
        let account = self
            .store
            .account(&id)
            .await
            .map_err(status::store)?
            .ok_or_else(|| status::rejection(account::account_not_found(&id)))?;
        let numbers = self
            .store
            .list_numbers(Some(&id))
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_message(&account)),
            numbers: numbers.iter().map(number_message).collect(),
        }))
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let accounts = self.store.list_accounts().await.map_err(status::store)?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.iter().map(account_message).collect(),
        }))
    }

    async fn register_number(
        &self,
        request: Request<pb::RegisterNumberRequest>,
    ) -> Result<Response<pb::RegisterNumberResponse>, Status> {
        let request = request.into_inner();
        let number = business_number(&request.number)?;
        let route = route(&request)?;
        let id = account_id(&request.waba_id)?;
        let (stored, changed) = self
            .store
            .register_number(&number, &route, &id, convert::now())
            .await
            .map_err(status::store)?;
        // The route names where secrets are, never the secrets.
        tracing::info!(waba_id = %id, ?route, changed, "business number registered");
        Ok(Response::new(pb::RegisterNumberResponse {
            number: Some(number_message(&stored)),
            changed,
        }))
    }

    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        let raw = request.get_ref().waba_id.trim();
        let only = if raw.is_empty() {
            None
        } else {
            Some(account_id(raw)?)
        };
        let numbers = self
            .store
            .list_numbers(only.as_ref())
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListNumbersResponse {
            numbers: numbers.iter().map(number_message).collect(),
        }))
    }

    async fn remove_number(
        &self,
        request: Request<pb::RemoveNumberRequest>,
    ) -> Result<Response<pb::RemoveNumberResponse>, Status> {
        let number = business_number(&request.get_ref().number)?;
        let removed = self
            .store
            .remove_number(&number)
            .await
            .map_err(status::store)?;
        if !removed {
            return Err(status::rejection(
                Rejection::new(
                    Reason::BusinessNumberNotRegistered,
                    format!("{} is not a registered business number", number.as_str()),
                )
                .at("number"),
            ));
        }
        tracing::info!("business number removed");
        Ok(Response::new(pb::RemoveNumberResponse {}))
    }

    async fn sync_templates(
        &self,
        request: Request<pb::SyncTemplatesRequest>,
    ) -> Result<Response<pb::SyncTemplatesResponse>, Status> {
        let id = account_id(&request.get_ref().waba_id)?;
        match self.syncer.sync(&id).await {
            Ok(synced) => Ok(Response::new(pb::SyncTemplatesResponse {
                counts: Some(counts_message(&synced.counts)),
                last_good_sync_time: Some(convert::timestamp(synced.at)),
            })),
            Err(SyncError::Refused(rejection)) => Err(status::rejection(rejection)),
            Err(SyncError::Failed(why)) => Err(status::sync_failed(&why)),
            Err(SyncError::Store(error)) => Err(status::store(error)),
        }
    }
}
