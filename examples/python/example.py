"""A Python service calling wagate through a client generated from proto/.

Usage: python example.py ADDRESS [PROTO_DIR]   (pip install -r requirements.txt)

Generates the stubs with grpcio-tools into a temporary directory (PROTO_DIR
defaults to the repository's proto/), opens a window with RecordInbound,
sends a text, watches it, and reads the reason and WhatsApp code of a
refusal from its google.rpc.ErrorInfo (grpcio-status decodes the details).
"""

import os
import sys
import tempfile

import grpc
import grpc_tools
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc


def generate_stubs(proto_dir: str) -> str:
    out = tempfile.mkdtemp(prefix="wagate-py-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "wagate/v1/gateway.proto",
        "wagate/v1/templates.proto",
    ])
    assert code == 0, f"protoc failed with {code}"
    return out


def proto_dir_default() -> str:
    """The repository's proto/, next to this example."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "proto")


def main() -> None:
    address = sys.argv[1]
    proto_dir = sys.argv[2] if len(sys.argv) > 2 else proto_dir_default()
    sys.path.insert(0, generate_stubs(proto_dir))
    from wagate.v1 import gateway_pb2, gateway_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        business, customer = "+15550001111", "+27821234567"

        recorded = gateway.RecordInbound(gateway_pb2.RecordInboundRequest(
            business_number=business, customer_number="+27 82 123 4567", message_id="wamid.python-1"))
        assert recorded.outcome == gateway_pb2.INBOUND_OUTCOME_OPENED, recorded
        assert recorded.window.state == gateway_pb2.WINDOW_STATE_OPEN, recorded
        assert recorded.window.customer_number == customer, recorded

        sent = gateway.SendMessage(gateway_pb2.SendMessageRequest(
            business_number=business, customer_number=customer, idempotency_key="python-1",
            text=gateway_pb2.TextContent(body="Hello from Python")))
        assert sent.kind == gateway_pb2.MESSAGE_KIND_FREE_FORM, sent
        assert sent.rendered_text == "Hello from Python", sent
        assert sent.pricing_category == gateway_pb2.PRICING_CATEGORY_SERVICE, sent
        assert len(sent.message_id) == 36, sent

        # The message's current state comes first, then each change.
        watch = gateway.WatchMessages(gateway_pb2.WatchMessagesRequest(message_ids=[sent.message_id]))
        first = next(watch)
        assert first.message.message_id == sent.message_id, first
        assert first.message.status == gateway_pb2.MESSAGE_STATUS_ACCEPTED, first
        watch.cancel()

        try:
            gateway.SendMessage(gateway_pb2.SendMessageRequest(
                business_number=business, customer_number="+27829999999", idempotency_key="python-2",
                text=gateway_pb2.TextContent(body="Hello?")))
            raise AssertionError("a send outside the window must be refused")
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused
            status = rpc_status.from_call(refused)
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info), status
            assert (info.reason, info.domain) == ("WINDOW_CLOSED", "wagate"), info
            assert info.metadata["whatsapp_code"] == "131047", info

    print(f"python example ok: message {sent.message_id} {gateway_pb2.MessageStatus.Name(first.message.status)}, "
          f"refused {info.reason} (whatsapp_code {info.metadata['whatsapp_code']})")


if __name__ == "__main__":
    main()
