//! The customer service window (SPEC §2): opened and extended by the
//! customer's inbound messages and calls, never shrunk by late ones.

use chrono::{DateTime, TimeDelta, Utc};

use super::error::{Reason, Rejection};
use super::phone::Pair;
use super::window_events::ChangeKind;

/// How long one inbound keeps the window open.
pub const WINDOW_LENGTH: TimeDelta = TimeDelta::hours(24);
/// How far ahead of the server clock a provider timestamp may be.
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);
/// How long a free entry point period lasts from the business's first reply.
pub const FREE_ENTRY_PERIOD: TimeDelta = TimeDelta::hours(72);

/// What the customer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    Message,
    VoiceCall,
}

/// How the customer reached the business. The ad and Page entry points make
/// the business's first reply start a free 72h period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    Organic,
    ClickToWhatsAppAd,
    FacebookPageCta,
}

impl EntryPoint {
    pub fn is_free(self) -> bool {
        !matches!(self, EntryPoint::Organic)
    }
}

/// One inbound message or call, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub received_at: DateTime<Utc>,
    pub kind: InboundKind,
    pub entry_point: EntryPoint,
}

impl Inbound {
    /// Resolves the provider's timestamp (default: `now`) and refuses one from
    /// further in the future than clock skew explains.
    pub fn new(
        received_at: Option<DateTime<Utc>>,
        kind: InboundKind,
        entry_point: EntryPoint,
        now: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        let received_at = received_at.unwrap_or(now);
        if received_at - now > MAX_FUTURE_SKEW {
            return Err(Rejection::new(
                Reason::ReceivedAtInFuture,
                format!(
                    "is {}s ahead of the server clock; at most {}s is allowed",
                    (received_at - now).num_seconds(),
                    MAX_FUTURE_SKEW.num_seconds()
                ),
            )
            .at("received_at"));
        }
        Ok(Inbound {
            received_at,
            kind,
            entry_point,
        })
    }
}

/// The stored window of one pair. A pair with no `Window` never opened one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub last_inbound_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set by an entry-point inbound: the business's next accepted send, if it
    /// comes before this instant, starts a free period.
    pub free_entry_deadline: Option<DateTime<Utc>>,
    pub free_until: Option<DateTime<Utc>>,
}

/// One customer's two windows, stored under two keys by older
/// phone-number rules (`+4402…` and `+442…`), as one: each instant the later
/// of the two, so the customer keeps whatever either window granted.
pub fn merge(a: &Window, b: &Window) -> Window {
    Window {
        last_inbound_at: a.last_inbound_at.max(b.last_inbound_at),
        expires_at: a.expires_at.max(b.expires_at),
        free_entry_deadline: a.free_entry_deadline.max(b.free_entry_deadline),
        free_until: a.free_until.max(b.free_until),
    }
}

/// A message id seen again: a retry for the same pair changes nothing; the
/// same id for another pair is a caller bug, refused rather than ignored.
pub fn repeated_inbound(recorded_for: &Pair, pair: &Pair) -> Result<InboundOutcome, Rejection> {
    if recorded_for == pair {
        return Ok(InboundOutcome::Duplicate);
    }
    Err(Rejection::new(
        Reason::InboundMessageIdReused,
        "was already recorded for a different business number or customer",
    )
    .at("message_id"))
}

/// What the store holds for one inbound: whether its message id was seen
/// (and for which pair) and the pair's window.
#[derive(Debug, Clone, Default)]
pub struct InboundSnapshot {
    pub seen_for: Option<Pair>,
    pub window: Option<Window>,
}

/// What recording one inbound writes and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPlan {
    pub outcome: InboundOutcome,
    /// The pair's window after the inbound, as answered.
    pub window: Option<Window>,
    /// The window to store, when it changed.
    pub write_window: Option<Window>,
    /// Remember the message id (with the inbound) for dedupe, as recorded
    /// at this instant; `None` for a repeat, which changes nothing.
    pub remember_at: Option<DateTime<Utc>>,
    /// Log the change for window events: the window opened or moved its
    /// expiry (not a change of the free entry deadline alone).
    pub log_change: Option<ChangeKind>,
}

impl InboundPlan {
    /// The change to log, with the window it left, when there is one.
    pub fn logged_change(&self) -> Option<(ChangeKind, &Window)> {
        self.log_change.zip(self.write_window.as_ref())
    }
}

/// Plans recording `inbound` with message id already looked up in `seen`.
pub fn plan_inbound(
    seen: &InboundSnapshot,
    pair: &Pair,
    inbound: &Inbound,
    now: DateTime<Utc>,
) -> Result<InboundPlan, Rejection> {
    if let Some(recorded_for) = &seen.seen_for {
        return Ok(InboundPlan {
            outcome: repeated_inbound(recorded_for, pair)?,
            window: seen.window.clone(),
            write_window: None,
            remember_at: None,
            log_change: None,
        });
    }
    let (changed, outcome) = Window::record_inbound(seen.window.as_ref(), inbound, now);
    let log_change = match outcome {
        InboundOutcome::Opened => Some(ChangeKind::Opened),
        InboundOutcome::Extended => Some(ChangeKind::Extended),
        _ => None,
    };
    Ok(InboundPlan {
        log_change,
        outcome,
        window: changed.clone().or_else(|| seen.window.clone()),
        write_window: changed,
        remember_at: Some(now),
    })
}

/// What recording an inbound changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    Opened,
    Extended,
    Unchanged,
    TooOld,
    Duplicate,
}

impl InboundOutcome {
    /// As the API's enum names it, without its prefix: `OPENED`.
    pub fn as_str(self) -> &'static str {
        match self {
            InboundOutcome::Opened => "OPENED",
            InboundOutcome::Extended => "EXTENDED",
            InboundOutcome::Unchanged => "UNCHANGED",
            InboundOutcome::TooOld => "TOO_OLD",
            InboundOutcome::Duplicate => "DUPLICATE",
        }
    }
}

/// Whether free-form messages may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    Open,
    Closed,
    NeverOpened,
}

/// A window as seen at one instant, what GetWindow answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowView {
    pub state: WindowState,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub remaining: TimeDelta,
    pub free_until: Option<DateTime<Utc>>,
}

impl Window {
    /// Open while `now < expires_at`: closed at exactly 24h.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    pub fn in_free_period(&self, now: DateTime<Utc>) -> bool {
        self.free_until.is_some_and(|until| now < until)
    }

    /// Applies an inbound to the pair's window (`None`: never opened).
    /// Returns the window to store, if it changed, and what happened.
    pub fn record_inbound(
        current: Option<&Window>,
        inbound: &Inbound,
        now: DateTime<Utc>,
    ) -> (Option<Window>, InboundOutcome) {
        let inbound_expiry = inbound.received_at + WINDOW_LENGTH;
        if inbound_expiry <= now {
            // Recorded for dedupe by the caller, but it opens nothing.
            return (None, InboundOutcome::TooOld);
        }
        let free_entry_deadline = inbound.entry_point.is_free().then_some(inbound_expiry);
        let Some(current) = current else {
            let opened = Window {
                last_inbound_at: inbound.received_at,
                expires_at: inbound_expiry,
                free_entry_deadline,
                free_until: None,
            };
            return (Some(opened), InboundOutcome::Opened);
        };
        let next = Window {
            last_inbound_at: current.last_inbound_at.max(inbound.received_at),
            expires_at: current.expires_at.max(inbound_expiry),
            free_entry_deadline: current.free_entry_deadline.max(free_entry_deadline),
            free_until: current.free_until,
        };
        let outcome = if !current.is_open(now) {
            InboundOutcome::Opened
        } else if next.expires_at > current.expires_at {
            InboundOutcome::Extended
        } else {
            InboundOutcome::Unchanged
        };
        let changed = (next != *current).then_some(next);
        (changed, outcome)
    }

    /// The window after the business's send at `now` was accepted: the first
    /// send after an entry-point inbound, within that inbound's 24h, starts
    /// the free period; any later send finds the deadline consumed.
    pub fn after_accepted_send(&self, now: DateTime<Utc>) -> Option<Window> {
        let deadline = self.free_entry_deadline?;
        let free_until = if now < deadline {
            Some(now + FREE_ENTRY_PERIOD)
        } else {
            self.free_until
        };
        Some(Window {
            free_entry_deadline: None,
            free_until,
            ..self.clone()
        })
    }

    pub fn view(window: Option<&Window>, now: DateTime<Utc>) -> WindowView {
        let Some(window) = window else {
            return WindowView {
                state: WindowState::NeverOpened,
                last_inbound_at: None,
                expires_at: None,
                remaining: TimeDelta::zero(),
                free_until: None,
            };
        };
        let open = window.is_open(now);
        WindowView {
            state: if open {
                WindowState::Open
            } else {
                WindowState::Closed
            },
            last_inbound_at: Some(window.last_inbound_at),
            expires_at: Some(window.expires_at),
            remaining: if open {
                window.expires_at - now
            } else {
                TimeDelta::zero()
            },
            free_until: window.free_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    fn msg(received_at: DateTime<Utc>) -> Inbound {
        Inbound {
            received_at,
            kind: InboundKind::Message,
            entry_point: EntryPoint::Organic,
        }
    }

    #[test]
    fn merged_windows_keep_what_either_granted() {
        let h = |hours| t0() + TimeDelta::hours(hours);
        let older = Window {
            last_inbound_at: h(0),
            expires_at: h(72),
            free_entry_deadline: Some(h(24)),
            free_until: Some(h(72)),
        };
        let newer = Window {
            last_inbound_at: h(10),
            expires_at: h(34),
            free_entry_deadline: None,
            free_until: None,
        };
        let merged = Window {
            last_inbound_at: h(10),
            expires_at: h(72),
            free_entry_deadline: Some(h(24)),
            free_until: Some(h(72)),
        };
        assert_eq!(merge(&older, &newer), merged);
        assert_eq!(merge(&newer, &older), merged, "in either order");
        assert_eq!(merge(&newer, &newer), newer);
    }

    fn ad(received_at: DateTime<Utc>) -> Inbound {
        Inbound {
            entry_point: EntryPoint::ClickToWhatsAppAd,
            ..msg(received_at)
        }
    }

    fn open_at(at: DateTime<Utc>) -> Window {
        Window::record_inbound(None, &msg(at), at).0.unwrap()
    }

    #[test]
    fn first_inbound_opens_for_24h() {
        let (window, outcome) = Window::record_inbound(None, &msg(t0()), t0());
        let window = window.unwrap();
        assert_eq!(outcome, InboundOutcome::Opened);
        assert_eq!(window.expires_at, t0() + TimeDelta::hours(24));
        assert_eq!(window.last_inbound_at, t0());
        assert_eq!(window.free_entry_deadline, None);
    }

    #[test]
    fn closed_at_exactly_24h() {
        let window = open_at(t0());
        let almost = t0() + TimeDelta::hours(24) - TimeDelta::milliseconds(1);
        assert!(window.is_open(almost));
        assert!(!window.is_open(t0() + TimeDelta::hours(24)));
        let view = Window::view(Some(&window), t0() + TimeDelta::hours(24));
        assert_eq!(view.state, WindowState::Closed);
        assert_eq!(view.remaining, TimeDelta::zero());
        assert_eq!(
            Window::view(Some(&window), almost).remaining,
            TimeDelta::milliseconds(1)
        );
    }

    #[test]
    fn later_inbound_extends() {
        let window = open_at(t0());
        let later = t0() + TimeDelta::hours(3);
        let (next, outcome) = Window::record_inbound(Some(&window), &msg(later), later);
        let next = next.unwrap();
        assert_eq!(outcome, InboundOutcome::Extended);
        assert_eq!(next.expires_at, later + TimeDelta::hours(24));
        assert_eq!(next.last_inbound_at, later);
    }

    #[test]
    fn out_of_order_inbound_never_shrinks() {
        let later = t0() + TimeDelta::hours(3);
        let window = open_at(later);
        let now = later + TimeDelta::minutes(1);
        let (next, outcome) = Window::record_inbound(Some(&window), &msg(t0()), now);
        assert_eq!(outcome, InboundOutcome::Unchanged);
        assert_eq!(next, None, "nothing to store");
    }

    #[test]
    fn late_inbound_within_24h_reopens_a_closed_window() {
        let window = open_at(t0());
        let now = t0() + TimeDelta::hours(30);
        let late = t0() + TimeDelta::hours(10);
        let (next, outcome) = Window::record_inbound(Some(&window), &msg(late), now);
        assert_eq!(outcome, InboundOutcome::Opened);
        assert_eq!(next.unwrap().expires_at, late + TimeDelta::hours(24));
    }

    #[test]
    fn inbound_older_than_24h_opens_nothing() {
        let now = t0() + TimeDelta::hours(24);
        let (next, outcome) = Window::record_inbound(None, &msg(t0()), now);
        assert_eq!((next, outcome), (None, InboundOutcome::TooOld));
        let one_ms_younger = t0() + TimeDelta::milliseconds(1);
        let (next, outcome) = Window::record_inbound(None, &msg(one_ms_younger), now);
        assert_eq!(outcome, InboundOutcome::Opened);
        assert!(next.unwrap().is_open(now));
    }

    #[test]
    fn future_skew_up_to_5_minutes_is_accepted() {
        let at_limit = t0() + TimeDelta::minutes(5);
        let inbound = Inbound::new(
            Some(at_limit),
            InboundKind::Message,
            EntryPoint::Organic,
            t0(),
        )
        .unwrap();
        assert_eq!(inbound.received_at, at_limit);
        let beyond = at_limit + TimeDelta::milliseconds(1);
        let err = Inbound::new(
            Some(beyond),
            InboundKind::Message,
            EntryPoint::Organic,
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.reason, Reason::ReceivedAtInFuture);
        assert_eq!(err.field.as_deref(), Some("received_at"));
    }

    #[test]
    fn missing_received_at_means_now() {
        let inbound =
            Inbound::new(None, InboundKind::VoiceCall, EntryPoint::Organic, t0()).unwrap();
        assert_eq!(inbound.received_at, t0());
    }

    #[test]
    fn voice_call_opens_like_a_message() {
        let call = Inbound {
            kind: InboundKind::VoiceCall,
            ..msg(t0())
        };
        assert_eq!(
            Window::record_inbound(None, &call, t0()),
            Window::record_inbound(None, &msg(t0()), t0())
        );
    }

    #[test]
    fn reply_within_entry_inbound_window_starts_72h_free_period() {
        let (window, _) = Window::record_inbound(None, &ad(t0()), t0());
        let window = window.unwrap();
        assert_eq!(
            window.free_entry_deadline,
            Some(t0() + TimeDelta::hours(24))
        );
        let reply = t0() + TimeDelta::hours(2);
        let after = window.after_accepted_send(reply).unwrap();
        assert_eq!(after.free_until, Some(reply + TimeDelta::hours(72)));
        assert_eq!(after.free_entry_deadline, None);
        assert!(after.in_free_period(reply + TimeDelta::hours(71)));
        assert!(!after.in_free_period(reply + TimeDelta::hours(72)));
        // Only the first reply starts it: a second send changes nothing.
        assert_eq!(after.after_accepted_send(reply + TimeDelta::hours(1)), None);
    }

    #[test]
    fn reply_after_entry_inbound_window_starts_nothing() {
        let window = Window::record_inbound(None, &ad(t0()), t0()).0.unwrap();
        let late = window
            .after_accepted_send(t0() + TimeDelta::hours(24))
            .unwrap();
        assert_eq!(late.free_until, None);
        assert_eq!(late.free_entry_deadline, None);
    }

    #[test]
    fn organic_window_has_no_free_period() {
        assert_eq!(open_at(t0()).after_accepted_send(t0()), None);
        let facebook = Inbound {
            entry_point: EntryPoint::FacebookPageCta,
            ..msg(t0())
        };
        let window = Window::record_inbound(None, &facebook, t0()).0.unwrap();
        assert!(
            window
                .after_accepted_send(t0())
                .unwrap()
                .free_until
                .is_some()
        );
    }

    #[test]
    fn entry_point_on_an_open_window_is_remembered_even_if_expiry_unchanged() {
        let window = open_at(t0() + TimeDelta::hours(1));
        let now = t0() + TimeDelta::hours(2);
        let (next, outcome) = Window::record_inbound(Some(&window), &ad(t0()), now);
        assert_eq!(outcome, InboundOutcome::Unchanged);
        assert_eq!(
            next.unwrap().free_entry_deadline,
            Some(t0() + TimeDelta::hours(24))
        );
    }

    #[test]
    fn repeated_inbound_is_a_duplicate_only_for_its_own_pair() {
        let phone = |s: &str| crate::domain::PhoneNumber::parse(s).unwrap();
        let pair = Pair {
            business: phone("+15550001111"),
            customer: phone("+27821234567"),
        };
        assert_eq!(
            repeated_inbound(&pair, &pair.clone()),
            Ok(InboundOutcome::Duplicate)
        );
        let other = Pair {
            customer: phone("+27820000000"),
            ..pair.clone()
        };
        let err = repeated_inbound(&pair, &other).unwrap_err();
        assert_eq!(
            (err.reason, err.field.as_deref()),
            (Reason::InboundMessageIdReused, Some("message_id"))
        );
    }

    #[test]
    fn never_opened_view() {
        let view = Window::view(None, t0());
        assert_eq!(view.state, WindowState::NeverOpened);
        assert_eq!((view.expires_at, view.last_inbound_at), (None, None));
    }

    proptest! {
        /// Whatever order inbounds arrive in, expires_at never decreases and
        /// ends at the latest inbound's 24h (when any was young enough).
        #[test]
        fn expiry_never_decreases(
            offsets in proptest::collection::vec((0i64..200_000, 0i64..200_000), 1..40),
        ) {
            let mut window: Option<Window> = None;
            let mut latest_expiry: Option<DateTime<Utc>> = None;
            for (received, delay) in offsets {
                let received_at = t0() + TimeDelta::seconds(received);
                let now = received_at + TimeDelta::seconds(delay);
                let before = window.as_ref().map(|w| w.expires_at);
                let (next, _) = Window::record_inbound(window.as_ref(), &msg(received_at), now);
                if let Some(next) = next {
                    window = Some(next);
                }
                let after = window.as_ref().map(|w| w.expires_at);
                prop_assert!(after >= before, "{after:?} < {before:?}");
                if received_at + WINDOW_LENGTH > now {
                    latest_expiry = latest_expiry.max(Some(received_at + WINDOW_LENGTH));
                    prop_assert_eq!(after, latest_expiry);
                }
            }
        }
    }
}
