//! ListWindows on the wire: the request's filters to a domain query, and
//! page tokens (an opaque cursor: the last window handed out).

use chrono::DateTime;

use super::{convert, page};
use crate::domain::window_query::{WindowCursor, WindowQuery};
use crate::domain::{Pair, PhoneNumber, Reason, Rejection, WindowState};
use crate::pb;

/// Tells this token format from any other (a template page's, say).
const PAGE_TOKEN_PREFIX: &str = "w1:";

/// The query a request asks for, as of `now`.
pub fn query(
    request: &pb::ListWindowsRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<WindowQuery, Rejection> {
    let business = match request.business_number.as_str() {
        "" => None,
        number => Some(PhoneNumber::parse(number).map_err(|e| e.at("business_number"))?),
    };
    let states = request
        .states
        .iter()
        .map(|&value| state(value))
        .collect::<Result<Vec<_>, _>>()?;
    let time = |at: &Option<prost_types::Timestamp>, field: &str| {
        at.as_ref().map(|at| convert::time(at, field)).transpose()
    };
    WindowQuery::new(
        business,
        &states,
        time(&request.expires_after, "expires_after")?,
        time(&request.expires_before, "expires_before")?,
        now,
    )
}

fn state(value: i32) -> Result<WindowState, Rejection> {
    match convert::known(value, "states")? {
        pb::WindowState::Open => Ok(WindowState::Open),
        pb::WindowState::Closed => Ok(WindowState::Closed),
        pb::WindowState::NeverOpened => Ok(WindowState::NeverOpened),
        pb::WindowState::Unspecified => Err(Rejection::new(
            Reason::InvalidWindowFilter,
            "may not hold WINDOW_STATE_UNSPECIFIED; leave states empty to list both",
        )
        .at("states")),
    }
}

pub fn page_token(cursor: &WindowCursor) -> String {
    page::token(
        PAGE_TOKEN_PREFIX,
        &format!(
            "{}\n{}\n{}",
            cursor.expires_at.timestamp_micros(),
            cursor.pair.business.as_str(),
            cursor.pair.customer.as_str()
        ),
    )
}

pub fn parse_page_token(token: &str) -> Result<Option<WindowCursor>, Rejection> {
    page::read_token(token, PAGE_TOKEN_PREFIX, |text| {
        let mut parts = text.split('\n');
        let micros: i64 = parts.next()?.parse().ok()?;
        let business = PhoneNumber::parse(parts.next()?).ok()?;
        let customer = PhoneNumber::parse(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(WindowCursor {
            expires_at: DateTime::from_timestamp_micros(micros)?,
            pair: Pair { business, customer },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let cursor = WindowCursor {
            expires_at: DateTime::from_timestamp_micros(1_764_061_200_123_456).unwrap(),
            pair: Pair {
                business: PhoneNumber::parse("+15550001111").unwrap(),
                customer: PhoneNumber::parse("+27821234567").unwrap(),
            },
        };
        assert_eq!(
            parse_page_token(&page_token(&cursor)).unwrap(),
            Some(cursor)
        );
        assert_eq!(parse_page_token("").unwrap(), None);
        let template_token = page::token("v1:", "order_update\nen_US");
        for bad in ["not base64!", "d2hhdA", template_token.as_str()] {
            assert_eq!(
                parse_page_token(bad).unwrap_err().reason,
                Reason::InvalidPageToken,
                "{bad}"
            );
        }
    }

    #[test]
    fn unspecified_and_unknown_states_are_refused() {
        assert_eq!(state(0).unwrap_err().reason, Reason::InvalidWindowFilter);
        assert_eq!(state(99).unwrap_err().reason, Reason::InvalidEnumValue);
        assert_eq!(state(pb::WindowState::Open as i32), Ok(WindowState::Open));
    }
}
