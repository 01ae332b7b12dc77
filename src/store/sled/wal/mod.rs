//! wagate's own write-ahead log in front of sled.
//!
//! sled commits a multi-tree transaction under a process-wide lock and makes
//! it durable only with a flush that seals and writes its I/O buffers in the
//! caller: about 8k durable writes a second however many callers wait. Here
//! a use case instead stages its changes in memory under one short lock
//! ([`Section`]), and a single log thread appends every staged record to a
//! segment file, syncs it with one `fdatasync` for the whole group, tells
//! the callers, and hands the group to the applier, a thread that applies it
//! to sled (which is not flushed) while the log syncs the next group.
//! An answer always means "on disk". The apply is off the answer's path: a
//! read of sled first waits until sled holds everything that was durable
//! when the read began ([`Wal::caught_up`]), so a read after an answer still
//! finds the change.
//!
//! sled never holds a change the log has not made durable, so after a crash
//! sled holds a prefix of the logged records (possibly part of the last
//! one), and replaying every segment in order at start restores the rest:
//! records are absolute puts and removals, so a record sled already has is
//! harmless to apply again. Full segments are checkpointed in the background
//! once the applier has applied every record in them: sled is flushed, which
//! makes every record already applied durable there, and the segment is
//! deleted. A clean close does the same for the last one.
//!
//! Until a record is applied to sled, a [`Section`] finds its changes in an
//! in-memory overlay, so a use case always plans on the latest staged state.

mod apply;
mod housekeeper;
mod overlay;
mod record;
mod section;
mod segment;
mod writer;

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use apply::{GROUPS_AHEAD, apply};
use housekeeper::{Chore, Housekeeper, housekeep};
pub use record::Tree;
use record::{Next, Record};
pub use section::Section;
use segment::Segment;
use writer::{room_left, write_loop};

use super::Trees;
use crate::store::StoreError;

/// The free space below which the log stops writing, as if the disk were
/// full. sled keeps an I/O error for good once it has met one (every later
/// write fails with it until the process restarts), so the log must stop
/// feeding sled before sled's own writes can hit a full disk; with this
/// much left, sled can still write out what it was given.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCounts {
    /// Syncs (`fdatasync`) performed.
    pub flushes: u64,
    /// Records made durable by those syncs.
    pub writes: u64,
    /// The most records one sync covered.
    pub largest_batch: u64,
}

#[derive(Default)]
struct Stats {
    flushes: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

/// How far the log has got, for callers waiting on their record.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every record up to this lsn is on disk.
    durable: u64,
    /// Every record up to this lsn is in sled (never ahead of `durable`).
    applied: u64,
    /// The last record of the most recent write that failed.
    failed: u64,
    /// The last record of the most recent group sled refused: on disk (the
    /// next start applies it), not in sled.
    apply_failed: u64,
    /// Why the latest failure happened.
    error: Option<Arc<str>>,
}

impl Progress {
    fn error(&self) -> StoreError {
        let error = self.error.clone().unwrap_or_else(|| "write failed".into());
        StoreError::unavailable("log", error.to_string())
    }

    /// Whether sled refused a group since start. That group is only in the
    /// log, so no segment may be checkpointed away, at a full segment or at
    /// close: the next start replays them all.
    fn log_only(&self) -> bool {
        self.apply_failed != 0
    }
}

/// What the log lock guards.
#[derive(Default)]
struct Staged {
    /// What is staged and not yet applied to sled.
    overlay: overlay::Overlay,
    /// Records committed and not yet taken by the log thread.
    records: Vec<Record>,
    last_lsn: u64,
    closing: bool,
    failing: bool,
    /// Window-change stamps (microseconds) not yet durable and in sled,
    /// with the lsn of the record that carries each, oldest first; the log
    /// thread drops them as it applies their records.
    stamps: std::collections::VecDeque<(u64, i64)>,
    /// The latest stamp handed out, and the latest instant declared
    /// settled: the next stamp is after both.
    last_stamp: i64,
    settled: i64,
}

struct Shared {
    staged: Mutex<Staged>,
    wake: Condvar,
    trees: Arc<Trees>,
    progress: tokio::sync::watch::Sender<Progress>,
    stats: Stats,
    /// Held by a test to keep durable groups out of sled for a while.
    #[cfg(test)]
    apply_gate: Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Staged> {
        // A panic while holding the lock leaves the overlay as consistent
        // as it was (each change is one insert), so carry on.
        self.staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The log: owns the log thread, the applier and the background
/// housekeeper.
pub struct Wal {
    shared: Arc<Shared>,
    db: sled::Db,
    dir: PathBuf,
    writer: Option<JoinHandle<()>>,
    applier: Option<JoinHandle<()>>,
    housekeeper: Option<JoinHandle<()>>,
}

/// What replaying the log at start found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub segments: usize,
    pub records: u64,
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |error| StoreError::unavailable(what, error)
}

/// Replays every segment in `dir` into sled, flushes sled and deletes the
/// segments. Returns what it replayed and the number the next segment gets.
fn replay(db: &sled::Db, trees: &Trees, dir: &Path) -> Result<(Replayed, u64), StoreError> {
    let found = segment::list(dir).map_err(io_error("log"))?;
    let mut replayed = Replayed::default();
    for &seq in &found {
        let bytes = std::fs::read(segment::path(dir, seq)).map_err(io_error("log"))?;
        let mut offset = 0;
        let mut records = Vec::new();
        while let Next::Record(record, next) = record::decode(&bytes, offset)
            .map_err(|error| StoreError::corrupt("log", format!("segment {seq}: {error}")))?
        {
            records.push(record);
            offset = next;
        }
        // A segment at a time, so packed indexes take it bucket by bucket.
        apply(trees, records.iter().flat_map(|record| &record.changes))?;
        replayed.records += records.len() as u64;
        replayed.segments += 1;
    }
    if let Some(&last) = found.last() {
        db.flush()?;
        segment::remove_through(dir, last).map_err(io_error("log"))?;
    }
    Ok((replayed, found.last().map_or(1, |last| last + 1)))
}

impl Wal {
    /// Replays what an earlier process logged, then starts the log thread,
    /// the applier and the housekeeper.
    pub fn open(
        db: sled::Db,
        trees: Arc<Trees>,
        data_dir: &Path,
    ) -> Result<(Wal, Replayed), StoreError> {
        let dir = data_dir.join("wal");
        std::fs::create_dir_all(&dir).map_err(io_error("log"))?;
        let (replayed, first) = replay(&db, &trees, &dir)?;
        let segment = Segment::create(&dir, first, None).map_err(io_error("log"))?;
        let shared = Arc::new(Shared {
            staged: Mutex::default(),
            wake: Condvar::new(),
            trees,
            progress: tokio::sync::watch::Sender::new(Progress::default()),
            stats: Stats::default(),
            #[cfg(test)]
            apply_gate: Mutex::default(),
        });
        let (chores, chores_in) = mpsc::channel();
        let (spares, spares_in) = mpsc::channel();
        let housekeeper = {
            let (db, dir) = (db.clone(), dir.clone());
            std::thread::Builder::new()
                .name("wagate-wal-housekeeper".into())
                .spawn(move || housekeep(&db, &dir, &chores_in, &spares))
                .map_err(io_error("log housekeeper"))?
        };
        let (jobs, jobs_in) = mpsc::sync_channel(GROUPS_AHEAD);
        let applier = {
            let (shared, chores) = (shared.clone(), chores.clone());
            std::thread::Builder::new()
                .name("wagate-wal-apply".into())
                .spawn(move || apply::apply_loop(&shared, &jobs_in, &chores))
                .map_err(io_error("log applier"))?
        };
        let writer = {
            let shared = shared.clone();
            let dir = dir.clone();
            std::thread::Builder::new()
                .name("wagate-wal".into())
                .spawn(move || {
                    let housekeeper = Housekeeper {
                        chores,
                        spares: spares_in,
                        awaiting: false.into(),
                    };
                    housekeeper.prepare(first + 1);
                    write_loop(&shared, &dir, segment, &housekeeper, &jobs)
                })
                .map_err(io_error("log writer"))?
        };
        let wal = Wal {
            shared,
            db,
            dir,
            writer: Some(writer),
            applier: Some(applier),
            housekeeper: Some(housekeeper),
        };
        Ok((wal, replayed))
    }

    /// Opens a section: the one place changes are planned and staged.
    /// Refused while the log cannot write: only the group that met the
    /// failure waits to be retried, so nothing piles up in memory and a
    /// caller learns at once that its write was not taken.
    pub fn section(&self) -> Result<Section<'_>, StoreError> {
        let staged = self.shared.lock();
        if staged.failing {
            let error = self.shared.progress.borrow().error.clone();
            return Err(StoreError::unavailable(
                "log",
                error.map_or_else(|| "the log cannot write".to_owned(), |e| e.to_string()),
            ));
        }
        Ok(Section::new(staged, &self.shared))
    }

    /// Whether writes are being taken: an error saying why not while the
    /// log cannot write, sled refused a change, or the disk is too full for
    /// the next write (known before any write fails).
    pub fn health(&self) -> Result<(), StoreError> {
        room_left(&self.dir).map_err(|error| StoreError::unavailable("log", error.to_string()))?;
        let failing = self.shared.lock().failing;
        let progress = self.shared.progress.borrow();
        if failing || progress.apply_failed > progress.applied {
            return Err(progress.error());
        }
        Ok(())
    }

    /// Returns once every record up to `lsn` is on disk.
    pub async fn durable(&self, lsn: u64) -> Result<(), StoreError> {
        self.reached(lsn, |p| p.durable, |p| p.failed).await
    }

    /// Returns once every record up to `lsn` is on disk and in sled.
    pub async fn applied(&self, lsn: u64) -> Result<(), StoreError> {
        self.reached(lsn, |p| p.applied, |p| p.failed.max(p.apply_failed))
            .await
    }

    /// Waits until the watermark `mark` reaches `lsn` (then Ok) or the
    /// failure mark `failed` does (then the failure's error).
    async fn reached(
        &self,
        lsn: u64,
        mark: impl Fn(&Progress) -> u64,
        failed: impl Fn(&Progress) -> u64,
    ) -> Result<(), StoreError> {
        let mut progress = self.shared.progress.subscribe();
        let seen = progress
            .wait_for(|p| mark(p) >= lsn || failed(p) >= lsn)
            .await
            .map_err(|_| StoreError::unavailable("log", "the log thread has stopped"))?;
        if mark(&seen) >= lsn {
            return Ok(());
        }
        Err(seen.error())
    }

    /// sled's trees, once they hold every record that was durable when
    /// called: every change already answered. The only way to the trees
    /// outside a section (see `super::settled`). Usually sled is caught up
    /// and this only looks.
    pub async fn caught_up(&self) -> Result<Arc<Trees>, StoreError> {
        let behind = {
            let progress = self.shared.progress.borrow();
            (progress.applied < progress.durable).then_some(progress.durable)
        };
        if let Some(target) = behind {
            self.applied(target).await?;
        }
        Ok(self.shared.trees.clone())
    }

    /// Stamps come after every stamp already in the store.
    pub fn stamps_after(&self, micros: i64) {
        let mut staged = self.shared.lock();
        staged.last_stamp = staged.last_stamp.max(micros);
    }

    /// The instant through which every stamped change is durable and in
    /// sled (see [`Section::stamp`]): just before the oldest stamp still in
    /// flight, else now. No later section can stamp at or before it.
    pub fn settled(&self) -> DateTime<Utc> {
        let now = Utc::now().timestamp_micros();
        let mut staged = self.shared.lock();
        let settled = match staged.stamps.front() {
            Some(&(_, stamp)) => stamp - 1,
            None => now.max(staged.last_stamp),
        };
        staged.settled = staged.settled.max(settled);
        let settled = staged.settled;
        drop(staged);
        DateTime::from_timestamp_micros(settled).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The last lsn staged: waiting on it waits for everything staged so far.
    pub fn last_lsn(&self) -> u64 {
        self.shared.lock().last_lsn
    }

    /// Keeps the applier from applying another group until the guard is
    /// dropped: what is answered stays durable and out of sled meanwhile
    /// (only in the overlay).
    #[cfg(test)]
    pub fn hold_apply(&self) -> MutexGuard<'_, ()> {
        self.shared
            .apply_gate
            .lock()
            .expect("the gate is never poisoned")
    }

    pub fn counts(&self) -> CommitCounts {
        let stats = &self.shared.stats;
        CommitCounts {
            flushes: stats.flushes.load(Ordering::Relaxed),
            writes: stats.writes.load(Ordering::Relaxed),
            largest_batch: stats.largest_batch.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wal {
    /// Writes what is staged, then checkpoints: sled flushed, segments gone,
    /// so the next start has nothing to replay.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        // The writer drains what is staged and stops; the applier then
        // applies every group it was handed and stops, and only then can
        // the housekeeper's last checkpoint have run.
        let writer_ok = self
            .writer
            .take()
            .is_some_and(|writer| writer.join().is_ok());
        let applier_ok = self
            .applier
            .take()
            .is_some_and(|applier| applier.join().is_ok());
        if let Some(housekeeper) = self.housekeeper.take() {
            let _ = housekeeper.join();
        }
        let clean = writer_ok
            && applier_ok
            && !self.shared.lock().failing
            && !self.shared.progress.borrow().log_only();
        if !clean {
            tracing::warn!("the log did not close cleanly; the next start replays it");
            return;
        }
        let checkpointed = self
            .db
            .flush()
            .map(drop)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let last = segment::list(&self.dir).map_err(|e| e.to_string())?;
                match last.last() {
                    Some(&last) => {
                        segment::remove_through(&self.dir, last).map_err(|e| e.to_string())
                    }
                    None => Ok(()),
                }
            });
        if let Err(error) = checkpointed {
            tracing::warn!(%error, "closing checkpoint failed; the next start replays the log");
        }
    }
}

/// Writes log segments by hand, as a process that died before its
/// checkpoint would have left them.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// Writes segment `seq` under `data_dir` holding `records`, then
    /// `torn` bytes of one more record (a write the crash cut short).
    pub fn write_segment(data_dir: &Path, seq: u64, records: &[Record], torn: usize) {
        let dir = data_dir.join("wal");
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        for record in records {
            record::encode(record, &mut bytes);
        }
        let mut cut = Vec::new();
        record::encode(&records[0], &mut cut);
        bytes.extend_from_slice(&cut[..torn.min(cut.len() - 1)]);
        std::fs::write(segment::path(&dir, seq), bytes).unwrap();
    }

    pub fn segments(data_dir: &Path) -> Vec<u64> {
        segment::list(&data_dir.join("wal")).unwrap()
    }

    pub use super::record::{Change, Record};
}
