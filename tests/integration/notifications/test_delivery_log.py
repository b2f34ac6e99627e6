"""What providers report back, in the delivery log on both databases: delivery statuses only move forward, an
undelivered customer SMS gets its email fallback pending once; SMS opt-outs per number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.notifications.contracts import FALLBACK_PENDING, FALLBACK_SENT, FALLBACK_STARTED, NotificationClaim
from common.store import Store
from tests.integration.db_fixtures import BACKENDS, database_url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_url(request.param, tmp_path) as url:
        s = await Store.open(url)
        try:
            yield s
        finally:
            await s.close()


SMS = "notify:ORD-1:shipped:sms"
EMAIL = "notify:ORD-1:shipped:email"


async def claim_sms(store: Store, key: str = SMS, *, channel: str = "sms") -> None:
    claim = NotificationClaim(
        key, "ORD-1", "shipped", channel, "+15555550100", "Order ORD-1 has shipped", "On its way", "ada@example.com"
    )
    assert await store.notifications.claim_notifications([claim]) == {key}


async def delivery(store: Store, key: str = SMS) -> tuple[str | None, str | None, str | None]:
    record = await store.notifications.get(key)
    assert record is not None
    return record.delivery_status, record.delivery_error, record.fallback_status


async def test_statuses_move_forward_only(store: Store) -> None:
    await claim_sms(store)
    await store.notifications.mark_notification_sent(SMS, "SM1")
    for status in ("queued", "sent", "delivered"):
        update = await store.notifications.record_delivery("SM1", status)
        assert update.changed and update.record is not None and update.record.delivery_status == status
    # Out of order: a late "sent", and an "undelivered" after "delivered" (same rank: final), change nothing
    for late in ("sent", "queued", "undelivered"):
        update = await store.notifications.record_delivery("SM1", late, "30003: Unreachable destination handset")
        assert not update.changed
    assert await delivery(store) == ("delivered", None, None)
    record = await store.notifications.get(SMS)
    assert record is not None and record.status == "sent" and record.delivery_updated_at is not None


async def test_a_callback_before_the_sid_is_recorded_finds_the_message_by_key(store: Store) -> None:
    await claim_sms(store)  # still "sending": the sender has not recorded Twilio's sid yet
    assert (await store.notifications.record_delivery("SM2", "queued")).record is None  # no key: not found
    update = await store.notifications.record_delivery("SM2", "queued", key=SMS)
    assert update.changed and update.record is not None and update.record.key == SMS
    await store.notifications.mark_notification_sent(SMS, "SM2")
    assert (await store.notifications.record_delivery("SM2", "delivered")).changed
    # Another message's callback naming this key does not touch it once its sid is known
    assert (await store.notifications.record_delivery("SM-other", "failed", key=SMS)).record is None
    assert await delivery(store) == ("delivered", None, None)


async def test_an_undelivered_customer_sms_gets_its_fallback_pending_once(store: Store) -> None:
    await claim_sms(store)
    await store.notifications.mark_notification_sent(SMS, "SM3")
    update = await store.notifications.record_delivery("SM3", "undelivered", "30003: Unreachable destination handset")
    assert update.changed and update.fallback_pending
    assert await delivery(store) == ("undelivered", "30003: Unreachable destination handset", FALLBACK_PENDING)
    assert [r.key for r in await store.notifications.pending_fallbacks()] == [SMS]
    assert await store.notifications.set_fallback_status(SMS, FALLBACK_STARTED, only_from=FALLBACK_PENDING)
    assert not await store.notifications.set_fallback_status(SMS, FALLBACK_STARTED, only_from=FALLBACK_PENDING)
    await store.notifications.set_fallback_status(SMS, FALLBACK_SENT)
    # A repeat, or a "failed" after it, does not make it pending again
    assert not (await store.notifications.record_delivery("SM3", "failed")).changed
    assert await delivery(store) == ("undelivered", "30003: Unreachable destination handset", FALLBACK_SENT)
    assert await store.notifications.pending_fallbacks() == []


async def test_only_a_customer_sms_falls_back(store: Store) -> None:
    await claim_sms(store, EMAIL, channel="email")
    await store.notifications.mark_notification_sent(EMAIL, "<m@fulfill>")
    update = await store.notifications.record_delivery("<m@fulfill>", "failed")
    assert update.changed and not update.fallback_pending
    assert await store.notifications.pending_fallbacks() == []


async def test_a_failed_send_keeps_the_providers_word_until_it_is_claimed_again(store: Store) -> None:
    await claim_sms(store)
    await store.notifications.mark_notification_failed(SMS, "not sent", delivery_status="opted-out")
    assert await delivery(store) == ("opted-out", None, None)
    await claim_sms(store)  # a new attempt (the number opted in again): the last attempt's word is gone
    record = await store.notifications.get(SMS)
    assert record is not None and (record.status, record.delivery_status, record.attempts) == ("sending", None, 2)
    with pytest.raises(ValueError, match="unknown delivery status"):
        await store.notifications.record_delivery("SM1", "lost")


async def test_opt_outs_per_number(store: Store) -> None:
    assert not await store.sms_opt_outs.is_opted_out("+15555550100")
    await store.sms_opt_outs.record("+15555550100", opted_out=True, keyword="STOP")
    assert await store.sms_opt_outs.is_opted_out("+15555550100")
    assert not await store.sms_opt_outs.is_opted_out("+15555550101")
    await store.sms_opt_outs.record("+15555550100", opted_out=False, keyword="START")
    found = await store.sms_opt_outs.get("+15555550100")
    assert found is not None and (found.opted_out, found.keyword) == (False, "START")


async def test_the_log_of_the_latest_messages(store: Store) -> None:
    for n in range(3):
        await claim_sms(store, f"notify:ORD-1:e{n}:sms")
    assert [r.key for r in await store.notifications.notifications(limit=2)] == [
        "notify:ORD-1:e1:sms",
        "notify:ORD-1:e2:sms",
    ]
