//! Packed time indexes: an index whose entries all begin with an instant
//! (`keys::timed`), added as time goes and removed when swept (or, for the
//! windows' expiry index, when a window moves on), stored as sled entries
//! ("buckets") of up to [`MAX_ENTRIES`] index entries each.
//!
//! Why: sled 0.34 spends as much on a new key that sorts last (a time
//! index's) as on a random one, about 8 µs on this machine, and an entry
//! packed 25 to an insert costs a tenth of that (`bench/run.sh
//! --store-ceiling`). An age entry a call was one of RecordInbound's seven
//! inserts. The applier applies a group's entries bucket by bucket, so at
//! load an index costs a write or two a group instead of one a call.
//!
//! A bucket is a leaf of a B+tree whose inner levels are sled's own: its
//! sled key is a lower bound, and an entry lives in the bucket with the
//! greatest key at or below its own. A bucket that outgrows [`MAX_ENTRIES`]
//! is split, so no bucket grows with how many entries share an instant (a
//! million inbounds at one instant, as `bench/run.sh --scale` seeds, make
//! at least 15,625 buckets, not one). Layout 3's first build keyed buckets
//! by the millisecond instead, which bounded nothing (BENCHMARKS.md).
//!
//! A split writes the new buckets first and then the shortened old one, so
//! a reader between the two finds every entry. Entries a bucket still holds
//! at or above the next bucket's key (a split cut short by a crash) are
//! never read, and are dropped at the bucket's next write.
//!
//! Everything above the store's trees still sees one entry a key: the log
//! records, the overlay and a section's reads name the entry itself, and
//! only the apply and the reads of sled know about buckets. A bucket's
//! value is its entries in key order, each `key_len: u32 LE`, key,
//! `value_len: u32 LE`, value. Applying a put or a removal is idempotent, so
//! replaying the log over a bucket that already has part of it is harmless.
//! Only the applier writes a packed tree (or, before it starts, the replay,
//! the layout upgrade and the rekey), so a bucket's read and write need no
//! lock.

use std::collections::BTreeMap;
use std::ops::Bound;

use sled::IVec;

use super::wal::Tree;

/// The most entries a bucket holds. Large enough that an insert carries a
/// group's worth of entries at load (tens), small enough that rewriting a
/// bucket stays a few KiB.
pub const MAX_ENTRIES: usize = 64;

/// The trees stored packed: keyed from an instant on, written as time
/// goes, and swept: the windows' expiry index, the age indexes and the
/// window-change log's two orders.
pub fn is_packed(tree: Tree) -> bool {
    matches!(
        tree,
        Tree::WindowExpiry
            | Tree::InboundAge
            | Tree::IdempotencyAge
            | Tree::WindowChanges
            | Tree::ChangeExpiry
    )
}

fn corrupt(what: &str) -> sled::Error {
    sled::Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a packed index bucket is corrupt: {what}"),
    ))
}

type Entries = BTreeMap<Vec<u8>, IVec>;

/// A put (`Some`) or a removal (`None`) of one entry.
type Put<'a> = (&'a [u8], &'a Option<IVec>);

fn decode(bytes: &[u8]) -> sled::Result<Entries> {
    let mut entries = BTreeMap::new();
    let mut rest = bytes;
    let take = |rest: &mut &[u8]| -> sled::Result<Vec<u8>> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("a length cut short"))?;
        let (bytes, tail) = tail
            .split_at_checked(u32::from_le_bytes(*len) as usize)
            .ok_or_else(|| corrupt("an entry cut short"))?;
        *rest = tail;
        Ok(bytes.to_vec())
    };
    while !rest.is_empty() {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        entries.insert(key, IVec::from(value));
    }
    Ok(entries)
}

fn encode<'a>(entries: impl Iterator<Item = (&'a Vec<u8>, &'a IVec)> + Clone) -> Vec<u8> {
    let size = entries.clone().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (key, value) in entries {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The bucket that would hold `key`: the one with the greatest key at or
/// below it, if any.
fn bucket_for(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<(IVec, IVec)>> {
    tree.range(..=key).next_back().transpose()
}

/// The first bucket after `key` (after none: the first of all).
fn bucket_after(tree: &sled::Tree, key: Option<&[u8]>) -> sled::Result<Option<(IVec, IVec)>> {
    match key {
        Some(key) => tree
            .range::<&[u8], _>((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .transpose(),
        None => tree.first(),
    }
}

/// A bucket's entries that are its own: below the next bucket's key.
fn own_entries(bytes: &[u8], next: Option<&[u8]>) -> sled::Result<Entries> {
    let mut entries = decode(bytes)?;
    if let Some(next) = next {
        entries.split_off(next);
    }
    Ok(entries)
}

/// The value stored under `key`, if the index has it.
pub fn get(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<IVec>> {
    match bucket_for(tree, key)? {
        Some((_, bucket)) => Ok(decode(&bucket)?.remove(key)),
        None => Ok(None),
    }
}

/// Looks entries up one after another, keeping the bucket it read last: a
/// reader going in time order mostly finds the next entry in the same one.
pub struct Lookup<'a> {
    tree: &'a sled::Tree,
    /// The bucket read last: its key, the next bucket's key, its entries.
    last: Option<(IVec, Option<IVec>, Entries)>,
}

impl<'a> Lookup<'a> {
    pub fn new(tree: &'a sled::Tree) -> Lookup<'a> {
        Lookup { tree, last: None }
    }

    pub fn get(&mut self, key: &[u8]) -> sled::Result<Option<IVec>> {
        let holds = |(from, next, _): &(IVec, Option<IVec>, Entries)| {
            &from[..] <= key && next.as_ref().is_none_or(|next| key < &next[..])
        };
        if !self.last.as_ref().is_some_and(holds) {
            let Some((from, bucket)) = bucket_for(self.tree, key)? else {
                return Ok(None);
            };
            let next = bucket_after(self.tree, Some(&from))?.map(|(next, _)| next);
            let entries = own_entries(&bucket, next.as_deref())?;
            self.last = Some((from, next, entries));
        }
        Ok(self
            .last
            .as_ref()
            .and_then(|(_, _, entries)| entries.get(key).cloned()))
    }
}

/// Applies puts (`Some`) and removals (`None`) of entries, each key's in
/// order: one read and one write (or removal, once empty) for each bucket
/// they touch, and a write more for each bucket a split adds.
pub fn apply<'a>(
    tree: &sled::Tree,
    changes: impl IntoIterator<Item = Put<'a>>,
) -> sled::Result<()> {
    let mut changes: Vec<Put<'a>> = changes.into_iter().collect();
    // Stable: a key's changes keep their order.
    changes.sort_by(|a, b| a.0.cmp(b.0));
    let mut rest = &changes[..];
    while let Some(&(first, _)) = rest.first() {
        // Entries below every bucket join the first, which takes a lower
        // key, rather than starting a bucket of their own each time.
        let (from, bytes) = match bucket_for(tree, first)? {
            Some(bucket) => Some(bucket),
            None => bucket_after(tree, None)?,
        }
        .unzip();
        let next = bucket_after(tree, from.as_deref())?.map(|(next, _)| next);
        let mut entries = match &bytes {
            Some(bytes) => own_entries(bytes, next.as_deref())?,
            None => Entries::new(),
        };
        let mine = rest
            .iter()
            .take_while(|(key, _)| next.as_ref().is_none_or(|next| *key < &next[..]))
            .count();
        for &(key, value) in &rest[..mine] {
            match value {
                Some(value) => entries.insert(key.to_vec(), value.clone()),
                None => entries.remove(key),
            };
        }
        rest = &rest[mine..];
        write(tree, from, bytes, next.is_none(), &entries)?;
    }
    Ok(())
}

/// Stores `entries` as the bucket keyed `from`, or keyed by their first if
/// that is lower (or there is no bucket yet), in buckets of at most
/// [`MAX_ENTRIES`]: the new buckets first, then the first (left alone if
/// unchanged), then the old key removed if the bucket left it.
///
/// The last bucket is split full first, since entries keep arriving after
/// it (a time index's do); any other evenly, leaving room on both sides.
fn write(
    tree: &sled::Tree,
    from: Option<IVec>,
    old: Option<IVec>,
    last: bool,
    entries: &Entries,
) -> sled::Result<()> {
    let Some((first_key, _)) = entries.first_key_value() else {
        if let Some(from) = from {
            tree.remove(from)?;
        }
        return Ok(());
    };
    let key = match &from {
        Some(from) if from[..] <= first_key[..] => from.clone(),
        _ => IVec::from(&first_key[..]),
    };
    let buckets = entries.len().div_ceil(MAX_ENTRIES);
    let size = if last {
        MAX_ENTRIES
    } else {
        entries.len().div_ceil(buckets)
    };
    let all: Vec<_> = entries.iter().collect();
    let mut chunks = all.chunks(size);
    let head = chunks.next().unwrap_or_default();
    let mut moved_to_from = false;
    for chunk in chunks {
        let chunk_key = &chunk[0].0[..];
        moved_to_from |= from.as_deref() == Some(chunk_key);
        tree.insert(chunk_key, encode(chunk.iter().copied()))?;
    }
    let head = encode(head.iter().copied());
    if from.as_ref() != Some(&key) || old.as_deref() != Some(&head[..]) {
        tree.insert(&key, head)?;
    }
    if let Some(from) = from
        && from != key
        && !moved_to_from
    {
        tree.remove(from)?;
    }
    Ok(())
}

/// The entries from `start` on, in key order, one bucket read at a time as
/// the caller goes. Each bucket is read with a seek of its own, never a
/// sled iterator held across the applier's writes.
struct Scan<'a> {
    tree: &'a sled::Tree,
    start: Vec<u8>,
    /// The bucket to read next, read with the one before it, and whether
    /// the scan has begun.
    next: Option<(IVec, IVec)>,
    begun: bool,
    pending: std::collections::btree_map::IntoIter<Vec<u8>, IVec>,
    /// The last key handed out: a bucket read before a split and the one
    /// the split made may both hold it.
    last: Option<Vec<u8>>,
}

impl<'a> Scan<'a> {
    fn new(tree: &'a sled::Tree, start: &[u8]) -> Scan<'a> {
        Scan {
            tree,
            start: start.to_vec(),
            next: None,
            begun: false,
            pending: Entries::new().into_iter(),
            last: None,
        }
    }

    /// The next bucket's own entries, or `None` once past the last bucket.
    fn refill(&mut self) -> sled::Result<Option<()>> {
        let current = if self.begun {
            self.next.take()
        } else {
            self.begun = true;
            match bucket_for(self.tree, &self.start)? {
                Some(bucket) => Some(bucket),
                None => bucket_after(self.tree, None)?,
            }
        };
        let Some((from, bytes)) = current else {
            return Ok(None);
        };
        self.next = bucket_after(self.tree, Some(&from))?;
        let mut entries = own_entries(&bytes, self.next.as_ref().map(|(k, _)| &k[..]))?;
        let floor = match &self.last {
            Some(last) => {
                let mut above = entries.split_off(last);
                above.remove(last);
                above
            }
            None => entries.split_off(&self.start),
        };
        self.pending = floor.into_iter();
        Ok(Some(()))
    }
}

impl Iterator for Scan<'_> {
    type Item = sled::Result<(Vec<u8>, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((key, value)) = self.pending.next() {
                self.last = Some(key.clone());
                return Some(Ok((key, value)));
            }
            match self.refill() {
                Ok(Some(())) => {}
                Ok(None) => return None,
                Err(error) => {
                    self.begun = true;
                    self.next = None;
                    return Some(Err(error));
                }
            }
        }
    }
}

/// The entries from `start` on, in key order, read a bucket at a time as
/// the caller goes.
pub fn from<'a>(
    tree: &'a sled::Tree,
    start: &[u8],
) -> impl Iterator<Item = sled::Result<(IVec, IVec)>> + 'a {
    Scan::new(tree, start).map(|entry| entry.map(|(key, value)| (IVec::from(key), value)))
}

/// Up to `limit` entries below `end`, in key order.
pub fn entries_before(
    tree: &sled::Tree,
    end: &[u8],
    limit: usize,
) -> sled::Result<Vec<(IVec, IVec)>> {
    from(tree, &[])
        .take_while(|entry| entry.as_ref().map_or(true, |(key, _)| &key[..] < end))
        .take(limit)
        .collect()
}

/// Up to `limit` keys below `end`, in key order.
pub fn keys_before(tree: &sled::Tree, end: &[u8], limit: usize) -> sled::Result<Vec<IVec>> {
    let entries = entries_before(tree, end, limit)?;
    Ok(entries.into_iter().map(|(key, _)| key).collect())
}

/// The entries from `start` through `end`, in key order, read a bucket at
/// a time as the caller goes.
pub fn range<'a>(
    tree: &'a sled::Tree,
    start: &[u8],
    end: &[u8],
) -> impl Iterator<Item = sled::Result<(IVec, IVec)>> + 'a {
    let end = end.to_vec();
    from(tree, start)
        .take_while(move |entry| entry.as_ref().map_or(true, |(key, _)| **key <= end[..]))
}

/// The last key the index holds (buckets are never left empty, and the
/// last has no next bucket to leave entries to).
pub fn last_key(tree: &sled::Tree) -> sled::Result<Option<IVec>> {
    match tree.last()? {
        Some((_, bucket)) => Ok(decode(&bucket)?.into_keys().next_back().map(IVec::from)),
        None => Ok(None),
    }
}

/// How many entries the index holds.
#[cfg(test)]
pub fn len(tree: &sled::Tree) -> sled::Result<usize> {
    Scan::new(tree, &[]).try_fold(0, |n, entry| entry.map(|_| n + 1))
}

/// How many entries each bucket holds, in key order.
#[cfg(test)]
pub fn bucket_sizes(tree: &sled::Tree) -> sled::Result<Vec<usize>> {
    tree.iter()
        .values()
        .map(|bucket| Ok(decode(&bucket?)?.len()))
        .collect()
}

#[cfg(test)]
mod tests;
