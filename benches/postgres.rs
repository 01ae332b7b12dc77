//! The PostgreSQL backend under load, in one run on one PostgreSQL:
//! wagate with 1 and with 3 replicas, the same statements as raw SQL
//! through pgbench at the same concurrency (the ceiling this backend can
//! reach on this box), and the no-op tonic server (the stack's ceiling).
//!
//! For GetWindow it also measures the least a read can cost: one prepared
//! single-row SELECT through pgbench. No GetWindow can be faster than the
//! no-op call plus that read, which bounds its ratio to the no-op.
//!
//! `bench/run.sh --backend postgres` (or `cargo bench --bench postgres`).
//! PostgreSQL runs with its defaults (fsync and synchronous_commit on), so
//! every write is durable, as in production; the harness of the tests
//! starts it.

#[path = "../tests/pg/mod.rs"]
mod pg;
mod support;

use std::path::Path;
use std::process::Command;

use support::workload::*;
use support::*;

/// The mixed load adds nothing here.
const MEASURED: [Workload; 3] = [
    Workload::GetWindow,
    Workload::RecordInbound,
    Workload::SendMessage,
];

/// Connections each replica keeps: wagate's default.
const POOL_SIZE: &str = "16";

fn main() {
    if std::env::args().any(|a| a == "--noop-server") {
        return support::noop::serve();
    }
    block_on(run());
}

fn replica(data: &Path, url: &str) -> Process {
    Process::wagate(
        data,
        &["--database-url", url, "--database-pool-size", POOL_SIZE],
    )
}

struct Row {
    workload: Workload,
    streams: usize,
    one: Sample,
    three: Sample,
    raw_sql: Option<RawSql>,
    /// GetWindow only: pgbench's single-row SELECT at the same concurrency.
    one_read: Option<RawSql>,
    noop: Sample,
}

impl Row {
    /// The best ratio to the no-op a GetWindow can reach when each call
    /// costs the no-op's call plus one SELECT of its own: the two add as
    /// latency at one stream and as CPU on the shared cores beyond it.
    /// Strict at one stream; with many streams, reads gathered into one
    /// statement can pass it.
    fn bound(&self) -> Option<f64> {
        let select = self.one_read.as_ref()?.tps;
        let noop = self.noop.rps();
        Some(1.0 / (1.0 / noop + 1.0 / select) / noop)
    }
}

async fn run() {
    // Room for pgbench's 256 clients beside the replicas' pools.
    let server = pg::Postgres::start_with(&["max_connections=400"]);
    let data = tempfile::tempdir().unwrap();

    let one_db = server.create_database();
    let one = replica(data.path(), &server.url(&one_db));
    seed(&one).await;

    let three_db = server.create_database();
    let three: Vec<Process> = (0..3)
        .map(|_| replica(data.path(), &server.url(&three_db)))
        .collect();
    seed(&three[0]).await;

    // pgbench's database: wagate's schema and the same seed, then no wagate.
    let sql_db = server.create_database();
    let seeder = replica(data.path(), &server.url(&sql_db));
    seed(&seeder).await;
    seeder.stop();
    let scripts = tempfile::tempdir().unwrap();
    let one_read = one_read_file(scripts.path());

    let noop = Process::start({
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg("--noop-server");
        command
    });

    println!(
        "machine: {} cores; PostgreSQL, wagate, pgbench and the load generator share it",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "each figure: {}s after {}s warm-up, closed loop; pool {POOL_SIZE} connections a replica\n",
        RUN.as_secs(),
        WARMUP.as_secs()
    );

    let mut rows = Vec::new();
    for workload in selected(&MEASURED) {
        let script = script_file(scripts.path(), workload);
        for streams in STREAMS {
            let one_sample = measure(&[&one], workload, streams).await.sample;
            let targets: Vec<&Process> = three.iter().collect();
            let three_sample = measure(&targets, workload, streams).await.sample;
            let raw_sql = pgbench(&server, &sql_db, &script, streams);
            let one_read = (workload == Workload::GetWindow)
                .then(|| pgbench(&server, &sql_db, &one_read, streams))
                .flatten();
            let noop_sample = measure(&[&noop], workload, streams).await.sample;
            rows.push(Row {
                workload,
                streams,
                one: one_sample,
                three: three_sample,
                raw_sql,
                one_read,
                noop: noop_sample,
            });
        }
    }

    println!(
        "| workload | streams | 1 replica req/s | p50 / p99 ms | 3 replicas req/s | p50 / p99 ms \
         | raw SQL tx/s | no-op req/s | 1 replica ÷ raw SQL | 3 replicas ÷ raw SQL | 1 replica ÷ no-op \
         | one SELECT tx/s | bound ÷ no-op |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &rows {
        let latency = |s: &Sample| format!("{:.2} / {:.2}", s.ms(0.5), s.ms(0.99));
        let errors = |s: &Sample| {
            if s.errors == 0 {
                String::new()
            } else {
                format!(" (errors: {})", s.errors_shown())
            }
        };
        let (raw, one_ratio, three_ratio) = match &row.raw_sql {
            Some(RawSql { tps, retried }) => (
                format!("{tps:.0} (retried {retried})"),
                format!("{:.2}", row.one.rps() / tps),
                format!("{:.2}", row.three.rps() / tps),
            ),
            None => ("failed".into(), String::new(), String::new()),
        };
        let (select, bound) = match (&row.one_read, row.bound()) {
            (Some(read), Some(bound)) => (format!("{:.0}", read.tps), format!("{bound:.2}")),
            _ => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {:.0}{} | {} | {:.0}{} | {} | {raw} | {:.0} | {one_ratio} | {three_ratio} | {:.2} | {select} | {bound} |",
            row.workload.name(),
            row.streams,
            row.one.rps(),
            errors(&row.one),
            latency(&row.one),
            row.three.rps(),
            errors(&row.three),
            latency(&row.three),
            row.noop.rps(),
            row.one.rps() / row.noop.rps(),
        );
    }

    one.stop();
    for replica in three {
        replica.stop();
    }
    noop.stop();
}

/// The statements wagate's PostgreSQL store runs for `workload`, in the
/// same order and transaction, as a pgbench script: its ceiling on this
/// PostgreSQL. Customers and keys are fresh per transaction as in the
/// tonic runs; sends and reads go to the seeded windows.
fn script_file(dir: &Path, workload: Workload) -> std::path::PathBuf {
    let script = match workload {
        Workload::GetWindow => format!(
            "\\set c random(0, {last})\n\
             SELECT * FROM windows WHERE business = '{BUSINESS}' AND customer = {SEEDED_CUSTOMER};\n\
             SELECT * FROM consent WHERE business = '{BUSINESS}' AND customer = {SEEDED_CUSTOMER};\n",
            last = SEEDED - 1
        ),
        Workload::RecordInbound => format!(
            "\\set n random(1, 4000000000000)\n\
             BEGIN ISOLATION LEVEL REPEATABLE READ;\n\
             SELECT business, customer FROM inbound_ids WHERE message_id = 'pgbench.' || (:n)::text;\n\
             SELECT * FROM windows WHERE business = '{BUSINESS}' AND customer = '+1' || (:n)::text;\n\
             INSERT INTO inbound_ids (message_id, business, customer, received_at, kind, \
                entry_point, recorded_at) VALUES ('pgbench.' || (:n)::text, '{BUSINESS}', \
                '+1' || (:n)::text, now(), 'MESSAGE', 'ORGANIC', now()) \
                ON CONFLICT (message_id) DO NOTHING;\n\
             INSERT INTO windows (business, customer, last_inbound_at, expires_at, \
                free_entry_deadline, free_until) VALUES ('{BUSINESS}', '+1' || (:n)::text, now(), \
                now() + interval '24 hours', NULL, NULL) ON CONFLICT (business, customer) DO UPDATE \
                SET last_inbound_at = EXCLUDED.last_inbound_at, expires_at = EXCLUDED.expires_at, \
                free_entry_deadline = EXCLUDED.free_entry_deadline, free_until = EXCLUDED.free_until;\n\
             INSERT INTO window_changes (business, customer, kind, last_inbound_at, expires_at, \
                free_entry_deadline, free_until) VALUES ('{BUSINESS}', '+1' || (:n)::text, \
                'opened', now(), now() + interval '24 hours', NULL, NULL);\n\
             COMMIT;\n"
        ),
        Workload::SendMessage => format!(
            "\\set n random(1, 4000000000000)\n\
             \\set c random(0, {last})\n\
             BEGIN ISOLATION LEVEL REPEATABLE READ;\n\
             SELECT * FROM idempotency_keys WHERE key = 'pgbench-' || (:n)::text;\n\
             SELECT * FROM windows WHERE business = '{BUSINESS}' AND customer = {SEEDED_CUSTOMER};\n\
             SELECT * FROM templates WHERE name = '{TEMPLATE}' AND language = 'en_US';\n\
             SELECT * FROM business_numbers WHERE number = '{BUSINESS}';\n\
             SELECT EXISTS (SELECT 1 FROM accounts);\n\
             SELECT * FROM consent WHERE business = '{BUSINESS}' AND customer = {SEEDED_CUSTOMER};\n\
             SELECT * FROM accounts WHERE id = 'default' \
                OR id = (SELECT account FROM business_numbers WHERE number = '{BUSINESS}');\n\
             INSERT INTO outbox (message_id, business, customer, idempotency_key, content, \
                fingerprint, kind, rendered_text, template_category, pricing_category, billable, \
                free_until, accepted_at, status) VALUES (md5((:n)::text)::uuid, '{BUSINESS}', \
                {SEEDED_CUSTOMER}, 'pgbench-' || (:n)::text, \
                '{{\"template\": {{\"name\": \"{TEMPLATE}\", \"language\": \"en_US\", \
                \"body\": {{\"positional\": [\"Ann\", \"A-1001\"]}}, \"header\": null, \
                \"buttons\": []}}}}', sha256((:n)::text::bytea), 'TEMPLATE', \
                'Hi Ann, your order A-1001 has shipped.', 'UTILITY', 'UTILITY', true, NULL, \
                now(), 'ACCEPTED');\n\
             INSERT INTO idempotency_keys (key, fingerprint, message_id, created_at) VALUES \
                ('pgbench-' || (:n)::text, sha256((:n)::text::bytea), md5((:n)::text)::uuid, now()) \
                ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
                message_id = EXCLUDED.message_id, created_at = EXCLUDED.created_at;\n\
             INSERT INTO changes (message_id, delivery) VALUES (md5((:n)::text)::uuid, NULL);\n\
             COMMIT;\n",
            last = SEEDED - 1
        ),
        Workload::Mixed => unreachable!("not measured here"),
    };
    let path = dir.join(format!("{workload:?}.sql"));
    std::fs::write(&path, script).unwrap();
    path
}

/// One of the seeded customers, picked by pgbench's variable `c`.
const SEEDED_CUSTOMER: &str = "'+1200' || lpad((:c)::text, 7, '0')";

/// The least any GetWindow must read: one seeded window, one prepared
/// SELECT (GetWindow itself reads consent too, in the same round trip).
fn one_read_file(dir: &Path) -> std::path::PathBuf {
    let script = format!(
        "\\set c random(0, {last})\n\
         SELECT * FROM windows WHERE business = '{BUSINESS}' AND customer = {SEEDED_CUSTOMER};\n",
        last = SEEDED - 1
    );
    let path = dir.join("one_read.sql");
    std::fs::write(&path, script).unwrap();
    path
}

/// pgbench's transactions per second for `script` with `clients`
/// connections (prepared statements, serialization failures retried as
/// wagate retries them), after a warm-up; `None` when it failed.
fn pgbench(server: &pg::Postgres, database: &str, script: &Path, clients: usize) -> Option<RawSql> {
    let run = |seconds: u64| {
        Command::new(pg::bindir().join("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-n",
                "-M",
                "prepared",
                "--max-tries",
                "24",
            ])
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(2).to_string(),
            ])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(script)
            .arg(database)
            .env("PGPASSWORD", pg::PASSWORD)
            .output()
            .ok()
    };
    run(WARMUP.as_secs())?;
    let output = run(RUN.as_secs())?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        eprintln!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let retried = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions retried: "))
        .unwrap_or("0");
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(RawSql {
        tps,
        retried: retried.to_owned(),
    })
}

/// What pgbench reached, and how many transactions it had to retry after
/// a serialization failure or deadlock.
struct RawSql {
    tps: f64,
    retried: String,
}
