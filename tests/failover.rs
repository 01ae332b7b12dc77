//! A database failover under load (SPEC §8): a primary with a synchronous
//! standby, two wagate replicas writing at full speed through a multi-host
//! URL, the primary killed with SIGKILL (postmaster and backends) and the
//! standby promoted. Every acknowledged write must be there afterwards, no
//! message may be stored twice, and the replicas must serve again without
//! a restart.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// An acknowledged write, and whether it was made after the promotion.
struct Written {
    write: Acknowledged,
    after_failover: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_synchronous_standby_loses_nothing_and_stores_nothing_twice() {
    const WRITERS_EACH: usize = 8;
    let mut primary = pg::Postgres::start();
    let database = primary.create_database();
    let standby = pg::Postgres::standby_of(&primary, "standby1");
    // Commits wait for the standby from here on (set only now: until the
    // standby exists, every commit would wait for it).
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'standby1'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while primary.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never became synchronous"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres password={} dbname={database} \
         target_session_attrs=read-write connect_timeout=2",
        primary.port,
        standby.port,
        pg::PASSWORD
    );
    let replicas = [
        Server::start_with(&["--database-url", &url]),
        Server::start_with(&["--database-url", &url]),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let failed_over = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        let gateway = replica.gateway().await;
        for w in 0..WRITERS_EACH {
            let mut gateway = gateway.clone();
            let (stop, failed_over, errors) = (stop.clone(), failed_over.clone(), errors.clone());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let customer = format!("+1{}{r}{w:02}{n:06}", 2 + r);
                    let key = format!("failover-{r}-{w}-{n}");
                    let after_failover = failed_over.load(Ordering::Relaxed);
                    // A refused call is not acknowledged: move on to a new key.
                    if gateway
                        .record_inbound(inbound(&customer, &key))
                        .await
                        .is_err()
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match gateway
                        .send_message(text(&customer, &key, STILL_THERE))
                        .await
                    {
                        Ok(sent) => acknowledged.push(Written {
                            write: Acknowledged {
                                customer,
                                key,
                                message_id: sent.into_inner().message_id,
                                last_inbound_at: None,
                            },
                            after_failover,
                        }),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                acknowledged
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    primary.kill();
    standby.promote();
    standby.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = ''",
    );
    standby.psql("postgres", "SELECT pg_reload_conf()");
    failed_over.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }

    let after = all.iter().filter(|w| w.after_failover).count();
    let mut lost = 0;
    let mut gateways = [replicas[0].gateway().await, replicas[1].gateway().await];
    for (i, written) in all.iter().enumerate() {
        if !still_there(&mut gateways[i % 2], &written.write).await {
            lost += 1;
        }
    }
    let twice: i64 = standby
        .psql(
            &database,
            "SELECT count(*) FROM (SELECT idempotency_key FROM outbox \
             GROUP BY idempotency_key HAVING count(*) > 1) AS repeated",
        )
        .parse()
        .unwrap();
    // The switch shows in the replicas' metrics: transactions cut off by
    // the kill, or sent to a standby not yet promoted, were run again.
    let mut switched = 0.0;
    for replica in &replicas {
        for cause in ["cause=\"connection\"", "cause=\"failover\""] {
            switched += metric_sum(replica, "wagate_store_transaction_retries_total", &[cause])
                .await
                .unwrap_or(0.0);
        }
    }
    eprintln!(
        "failover: {} acknowledged ({after} after the promotion), {lost} lost, \
         {twice} stored twice, {} calls refused during the switch, \
         {switched} transactions run again (connection, failover)",
        all.len(),
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(lost, 0, "of {} acknowledged writes", all.len());
    assert_eq!(twice, 0, "messages stored twice");
    assert!(
        after > 0,
        "the replicas did not serve again after the failover"
    );
    assert!(all.len() > after, "nothing was written before the failover");
    assert!(switched >= 1.0, "no retry by cause connection or failover");
}
