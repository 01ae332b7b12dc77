//! The schema, as versioned migrations applied at start.
//!
//! Several replicas may start at once: each migration runs in its own
//! transaction that first claims its version row (`INSERT … ON CONFLICT DO
//! NOTHING`); a replica that loses the race waits on that row until the
//! winner commits, then finds the version applied and moves on. No advisory
//! locks, no `LOCK TABLE`, so the same code runs on CockroachDB and
//! YugabyteDB.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::db_error;
use crate::store::StoreError;

/// Migrations in order; version = index + 1. Never edit one that shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE windows (
    business            text NOT NULL,
    customer            text NOT NULL,
    last_inbound_at     timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    free_entry_deadline timestamptz,
    free_until          timestamptz,
    PRIMARY KEY (business, customer)
);
CREATE INDEX windows_by_expiry ON windows (expires_at);

CREATE TABLE inbound_ids (
    message_id  text PRIMARY KEY,
    business    text NOT NULL,
    customer    text NOT NULL,
    received_at timestamptz NOT NULL,
    kind        text NOT NULL,
    entry_point text NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX inbound_ids_by_age ON inbound_ids (recorded_at);

CREATE TABLE templates (
    name          text NOT NULL,
    language      text NOT NULL,
    category      text NOT NULL,
    status        text NOT NULL,
    status_reason text NOT NULL,
    body          text NOT NULL,
    header_text   text,
    footer_text   text,
    buttons       jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (name, language)
);

CREATE TABLE outbox (
    message_id        uuid PRIMARY KEY,
    business          text NOT NULL,
    customer          text NOT NULL,
    idempotency_key   text NOT NULL,
    content           jsonb NOT NULL,
    fingerprint       bytea NOT NULL,
    kind              text NOT NULL,
    rendered_text     text NOT NULL,
    template_category text,
    pricing_category  text NOT NULL,
    billable          boolean NOT NULL,
    free_until        timestamptz,
    accepted_at       timestamptz NOT NULL,
    status            text NOT NULL
);

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint bytea NOT NULL,
    message_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE deliveries (
    message_id      uuid PRIMARY KEY REFERENCES outbox (message_id),
    status          text NOT NULL,
    wamid           text UNIQUE,
    attempts        integer NOT NULL,
    next_attempt_at timestamptz,
    error_code      bigint,
    error_title     text,
    updated_at      timestamptz NOT NULL,
    fence           bigint NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at);

CREATE TABLE early_statuses (
    wamid       text PRIMARY KEY,
    status      text NOT NULL,
    error_code  bigint,
    error_title text,
    received_at timestamptz NOT NULL
);
CREATE INDEX early_statuses_by_age ON early_statuses (received_at);

CREATE TABLE changes (
    seq        bigserial PRIMARY KEY,
    message_id uuid NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
"#,
    r#"
CREATE TABLE send_rate (
    business text PRIMARY KEY,
    tat      timestamptz NOT NULL
);
"#,
    r#"
-- Each change carries the delivery state it wrote, so watchers see every
-- change even when several land between two polls of the feed.
ALTER TABLE changes ADD COLUMN delivery jsonb;
"#,
    r#"
-- The window-change log WatchWindows reads. recorded_at is the database's
-- clock at the insert, right before COMMIT, so every replica stamps from
-- one clock; id only orders changes of the same microsecond.
CREATE TABLE window_changes (
    id                  bigserial PRIMARY KEY,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    business            text NOT NULL,
    customer            text NOT NULL,
    kind                text NOT NULL,
    last_inbound_at     timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    free_entry_deadline timestamptz,
    free_until          timestamptz
);
CREATE INDEX window_changes_by_record ON window_changes (recorded_at, id);
CREATE INDEX window_changes_by_expiry ON window_changes (expires_at, id);
CREATE INDEX window_changes_by_pair ON window_changes (business, customer, recorded_at, id);
"#,
    r#"
-- A template's image, video, document or location header (NULL: text or
-- none, as header_text says).
ALTER TABLE templates ADD COLUMN header_media text;
"#,
    r#"
-- WhatsApp Business Accounts and their business numbers. The token stays
-- out: an account names the environment variable or file that holds it.
CREATE TABLE accounts (
    id               text PRIMARY KEY,
    display_name     text NOT NULL,
    delivery         boolean NOT NULL,
    credentials_env  text,
    credentials_file text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE TABLE business_numbers (
    number          text PRIMARY KEY,
    phone_number_id text NOT NULL UNIQUE,
    account         text NOT NULL REFERENCES accounts (id),
    registered_at   timestamptz NOT NULL
);
CREATE INDEX business_numbers_by_account ON business_numbers (account, number);
"#,
    r#"
-- Templates belong to an account; those stored before accounts move into
-- the default one. A send reads every account's template of its name and
-- language at once, so the key leads with them.
ALTER TABLE templates ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE templates DROP CONSTRAINT templates_pkey,
    ADD CONSTRAINT templates_pkey PRIMARY KEY (name, language, account);
CREATE INDEX templates_by_account ON templates (account, name, language);
"#,
    r#"
-- How an account's last template sync went (NULL: never synced), and
-- WhatsApp's id of each template a sync has seen.
ALTER TABLE accounts ADD COLUMN sync jsonb;
ALTER TABLE templates ADD COLUMN whatsapp_id text;
"#,
    // 9: a number sent for by Clickatell has no Cloud API phone number id,
    // but its integration (where its secrets are, never the secrets).
    r#"
ALTER TABLE business_numbers ALTER COLUMN phone_number_id DROP NOT NULL;
ALTER TABLE business_numbers ADD COLUMN clickatell jsonb;
"#,
    // 10: opt-outs and the marketing backoff, per pair.
    r#"
CREATE TABLE consent (
    business                text NOT NULL,
    customer                text NOT NULL,
    opt_out_scope           text,
    opt_out_source          text,
    opt_out_at              timestamptz,
    marketing_limited_until timestamptz,
    marketing_limits        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (business, customer)
);
"#,
    // 11: the messaging limit: an account's own (NULL: it shares the
    // deployment's), when each customer was last reached outside a window,
    // and each scope's reaches per minute.
    r#"
ALTER TABLE accounts ADD COLUMN messaging_limit text;
CREATE TABLE limit_reaches (
    scope      text NOT NULL,
    customer   text NOT NULL,
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (scope, customer)
);
CREATE INDEX limit_reaches_by_age ON limit_reaches (reached_at);
CREATE TABLE limit_usage (
    scope         text PRIMARY KEY,
    bucket_starts bigint[] NOT NULL,
    bucket_counts integer[] NOT NULL
);
"#,
];

/// The newest schema this build understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies what is missing; refuses a database of a newer schema before
/// writing anything.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    create_version_table(client).await?;
    let found: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(db_error("read the schema version"))?
        .get(0);
    let found = found.unwrap_or(0).max(0) as u32;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        let tx = client
            .transaction()
            .await
            .map_err(db_error("start a migration"))?;
        let claimed = tx
            .query_opt(
                "INSERT INTO schema_migrations (version) VALUES ($1) \
                 ON CONFLICT (version) DO NOTHING RETURNING version",
                &[&version],
            )
            .await
            .map_err(db_error("claim a migration"))?;
        if claimed.is_some() {
            tx.batch_execute(sql)
                .await
                .map_err(db_error("apply a migration"))?;
            tracing::info!(version, "applied schema migration");
        }
        tx.commit().await.map_err(db_error("commit a migration"))?;
    }
    Ok(())
}

/// `CREATE TABLE IF NOT EXISTS` can still collide when two replicas run it
/// at the same instant; the loser finds the table there on its second try.
async fn create_version_table(client: &Client) -> Result<(), StoreError> {
    const SQL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
        version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";
    for attempt in 0..3 {
        match client.batch_execute(SQL).await {
            Ok(()) => return Ok(()),
            Err(error)
                if attempt < 2
                    && matches!(
                        error.code(),
                        Some(&SqlState::UNIQUE_VIOLATION) | Some(&SqlState::DUPLICATE_TABLE)
                    ) => {}
            Err(error) => return Err(db_error("create schema_migrations")(error)),
        }
    }
    Ok(())
}
