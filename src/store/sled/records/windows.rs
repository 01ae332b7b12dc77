//! Windows, the window-change log and inbound ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DecodeError, code_error, micros, phone, time};
use crate::domain::window_events::{ChangeKind, WindowChange};
use crate::domain::{EntryPoint, InboundKind, Pair, Window};

#[derive(Serialize, Deserialize)]
pub struct WindowRecord {
    last_inbound_at: i64,
    expires_at: i64,
    free_entry_deadline: Option<i64>,
    free_until: Option<i64>,
}

impl WindowRecord {
    pub fn expires_at_micros(&self) -> i64 {
        self.expires_at
    }
}

impl From<&Window> for WindowRecord {
    fn from(window: &Window) -> Self {
        WindowRecord {
            last_inbound_at: micros(window.last_inbound_at),
            expires_at: micros(window.expires_at),
            free_entry_deadline: window.free_entry_deadline.map(micros),
            free_until: window.free_until.map(micros),
        }
    }
}

impl TryFrom<WindowRecord> for Window {
    type Error = DecodeError;
    fn try_from(record: WindowRecord) -> Result<Self, DecodeError> {
        Ok(Window {
            last_inbound_at: time(record.last_inbound_at)?,
            expires_at: time(record.expires_at)?,
            free_entry_deadline: record.free_entry_deadline.map(time).transpose()?,
            free_until: record.free_until.map(time).transpose()?,
        })
    }
}

/// A logged window change; its key holds when it was recorded and its id.
#[derive(Serialize, Deserialize)]
pub struct ChangeRecord {
    business: String,
    customer: String,
    kind: u8,
    window: WindowRecord,
}

impl ChangeRecord {
    pub fn new(pair: &Pair, kind: ChangeKind, window: &Window) -> ChangeRecord {
        ChangeRecord {
            business: pair.business.as_str().to_owned(),
            customer: pair.customer.as_str().to_owned(),
            kind: match kind {
                ChangeKind::Opened => 1,
                ChangeKind::Extended => 2,
            },
            window: WindowRecord::from(window),
        }
    }

    pub fn into_change(self, recorded_at: i64, id: i64) -> Result<WindowChange, DecodeError> {
        Ok(WindowChange {
            id,
            recorded_at: time(recorded_at)?,
            pair: Pair {
                business: phone(&self.business)?,
                customer: phone(&self.customer)?,
            },
            kind: match self.kind {
                1 => ChangeKind::Opened,
                2 => ChangeKind::Extended,
                other => return Err(code_error("window change", other)),
            },
            window: Window::try_from(self.window)?,
        })
    }
}

/// A seen inbound message id, kept for dedupe.
#[derive(Serialize, Deserialize)]
pub struct InboundRecord {
    pub business: String,
    pub customer: String,
    pub received_at: i64,
    pub recorded_at: i64,
    kind: u8,
    entry_point: u8,
}

impl InboundRecord {
    pub fn new(
        pair: &Pair,
        received_at: DateTime<Utc>,
        kind: InboundKind,
        entry_point: EntryPoint,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        InboundRecord {
            business: pair.business.as_str().to_owned(),
            customer: pair.customer.as_str().to_owned(),
            received_at: micros(received_at),
            recorded_at: micros(recorded_at),
            kind: match kind {
                InboundKind::Message => 1,
                InboundKind::VoiceCall => 2,
            },
            entry_point: match entry_point {
                EntryPoint::Organic => 0,
                EntryPoint::ClickToWhatsAppAd => 1,
                EntryPoint::FacebookPageCta => 2,
            },
        }
    }

    pub fn inbound(&self) -> Result<crate::domain::Inbound, DecodeError> {
        Ok(crate::domain::Inbound {
            received_at: time(self.received_at)?,
            kind: match self.kind {
                1 => InboundKind::Message,
                2 => InboundKind::VoiceCall,
                code => return Err(code_error("inbound kind", code)),
            },
            entry_point: match self.entry_point {
                0 => EntryPoint::Organic,
                1 => EntryPoint::ClickToWhatsAppAd,
                2 => EntryPoint::FacebookPageCta,
                code => return Err(code_error("entry point", code)),
            },
        })
    }

    pub fn pair(&self) -> Result<Pair, DecodeError> {
        Ok(Pair {
            business: phone(&self.business)?,
            customer: phone(&self.customer)?,
        })
    }
}
