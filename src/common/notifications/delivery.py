"""What providers tell us back about messages, as the engine records and shows it: Twilio's error codes in words,
the TwiML answers to inbound texts, the email fallback of an SMS, and the delivery log as people see it (contact
details masked). Pure functions."""

from __future__ import annotations

import re
from datetime import datetime
from xml.sax.saxutils import escape

from pydantic import BaseModel, Field

from common.notifications.contracts import NotificationRecord

# Twilio's delivery error codes a status callback may carry (https://www.twilio.com/docs/api/errors), in words.
TWILIO_DELIVERY_ERRORS = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered (carrier violation)",
    30008: "Unknown error",
    30009: "Missing segment",
    30010: "Message price exceeds max price",
    21610: "Attempt to send to unsubscribed recipient",
}

FALLBACK_SUFFIX = ":email-fallback"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def describe_twilio_error(code: str | int | None, message: str | None = None) -> str | None:
    """A callback's error in words, "30003: Unreachable destination handset", from its ErrorCode (and its
    ErrorMessage, if it has one)."""
    if code is None or str(code).strip() in ("", "0"):
        return message or None
    text = str(code).strip()
    words = message or (TWILIO_DELIVERY_ERRORS.get(int(text)) if text.isdigit() else None)
    return f"{text}: {words}" if words else f"Twilio error {text}"


def twiml(*messages: str) -> str:
    """A TwiML reply: one <Message> per text, or an empty <Response/> (no answer)."""
    if not messages:
        return EMPTY_TWIML
    verbs = "".join(f"<Message>{escape(m)}</Message>" for m in messages)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>'


def fallback_key(sms_key: str) -> str:
    """The delivery-log key of the email that stands in for an SMS that was not delivered."""
    return sms_key + FALLBACK_SUFFIX


def fallback_workflow_id(sms_key: str) -> str:
    return f"sms-fallback:{sms_key}"


def sibling_email_key(sms_key: str) -> str | None:
    """The key of the email of the same notice (`notify:<order>:<event>:email[:occurrence]`), None if `sms_key`
    is no customer SMS key."""
    parts = sms_key.split(":", 4)
    if len(parts) < 4 or parts[0] != "notify" or parts[3] != "sms":
        return None
    parts[3] = "email"
    return ":".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The delivery log as people see it

_EMAIL = re.compile(r"^([^@\s]+)@([^@\s]+)$")


def mask_recipient(recipient: str) -> str:
    """A phone number or email address with most of it hidden: +1•••••0123, a•••@example.com."""
    value = recipient.strip()
    if (match := _EMAIL.match(value)) is not None:
        return f"{match.group(1)[0]}•••@{match.group(2)}"
    digits = value.lstrip("+")
    if value.startswith("+") and digits.isdigit() and len(digits) > 6:
        return f"+{digits[0]}•••••{digits[-4:]}"
    return "•••" + value[-2:] if len(value) > 4 else "•••"


class NotificationView(BaseModel):
    """One message of the delivery log, its recipient masked."""

    key: str = Field(examples=["notify:ORD-1001:shipped:sms"])
    order_id: str
    event: str = Field(examples=["shipped"])
    channel: str = Field(examples=["sms"])
    to: str = Field(description="The recipient, masked", examples=["+1•••••0100"])
    created_at: datetime = Field(description="When it was first claimed for sending")
    sent_at: datetime | None = Field(description="When the provider accepted it")
    status: str = Field(description="Ours: sending, sent or failed (the provider did not accept it)")
    error: str | None = Field(description="Why it was not sent (a failed attempt, an opt-out)")
    delivery_status: str | None = Field(
        description="The provider's word after accepting it: queued, sent, delivered, undelivered, failed (Twilio), "
        "bounced (email), opted-out (the number texted STOP)"
    )
    delivery_error: str | None = Field(examples=["30003: Unreachable destination handset"])
    delivery_updated_at: datetime | None
    fallback: str | None = Field(
        description="An SMS not delivered: what became of its email fallback (pending, started, sent, not-needed: "
        "the notice's email went out, no-email, refused)"
    )
    attempts: int


def notification_view(record: NotificationRecord) -> NotificationView:
    return NotificationView(
        key=record.key,
        order_id=record.order_id,
        event=record.event,
        channel=record.channel,
        to=mask_recipient(record.recipient),
        created_at=record.created_at,
        sent_at=record.sent_at,
        status=record.status,
        error=record.error,
        delivery_status=record.delivery_status,
        delivery_error=record.delivery_error,
        delivery_updated_at=record.delivery_updated_at,
        fallback=record.fallback_status,
        attempts=record.attempts,
    )
