//! The applier: a thread of its own that applies each durable group to
//! sled, so that the log thread can write and sync the next group
//! meanwhile. On one thread a group's sync and its apply came one after
//! the other, and their sum bounded how many groups a second the log could
//! make durable; now the longer of the two does.
//!
//! It takes the groups in the order they were made durable, and a
//! checkpoint in its place among them: a full segment's checkpoint flushes
//! sled, which makes durable there only what was applied, so it goes to the
//! housekeeper only once every group before it is in sled, and never after a
//! group sled refused (that group lives only in the log).

use std::sync::mpsc;

use super::record::{Change, Record, Tree};
use super::{Chore, Shared};
use crate::store::sled::{Trees, packed};

/// What the log thread hands the applier, in log order.
pub(super) enum Job {
    /// A group just made durable.
    Group(Vec<Record>),
    /// Checkpoint segments up to this one, once the groups before are in sled.
    Checkpoint(u64),
}

/// The durable groups the log thread may hand over before it waits for the
/// applier: two keep both threads busy; few keep the overlay, and how far a
/// reader waiting in `Wal::caught_up` may be behind, small. With none, the
/// log thread would wait out each apply before handing over the next group
/// and sync no more often than with one thread (measured in BENCHMARKS.md).
/// Under a load the cores cannot carry, the log thread (and so every
/// writer) slows to the applier's pace instead of letting the overlay grow.
pub(super) const GROUPS_AHEAD: usize = 2;

/// Applies `changes` to sled: each in order, but a packed index's all
/// together, bucket by bucket (see `packed`), which is what makes packing
/// pay when `changes` are a whole group's.
pub(super) fn apply<'a>(
    trees: &Trees,
    changes: impl IntoIterator<Item = &'a Change>,
) -> sled::Result<()> {
    let mut packed_changes: Vec<&Change> = Vec::new();
    for change in changes {
        if packed::is_packed(change.tree) {
            packed_changes.push(change);
            continue;
        }
        let tree = trees.get(change.tree);
        match &change.value {
            Some(value) => tree.insert(&change.key, value.clone()).map(drop)?,
            None => tree.remove(&change.key).map(drop)?,
        }
    }
    for tree in Tree::ALL
        .into_iter()
        .filter(|tree| packed::is_packed(*tree))
    {
        let mine = packed_changes.iter().filter(|change| change.tree == tree);
        let mut mine = mine
            .map(|change| (change.key.as_slice(), &change.value))
            .peekable();
        if mine.peek().is_some() {
            packed::apply(trees.get(tree), mine)?;
        }
    }
    Ok(())
}

/// The applier's loop: until the log thread has stopped and every group it
/// handed over is applied.
pub(super) fn apply_loop(
    shared: &Shared,
    jobs: &mpsc::Receiver<Job>,
    chores: &mpsc::Sender<Chore>,
) {
    for job in jobs {
        match job {
            Job::Group(group) => apply_group(shared, &group),
            Job::Checkpoint(through) => {
                if !shared.progress.borrow().log_only() {
                    let _ = chores.send(Chore::Checkpoint(through));
                }
            }
        }
    }
}

/// Applies one durable group to sled, then lets its changes leave the
/// overlay and its stamps settle; or, if sled refuses it, marks it applied
/// nowhere but the log.
fn apply_group(shared: &Shared, group: &[Record]) {
    let Some(last) = group.last().map(|record| record.lsn) else {
        return;
    };
    #[cfg(test)]
    let _held = shared.apply_gate.lock();
    let applied = apply(
        &shared.trees,
        group.iter().flat_map(|record| &record.changes),
    );
    if applied.is_ok() {
        let mut staged = shared.lock();
        // Only what sled now has leaves the overlay: after a failed apply,
        // sections still read the logged values.
        for record in group {
            for change in &record.changes {
                staged.overlay.applied(record.lsn, change);
            }
        }
        // Their stamps are settled: sled has the changes.
        while staged.stamps.front().is_some_and(|&(lsn, _)| lsn <= last) {
            staged.stamps.pop_front();
        }
    }
    shared.progress.send_modify(|p| match &applied {
        Ok(()) => p.applied = last,
        Err(error) => {
            metrics::counter!(crate::telemetry::STORE_WRITE_FAILURES, "cause" => "apply")
                .increment(1);
            // On disk, so the next start applies it; not in sled now.
            p.apply_failed = last;
            p.error = Some(format!("applying the log to sled: {error}").into());
        }
    });
}
