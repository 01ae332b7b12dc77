//! The template registry on sled: one tree keyed `name \0 language \0
//! account`, so a send reads every account's copy of a template with one
//! prefix scan. Changes and syncs read and write in one section, through
//! what is staged but not yet in sled.

use super::records::{self, TemplateRecord, encode};
use super::wal::Tree;
use super::{SledStore, StoreError, TEMPLATES, Trees, corrupt, keys};
use crate::domain::account::AccountId;
use crate::domain::template::{TemplateFilter, TemplateWrite};
use crate::domain::template_sync::SyncPlan;
use crate::domain::{Template, TemplateId};
use crate::store::{Planner, TemplatePage};

/// Decodes a stored template, of either layout (`records::decode_template`),
/// in the account its key names.
pub(super) fn template_from(
    key: &[u8],
    bytes: Option<sled::IVec>,
) -> Result<Option<Template>, StoreError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let account = keys::template_account(key)
        .and_then(|account| AccountId::parse(account).ok())
        .ok_or_else(|| StoreError::corrupt(TEMPLATES, "a key without its account"))?;
    let mut template = records::decode_template(&bytes)
        .and_then(Template::try_from)
        .map_err(corrupt(TEMPLATES))?;
    template.id = template.id.in_account(account);
    Ok(Some(template))
}

/// Every account's template of `id`'s name and language (one prefix scan).
pub(super) fn templates_named(t: &Trees, id: &TemplateId) -> Result<Vec<Template>, StoreError> {
    let mut found = Vec::new();
    for entry in t.templates.scan_prefix(keys::template_name(id)) {
        let (key, bytes) = entry?;
        found.extend(template_from(&key, Some(bytes))?);
    }
    Ok(found)
}

impl SledStore {
    pub(super) async fn sync_account_templates(
        &self,
        account: &AccountId,
        plan: Planner<'_, Vec<Template>, SyncPlan>,
    ) -> Result<SyncPlan, StoreError> {
        let (written, lsn) = {
            let mut w = self.wal.section()?;
            // Read in the section, through what is staged: a template change
            // answered a moment ago may not be in sled yet, and planning
            // without it would write its old state back.
            let in_account = |key: &[u8]| keys::template_account(key) == Some(account.as_str());
            let mut stored = Vec::new();
            for (key, bytes) in w.entries(Tree::Templates, in_account)? {
                stored.extend(template_from(&key, Some(bytes))?);
            }
            let written = plan(&stored).map_err(StoreError::Rejected)?;
            for template in &written.puts {
                w.insert(
                    Tree::Templates,
                    keys::template(&template.id),
                    encode(&TemplateRecord::from(template)),
                );
            }
            (written, w.commit())
        };
        self.durable(lsn).await?;
        Ok(written)
    }

    pub(super) async fn write_template(
        &self,
        id: &TemplateId,
        plan: Planner<'_, Option<Template>, TemplateWrite>,
    ) -> Result<(Option<Template>, TemplateWrite), StoreError> {
        let key = keys::template(id);
        let (outcome, lsn) = {
            let mut w = self.wal.section()?;
            let existing = template_from(&key, w.get(Tree::Templates, &key)?)?;
            let write = plan(&existing).map_err(StoreError::Rejected)?;
            match &write {
                TemplateWrite::Put(template) => {
                    w.insert(
                        Tree::Templates,
                        key,
                        encode(&TemplateRecord::from(&**template)),
                    );
                }
                TemplateWrite::Delete => w.remove(Tree::Templates, key),
                TemplateWrite::Keep => {}
            }
            ((existing, write), w.commit())
        };
        self.durable(lsn).await?;
        Ok(outcome)
    }

    pub(super) async fn templates_page(
        &self,
        account: &AccountId,
        after: Option<&TemplateId>,
        limit: usize,
        filter: &TemplateFilter,
    ) -> Result<TemplatePage, StoreError> {
        let t = self.settled().await?;
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(keys::template(id)),
            None => std::ops::Bound::Unbounded,
        };
        let mut fetched = Vec::with_capacity(limit.min(1024) + 1);
        // Keys sort by (name, language) first: other accounts' templates
        // are passed over (accounts are few).
        for entry in t.templates.range((start, std::ops::Bound::Unbounded)) {
            let (key, bytes) = entry?;
            if keys::template_account(&key) != Some(account.as_str()) {
                continue;
            }
            let Some(template) = template_from(&key, Some(bytes))? else {
                continue;
            };
            if !filter.keeps(&template) {
                continue;
            }
            fetched.push(template);
            if fetched.len() > limit {
                break;
            }
        }
        Ok(TemplatePage::from_fetched(fetched, limit))
    }
}
