//! What only sled has: group commit, its schema marker and its encoding.
//! Everything the backends share is in the conformance suite
//! (`tests/store_conformance`).

use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::{EntryPoint, InboundKind, PhoneNumber};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

fn config(dir: &tempfile::TempDir) -> SledConfig {
    SledConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
    }
}

fn pair(customer: &str) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(customer).unwrap(),
    }
}

fn inbound(at: DateTime<Utc>) -> Inbound {
    Inbound {
        received_at: at,
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    }
}

async fn record(store: &SledStore, customer: &str, id: &str, at: DateTime<Utc>) {
    let (p, inbound) = (pair(customer), inbound(at));
    store
        .record_inbound(
            &p,
            &InboundMessageId::parse(id).unwrap(),
            &inbound,
            &|seen| crate::domain::window::plan_inbound(seen, &p, &inbound, at),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&config(&dir)).unwrap();
    let before = store.commit_counts();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                record(
                    &store,
                    &format!("+2782{i:07}"),
                    &format!("m{i}"),
                    Utc::now(),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.commit_counts();
    let writes = after.writes - before.writes;
    let flushes = after.flushes - before.flushes;
    assert_eq!(writes, 200, "every write waited for a flush");
    assert!(
        flushes < writes,
        "{flushes} flushes for {writes} writes: no grouping"
    );
    assert!(after.largest_batch > 1);
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_corrupt_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(&config(&dir)).unwrap();
        record(&store, "+27821234567", "x", t0()).await;
        let p = pair("+27821234567");
        store
            .trees
            .windows
            .insert(keys::pair(&p), &[1, 0xff])
            .unwrap();
        assert!(matches!(
            store.window(&p).await,
            Err(StoreError::Corrupt { .. })
        ));
        store
            .db
            .open_tree("meta")
            .unwrap()
            .insert("schema_version", &[9])
            .unwrap();
        store.db.flush().unwrap();
    }
    let err = SledStore::open(&config(&dir))
        .err()
        .expect("newer schema refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 9,
                supported: 1
            }
        ),
        "{err}"
    );
}
