//! The tower layer every gRPC call passes first: caller authentication, load
//! shedding, the call deadline, one tracing span per call (continuing the
//! caller's W3C trace), and per-call metrics.
//!
//! Health and reflection stay open: probes and grpcurl need no token, and
//! they are never shed, so an overloaded instance still answers its probes.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::auth::Callers;
use super::status::service as refusal;
use crate::telemetry;

/// Refusal reasons the edge gives, in `ErrorInfo.reason`.
pub const MISSING_CREDENTIALS: &str = "MISSING_CREDENTIALS";
pub const INVALID_CREDENTIALS: &str = "INVALID_CREDENTIALS";
pub const OVERLOADED: &str = "OVERLOADED";
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
pub const REQUEST_TOO_LARGE: &str = "REQUEST_TOO_LARGE";

/// tonic also enforces `grpc-timeout`, outside this layer, answering a bare
/// CANCELLED; ending the call this much earlier makes ours the answer (with
/// DEADLINE_EXCEEDED, its reason, and the call's metrics), as tonic polls
/// the call before its own timer.
const CALLER_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// What the edge enforces.
pub struct EdgePolicy {
    /// `None`: callers are not authenticated.
    pub callers: Option<Callers>,
    pub max_concurrent_calls: usize,
    pub call_timeout: Duration,
}

#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    callers: Option<Callers>,
    permits: Arc<Semaphore>,
    call_timeout: Duration,
    /// Paths of the methods served; any other path is labelled "unknown" in
    /// metrics, so a caller cannot mint new time series.
    methods: HashSet<String>,
}

/// `/package.Service/Method` for every method wagate serves.
fn served_methods() -> HashSet<String> {
    use prost::Message;
    let mut methods: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .map(String::from)
    .into();
    // The descriptors are compiled in; they decode or the build is broken.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    methods
}

impl EdgeLayer {
    pub fn new(policy: EdgePolicy) -> Self {
        EdgeLayer {
            shared: Arc::new(Shared {
                callers: policy.callers,
                permits: Arc::new(Semaphore::new(policy.max_concurrent_calls)),
                call_timeout: policy.call_timeout,
                methods: served_methods(),
            }),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Health checks and reflection: open to anyone, never shed.
fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let open = is_infrastructure(&method);
        let trace = TraceParent::from_headers(request.headers());
        let deadline = grpc_timeout(request.headers()).map_or(self.shared.call_timeout, |asked| {
            asked
                .saturating_sub(CALLER_DEADLINE_MARGIN)
                .min(self.shared.call_timeout)
        });

        let caller = match (&self.shared.callers, open) {
            (Some(callers), false) => match request.headers().get(http::header::AUTHORIZATION) {
                None => Err(refusal(
                    Code::Unauthenticated,
                    MISSING_CREDENTIALS,
                    "send `authorization: Bearer <token>`",
                )),
                Some(value) => callers
                    .identify(value.as_bytes())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        refusal(
                            Code::Unauthenticated,
                            INVALID_CREDENTIALS,
                            "the bearer token is not one this server knows",
                        )
                    }),
            },
            _ => Ok("-".to_owned()),
        };
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            caller = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            code = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        if let Some(trace) = &trace {
            span.record("trace_id", tracing::field::display(&trace.trace_id));
            span.record("parent_span_id", tracing::field::display(&trace.parent_id));
            // Without an OTLP exporter there is no OpenTelemetry layer to
            // take the parent; the ids above still join the logs to the trace.
            let _ = span.set_parent(trace.context());
        }
        let caller_label = match &caller {
            Ok(name) => name.clone(),
            Err(_) => "unauthenticated".to_owned(),
        };
        span.record("caller", tracing::field::display(&caller_label));
        let permit = match caller {
            Ok(_) if open => Ok(None),
            Ok(_) => self
                .shared
                .permits
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| {
                    refusal(
                        Code::ResourceExhausted,
                        OVERLOADED,
                        "too many calls in flight; retry with backoff",
                    )
                }),
            Err(status) => Err(status),
        };

        let method_label = if self.shared.methods.contains(&method) {
            method.clone()
        } else {
            "unknown".to_owned()
        };

        // Take the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let response = match permit {
                    Err(status) => status.into_http(),
                    Ok(permit) => {
                        let answered = tokio::time::timeout(deadline, inner.call(request)).await;
                        drop(permit);
                        match answered {
                            Ok(response) => rewrite_limits(response?),
                            Err(_) => refusal(
                                Code::DeadlineExceeded,
                                DEADLINE_EXCEEDED,
                                format!("no answer within {deadline:?}"),
                            )
                            .into_http(),
                        }
                    }
                };
                let code = response_code(response.headers());
                let elapsed = started.elapsed();
                telemetry::record_call(&method_label, code, &caller_label, elapsed);
                // On the span, so exported traces carry them too.
                let span = tracing::Span::current();
                span.record("code", tracing::field::debug(code));
                span.record("latency_ms", elapsed.as_micros() as f64 / 1000.0);
                tracing::info!("call finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// tonic refuses an oversized message with OUT_OF_RANGE and no details; say
/// RESOURCE_EXHAUSTED with a reason, as gRPC's own implementations do.
fn rewrite_limits(response: Response<Body>) -> Response<Body> {
    match Status::from_header_map(response.headers()) {
        Some(status)
            if status.code() == Code::OutOfRange
                && status.message().contains("message length too large") =>
        {
            refusal(
                Code::ResourceExhausted,
                REQUEST_TOO_LARGE,
                status.message().to_owned(),
            )
            .into_http()
        }
        _ => response,
    }
}

/// A refusal's code travels in the response headers (trailers-only); a
/// response that starts without one is an answer, OK.
fn response_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// The caller's deadline, from `grpc-timeout` (gRPC over HTTP/2: up to 8
/// digits and a unit, H M S m u n).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The W3C trace context a caller sent (`traceparent`, version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub sampled: bool,
}

impl TraceParent {
    /// The caller's span as a remote OpenTelemetry parent.
    fn context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let parent = SpanContext::new(
            TraceId::from_hex(&self.trace_id).unwrap_or(TraceId::INVALID),
            SpanId::from_hex(&self.parent_id).unwrap_or(SpanId::INVALID),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(parent)
    }

    fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        TraceParent::parse(headers.get("traceparent")?.to_str().ok()?)
    }

    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; all-zero ids
    /// are invalid. A malformed header is ignored, not an error.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let valid = version == "00"
            && parts.next().is_none()
            && lower_hex(trace_id, 32)
            && lower_hex(parent_id, 16)
            && lower_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            sampled: u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_a_w3c_traceparent() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id, "00f067aa0ba902b7");
        assert!(parent.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusal_codes_are_read_from_trailers_only_responses() {
        let mut headers = HeaderMap::new();
        assert_eq!(response_code(&headers), Code::Ok);
        headers.insert("grpc-status", "8".parse().unwrap());
        assert_eq!(response_code(&headers), Code::ResourceExhausted);
    }

    #[test]
    fn served_methods_come_from_the_descriptors() {
        let methods = served_methods();
        for path in [
            "/wagate.v1.Gateway/SendMessage",
            "/wagate.v1.Gateway/WatchMessages",
            "/wagate.v1.TemplateRegistry/ListTemplates",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(methods.contains(path), "{path}");
        }
        assert!(!methods.contains("/wagate.v1.Gateway/Nope"));
    }

    #[test]
    fn health_and_reflection_are_infrastructure() {
        assert!(is_infrastructure("/grpc.health.v1.Health/Check"));
        assert!(is_infrastructure(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_infrastructure("/wagate.v1.Gateway/SendMessage"));
    }
}
