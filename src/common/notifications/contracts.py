"""The delivery log's records, the claim of one message, and the refusal for an unknown key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from common.db.errors import StoreError


@dataclass(frozen=True)
class NotificationRecord:
    key: str
    order_id: str
    event: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    status: str  # sending | sent | failed
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None


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


class NotificationNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no notification claimed under {key!r}")
