//! How a call ends, recorded once: the gRPC server metrics Prometheus users
//! chart (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`), the span's outcome, and the `call
//! finished` log line. A stream ends when its trailers go out (or the
//! client goes away), not when its headers do, so its code and duration
//! are its real ones; its body also holds the stream's concurrency slot
//! until then.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tonic::body::Body;
use tonic::{Code, Status};

use super::trace;
use crate::telemetry::{self, CallLabels};

/// A call under way, to be finished exactly once.
pub struct Call {
    labels: CallLabels,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    /// Counts the call as started.
    pub fn start(labels: CallLabels, span: tracing::Span) -> Call {
        telemetry::record_started(&labels);
        Call {
            labels,
            started: Instant::now(),
            span,
        }
    }

    pub fn set_caller(&mut self, caller: &str) {
        caller.clone_into(&mut self.labels.caller);
    }

    pub fn finish(self, code: Code, message: Option<&str>) {
        let elapsed = self.started.elapsed();
        telemetry::record_handled(&self.labels, code, elapsed);
        trace::record_outcome(&self.span, code, message);
        self.span
            .record("code", tracing::field::display(telemetry::code_name(code)))
            .record("latency_ms", elapsed.as_micros() as f64 / 1000.0);
        self.span.in_scope(|| tracing::info!("call finished"));
    }
}

/// A response body that finishes its call when it ends, and holds the
/// call's slot (a stream's) until then.
pub struct Tracked {
    body: Body,
    call: Option<Call>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Tracked {
    pub fn new(body: Body, call: Call, permit: Option<OwnedSemaphorePermit>) -> Tracked {
        Tracked {
            body,
            call: Some(call),
            _permit: permit,
        }
    }

    fn finish(&mut self, code: Code, message: Option<&str>) {
        if let Some(call) = self.call.take() {
            call.finish(code, message);
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    match Status::from_header_map(trailers) {
                        Some(status) => self.finish(status.code(), Some(status.message())),
                        None => self.finish(Code::Ok, None),
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code(), Some(status.message())),
            // Ended without trailers: gRPC always sends them, so this is
            // not a proper end.
            Poll::Ready(None) => {
                self.finish(Code::Unknown, Some("the response ended without trailers"))
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    /// Dropped before its end: the client went away (or the connection did).
    fn drop(&mut self) {
        self.finish(Code::Cancelled, Some("the client went away"));
    }
}
