//! How long things are kept before the sweeper may remove them.

use chrono::{DateTime, TimeDelta, Utc};

use super::delivery::EARLY_STATUS_TTL;
use super::send::IDEMPOTENCY_TTL;
use super::window_events::{DEFAULT_RESUME_RETENTION, WindowChange};

/// How long a send rate is kept after its arrival time has passed: from
/// then on it says nothing (the next send starts afresh), so a day is only
/// slack for clocks and slow sweeps.
const SEND_RATES_KEPT: TimeDelta = TimeDelta::hours(24);

/// How long swept things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How long a closed window is kept before the pair reads NEVER_OPENED.
    pub closed_windows: TimeDelta,
    /// How long an inbound message id is remembered for dedupe (SPEC: at least 7 days).
    pub inbound_ids: TimeDelta,
    /// How far back a WatchWindows resume token is honoured.
    pub window_events: TimeDelta,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            closed_windows: TimeDelta::days(30),
            inbound_ids: TimeDelta::days(7),
            window_events: DEFAULT_RESUME_RETENTION,
        }
    }
}

/// The instants at or before which each kind of record may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Windows that expired at or before this.
    pub windows: DateTime<Utc>,
    /// Inbound ids first recorded at or before this.
    pub inbound_ids: DateTime<Utc>,
    /// Idempotency keys first used at or before this.
    pub idempotency_keys: DateTime<Utc>,
    /// Early statuses received at or before this.
    pub early_statuses: DateTime<Utc>,
    /// Window changes recorded before this: none can yield an event a
    /// resume token may still ask for.
    pub window_changes: DateTime<Utc>,
    /// Messaging-limit reaches made at or before this no longer count.
    pub reaches: DateTime<Utc>,
    /// Send rates whose arrival time is at or before this are dropped.
    pub send_rates: DateTime<Utc>,
}

impl Retention {
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        Cutoffs {
            windows: now - self.closed_windows,
            inbound_ids: now - self.inbound_ids,
            idempotency_keys: now - IDEMPOTENCY_TTL,
            early_statuses: now - EARLY_STATUS_TTL,
            window_changes: WindowChange::kept_from(now - self.window_events),
            reaches: now - super::messaging_limit::ROLLING,
            send_rates: now - SEND_RATES_KEPT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_changes_outlive_the_resume_retention_by_a_window() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let cutoffs = Retention::default().cutoffs(now);
        // A token from 24h ago still needs the changes whose windows were
        // open then: up to 24h (and clock skew) older again.
        assert_eq!(
            now - cutoffs.window_changes,
            TimeDelta::hours(48) + TimeDelta::minutes(5)
        );
        let longer = Retention {
            window_events: TimeDelta::days(3),
            ..Retention::default()
        };
        assert_eq!(
            now - longer.cutoffs(now).window_changes,
            TimeDelta::hours(96) + TimeDelta::minutes(5)
        );
    }
}
