//! WatchWindows on the wire: the request to a watch filter and start, the
//! domain's events to messages with resume tokens, and the stream itself
//! (a task that pulls batches from the log into a bounded buffer).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{convert, page, status};
use crate::domain::window_events::{EventKey, Leads, WatchFilter, WindowEvent, WindowEventType};
use crate::domain::{PhoneNumber, Reason, Rejection, Window};
use crate::pb;
use crate::service::watch::Watcher;
use crate::store::Storage;
use crate::telemetry;

/// Tells this token format from any other (a page token, say).
const TOKEN_PREFIX: &str = "ww1:";
/// Events buffered per watcher between the log and the client.
const BUFFERED: usize = 256;
/// How often a caught-up watcher reads the log again.
const POLL: Duration = Duration::from_millis(100);
/// A token this far ahead of the clock was not issued by this service.
const MAX_TOKEN_SKEW: TimeDelta = TimeDelta::minutes(5);

pub type Events = mpsc::Receiver<Result<pb::WatchWindowsResponse, Status>>;

/// True once the server has stopped taking calls.
pub type Draining = tokio::sync::watch::Receiver<bool>;

/// How watches are served.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// How far back a resume token is honoured.
    pub retention: TimeDelta,
    /// How long the buffer may stay full before the watch ends WATCH_LAGGED.
    pub lag_timeout: Duration,
}

pub fn filter(request: &pb::WatchWindowsRequest) -> Result<WatchFilter, Rejection> {
    let businesses = request
        .business_numbers
        .iter()
        .enumerate()
        .map(|(i, number)| {
            PhoneNumber::parse(number).map_err(|e| e.at(format!("business_numbers[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leads = request
        .closing_leads
        .iter()
        .enumerate()
        .map(|(i, lead)| lead_of(lead, &format!("closing_leads[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WatchFilter {
        businesses,
        leads: Leads::new(leads)?,
    })
}

fn lead_of(lead: &prost_types::Duration, field: &str) -> Result<TimeDelta, Rejection> {
    let valid_nanos = (0..1_000_000_000).contains(&lead.nanos);
    TimeDelta::try_seconds(lead.seconds)
        .filter(|_| valid_nanos)
        .and_then(|seconds| seconds.checked_add(&TimeDelta::nanoseconds(lead.nanos.into())))
        .ok_or_else(|| {
            Rejection::new(Reason::InvalidClosingLead, "is not a valid duration").at(field)
        })
}

pub fn resume_token(key: &EventKey) -> String {
    page::token(
        TOKEN_PREFIX,
        &format!(
            "{}.{}.{}.{}",
            key.at.timestamp_micros(),
            key.change,
            key.rank,
            key.lead_micros
        ),
    )
}

/// The position a token names; `None` for an empty token (from now).
pub fn read_resume_token(token: &str) -> Result<Option<EventKey>, Rejection> {
    if token.is_empty() {
        return Ok(None);
    }
    let parse = |text: &str| -> Option<EventKey> {
        let mut parts = text.split('.');
        let key = EventKey {
            at: DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?,
            change: parts.next()?.parse().ok()?,
            rank: parts.next()?.parse().ok()?,
            lead_micros: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    };
    page::token_text(token, TOKEN_PREFIX)
        .and_then(|text| parse(&text))
        .map(Some)
        .ok_or_else(|| {
            Rejection::new(
                Reason::InvalidResumeToken,
                "is not a token WatchWindows issued; pass an event's resume_token unchanged",
            )
            .at("resume_token")
        })
}

/// Where a watch starts: after the token's event, or now. A token older
/// than the retention would leave a gap, so it is refused instead.
pub fn start(
    token: Option<EventKey>,
    now: DateTime<Utc>,
    retention: TimeDelta,
) -> Result<EventKey, Status> {
    let Some(key) = token else {
        return Ok(EventKey::through(now));
    };
    if key.at > now + MAX_TOKEN_SKEW {
        return Err(status::rejection(
            Rejection::new(
                Reason::InvalidResumeToken,
                "names an instant in the future; pass an event's resume_token unchanged",
            )
            .at("resume_token"),
        ));
    }
    if key.at < now - retention {
        return Err(status::service(
            Code::OutOfRange,
            status::RESUME_TOKEN_EXPIRED,
            format!(
                "resume_token: is from {}, older than the {}h of events kept; list the windows \
                 (ListWindows) and watch anew",
                key.at.to_rfc3339(),
                retention.num_hours()
            ),
        ));
    }
    Ok(key)
}

pub fn event(event: &WindowEvent) -> pb::WatchWindowsResponse {
    let kind = match event.kind {
        WindowEventType::Opened => pb::WindowEventType::Opened,
        WindowEventType::Extended => pb::WindowEventType::Extended,
        WindowEventType::Closing => pb::WindowEventType::Closing,
        WindowEventType::Closed => pb::WindowEventType::Closed,
    };
    let at = event.occurred_at();
    pb::WatchWindowsResponse {
        event: Some(pb::WindowEvent {
            r#type: kind as i32,
            window: Some(convert::window(
                &event.pair,
                &Window::view(Some(&event.window), at),
            )),
            lead: event.lead.map(convert::duration),
            occurred_at: Some(convert::timestamp(at)),
            resume_token: resume_token(&event.key),
        }),
    }
}

/// Counts the stream while it lives.
struct Connected;

impl Connected {
    fn new() -> Connected {
        metrics::gauge!(telemetry::WINDOW_WATCHERS).increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::WINDOW_WATCHERS).decrement(1.0);
    }
}

/// Starts the stream's task; it ends when the client goes, when the log
/// cannot be read (UNAVAILABLE: resume), or when the client stops reading
/// (WATCH_LAGGED).
pub fn spawn(
    store: std::sync::Arc<dyn Storage>,
    mut watcher: Watcher,
    limits: WatchLimits,
    mut draining: Draining,
) -> Events {
    let (sender, receiver) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        let _connected = Connected::new();
        let mut last_sent: Option<EventKey> = None;
        loop {
            let batch = tokio::select! {
                () = sender.closed() => return,
                () = drain_started(&mut draining) => {
                    let _ = sender.send(Err(drained())).await;
                    return;
                }
                batch = watcher.next_batch(&*store) => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = sender.send(Err(status::store(error))).await;
                    return;
                }
            };
            let total = batch.events.len();
            for (i, event) in batch.events.iter().enumerate() {
                let sent = sender
                    .send_timeout(Ok(self::event(event)), limits.lag_timeout)
                    .await;
                match sent {
                    Ok(()) => {
                        metrics::counter!(telemetry::WINDOW_EVENTS_SENT, "type" => event.kind.as_str())
                            .increment(1);
                        last_sent = Some(event.key);
                    }
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        metrics::counter!(telemetry::WINDOW_EVENTS_DROPPED, "cause" => "lagged")
                            .increment((total - i) as u64);
                        let _ = sender
                            .send(Err(lagged(last_sent, limits.lag_timeout)))
                            .await;
                        return;
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
                }
            }
            if batch.caught_up {
                tokio::select! {
                    () = sender.closed() => return,
                    () = drain_started(&mut draining) => {
                        let _ = sender.send(Err(drained())).await;
                        return;
                    }
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    });
    receiver
}

/// Returns once the server stops taking calls (never, if the server is
/// gone without saying so).
pub async fn drain_started(draining: &mut Draining) {
    if draining.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Ends a watch when the server shuts down, so its client reconnects
/// (to another replica) at once instead of holding the shutdown up.
pub fn drained() -> Status {
    status::service(
        Code::Unavailable,
        status::SERVER_DRAINING,
        "this server is shutting down; watch again with the last resume_token received \
         (another replica serves the same events)",
    )
}

fn lagged(last_sent: Option<EventKey>, timeout: Duration) -> Status {
    let mut metadata = std::collections::HashMap::new();
    if let Some(key) = last_sent {
        metadata.insert("resume_token".to_owned(), resume_token(&key));
    }
    let details =
        ErrorDetails::with_error_info(status::WATCH_LAGGED, status::ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::Aborted,
        format!(
            "this watcher read no event for {}s while its buffer was full; resume with the \
             last resume_token received (also in this error's metadata)",
            timeout.as_secs_f64()
        ),
        details,
    )
}
