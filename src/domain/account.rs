//! WhatsApp Business Accounts and the business numbers that belong to them.
//!
//! On WhatsApp every business phone number belongs to one WhatsApp Business
//! Account (WABA), and the account holds the templates and the access token.
//! wagate keeps a registry of accounts and numbers; `--phone-number-ids`
//! still works by registering its numbers in the *default* account, the one
//! deployments from before accounts existed run in.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::clickatell::Integration;
use super::messaging_limit::MessagingLimit;
use super::phone::PhoneNumber;
use super::{Reason, Rejection};

/// Which account: the default one or a WhatsApp Business Account by its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

/// How the default account is named on the wire and in the store.
pub const DEFAULT_ACCOUNT: &str = "default";

impl AccountId {
    /// A WABA id (digits, as the Graph API prints them), or `default`; an
    /// empty id means the default account, as an omitted field does.
    pub fn parse(raw: &str) -> Result<AccountId, Rejection> {
        let raw = raw.trim();
        if raw.is_empty() || raw == DEFAULT_ACCOUNT {
            return Ok(AccountId::default_account());
        }
        // Graph object ids are decimal integers; today's WABA ids have 15-17
        // digits, and nothing longer than 20 fits in the 64 bits they are.
        if raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "a WhatsApp Business Account id is 1-20 digits (or \"default\")",
            ));
        }
        Ok(AccountId(raw.to_owned()))
    }

    pub fn default_account() -> AccountId {
        AccountId(DEFAULT_ACCOUNT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_ACCOUNT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an account's access token is: never the token itself, which stays
/// out of the store (and so out of every backup and replica of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// The name of an environment variable holding the token.
    EnvVar(String),
    /// The path of a file holding the token (a mounted Secret, say).
    File(PathBuf),
}

impl Credentials {
    pub fn env_var(name: &str) -> Result<Credentials, Rejection> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
        if !valid {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "an environment variable name is 1-128 letters, digits and underscores, not starting with a digit",
            ));
        }
        Ok(Credentials::EnvVar(name.to_owned()))
    }

    pub fn file(path: &str) -> Result<Credentials, Rejection> {
        let valid = path.starts_with('/') && path.len() <= 4096 && !path.contains('\0');
        if !valid {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "a token file is an absolute path of at most 4,096 bytes",
            ));
        }
        Ok(Credentials::File(PathBuf::from(path)))
    }

    pub fn is_some(&self) -> bool {
        !matches!(self, Credentials::None)
    }
}

/// What a caller sets on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDraft {
    pub display_name: String,
    /// Whether its messages go out through the Cloud API.
    pub delivery: bool,
    pub credentials: Credentials,
    /// The account's own messaging limit, when it is a business portfolio
    /// of its own; `None`: it shares the deployment's.
    pub messaging_limit: Option<MessagingLimit>,
}

const DISPLAY_NAME_MAX: usize = 256;

impl AccountDraft {
    /// Checks the draft.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.display_name.chars().count() > DISPLAY_NAME_MAX
            || self.display_name.chars().any(char::is_control)
        {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "a display name is at most 256 characters, none of them control characters",
            )
            .at("display_name"));
        }
        // Delivery without credentials is allowed: a number sent for by
        // Clickatell carries its own key. Its Cloud API numbers are refused
        // at delivery (see `delivery_route`), never sent with another
        // account's token.
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub display_name: String,
    pub delivery: bool,
    pub credentials: Credentials,
    /// See [`AccountDraft::messaging_limit`].
    pub messaging_limit: Option<MessagingLimit>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How its last template sync went; none before the first.
    pub sync: Option<SyncReport>,
}

/// The outcome of an account's last template sync, for GetAccount and
/// the next sync's caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub attempted_at: DateTime<Utc>,
    /// Why it failed (the registry was left as it was); empty when it did
    /// not.
    pub error: String,
    pub counts: super::template_sync::SyncCounts,
    /// When a sync last succeeded, this one or an earlier one.
    pub last_good_at: Option<DateTime<Utc>>,
}

impl SyncReport {
    /// This attempt's report, following the account's previous one.
    pub fn after(
        previous: Option<&SyncReport>,
        attempted_at: DateTime<Utc>,
        outcome: Result<super::template_sync::SyncCounts, String>,
    ) -> SyncReport {
        match outcome {
            Ok(counts) => SyncReport {
                attempted_at,
                error: String::new(),
                counts,
                last_good_at: Some(attempted_at),
            },
            Err(error) => SyncReport {
                attempted_at,
                error,
                counts: Default::default(),
                last_good_at: previous.and_then(|p| p.last_good_at),
            },
        }
    }
}

/// Records a sync's outcome on the account.
pub fn plan_sync_report(
    existing: Option<&Account>,
    id: &AccountId,
    outcome: Result<super::template_sync::SyncCounts, String>,
    now: DateTime<Utc>,
) -> Result<AccountWrite, Rejection> {
    let account = existing.ok_or_else(|| account_not_found(id))?;
    Ok(AccountWrite::Put(Account {
        sync: Some(SyncReport::after(account.sync.as_ref(), now, outcome)),
        ..account.clone()
    }))
}

/// Refuses a hand edit of a template where WhatsApp is the source of truth
/// (an account that syncs), or in an account nobody registered.
pub fn check_hand_edit(id: &AccountId, account: Option<&Account>) -> Result<(), Rejection> {
    if id.is_default() {
        return Ok(());
    }
    match account {
        None => Err(account_not_found(id)),
        Some(account) if syncs_templates(account) => Err(Rejection::new(
            Reason::TemplatesSyncedFromWhatsapp,
            format!(
                "account {id} syncs its templates from WhatsApp: change them in WhatsApp Manager, then SyncTemplates"
            ),
        )
        .at("waba_id")),
        Some(_) => Ok(()),
    }
}

/// Whether an account's templates come from WhatsApp: those with their own
/// credentials (and so a WABA to ask). Elsewhere the registry is typed in.
pub fn syncs_templates(account: &Account) -> bool {
    !account.id.is_default() && account.credentials.is_some()
}

/// What to store for an account change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountWrite {
    Put(Account),
    /// The account already reads as asked.
    Keep(Account),
}

impl AccountWrite {
    pub fn account(&self) -> &Account {
        match self {
            AccountWrite::Put(account) | AccountWrite::Keep(account) => account,
        }
    }
}

/// Creating an account that exists is refused: two teams picking the same
/// WABA id by mistake should hear of it, not overwrite each other.
pub fn plan_create(
    existing: Option<&Account>,
    id: &AccountId,
    draft: &AccountDraft,
    now: DateTime<Utc>,
) -> Result<AccountWrite, Rejection> {
    draft.validate()?;
    if existing.is_some() {
        return Err(Rejection::new(
            Reason::AccountExists,
            format!("account {id} already exists; UpdateAccount changes it"),
        )
        .at("waba_id"));
    }
    Ok(AccountWrite::Put(Account {
        id: id.clone(),
        display_name: draft.display_name.clone(),
        delivery: draft.delivery,
        credentials: draft.credentials.clone(),
        messaging_limit: draft.messaging_limit,
        created_at: now,
        updated_at: now,
        sync: None,
    }))
}

pub fn plan_update(
    existing: Option<&Account>,
    id: &AccountId,
    draft: &AccountDraft,
    now: DateTime<Utc>,
) -> Result<AccountWrite, Rejection> {
    draft.validate()?;
    let Some(existing) = existing else {
        return Err(account_not_found(id));
    };
    let unchanged = existing.display_name == draft.display_name
        && existing.delivery == draft.delivery
        && existing.credentials == draft.credentials
        && existing.messaging_limit == draft.messaging_limit;
    if unchanged {
        return Ok(AccountWrite::Keep(existing.clone()));
    }
    Ok(AccountWrite::Put(Account {
        display_name: draft.display_name.clone(),
        delivery: draft.delivery,
        credentials: draft.credentials.clone(),
        messaging_limit: draft.messaging_limit,
        updated_at: now,
        ..existing.clone()
    }))
}

/// The default account as `--phone-number-ids` makes it at start: it
/// delivers when the process does (`--delivery`), with the process's token.
/// The flags are the default account's configuration, so a deployment that
/// ran record-only and now delivers keeps working; its name and anything
/// else set through the API stay.
pub fn plan_bootstrap_default(
    existing: Option<&Account>,
    delivery: bool,
    now: DateTime<Utc>,
) -> Result<AccountWrite, Rejection> {
    match existing {
        Some(account) if account.delivery == delivery => Ok(AccountWrite::Keep(account.clone())),
        Some(account) => Ok(AccountWrite::Put(Account {
            delivery,
            updated_at: now,
            ..account.clone()
        })),
        None => plan_create(
            None,
            &AccountId::default_account(),
            &AccountDraft {
                display_name: "Default account (--phone-number-ids)".to_owned(),
                delivery,
                credentials: Credentials::None,
                messaging_limit: None,
            },
            now,
        ),
    }
}

pub fn account_not_found(id: &AccountId) -> Rejection {
    Rejection::new(
        Reason::AccountNotFound,
        format!("no account {id} is registered"),
    )
    .at("waba_id")
}

/// The Cloud API's id of a business phone number (digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumberId(String);

impl PhoneNumberId {
    pub fn parse(raw: &str) -> Result<PhoneNumberId, Rejection> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Rejection::new(
                Reason::InvalidAccount,
                "a Cloud API phone number id is 1-20 digits",
            )
            .at("phone_number_id"));
        }
        Ok(PhoneNumberId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The provider that sends for a business number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Meta's Cloud API, as this phone number id.
    CloudApi(PhoneNumberId),
    /// Clickatell's One API, through this integration.
    Clickatell(Integration),
}

impl Route {
    /// The Cloud API phone number id, for a Cloud API number.
    pub fn phone_number_id(&self) -> Option<&PhoneNumberId> {
        match self {
            Route::CloudApi(id) => Some(id),
            Route::Clickatell(_) => None,
        }
    }
}

/// A business phone number, the provider route that sends for it, and its
/// account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessNumber {
    pub number: PhoneNumber,
    pub route: Route,
    pub account: AccountId,
    pub registered_at: DateTime<Utc>,
}

impl BusinessNumber {
    pub fn phone_number_id(&self) -> Option<&PhoneNumberId> {
        self.route.phone_number_id()
    }
}

/// What registering a number reads first.
#[derive(Debug, Clone, Default)]
pub struct NumberSnapshot {
    /// The account the number is to join.
    pub account: Option<Account>,
    /// The number as registered now, if it is.
    pub by_number: Option<BusinessNumber>,
    /// Whichever number the phone number id sends for now, if any.
    pub by_phone_number_id: Option<BusinessNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberWrite {
    /// Store the number; `replaces` is the phone number id it had before,
    /// whose lookup entry goes.
    Put {
        number: BusinessNumber,
        replaces: Option<PhoneNumberId>,
    },
    Keep(BusinessNumber),
}

impl NumberWrite {
    pub fn number(&self) -> &BusinessNumber {
        match self {
            NumberWrite::Put { number, .. } | NumberWrite::Keep(number) => number,
        }
    }
}

/// Registers `number` in `account`, sent for by `route`. A number belongs
/// to one account (as on WhatsApp), and a phone number id sends for one
/// number: moving either is an explicit remove first.
pub fn plan_register(
    seen: &NumberSnapshot,
    number: &PhoneNumber,
    route: &Route,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<NumberWrite, Rejection> {
    if seen.account.is_none() {
        return Err(account_not_found(account));
    }
    if let Some(current) = &seen.by_number
        && current.account != *account
    {
        return Err(Rejection::new(
            Reason::BusinessNumberInOtherAccount,
            format!(
                "{} belongs to account {}; remove it there first",
                number.as_str(),
                current.account
            ),
        )
        .at("number"));
    }
    if let (Some(other), Some(id)) = (&seen.by_phone_number_id, route.phone_number_id())
        && other.number != *number
    {
        return Err(Rejection::new(
            Reason::PhoneNumberIdInUse,
            format!(
                "phone number id {} already sends for {}",
                id.as_str(),
                other.number.as_str()
            ),
        )
        .at("phone_number_id"));
    }
    match &seen.by_number {
        Some(current) if current.route == *route => Ok(NumberWrite::Keep(current.clone())),
        current => Ok(NumberWrite::Put {
            number: BusinessNumber {
                number: number.clone(),
                route: route.clone(),
                account: account.clone(),
                registered_at: current.as_ref().map_or(now, |c| c.registered_at),
            },
            replaces: current
                .as_ref()
                .and_then(|c| c.phone_number_id().cloned())
                .filter(|old| Some(old) != route.phone_number_id()),
        }),
    }
}

/// Which account a send from `business` is checked against. Until any
/// account exists (a deployment that never registered one) every number
/// sends as before, in the default account; after that, only registered
/// numbers send.
pub fn sending_account(
    business: &PhoneNumber,
    registered: Option<&BusinessNumber>,
    any_account: bool,
) -> Result<AccountId, Rejection> {
    match registered {
        Some(number) => Ok(number.account.clone()),
        None if !any_account => Ok(AccountId::default_account()),
        None => Err(Rejection::new(
            Reason::BusinessNumberNotRegistered,
            format!(
                "{} is not a registered business number; RegisterNumber adds it to its account",
                business.as_str()
            ),
        )
        .at("business_number")),
    }
}

/// The account a template status webhook speaks of: the WABA it came from
/// when that account is registered, else the default account (templates
/// registered before accounts, or a WABA never registered here).
pub fn webhook_account(waba_id: &str, registered: Option<&Account>) -> AccountId {
    match (AccountId::parse(waba_id), registered) {
        (Ok(id), Some(account)) if account.id == id => id,
        _ => AccountId::default_account(),
    }
}

/// Where a message from a business number goes: its route and the
/// credentials it sends with (the account's token for the Cloud API, the
/// integration's key for Clickatell); or why it cannot go.
pub fn delivery_route(
    business: &PhoneNumber,
    number: Option<&BusinessNumber>,
    account: Option<&Account>,
) -> Result<(Route, Credentials), String> {
    let Some(number) = number else {
        return Err(format!(
            "no phone number id is registered for {}",
            business.as_str()
        ));
    };
    match account {
        None => Err(format!("account {} is not registered", number.account)),
        Some(account) if !account.delivery => {
            Err(format!("delivery is off for account {}", account.id))
        }
        Some(account) => {
            let credentials = match &number.route {
                // The default account may use the process's token; any
                // other needs its own.
                Route::CloudApi(_)
                    if !account.id.is_default() && !account.credentials.is_some() =>
                {
                    return Err(format!(
                        "account {} has no access token for the Cloud API",
                        account.id
                    ));
                }
                Route::CloudApi(_) => account.credentials.clone(),
                Route::Clickatell(integration) => integration.api_key.clone(),
            };
            Ok((number.route.clone(), credentials))
        }
    }
}

#[cfg(test)]
mod tests;
