//! Group commit: writers apply their change in memory, then wait here for a
//! flush. One flusher task takes every waiter that arrived while the previous
//! flush ran and covers them all with a single `fsync`, so concurrent writers
//! share the cost instead of paying one fsync each.
//!
//! Waiters bring the database handle with them, so the flusher holds none
//! between batches and the database closes as soon as the store is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

type Waiter = (sled::Db, oneshot::Sender<Result<(), String>>);

/// Counters that show group commit at work.
#[derive(Debug, Default)]
pub struct CommitStats {
    flushes: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

/// A snapshot of [`CommitStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCounts {
    /// Flushes (fsyncs) performed.
    pub flushes: u64,
    /// Writes made durable by those flushes.
    pub writes: u64,
    /// The most writes one flush covered.
    pub largest_batch: u64,
}

impl CommitStats {
    pub fn snapshot(&self) -> CommitCounts {
        CommitCounts {
            flushes: self.flushes.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone)]
pub struct GroupCommit {
    db: sled::Db,
    waiters: mpsc::UnboundedSender<Waiter>,
    stats: Arc<CommitStats>,
}

impl GroupCommit {
    /// Starts the flusher task on the current tokio runtime.
    pub fn start(db: sled::Db) -> Self {
        let (waiters, mut incoming) = mpsc::unbounded_channel::<Waiter>();
        let stats = Arc::new(CommitStats::default());
        let task_stats = stats.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while incoming.recv_many(&mut batch, usize::MAX).await > 0 {
                let db: sled::Db = batch[0].0.clone();
                let result = tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|flushed| flushed.map(drop).map_err(|e| e.to_string()));
                let size = batch.len() as u64;
                task_stats.flushes.fetch_add(1, Ordering::Relaxed);
                task_stats.writes.fetch_add(size, Ordering::Relaxed);
                task_stats.largest_batch.fetch_max(size, Ordering::Relaxed);
                metrics::histogram!(crate::telemetry::GROUP_COMMIT_BATCH).record(size as f64);
                for (_, waiter) in batch.drain(..) {
                    // A waiter whose RPC was cancelled has gone; nothing to tell it.
                    let _ = waiter.send(result.clone());
                }
            }
        });
        GroupCommit { db, waiters, stats }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn durable(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.waiters
            .send((self.db.clone(), done))
            .map_err(|_| "the flusher has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the flusher has stopped".to_owned())?
    }

    pub fn stats(&self) -> CommitCounts {
        self.stats.snapshot()
    }
}
