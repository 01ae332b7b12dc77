//! A section: where one use case reads what it needs, plans, and stages its
//! changes, holding the log lock throughout, so no other change can come
//! between its reads and its writes, and the log's order of records is the
//! order their changes were planned in. A section is short (reads from
//! memory, a pure planner, no I/O it waits on): the fsync happens after it.
//!
//! Dropping a section without [`Section::commit`] stages nothing: a use case
//! that stops early (a rejection, a lost lease) leaves no trace.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use sled::IVec;

use super::record::{Change, Record, Tree};
use super::{Shared, Staged};
use crate::store::StoreError;

pub struct Section<'a> {
    staged: MutexGuard<'a, Staged>,
    shared: &'a Shared,
    changes: Vec<Change>,
}

impl<'a> Section<'a> {
    pub(super) fn new(staged: MutexGuard<'a, Staged>, shared: &'a Shared) -> Section<'a> {
        Section {
            staged,
            shared,
            changes: Vec::new(),
        }
    }

    /// The latest value of `key`: this section's own change, else one staged
    /// and not yet in sled, else sled's.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        if let Some(change) = self
            .changes
            .iter()
            .rev()
            .find(|change| change.tree == tree && change.key == key)
        {
            return Ok(change.value.clone());
        }
        if let Some(value) = self.staged.overlay.get(tree, key) {
            return Ok(value.clone());
        }
        Ok(self.shared.trees.read(tree, key)?)
    }

    /// Every entry of `tree` whose key `keep` accepts, in key order, as
    /// the section sees them: sled's, with what is staged and not yet
    /// applied, and this section's own changes, laid over them. It walks
    /// the whole tree under the log lock, so it is for small trees only
    /// (the templates tree, for a sync), and never for a packed one.
    pub fn entries(
        &self,
        tree: Tree,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        debug_assert!(!crate::store::sled::packed::is_packed(tree));
        let mut entries = BTreeMap::new();
        for entry in self.shared.trees.get(tree).iter() {
            let (key, value) = entry?;
            if keep(&key) {
                entries.insert(key.to_vec(), Some(value));
            }
        }
        let staged = self.staged.overlay.entries(tree);
        let own = self
            .changes
            .iter()
            .filter(|change| change.tree == tree)
            .map(|change| (change.key.as_slice(), &change.value));
        for (key, value) in staged.chain(own) {
            if keep(key) {
                entries.insert(key.to_vec(), value.clone());
            }
        }
        Ok(entries
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect())
    }

    pub fn insert(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<IVec>) {
        self.changes.push(Change {
            tree,
            key: key.into(),
            value: Some(value.into()),
        });
    }

    pub fn remove(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.changes.push(Change {
            tree,
            key: key.into(),
            value: None,
        });
    }

    /// Removes `key` and returns what it held.
    pub fn take(&mut self, tree: Tree, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        let value = self.get(tree, key)?;
        if value.is_some() {
            self.remove(tree, key);
        }
        Ok(value)
    }

    /// A stamp for a window change this section logs: an instant (in
    /// microseconds) after every stamp before it and after every instant
    /// already declared settled, so it also serves as the change's id. The
    /// section must then commit (it will, having a change to log): the
    /// stamp stays in flight until its record is durable, which holds
    /// [`super::Wal::settled`] back until then.
    pub fn stamp(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_micros();
        let stamp = now
            .max(self.staged.last_stamp + 1)
            .max(self.staged.settled + 1);
        self.staged.last_stamp = stamp;
        let lsn = self.staged.last_lsn + 1;
        self.staged.stamps.push_back((lsn, stamp));
        stamp
    }

    /// Stages this section's changes as one record and returns the lsn to
    /// wait on: its own, or (with nothing to stage) the last staged record,
    /// since what this section read may be staged and not yet durable.
    pub fn commit(mut self) -> u64 {
        if self.changes.is_empty() {
            return self.staged.last_lsn;
        }
        self.staged.last_lsn += 1;
        let lsn = self.staged.last_lsn;
        let changes = std::mem::take(&mut self.changes);
        for change in &changes {
            self.staged.overlay.stage(lsn, change);
        }
        let was_idle = self.staged.records.is_empty();
        self.staged.records.push(Record { lsn, changes });
        drop(self.staged);
        if was_idle {
            self.shared.wake.notify_one();
        }
        lsn
    }
}
