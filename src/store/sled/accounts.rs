//! Accounts and business numbers in sled: `accounts/v1` by account id,
//! `business_numbers/v1` by E.164 number, and `phone_number_ids/v1` from a
//! Cloud API phone number id to the number it sends for (the lookup that
//! keeps an id on one number).

use serde::{Deserialize, Serialize};

use super::records::{self, DecodeError, decode, encode};
use super::wal::Tree;
use super::{SledStore, StoreError, corrupt};
use crate::domain::PhoneNumber;
use crate::domain::account::{
    Account, AccountId, AccountWrite, BusinessNumber, Credentials, NumberSnapshot, NumberWrite,
    PhoneNumberId, SyncReport,
};
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

#[derive(Serialize, Deserialize)]
struct NumberRecord {
    phone_number_id: String,
    account: String,
    registered_at: i64,
}

impl From<&Account> for AccountRecord {
    fn from(account: &Account) -> Self {
        AccountRecord {
            display_name: account.display_name.clone(),
            delivery: account.delivery,
            credentials: match &account.credentials {
                Credentials::None => CredentialsRecord::None,
                Credentials::EnvVar(name) => CredentialsRecord::EnvVar(name.clone()),
                Credentials::File(path) => {
                    CredentialsRecord::File(path.to_string_lossy().into_owned())
                }
            },
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
        credentials: match record.credentials {
            CredentialsRecord::None => Credentials::None,
            CredentialsRecord::EnvVar(name) => {
                Credentials::env_var(&name).map_err(|_| invalid("credentials"))?
            }
            CredentialsRecord::File(path) => {
                Credentials::file(&path).map_err(|_| invalid("credentials"))?
            }
        },
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

fn number(key: &[u8], record: NumberRecord) -> Result<BusinessNumber, DecodeError> {
    let invalid = |what: &str| DecodeError::Invalid(what.to_owned());
    let number = std::str::from_utf8(key).map_err(|_| invalid("business number"))?;
    Ok(BusinessNumber {
        number: records::phone(number)?,
        phone_number_id: PhoneNumberId::parse(&record.phone_number_id)
            .map_err(|_| invalid("phone number id"))?,
        account: AccountId::parse(&record.account).map_err(|_| invalid("account id"))?,
        registered_at: records::time(record.registered_at)?,
    })
}

fn account_from(id: &[u8], bytes: Option<sled::IVec>) -> Result<Option<Account>, StoreError> {
    bytes
        .map(|bytes| decode(&bytes).and_then(|record| account(id, record)))
        .transpose()
        .map_err(corrupt(ACCOUNTS))
}

fn number_from(
    key: &[u8],
    bytes: Option<sled::IVec>,
) -> Result<Option<BusinessNumber>, StoreError> {
    bytes
        .map(|bytes| decode(&bytes).and_then(|record| number(key, record)))
        .transpose()
        .map_err(corrupt(NUMBERS))
}

fn number_record(n: &BusinessNumber) -> NumberRecord {
    NumberRecord {
        phone_number_id: n.phone_number_id.as_str().to_owned(),
        account: n.account.as_str().to_owned(),
        registered_at: records::micros(n.registered_at),
    }
}

impl SledStore {
    pub(super) fn read_account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let key = id.as_str().as_bytes();
        account_from(key, self.trees.accounts.get(key)?)
    }

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

    pub(super) fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.trees
            .accounts
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok(account_from(&key, Some(bytes))?.expect("a value was read"))
            })
            .collect()
    }

    pub(super) async fn write_number(
        &self,
        number: &PhoneNumber,
        phone_number_id: &PhoneNumberId,
        account: &AccountId,
        plan: Planner<'_, NumberSnapshot, NumberWrite>,
    ) -> Result<NumberWrite, StoreError> {
        let key = number.as_str().as_bytes();
        let (write, lsn) = {
            let mut w = self.wal.section()?;
            let by_phone_number_id =
                match w.get(Tree::PhoneNumberIds, phone_number_id.as_str().as_bytes())? {
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
                w.insert(
                    Tree::PhoneNumberIds,
                    stored.phone_number_id.as_str().as_bytes(),
                    key.to_vec(),
                );
            }
            (write, w.commit())
        };
        self.durable(lsn).await?;
        Ok(write)
    }

    pub(super) fn read_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<BusinessNumber>, StoreError> {
        let key = number.as_str().as_bytes();
        number_from(key, self.trees.business_numbers.get(key)?)
    }

    pub(super) fn numbers_of(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<BusinessNumber>, StoreError> {
        let mut numbers = Vec::new();
        for entry in self.trees.business_numbers.iter() {
            let (key, bytes) = entry?;
            let n = number_from(&key, Some(bytes))?.expect("a value was read");
            if account.is_none_or(|a| *a == n.account) {
                numbers.push(n);
            }
        }
        Ok(numbers)
    }

    pub(super) async fn delete_number(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        let key = number.as_str().as_bytes();
        let (removed, lsn) = {
            let mut w = self.wal.section()?;
            let current = number_from(key, w.get(Tree::BusinessNumbers, key)?)?;
            if let Some(current) = &current {
                w.remove(Tree::BusinessNumbers, key);
                w.remove(
                    Tree::PhoneNumberIds,
                    current.phone_number_id.as_str().as_bytes(),
                );
            }
            (current.is_some(), w.commit())
        };
        self.durable(lsn).await?;
        Ok(removed)
    }
}
