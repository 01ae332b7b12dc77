//! The tower layer every gRPC call passes first: caller authentication, the
//! request message read whole within its own deadline, load shedding, the
//! call deadline, one tracing span per call (continuing the caller's W3C
//! trace), and per-call metrics.
//!
//! Health and reflection stay open: probes and grpcurl need no token, and
//! health checks are never shed, so an overloaded instance still answers
//! its probes. Long-lived streams (WatchMessages, health Watch, reflection)
//! have a budget of their own, held until the stream ends, so they can
//! neither crowd out unary calls nor grow without bound.

mod held;
mod message;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
/// The call's request message did not arrive within the message deadline.
pub const REQUEST_MESSAGE_TIMEOUT: &str = "REQUEST_MESSAGE_TIMEOUT";
/// The request is not one well-formed message: no message, two, a cut-off
/// frame, or bytes that do not decode as the method's message.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";

/// tonic also enforces `grpc-timeout`, outside this layer, answering a bare
/// CANCELLED; ending the call this much earlier makes ours the answer (with
/// DEADLINE_EXCEEDED, its reason, and the call's metrics), as tonic polls
/// the call before its own timer.
const CALLER_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// What the edge enforces.
pub struct EdgePolicy {
    /// `None`: callers are not authenticated.
    pub callers: Option<Callers>,
    /// Unary calls in flight at once (health checks not counted).
    pub max_concurrent_calls: usize,
    /// Streams open at once: WatchMessages, health Watch, reflection.
    pub max_concurrent_streams: usize,
    pub call_timeout: Duration,
    /// How long a client has to send its request message, from its headers.
    pub request_message_timeout: Duration,
    /// The largest request message, in bytes.
    pub max_request_bytes: usize,
}

/// How a method's messages flow, from its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One message each way.
    Unary,
    /// One message in, a stream out.
    ServerStream,
    /// A stream in (client or bidirectional streaming).
    ClientStream,
}

impl Shape {
    fn of(client_streaming: bool, server_streaming: bool) -> Shape {
        match (client_streaming, server_streaming) {
            (true, _) => Shape::ClientStream,
            (false, true) => Shape::ServerStream,
            (false, false) => Shape::Unary,
        }
    }
}

#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    callers: Option<Callers>,
    calls: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    call_timeout: Duration,
    request_message_timeout: Duration,
    max_request_bytes: usize,
    /// The methods served, by path; any other path is labelled "unknown"
    /// in metrics, so a caller cannot mint new time series.
    methods: HashMap<String, Shape>,
}

/// `/package.Service/Method` for every method wagate serves, with its shape.
fn served_methods() -> HashMap<String, Shape> {
    use prost::Message;
    let mut methods: HashMap<String, Shape> = [
        ("/grpc.health.v1.Health/Check", Shape::Unary),
        ("/grpc.health.v1.Health/Watch", Shape::ServerStream),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Shape::ClientStream,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Shape::ClientStream,
        ),
    ]
    .map(|(path, shape)| (path.to_owned(), shape))
    .into();
    // The descriptors are compiled in; they decode or the build is broken.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    methods.insert(
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        Shape::of(method.client_streaming(), method.server_streaming()),
                    );
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
                calls: Arc::new(Semaphore::new(policy.max_concurrent_calls)),
                streams: Arc::new(Semaphore::new(policy.max_concurrent_streams)),
                call_timeout: policy.call_timeout,
                request_message_timeout: policy.request_message_timeout,
                max_request_bytes: policy.max_request_bytes,
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

/// Health and reflection: open to anyone.
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
        // From the headers: waiting for the message counts against it too.
        let deadline_at = tokio::time::Instant::now() + deadline;

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
        let shape = self.shared.methods.get(&method).copied();
        let method_label = if shape.is_some() {
            method.clone()
        } else {
            "unknown".to_owned()
        };
        let span = tracing::info_span!(
            "rpc",
            method = %logged_path(&method, shape.is_some()),
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

        // Take the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(
            async move {
                let response = match caller {
                    // Refused before it reads anything or takes any slot.
                    Err(status) => status.into_http(),
                    Ok(_) => {
                        let answered = tokio::time::timeout_at(deadline_at, async {
                            match admit(&shared, request, shape, open).await {
                                Err(status) => Ok(status.into_http()),
                                Ok((request, permit)) => inner
                                    .call(request)
                                    .await
                                    .map(|response| hold(rewrite_client_errors(response), permit)),
                            }
                        })
                        .await;
                        match answered {
                            Ok(response) => response?,
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

/// The slot a call holds: a unary call's until it is answered, a stream's
/// until it ends.
enum Permit {
    /// Health checks: never shed.
    None,
    Call(OwnedSemaphorePermit),
    Stream(OwnedSemaphorePermit),
}

/// Reads the request message where the client sends exactly one, then
/// takes the call's slot: only a call whose message has arrived competes
/// for one, so stalled clients cannot starve the others.
async fn admit(
    shared: &Shared,
    request: Request<Body>,
    shape: Option<Shape>,
    open: bool,
) -> Result<(Request<Body>, Permit), Status> {
    let request = match shape {
        Some(Shape::Unary | Shape::ServerStream) => {
            message::read_one(
                request,
                shared.max_request_bytes,
                shared.request_message_timeout,
            )
            .await?
        }
        // Unknown paths go on to be answered UNIMPLEMENTED.
        Some(Shape::ClientStream) | None => request,
    };
    let (budget, kind) = match shape {
        Some(Shape::Unary) if open => return Ok((request, Permit::None)),
        Some(Shape::Unary) | None => (&shared.calls, "calls"),
        Some(Shape::ServerStream | Shape::ClientStream) => (&shared.streams, "streams"),
    };
    let permit = budget.clone().try_acquire_owned().map_err(|_| {
        refusal(
            Code::ResourceExhausted,
            OVERLOADED,
            format!("too many {kind} in flight; retry with backoff"),
        )
    })?;
    let permit = match kind {
        "streams" => Permit::Stream(permit),
        _ => Permit::Call(permit),
    };
    Ok((request, permit))
}

/// A stream keeps its slot in its body until it ends; a call's is released
/// now that it is answered.
fn hold(response: Response<Body>, permit: Permit) -> Response<Body> {
    match permit {
        Permit::Stream(permit) => response.map(|body| Body::new(held::Held::new(body, permit))),
        Permit::Call(permit) => {
            drop(permit);
            response
        }
        Permit::None => response,
    }
}

/// tonic answers two client mistakes as if they were its own: an oversized
/// message with OUT_OF_RANGE and no details (say RESOURCE_EXHAUSTED with a
/// reason, as gRPC's own implementations do), and bytes that do not decode
/// as the method's message with INTERNAL (say INVALID_ARGUMENT: the client
/// sent garbage, and it must not count as a server error).
fn rewrite_client_errors(response: Response<Body>) -> Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    match status.code() {
        Code::OutOfRange if status.message().contains("message length too large") => refusal(
            Code::ResourceExhausted,
            REQUEST_TOO_LARGE,
            status.message().to_owned(),
        )
        .into_http(),
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            refusal(
                Code::InvalidArgument,
                MALFORMED_REQUEST,
                format!("the request message does not decode: {}", status.message()),
            )
            .into_http()
        }
        _ => response,
    }
}

/// The longest request path a log line shows of a path wagate does not
/// serve (anyone can send 8 KB of path).
const LOGGED_PATH_LIMIT: usize = 96;

/// A served method's path as is; any other cut to [`LOGGED_PATH_LIMIT`]
/// bytes, marked with `…` where cut.
fn logged_path(path: &str, served: bool) -> std::borrow::Cow<'_, str> {
    if served || path.len() <= LOGGED_PATH_LIMIT {
        return path.into();
    }
    let mut end = LOGGED_PATH_LIMIT;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end]).into()
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
            assert!(methods.contains_key(path), "{path}");
        }
        assert!(!methods.contains_key("/wagate.v1.Gateway/Nope"));
        assert_eq!(
            methods["/wagate.v1.Gateway/WatchMessages"],
            Shape::ServerStream
        );
        assert_eq!(methods["/wagate.v1.Gateway/SendMessage"], Shape::Unary);
    }

    #[test]
    fn long_unknown_paths_are_cut_in_logs() {
        let long = format!("/x/{}", "é".repeat(4000));
        let logged = logged_path(&long, false);
        assert!(
            logged.len() <= LOGGED_PATH_LIMIT + "…".len(),
            "{}",
            logged.len()
        );
        assert!(logged.ends_with('…'));
        assert_eq!(
            logged_path("/wagate.v1.Gateway/SendMessage", true),
            "/wagate.v1.Gateway/SendMessage"
        );
        assert_eq!(logged_path("/short/Nope", false), "/short/Nope");
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
