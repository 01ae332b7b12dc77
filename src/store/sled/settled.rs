//! Reading sled outside a section. The log answers a write as soon as it
//! is on disk and applies it to sled just after, so a read of sled must
//! first wait until sled holds every change already answered.
//! [`SledStore::settled`] is that wait (nearly always one look at the
//! log's watermark) and [`Settled`] is what it hands out: every read helper
//! lives on `Settled`, so no read can skip the wait. Sections read through
//! the log's overlay instead ([`super::wal::Section::get`]).

use std::ops::Deref;
use std::sync::Arc;

use super::templates::{template_from, templates_named};
use super::{SledStore, Trees, WINDOWS, WindowRecord, keys, read};
use crate::domain::account::{Account, AccountId, BusinessNumber};
use crate::domain::send::SendSnapshot;
use crate::domain::{Pair, SendRequest, Template, TemplateId, Window};
use crate::store::StoreError;

/// sled holding every change answered before [`SledStore::settled`]
/// returned it.
#[derive(Clone)]
pub(crate) struct Settled(Arc<Trees>);

impl Deref for Settled {
    type Target = Trees;

    fn deref(&self) -> &Trees {
        &self.0
    }
}

impl SledStore {
    /// sled, once it holds every change already answered.
    pub(crate) async fn settled(&self) -> Result<Settled, StoreError> {
        Ok(Settled(self.wal.caught_up().await?))
    }
}

impl Settled {
    pub(super) fn read_window(&self, pair: &Pair) -> Result<Option<Window>, StoreError> {
        read::<WindowRecord, _>(WINDOWS, self.windows.get(keys::pair(pair))?)
    }

    pub(super) fn read_template(&self, id: &TemplateId) -> Result<Option<Template>, StoreError> {
        let key = keys::template(id);
        template_from(&key, self.templates.get(&key)?)
    }

    /// What a send (or its dry run) reads of the registries: the sending
    /// number, whether any account exists, and for a template its name in
    /// every account and the accounts the send may run under (the number's
    /// and the default; their messaging limits). They change rarely and
    /// alone, so this reads sled rather than the send's log section.
    pub(super) fn send_registry(&self, request: &SendRequest) -> Result<SendSnapshot, StoreError> {
        let sender = self.read_number(&request.pair.business)?;
        let (templates, accounts) = match request.content.template_id() {
            Some(id) => (
                templates_named(self, id)?,
                self.sending_accounts(sender.as_ref())?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(SendSnapshot {
            templates,
            any_account: self.accounts.first()?.is_some(),
            sender,
            accounts,
            ..SendSnapshot::default()
        })
    }

    /// The number's account and the default account, where stored.
    fn sending_accounts(
        &self,
        sender: Option<&BusinessNumber>,
    ) -> Result<Vec<Account>, StoreError> {
        let default = AccountId::default_account();
        let mut accounts = Vec::new();
        for id in sender.map(|n| &n.account).into_iter().chain([&default]) {
            if !accounts.iter().any(|a: &Account| a.id == *id)
                && let Some(stored) = self.read_account(id)?
            {
                accounts.push(stored);
            }
        }
        Ok(accounts)
    }
}
