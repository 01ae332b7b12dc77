//! Each call's span, as OpenTelemetry's RPC conventions name it (a SERVER
//! span `wagate.v1.Gateway/SendMessage` with `rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`), under the caller's W3C trace
//! context and baggage, read by opentelemetry's own propagators.

use std::sync::LazyLock;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tonic::Code;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `traceparent`/`tracestate` (W3C Trace Context) and `baggage` (W3C Baggage).
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// Request headers as the propagators read them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The caller's context: its span (a remote parent, with its trace state)
/// and baggage; empty when it sent none or sent them malformed.
pub fn caller_context(headers: &HeaderMap) -> opentelemetry::Context {
    PROPAGATOR.extract(&Headers(headers))
}

/// The span of a call: a server span named `package.Service/Method` for a
/// served method, `grpc` for any other path, under `parent`. `logged_path`
/// is what logs show as `method`.
pub fn call_span(
    served: Option<&super::Method>,
    logged_path: &str,
    parent: opentelemetry::Context,
) -> tracing::Span {
    let (name, service, method) = match served {
        Some(served) => (&*served.qualified, &*served.service, &*served.name),
        None => ("grpc", "_OTHER", "_OTHER"),
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        method = %logged_path,
        caller = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        code = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        // For logs: the ids join them to the caller's trace even without
        // an exporter.
        span.record("trace_id", tracing::field::display(remote.trace_id()));
        span.record("parent_span_id", tracing::field::display(remote.span_id()));
    }
    // Without an OTLP exporter there is no OpenTelemetry layer to take it.
    let _ = span.set_parent(parent);
    span
}

/// Records how the call ended: the numeric gRPC code, and an ERROR status
/// where the conventions call the code a server error.
pub fn record_outcome(span: &tracing::Span, code: Code, message: Option<&str>) {
    span.record("rpc.grpc.status_code", code as i64);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
        if let Some(message) = message {
            span.record("otel.status_description", message);
        }
    }
}

/// The codes OpenTelemetry's gRPC conventions mark as errors of a server
/// span; the others are the caller's doing (or success).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_callers_trace_state_and_baggage_are_read() {
        let context = caller_context(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=abc"),
            ("baggage", "tenant=acme"),
        ]));
        let parent = context.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(parent.trace_state().get("vendor"), Some("abc"));
        assert_eq!(
            context.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".to_owned())
        );
    }

    #[test]
    fn malformed_trace_context_is_ignored() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            let context = caller_context(&headers(&[("traceparent", bad)]));
            assert!(!context.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn only_server_side_codes_are_span_errors() {
        assert!(is_server_error(Code::Internal));
        assert!(is_server_error(Code::Unavailable));
        assert!(!is_server_error(Code::InvalidArgument));
        assert!(!is_server_error(Code::FailedPrecondition));
        assert!(!is_server_error(Code::Ok));
    }
}
