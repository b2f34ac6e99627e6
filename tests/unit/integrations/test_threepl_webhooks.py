"""Standard Webhooks verification (common/integrations/threepl_webhooks.py) against the standard's own test
vector and an HMAC computed here by hand, and every way a webhook is refused; ShipBobClient.verify_webhook
turning a verified body into a ThreePLEvent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from common.config import Settings
from common.integrations.shipbob import ShipBobClient
from common.integrations.threepl_api import ThreePLDetail, ThreePLStatus, ThreePLWebhookRefused
from common.integrations.threepl_webhooks import verify_standard_webhook, webhook_key

# The test vector of the Standard Webhooks specification (and of its reference libraries)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
AT = datetime.fromtimestamp(TIMESTAMP, UTC)


def headers(signature: str = SIGNATURE, msg_id: str = MSG_ID, stamp: int | str = TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def by_hand(secret: str, msg_id: str, stamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(body: bytes = BODY, hdrs: dict[str, str] | None = None, secret: str = SECRET, now: datetime = AT) -> Any:
    return verify_standard_webhook(body, hdrs if hdrs is not None else headers(), webhook_key(secret), now=now)


def test_the_standard_test_vector_verifies() -> None:
    assert by_hand(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE  # the vector is what the standard says
    verified = verify()
    assert (verified.webhook_id, verified.sent_at, verified.payload) == (MSG_ID, AT, {"test": 2432232314})


def test_header_names_are_case_insensitive_and_any_v1_signature_may_match() -> None:
    upper = {k.title(): v for k, v in headers().items()}
    assert verify(hdrs=upper).payload == {"test": 2432232314}
    # A sender rotating its secret signs with both; other versions and garbage are skipped, not errors
    rotated = f"v1,{base64.b64encode(b'x' * 32).decode()} v2,abc v1 v1,%%% {SIGNATURE}"
    assert verify(hdrs=headers(rotated)).webhook_id == MSG_ID


@pytest.mark.parametrize(
    ("body", "hdrs", "secret", "why"),
    [
        (b'{"test": 2432232315}', headers(), SECRET, "no v1 signature matches"),
        (BODY + b" ", headers(), SECRET, "no v1 signature matches"),
        (BODY, headers(), "whsec_" + base64.b64encode(b"another key").decode(), "no v1 signature matches"),
        (BODY, headers(msg_id="msg_other"), SECRET, "no v1 signature matches"),
        (BODY, headers(SIGNATURE.replace("v1,", "v2,")), SECRET, "no v1 signature matches"),
        (BODY, headers("v1,not-base64!"), SECRET, "no v1 signature matches"),
        (BODY, headers("garbage"), SECRET, "no v1 signature matches"),
        (BODY, {k: v for k, v in headers().items() if k != "webhook-signature"}, SECRET, "webhook-signature"),
        (BODY, {k: v for k, v in headers().items() if k != "webhook-id"}, SECRET, "missing header(s) webhook-id"),
        (BODY, {k: v for k, v in headers().items() if k != "webhook-timestamp"}, SECRET, "webhook-timestamp"),
        (BODY, {}, SECRET, "missing header(s) webhook-id, webhook-timestamp, webhook-signature"),
        (BODY, headers(stamp="1614265330.5"), SECRET, "is not Unix seconds"),
        (BODY, headers(stamp="-1"), SECRET, "is not Unix seconds"),
        (BODY, headers(stamp="9" * 30), SECRET, "out of range"),
    ],
)
def test_refused(body: bytes, hdrs: dict[str, str], secret: str, why: str) -> None:
    with pytest.raises(ThreePLWebhookRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        verify(body, hdrs, secret)


@pytest.mark.parametrize(("offset", "ok"), [(-301, False), (-299, True), (0, True), (299, True), (301, False)])
def test_the_timestamp_must_be_within_five_minutes_of_now(offset: int, ok: bool) -> None:
    """`offset`: how far the webhook's timestamp is from now (negative: in the past), signed correctly."""
    stamp = TIMESTAMP + offset
    signed = headers(by_hand(SECRET, MSG_ID, stamp, BODY), stamp=stamp)
    if ok:
        assert verify(hdrs=signed).sent_at == datetime.fromtimestamp(stamp, UTC)
    else:
        with pytest.raises(ThreePLWebhookRefused, match="more than 300 s"):
            verify(hdrs=signed)


def test_a_signed_body_that_is_not_utf8_or_json_is_refused() -> None:
    for body, why in [(b"\xff\xfe", "not UTF-8"), (b"{not json", "not JSON")]:
        signed = headers(by_hand(SECRET, MSG_ID, TIMESTAMP, body))
        with pytest.raises(ThreePLWebhookRefused, match=why):
            verify(body, signed)


def test_an_unusable_secret_is_a_value_error() -> None:
    for secret in ("whsec_", "whsec_%%%"):
        with pytest.raises(ValueError, match="webhook secret"):
            webhook_key(secret)


# ---------------------------------------------------------------------------------------------------------
# ShipBobClient.verify_webhook: the verified body as an event

ORDER = {
    "id": 100001,
    "reference_id": "3pl:ORD-1:1",
    "order_number": "ORD-1",
    "status": "Fulfilled",
    "created_date": "2026-01-05T10:00:00Z",
    "products": [{"reference_id": "MUG-RED", "quantity": 2}],
    "shipments": [
        {
            "id": 900001,
            "status": "Completed",
            "status_details": [{"id": 201, "name": "InTransit", "description": "Shipment In Transit"}],
            "last_update_at": "2026-01-05T10:00:05.250Z",
            "actual_fulfillment_date": "2026-01-05T10:00:05Z",
            "location": {"id": 1, "name": "Sandbox FC"},
            "tracking": {
                "carrier": "SandboxPost",
                "carrier_service": "Ground",
                "tracking_number": "SBX3PL1",
                "tracking_url": "http://127.0.0.1:1/track/SBX3PL1",
            },
        }
    ],
}


def shipbob_event(payload: Any, now: datetime, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = int(now.timestamp())
    return body, headers(by_hand(secret, "msg_1", stamp, body), msg_id="msg_1", stamp=stamp)


def test_shipbob_event_carries_the_order_as_the_adapter_reads_it() -> None:
    client = ShipBobClient(Settings(threepl_webhook_secret=SECRET))
    now = datetime(2026, 1, 5, 10, 0, 6, tzinfo=UTC)
    payload = {"topic": "order.shipped", "event_time": "2026-01-05T10:00:05.250Z", "shipment_id": 900001, "data": ORDER}
    event = client.verify_webhook(*shipbob_event(payload, now), now=now)
    assert (event.event_id, event.topic, event.shipment_id) == ("msg_1", "order.shipped", "900001")
    assert event.sent_at == now.replace(microsecond=0)
    assert event.occurred_at == datetime(2026, 1, 5, 10, 0, 5, 250000, tzinfo=UTC)
    order = event.order
    assert order is not None
    assert (order.provider_id, order.reference_id, order.lines) == ("100001", "3pl:ORD-1:1", [("MUG-RED", 2)])
    assert (order.status, order.detail, order.reason) == (ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT, None)
    [shipment] = order.shipments
    assert (shipment.carrier, shipment.tracking_number, shipment.fulfillment_center) == (
        "SandboxPost",
        "SBX3PL1",
        "Sandbox FC",
    )
    assert order.updated_at == event.occurred_at


def test_shipbob_events_that_are_not_usable_are_refused() -> None:
    now = datetime(2026, 1, 5, 10, 0, 6, tzinfo=UTC)
    client = ShipBobClient(Settings(threepl_webhook_secret=SECRET))
    for payload, why in [
        ([1, 2], "not a JSON object"),
        ({"data": ORDER}, "names no topic"),
        ({"topic": "order.shipped"}, "without its order"),
        ({"topic": "order.shipped", "data": {"reference_id": "x"}}, "order is not readable"),
    ]:
        with pytest.raises(ThreePLWebhookRefused, match=why):
            client.verify_webhook(*shipbob_event(payload, now), now=now)
    # A topic this engine has no use for still verifies (and carries no order)
    other = client.verify_webhook(*shipbob_event({"topic": "return.completed", "data": {"id": 5}}, now), now=now)
    assert (other.topic, other.order) == ("return.completed", None)
    # Signed with another secret, or no secret set: refused
    with pytest.raises(ThreePLWebhookRefused, match="no v1 signature"):
        other_key = "whsec_" + base64.b64encode(b"k" * 24).decode()
        client.verify_webhook(*shipbob_event({"topic": "x"}, now, secret=other_key), now=now)
    unset = ShipBobClient(Settings(threepl_webhook_secret=None))
    with pytest.raises(ThreePLWebhookRefused, match="no webhook secret"):
        unset.verify_webhook(*shipbob_event({"topic": "x"}, now), now=now)
