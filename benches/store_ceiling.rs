//! How fast can sled 0.34 commit RecordInbound's writes at all?
//!
//! `cargo bench --bench store_ceiling` (or `bench/run.sh --store-ceiling`).
//! Runs the same shape of transaction that `Store::record_inbound` runs (two
//! reads, four inserts across four trees) straight on sled with durability
//! switched off, on one thread and on two, next to plain single-tree inserts
//! as the baseline in the same run, and what an insert costs by kind of key
//! (an overwrite, a rising key, an entry packed with others). No gRPC, no
//! flush, no wagate code: this is the ceiling the durable-write targets of
//! issue #3 meet before any network or disk cost, and why they are compared
//! with it in BENCHMARKS.md.

use std::time::Instant;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

const WRITES: usize = 100_000;

struct Trees {
    inbound_ids: sled::Tree,
    inbound_age: sled::Tree,
    windows: sled::Tree,
    window_expiry: sled::Tree,
}

fn open(dir: &std::path::Path) -> (sled::Db, Trees) {
    let db = sled::Config::new()
        .path(dir)
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let tree = |name: &str| db.open_tree(name).expect("open tree");
    let trees = Trees {
        inbound_ids: tree("inbound_ids"),
        inbound_age: tree("inbound_age"),
        windows: tree("windows"),
        window_expiry: tree("window_expiry"),
    };
    (db, trees)
}

fn key(run: &str, i: usize) -> Vec<u8> {
    format!("{run}-+2782{i:07}").into_bytes()
}

/// Writes per second of `write` over `WRITES` keys split across `threads`.
fn rate(threads: usize, write: impl Fn(usize) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let write = &write;
            scope.spawn(move || (thread..WRITES).step_by(threads).for_each(write));
        }
    });
    WRITES as f64 / started.elapsed().as_secs_f64()
}

fn record_inbound_shape(t: &Trees, run: &str, i: usize) {
    let pair = key(run, i);
    let message_id = key(&format!("{run}-wamid"), i);
    (&t.inbound_ids, &t.inbound_age, &t.windows, &t.window_expiry)
        .transaction(|(ids, age, windows, expiry)| {
            let _current = windows.get(&pair)?;
            if ids.get(&message_id)?.is_some() {
                return Ok(());
            }
            ids.insert(&*message_id, &[7u8; 48][..])?;
            age.insert([&[0u8; 8][..], &message_id].concat(), &[][..])?;
            windows.insert(&*pair, &[9u8; 40][..])?;
            expiry.insert([&[0u8; 8][..], &pair].concat(), &[][..])?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .expect("transaction");
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, trees) = open(dir.path());
    println!("sled 0.34, {WRITES} writes per row, no flush (durability off)");
    println!("{:<44} {:>10} {:>12}", "write", "writes/s", "vs insert");
    let baseline = rate(1, |i| {
        trees
            .windows
            .insert(key("plain", i), &[9u8; 40][..])
            .expect("insert");
    });
    let row = |write: &str, writes: f64| {
        println!("{write:<44} {writes:>10.0} {:>12.2}", writes / baseline);
    };
    row("one insert, 1 thread (baseline)", baseline);
    // What a key costs by kind: a time index's rising key costs what a
    // random one does, and an entry packed with others a fraction of either
    // (BENCHMARKS.md, "Packing the time indexes"). Trees of their own, so
    // the transaction rows below meet the trees they always met.
    let rising_tree = db.open_tree("rising").expect("open tree");
    let packed_tree = db.open_tree("packed").expect("open tree");
    let overwrite = rate(1, |i| {
        trees
            .windows
            .insert(key("plain", i), &[8u8; 40][..])
            .expect("overwrite");
    });
    row("overwriting an existing key, 1 thread", overwrite);
    let rising = rate(1, |i| {
        let entry = [&(i as u64).to_be_bytes()[..], &key("rising", i)].concat();
        rising_tree.insert(entry, &[][..]).expect("insert");
    });
    row("a rising key (a time index), 1 thread", rising);
    // A group at load puts ~25 age entries in one millisecond's bucket:
    // one insert of their concatenation stands for them all.
    let bucket = std::sync::Mutex::new(Vec::new());
    let packed = rate(1, |i| {
        let mut bucket = bucket.lock().expect("bucket");
        bucket.extend_from_slice(&key("packed", i));
        if i % 25 == 24 {
            let at = ((i / 25) as u64).to_be_bytes();
            packed_tree
                .insert(at, std::mem::take(&mut *bucket))
                .expect("insert");
        }
    });
    row("an entry packed 25 to an insert, 1 thread", packed);
    for threads in [1, 2] {
        let run = format!("tx{threads}");
        let writes = rate(threads, |i| record_inbound_shape(&trees, &run, i));
        row(
            &format!("RecordInbound's transaction, {threads} thread(s)"),
            writes,
        );
    }
}
