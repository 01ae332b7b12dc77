//! Accounts and business numbers in sled: `accounts/v1` by account id,
//! `business_numbers/v1` by E.164 number, and `phone_number_ids/v1` from a
//! Cloud API phone number id to the number it sends for (the lookup that
//! keeps an id on one number).

use serde::{Deserialize, Serialize};

use super::records::{self, DecodeError, decode, encode};
use super::wal::Tree;
use super::{Settled, SledStore, StoreError, corrupt};
use crate::domain::PhoneNumber;
use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, Credentials, NumberSnapshot, NumberWrite,
    PhoneNumberId, Route, SyncReport,
};
use crate::domain::clickatell::{Integration, IntegrationId};
use crate::domain::messaging_limit::MessagingLimit;
use crate::domain::template_sync::SyncCounts;
use crate::store::Planner;

const ACCOUNTS: &str = "accounts";
const NUMBERS: &str = "business_numbers";

#[derive(Serialize, Deserialize)]
struct AccountRecord {
    display_name: String,
    delivery: bool,
    credentials: CredentialsRecord,
    created_at: i64,
    updated_at: i64,
    sync: Option<SyncRecord>,
    /// As `MessagingLimit` prints it. The trailing field is what tells it
    /// from a V1 record.
    messaging_limit: Option<String>,
}

/// An account as written before messaging limits.
#[derive(Serialize, Deserialize)]
struct AccountRecordV1 {
    display_name: String,
    delivery: bool,
    credentials: CredentialsRecord,
    created_at: i64,
    updated_at: i64,
    sync: Option<SyncRecord>,
}

fn decode_account(bytes: &[u8]) -> Result<AccountRecord, DecodeError> {
    decode::<AccountRecord>(bytes).or_else(|error| match decode::<AccountRecordV1>(bytes) {
        Ok(v1) => Ok(AccountRecord {
            display_name: v1.display_name,
            delivery: v1.delivery,
            credentials: v1.credentials,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            sync: v1.sync,
            messaging_limit: None,
        }),
        Err(_) => Err(error),
    })
}

#[derive(Serialize, Deserialize)]
struct SyncRecord {
    attempted_at: i64,
    error: String,
    /// created, updated, deleted, unchanged, failed.
    counts: [u32; 5],
    last_good_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum CredentialsRecord {
    None,
    EnvVar(String),
    File(String),
}

/// A number as first written: every number sent through the Cloud API.
#[derive(Serialize, Deserialize)]
struct NumberRecordV1 {
    phone_number_id: String,
    account: String,
    registered_at: i64,
}

/// A number with its route: `phone_number_id` is empty for a Clickatell
/// number. The trailing field is what tells it from a V1 record.
#[derive(Serialize, Deserialize)]
struct NumberRecord {
    phone_number_id: String,
    account: String,
    registered_at: i64,
    clickatell: Option<IntegrationRecord>,
}

#[derive(Serialize, Deserialize)]
struct IntegrationRecord {
    id: String,
    api_key: CredentialsRecord,
    callback_token: CredentialsRecord,
}

fn decode_number(bytes: &[u8]) -> Result<NumberRecord, DecodeError> {
    decode::<NumberRecord>(bytes).or_else(|error| match decode::<NumberRecordV1>(bytes) {
        Ok(v1) => Ok(NumberRecord {
            phone_number_id: v1.phone_number_id,
            account: v1.account,
            registered_at: v1.registered_at,
            clickatell: None,
        }),
        Err(_) => Err(error),
    })
}

impl From<&Account> for AccountRecord {
    fn from(account: &Account) -> Self {
        AccountRecord {
            display_name: account.display_name.clone(),
            delivery: account.delivery,
            credentials: credentials_record(&account.credentials),
            created_at: records::micros(account.created_at),
            updated_at: records::micros(account.updated_at),
            sync: account.sync.as_ref().map(|s| SyncRecord {
                attempted_at: records::micros(s.attempted_at),
                error: s.error.clone(),
                counts: [
                    s.counts.created,
                    s.counts.updated,
                    s.counts.deleted,
                    s.counts.unchanged,
                    s.counts.failed,
                ],
                last_good_at: s.last_good_at.map(records::micros),
            }),
            messaging_limit: account.messaging_limit.map(|l| l.to_string()),
        }
    }
}

fn account(id: &[u8], record: AccountRecord) -> Result<Account, DecodeError> {
    let invalid = |what: &str| DecodeError::Invalid(what.to_owned());
    let id = std::str::from_utf8(id).map_err(|_| invalid("account id"))?;
    Ok(Account {
        id: AccountId::parse(id).map_err(|_| invalid("account id"))?,
        display_name: record.display_name,
        delivery: record.delivery,
        credentials: credentials(record.credentials)?,
        messaging_limit: record
            .messaging_limit
            .map(|l| MessagingLimit::parse(&l).map_err(DecodeError::Invalid))
            .transpose()?,
        created_at: records::time(record.created_at)?,
        updated_at: records::time(record.updated_at)?,
        sync: match record.sync {
            None => None,
            Some(s) => {
                let [created, updated, deleted, unchanged, failed] = s.counts;
                Some(SyncReport {
                    attempted_at: records::time(s.attempted_at)?,
                    error: s.error,
                    counts: SyncCounts {
                        created,
                        updated,
                        deleted,
                        unchanged,
                        failed,
                    },
                    last_good_at: s.last_good_at.map(records::time).transpose()?,
                })
            }
        },
    })
}

fn credentials_record(credentials: &Credentials) -> CredentialsRecord {
    match credentials {
        Credentials::None => CredentialsRecord::None,
        Credentials::EnvVar(name) => CredentialsRecord::EnvVar(name.clone()),
        Credentials::File(path) => CredentialsRecord::File(path.to_string_lossy().into_owned()),
    }
}

fn credentials(record: CredentialsRecord) -> Result<Credentials, DecodeError> {
    let invalid = |_| DecodeError::Invalid("credentials".to_owned());
    match record {
        CredentialsRecord::None => Ok(Credentials::None),
        CredentialsRecord::EnvVar(name) => Credentials::env_var(&name).map_err(invalid),
        CredentialsRecord::File(path) => Credentials::file(&path).map_err(invalid),
    }
}

fn number(key: &[u8], record: NumberRecord) -> Result<BusinessNumber, DecodeError> {
    let invalid = |what: &str| DecodeError::Invalid(what.to_owned());
    let number = std::str::from_utf8(key).map_err(|_| invalid("business number"))?;
    let route = match record.clickatell {
        None => Route::CloudApi(
            PhoneNumberId::parse(&record.phone_number_id)
                .map_err(|_| invalid("phone number id"))?,
        ),
        Some(integration) => Route::Clickatell(
            Integration::new(
                IntegrationId::parse(&integration.id).map_err(|_| invalid("integration id"))?,
                credentials(integration.api_key)?,
                credentials(integration.callback_token)?,
            )
            .map_err(|_| invalid("integration"))?,
        ),
    };
    Ok(BusinessNumber {
        number: records::phone(number)?,
        route,
        account: AccountId::parse(&record.account).map_err(|_| invalid("account id"))?,
        registered_at: records::time(record.registered_at)?,
    })
}

fn account_from(id: &[u8], bytes: Option<sled::IVec>) -> Result<Option<Account>, StoreError> {
    bytes
        .map(|bytes| decode_account(&bytes).and_then(|record| account(id, record)))
        .transpose()
        .map_err(corrupt(ACCOUNTS))
}

fn number_from(
    key: &[u8],
    bytes: Option<sled::IVec>,
) -> Result<Option<BusinessNumber>, StoreError> {
    bytes
        .map(|bytes| decode_number(&bytes).and_then(|record| number(key, record)))
        .transpose()
        .map_err(corrupt(NUMBERS))
}

fn number_record(n: &BusinessNumber) -> NumberRecord {
    let (phone_number_id, clickatell) = match &n.route {
        Route::CloudApi(id) => (id.as_str().to_owned(), None),
        Route::Clickatell(integration) => (
            String::new(),
            Some(IntegrationRecord {
                id: integration.id.as_str().to_owned(),
                api_key: credentials_record(&integration.api_key),
                callback_token: credentials_record(&integration.callback_token),
            }),
        ),
    };
    NumberRecord {
        phone_number_id,
        account: n.account.as_str().to_owned(),
        registered_at: records::micros(n.registered_at),
        clickatell,
    }
}

impl SledStore {
    pub(super) async fn write_account(
        &self,
        id: &AccountId,
        plan: Planner<'_, Option<Account>, AccountWrite>,
    ) -> Result<AccountWrite, StoreError> {
        let key = id.as_str().as_bytes();
        let (write, lsn) = {
            let mut w = self.wal.section()?;
            let existing = account_from(key, w.get(Tree::Accounts, key)?)?;
            let write = plan(&existing).map_err(StoreError::Rejected)?;
            if let AccountWrite::Put(account) = &write {
                w.insert(Tree::Accounts, key, encode(&AccountRecord::from(account)));
            }
            (write, w.commit())
        };
        self.durable(lsn).await?;
        Ok(write)
    }

    pub(super) async fn write_number(
        &self,
        number: &PhoneNumber,
        phone_number_id: Option<&PhoneNumberId>,
        account: &AccountId,
        plan: Planner<'_, NumberSnapshot, NumberWrite>,
    ) -> Result<NumberWrite, StoreError> {
        let key = number.as_str().as_bytes();
        let (write, lsn) = {
            let mut w = self.wal.section()?;
            let owner = match phone_number_id {
                Some(id) => w.get(Tree::PhoneNumberIds, id.as_str().as_bytes())?,
                None => None,
            };
            let by_phone_number_id = match owner {
                Some(owner) => number_from(&owner, w.get(Tree::BusinessNumbers, &owner)?)?,
                None => None,
            };
            let seen = NumberSnapshot {
                account: account_from(
                    account.as_str().as_bytes(),
                    w.get(Tree::Accounts, account.as_str().as_bytes())?,
                )?,
                by_number: number_from(key, w.get(Tree::BusinessNumbers, key)?)?,
                by_phone_number_id,
            };
            let write = plan(&seen).map_err(StoreError::Rejected)?;
            if let NumberWrite::Put {
                number: stored,
                replaces,
            } = &write
            {
                if let Some(old) = replaces {
                    w.remove(Tree::PhoneNumberIds, old.as_str().as_bytes());
                }
                w.insert(Tree::BusinessNumbers, key, encode(&number_record(stored)));
                if let Some(id) = stored.phone_number_id() {
                    w.insert(Tree::PhoneNumberIds, id.as_str().as_bytes(), key.to_vec());
                }
            }
            (write, w.commit())
        };
        self.durable(lsn).await?;
        Ok(write)
    }

    pub(super) async fn delete_number(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        let key = number.as_str().as_bytes();
        let (removed, lsn) = {
            let mut w = self.wal.section()?;
            let current = number_from(key, w.get(Tree::BusinessNumbers, key)?)?;
            if let Some(current) = &current {
                w.remove(Tree::BusinessNumbers, key);
                if let Some(id) = current.phone_number_id() {
                    w.remove(Tree::PhoneNumberIds, id.as_str().as_bytes());
                }
            }
            (current.is_some(), w.commit())
        };
        self.durable(lsn).await?;
        Ok(removed)
    }
}

impl Settled {
    pub(super) fn read_account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let key = id.as_str().as_bytes();
        account_from(key, self.accounts.get(key)?)
    }

    pub(super) fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok(account_from(&key, Some(bytes))?.expect("a value was read"))
            })
            .collect()
    }

    pub(super) fn read_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError> {
        let key = number.as_str().as_bytes();
        number_from(key, self.business_numbers.get(key)?)
    }

    pub(super) fn numbers_of(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError> {
        let mut numbers = Vec::new();
        for entry in self.business_numbers.iter() {
            let (key, bytes) = entry?;
            let n = number_from(&key, Some(bytes))?.expect("a value was read");
            if account.is_none_or(|a| *a == n.account) {
                numbers.push(n);
            }
        }
        Ok(numbers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_written_before_routes_read_as_cloud_api_numbers() {
        let v1 = encode(&NumberRecordV1 {
            phone_number_id: "106540352242922".into(),
            account: "default".into(),
            registered_at: 1_764_230_400_000_000,
        });
        let old = number(b"+15550001111", decode_number(&v1).unwrap()).unwrap();
        assert_eq!(
            old.route,
            Route::CloudApi(PhoneNumberId::parse("106540352242922").unwrap())
        );
        assert!(old.account.is_default());
        // And a record of today's layout reads back as written.
        let clickatell = BusinessNumber {
            route: Route::Clickatell(
                Integration::new(
                    IntegrationId::parse("3f1a9c").unwrap(),
                    Credentials::env_var("CLICKATELL_KEY").unwrap(),
                    Credentials::file("/run/secrets/token").unwrap(),
                )
                .unwrap(),
            ),
            ..old
        };
        let bytes = encode(&number_record(&clickatell));
        let read = number(b"+15550001111", decode_number(&bytes).unwrap()).unwrap();
        assert_eq!(read, clickatell);
    }

    #[test]
    fn accounts_written_before_messaging_limits_share_the_deployments() {
        let v1 = encode(&AccountRecordV1 {
            display_name: "Brand".into(),
            delivery: true,
            credentials: CredentialsRecord::EnvVar("BRAND_TOKEN".into()),
            created_at: 1_764_230_400_000_000,
            updated_at: 1_764_230_400_000_000,
            sync: None,
        });
        let old = account(b"102290129340398", decode_account(&v1).unwrap()).unwrap();
        assert_eq!(old.messaging_limit, None);
        assert_eq!(old.display_name, "Brand");
        // Today's layout reads back as written.
        let limited = Account {
            messaging_limit: Some(MessagingLimit::Customers(2_000)),
            ..old
        };
        let bytes = encode(&AccountRecord::from(&limited));
        let read = account(b"102290129340398", decode_account(&bytes).unwrap()).unwrap();
        assert_eq!(read, limited);
    }
}
