"""The pure helpers of what providers report back: opt-out keywords as Twilio matches them, masked recipients,
TwiML answers, Twilio's error codes in words, the keys of an SMS's email and fallback."""

from __future__ import annotations

import pytest

from common.notifications.delivery import (
    describe_twilio_error,
    fallback_key,
    mask_recipient,
    sibling_email_key,
    twiml,
)
from common.notifications.opt_outs import keyword_of

SMS = "notify:ORD-1:shipped:sms"


@pytest.mark.parametrize(
    ("body", "opt_out_type", "expected"),
    [
        ("STOP", None, "stop"),
        ("  stop! ", None, "stop"),
        ("Unsubscribe", None, "stop"),
        ("stopall", None, "stop"),
        ("cancel", None, "stop"),
        ("end", None, "stop"),
        ("quit", None, "stop"),
        ("please stop", None, None),  # Twilio: only the whole message is a keyword
        ("start", None, "start"),
        ("YES", None, "start"),
        ("unstop", None, "start"),
        ("help", None, "help"),
        ("Info", None, "help"),
        ("arret", "STOP", "stop"),  # Advanced Opt-Out names the kind itself
        ("where is my parcel?", None, None),
    ],
)
def test_keywords(body: str, opt_out_type: str | None, expected: str | None) -> None:
    assert keyword_of(body, opt_out_type)[0] == expected


def test_masks_and_texts() -> None:
    assert mask_recipient("+15555550123") == "+1•••••0123"
    assert mask_recipient("ada@example.com") == "a•••@example.com"
    assert "0100" not in mask_recipient("0100")
    assert twiml() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert twiml("Fish & chips <3").endswith("<Response><Message>Fish &amp; chips &lt;3</Message></Response>")
    assert describe_twilio_error("30003") == "30003: Unreachable destination handset"
    assert describe_twilio_error("39999") == "Twilio error 39999"
    assert describe_twilio_error(None) is None
    assert (
        sibling_email_key("notify:ORD-1:delivery_delayed:sms:2026-12-01")
        == "notify:ORD-1:delivery_delayed:email:2026-12-01"
    )
    assert sibling_email_key("ops:ORD-1:pick_overdue") is None
    assert fallback_key(SMS) == SMS + ":email-fallback"
