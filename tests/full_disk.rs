//! A full disk (issue: faults): writes fail while the data directory's disk
//! is full, readiness says so, and once space is freed writes succeed again
//! without a restart, with nothing acknowledged lost.
//!
//! Needs a small filesystem of its own: the test mounts a tmpfs when it runs
//! as root, and skips with a printed reason otherwise (`.ci/run` runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WRITERS: usize = 16;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().to_owned();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk { _dir: dir, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem at `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Writes pairs (inbound then send) from several writers until `stop`;
/// returns what was acknowledged and the refusals seen.
async fn write(
    server: &Server,
    round: usize,
    stop: impl Fn(usize, usize) -> bool + Send + Sync + 'static,
) -> (Vec<Acknowledged>, Vec<tonic::Status>) {
    let gateway = server.gateway().await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(stop);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let mut gateway = gateway.clone();
            let (acknowledged, refused, stop) =
                (acknowledged.clone(), refused.clone(), stop.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let done = {
                        let ok = acknowledged.lock().unwrap().len();
                        let bad = refused.lock().unwrap().len();
                        stop(ok, bad)
                    };
                    if done {
                        return;
                    }
                    let customer = format!("+1{}{writer:03}{n:06}", round + 2);
                    let key = format!("disk-{round}-{writer}-{n}");
                    let recorded = match gateway.record_inbound(inbound(&customer, &key)).await {
                        Ok(r) => r,
                        Err(status) => {
                            refused.lock().unwrap().push(status);
                            continue;
                        }
                    };
                    let window = recorded.into_inner().window.unwrap();
                    match gateway
                        .send_message(text(&customer, &key, STILL_THERE))
                        .await
                    {
                        Ok(sent) => acknowledged.lock().unwrap().push(Acknowledged {
                            customer,
                            last_inbound_at: window.last_inbound_at,
                            key,
                            message_id: sent.into_inner().message_id,
                        }),
                        Err(status) => refused.lock().unwrap().push(status),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    (acknowledged, refused)
}

async fn health(server: &Server, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    answer.status()
}

/// Waits (up to 10 s) for readiness to say `wanted`.
async fn readiness_becomes(server: &Server, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(server, "").await != wanted {
        assert!(
            Instant::now() < deadline,
            "readiness never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lost(server: &Server, writes: &[Acknowledged]) -> usize {
    let mut gateway = server.gateway().await;
    let mut lost = 0;
    for write in writes {
        if !still_there(&mut gateway, write).await {
            lost += 1;
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_once_a_full_disk_has_room_again() {
    let disk = match SmallDisk::mount(128) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipping the full-disk test: {reason}");
            return;
        }
    };
    let data_dir = disk.path.join("data");
    let mut server = Server::start_with(&["--data-dir", data_dir.to_str().unwrap()]);
    let (mut acknowledged, refused) = write(&server, 0, |ok, _| ok >= 200).await;
    assert!(refused.is_empty(), "{refused:?}");

    // Full: readiness goes NOT_SERVING before any write fails, liveness
    // stays up, writes are refused with a reason, reads still work.
    let ballast = fill(&disk.path);
    readiness_becomes(&server, ServingStatus::NotServing).await;
    assert_eq!(health(&server, "liveness").await, ServingStatus::Serving);
    assert_eq!(
        health(&server, "wagate.v1.Gateway").await,
        ServingStatus::NotServing
    );
    let (taken, refused) = write(&server, 1, |ok, bad| ok + bad >= 64).await;
    assert!(
        taken.is_empty(),
        "{} writes taken on a full disk",
        taken.len()
    );
    let refusal = common::refusal::<()>(Err(refused[0].clone()));
    assert_eq!(refusal.code, tonic::Code::Unavailable, "{refusal:?}");
    assert_eq!(refusal.reason, "STORE_FAILURE", "{refusal:?}");
    assert!(refusal.message.contains("full"), "{refusal:?}");
    assert_eq!(
        window(&server, &acknowledged[0].customer).await.state(),
        pb::WindowState::Open
    );
    let failures = metric_sum(
        &server,
        "wagate_store_write_failures_total",
        &["cause=\"disk_full\""],
    )
    .await;
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    assert_eq!(metric_sum(&server, "wagate_store_up", &[]).await, Some(0.0));

    // Room again: ready and writing with no restart.
    std::fs::remove_file(&ballast).unwrap();
    readiness_becomes(&server, ServingStatus::Serving).await;
    let (after, refused) = write(&server, 2, |ok, bad| ok >= 200 || bad > 0).await;
    assert!(refused.is_empty(), "{:?}", refused.first());
    acknowledged.extend(after);
    assert_eq!(lost(&server, &acknowledged).await, 0);

    server.restart().await;
    assert_eq!(lost(&server, &acknowledged).await, 0);
    server.crash_and_restart();
    assert_eq!(lost(&server, &acknowledged).await, 0);
}
