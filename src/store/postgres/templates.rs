//! The template registry in PostgreSQL: reading, changing and listing an
//! account's templates, and a sync's writes from the Graph API. Changes
//! run SERIALIZABLE, as every write outside the hot paths does.

use super::queries::{put_template, read_template};
use super::retry::in_transaction;
use super::{PgStore, conn, rows};
use crate::domain::account::AccountId;
use crate::domain::template::{TemplateFilter, TemplateWrite};
use crate::domain::template_sync::SyncPlan;
use crate::domain::{Template, TemplateId};
use crate::store::{Planner, StoreError, TemplatePage};

pub(super) async fn template(
    store: &PgStore,
    id: &TemplateId,
) -> Result<Option<Template>, StoreError> {
    in_transaction!(store, "read a template", |tx| {
        read_template(&tx, id).await?
    })
}

pub(super) async fn change_template(
    store: &PgStore,
    id: &TemplateId,
    plan: Planner<'_, Option<Template>, TemplateWrite>,
) -> Result<(Option<Template>, TemplateWrite), StoreError> {
    in_transaction!(store, "change a template", |tx| {
        let existing = read_template(&tx, id).await?;
        let write = plan(&existing)?;
        match &write {
            TemplateWrite::Put(template) => put_template(&tx, template).await?,
            TemplateWrite::Delete => {
                conn::execute(
                    &tx,
                    "delete a template",
                    "DELETE FROM templates WHERE name = $1 AND language = $2 \
                        AND account = $3",
                    &[&id.name(), &id.language(), &id.account().as_str()],
                )
                .await?;
            }
            TemplateWrite::Keep => {}
        }
        (existing, write)
    })
}

pub(super) async fn sync_templates(
    store: &PgStore,
    account: &AccountId,
    plan: Planner<'_, Vec<Template>, SyncPlan>,
) -> Result<SyncPlan, StoreError> {
    in_transaction!(store, "sync templates", |tx| {
        let stored = conn::query(
            &tx,
            "read an account's templates",
            "SELECT * FROM templates WHERE account = $1",
            &[&account.as_str()],
        )
        .await?
        .iter()
        .map(rows::template)
        .collect::<Result<Vec<_>, _>>()?;
        let written = plan(&stored)?;
        for template in &written.puts {
            put_template(&tx, template).await?;
        }
        written
    })
}

pub(super) async fn list_templates(
    store: &PgStore,
    account: &AccountId,
    after: Option<&TemplateId>,
    limit: usize,
    filter: &TemplateFilter,
) -> Result<TemplatePage, StoreError> {
    let (after_name, after_language) = match after {
        Some(id) => (id.name(), id.language()),
        None => ("", ""),
    };
    let status = filter.status.map(|s| rows::name(rows::STATUSES, s));
    let category = filter.category.map(|c| rows::name(rows::CATEGORIES, c));
    let fetch = limit as i64 + 1;
    let client = store.client().await?;
    // Byte order ("C"), the order sled keeps: pages are stable across
    // backends and locales.
    let rows = conn::query(
        &client,
        "list templates",
        "SELECT * FROM templates \
             WHERE (name COLLATE \"C\", language COLLATE \"C\") > ($1, $2) \
               AND ($3::text IS NULL OR status = $3) \
               AND ($4::text IS NULL OR category = $4) \
               AND account = $6 \
             ORDER BY name COLLATE \"C\", language COLLATE \"C\" LIMIT $5",
        &[
            &after_name,
            &after_language,
            &status,
            &category,
            &fetch,
            &account.as_str(),
        ],
    )
    .await?;
    let fetched = rows
        .iter()
        .map(rows::template)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TemplatePage::from_fetched(fetched, limit))
}
