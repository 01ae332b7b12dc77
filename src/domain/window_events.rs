//! Window events (WatchWindows): what happened to a window, and when.
//!
//! A store keeps one thing: a log of window changes, each an inbound that
//! opened or extended a window, stamped by the store with the instant it
//! was recorded and an id that orders changes recorded in the same
//! microsecond. Every event is a pure function of that log:
//!
//! - OPENED / EXTENDED at the change's own instant;
//! - CLOSING for each lead at `expires_at - lead`, and CLOSED at
//!   `expires_at`, unless the pair's next change was recorded at or before
//!   that instant (the state was superseded: no CLOSING for a window that
//!   was extended first; an extension at the very instant of a lead point
//!   wins). A point already past when the change was recorded (an inbound
//!   whose own timestamp is hours old) fires at the change's instant.
//!
//! Events are totally ordered by [`EventKey`], so a watcher's position is
//! one key, a resume token names it, and reading the log again from a key
//! yields the same events after it: none lost, none twice.

use chrono::{DateTime, TimeDelta, Utc};

use super::error::{Reason, Rejection};
use super::phone::{Pair, PhoneNumber};
use super::window::{MAX_FUTURE_SKEW, WINDOW_LENGTH, Window};

/// At most this many closing leads per watcher.
pub const MAX_LEADS: usize = 4;
pub const MIN_LEAD: TimeDelta = TimeDelta::minutes(1);
pub const MAX_LEAD: TimeDelta = TimeDelta::hours(23);
/// How far back a resume token is honoured by default.
pub const DEFAULT_RESUME_RETENTION: TimeDelta = TimeDelta::hours(24);

/// What an inbound did to a window, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Opened,
    Extended,
}

/// One logged change: the pair's window as it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowChange {
    /// Orders changes within one microsecond; unique in a store.
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    pub pair: Pair,
    pub kind: ChangeKind,
    pub window: Window,
}

impl WindowChange {
    pub fn position(&self) -> ChangePosition {
        ChangePosition {
            at: self.recorded_at,
            id: self.id,
        }
    }

    /// Where the log is kept from: a change older than this can no longer
    /// yield an event at or after `resumable_from` (a window lasts at most
    /// 24 hours and clock skew past the instant it was recorded).
    pub fn kept_from(resumable_from: DateTime<Utc>) -> DateTime<Utc> {
        resumable_from - WINDOW_LENGTH - MAX_FUTURE_SKEW
    }
}

/// The log's two orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrder {
    /// By (recorded_at, id): where OPENED and EXTENDED come from.
    Recorded,
    /// By (window expires_at, id): where CLOSING and CLOSED come from.
    Expiring,
}

/// A place in one of the log's two orders: (recorded_at, id) or
/// (expires_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangePosition {
    pub at: DateTime<Utc>,
    pub id: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WindowEventType {
    Opened,
    Extended,
    Closing,
    Closed,
}

impl WindowEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowEventType::Opened => "OPENED",
            WindowEventType::Extended => "EXTENDED",
            WindowEventType::Closing => "CLOSING",
            WindowEventType::Closed => "CLOSED",
        }
    }

    /// Orders events of one change at one instant: the change, then its
    /// lead points, then its close.
    fn rank(self) -> u8 {
        match self {
            WindowEventType::Opened | WindowEventType::Extended => 0,
            WindowEventType::Closing => 1,
            WindowEventType::Closed => 2,
        }
    }
}

/// An event's place in the stream: when it occurred, then the change it
/// comes from, then its type and lead. Unique per watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub at: DateTime<Utc>,
    pub change: i64,
    pub rank: u8,
    pub lead_micros: i64,
}

impl EventKey {
    /// The key just before every event at or after `at`.
    pub fn before(at: DateTime<Utc>) -> EventKey {
        EventKey {
            at,
            change: i64::MIN,
            rank: 0,
            lead_micros: i64::MIN,
        }
    }

    /// The key after every event at or before `at`.
    pub fn through(at: DateTime<Utc>) -> EventKey {
        EventKey {
            at,
            change: i64::MAX,
            rank: u8::MAX,
            lead_micros: i64::MAX,
        }
    }

    /// Through every event of the change at `position` (in its order).
    fn through_change(position: ChangePosition) -> EventKey {
        EventKey {
            at: position.at,
            change: position.id,
            rank: u8::MAX,
            lead_micros: i64::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEvent {
    pub key: EventKey,
    pub kind: WindowEventType,
    /// The change it comes from, in record order.
    pub change: ChangePosition,
    pub pair: Pair,
    /// The window as the change left it.
    pub window: Window,
    /// For CLOSING: the lead that fired.
    pub lead: Option<TimeDelta>,
}

impl WindowEvent {
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.key.at
    }

    fn new(
        change: &WindowChange,
        kind: WindowEventType,
        at: DateTime<Utc>,
        lead: Option<TimeDelta>,
    ) -> Self {
        WindowEvent {
            key: EventKey {
                at,
                change: change.id,
                rank: kind.rank(),
                lead_micros: lead.map_or(0, |lead| lead.num_microseconds().unwrap_or(i64::MAX)),
            },
            kind,
            change: change.position(),
            pair: change.pair.clone(),
            window: change.window.clone(),
            lead,
        }
    }

    /// Whether this event is a point in the window's life (CLOSING,
    /// CLOSED), which a later change can supersede, rather than a change.
    pub fn is_point(&self) -> bool {
        matches!(
            self.kind,
            WindowEventType::Closing | WindowEventType::Closed
        )
    }

    /// Whether this event stands for a state the pair had already left:
    /// a CLOSING or CLOSED whose window the pair's next change (recorded at
    /// `next_change_at`) extended at or before the instant it would fire.
    pub fn superseded(&self, next_change_at: Option<DateTime<Utc>>) -> bool {
        self.is_point() && next_change_at.is_some_and(|next| next <= self.key.at)
    }
}

/// The closing leads a watcher asked for: up to four, each from one
/// minute to 23 hours, no two alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leads(Vec<TimeDelta>);

impl Leads {
    pub fn new(leads: Vec<TimeDelta>) -> Result<Leads, Rejection> {
        if leads.len() > MAX_LEADS {
            return Err(Rejection::new(
                Reason::InvalidClosingLead,
                format!(
                    "holds {} leads; at most {MAX_LEADS} are allowed",
                    leads.len()
                ),
            )
            .at("closing_leads"));
        }
        for (i, lead) in leads.iter().enumerate() {
            let field = format!("closing_leads[{i}]");
            if *lead < MIN_LEAD || *lead > MAX_LEAD {
                return Err(Rejection::new(
                    Reason::InvalidClosingLead,
                    format!(
                        "is {}s; a lead must be from 1 minute to 23 hours",
                        lead.num_seconds()
                    ),
                )
                .at(field));
            }
            if leads[..i].contains(lead) {
                return Err(
                    Rejection::new(Reason::InvalidClosingLead, "repeats an earlier lead").at(field),
                );
            }
        }
        Ok(Leads(leads))
    }

    pub fn as_slice(&self) -> &[TimeDelta] {
        &self.0
    }
}

/// What one watcher follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Empty: every business number.
    pub businesses: Vec<PhoneNumber>,
    pub leads: Leads,
}

impl WatchFilter {
    pub fn follows(&self, pair: &Pair) -> bool {
        self.businesses.is_empty() || self.businesses.contains(&pair.business)
    }

    /// The points read from the expiry order: each lead, then the close
    /// (`None`).
    pub fn points(&self) -> impl Iterator<Item = Option<TimeDelta>> + '_ {
        self.leads
            .as_slice()
            .iter()
            .copied()
            .map(Some)
            .chain([None])
    }
}

fn point_kind(lead: Option<TimeDelta>) -> WindowEventType {
    if lead.is_some() {
        WindowEventType::Closing
    } else {
        WindowEventType::Closed
    }
}

/// The instant a point falls at, before any catching up with the record.
fn point_at(change: &WindowChange, lead: Option<TimeDelta>) -> DateTime<Utc> {
    change.window.expires_at - lead.unwrap_or(TimeDelta::zero())
}

/// Events of `change` at the instant it was recorded: the change itself,
/// and every point (lead or close) that was already due then.
pub fn events_at_record(change: &WindowChange, filter: &WatchFilter) -> Vec<WindowEvent> {
    let kind = match change.kind {
        ChangeKind::Opened => WindowEventType::Opened,
        ChangeKind::Extended => WindowEventType::Extended,
    };
    let mut events = vec![WindowEvent::new(change, kind, change.recorded_at, None)];
    for lead in filter.points() {
        if point_at(change, lead) < change.recorded_at {
            events.push(WindowEvent::new(
                change,
                point_kind(lead),
                change.recorded_at,
                lead,
            ));
        }
    }
    events
}

/// The event of `change` at `lead`'s point (`None`: the close), when the
/// point comes at or after the record; earlier points are
/// [`events_at_record`]'s.
pub fn event_at_point(change: &WindowChange, lead: Option<TimeDelta>) -> Option<WindowEvent> {
    let at = point_at(change, lead);
    (at >= change.recorded_at).then(|| WindowEvent::new(change, point_kind(lead), at, lead))
}

/// One read of the log for a watcher: the changes recorded after its
/// position, and for each point (as [`WatchFilter::points`] orders them)
/// the changes whose point falls after it, each read at most `limit` rows.
/// A read that filled its limit stopped there, so events past its last row
/// are not known yet. A read starts at the watcher's own change
/// (inclusive), so a limit of at least 2 rows is what guarantees each read
/// moves the watcher on.
#[derive(Debug)]
pub struct LogRead {
    pub limit: usize,
    pub recorded: Vec<WindowChange>,
    pub by_point: Vec<Vec<WindowChange>>,
}

/// Where each read must start for a watcher at `after`: the changes from
/// `after`'s change in record order, and for each point from the change
/// whose point is `after` in expiry order.
pub fn read_from(after: &EventKey, filter: &WatchFilter) -> (ChangePosition, Vec<ChangePosition>) {
    let recorded = ChangePosition {
        at: after.at,
        id: after.change,
    };
    let points = filter
        .points()
        .map(|lead| ChangePosition {
            at: after.at + lead.unwrap_or(TimeDelta::zero()),
            id: after.change,
        })
        .collect();
    (recorded, points)
}

/// The events of `read` after `after`, through `horizon`, in order, with
/// the key they reach: every event up to it is among them (or filtered
/// out), so the watcher moves there. Superseded ones are still in; the
/// caller drops them once it knows each pair's next change.
pub fn candidates(
    after: &EventKey,
    horizon: DateTime<Utc>,
    filter: &WatchFilter,
    read: &LogRead,
) -> (Vec<WindowEvent>, EventKey) {
    let full = |rows: &[WindowChange]| rows.len() >= read.limit;
    let mut reach = EventKey::through(horizon);
    if full(&read.recorded)
        && let Some(last) = read.recorded.last()
    {
        reach = reach.min(EventKey::through_change(last.position()));
    }
    let mut events: Vec<WindowEvent> = read
        .recorded
        .iter()
        .filter(|change| filter.follows(&change.pair))
        .flat_map(|change| events_at_record(change, filter))
        .collect();
    for (rows, lead) in read.by_point.iter().zip(filter.points()) {
        if full(rows)
            && let Some(last) = rows.last()
        {
            let last_at = point_at(last, lead);
            reach = reach.min(EventKey::through_change(ChangePosition {
                at: last_at,
                id: last.id,
            }));
        }
        events.extend(
            rows.iter()
                .filter(|change| filter.follows(&change.pair))
                .filter_map(|change| event_at_point(change, lead)),
        );
    }
    events.retain(|event| event.key > *after && event.key <= reach);
    // Keys are unique: each names its change, type and lead.
    events.sort_by_key(|event| event.key);
    (events, reach)
}

#[cfg(test)]
mod tests;
