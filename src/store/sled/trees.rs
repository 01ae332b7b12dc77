//! The layout's trees: one sled tree per kind of record or index, named
//! with its layout version (a later layout gets new trees and migrates into
//! them).

use sled::IVec;

use super::packed;
use super::wal::Tree;
use super::{
    DELIVERIES, EARLY_STATUSES, IDEMPOTENCY, INBOUND_IDS, OUTBOX, TEMPLATES, WAMIDS, WINDOWS,
    changes, consent, reach, send_rate,
};

/// The packed trees (layout 3); see [`packed`].
pub(super) const WINDOW_EXPIRY: &str = "window_expiry/v2";
pub(super) const INBOUND_AGE: &str = "inbound_age/v2";
pub(super) const IDEMPOTENCY_AGE: &str = "idempotency_age/v2";
pub(super) const CHANGE_EXPIRY: &str = "window_change_expiry/v2";

/// Each tree of the layout, open. The fields are the sled store's own:
/// sections reach them through the log (`Tree`), other reads through
/// [`super::Settled`].
pub(crate) struct Trees {
    pub(super) windows: sled::Tree,
    pub(super) window_expiry: sled::Tree,
    pub(super) inbound_ids: sled::Tree,
    pub(super) inbound_age: sled::Tree,
    pub(super) templates: sled::Tree,
    pub(super) outbox: sled::Tree,
    pub(super) idempotency: sled::Tree,
    pub(super) idempotency_age: sled::Tree,
    pub(super) deliveries: sled::Tree,
    pub(super) delivery_queue: sled::Tree,
    pub(super) wamids: sled::Tree,
    pub(super) early_statuses: sled::Tree,
    pub(super) early_status_age: sled::Tree,
    pub(super) window_changes: sled::Tree,
    pub(super) change_expiry: sled::Tree,
    pub(super) change_pairs: sled::Tree,
    pub(super) accounts: sled::Tree,
    pub(super) business_numbers: sled::Tree,
    pub(super) phone_number_ids: sled::Tree,
    pub(super) consent: sled::Tree,
    pub(super) reaches: sled::Tree,
    pub(super) reach_age: sled::Tree,
    pub(super) limit_usage: sled::Tree,
    pub(super) send_rates: sled::Tree,
    pub(super) send_rate_age: sled::Tree,
}

impl Trees {
    /// Opens every tree of the layout (creating those a new or older
    /// directory lacks).
    pub(super) fn open(db: &sled::Db) -> sled::Result<Trees> {
        Ok(Trees {
            windows: db.open_tree(WINDOWS)?,
            window_expiry: db.open_tree(WINDOW_EXPIRY)?,
            inbound_ids: db.open_tree(INBOUND_IDS)?,
            inbound_age: db.open_tree(INBOUND_AGE)?,
            templates: db.open_tree(TEMPLATES)?,
            outbox: db.open_tree(OUTBOX)?,
            idempotency: db.open_tree(IDEMPOTENCY)?,
            idempotency_age: db.open_tree(IDEMPOTENCY_AGE)?,
            deliveries: db.open_tree(DELIVERIES)?,
            delivery_queue: db.open_tree("delivery_queue/v1")?,
            wamids: db.open_tree(WAMIDS)?,
            early_statuses: db.open_tree(EARLY_STATUSES)?,
            early_status_age: db.open_tree("early_status_age/v1")?,
            window_changes: db.open_tree(changes::WINDOW_CHANGES)?,
            change_expiry: db.open_tree(CHANGE_EXPIRY)?,
            change_pairs: db.open_tree("window_change_pairs/v1")?,
            accounts: db.open_tree("accounts/v1")?,
            business_numbers: db.open_tree("business_numbers/v1")?,
            phone_number_ids: db.open_tree("phone_number_ids/v1")?,
            consent: db.open_tree(consent::CONSENT)?,
            reaches: db.open_tree(reach::REACHES)?,
            reach_age: db.open_tree(reach::REACH_AGE)?,
            limit_usage: db.open_tree(reach::LIMIT_USAGE)?,
            send_rates: db.open_tree(send_rate::SEND_RATES)?,
            send_rate_age: db.open_tree(send_rate::SEND_RATE_AGE)?,
        })
    }

    pub(super) fn get(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Windows => &self.windows,
            Tree::WindowExpiry => &self.window_expiry,
            Tree::InboundIds => &self.inbound_ids,
            Tree::InboundAge => &self.inbound_age,
            Tree::Templates => &self.templates,
            Tree::Outbox => &self.outbox,
            Tree::Idempotency => &self.idempotency,
            Tree::IdempotencyAge => &self.idempotency_age,
            Tree::Deliveries => &self.deliveries,
            Tree::DeliveryQueue => &self.delivery_queue,
            Tree::Wamids => &self.wamids,
            Tree::EarlyStatuses => &self.early_statuses,
            Tree::EarlyStatusAge => &self.early_status_age,
            Tree::WindowChanges => &self.window_changes,
            Tree::ChangeExpiry => &self.change_expiry,
            Tree::ChangePairs => &self.change_pairs,
            Tree::Accounts => &self.accounts,
            Tree::BusinessNumbers => &self.business_numbers,
            Tree::PhoneNumberIds => &self.phone_number_ids,
            Tree::Consent => &self.consent,
            Tree::Reaches => &self.reaches,
            Tree::ReachAge => &self.reach_age,
            Tree::LimitUsage => &self.limit_usage,
            Tree::SendRates => &self.send_rates,
            Tree::SendRateAge => &self.send_rate_age,
        }
    }

    /// The value of `key` in `tree`, packed or not.
    pub(super) fn read(&self, tree: Tree, key: &[u8]) -> sled::Result<Option<IVec>> {
        if packed::is_packed(tree) {
            packed::get(self.get(tree), key)
        } else {
            self.get(tree).get(key)
        }
    }

    /// Up to `limit` keys of `tree` below `end`, in key order, packed or
    /// not.
    pub(super) fn keys_before(
        &self,
        tree: Tree,
        end: &[u8],
        limit: usize,
    ) -> sled::Result<Vec<IVec>> {
        if packed::is_packed(tree) {
            packed::keys_before(self.get(tree), end, limit)
        } else {
            self.get(tree).range(..end).keys().take(limit).collect()
        }
    }
}
