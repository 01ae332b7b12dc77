//! Why a request is refused, in the vocabulary of the contract (SPEC §6).
//! The gRPC layer turns a [`Rejection`] into a status with `ErrorInfo`.

use std::collections::BTreeMap;
use std::fmt;

/// How a refusal is classified; the gRPC layer maps each to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The request itself is malformed.
    Invalid,
    /// The request is well-formed but the system is not in a state to allow it.
    Precondition,
    /// The thing the request names does not exist.
    NotFound,
    /// The request collides with something already recorded.
    Conflict,
    /// A quota is used up for now; the refusal says when to try again.
    Exhausted,
}

/// The machine-readable reasons of SPEC §6 (`ErrorInfo.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidPhoneNumber,
    InvalidMessageId,
    ReceivedAtInFuture,
    InboundMessageIdReused,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    InvalidText,
    MissingContent,
    WindowClosed,
    TemplateNotFound,
    TemplateNotApproved,
    TemplateParameterMismatch,
    InvalidTemplateParameter,
    InvalidTemplate,
    InvalidTemplateStatus,
    InvalidPageSize,
    InvalidPageToken,
    InvalidWindowFilter,
    InvalidTimestamp,
    InvalidEnumValue,
    MessageNotFound,
    InvalidClosingLead,
    InvalidResumeToken,
    InvalidContent,
    InvalidAccount,
    AccountNotFound,
    AccountExists,
    BusinessNumberInOtherAccount,
    PhoneNumberIdInUse,
    BusinessNumberNotRegistered,
    TemplatesSyncedFromWhatsapp,
    TemplateSyncOff,
    NotSupportedByProvider,
    MarketingPausedForRegion,
    CustomerOptedOut,
    MarketingLimited,
    MessagingLimitReached,
}

impl Reason {
    pub const ALL: [Reason; 37] = [
        Reason::InvalidPhoneNumber,
        Reason::InvalidMessageId,
        Reason::ReceivedAtInFuture,
        Reason::InboundMessageIdReused,
        Reason::InvalidIdempotencyKey,
        Reason::IdempotencyKeyReused,
        Reason::InvalidText,
        Reason::MissingContent,
        Reason::WindowClosed,
        Reason::TemplateNotFound,
        Reason::TemplateNotApproved,
        Reason::TemplateParameterMismatch,
        Reason::InvalidTemplateParameter,
        Reason::InvalidTemplate,
        Reason::InvalidTemplateStatus,
        Reason::InvalidPageSize,
        Reason::InvalidPageToken,
        Reason::InvalidWindowFilter,
        Reason::InvalidTimestamp,
        Reason::InvalidEnumValue,
        Reason::MessageNotFound,
        Reason::InvalidClosingLead,
        Reason::InvalidResumeToken,
        Reason::InvalidContent,
        Reason::InvalidAccount,
        Reason::AccountNotFound,
        Reason::AccountExists,
        Reason::BusinessNumberInOtherAccount,
        Reason::PhoneNumberIdInUse,
        Reason::BusinessNumberNotRegistered,
        Reason::TemplatesSyncedFromWhatsapp,
        Reason::TemplateSyncOff,
        Reason::NotSupportedByProvider,
        Reason::MarketingPausedForRegion,
        Reason::CustomerOptedOut,
        Reason::MarketingLimited,
        Reason::MessagingLimitReached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidPhoneNumber => "INVALID_PHONE_NUMBER",
            Reason::InvalidMessageId => "INVALID_MESSAGE_ID",
            Reason::ReceivedAtInFuture => "RECEIVED_AT_IN_FUTURE",
            Reason::InboundMessageIdReused => "INBOUND_MESSAGE_ID_REUSED",
            Reason::InvalidIdempotencyKey => "INVALID_IDEMPOTENCY_KEY",
            Reason::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Reason::InvalidText => "INVALID_TEXT",
            Reason::MissingContent => "MISSING_CONTENT",
            Reason::WindowClosed => "WINDOW_CLOSED",
            Reason::TemplateNotFound => "TEMPLATE_NOT_FOUND",
            Reason::TemplateNotApproved => "TEMPLATE_NOT_APPROVED",
            Reason::TemplateParameterMismatch => "TEMPLATE_PARAMETER_MISMATCH",
            Reason::InvalidTemplateParameter => "INVALID_TEMPLATE_PARAMETER",
            Reason::InvalidTemplate => "INVALID_TEMPLATE",
            Reason::InvalidTemplateStatus => "INVALID_TEMPLATE_STATUS",
            Reason::InvalidPageSize => "INVALID_PAGE_SIZE",
            Reason::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Reason::InvalidWindowFilter => "INVALID_WINDOW_FILTER",
            Reason::InvalidTimestamp => "INVALID_TIMESTAMP",
            Reason::InvalidEnumValue => "INVALID_ENUM_VALUE",
            Reason::MessageNotFound => "MESSAGE_NOT_FOUND",
            Reason::InvalidClosingLead => "INVALID_CLOSING_LEAD",
            Reason::InvalidResumeToken => "INVALID_RESUME_TOKEN",
            Reason::InvalidContent => "INVALID_CONTENT",
            Reason::InvalidAccount => "INVALID_ACCOUNT",
            Reason::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Reason::AccountExists => "ACCOUNT_EXISTS",
            Reason::BusinessNumberInOtherAccount => "BUSINESS_NUMBER_IN_OTHER_ACCOUNT",
            Reason::PhoneNumberIdInUse => "PHONE_NUMBER_ID_IN_USE",
            Reason::BusinessNumberNotRegistered => "BUSINESS_NUMBER_NOT_REGISTERED",
            Reason::TemplatesSyncedFromWhatsapp => "TEMPLATES_SYNCED_FROM_WHATSAPP",
            Reason::TemplateSyncOff => "TEMPLATE_SYNC_OFF",
            Reason::NotSupportedByProvider => "NOT_SUPPORTED_BY_PROVIDER",
            Reason::MarketingPausedForRegion => "MARKETING_PAUSED_FOR_REGION",
            Reason::CustomerOptedOut => "CUSTOMER_OPTED_OUT",
            Reason::MarketingLimited => "MARKETING_LIMITED",
            Reason::MessagingLimitReached => "MESSAGING_LIMIT_REACHED",
        }
    }

    pub fn kind(self) -> RejectionKind {
        match self {
            Reason::WindowClosed
            | Reason::TemplateNotApproved
            | Reason::BusinessNumberNotRegistered
            | Reason::TemplatesSyncedFromWhatsapp
            | Reason::TemplateSyncOff
            | Reason::NotSupportedByProvider
            | Reason::MarketingPausedForRegion
            | Reason::CustomerOptedOut
            | Reason::MarketingLimited => RejectionKind::Precondition,
            Reason::TemplateNotFound | Reason::MessageNotFound | Reason::AccountNotFound => {
                RejectionKind::NotFound
            }
            Reason::IdempotencyKeyReused
            | Reason::InboundMessageIdReused
            | Reason::AccountExists
            | Reason::BusinessNumberInOtherAccount
            | Reason::PhoneNumberIdInUse => RejectionKind::Conflict,
            Reason::MessagingLimitReached => RejectionKind::Exhausted,
            _ => RejectionKind::Invalid,
        }
    }

    /// WhatsApp's own error code for the same rule, where it has one.
    pub fn whatsapp_code(self) -> Option<u32> {
        match self {
            Reason::WindowClosed => Some(131_047),
            Reason::TemplateParameterMismatch => Some(132_000),
            Reason::TemplateNotFound => Some(132_001),
            Reason::MarketingPausedForRegion | Reason::MarketingLimited => {
                Some(super::policy::MARKETING_NOT_DELIVERED)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the reason, the offending field (as named in the API)
/// when there is one, a human message naming the rule, and extra metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {}", self.description())]
pub struct Rejection {
    pub reason: Reason,
    pub field: Option<String>,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
    /// When trying again may succeed (`google.rpc.RetryInfo`).
    pub retry_after: Option<std::time::Duration>,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        let mut metadata = BTreeMap::new();
        if let Some(code) = reason.whatsapp_code() {
            metadata.insert("whatsapp_code".to_owned(), code.to_string());
        }
        Rejection {
            reason,
            field: None,
            message: message.into(),
            metadata,
            retry_after: None,
        }
    }

    /// Says when the same request may succeed.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Names the request field at fault.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Places the field inside an enclosing message: `name` becomes
    /// `template.name`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(field) => format!("{parent}.{field}"),
            None => parent.to_owned(),
        });
        self
    }

    /// The message prefixed with the field, so a reader of the status message
    /// alone knows where to look.
    pub fn description(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }

    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    pub fn kind(&self) -> RejectionKind {
        self.reason.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_upper_snake_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
            assert!(seen.insert(name), "duplicate reason {name}");
        }
    }

    #[test]
    fn whatsapp_codes_ride_in_metadata() {
        let rejection = Rejection::new(Reason::WindowClosed, "window closed");
        assert_eq!(rejection.metadata["whatsapp_code"], "131047");
        assert_eq!(rejection.kind(), RejectionKind::Precondition);
        let rejection = Rejection::new(Reason::InvalidText, "empty");
        assert!(!rejection.metadata.contains_key("whatsapp_code"));
    }

    #[test]
    fn field_is_named_in_the_message() {
        let rejection = Rejection::new(Reason::InvalidText, "must not be empty").at("body");
        assert_eq!(rejection.description(), "body: must not be empty");
        let rejection = rejection.within("text");
        assert_eq!(rejection.field.as_deref(), Some("text.body"));
        assert_eq!(rejection.description(), "text.body: must not be empty");
        assert_eq!(
            rejection.to_string(),
            "INVALID_TEXT: text.body: must not be empty"
        );
    }
}
