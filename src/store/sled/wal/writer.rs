//! The log thread: it takes every staged record as one group, appends the
//! group to the open segment, syncs it with one `fdatasync`, tells the
//! waiting callers and hands the group to the applier. A failed write
//! refuses writes until one succeeds again; a nearly full disk counts as a
//! failed write.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use super::apply::Job;
use super::housekeeper::Housekeeper;
use super::record::{self, Record};
use super::segment::Segment;
use super::{MIN_FREE_BYTES, Shared};

/// How long the log thread waits before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The log thread: takes what is staged, writes and syncs it as one group,
/// tells the waiters, hands it to the applier; until closed and drained.
pub(super) fn write_loop(
    shared: &Shared,
    dir: &Path,
    first: Segment,
    housekeeper: &Housekeeper,
    applier: &mpsc::SyncSender<Job>,
) {
    let mut next_seq = first.seq + 1;
    let mut segment = Some(first);
    let mut batch: Vec<Record> = Vec::new();
    let mut bytes = Vec::new();
    // Only this thread sets `Staged::failing`, so it knows when to clear it.
    let mut failing = false;
    loop {
        {
            let mut staged = shared.lock();
            while staged.records.is_empty() && !staged.closing {
                staged = shared
                    .wake
                    .wait(staged)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if staged.records.is_empty() {
                return;
            }
            std::mem::swap(&mut batch, &mut staged.records);
        }
        bytes.clear();
        for record in &batch {
            record::encode(record, &mut bytes);
        }
        let last = batch.last().map_or(0, |record| record.lsn);
        let written = room_left(dir)
            .and_then(|()| {
                ready_segment(
                    &mut segment,
                    &mut next_seq,
                    dir,
                    bytes.len(),
                    housekeeper,
                    applier,
                )
            })
            .and_then(|segment| segment.append(&bytes));
        if let Err(error) = written {
            let cause = if is_full(&error) { "disk_full" } else { "io" };
            metrics::counter!(crate::telemetry::STORE_WRITE_FAILURES, "cause" => cause)
                .increment(1);
            if !failing {
                tracing::error!(%error, "log write failed; refusing writes and retrying");
            }
            failing = true;
            segment = None;
            shared.progress.send_modify(|p| {
                p.failed = last;
                p.error = Some(format!("log write failed: {error}").into());
            });
            let mut staged = shared.lock();
            staged.failing = true;
            batch.append(&mut staged.records);
            staged.records = std::mem::take(&mut batch);
            let closing = staged.closing;
            drop(staged);
            if closing {
                return;
            }
            std::thread::sleep(RETRY_AFTER);
            continue;
        }
        if failing {
            tracing::info!("the log writes again");
            shared.lock().failing = false;
            failing = false;
        }
        let size = batch.len() as u64;
        shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
        shared.stats.writes.fetch_add(size, Ordering::Relaxed);
        shared
            .stats
            .largest_batch
            .fetch_max(size, Ordering::Relaxed);
        metrics::histogram!(crate::telemetry::GROUP_COMMIT_BATCH).record(size as f64);
        // On disk: the callers may answer while sled catches up. Until it
        // has, sections read these changes from the overlay, and other
        // readers wait (`Wal::caught_up`).
        shared.progress.send_modify(|p| p.durable = last);
        if applier
            .send(Job::Group(std::mem::take(&mut batch)))
            .is_err()
        {
            // The applier has stopped (it panicked): nothing reaches sled
            // any more, so readers waiting on it learn so; the log keeps
            // every segment for the next start to replay.
            shared.progress.send_modify(|p| {
                p.apply_failed = last;
                p.error = Some("the log's applier has stopped".into());
            });
        }
    }
}

/// Refuses to write when the data directory's disk is nearly full (see
/// [`MIN_FREE_BYTES`]), with the error a full disk gives.
pub(super) fn room_left(dir: &Path) -> std::io::Result<()> {
    let stats = rustix::fs::statvfs(dir)?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    // A filesystem that reports no size at all (some FUSE ones) says
    // nothing about space: write, and let a real error speak.
    if free >= MIN_FREE_BYTES || stats.f_blocks == 0 {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!(
            "the disk holding the data directory is full: {} KiB free, writes stop below {} MiB",
            free >> 10,
            MIN_FREE_BYTES >> 20
        ),
    ))
}

fn is_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
}

/// The segment the next `len` bytes go to: the current one while they fit,
/// else the spare the housekeeper prepared. The full one goes to the
/// applier for a checkpoint, which it passes on only if the log need not be
/// kept whole (see `apply::apply_loop`).
fn ready_segment<'a>(
    segment: &'a mut Option<Segment>,
    next_seq: &mut u64,
    dir: &Path,
    len: usize,
    housekeeper: &Housekeeper,
    applier: &mpsc::SyncSender<Job>,
) -> std::io::Result<&'a mut Segment> {
    let full = segment
        .as_ref()
        .is_some_and(|segment| !segment.fits(len) && !segment.is_empty());
    if full && let Some(sealed) = segment.take() {
        let _ = applier.send(Job::Checkpoint(sealed.seq));
    }
    if segment.is_none() {
        let spare = housekeeper
            .awaiting
            .replace(false)
            .then(|| housekeeper.spares.recv());
        let fresh = match spare {
            Some(Ok(Ok(spare))) if spare.seq == *next_seq => spare,
            // The spare could not be made (or is stale after a failure):
            // make one here, numbered past it.
            _ => {
                *next_seq += 1;
                Segment::create(dir, *next_seq, None)?
            }
        };
        *next_seq = fresh.seq + 1;
        housekeeper.prepare(*next_seq);
        *segment = Some(fresh);
    }
    Ok(segment.as_mut().expect("set above"))
}
