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

mod deadline;
mod message;
mod observe;
mod trace;

pub use deadline::grpc_timeout;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use metrics::SharedString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;

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
    /// A stream in, one message out.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl Shape {
    fn of(client_streaming: bool, server_streaming: bool) -> Shape {
        match (client_streaming, server_streaming) {
            (true, true) => Shape::BidiStream,
            (true, false) => Shape::ClientStream,
            (false, true) => Shape::ServerStream,
            (false, false) => Shape::Unary,
        }
    }

    /// The `grpc_type` label.
    fn name(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStream => "server_stream",
            Shape::ClientStream => "client_stream",
            Shape::BidiStream => "bidi_stream",
        }
    }
}

/// A served method, its names resolved once at start: every call's span
/// and metrics share them rather than splitting and copying its path.
#[derive(Debug, Clone)]
struct Method {
    shape: Shape,
    /// `package.Service/Method`, the span's name.
    qualified: SharedString,
    /// `package.Service`, `Method`.
    service: SharedString,
    name: SharedString,
    /// Its calls' metric handles.
    series: Arc<telemetry::CallSeries>,
}

impl Method {
    /// `path` is `/package.Service/Method`.
    fn new(path: &str, shape: Shape) -> Method {
        let qualified = path.trim_start_matches('/');
        let (service, name) = qualified.split_once('/').unwrap_or((qualified, ""));
        Method {
            shape,
            qualified: SharedString::from_shared(Arc::from(qualified)),
            service: SharedString::from_shared(Arc::from(service)),
            name: SharedString::from_shared(Arc::from(name)),
            series: Arc::default(),
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
    methods: HashMap<String, Method>,
    /// The metric handles of calls to any other path.
    unknown: Arc<telemetry::CallSeries>,
}

/// `/package.Service/Method` for every method wagate serves.
fn served_methods() -> HashMap<String, Method> {
    use prost::Message;
    let mut shapes: Vec<(String, Shape)> = [
        ("/grpc.health.v1.Health/Check", Shape::Unary),
        ("/grpc.health.v1.Health/Watch", Shape::ServerStream),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Shape::BidiStream,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Shape::BidiStream,
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
                    shapes.push((
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        Shape::of(method.client_streaming(), method.server_streaming()),
                    ));
                }
            }
        }
    }
    shapes
        .into_iter()
        .map(|(path, shape)| {
            let method = Method::new(&path, shape);
            (path, method)
        })
        .collect()
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
                unknown: Arc::default(),
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
        let method = request.uri().path().to_owned();
        let open = is_infrastructure(&method);
        let parent = trace::caller_context(request.headers());
        let deadline = grpc_timeout(request.headers()).map_or(self.shared.call_timeout, |asked| {
            asked
                .saturating_sub(CALLER_DEADLINE_MARGIN)
                .min(self.shared.call_timeout)
        });
        // From the headers: waiting for the message counts against it too.
        let deadline_at = tokio::time::Instant::now() + deadline;

        let served = self.shared.methods.get(&method);
        let shape = served.map(|served| served.shape);
        let span = trace::call_span(served, &logged_path(&method, served.is_some()), parent);
        let mut call = observe::Call::start(
            call_labels(served, &self.shared.unknown, open),
            span.clone(),
        );
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
        let caller_label = match &caller {
            Ok(name) => name.as_str(),
            Err(_) => "unauthenticated",
        };
        span.record("caller", tracing::field::display(caller_label));
        call.set_caller(caller_label);

        // Take the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(
            async move {
                let (response, permit) = match caller {
                    // Refused before it reads anything or takes any slot.
                    Err(status) => (status.into_http(), None),
                    Ok(_) => {
                        let answered = tokio::time::timeout_at(deadline_at, async {
                            match admit(&shared, request, shape, open).await {
                                Err(status) => Ok((status.into_http(), None)),
                                Ok((request, permit)) => inner
                                    .call(request)
                                    .await
                                    .map(|response| (rewrite_client_errors(response), permit)),
                            }
                        })
                        .await;
                        match answered {
                            Ok(response) => response?,
                            Err(_) => (
                                refusal(
                                    Code::DeadlineExceeded,
                                    DEADLINE_EXCEEDED,
                                    format!("no answer within {deadline:?}"),
                                )
                                .into_http(),
                                None,
                            ),
                        }
                    }
                };
                Ok(finish_when_done(response, call, permit))
            }
            .instrument(span),
        )
    }
}

/// The call's metric labels: served methods by service and method, any
/// other path as `unknown` (a caller cannot mint series).
fn call_labels(
    served: Option<&Method>,
    unknown_series: &Arc<telemetry::CallSeries>,
    infrastructure: bool,
) -> telemetry::CallLabels {
    let unknown = || SharedString::const_str("unknown");
    telemetry::CallLabels {
        grpc_type: served.map_or("unknown", |served| served.shape.name()),
        service: served.map_or_else(unknown, |served| served.service.clone()),
        method: served.map_or_else(unknown, |served| served.name.clone()),
        infrastructure,
        caller: String::new(),
        series: served.map_or_else(|| unknown_series.clone(), |served| served.series.clone()),
    }
}

/// A refusal (trailers-only: the code is in the headers) finishes the call
/// now; an answer finishes it when its body ends, keeping a stream's slot
/// until then. A unary call's slot is freed now that it is answered.
fn finish_when_done(
    response: Response<Body>,
    call: observe::Call,
    permit: Option<Permit>,
) -> Response<Body> {
    if let Some(status) = Status::from_header_map(response.headers()) {
        call.finish(status.code(), Some(status.message()));
        return response;
    }
    let held = match permit {
        Some(Permit::Stream(permit)) => Some(permit),
        Some(Permit::Call(_)) | None => None,
    };
    response.map(|body| Body::new(observe::Tracked::new(body, call, held)))
}

/// The slot a call holds: a unary call's until it is answered, a stream's
/// until it ends.
enum Permit {
    // Held for its drop.
    Call(#[allow(dead_code)] OwnedSemaphorePermit),
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
) -> Result<(Request<Body>, Option<Permit>), Status> {
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
        Some(Shape::ClientStream | Shape::BidiStream) | None => request,
    };
    let (budget, kind, held_as): (_, _, fn(OwnedSemaphorePermit) -> Permit) = match shape {
        // Health checks: never shed.
        Some(Shape::Unary) if open => return Ok((request, None)),
        Some(Shape::Unary) | None => (&shared.calls, "calls", Permit::Call),
        Some(Shape::ServerStream | Shape::ClientStream | Shape::BidiStream) => {
            (&shared.streams, "streams", Permit::Stream)
        }
    };
    let permit = budget.clone().try_acquire_owned().map_err(|_| {
        refusal(
            Code::ResourceExhausted,
            OVERLOADED,
            format!("too many {kind} in flight; retry with backoff"),
        )
    })?;
    Ok((request, Some(held_as(permit))))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            methods["/wagate.v1.Gateway/WatchMessages"].shape,
            Shape::ServerStream
        );
        let send = &methods["/wagate.v1.Gateway/SendMessage"];
        assert_eq!(send.shape, Shape::Unary);
        assert_eq!(
            (&*send.qualified, &*send.service, &*send.name),
            (
                "wagate.v1.Gateway/SendMessage",
                "wagate.v1.Gateway",
                "SendMessage"
            )
        );
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
