"""The notification log on a real SQLite file: claims, sent, failed."""

from __future__ import annotations

from datetime import UTC

import pytest

from common.db.errors import StoreError
from common.store import Store

# ---------------------------------------------------------------------------------------------------------
# Notification log


async def test_claim_notification_semantics(store: Store) -> None:
    key = "notify:ORD-1:shipped:email"
    kwargs = {
        "order_id": "ORD-1",
        "event": "shipped",
        "channel": "email",
        "recipient": "ada@example.com",
        "subject": "Your order shipped",
        "body": "Tracking: SP123",
    }
    assert await store.notifications.claim_notification(key, **kwargs) is True
    # The sender crashed before marking: the key is still "sending", so a retry claims it again.
    assert await store.notifications.claim_notification(key, **kwargs) is True
    await store.notifications.mark_notification_failed(key, "SMTP 451 try later")
    [record] = await store.notifications.notifications("ORD-1")
    assert (record.status, record.error, record.attempts) == ("failed", "SMTP 451 try later", 2)
    assert await store.notifications.claim_notification(key, **kwargs) is True
    await store.notifications.mark_notification_sent(key, "msg-42")
    assert await store.notifications.claim_notification(key, **kwargs) is False
    assert await store.notifications.claim_notification(key, **kwargs) is False
    await store.notifications.mark_notification_failed(key, "late failure report")  # never downgrades a sent message
    [record] = await store.notifications.notifications()
    assert (record.status, record.provider_message_id, record.error, record.attempts) == (
        "sent",
        "msg-42",
        None,
        3,
    )
    assert record.sent_at is not None and record.sent_at.tzinfo is UTC
    assert (record.recipient, record.subject, record.body) == (
        "ada@example.com",
        "Your order shipped",
        "Tracking: SP123",
    )

    sms_key = "notify:ORD-1:shipped:sms"
    sms = {**kwargs, "channel": "sms", "subject": None}
    assert await store.notifications.claim_notification(sms_key, **sms) is True  # type: ignore[arg-type]
    assert [n.key for n in await store.notifications.notifications("ORD-1")] == [key, sms_key]
    assert await store.notifications.notifications("ORD-2") == []
    with pytest.raises(StoreError):
        await store.notifications.mark_notification_sent("notify:nope:x:email", "id")
    with pytest.raises(StoreError):
        await store.notifications.mark_notification_failed("notify:nope:x:email", "err")
