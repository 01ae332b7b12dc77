//! The housekeeper: a thread that does the log's slow file work off the
//! log thread. It zero-fills and syncs the next segment before the current
//! one is full, and checkpoints full segments (flushes sled, then deletes
//! the segments whose records sled now holds durably).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::segment::{self, Segment};

/// The pause after each piece of a spare segment the housekeeper zero-fills
/// (64 pieces: the spare is ready in well under a second, long before a
/// busy log fills the current segment).
const SPARE_PAUSE: Duration = Duration::from_millis(2);

/// What the log thread and the applier ask of the housekeeper.
pub(super) enum Chore {
    /// Make segment `seq` ready and hand it back.
    Prepare(u64),
    /// Flush sled and delete segments up to this one.
    Checkpoint(u64),
}

/// The log thread's line to the housekeeper.
pub(super) struct Housekeeper {
    pub(super) chores: mpsc::Sender<Chore>,
    pub(super) spares: mpsc::Receiver<std::io::Result<Segment>>,
    /// Whether a spare was asked for and not yet taken.
    pub(super) awaiting: std::cell::Cell<bool>,
}

impl Housekeeper {
    pub(super) fn prepare(&self, seq: u64) {
        self.awaiting
            .set(self.chores.send(Chore::Prepare(seq)).is_ok());
    }
}

pub(super) fn housekeep(
    db: &sled::Db,
    dir: &Path,
    chores: &mpsc::Receiver<Chore>,
    spares: &mpsc::Sender<std::io::Result<Segment>>,
) {
    for chore in chores {
        match chore {
            Chore::Prepare(seq) => {
                if spares
                    .send(Segment::create(dir, seq, Some(SPARE_PAUSE)))
                    .is_err()
                {
                    return;
                }
            }
            Chore::Checkpoint(through) => {
                let done = db
                    .flush()
                    .map(drop)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        segment::remove_through(dir, through).map_err(|e| e.to_string())
                    });
                if let Err(error) = done {
                    // The segments stay; the next checkpoint or start covers them.
                    tracing::warn!(%error, through, "log checkpoint failed");
                }
            }
        }
    }
}
