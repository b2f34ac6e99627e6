"""The sandbox 3PL signs its webhooks by hand (it may not use the engine's code): its signatures are the
Standard Webhooks test vector's, and the engine's verifier accepts what it signs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.integrations.threepl_webhooks import verify_standard_webhook, webhook_key
from sandbox.threepl_webhooks import sign, signing_key
from tests.unit.integrations.test_threepl_webhooks import BODY, MSG_ID, SECRET, SIGNATURE, TIMESTAMP


def test_the_sandbox_signs_the_standard_test_vector() -> None:
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_the_engine_verifies_what_the_sandbox_signs() -> None:
    body = '{"topic": "order.shipped", "name": "Zoë"}'.encode()
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(SECRET, "msg_2", 1700000000, body),
    }
    verified = verify_standard_webhook(body, headers, webhook_key(SECRET), now=datetime.fromtimestamp(1700000000, UTC))
    assert verified.payload == {"topic": "order.shipped", "name": "Zoë"}


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_a"])
def test_a_secret_that_is_not_whsec_base64_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        signing_key(secret)


def test_an_unpadded_secret_is_taken_as_the_engine_takes_it() -> None:
    unpadded = "whsec_" + "a2V5"[:3]  # "key" is a2V5; a 2-byte key unpadded
    assert signing_key(unpadded) == b"ke"
    body = b"{}"
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(unpadded, "m", 1700000000, body),
    }
    assert verify_standard_webhook(body, headers, webhook_key(unpadded), now=datetime.fromtimestamp(1700000000, UTC))
