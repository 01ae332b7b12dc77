//! Packed time indexes: an index whose entries all begin with an instant
//! (`keys::timed`) and are only ever added and swept, stored as one sled
//! entry a bucket of [`BUCKET_MICROS`] that holds the bucket's entries.
//!
//! Why: sled 0.34 spends as much on a new key that sorts last (a time
//! index's) as on a random one, about 8 µs on this machine, and an entry
//! packed 25 to an insert costs a tenth of that (`bench/run.sh
//! --store-ceiling`). An age entry a call was one of RecordInbound's seven
//! inserts. The applier applies a group's entries bucket by bucket, so at
//! load, when a group holds tens of calls made within a few milliseconds,
//! an index costs a few inserts a group instead of one a call.
//!
//! Everything above the store's trees still sees one entry a key: the log
//! records, the overlay and a section's reads name the entry itself, and
//! only the apply and the reads of sled know about buckets. A bucket's
//! value is its entries in key order, each `key_len: u32 LE`, key,
//! `value_len: u32 LE`, value. Applying a put or a removal is idempotent, so
//! replaying the log over a bucket that already has part of it is harmless.

use std::collections::BTreeMap;

use sled::IVec;

use super::wal::Tree;

/// The width of a bucket. Narrow enough that a bucket stays a few KiB at
/// tens of thousands of entries a second (a group at load spans a few
/// milliseconds), wide enough that a group's entries share a few buckets.
pub const BUCKET_MICROS: i64 = 1_000;

/// The trees stored packed: keyed from an instant on, written as time
/// goes, and swept: the age indexes and the window-change log's two orders.
pub fn is_packed(tree: Tree) -> bool {
    matches!(
        tree,
        Tree::InboundAge | Tree::IdempotencyAge | Tree::WindowChanges | Tree::ChangeExpiry
    )
}

/// The bucket holding `key`: its instant rounded down to the bucket width.
/// A key too short to hold an instant is a bucket of its own.
fn bucket_of(key: &[u8]) -> Vec<u8> {
    match key.first_chunk::<8>() {
        Some(instant) => {
            let micros = (u64::from_be_bytes(*instant) ^ (1 << 63)) as i64;
            let floor = micros - micros.rem_euclid(BUCKET_MICROS);
            super::keys::instant_of_micros(floor).to_vec()
        }
        None => key.to_vec(),
    }
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

fn encode(entries: &Entries) -> Vec<u8> {
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

/// The value stored under `key`, if the index has it.
pub fn get(tree: &sled::Tree, key: &[u8]) -> sled::Result<Option<IVec>> {
    match tree.get(bucket_of(key))? {
        Some(bucket) => Ok(decode(&bucket)?.remove(key)),
        None => Ok(None),
    }
}

/// Looks entries up one after another, keeping the bucket it read last: a
/// reader going in time order mostly finds the next entry in the same one.
pub struct Lookup<'a> {
    tree: &'a sled::Tree,
    last: Option<(Vec<u8>, Entries)>,
}

impl<'a> Lookup<'a> {
    pub fn new(tree: &'a sled::Tree) -> Lookup<'a> {
        Lookup { tree, last: None }
    }

    pub fn get(&mut self, key: &[u8]) -> sled::Result<Option<IVec>> {
        let bucket = bucket_of(key);
        if self.last.as_ref().is_none_or(|(last, _)| *last != bucket) {
            let entries = match self.tree.get(&bucket)? {
                Some(bytes) => decode(&bytes)?,
                None => Entries::new(),
            };
            self.last = Some((bucket, entries));
        }
        Ok(self
            .last
            .as_ref()
            .and_then(|(_, entries)| entries.get(key).cloned()))
    }
}

/// Applies puts (`Some`) and removals (`None`) of entries, in order: one
/// read and one write (or removal, once empty) for each bucket they touch.
/// The read and the write are not one atomic step, which holds because a
/// packed tree has one writer at a time: the applier, or before it starts,
/// the replay and the layout upgrade.
pub fn apply<'a>(
    tree: &sled::Tree,
    changes: impl IntoIterator<Item = Put<'a>>,
) -> sled::Result<()> {
    let mut buckets: BTreeMap<Vec<u8>, Vec<Put<'a>>> = BTreeMap::new();
    for (key, value) in changes {
        buckets
            .entry(bucket_of(key))
            .or_default()
            .push((key, value));
    }
    for (bucket, changes) in buckets {
        let mut entries = match tree.get(&bucket)? {
            Some(bytes) => decode(&bytes)?,
            None => Entries::new(),
        };
        for (key, value) in changes {
            match value {
                Some(value) => entries.insert(key.to_vec(), value.clone()),
                None => entries.remove(key),
            };
        }
        if entries.is_empty() {
            tree.remove(bucket)?;
        } else {
            tree.insert(bucket, encode(&entries))?;
        }
    }
    Ok(())
}

/// Up to `limit` entries below `end`, in key order.
pub fn entries_before(
    tree: &sled::Tree,
    end: &[u8],
    limit: usize,
) -> sled::Result<Vec<(IVec, IVec)>> {
    let mut found = Vec::new();
    // Every key below `end` lies in a bucket at or below `end`'s own.
    for bucket in tree.range(..=bucket_of(end)).values() {
        for (key, value) in decode(&bucket?)? {
            if found.len() == limit || key.as_slice() >= end {
                return Ok(found);
            }
            found.push((IVec::from(key), value));
        }
    }
    Ok(found)
}

/// Up to `limit` keys below `end`, in key order.
pub fn keys_before(tree: &sled::Tree, end: &[u8], limit: usize) -> sled::Result<Vec<IVec>> {
    let entries = entries_before(tree, end, limit)?;
    Ok(entries.into_iter().map(|(key, _)| key).collect())
}

/// The entries from `start` through `end`, in key order, read a bucket at
/// a time as the caller goes.
pub fn range(
    tree: &sled::Tree,
    start: &[u8],
    end: &[u8],
) -> impl Iterator<Item = sled::Result<(IVec, IVec)>> + use<> {
    let (start, end) = (start.to_vec(), end.to_vec());
    tree.range(bucket_of(&start)..=bucket_of(&end))
        .values()
        .flat_map(|bucket| match bucket.and_then(|bytes| decode(&bytes)) {
            Ok(entries) => entries.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        })
        .skip_while(move |entry| entry.as_ref().is_ok_and(|(key, _)| key < &start))
        .take_while(move |entry| entry.as_ref().is_ok_and(|(key, _)| key <= &end) || entry.is_err())
        .map(|entry| entry.map(|(key, value)| (IVec::from(key), value)))
}

/// The last key the index holds (buckets are never left empty).
pub fn last_key(tree: &sled::Tree) -> sled::Result<Option<IVec>> {
    match tree.last()? {
        Some((_, bucket)) => Ok(decode(&bucket)?.into_keys().next_back().map(IVec::from)),
        None => Ok(None),
    }
}

/// How many entries the index holds.
#[cfg(test)]
pub fn len(tree: &sled::Tree) -> sled::Result<usize> {
    tree.iter()
        .values()
        .try_fold(0, |n, bucket| Ok(n + decode(&bucket?)?.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::keys;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("packed").unwrap();
        (dir, tree)
    }

    fn entry(micros: i64, id: &str) -> Vec<u8> {
        let mut key = keys::instant_of_micros(micros).to_vec();
        key.extend_from_slice(id.as_bytes());
        key
    }

    fn apply_all(tree: &sled::Tree, changes: &[(Vec<u8>, Option<IVec>)]) {
        apply(tree, changes.iter().map(|(k, v)| (k.as_slice(), v))).unwrap();
    }

    fn added(key: &[u8]) -> (Vec<u8>, Option<IVec>) {
        (key.to_vec(), Some(IVec::default()))
    }

    fn removed(key: &[u8]) -> (Vec<u8>, Option<IVec>) {
        (key.to_vec(), None)
    }

    #[test]
    fn entries_of_one_millisecond_share_one_sled_entry() {
        let (_dir, tree) = tree();
        let a = entry(1_700_000_000_000_100, "a");
        let b = entry(1_700_000_000_000_900, "b");
        let c = entry(1_700_000_000_001_000, "c");
        apply_all(&tree, &[added(&b), added(&a), added(&c)]);
        assert_eq!(tree.len(), 2, "two buckets");
        assert_eq!(len(&tree).unwrap(), 3);
        assert_eq!(get(&tree, &a).unwrap(), Some(IVec::default()));
        assert_eq!(
            get(&tree, &entry(1_700_000_000_000_100, "x")).unwrap(),
            None
        );
    }

    #[test]
    fn applying_again_changes_nothing_and_removals_empty_a_bucket() {
        let (_dir, tree) = tree();
        let a = entry(5_000, "a");
        let b = entry(5_001, "b");
        let changes = [added(&a), added(&b), removed(&a)];
        apply_all(&tree, &changes);
        let once: Vec<_> = tree.iter().collect::<Result<_, _>>().unwrap();
        apply_all(&tree, &changes);
        let twice: Vec<_> = tree.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(once, twice, "a replayed record is harmless");
        assert_eq!(
            keys_before(&tree, &entry(9_999, ""), 10).unwrap(),
            [IVec::from(b.as_slice())]
        );
        apply_all(&tree, &[removed(&b)]);
        assert!(tree.is_empty(), "an empty bucket is removed");
    }

    #[test]
    fn keys_before_come_oldest_first_and_stop_at_the_end_or_the_limit() {
        let (_dir, tree) = tree();
        // Before 1970 too: the instant's sign bit is flipped.
        let times = [-2_500, -1, 0, 999, 1_000, 1_001, 7_000];
        let all: Vec<Vec<u8>> = times.iter().map(|&t| entry(t, "id")).collect();
        apply_all(
            &tree,
            &all.iter().rev().map(|k| added(k)).collect::<Vec<_>>(),
        );
        let below = |end: i64, limit| {
            keys_before(&tree, &entry(end, ""), limit)
                .unwrap()
                .into_iter()
                .map(|k| k.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(below(i64::MAX, 100), all);
        assert_eq!(below(1_000, 100), all[..4]);
        assert_eq!(below(1_001, 100), all[..5], "a key inside the end's bucket");
        assert_eq!(below(i64::MAX, 3), all[..3]);
        assert!(below(-2_500, 100).is_empty());
    }

    #[test]
    fn a_range_holds_both_ends_and_the_last_key_is_the_newest() {
        let (_dir, tree) = tree();
        assert_eq!(last_key(&tree).unwrap(), None);
        let times = [10, 990, 1_000, 2_500, 2_999, 4_000];
        let all: Vec<Vec<u8>> = times.iter().map(|&t| entry(t, "c")).collect();
        let changes: Vec<_> = all
            .iter()
            .map(|k| (k.clone(), Some(IVec::from(&k[..8]))))
            .collect();
        apply_all(&tree, &changes);
        let range_of = |start: i64, end: i64, limit| {
            range(&tree, &entry(start, "c"), &entry(end, "c"))
                .take(limit)
                .map(|entry| {
                    let (k, v) = entry.unwrap();
                    assert_eq!(&k[..8], &v[..], "each entry keeps its value");
                    k.to_vec()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(range_of(990, 2_999, 100), all[1..5]);
        assert_eq!(range_of(991, 2_998, 100), all[2..4]);
        assert_eq!(range_of(0, 5_000, 2), all[..2]);
        assert!(range_of(3_000, 3_999, 100).is_empty());
        assert_eq!(last_key(&tree).unwrap().as_deref(), Some(&all[5][..]));
    }

    #[test]
    fn a_lookup_finds_what_get_finds_across_buckets() {
        let (_dir, tree) = tree();
        let keys: Vec<Vec<u8>> = [10, 20, 1_500, 3_000]
            .iter()
            .map(|&t| entry(t, "k"))
            .collect();
        apply_all(&tree, &keys.iter().map(|k| added(k)).collect::<Vec<_>>());
        let mut lookup = Lookup::new(&tree);
        for probe in [
            &keys[0],
            &keys[1],
            &entry(30, "k"),
            &keys[3],
            &keys[2],
            &keys[0],
        ] {
            assert_eq!(lookup.get(probe).unwrap(), get(&tree, probe).unwrap());
        }
        assert_eq!(lookup.get(&entry(30, "k")).unwrap(), None);
    }

    #[test]
    fn a_damaged_bucket_is_an_error_not_a_panic() {
        let (_dir, tree) = tree();
        let a = entry(5_000, "a");
        tree.insert(bucket_of(&a), &[9, 0, 0, 0, 1][..]).unwrap();
        assert!(get(&tree, &a).is_err());
        assert!(keys_before(&tree, &entry(9_000, ""), 10).is_err());
        assert!(apply(&tree, [(a.as_slice(), &None)]).is_err());
    }
}
