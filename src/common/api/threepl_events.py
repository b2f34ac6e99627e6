"""A 3PL's webhook, received: verified by its provider's adapter, recorded once, and told to the order
(FulfillmentApi's `threepl_event`). As with the carrier's webhooks, the order hears of it through the
order-signal outbox, written in the transaction that records the event and moves the parcel.

Events come at least once and in no guaranteed order: the parcel only moves forward (ThreePLStore), so a late
`order.shipped` after `order.shipment.delivered` changes nothing, and the reconciliation pull
(workers/reconciler.py) brings what a lost one did not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from common.config import Settings
from common.errors import NotFound, WebhookRefused
from common.integrations.threepl_api import ORDER_TOPICS, ThreePLEvent, ThreePLWebhookRefused
from common.integrations.threepl_providers import threepl_providers
from common.store import Store
from common.threepl.news import news_of


class Outcome(StrEnum):
    APPLIED = "applied"  # the parcel moved; its order is told
    DUPLICATE = "duplicate"  # this event id came before: acknowledged, nothing done
    STALE = "stale"  # not news: the parcel is as far along already (a late or repeated state)
    NOT_OURS = "not-ours"  # no parcel of ours has this reference
    IGNORED = "ignored"  # a topic that moves no parcel (inventory...)


@dataclass(frozen=True)
class ThreePLEventReceipt:
    event_id: str
    topic: str
    outcome: Outcome
    reference_id: str | None = None
    order_id: str | None = None  # the key of the order's rows
    state: str | None = None  # the parcel's state the event reports
    signal_id: int | None = None  # the outbox row to deliver now


async def receive_threepl_event(
    store: Store,
    settings: Settings,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime | None = None,
) -> ThreePLEventReceipt:
    """NotFound for a provider this engine has no client for; WebhookRefused (401) for a webhook its adapter
    refuses (forged, tampered, unsigned, outside the tolerance). Nothing is changed by either."""
    event = _verified(settings, provider, body, headers, now)
    if event.topic not in ORDER_TOPICS or event.order is None:
        # Inventory and other topics move no parcel: acknowledged all the same, so the 3PL does not retry them.
        return ThreePLEventReceipt(event.event_id, event.topic, Outcome.IGNORED)
    news = news_of(event.order, source="webhook")
    reference = event.order.reference_id
    if news is None:
        return ThreePLEventReceipt(event.event_id, event.topic, Outcome.NOT_OURS, reference)
    recorded = await store.threepl.record_event(provider, event.event_id, event.topic, news)
    # A repeat is acknowledged (2xx), unlike the carrier's (401): Standard Webhooks senders retry one
    # webhook-id until they get a 2xx, so refusing a repeat would have it retried for days.
    if not recorded.first_time:
        return ThreePLEventReceipt(event.event_id, event.topic, Outcome.DUPLICATE, reference)
    if recorded.parcel is None:
        return ThreePLEventReceipt(event.event_id, event.topic, Outcome.NOT_OURS, reference)
    outcome = Outcome.APPLIED if recorded.signal_id is not None else Outcome.STALE
    order_id = recorded.parcel.order_id
    return ThreePLEventReceipt(
        event.event_id, event.topic, outcome, reference, order_id, news.state.value, recorded.signal_id
    )


def _verified(
    settings: Settings, provider: str, body: bytes, headers: Mapping[str, str], now: datetime | None
) -> ThreePLEvent:
    adapter = threepl_providers(settings).get(provider)  # verification opens no connection: nothing to close
    if adapter is None:
        raise NotFound(f"no 3PL named {provider!r} is configured here")
    try:
        return adapter.verify_webhook(body, headers, now=now)
    except ThreePLWebhookRefused as err:
        raise WebhookRefused(f"3PL webhook refused: {err.reason}") from None
