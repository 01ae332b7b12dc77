//! Refusals and failures as gRPC statuses (SPEC §6): a code, a message that
//! names the field and the rule, a `google.rpc.ErrorInfo` (reason, domain
//! "wagate", metadata with `whatsapp_code` where WhatsApp has one) and, for
//! invalid fields, `google.rpc.BadRequest` field violations.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Rejection, RejectionKind};
use crate::store::StoreError;

/// `ErrorInfo.domain` of every wagate error.
pub const ERROR_DOMAIN: &str = "wagate";
/// The store could not read or write; the request may be retried.
pub const STORE_FAILURE: &str = "STORE_FAILURE";
/// A stored record could not be decoded.
pub const CORRUPT_RECORD: &str = "CORRUPT_RECORD";
/// A watch stream fell too far behind and was ended.
pub const WATCH_LAGGED: &str = "WATCH_LAGGED";
/// The server is shutting down: watch again (on another replica).
pub const SERVER_DRAINING: &str = "SERVER_DRAINING";
/// A WatchWindows resume token older than the events kept.
pub const RESUME_TOKEN_EXPIRED: &str = "RESUME_TOKEN_EXPIRED";

/// A template sync the Graph API failed (an HTTP error, a timeout, an
/// expired token): the registry is as it was; retry later.
pub const TEMPLATE_SYNC_FAILED: &str = "TEMPLATE_SYNC_FAILED";

pub fn sync_failed(why: &str) -> Status {
    service(
        Code::Unavailable,
        TEMPLATE_SYNC_FAILED,
        format!("template sync failed, the registry is unchanged: {why}"),
    )
}

/// A refusal that comes from the service itself rather than a domain rule.
pub fn service(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

pub fn rejection(rejection: Rejection) -> Status {
    let code = match rejection.kind() {
        RejectionKind::Invalid => Code::InvalidArgument,
        RejectionKind::Precondition => Code::FailedPrecondition,
        RejectionKind::NotFound => Code::NotFound,
        RejectionKind::Conflict => Code::AlreadyExists,
        RejectionKind::Exhausted => Code::ResourceExhausted,
    };
    let message = rejection.description();
    let metadata: HashMap<String, String> = rejection.metadata.into_iter().collect();
    let mut details =
        ErrorDetails::with_error_info(rejection.reason.as_str(), ERROR_DOMAIN, metadata);
    if let (RejectionKind::Invalid, Some(field)) = (rejection.reason.kind(), &rejection.field) {
        details.add_bad_request_violation(field.clone(), message.clone());
    }
    if let Some(wait) = rejection.retry_after {
        details.set_retry_info(Some(wait));
    }
    Status::with_error_details(code, message, details)
}

pub fn store(error: StoreError) -> Status {
    let (code, reason) = match error {
        StoreError::Rejected(refused) => return rejection(refused),
        StoreError::Corrupt { .. } => (Code::DataLoss, CORRUPT_RECORD),
        StoreError::Unavailable { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::LeaseLost { .. } => (Code::Unavailable, STORE_FAILURE),
    };
    tracing::error!(%error, "store failure");
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, error.to_string(), details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn rejection_carries_error_info_and_field_violation() {
        let status = rejection(
            Rejection::new(Reason::InvalidText, "must be 1-4096 characters").at("text.body"),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "text.body: must be 1-4096 characters");
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_TEXT", "wagate")
        );
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "text.body");
    }

    #[test]
    fn precondition_has_whatsapp_code_and_no_field_violation() {
        let status = rejection(Rejection::new(Reason::WindowClosed, "closed"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().metadata["whatsapp_code"],
            "131047"
        );
        assert!(details.bad_request().is_none());
    }

    #[test]
    fn store_failures_are_retryable_or_data_loss() {
        let status = store(StoreError::unavailable("flush", "disk full"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            STORE_FAILURE
        );
        let status = store(StoreError::corrupt("windows/v1", "bad"));
        assert_eq!(status.code(), Code::DataLoss);
        let status = store(StoreError::Rejected(Rejection::new(
            Reason::IdempotencyKeyReused,
            "x",
        )));
        assert_eq!(status.code(), Code::AlreadyExists);
    }
}
