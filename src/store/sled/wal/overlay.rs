//! Changes staged and not yet applied to sled: the latest value of each key,
//! with the lsn of the record that staged it.

use std::collections::HashMap;

use sled::IVec;

use super::record::{Change, Tree};

type Keys = HashMap<Vec<u8>, (u64, Option<IVec>), foldhash::fast::RandomState>;

/// One map per tree, so a lookup borrows the key instead of building a
/// `(tree, key)` pair.
#[derive(Default)]
pub struct Overlay([Keys; Tree::ALL.len()]);

fn slot(tree: Tree) -> usize {
    tree as usize - 1
}

impl Overlay {
    /// `Some(value)` when a staged change covers the key (`value` is `None`
    /// for a removal); `None` when sled has the latest.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Option<&Option<IVec>> {
        self.0[slot(tree)].get(key).map(|(_, value)| value)
    }

    /// Every staged key of `tree` with its staged value (`None`: removed).
    pub fn entries(&self, tree: Tree) -> impl Iterator<Item = (&[u8], &Option<IVec>)> {
        self.0[slot(tree)]
            .iter()
            .map(|(key, (_, value))| (key.as_slice(), value))
    }

    pub fn stage(&mut self, lsn: u64, change: &Change) {
        self.0[slot(change.tree)].insert(change.key.clone(), (lsn, change.value.clone()));
    }

    /// Forgets `change` now sled has it, unless a later record staged the
    /// key again.
    pub fn applied(&mut self, lsn: u64, change: &Change) {
        let keys = &mut self.0[slot(change.tree)];
        if keys.get(change.key.as_slice()).map(|(staged, _)| *staged) == Some(lsn) {
            keys.remove(change.key.as_slice());
        }
    }
}
