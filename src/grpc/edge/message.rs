//! The request message of a call whose client sends exactly one (unary and
//! server-streaming methods), read whole before the call takes a slot.
//!
//! Reading it first means a client that sends its headers and then stalls
//! (or trickles its message) holds nothing but its own stream until the
//! message deadline ends it; and the framing is checked here, so a call
//! with no message, a cut-off one or two is a client error.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::body::Body;
use tonic::{Code, Status};

use super::{MALFORMED_REQUEST, REQUEST_MESSAGE_TIMEOUT, REQUEST_TOO_LARGE};
use crate::grpc::status::service as refusal;

/// gRPC's length prefix: a compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// Reads the body of `request` within `deadline`, up to `max_message`
/// bytes of message, checks that it holds exactly one length-prefixed
/// message, and gives the request back with the body in memory.
pub async fn read_one(
    request: Request<Body>,
    max_message: usize,
    deadline: Duration,
) -> Result<Request<Body>, Status> {
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, max_message.saturating_add(PREFIX));
    let bytes = match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => {
            return Err(refusal(
                Code::DeadlineExceeded,
                REQUEST_MESSAGE_TIMEOUT,
                format!("the request message did not arrive within {deadline:?}"),
            ));
        }
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return Err(refusal(
                Code::ResourceExhausted,
                REQUEST_TOO_LARGE,
                format!("the request message is larger than {max_message} bytes"),
            ));
        }
        Ok(Err(error)) => {
            return Err(Status::cancelled(format!(
                "the request stream failed: {error}"
            )));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // A compressed message needs the encoding named; which encodings are
    // served is tonic's to answer (UNIMPLEMENTED for one it lacks).
    let encoded = parts
        .headers
        .get("grpc-encoding")
        .is_some_and(|encoding| encoding != "identity");
    check_framing(&bytes, encoded)
        .map_err(|rule| refusal(Code::InvalidArgument, MALFORMED_REQUEST, rule))?;
    Ok(Request::from_parts(parts, Body::new(Full::new(bytes))))
}

/// Exactly one message: a prefix with flag 0 (or 1, when the call names
/// its encoding) and a length that the rest of the body matches.
fn check_framing(body: &Bytes, encoded: bool) -> Result<(), &'static str> {
    if body.is_empty() {
        return Err("the call carries no request message; it takes exactly one");
    }
    if body.len() < PREFIX {
        return Err("the request message is cut off inside its length prefix");
    }
    if body[0] > 1 {
        return Err("the request message's compressed flag must be 0 or 1");
    }
    if body[0] == 1 && !encoded {
        return Err(
            "the request message is flagged compressed but the call names no grpc-encoding",
        );
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = body.len() - PREFIX;
    if rest < length {
        return Err("the request message is shorter than its length prefix says");
    }
    if rest > length {
        return Err("the call carries more than one request message; it takes exactly one");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, declared: u32, payload: &[u8]) -> Bytes {
        let mut body = vec![flag];
        body.extend_from_slice(&declared.to_be_bytes());
        body.extend_from_slice(payload);
        body.into()
    }

    #[test]
    fn one_whole_message_passes() {
        assert_eq!(check_framing(&frame(0, 3, b"abc"), false), Ok(()));
        assert_eq!(check_framing(&frame(1, 3, b"abc"), true), Ok(()));
        assert_eq!(check_framing(&frame(0, 0, b""), false), Ok(()));
    }

    #[test]
    fn missing_cut_off_doubled_and_misflagged_messages_are_refused() {
        let mut two = frame(0, 1, b"a").to_vec();
        two.extend_from_slice(&frame(0, 1, b"b"));
        for (body, rule) in [
            (Bytes::new(), "no request message"),
            (Bytes::from_static(&[0, 0, 0]), "inside its length prefix"),
            (frame(2, 1, b"a"), "compressed flag"),
            (frame(1, 1, b"a"), "names no grpc-encoding"),
            (frame(0, 5, b"abc"), "shorter than"),
            (Bytes::from(two), "more than one"),
        ] {
            let refused = check_framing(&body, false).unwrap_err();
            assert!(refused.contains(rule), "{body:?}: {refused}");
        }
    }
}
