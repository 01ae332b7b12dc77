//! Accounts and business numbers in PostgreSQL: one row per account, one
//! per number; the unique `phone_number_id` keeps an id on one number even
//! when two replicas register at once (the loser retries and is refused by
//! the planner).

use tokio_postgres::Row;

use super::{conn, rows};
use crate::domain::PhoneNumber;
use crate::domain::account::{
    Account, AccountId, BusinessNumber, Credentials, DEFAULT_ACCOUNT, PhoneNumberId, Route,
    SyncReport,
};
use crate::domain::clickatell::{Integration, IntegrationId};
use crate::domain::messaging_limit::MessagingLimit;
use crate::domain::template_sync::SyncCounts;
use crate::store::StoreError;

const ACCOUNTS: &str = "accounts";
const NUMBERS: &str = "business_numbers";

fn account(row: &Row) -> Result<Account, StoreError> {
    let corrupt = |detail: &str| StoreError::corrupt(ACCOUNTS, detail);
    let env: Option<&str> = row.get("credentials_env");
    let file: Option<&str> = row.get("credentials_file");
    let credentials = match (env, file) {
        (None, None) => Credentials::None,
        (Some(name), None) => Credentials::env_var(name).map_err(|_| corrupt("credentials_env"))?,
        (None, Some(path)) => Credentials::file(path).map_err(|_| corrupt("credentials_file"))?,
        (Some(_), Some(_)) => return Err(corrupt("two credentials")),
    };
    Ok(Account {
        id: AccountId::parse(row.get("id")).map_err(|_| corrupt("id"))?,
        display_name: row.get("display_name"),
        delivery: row.get("delivery"),
        credentials,
        messaging_limit: row
            .get::<_, Option<&str>>("messaging_limit")
            .map(|l| MessagingLimit::parse(l).map_err(|_| corrupt("messaging_limit")))
            .transpose()?,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        sync: row
            .get::<_, Option<serde_json::Value>>("sync")
            .map(|v| sync_of(&v).ok_or_else(|| corrupt("sync")))
            .transpose()?,
    })
}

fn sync_json(s: &SyncReport) -> serde_json::Value {
    let c = &s.counts;
    serde_json::json!({
        "attempted_at": s.attempted_at.to_rfc3339(),
        "error": s.error,
        "counts": [c.created, c.updated, c.deleted, c.unchanged, c.failed],
        "last_good_at": s.last_good_at.map(|t| t.to_rfc3339()),
    })
}

fn sync_of(v: &serde_json::Value) -> Option<SyncReport> {
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str()?)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let counts: Vec<u32> = v["counts"]
        .as_array()?
        .iter()
        .map(|n| n.as_u64().map(|n| n as u32))
        .collect::<Option<_>>()?;
    let [created, updated, deleted, unchanged, failed] = counts[..] else {
        return None;
    };
    Some(SyncReport {
        attempted_at: time(&v["attempted_at"])?,
        error: v["error"].as_str()?.to_owned(),
        counts: SyncCounts {
            created,
            updated,
            deleted,
            unchanged,
            failed,
        },
        last_good_at: match &v["last_good_at"] {
            serde_json::Value::Null => None,
            at => Some(time(at)?),
        },
    })
}

fn number(row: &Row) -> Result<BusinessNumber, StoreError> {
    let corrupt = |detail: &str| StoreError::corrupt(NUMBERS, detail);
    let phone_number_id: Option<&str> = row.get("phone_number_id");
    let clickatell: Option<serde_json::Value> = row.get("clickatell");
    let route = match (phone_number_id, clickatell) {
        (Some(id), None) => {
            Route::CloudApi(PhoneNumberId::parse(id).map_err(|_| corrupt("phone_number_id"))?)
        }
        (None, Some(v)) => {
            let credentials = |field: &str| {
                let c = &v[field];
                match (c["env"].as_str(), c["file"].as_str()) {
                    (Some(name), None) => Credentials::env_var(name),
                    (None, Some(path)) => Credentials::file(path),
                    _ => Ok(Credentials::None),
                }
                .map_err(|_| corrupt(field))
            };
            let integration = Integration::new(
                IntegrationId::parse(v["integration_id"].as_str().unwrap_or(""))
                    .map_err(|_| corrupt("integration_id"))?,
                credentials("api_key")?,
                credentials("callback_token")?,
            )
            .map_err(|_| corrupt("clickatell"))?;
            Route::Clickatell(integration)
        }
        _ => return Err(corrupt("route")),
    };
    Ok(BusinessNumber {
        number: rows::phone(NUMBERS, row.get("number"))?,
        route,
        account: AccountId::parse(row.get("account")).map_err(|_| corrupt("account"))?,
        registered_at: row.get("registered_at"),
    })
}

fn credentials_json(credentials: &Credentials) -> serde_json::Value {
    match credentials {
        Credentials::None => serde_json::Value::Null,
        Credentials::EnvVar(name) => serde_json::json!({ "env": name }),
        Credentials::File(path) => serde_json::json!({ "file": path.to_string_lossy() }),
    }
}

pub(super) async fn read_account(
    tx: &impl conn::Connection,
    id: &AccountId,
) -> Result<Option<Account>, StoreError> {
    conn::query_opt(
        tx,
        "read an account",
        "SELECT * FROM accounts WHERE id = $1",
        &[&id.as_str()],
    )
    .await?
    .map(|row| account(&row))
    .transpose()
}

pub(super) async fn put_account(tx: &impl conn::Connection, a: &Account) -> Result<(), StoreError> {
    let (env, file) = match &a.credentials {
        Credentials::None => (None, None),
        Credentials::EnvVar(name) => (Some(name.clone()), None),
        Credentials::File(path) => (None, Some(path.to_string_lossy().into_owned())),
    };
    conn::execute(
        tx,
        "write an account",
        "INSERT INTO accounts (id, display_name, delivery, credentials_env, credentials_file, \
            created_at, updated_at, sync, messaging_limit) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name, \
            delivery = EXCLUDED.delivery, credentials_env = EXCLUDED.credentials_env, \
            credentials_file = EXCLUDED.credentials_file, updated_at = EXCLUDED.updated_at, \
            sync = EXCLUDED.sync, messaging_limit = EXCLUDED.messaging_limit",
        &[
            &a.id.as_str(),
            &a.display_name,
            &a.delivery,
            &env,
            &file,
            &a.created_at,
            &a.updated_at,
            &a.sync.as_ref().map(sync_json),
            &a.messaging_limit.map(|l| l.to_string()),
        ],
    )
    .await?;
    Ok(())
}

/// The account `business` is registered in and the default account, where
/// stored: the accounts a send from it may run under.
pub(super) async fn read_sending_accounts(
    tx: &impl conn::Connection,
    business: &PhoneNumber,
) -> Result<Vec<Account>, StoreError> {
    conn::query(
        tx,
        "read a sending number's accounts",
        "SELECT * FROM accounts WHERE id = $2 \
            OR id = (SELECT account FROM business_numbers WHERE number = $1)",
        &[&business.as_str(), &DEFAULT_ACCOUNT],
    )
    .await?
    .iter()
    .map(account)
    .collect()
}

pub(super) async fn list_accounts(
    client: &impl conn::Connection,
) -> Result<Vec<Account>, StoreError> {
    // Byte order, the order sled keeps.
    conn::query(
        client,
        "list accounts",
        "SELECT * FROM accounts ORDER BY id COLLATE \"C\"",
        &[],
    )
    .await?
    .iter()
    .map(account)
    .collect()
}

pub(super) async fn read_number(
    tx: &impl conn::Connection,
    number_: &PhoneNumber,
) -> Result<Option<BusinessNumber>, StoreError> {
    conn::query_opt(
        tx,
        "read a business number",
        "SELECT * FROM business_numbers WHERE number = $1",
        &[&number_.as_str()],
    )
    .await?
    .map(|row| number(&row))
    .transpose()
}

pub(super) async fn read_number_by_id(
    tx: &impl conn::Connection,
    id: &PhoneNumberId,
) -> Result<Option<BusinessNumber>, StoreError> {
    conn::query_opt(
        tx,
        "read a business number by its id",
        "SELECT * FROM business_numbers WHERE phone_number_id = $1",
        &[&id.as_str()],
    )
    .await?
    .map(|row| number(&row))
    .transpose()
}

pub(super) async fn put_number(
    tx: &impl conn::Connection,
    n: &BusinessNumber,
) -> Result<(), StoreError> {
    let clickatell = match &n.route {
        Route::CloudApi(_) => None,
        Route::Clickatell(integration) => Some(serde_json::json!({
            "integration_id": integration.id.as_str(),
            "api_key": credentials_json(&integration.api_key),
            "callback_token": credentials_json(&integration.callback_token),
        })),
    };
    conn::execute(
        tx,
        "write a business number",
        "INSERT INTO business_numbers (number, phone_number_id, account, registered_at, \
            clickatell) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (number) DO UPDATE SET phone_number_id = EXCLUDED.phone_number_id, \
            account = EXCLUDED.account, clickatell = EXCLUDED.clickatell",
        &[
            &n.number.as_str(),
            &n.phone_number_id().map(PhoneNumberId::as_str),
            &n.account.as_str(),
            &n.registered_at,
            &clickatell,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_number(
    tx: &impl conn::Connection,
    n: &PhoneNumber,
) -> Result<bool, StoreError> {
    let deleted = conn::execute(
        tx,
        "remove a business number",
        "DELETE FROM business_numbers WHERE number = $1",
        &[&n.as_str()],
    )
    .await?;
    Ok(deleted > 0)
}

pub(super) async fn list_numbers(
    client: &impl conn::Connection,
    account_: Option<&AccountId>,
) -> Result<Vec<BusinessNumber>, StoreError> {
    let account_ = account_.map(AccountId::as_str);
    conn::query(
        client,
        "list business numbers",
        "SELECT * FROM business_numbers WHERE ($1::text IS NULL OR account = $1) \
         ORDER BY number COLLATE \"C\"",
        &[&account_],
    )
    .await?
    .iter()
    .map(number)
    .collect()
}

/// Whether any account is registered.
pub(super) async fn any_account(tx: &impl conn::Connection) -> Result<bool, StoreError> {
    let row = conn::query_one(
        tx,
        "look for any account",
        "SELECT EXISTS (SELECT 1 FROM accounts)",
        &[],
    )
    .await?;
    Ok(row.get(0))
}
