//! A response body that holds a concurrency permit until the response
//! ends: a stream's slot is taken for as long as the stream is open, not
//! only until its headers go out.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;
use tonic::body::Body;

pub struct Held {
    body: Body,
    /// Released when the body ends or is dropped (a client that goes away).
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    pub fn new(body: Body, permit: OwnedSemaphorePermit) -> Held {
        Held {
            body,
            permit: Some(permit),
        }
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.permit = None;
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
