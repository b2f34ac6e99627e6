"""The delivery log's records, the claim of one message, and the refusal for an unknown key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from common.db.errors import StoreError

# The provider's word on a message after accepting it, in the order it moves: Twilio's message statuses
# (https://www.twilio.com/docs/messaging/api/message-resource#message-status-values), an email bounce, and a
# number that opted out. A status only replaces one of a lower rank: callbacks come out of order, and a late
# "sent" after "delivered" changes nothing. The rank-4 statuses are final.
DELIVERY_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "bounced": 4,  # email: the relay refused it for good (SMTP 5xx)
    "opted-out": 4,  # SMS: the number texted STOP (not sent), or Twilio refused it as unsubscribed (21610)
    "read": 5,  # WhatsApp and RCS only
}
# What makes a customer SMS fall back to email
DELIVERY_FAILURES = frozenset({"undelivered", "failed"})

# What became of the email fallback of an SMS that was not delivered (notifications.fallback_status)
FALLBACK_PENDING = "pending"  # to start (the HTTP API starts it at once; the worker's relay if it could not)
FALLBACK_STARTED = "started"  # its workflow runs
FALLBACK_SENT = "sent"  # the email went out (its own row in the log: the SMS key + ":email-fallback")
FALLBACK_NOT_NEEDED = "not-needed"  # the email of the same notice went to the customer
FALLBACK_NO_EMAIL = "no-email"  # no address to send it to
FALLBACK_REFUSED = "refused"  # the relay refused the address for good
FALLBACK_DONE = frozenset({FALLBACK_SENT, FALLBACK_NOT_NEEDED, FALLBACK_NO_EMAIL, FALLBACK_REFUSED})


@dataclass(frozen=True)
class NotificationRecord:
    key: str
    order_id: str
    event: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    status: str  # sending | sent | failed (ours: whether the provider accepted it)
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    # The provider's word after accepting it (see DELIVERY_RANK), with its error (e.g. "30003: Unreachable
    # destination handset"), and when it last changed
    delivery_status: str | None = None
    delivery_error: str | None = None
    delivery_updated_at: datetime | None = None
    # A customer SMS: where its email fallback would go, and what became of it (FALLBACK_*)
    fallback_recipient: str | None = None
    fallback_status: str | None = None


@dataclass(frozen=True)
class NotificationClaim:
    """One message to claim in the delivery log before sending it (see `NotificationStore.claim_notifications`)."""

    key: str
    order_id: str
    event: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    # An SMS: the customer's email, for the fallback should the SMS not be delivered
    fallback_recipient: str | None = None


@dataclass(frozen=True)
class DeliveryUpdate:
    """What a provider's report did to the log (`NotificationStore.record_delivery`)."""

    record: NotificationRecord | None  # the message it is about, as it stands now; None: not ours
    changed: bool  # False: a status that does not move it forward (out of order, or a repeat)

    @property
    def fallback_pending(self) -> bool:
        return self.record is not None and self.record.fallback_status == FALLBACK_PENDING


class NotificationNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no notification claimed under {key!r}")


class SmsFallbackRequest(BaseModel):
    """The email that stands in for a customer SMS the network did not deliver (workflow `sms-fallback:<key>`)."""

    sms_key: str  # the SMS's key in the delivery log
    order_id: str


class SmsFallbackResult(BaseModel):
    # sent | not-needed (the notice's email went out) | no-email | refused (the relay refused the address) |
    # unknown (no such SMS in the log)
    outcome: str
    email_key: str | None = None  # the fallback email's key in the delivery log, when one was sent
    detail: str = ""
