//! Scale benchmark: wagate holding 1,000,000 windows and 10,000 templates.
//!
//! `cargo bench --bench scale` (or `bench/run.sh --scale`). Seeds a fresh
//! store through the store's own API (the same transactions and group commit
//! as the RPCs, without 1M network round trips), then starts the release
//! binary on it and reports disk size, startup time, RSS, and GetWindow
//! latency at that size. Finally it restarts wagate with a retention that
//! puts every seeded window past it, so the sweeper removes 1M windows while
//! an open-loop GetWindow load runs; that load's p99 is compared with the
//! same load on the same store just before, in the same run.
//!
//! `WAGATE_SCALE_WINDOWS` overrides the window count (for a quick look).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use support::*;
use wagate::domain::send::DeliveryMode;
use wagate::domain::template::TemplateDraft;
use wagate::domain::{
    Category, EntryPoint, Inbound, InboundKind, InboundMessageId, Pair, PhoneNumber, Status,
    TemplateId,
};
use wagate::pb;
use wagate::service::Service;
use wagate::store::sled::{SledConfig, SledStore};

const TEMPLATES: u64 = 10_000;
const DEFAULT_CACHE: u64 = 128 << 20;
const SEEDERS: u64 = 512;
const RUN: Duration = Duration::from_secs(5);
/// The seeded windows closed this long before the run; a restart with a
/// one-day retention makes every one of them sweepable.
const CLOSED_AGO: TimeDelta = TimeDelta::days(2);

fn window_count() -> u64 {
    std::env::var("WAGATE_SCALE_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Spreads call `i` over the seeded customers without a random-number crate.
fn seeded_customer(i: u64, windows: u64) -> String {
    customer(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % windows)
}

fn main() {
    block_on(run());
}

/// How long sled itself takes to open a copy of `dir` (its recovery scans
/// the log written since its last open): the part of wagate's startup that
/// wagate's own code does not add, measured on the same machine and data.
fn sled_open_time(dir: &std::path::Path) -> Duration {
    let copy = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.join("."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a failed");
    let started = Instant::now();
    let db = sled::Config::new()
        .path(copy.path())
        .cache_capacity(DEFAULT_CACHE)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let took = started.elapsed();
    drop(db);
    took
}

async fn run() {
    let windows = window_count();
    let data = tempfile::tempdir().unwrap();
    println!(
        "machine: {} cores; wagate and the load generator share it\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let seeding = Instant::now();
    {
        // A runtime of its own: dropping it ends the store's background tasks,
        // which releases the data directory's lock before wagate opens it.
        let path = data.path().to_owned();
        std::thread::spawn(move || {
            let seeding = tokio::runtime::Runtime::new().unwrap();
            seeding.block_on(seed(&path, windows));
        })
        .join()
        .unwrap();
    }
    let seeded_in = seeding.elapsed();
    println!(
        "seeded {windows} windows (one inbound each) and {TEMPLATES} approved templates in {:.1}s ({:.0} durable writes/s)",
        seeded_in.as_secs_f64(),
        (windows + 2 * TEMPLATES) as f64 / seeded_in.as_secs_f64()
    );
    let (apparent, allocated) = disk_usage(data.path());
    println!(
        "disk: {:.0} MiB apparent, {:.0} MiB allocated ({:.0} bytes per window)\n",
        apparent as f64 / 1048576.0,
        allocated as f64 / 1048576.0,
        apparent as f64 / windows as f64
    );

    let sled_alone = sled_open_time(data.path());
    let wagate = Process::wagate(data.path(), &[]);
    println!(
        "startup (exec to listening, store opened): {} ms; sled alone opens a copy of the directory in {} ms",
        wagate.startup.as_millis(),
        sled_alone.as_millis()
    );
    println!("RSS after startup: {:.0} MiB", wagate.rss_mib());
    check_templates(&wagate).await;
    let peak = closed_loop_get_window(&wagate, 16, windows, RUN).await;
    println!(
        "GetWindow, 16 streams, uniform over {windows} windows: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        peak.rps(),
        peak.ms(0.50),
        peak.ms(0.99),
        peak.ms(0.999),
        peak.errors
    );
    let rate = (peak.rps() / 2.0).floor();
    let quiet = open_loop_get_window(&wagate, rate, windows, Stop::After(RUN)).await;
    println!(
        "GetWindow open loop at {rate:.0} req/s (half of peak), no sweep: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        quiet.ms(0.50),
        quiet.ms(0.99),
        quiet.ms(0.999),
        quiet.errors
    );
    println!(
        "peak RSS with default cache ({} MiB): {:.0} MiB\n",
        DEFAULT_CACHE >> 20,
        wagate.peak_rss_mib()
    );
    wagate.stop();

    // Every seeded window closed CLOSED_AGO; a one-day retention sweeps all
    // of them, starting at the sweeper's first tick right after startup.
    let mut sweeping = Process::wagate_logging(
        data.path(),
        "warn,wagate::server=info,wagate::service=info",
        &["--window-retention", "1d", "--sweep-interval", "1s"],
    );
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let log = sweeping.log_lines();
        std::thread::spawn(move || {
            let line = log
                .into_iter()
                .find(|line| line.contains("sweep removed expired records"));
            done.store(true, Ordering::SeqCst);
            (line, started.elapsed())
        })
    };
    let during = open_loop_get_window(&sweeping, rate, windows, Stop::When(done.clone())).await;
    let (line, swept_in) = watcher.join().unwrap();
    let line = line.expect("the sweeper reported no sweep");
    println!(
        "sweep: {}",
        line.split("sweep removed").nth(1).unwrap_or(&line)
    );
    println!(
        "sweep of {windows} expired windows took {:.1}s ({:.0} windows/s)",
        swept_in.as_secs_f64(),
        windows as f64 / swept_in.as_secs_f64()
    );
    println!(
        "GetWindow open loop at {rate:.0} req/s during the sweep: {} calls, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, errors {}",
        during.latencies.len(),
        during.ms(0.50),
        during.ms(0.99),
        during.ms(0.999),
        during.latencies.max() as f64 / 1000.0,
        during.errors
    );
    println!(
        "p99 during sweep / p99 without: {:.2}",
        during.ms(0.99) / quiet.ms(0.99)
    );
    println!(
        "peak RSS during the sweep: {:.0} MiB",
        sweeping.peak_rss_mib()
    );
    assert_swept(&sweeping, windows).await;
    sweeping.stop();
    let (apparent, _) = disk_usage(data.path());
    println!(
        "disk after the sweep: {:.0} MiB apparent",
        apparent as f64 / 1048576.0
    );
}

/// Writes through the service layer with many concurrent writers, so group commit
/// batches them as it does for concurrent RPCs.
async fn seed(path: &Path, windows: u64) {
    let store = Service::new(
        std::sync::Arc::new(
            SledStore::open(&SledConfig {
                path: path.to_owned(),
                cache_capacity_bytes: DEFAULT_CACHE,
            })
            .unwrap(),
        ),
        DeliveryMode::RecordOnly,
    );
    let now = Utc::now();
    let seeded_at = now - TimeDelta::days(1) - CLOSED_AGO;
    let business = PhoneNumber::parse(BUSINESS).unwrap();
    let tasks: Vec<_> = (0..SEEDERS)
        .map(|worker| {
            let store = store.clone();
            let business = business.clone();
            tokio::spawn(async move {
                for n in (worker..windows).step_by(SEEDERS as usize) {
                    let pair = Pair {
                        business: business.clone(),
                        customer: PhoneNumber::parse(&customer(n)).unwrap(),
                    };
                    let id = InboundMessageId::parse(&format!("wamid.seed.{n}")).unwrap();
                    let inbound =
                        Inbound::new(None, InboundKind::Message, EntryPoint::Organic, seeded_at)
                            .unwrap();
                    store
                        .record_inbound(&pair, &id, &inbound, seeded_at)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let tasks: Vec<_> = (0..64)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in (worker..TEMPLATES).step_by(64) {
                    let id = TemplateId::parse(&format!("scale_{n:05}"), "en_US").unwrap();
                    let content = TemplateDraft {
                        category: Some(Category::Utility),
                        body: format!("Hi {{{{1}}}}, update {n} on order {{{{2}}}}."),
                        header_text: String::new(),
                        footer_text: String::new(),
                        buttons: vec![],
                        header_media: None,
                    }
                    .validate()
                    .unwrap();
                    store.upsert_template(&id, &content, now).await.unwrap();
                    store
                        .set_template_status(&id, Status::Approved, "", now)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    store.store().flush().await.unwrap();
    // What the metrics gauge of open windows costs a count: at the instant
    // they were seeded, every seeded window is open.
    let mut took = Vec::new();
    for _ in 0..3 {
        let began = Instant::now();
        let open = store.store().open_windows(seeded_at).await.unwrap();
        took.push(began.elapsed());
        assert_eq!(
            open, windows,
            "every seeded window is open when it was seeded"
        );
    }
    let ms: Vec<String> = took
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "counting {windows} open windows (the wagate_open_windows gauge), three times: {} ms",
        ms.join(" / ")
    );
}

/// Bytes in the data directory: file lengths, and blocks actually allocated.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        if metadata.is_dir() {
            let (a, b) = disk_usage(&entry.path());
            apparent += a;
            allocated += b;
        } else {
            apparent += metadata.len();
            allocated += metadata.blocks() * 512;
        }
    }
    (apparent, allocated)
}

/// The registry answers at this size: the last page and one template by name.
async fn check_templates(server: &Process) {
    let mut templates = server.templates().await;
    let started = Instant::now();
    let mut page_token = String::new();
    let mut listed = 0;
    loop {
        let page = templates
            .list_templates(pb::ListTemplatesRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed += page.templates.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed as u64, TEMPLATES, "every seeded template lists");
    println!(
        "ListTemplates over all {listed} templates, 1000 per page: {} ms",
        started.elapsed().as_millis()
    );
}

async fn closed_loop_get_window(
    server: &Process,
    streams: usize,
    windows: u64,
    duration: Duration,
) -> Sample {
    let clients = channels(server.addr, 1).await;
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..streams as u64)
        .map(|stream| {
            let mut client = clients[0].clone();
            tokio::spawn(async move {
                let mut sample = Sample::new();
                let mut i = stream;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let call = client.get_window(get_window(seeded_customer(i, windows)));
                    match call.await {
                        // Every seeded window closed two days ago; any other
                        // answer means the load read the wrong thing.
                        Ok(response)
                            if response.get_ref().window.as_ref().map(|w| w.state)
                                == Some(pb::WindowState::Closed as i32) =>
                        {
                            sample
                                .latencies
                                .record(began.elapsed().as_micros().max(1) as u64)
                                .unwrap()
                        }
                        _ => sample.errors += 1,
                    }
                    i += streams as u64;
                }
                sample
            })
        })
        .collect();
    let mut total = Sample::new();
    for task in tasks {
        total.merge(&task.await.unwrap());
    }
    total.elapsed = start.elapsed();
    total
}

enum Stop {
    After(Duration),
    When(Arc<AtomicBool>),
}

/// Open loop at a fixed rate; latency counts from when each call was due.
async fn open_loop_get_window(server: &Process, rate: f64, windows: u64, stop: Stop) -> Sample {
    let clients = channels(server.addr, 4).await;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let sample = Arc::new(std::sync::Mutex::new(Sample::new()));
    let mut tasks = Vec::new();
    for i in 0.. {
        let finished = match &stop {
            Stop::After(duration) => start.elapsed() >= *duration,
            Stop::When(done) => done.load(Ordering::SeqCst),
        };
        if finished {
            break;
        }
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut client = clients[i as usize % clients.len()].clone();
        let sample = sample.clone();
        tasks.push(tokio::spawn(async move {
            let result = client
                .get_window(get_window(seeded_customer(i, windows)))
                .await;
            let mut sample = sample.lock().unwrap();
            match result {
                Ok(_) => sample
                    .latencies
                    .record(due.elapsed().as_micros().max(1) as u64)
                    .unwrap(),
                Err(_) => sample.errors += 1,
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut sample = Arc::try_unwrap(sample).ok().unwrap().into_inner().unwrap();
    sample.elapsed = start.elapsed();
    sample
}

/// After the sweep, seeded pairs read NEVER_OPENED: the windows are gone.
async fn assert_swept(server: &Process, windows: u64) {
    let mut client = channels(server.addr, 1).await.remove(0);
    for i in 0..100 {
        let window = client
            .get_window(get_window(seeded_customer(i, windows)))
            .await
            .unwrap()
            .into_inner()
            .window
            .unwrap();
        assert_eq!(
            window.state,
            pb::WindowState::NeverOpened as i32,
            "a swept window still reads as known"
        );
    }
    println!("checked: 100 sampled seeded pairs read NEVER_OPENED after the sweep");
}
