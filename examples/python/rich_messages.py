"""Sending more than text through wagate from Python: a document, an image,
reply buttons, a list, a call-to-action URL, a location, a reaction, and an
invoice template whose document header each send fills.

Usage: python rich_messages.py ADDRESS [PROTO_DIR]   (pip install -r requirements.txt)

Each free-form content needs the customer's open window (the example opens
one with RecordInbound) and is priced SERVICE; a content that breaks a
Cloud API limit is refused with INVALID_CONTENT, and the google.rpc.BadRequest
detail names the field.
"""

import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from example import generate_stubs, proto_dir_default

BUSINESS, CUSTOMER = "+15550001111", "+27821234567"


def contents(gw):
    """One of each free-form content beyond text, by the request field it sets."""
    return [
        ("media", gw.MediaContent(
            type=gw.MEDIA_TYPE_DOCUMENT, link="https://files.example.com/invoice-1001.pdf",
            caption="Your invoice", filename="invoice-1001.pdf")),
        ("media", gw.MediaContent(type=gw.MEDIA_TYPE_IMAGE, media_id="1013859600285441", caption="Your parcel")),
        ("interactive", gw.InteractiveContent(
            body="Which slot suits you?",
            buttons=gw.ReplyButtons(buttons=[
                gw.ReplyButton(id="slot-am", title="Morning"),
                gw.ReplyButton(id="slot-pm", title="Afternoon")]))),
        ("interactive", gw.InteractiveContent(
            body="Pick a branch",
            list=gw.ListAction(button="Branches", sections=[gw.ListSection(
                title="Cape Town",
                rows=[gw.ListRow(id="ct-1", title="Gardens", description="Open until 18:00")])]))),
        ("interactive", gw.InteractiveContent(
            body="Track your parcel",
            cta_url=gw.CallToActionUrl(display_text="Track", url="https://track.example.com/A-1001"))),
        ("location", gw.LocationContent(latitude=-33.9249, longitude=18.4241, name="Gardens branch")),
        ("reaction", gw.ReactionContent(message_id="wamid.python-rich-1", emoji="👍")),
    ]


def main() -> None:
    address = sys.argv[1]
    proto_dir = sys.argv[2] if len(sys.argv) > 2 else proto_dir_default()
    sys.path.insert(0, generate_stubs(proto_dir))
    from wagate.v1 import gateway_pb2 as gw, gateway_pb2_grpc, templates_pb2 as tp, templates_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        gateway.RecordInbound(gw.RecordInboundRequest(
            business_number=BUSINESS, customer_number=CUSTOMER, message_id="wamid.python-rich-1"))

        for n, (field, content) in enumerate(contents(gw)):
            sent = gateway.SendMessage(gw.SendMessageRequest(
                business_number=BUSINESS, customer_number=CUSTOMER,
                idempotency_key=f"python-rich-{n}", **{field: content}))
            assert sent.pricing_category == gw.PRICING_CATEGORY_SERVICE, sent
            assert getattr(sent.content, field) == content, sent
            print(f"sent {field}: {sent.rendered_text!r}")

        # A caption over 1,024 characters: refused, the field named.
        try:
            gateway.SendMessage(gw.SendMessageRequest(
                business_number=BUSINESS, customer_number=CUSTOMER, idempotency_key="python-rich-bad",
                media=gw.MediaContent(type=gw.MEDIA_TYPE_IMAGE, media_id="1", caption="x" * 1025)))
            raise AssertionError("an over-long caption must be refused")
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
            details = rpc_status.from_call(refused).details
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            assert any(d.Unpack(info) for d in details), details
            assert any(d.Unpack(bad) for d in details), details
            print(f"refused {info.reason} at {bad.field_violations[0].field}")

        # A utility template with a document header: every send gives the document.
        templates = templates_pb2_grpc.TemplateRegistryStub(channel)
        templates.UpsertTemplate(tp.UpsertTemplateRequest(template=tp.Template(
            name="invoice_ready", language="en_US", category=tp.TEMPLATE_CATEGORY_UTILITY,
            header_format=tp.HEADER_FORMAT_DOCUMENT, body="Hi {{1}}, your invoice is attached.")))
        templates.SetTemplateStatus(tp.SetTemplateStatusRequest(
            name="invoice_ready", language="en_US", status=tp.TEMPLATE_STATUS_APPROVED))
        sent = gateway.SendMessage(gw.SendMessageRequest(
            business_number=BUSINESS, customer_number="+27829999999", idempotency_key="python-rich-invoice",
            template=gw.TemplateContent(
                name="invoice_ready", language="en_US",
                body_parameters=gw.TemplateParameters(positional=["Ann"]),
                header=gw.TemplateHeader(document=gw.MediaReference(
                    link="https://files.example.com/invoice-1001.pdf", filename="invoice-1001.pdf")))))
        assert sent.pricing_category == gw.PRICING_CATEGORY_UTILITY, sent
        print(f"sent template: {sent.rendered_text!r}")

    print("python rich messages ok")


if __name__ == "__main__":
    main()
