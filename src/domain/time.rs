//! The precision wagate keeps times at: the microsecond, what both stores
//! hold. Every time that reaches a store, from a client or from a clock,
//! is cut to it first, so an answer given now and the same record read back
//! later (a replay, GetWindow, GetMessage, a watcher's update) agree exactly.

use chrono::{DateTime, SubsecRound, Utc};

const PRECISION_DIGITS: u16 = 6;

/// `at`, cut to the microsecond.
pub fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(PRECISION_DIGITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cuts_below_the_microsecond_and_keeps_the_rest() {
        let at = Utc.timestamp_opt(1_764_000_000, 123_456_789).unwrap();
        assert_eq!(
            stored(at),
            Utc.timestamp_opt(1_764_000_000, 123_456_000).unwrap()
        );
        assert_eq!(stored(stored(at)), stored(at));
    }
}
