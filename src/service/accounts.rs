//! Accounts and business numbers: the registry every replica shares.

use chrono::{DateTime, Utc};

use super::Service;
use crate::domain::account::{
    self, Account, AccountDraft, AccountId, AccountWrite, BusinessNumber, NumberWrite,
    PhoneNumberId, Route,
};
use crate::domain::template_sync::{self, FetchedTemplate, SyncCounts, Unreadable};
use crate::domain::time;
use crate::domain::{PhoneNumber, Rejection};
use crate::store::StoreError;

/// `account::plan_create` or `account::plan_update`.
type AccountPlanner = fn(
    Option<&Account>,
    &AccountId,
    &AccountDraft,
    DateTime<Utc>,
) -> Result<AccountWrite, Rejection>;

impl Service {
    pub async fn create_account(
        &self,
        id: &AccountId,
        draft: &AccountDraft,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.change_account(id, draft, now, account::plan_create)
            .await
    }

    pub async fn update_account(
        &self,
        id: &AccountId,
        draft: &AccountDraft,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.change_account(id, draft, now, account::plan_update)
            .await
    }

    /// Reads the account, plans with `planner`, writes; the account as
    /// stored.
    async fn change_account(
        &self,
        id: &AccountId,
        draft: &AccountDraft,
        now: DateTime<Utc>,
        planner: AccountPlanner,
    ) -> Result<Account, StoreError> {
        let now = time::stored(now);
        let write = self
            .store
            .change_account(id, &|existing| planner(existing.as_ref(), id, draft, now))
            .await?;
        Ok(write.account().clone())
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.store.account(id).await
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.store.list_accounts().await
    }

    /// Registers a number in an account; returns it and whether anything
    /// changed.
    pub async fn register_number(
        &self,
        number: &PhoneNumber,
        route: &Route,
        account_id: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(BusinessNumber, bool), StoreError> {
        let now = time::stored(now);
        let write = self
            .store
            .register_number(number, route.phone_number_id(), account_id, &|seen| {
                account::plan_register(seen, number, route, account_id, now)
            })
            .await?;
        let changed = matches!(write, NumberWrite::Put { .. });
        Ok((write.number().clone(), changed))
    }

    pub async fn business_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError> {
        self.store.business_number(number).await
    }

    pub async fn list_numbers(
        &self,
        account_id: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError> {
        self.store.list_numbers(account_id).await
    }

    pub async fn remove_number(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        self.store.remove_number(number).await
    }

    /// What `--phone-number-ids` asks at start: the default account (made
    /// once, with `delivery` as the process runs) holding these numbers. A
    /// number the registry already holds otherwise (an operator moved it to
    /// another account, or gave its id to another number) stays as the
    /// registry has it; the refusals are returned for the caller to log.
    pub async fn bootstrap_numbers(
        &self,
        numbers: &[(PhoneNumber, PhoneNumberId)],
        delivery: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Rejection>, StoreError> {
        let now = time::stored(now);
        let default = AccountId::default_account();
        self.store
            .change_account(&default, &|existing| {
                account::plan_bootstrap_default(existing.as_ref(), delivery, now)
            })
            .await?;
        let mut refused = Vec::new();
        for (number, id) in numbers {
            match self
                .register_number(number, &Route::CloudApi(id.clone()), &default, now)
                .await
            {
                Ok(_) => {}
                Err(StoreError::Rejected(rejection)) => refused.push(rejection),
                Err(other) => return Err(other),
            }
        }
        Ok(refused)
    }

    /// Makes `account`'s registry what WhatsApp returned (`fetched`, and
    /// `unreadable` by name) in one write, and records the outcome.
    pub async fn apply_template_sync(
        &self,
        account_id: &AccountId,
        fetched: &[FetchedTemplate],
        unreadable: &[Unreadable],
        now: DateTime<Utc>,
    ) -> Result<SyncCounts, StoreError> {
        let now = time::stored(now);
        let plan = self
            .store
            .sync_templates(account_id, &|stored| {
                Ok(template_sync::plan_sync(stored, fetched, unreadable, now))
            })
            .await?;
        self.record_sync(account_id, Ok(plan.counts), now).await?;
        Ok(plan.counts)
    }

    /// Stores how a sync went on its account (a failure keeps the last good
    /// sync's time).
    pub async fn record_sync(
        &self,
        account_id: &AccountId,
        outcome: Result<SyncCounts, String>,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let now = time::stored(now);
        let write = self
            .store
            .change_account(account_id, &|existing| {
                account::plan_sync_report(existing.as_ref(), account_id, outcome.clone(), now)
            })
            .await?;
        Ok(write.account().clone())
    }
}
