use rand::seq::SliceRandom;

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
    (key.to_vec(), Some(IVec::from(&key[8..])))
}

fn removed(key: &[u8]) -> (Vec<u8>, Option<IVec>) {
    (key.to_vec(), None)
}

/// Every entry, read the way the sweep reads them.
fn all(tree: &sled::Tree) -> Vec<Vec<u8>> {
    keys_before(tree, &[0xff; 32], usize::MAX)
        .unwrap()
        .into_iter()
        .map(|key| key.to_vec())
        .collect()
}

fn sizes(tree: &sled::Tree) -> Vec<usize> {
    bucket_sizes(tree).unwrap()
}

#[test]
fn entries_sharing_an_instant_fill_buckets_of_bounded_size() {
    let (_dir, tree) = tree();
    // What the scale bench seeds: many entries at one instant, in no order.
    let mut keys: Vec<Vec<u8>> = (0..5_000)
        .map(|i| entry(1_700_000_000_000_000, &format!("wamid.{i:05}")))
        .collect();
    keys.shuffle(&mut rand::rng());
    for group in keys.chunks(25) {
        apply_all(&tree, &group.iter().map(|k| added(k)).collect::<Vec<_>>());
    }
    let sizes = sizes(&tree);
    assert!(sizes.iter().all(|&n| n <= MAX_ENTRIES), "{sizes:?}");
    assert!(
        sizes.len() < 5_000 / 32,
        "entries are packed: {}",
        sizes.len()
    );
    keys.sort();
    assert_eq!(all(&tree), keys);
    for key in keys.iter().step_by(97) {
        assert_eq!(get(&tree, key).unwrap().as_deref(), Some(&key[8..]));
    }
    assert_eq!(len(&tree).unwrap(), 5_000);
}

#[test]
fn rising_entries_fill_each_bucket_before_the_next() {
    let (_dir, tree) = tree();
    let keys: Vec<Vec<u8>> = (0..1_000).map(|t| entry(t * 10, "c")).collect();
    for group in keys.chunks(25) {
        apply_all(&tree, &group.iter().map(|k| added(k)).collect::<Vec<_>>());
    }
    let sizes = sizes(&tree);
    assert_eq!(sizes.len(), 1_000_usize.div_ceil(MAX_ENTRIES), "{sizes:?}");
    assert_eq!(last_key(&tree).unwrap().as_deref(), Some(&keys[999][..]));
    assert_eq!(all(&tree), keys);
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
    assert_eq!(all(&tree), std::slice::from_ref(&b));
    apply_all(&tree, &[removed(&b)]);
    assert!(tree.is_empty(), "an empty bucket is removed");
    // A key's changes apply in their order within one call.
    apply_all(&tree, &[removed(&a), added(&a)]);
    assert_eq!(all(&tree), std::slice::from_ref(&a));
    apply_all(&tree, &[added(&a), removed(&a)]);
    assert!(tree.is_empty());
}

#[test]
fn keys_before_come_oldest_first_and_stop_at_the_end_or_the_limit() {
    let (_dir, tree) = tree();
    // Before 1970 too: the instant's sign bit is flipped.
    let times = [-2_500, -1, 0, 999, 1_000, 1_001, 7_000];
    let all: Vec<Vec<u8>> = times.iter().map(|&t| entry(t, "id")).collect();
    // One at a time, newest first: each lands below every bucket there is.
    for key in all.iter().rev() {
        apply_all(&tree, &[added(key)]);
    }
    assert_eq!(tree.len(), 1, "the first bucket took each lower key");
    let below = |end: i64, limit| {
        keys_before(&tree, &entry(end, ""), limit)
            .unwrap()
            .into_iter()
            .map(|k| k.to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(below(i64::MAX, 100), all);
    assert_eq!(below(1_000, 100), all[..4]);
    assert_eq!(below(1_001, 100), all[..5]);
    assert_eq!(below(i64::MAX, 3), all[..3]);
    assert!(below(-2_500, 100).is_empty());
}

#[test]
fn a_range_holds_both_ends_across_buckets() {
    let (_dir, tree) = tree();
    assert_eq!(last_key(&tree).unwrap(), None);
    let keys: Vec<Vec<u8>> = (0..300).map(|t| entry(t * 10, "c")).collect();
    apply_all(&tree, &keys.iter().map(|k| added(k)).collect::<Vec<_>>());
    assert!(tree.len() > 4, "several buckets");
    let range_of = |start: i64, end: i64, limit| {
        range(&tree, &entry(start, "c"), &entry(end, "c"))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry.unwrap();
                assert_eq!(&k[8..], &v[..], "each entry keeps its value");
                k.to_vec()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(range_of(10, 2_990, 1_000), keys[1..300]);
    assert_eq!(range_of(11, 2_989, 1_000), keys[2..299]);
    assert_eq!(range_of(640, 1_280, 1_000), keys[64..=128], "bucket edges");
    assert_eq!(range_of(0, 5_000, 2), keys[..2]);
    assert!(range_of(3_000, 3_999, 100).is_empty());
    assert_eq!(last_key(&tree).unwrap().as_deref(), Some(&keys[299][..]));
}

#[test]
fn a_scan_sees_each_entry_once_when_a_split_comes_between_its_reads() {
    let (_dir, tree) = tree();
    let keys: Vec<Vec<u8>> = (0..100).map(|t| entry(t * 10, "c")).collect();
    apply_all(&tree, &keys.iter().map(|k| added(k)).collect::<Vec<_>>());
    let mut scan = range(&tree, &keys[0], &entry(i64::MAX, ""));
    let seen: Vec<_> = scan.by_ref().take(10).map(|e| e.unwrap().0).collect();
    // Fill the bucket the scan is in and the one after it, so both split.
    let more: Vec<Vec<u8>> = (0..200).map(|t| entry(t * 10 + 5, "d")).collect();
    apply_all(&tree, &more.iter().map(|k| added(k)).collect::<Vec<_>>());
    let rest: Vec<_> = scan.map(|e| e.unwrap().0.to_vec()).collect();
    let mut got: Vec<Vec<u8>> = seen.iter().map(|k| k.to_vec()).collect();
    got.extend(rest);
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(got, sorted, "in order, none twice");
    for key in &keys {
        assert!(got.contains(key), "an entry there all along is seen");
    }
}

/// A crash can leave a split half done: the new bucket written and the old
/// one still holding what moved. Reads ignore the leftovers, and the old
/// bucket's next write drops them, so a swept entry does not come back.
#[test]
fn a_split_cut_short_leaves_nothing_that_can_be_read_or_come_back() {
    let (_dir, tree) = tree();
    let keys: Vec<Vec<u8>> = (0..10).map(|t| entry(t, "c")).collect();
    let whole: Vec<Entry> = keys.iter().map(|k| (&k[..], &k[8..])).collect();
    tree.insert(&keys[0], encode(&whole)).unwrap();
    tree.insert(&keys[5], encode(&whole[5..])).unwrap();
    assert_eq!(all(&tree), keys);
    apply_all(&tree, &[removed(&keys[7])]);
    let mut left = keys.clone();
    left.remove(7);
    assert_eq!(all(&tree), left, "once in a scan, and the removal holds");
    assert_eq!(get(&tree, &keys[7]).unwrap(), None);
    assert_eq!(Lookup::new(&tree).get(&keys[7]).unwrap(), None);
    // A write to the old bucket drops its leftovers.
    apply_all(&tree, &[added(&entry(2, "x"))]);
    assert_eq!(sizes(&tree), [6, 4]);
}

#[test]
fn a_lookup_finds_what_get_finds_across_buckets() {
    let (_dir, tree) = tree();
    let keys: Vec<Vec<u8>> = (0..200).map(|t| entry(t * 10, "k")).collect();
    apply_all(&tree, &keys.iter().map(|k| added(k)).collect::<Vec<_>>());
    let mut lookup = Lookup::new(&tree);
    for probe in [
        &keys[0],
        &keys[1],
        &entry(15, "k"),
        &keys[150],
        &keys[64],
        &keys[63],
        &keys[0],
        &entry(-1, "k"),
    ] {
        assert_eq!(lookup.get(probe).unwrap(), get(&tree, probe).unwrap());
    }
    assert_eq!(lookup.get(&entry(15, "k")).unwrap(), None);
    assert!(lookup.get(&keys[64]).unwrap().is_some());
}

#[test]
fn a_damaged_bucket_is_an_error_not_a_panic() {
    let (_dir, tree) = tree();
    let a = entry(5_000, "a");
    tree.insert(&a, &[9, 0, 0, 0, 1][..]).unwrap();
    assert!(get(&tree, &a).is_err());
    assert!(keys_before(&tree, &entry(9_000, ""), 10).is_err());
    assert!(range(&tree, &a, &a).any(|entry| entry.is_err()));
    assert!(apply(&tree, [(a.as_slice(), &None)]).is_err());
}

#[test]
fn a_merge_keeps_order_and_a_keys_last_change_wins() {
    let stored: Vec<Entry> = vec![(b"b", b"1"), (b"d", b"2"), (b"f", b"3")];
    let (one, two) = (Some(IVec::from("x")), Some(IVec::from("y")));
    let changes: Vec<Put> = vec![
        (b"a", &one),
        (b"b", &None),
        (b"c", &None),
        (b"d", &one),
        (b"d", &two),
        (b"g", &one),
        (b"g", &None),
    ];
    let merged = merge(&stored, &changes);
    let expected: Vec<Entry> = vec![(b"a", b"x"), (b"d", b"y"), (b"f", b"3")];
    assert_eq!(merged, expected);
}

proptest::proptest! {
    /// Any run of put and removal batches leaves the index holding what a
    /// plain map holds after the same changes, in buckets within the bound.
    #[test]
    fn batches_of_changes_leave_what_a_map_would_hold(
        batches in proptest::collection::vec(
            proptest::collection::vec((0i64..400, proptest::bool::weighted(0.7)), 1..90),
            1..12,
        )
    ) {
        let (_dir, tree) = tree();
        let mut model = std::collections::BTreeMap::new();
        for batch in &batches {
            let changes: Vec<_> = batch
                .iter()
                .map(|&(t, put)| {
                    let key = entry(t, "k");
                    if put { added(&key) } else { removed(&key) }
                })
                .collect();
            for (key, value) in &changes {
                match value {
                    Some(value) => model.insert(key.clone(), value.clone()),
                    None => model.remove(key),
                };
            }
            apply_all(&tree, &changes);
        }
        let read: Vec<(Vec<u8>, IVec)> = from(&tree, &[])
            .map(|e| e.map(|(k, v)| (k.to_vec(), v)).unwrap())
            .collect();
        let expected: Vec<(Vec<u8>, IVec)> = model.clone().into_iter().collect();
        proptest::prop_assert_eq!(read, expected);
        for t in 0..400 {
            let key = entry(t, "k");
            proptest::prop_assert_eq!(get(&tree, &key).unwrap(), model.get(&key).cloned());
        }
        proptest::prop_assert!(sizes(&tree).iter().all(|&n| (1..=MAX_ENTRIES).contains(&n)));
    }
}
