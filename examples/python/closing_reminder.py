"""Act before a customer's 24-hour window closes: a WatchWindows consumer.

Usage:
  python closing_reminder.py ADDRESS [--lead SECONDS] [--business NUMBER ...]
                             [--template NAME --language CODE] [--text BODY]
                             [--exit-after N]
  (pip install -r requirements.txt)

Watches for CLOSING events with a one-hour lead (by default) and, for each
customer whose window is about to close, sends through SendMessage either an
approved template (--template/--language) or one last free-form message
(--text). The idempotency key names the window's expiry, so a restart that
sees the same event again sends nothing twice.

It keeps the last resume_token and reconnects from it when the stream ends:
after WATCH_LAGGED (the token is also in the error's ErrorInfo metadata) or
UNAVAILABLE (a restart, a database failover) nothing is lost. A real consumer
would store the token (a file, a table) to survive its own restarts too; a
token older than the server's retention (24h by default) is refused with
RESUME_TOKEN_EXPIRED, and then the consumer starts from now and finds the
windows it missed with ListWindows.
"""

import argparse
import time

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from example import generate_stubs, proto_dir_default


def error_info(error: grpc.RpcError):
    """The google.rpc.ErrorInfo of a refusal, if it carries one."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reminder(pb, event, args):
    """The SendMessage request for one CLOSING event."""
    window = event.window
    key = f"closing-reminder:{window.business_number}:{window.customer_number}:" \
          f"{window.expires_at.seconds}"
    request = pb.SendMessageRequest(
        business_number=window.business_number,
        customer_number=window.customer_number,
        idempotency_key=key,
    )
    if args.template:
        request.template.name = args.template
        request.template.language = args.language
    else:
        request.text.body = args.text
    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--lead", type=int, default=3600, help="seconds before the window closes")
    parser.add_argument("--business", action="append", default=[], help="business numbers to follow")
    parser.add_argument("--template", help="an approved template to send")
    parser.add_argument("--language", default="en")
    parser.add_argument("--text", default="Anything else we can help with? Just reply here.")
    parser.add_argument("--exit-after", type=int, default=0, help="stop after N reminders (tests)")
    parser.add_argument("--proto-dir", default=proto_dir_default())
    args = parser.parse_args()

    import sys
    sys.path.insert(0, generate_stubs(args.proto_dir))
    from wagate.v1 import gateway_pb2 as pb, gateway_pb2_grpc

    sent = 0
    token = ""
    with grpc.insecure_channel(args.address) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        while True:
            request = pb.WatchWindowsRequest(
                business_numbers=args.business,
                closing_leads=[duration_pb2.Duration(seconds=args.lead)],
                resume_token=token,
            )
            print(f"watching for windows closing within {args.lead}s", flush=True)
            try:
                for response in gateway.WatchWindows(request):
                    event = response.event
                    token = event.resume_token
                    if event.type != pb.WINDOW_EVENT_TYPE_CLOSING:
                        continue
                    reply = gateway.SendMessage(reminder(pb, event, args))
                    sent += 1
                    print(f"sent {reply.message_id} to {event.window.customer_number} "
                          f"({pb.MessageKind.Name(reply.kind)}), window closes at "
                          f"{event.window.expires_at.ToJsonString()}", flush=True)
                    if args.exit_after and sent >= args.exit_after:
                        print(f"closing reminder ok: sent {sent}", flush=True)
                        return
            except grpc.RpcError as error:
                info = error_info(error)
                reason = info.reason if info else ""
                if reason == "WATCH_LAGGED":
                    token = info.metadata.get("resume_token", token)
                elif reason == "RESUME_TOKEN_EXPIRED":
                    print("resume token expired: starting from now", flush=True)
                    token = ""
                elif error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                print(f"stream ended ({error.code().name} {reason}); resuming", flush=True)
                time.sleep(1)


if __name__ == "__main__":
    main()
