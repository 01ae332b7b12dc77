//! Several wagate replicas on one PostgreSQL (SPEC §8), through the real
//! binary: what any replica acknowledges, every replica reads at once; one
//! idempotency key or inbound id is stored once however many replicas
//! receive it together; bad database settings fail at start, clearly.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use pb::{InboundOutcome, WindowState};

fn replica(url: &str) -> Server {
    Server::start_with(&["--database-url", url])
}

fn replicas(count: usize) -> (Vec<Server>, String) {
    let server = pg::shared();
    let url = server.url(&server.create_database());
    ((0..count).map(|_| replica(&url)).collect(), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_any_replica_is_read_through_every_other_at_once() {
    let (replicas, _) = replicas(3);
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let customer = "+27820001001";
    a.gateway()
        .await
        .record_inbound(inbound(customer, "wamid.cross-1"))
        .await
        .unwrap();
    for other in [b, c] {
        assert_eq!(window(other, customer).await.state(), WindowState::Open);
    }

    let sent = b
        .gateway()
        .await
        .send_message(text(customer, "cross-send-1", "hello"))
        .await
        .unwrap()
        .into_inner();
    for other in [a, c] {
        let message = other
            .gateway()
            .await
            .get_message(pb::GetMessageRequest {
                message_id: sent.message_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        assert_eq!(message.rendered_text, "hello");
    }

    c.templates()
        .await
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(template(
                "cross_replica",
                pb::TemplateCategory::Utility,
                "Hi {{1}}, thanks for your order.",
            )),
        })
        .await
        .unwrap();
    for other in [a, b] {
        assert_eq!(
            stored_template(other, "cross_replica").await.body,
            "Hi {{1}}, thanks for your order."
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_every_replica_at_once_stores_one_message() {
    let (replicas, _) = replicas(3);
    let customer = "+27820001002";
    replicas[0]
        .gateway()
        .await
        .record_inbound(inbound(customer, "wamid.same-key"))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.gateway().await);
    }
    for round in 0..5 {
        let key = format!("same-key-{round}");
        let calls: Vec<_> = clients
            .iter()
            .flat_map(|client| std::iter::repeat_n(client.clone(), 4))
            .map(|mut client| {
                let request = text(customer, &key, "once");
                tokio::spawn(async move { client.send_message(request).await })
            })
            .collect();
        let mut ids = HashSet::new();
        for call in calls {
            ids.insert(call.await.unwrap().unwrap().into_inner().message_id);
        }
        assert_eq!(
            ids.len(),
            1,
            "round {round}: every caller gets one message id"
        );
    }

    // The same inbound id on all replicas at once: stored once.
    let calls: Vec<_> = clients
        .iter()
        .map(|client| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .record_inbound(inbound("+27820001003", "wamid.same-inbound"))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap().unwrap().into_inner().outcome());
    }
    outcomes.sort_by_key(|o| *o as i32);
    assert_eq!(
        outcomes,
        [
            InboundOutcome::Opened,
            InboundOutcome::Duplicate,
            InboundOutcome::Duplicate
        ],
        "one replica recorded it, the others found it"
    );
}

#[test]
fn bad_database_settings_fail_at_start_clearly_and_write_nothing() {
    let server = pg::shared();

    // Nothing listens on that port.
    let nowhere = format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres connect_timeout=5",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        pg::PASSWORD
    );
    let err = refused_start(&[], &["--database-url", &nowhere]);
    assert!(
        err.contains("cannot open the PostgreSQL store") && err.contains("connect"),
        "{err}"
    );

    // A wrong password.
    let database = server.create_database();
    let wrong = server
        .url(&database)
        .replace(pg::PASSWORD, "not-the-password");
    let err = refused_start(&[], &["--database-url", &wrong]);
    assert!(err.contains("password authentication failed"), "{err}");
    assert_eq!(server.public_tables(&database), "0", "nothing was created");

    // A database a newer wagate migrated.
    server.psql(
        &database,
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_migrations (version) VALUES (99)",
    );
    let err = refused_start(&[], &["--database-url", &server.url(&database)]);
    assert!(err.contains("schema version 99"), "{err}");
    assert_eq!(
        server.public_tables(&database),
        "1",
        "only the newer wagate's version table is there"
    );
    std::thread::sleep(Duration::from_millis(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_acknowledged_write() {
    const WRITERS_EACH: usize = 8;
    let (mut replicas, _) = replicas(3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        let gateway = replica.gateway().await;
        for w in 0..WRITERS_EACH {
            let (mut gateway, stop) = (gateway.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let customer = format!("+1{}{r}{w:02}{n:06}", 2 + r);
                    let key = format!("load-{r}-{w}-{n}");
                    if gateway
                        .record_inbound(inbound(&customer, &key))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    let Ok(sent) = gateway
                        .send_message(text(&customer, &key, STILL_THERE))
                        .await
                    else {
                        break;
                    };
                    acknowledged.push(Acknowledged {
                        customer,
                        key,
                        message_id: sent.into_inner().message_id,
                        last_inbound_at: None,
                    });
                }
                acknowledged
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas[2].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    assert!(all.len() > 100, "only {} writes acknowledged", all.len());

    let mut survivors = [replicas[0].gateway().await, replicas[1].gateway().await];
    let mut lost = 0;
    for (i, write) in all.iter().enumerate() {
        if !still_there(&mut survivors[i % 2], write).await {
            lost += 1;
        }
    }
    eprintln!(
        "replica kill: {} acknowledged writes, {lost} lost",
        all.len()
    );
    assert_eq!(lost, 0, "of {} acknowledged writes", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_directory_moves_into_postgresql_with_wagate_migrate() {
    // State written by the embedded default (under a messaging limit).
    let mut embedded = Server::start_with(&["--messaging-limit", "250"]);
    let customer = "+27820001004";
    let mut gateway = embedded.gateway().await;
    gateway
        .record_inbound(inbound(customer, "wamid.before-move"))
        .await
        .unwrap();
    let sent = gateway
        .send_message(text(customer, "before-move", "moved"))
        .await
        .unwrap()
        .into_inner();
    approve(
        &embedded,
        template(
            "moved",
            pb::TemplateCategory::Utility,
            "Hi {{1}}, thanks for your order.",
        ),
    )
    .await;
    // A customer reached outside a window: counted against the limit.
    gateway
        .send_message(template_send("+27820001005", "reach", "moved", &["Ann"]))
        .await
        .unwrap();
    let mut accounts = embedded.accounts().await;
    accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                waba_id: "102290129340398".into(),
                display_name: "Moved brand".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    accounts
        .register_number(pb::RegisterNumberRequest {
            number: "+15550001111".into(),
            phone_number_id: "106540352242922".into(),
            waba_id: "102290129340398".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    embedded.signal("TERM");
    assert!(embedded.wait_exit(Duration::from_secs(15)).await.success());

    let postgres = pg::shared();
    let url = postgres.url(&postgres.create_database());
    let out = migrate(embedded.data_dir(), &url);
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        "1 windows",
        "2 messages",
        "1 templates",
        "2 idempotency keys",
        "1 messaging-limit reaches",
        "1 messaging-limit usage records",
        "1 inbound ids",
        "1 accounts",
        "1 business numbers",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }

    let replica = replica(&url);
    let mut gateway = replica.gateway().await;
    assert_eq!(window(&replica, customer).await.state(), WindowState::Open);
    let replay = gateway
        .send_message(text(customer, "before-move", "moved"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.message_id, sent.message_id, "the key still replays");
    let again = gateway
        .record_inbound(inbound(customer, "wamid.before-move"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.outcome(), InboundOutcome::Duplicate);
    assert_eq!(
        stored_template(&replica, "moved").await.body,
        "Hi {{1}}, thanks for your order."
    );
    let moved = replica
        .accounts()
        .await
        .get_account(pb::GetAccountRequest {
            waba_id: "102290129340398".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.account.unwrap().display_name, "Moved brand");
    assert_eq!(moved.numbers[0].phone_number_id, "106540352242922");

    // Running it again changes nothing (an interrupted move can be redone).
    let again = migrate(embedded.data_dir(), &url);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        postgres.psql(&url_database(&url), "SELECT count(*) FROM outbox"),
        "2"
    );
    assert_eq!(
        postgres.psql(
            &url_database(&url),
            "SELECT customer || ' ' || (SELECT sum(n) FROM limit_usage, \
             unnest(bucket_counts) n) FROM limit_reaches"
        ),
        "+27820001005 1",
        "the reach and its count moved"
    );
}

/// Runs `wagate migrate --from <data dir> --to <url>`.
fn migrate(data_dir: &std::path::Path, url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["migrate", "--from"])
        .arg(data_dir)
        .args(["--to", url])
        .output()
        .unwrap()
}

fn url_database(url: &str) -> String {
    url.rsplit("dbname=").next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_database_is_out_of_reach() {
    let mut postgres = pg::Postgres::start();
    let replica = replica(&postgres.url(&postgres.create_database()));
    let health = tonic_health::pb::health_client::HealthClient::new(replica.channel().await);
    let status = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    let wait_for = |want: tonic_health::pb::health_check_response::ServingStatus| {
        let mut health = health.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let now = health
                    .check(status(""))
                    .await
                    .unwrap()
                    .into_inner()
                    .status();
                if now == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "readiness stayed {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    wait_for(ServingStatus::Serving).await;
    postgres.stop();
    wait_for(ServingStatus::NotServing).await;
    let liveness = health
        .clone()
        .check(status(wagate::server::LIVENESS))
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(liveness, ServingStatus::Serving, "a restart would not help");
    postgres.start_again();
    wait_for(ServingStatus::Serving).await;
    // And it serves again, with no restart.
    replica
        .gateway()
        .await
        .record_inbound(inbound("+27820001005", "wamid.after-outage"))
        .await
        .unwrap();
}

#[test]
fn replicas_starting_together_on_an_empty_database_migrate_it_once() {
    let postgres = pg::shared();
    let database = postgres.create_database();
    let url = postgres.url(&database);
    // Three binaries at the same moment: each applies the migrations or
    // finds them applied, and all of them come up.
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || replica(&url))
        })
        .collect();
    let replicas: Vec<Server> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(replicas.len(), 3);
    let versions = postgres.psql(
        &database,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    let every = wagate::store::postgres::SCHEMA_VERSION;
    let expected: Vec<String> = (1..=every).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected.join(","), "each migration applied once");
    let applied: usize = replicas
        .iter()
        .map(|r| r.logs().matches("applied schema migration").count())
        .sum();
    assert_eq!(
        applied, every as usize,
        "each migration applied by one replica"
    );
}

/// The template `name` (language en_US) as `server` reads it.
async fn stored_template(server: &Server, name: &str) -> pb::Template {
    server
        .templates()
        .await
        .get_template(pb::GetTemplateRequest {
            name: name.into(),
            language: "en_US".into(),
            waba_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_can_come_from_a_file() {
    let server = pg::shared();
    let database = server.create_database();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("url");
    // As a mounted Secret holds it: the value and a trailing newline.
    std::fs::write(&file, format!("{}\n", server.url(&database))).unwrap();
    let replica = Server::start_with(&["--database-url-file", file.to_str().unwrap()]);
    replica
        .gateway()
        .await
        .record_inbound(inbound("+27820001009", "wamid.from-file"))
        .await
        .unwrap();
    assert_eq!(
        server.psql(&database, "SELECT count(*) FROM inbound_ids"),
        "1",
        "the write reached the database the file names"
    );
}

/// (type, customer, occurred_at, resume token) of the next event.
async fn next_window_event(
    stream: &mut tonic::Streaming<pb::WatchWindowsResponse>,
) -> (i32, String, prost_types::Timestamp, String) {
    let next = tokio::time::timeout(Duration::from_secs(20), stream.message());
    let event = next
        .await
        .expect("an event within 20s")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    let window = event.window.unwrap();
    (
        event.r#type,
        window.customer_number,
        event.occurred_at.unwrap(),
        event.resume_token,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_events_from_every_replica_reach_a_watcher_on_any_other() {
    const CUSTOMERS: usize = 20;
    let (replicas, _) = replicas(3);
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let watch = |token: &str| pb::WatchWindowsRequest {
        closing_leads: vec![prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }],
        resume_token: token.into(),
        ..Default::default()
    };
    let mut on_b = b
        .gateway()
        .await
        .watch_windows(watch(""))
        .await
        .unwrap()
        .into_inner();
    let now = chrono::Utc::now();
    for n in 0..CUSTOMERS {
        // Half through A, half through C; each closes 3-5 s from now, so
        // its 1-minute point has passed already and fires with the record.
        let writer = if n % 2 == 0 { a } else { c };
        let received = now - chrono::TimeDelta::hours(24)
            + chrono::TimeDelta::milliseconds(3_000 + 100 * n as i64);
        writer
            .gateway()
            .await
            .record_inbound(pb::RecordInboundRequest {
                received_at: Some(timestamp(received)),
                ..inbound(&format!("+2782500{n:04}"), &format!("wamid.we-{n}"))
            })
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..CUSTOMERS {
        events.push(next_window_event(&mut on_b).await);
    }
    drop(on_b);
    // The rest through another replica, from the last token B handed out.
    let mut on_c = c
        .gateway()
        .await
        .watch_windows(watch(&events.last().unwrap().3))
        .await
        .unwrap()
        .into_inner();
    for _ in CUSTOMERS..3 * CUSTOMERS {
        events.push(next_window_event(&mut on_c).await);
    }
    let distinct: HashSet<&String> = events.iter().map(|e| &e.3).collect();
    assert_eq!(distinct.len(), 3 * CUSTOMERS, "none twice");
    for kind in [
        pb::WindowEventType::Opened,
        pb::WindowEventType::Closing,
        pb::WindowEventType::Closed,
    ] {
        let customers: HashSet<&String> = events
            .iter()
            .filter(|e| e.0 == kind as i32)
            .map(|e| &e.1)
            .collect();
        assert_eq!(customers.len(), CUSTOMERS, "{kind:?} for every customer");
    }
    let times: Vec<(i64, i32)> = events.iter().map(|e| (e.2.seconds, e.2.nanos)).collect();
    assert!(times.is_sorted(), "in the order they happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reports_its_pool_and_gathered_reads_as_metrics() {
    let (replicas, _) = replicas(1);
    let server = &replicas[0];
    let customer = "+27820001004";
    server
        .gateway()
        .await
        .record_inbound(inbound(customer, "wamid.metrics"))
        .await
        .unwrap();
    // Far more reads at once than a replica runs directly: most queue and
    // are answered by gathered reads.
    const CALLS: usize = 200;
    let client = server.gateway().await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .get_window(pb::GetWindowRequest {
                        business_number: BUSINESS.into(),
                        customer_number: customer.into(),
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        let window = call.await.unwrap().unwrap().into_inner().window.unwrap();
        assert_eq!(window.state(), WindowState::Open);
    }

    let metric = |name: &'static str| async move {
        metric_sum(server, name, &[])
            .await
            .unwrap_or_else(|| panic!("no {name} in the scrape"))
    };
    let open = metric("wagate_store_pool_connections").await;
    let idle = metric("wagate_store_pool_idle_connections").await;
    let waiting = metric("wagate_store_pool_waiting").await;
    assert!((1.0..=16.0).contains(&open), "{open} connections open");
    assert!(idle <= open, "{idle} idle of {open}");
    assert!(waiting >= 0.0, "{waiting} waiting");
    assert_eq!(metric("wagate_store_up").await, 1.0);
    let batches = metric("wagate_store_window_reads_gathered_count").await;
    let gathered = metric("wagate_store_window_reads_gathered_sum").await;
    assert!(batches >= 1.0, "{batches} gathered reads");
    assert!(
        gathered >= batches && gathered <= CALLS as f64,
        "{gathered} calls answered by {batches} gathered reads"
    );
    lint_metrics(&metrics_text(server).await);
}

/// README's way to try the PostgreSQL mode: `scripts/dev-postgres.sh`
/// prints a URL wagate runs on, and a TERM stops PostgreSQL and removes
/// its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_postgres_script_gives_a_url_wagate_runs_on_and_cleans_up() {
    use std::io::BufRead;
    let mut script = Command::new("scripts/dev-postgres.sh")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/dev-postgres.sh");
    let mut out = std::io::BufReader::new(script.stdout.take().unwrap()).lines();
    let mut err = std::io::BufReader::new(script.stderr.take().unwrap()).lines();
    let printed = out.next().expect("a line").unwrap();
    let url = printed
        .strip_prefix("WAGATE_DATABASE_URL='")
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not a URL line: {printed}"))
        .to_owned();
    let told = err.next().expect("a line").unwrap();
    let dir = told
        .split("(log: ")
        .nth(1)
        .and_then(|rest| rest.split("/postgres.log").next())
        .unwrap_or_else(|| panic!("no log path in: {told}"))
        .to_owned();
    assert!(
        std::path::Path::new(&dir).is_dir(),
        "{dir} exists while it runs"
    );

    let server = replica(&url);
    server
        .gateway()
        .await
        .record_inbound(inbound("+27820001010", "wamid.dev-postgres"))
        .await
        .unwrap();
    assert_eq!(
        window(&server, "+27820001010").await.state(),
        WindowState::Open
    );
    drop(server);

    Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while script.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the script outlived its TERM by 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} is removed after a TERM"
    );
}
