//! The load workloads shared by the load benchmarks: what each call does,
//! a closed loop of callers over one or several servers, and seeding.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::Status;
use wagate::pb;

use super::*;

pub const WARMUP: Duration = Duration::from_secs(1);
pub const RUN: Duration = Duration::from_secs(5);
pub const STREAMS: [usize; 3] = [1, 16, 256];
/// Streams per HTTP/2 connection; hyper's server allows 200 by default.
pub const STREAMS_PER_CONNECTION: usize = 64;
/// Windows opened before the runs, read by GetWindow and mixed loads.
pub const SEEDED: u64 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    GetWindow,
    RecordInbound,
    SendMessage,
    /// 80% GetWindow, 15% RecordInbound, 5% SendMessage.
    Mixed,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::GetWindow,
        Workload::RecordInbound,
        Workload::SendMessage,
        Workload::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::GetWindow => "GetWindow",
            Workload::RecordInbound => "RecordInbound (durable)",
            Workload::SendMessage => "SendMessage template (durable)",
            Workload::Mixed => "mixed 80/15/5",
        }
    }
}

/// Every call gets a fresh sequence number: distinct customers for inbound,
/// distinct idempotency keys for sends, spread reads over the seeded set.
pub static SEQUENCE: AtomicU64 = AtomicU64::new(1_000_000);

pub async fn call(
    client: &mut pb::gateway_client::GatewayClient<tonic::transport::Channel>,
    workload: Workload,
) -> Result<(), Status> {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let kind = match workload {
        Workload::Mixed => match n % 20 {
            0..16 => Workload::GetWindow,
            16..19 => Workload::RecordInbound,
            _ => Workload::SendMessage,
        },
        other => other,
    };
    match kind {
        Workload::GetWindow => client
            .get_window(get_window(customer(n % SEEDED)))
            .await
            .map(drop),
        Workload::RecordInbound => client
            .record_inbound(record_inbound(customer(n), format!("wamid.{n}"), None))
            .await
            .map(drop),
        Workload::SendMessage => client
            .send_message(send_template(customer(n % SEEDED), format!("bench-{n}")))
            .await
            .map(drop),
        Workload::Mixed => unreachable!("resolved above"),
    }
}

/// Closed loop: `streams` callers, each issuing its next call when the last
/// returns; the streams are spread over `targets` (replicas of one service).
pub async fn closed_loop(
    targets: &[&Process],
    workload: Workload,
    streams: usize,
    duration: Duration,
) -> Sample {
    let mut clients = Vec::new();
    let connections = streams
        .div_ceil(STREAMS_PER_CONNECTION)
        .max(targets.len())
        .min(streams);
    for i in 0..connections {
        clients.extend(channels(targets[i % targets.len()].addr, 1).await);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let mut sample = Sample::new();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    match call(&mut client, workload).await {
                        Ok(()) => sample
                            .latencies
                            .record(began.elapsed().as_micros().max(1) as u64)
                            .unwrap(),
                        Err(status) => sample.failed(&status),
                    }
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

/// wagate's log threads, as `/proc` names them (15 bytes at most).
const LOG_THREADS: &[&str] = &["wagate-wal", "wagate-wal-appl"];

/// What one measured closed loop found.
pub struct Measured {
    pub sample: Sample,
    /// The targets' CPU, in percent of one core.
    pub cpu: f64,
    /// The load generator's own CPU (this process), in percent of one core.
    pub generator_cpu: f64,
    /// wagate's log threads (`wagate-wal` writes and syncs,
    /// `wagate-wal-apply` applies to sled; builds before 2026-11-28 did both
    /// on the first), in percent of one core; `None` for a server without
    /// them.
    pub log_cpu: Option<f64>,
    /// The log's groups synced in the run (one `fdatasync` each) and the
    /// records they held, from wagate's metrics; `None` without them.
    pub groups: Option<(f64, f64)>,
}

impl Measured {
    /// CPU microseconds a call of `percent` of one core.
    pub fn per_call(&self, percent: f64) -> f64 {
        percent / 100.0 / self.sample.rps() * 1e6
    }
}

/// The log's synced groups and the records in them so far.
fn groups(target: &Process) -> Option<(f64, f64)> {
    Some((
        target.metric("wagate_group_commit_batch_size_count")?,
        target.metric("wagate_group_commit_batch_size_sum")?,
    ))
}

/// A warm-up, then a measured closed loop over `targets`: the sample, the
/// targets' CPU use and, for one wagate on sled, its log's share.
pub async fn measure(targets: &[&Process], workload: Workload, streams: usize) -> Measured {
    closed_loop(targets, workload, streams, WARMUP).await;
    let cpu = |targets: &[&Process]| targets.iter().map(|t| t.cpu()).sum::<Duration>();
    let single = (targets.len() == 1).then(|| targets[0]);
    let log_cpu = || single.and_then(|t| t.threads_cpu(LOG_THREADS));
    // The metrics are read outside the CPU readings: a scrape may count the
    // open windows, which is not the workload's cost.
    let groups_before = single.and_then(groups);
    let (cpu_before, generator_before, log_before) = (cpu(targets), own_cpu(), log_cpu());
    let sample = closed_loop(targets, workload, streams, RUN).await;
    let (cpu_after, generator_after, log_after) = (cpu(targets), own_cpu(), log_cpu());
    let percent = |used: Duration| used.as_secs_f64() / sample.elapsed.as_secs_f64() * 100.0;
    let groups = groups_before
        .zip(single.and_then(groups))
        .map(|((count, sum), (count_after, sum_after))| (count_after - count, sum_after - sum));
    Measured {
        cpu: percent(cpu_after - cpu_before),
        generator_cpu: percent(generator_after - generator_before),
        log_cpu: log_before.zip(log_after).map(|(b, a)| percent(a - b)),
        groups,
        sample,
    }
}

/// The approved template the sends use, and `SEEDED` open windows.
pub async fn seed(server: &Process) {
    let mut templates = server.templates().await;
    let template = pb::Template {
        name: TEMPLATE.into(),
        language: "en_US".into(),
        category: pb::TemplateCategory::Utility as i32,
        body: "Hi {{1}}, your order {{2}} has shipped.".into(),
        ..Default::default()
    };
    templates
        .upsert_template(pb::UpsertTemplateRequest {
            template: Some(template),
        })
        .await
        .unwrap();
    templates
        .set_template_status(pb::SetTemplateStatusRequest {
            name: TEMPLATE.into(),
            language: "en_US".into(),
            status: pb::TemplateStatus::Approved as i32,
            reason: String::new(),
            waba_id: String::new(),
        })
        .await
        .unwrap();
    let clients = channels(server.addr, 4).await;
    let tasks: Vec<_> = (0..64u64)
        .map(|worker| {
            let mut client = clients[worker as usize % 4].clone();
            tokio::spawn(async move {
                for n in (worker..SEEDED).step_by(64) {
                    client
                        .record_inbound(record_inbound(customer(n), format!("seed.{n}"), None))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// The workloads of `offered` whose name contains a non-flag argument of
/// the bench (all of them when none is given).
pub fn selected(offered: &[Workload]) -> Vec<Workload> {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    offered
        .iter()
        .copied()
        .filter(|w| {
            filters.is_empty() || filters.iter().any(|f| w.name().to_lowercase().contains(f))
        })
        .collect()
}
