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

/// One entry as slices of the bytes it was read from.
type Entry<'b> = (&'b [u8], &'b [u8]);

/// A put (`Some`) or a removal (`None`) of one entry.
type Put<'a> = (&'a [u8], &'a Option<IVec>);

/// A bucket's entries, in the order stored (key order), read in place: a
/// lookup or a merge allocates nothing for the entries it passes over.
struct Entries<'b> {
    rest: &'b [u8],
}

impl<'b> Entries<'b> {
    fn of(bytes: &'b [u8]) -> Entries<'b> {
        Entries { rest: bytes }
    }

    fn take(&mut self) -> sled::Result<&'b [u8]> {
        let (len, tail) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("a length cut short"))?;
        let (bytes, tail) = tail
            .split_at_checked(u32::from_le_bytes(*len) as usize)
            .ok_or_else(|| corrupt("an entry cut short"))?;
        self.rest = tail;
        Ok(bytes)
    }
}

impl<'b> Iterator for Entries<'b> {
    type Item = sled::Result<Entry<'b>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.take().and_then(|key| Ok((key, self.take()?)));
        if entry.is_err() {
            self.rest = &[];
        }
        Some(entry)
    }
}

fn encode(entries: &[Entry<'_>]) -> Vec<u8> {
    let size = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (key, value) in entries {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The value stored under `key` in a bucket's bytes, found by walking its
/// entries up to `key` (they are in key order).
fn find(bytes: &[u8], key: &[u8]) -> sled::Result<Option<IVec>> {
    for entry in Entries::of(bytes) {
        let (stored, value) = entry?;
        match stored.cmp(key) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(IVec::from(value))),
            std::cmp::Ordering::Greater => break,
        }
    }
    Ok(None)
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

/// The bucket holding `key`, or the first of all if `key` is below every
/// bucket: where a write or a scan from `key` begins.
fn bucket_for_or_first(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<(IVec, IVec)>> {
    match bucket_for(tree, key)? {
        Some(bucket) => Ok(Some(bucket)),
        None => bucket_after(tree, None),
    }
}

/// A bucket as read: its key, its bytes and the next bucket's key. Its own
/// entries are those below the next bucket's key; any at or above it are
/// leftovers of a split a crash cut short.
struct Bucket {
    from: IVec,
    bytes: IVec,
    next: Option<IVec>,
}

impl Bucket {
    /// Reads `bucket` (as found by a seek) with the key of the one after it.
    fn read(tree: &sled::Tree, (from, bytes): (IVec, IVec)) -> sled::Result<Bucket> {
        let next = bucket_after(tree, Some(&from))?.map(|(next, _)| next);
        Ok(Bucket { from, bytes, next })
    }

    /// The bucket holding `key`, if any.
    fn holding(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<Bucket>> {
        bucket_for(tree, key)?
            .map(|bucket| Bucket::read(tree, bucket))
            .transpose()
    }

    /// The bucket holding `key`, or the first of all if `key` is below
    /// every bucket.
    fn holding_or_first(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<Bucket>> {
        bucket_for_or_first(tree, key)?
            .map(|bucket| Bucket::read(tree, bucket))
            .transpose()
    }

    fn below_next(&self, key: &[u8]) -> bool {
        self.next.as_ref().is_none_or(|next| key < &next[..])
    }

    fn holds(&self, key: &[u8]) -> bool {
        self.from[..] <= *key && self.below_next(key)
    }

    /// Its own entries, in key order.
    fn own(&self) -> impl Iterator<Item = sled::Result<Entry<'_>>> {
        Entries::of(&self.bytes)
            .take_while(|entry| entry.as_ref().map_or(true, |(key, _)| self.below_next(key)))
    }
}

/// The value stored under `key`, if the index has it. The bucket found
/// holds `key` and nothing of it is a leftover: the next bucket's key is
/// above `key`, so its bytes are searched without reading the next.
pub fn get(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<IVec>> {
    match bucket_for(tree, key)? {
        Some((_, bucket)) => find(&bucket, key),
        None => Ok(None),
    }
}

/// Looks entries up one after another, keeping the bucket it read last: a
/// reader going in time order mostly finds the next entry in the same one.
pub struct Lookup<'a> {
    tree: &'a sled::Tree,
    last: Option<Bucket>,
}

impl<'a> Lookup<'a> {
    pub fn new(tree: &'a sled::Tree) -> Lookup<'a> {
        Lookup { tree, last: None }
    }

    pub fn get(&mut self, key: &[u8]) -> sled::Result<Option<IVec>> {
        if !self.last.as_ref().is_some_and(|bucket| bucket.holds(key)) {
            self.last = Bucket::holding(self.tree, key)?;
        }
        match &self.last {
            Some(bucket) => find(&bucket.bytes, key),
            None => Ok(None),
        }
    }
}

/// `entries` (in key order) with `changes` (sorted by key, a key's changes
/// in the order made) applied: a put adds or replaces, a removal removes,
/// and a key's last change wins.
fn merge<'e>(entries: &[Entry<'e>], changes: &'e [Put<'e>]) -> Vec<Entry<'e>> {
    let mut merged = Vec::with_capacity(entries.len() + changes.len());
    let mut entries = entries.iter().peekable();
    let mut changes = changes.iter().peekable();
    while let Some(&(key, value)) = changes.next() {
        if changes.peek().is_some_and(|(next, _)| *next == key) {
            continue;
        }
        while let Some(&entry) = entries.next_if(|(stored, _)| *stored < key) {
            merged.push(entry);
        }
        entries.next_if(|(stored, _)| *stored == key);
        if let Some(value) = value {
            merged.push((key, &value[..]));
        }
    }
    merged.extend(entries);
    merged
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
        let bucket = Bucket::holding_or_first(tree, first)?;
        let mine = match &bucket {
            Some(bucket) => rest.partition_point(|(key, _)| bucket.below_next(key)),
            None => rest.len(),
        };
        let (here, after) = rest.split_at(mine);
        rest = after;
        let Some(bucket) = bucket else {
            write(tree, None, true, &merge(&[], here))?;
            continue;
        };
        let entries = bucket.own().collect::<sled::Result<Vec<_>>>()?;
        write(
            tree,
            Some((&bucket.from, &bucket.bytes)),
            bucket.next.is_none(),
            &merge(&entries, here),
        )?;
    }
    Ok(())
}

/// Stores `entries` in place of `bucket` (its key and its stored bytes),
/// keyed as it was, or by their first if that is lower (or there is no
/// bucket yet), in buckets of at most [`MAX_ENTRIES`]: the new buckets
/// first, then the first (left alone if unchanged), then the old key
/// removed if the bucket left it.
///
/// The last bucket is split full first, since entries keep arriving after
/// it (a time index's do); any other evenly, leaving room on both sides.
fn write(
    tree: &sled::Tree,
    bucket: Option<(&IVec, &IVec)>,
    last: bool,
    entries: &[Entry<'_>],
) -> sled::Result<()> {
    let (from, old) = bucket.unzip();
    let Some(&(first_key, _)) = entries.first() else {
        if let Some(from) = from {
            tree.remove(from)?;
        }
        return Ok(());
    };
    let key = match from {
        Some(from) if from[..] <= *first_key => &from[..],
        _ => first_key,
    };
    let buckets = entries.len().div_ceil(MAX_ENTRIES);
    let size = if last {
        MAX_ENTRIES
    } else {
        entries.len().div_ceil(buckets)
    };
    let mut chunks = entries.chunks(size);
    let head = chunks.next().unwrap_or_default();
    let mut moved_to_from = false;
    for chunk in chunks {
        let chunk_key = chunk[0].0;
        moved_to_from |= from.is_some_and(|from| from[..] == *chunk_key);
        tree.insert(chunk_key, encode(chunk))?;
    }
    let head = encode(head);
    if from.is_none_or(|from| from[..] != *key) || old.is_none_or(|old| old[..] != head[..]) {
        tree.insert(key, head)?;
    }
    if let Some(from) = from
        && from[..] != *key
        && !moved_to_from
    {
        tree.remove(from)?;
    }
    Ok(())
}

/// Where a scan stands.
enum Cursor {
    /// Nothing read yet: the first bucket is the one holding the start.
    Start,
    /// The bucket to read next, read with the one before it.
    Next((IVec, IVec)),
    /// Past the last bucket, or stopped by an error.
    End,
}

/// The entries from `start` on, in key order, one bucket read at a time as
/// the caller goes. Each bucket is read with a seek of its own, never a
/// sled iterator held across the applier's writes.
struct Scan<'a> {
    tree: &'a sled::Tree,
    start: Vec<u8>,
    cursor: Cursor,
    pending: std::vec::IntoIter<(IVec, IVec)>,
    /// The last key handed out: a bucket read before a split and the one
    /// the split made may both hold it.
    last: Option<IVec>,
}

impl<'a> Scan<'a> {
    fn new(tree: &'a sled::Tree, start: &[u8]) -> Scan<'a> {
        Scan {
            tree,
            start: start.to_vec(),
            cursor: Cursor::Start,
            pending: Vec::new().into_iter(),
            last: None,
        }
    }

    /// The next bucket's own entries past what was handed out, or `None`
    /// once past the last bucket.
    fn refill(&mut self) -> sled::Result<Option<()>> {
        let current = match std::mem::replace(&mut self.cursor, Cursor::End) {
            Cursor::Start => bucket_for_or_first(self.tree, &self.start)?,
            Cursor::Next(bucket) => Some(bucket),
            Cursor::End => None,
        };
        let Some((from, bytes)) = current else {
            return Ok(None);
        };
        let after = bucket_after(self.tree, Some(&from))?;
        let bucket = Bucket {
            from,
            bytes,
            next: after.as_ref().map(|(next, _)| next.clone()),
        };
        let mut pending = Vec::new();
        for entry in bucket.own() {
            let (key, value) = entry?;
            let fresh = match &self.last {
                Some(last) => key > &last[..],
                None => key >= &self.start[..],
            };
            if fresh {
                pending.push((IVec::from(key), IVec::from(value)));
            }
        }
        self.pending = pending.into_iter();
        if let Some(after) = after {
            self.cursor = Cursor::Next(after);
        }
        Ok(Some(()))
    }
}

impl Iterator for Scan<'_> {
    type Item = sled::Result<(IVec, IVec)>;

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
                    self.cursor = Cursor::End;
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
    Scan::new(tree, start)
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
    let Some((_, bucket)) = tree.last()? else {
        return Ok(None);
    };
    let mut last = None;
    for entry in Entries::of(&bucket) {
        last = Some(entry?.0);
    }
    Ok(last.map(IVec::from))
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
        .map(|bucket| Entries::of(&bucket?).try_fold(0, |n, entry| entry.map(|_| n + 1)))
        .collect()
}

#[cfg(test)]
mod tests;
