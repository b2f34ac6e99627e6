"""`fulfill notifications` as ops read it in 80 columns: each message's time, event, channel, the recipient
masked, our status and the provider's word (delivered, undelivered with its error and the email fallback,
opted-out, bounced); --json the same, masked too. Database only: no engine needed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from common.config import get_settings
from common.notifications.contracts import NotificationClaim
from common.store import Store
from sandbox import OutboxMessage
from tests.cli.conftest import assert_readable, fulfill, ok
from tests.cli.test_markup import _outbox_module


def claim(key: str, channel: str, recipient: str) -> NotificationClaim:
    order_id, event = key.split(":")[1:3]
    return NotificationClaim(key, order_id, event, channel, recipient, None, "text", "ada@example.com")


async def _log() -> None:
    async with await Store.open(get_settings().database_url) as store:
        n = store.notifications
        keys = {
            "notify:ORD-1001:shipped:email": ("email", "ada@example.com"),
            "notify:ORD-1001:shipped:sms": ("sms", "+15555550123"),
            "notify:ORD-1001:out_for_delivery:sms": ("sms", "+15555550123"),
            "notify:ORD-1001:delivered:email": ("email", "bob@example.org"),
            "notify:ORD-2002:order_confirmed:sms": ("sms", "+15555559876"),
        }
        await n.claim_notifications([claim(k, c, r) for k, (c, r) in keys.items()])
        await n.mark_notifications_sent([("notify:ORD-1001:shipped:email", "<a@fulfill>")])
        await n.mark_notifications_sent([("notify:ORD-1001:shipped:sms", "SM1")])
        await n.record_delivery("SM1", "undelivered", "30003: Unreachable destination handset")
        await n.set_fallback_status("notify:ORD-1001:shipped:sms", "not-needed")
        await n.mark_notification_failed(
            "notify:ORD-1001:out_for_delivery:sms", "not sent: opted out", delivery_status="opted-out"
        )
        await n.mark_notification_failed(
            "notify:ORD-1001:delivered:email", "SMTP 550 mailbox unavailable", delivery_status="bounced"
        )


def test_the_log_reads_in_80_columns_with_recipients_masked(shop: str) -> None:
    asyncio.run(_log())
    shown = ok(fulfill("notifications", "--order", "ORD-1001"))
    assert_readable(shown, "out_for_delivery", "sms +1•••••0123", "a•••@example.com", "b•••@example.org", "opted-out")
    assert "+15555550123" not in shown and "ada@example.com" not in shown
    # the provider's word and its error wrap in the last column, beside the time
    assert "undelivered (30003:" in shown and "Unreachable destination" in shown and "not-needed" in shown
    assert "bounced" in shown and "ORD-2002" not in shown

    everything = ok(fulfill("notifications"))
    assert_readable(everything, "ORD-2002", "order_confirmed")
    latest = ok(fulfill("notifications", "--limit", "1"))
    assert "ORD-2002" in latest and "ORD-1001" not in latest

    as_json = json.loads(ok(fulfill("notifications", "--order", "ORD-1001", "--json")))
    assert [m["to"] for m in as_json if m["channel"] == "sms"] == ["+1•••••0123", "+1•••••0123"]
    shipped = next(m for m in as_json if m["key"] == "notify:ORD-1001:shipped:sms")
    assert (shipped["status"], shipped["delivery_status"], shipped["fallback"]) == ("sent", "undelivered", "not-needed")
    assert "ada@example.com" not in json.dumps(as_json)


def test_no_messages_says_so(shop: str) -> None:
    assert "no messages about order ORD-9" in ok(fulfill("notifications", "--order", "ORD-9"))


@pytest.mark.usefixtures("shop")
def test_the_outbox_shows_each_sms_status(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime(2026, 12, 1, 8, 42, 7, tzinfo=UTC)

    def sms(n: int, to: str, status: str) -> OutboxMessage:
        return OutboxMessage(
            id=n,
            channel="sms",
            sender="+15555550000",
            recipient=to,
            body="Order shipped",
            order_id="ORD-1",
            status=status,
            received_at=at,
        )

    async def fetch(base: str, order: str | None) -> list[OutboxMessage]:
        return [sms(1, "+15555550100", "delivered"), sms(2, "+15555530003", "undelivered")]

    monkeypatch.setattr(_outbox_module(), "fetch_outbox", fetch)
    output = ok(fulfill("outbox"))
    assert_readable(output, "status", "delivered", "undelivered")
    assert [line.split()[4] for line in output.splitlines()[2:4]] == ["delivered", "undelivered"]
