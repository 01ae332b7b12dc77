//! Which stored windows ListWindows returns, as one range of expiry times:
//! the states asked for are a statement about expiry at the moment of the
//! call (open: expires after now; closed: expired at or before now), so
//! every filter narrows the same range and a store needs one index scan.

use chrono::{DateTime, TimeDelta, Utc};

use super::error::{Reason, Rejection};
use super::phone::{Pair, PhoneNumber};
use super::window::WindowState;

/// Windows expiring in `[from, to)`, of one business or of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowQuery {
    pub business: Option<PhoneNumber>,
    /// Inclusive; `None`: from the earliest.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive; `None`: to the latest.
    pub to: Option<DateTime<Utc>>,
}

/// Where a page ended: the last window handed out, in listing order
/// (expiry, then business and customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCursor {
    pub expires_at: DateTime<Utc>,
    pub pair: Pair,
}

impl WindowQuery {
    /// `expires_after` and `expires_before` are exclusive bounds, and every
    /// time is at the stored precision (microseconds), so one microsecond
    /// past a bound is the first instant inside it.
    pub fn new(
        business: Option<PhoneNumber>,
        states: &[WindowState],
        expires_after: Option<DateTime<Utc>>,
        expires_before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<WindowQuery, Rejection> {
        let tick = TimeDelta::microseconds(1);
        if states.contains(&WindowState::NeverOpened) {
            return Err(Rejection::new(
                Reason::InvalidWindowFilter,
                "may hold WINDOW_STATE_OPEN and WINDOW_STATE_CLOSED only: a window never opened is not stored",
            )
            .at("states"));
        }
        let open = states.contains(&WindowState::Open);
        let closed = states.contains(&WindowState::Closed);
        let mut from = expires_after.map(|after| after + tick);
        let mut to = expires_before;
        // Open now: expires after now. Closed now: expired at or before now.
        if open && !closed {
            from = Some(from.map_or(now + tick, |from| from.max(now + tick)));
        }
        if closed && !open {
            to = Some(to.map_or(now + tick, |to| to.min(now + tick)));
        }
        Ok(WindowQuery { business, from, to })
    }

    /// Whether a window of `pair` expiring at `expires_at` is listed.
    pub fn matches(&self, pair: &Pair, expires_at: DateTime<Utc>) -> bool {
        self.business.as_ref().is_none_or(|b| *b == pair.business)
            && self.from.is_none_or(|from| expires_at >= from)
            && self.to.is_none_or(|to| expires_at < to)
    }

    /// Whether nothing can match (a range that ends before it starts).
    pub fn is_empty(&self) -> bool {
        matches!((self.from, self.to), (Some(from), Some(to)) if from >= to)
    }
}

impl WindowCursor {
    /// Whether a window comes after the cursor in listing order.
    pub fn precedes(&self, expires_at: DateTime<Utc>, pair: &Pair) -> bool {
        (
            self.expires_at,
            self.pair.business.as_str(),
            self.pair.customer.as_str(),
        ) < (expires_at, pair.business.as_str(), pair.customer.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, hour, 0, 0).unwrap()
    }

    fn pair(business: &str, customer: &str) -> Pair {
        Pair {
            business: PhoneNumber::parse(business).unwrap(),
            customer: PhoneNumber::parse(customer).unwrap(),
        }
    }

    #[test]
    fn states_are_statements_about_expiry_now() {
        let now = at(12);
        let p = pair("+15550001111", "+27821234567");
        let open = WindowQuery::new(None, &[WindowState::Open], None, None, now).unwrap();
        assert!(open.matches(&p, now + TimeDelta::microseconds(1)));
        assert!(!open.matches(&p, now), "a window expiring now is closed");
        let closed = WindowQuery::new(None, &[WindowState::Closed], None, None, now).unwrap();
        assert!(closed.matches(&p, now));
        assert!(!closed.matches(&p, now + TimeDelta::microseconds(1)));
        let both = WindowQuery::new(
            None,
            &[WindowState::Open, WindowState::Closed],
            None,
            None,
            now,
        )
        .unwrap();
        assert_eq!(both, WindowQuery::new(None, &[], None, None, now).unwrap());
        assert!(both.matches(&p, at(1)) && both.matches(&p, at(23)));
    }

    #[test]
    fn bounds_are_exclusive_and_narrow_the_states() {
        let now = at(12);
        let p = pair("+15550001111", "+27821234567");
        let next_two_hours =
            WindowQuery::new(None, &[WindowState::Open], None, Some(at(14)), now).unwrap();
        assert!(next_two_hours.matches(&p, at(13)));
        assert!(!next_two_hours.matches(&p, at(14)));
        assert!(!next_two_hours.matches(&p, at(11)));
        let after = WindowQuery::new(None, &[], Some(at(13)), None, now).unwrap();
        assert!(!after.matches(&p, at(13)));
        assert!(after.matches(&p, at(13) + TimeDelta::microseconds(1)));
        // Open windows that expired before 11: none.
        let none = WindowQuery::new(None, &[WindowState::Open], None, Some(at(11)), now).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn one_business_only_when_named() {
        let query = WindowQuery::new(
            Some(PhoneNumber::parse("+15550001111").unwrap()),
            &[],
            None,
            None,
            at(12),
        )
        .unwrap();
        assert!(query.matches(&pair("+15550001111", "+27821234567"), at(1)));
        assert!(!query.matches(&pair("+15550002222", "+27821234567"), at(1)));
    }

    #[test]
    fn never_opened_is_not_a_listable_state() {
        let refused =
            WindowQuery::new(None, &[WindowState::NeverOpened], None, None, at(12)).unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidWindowFilter);
        assert_eq!(refused.field.as_deref(), Some("states"));
    }

    #[test]
    fn the_cursor_orders_by_expiry_then_pair() {
        let cursor = WindowCursor {
            expires_at: at(12),
            pair: pair("+15550001111", "+27821234567"),
        };
        assert!(cursor.precedes(at(13), &pair("+15550001111", "+27820000000")));
        assert!(cursor.precedes(at(12), &pair("+15550001111", "+27821234568")));
        assert!(!cursor.precedes(at(12), &pair("+15550001111", "+27821234567")));
        assert!(!cursor.precedes(at(11), &pair("+15550009999", "+27829999999")));
    }
}
