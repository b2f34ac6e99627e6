"""A carrier's tracking webhook, received: verified, recorded once, and told to the order (FulfillmentApi's
`carrier_event`). The order hears of it through the order-signal outbox, written in the transaction that
records the event: delivered at once, or by the worker's relay when the engine is away."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.errors import InvalidRequest, NotFound, WebhookRefused
from common.integrations.carrier_webhooks import TRACKER_EVENTS, WebhookSignatureError, verify_event
from common.shipping.contracts import TrackingPush
from common.store import Store

SOURCE = "easypost"
# An event older than this is a replay, not a delivery: EasyPost retries a failed delivery for a few days at most.
MAX_EVENT_AGE = timedelta(days=7)


@dataclass(frozen=True)
class CarrierEventReceipt:
    event_id: str
    applied: bool  # False: not a tracking event, or not about a parcel of ours (acknowledged all the same)
    order_id: str | None
    note: str
    signal_id: int | None = None  # the outbox row to deliver now


async def receive_carrier_event(
    store: Store, secret: str | None, body: bytes, headers: Mapping[str, str], now: datetime | None = None
) -> CarrierEventReceipt:
    """WebhookRefused (401) for a forged, tampered or replayed event; InvalidRequest for a signed body that is not
    an event; NotFound when carrier webhooks are not configured. Nothing is changed by any of them."""
    if not secret:
        raise NotFound("carrier webhooks are not enabled here: set FULFILL_CARRIER_WEBHOOK_SECRET")
    try:
        event = verify_event(body, headers, secret)
    except WebhookSignatureError as err:
        raise WebhookRefused(f"carrier webhook refused: {err}") from None
    except ValueError as err:
        raise InvalidRequest(f"carrier webhook: {err}") from None
    now = now or datetime.now(UTC)
    if event.created_at is not None and now - event.created_at > MAX_EVENT_AGE:
        raise WebhookRefused(f"carrier event {event.event_id} is from {event.created_at:%Y-%m-%d}: a replay")
    if event.description not in TRACKER_EVENTS or event.tracker is None:
        return CarrierEventReceipt(event.event_id, False, None, f"ignored: {event.description or 'no description'}")
    tracker = event.tracker

    push = TrackingPush(
        event_id=event.event_id,
        tracking_number=tracker.tracking_code,
        status=tracker.status,
        estimated_delivery=tracker.est_delivery_date,
        message=tracker.message or "",
        occurred_at=event.occurred_at or now,
    )
    recorded = await store.labels.record_tracking_event(
        SOURCE, event.event_id, tracker.tracking_code, push.model_dump(mode="json"), kind=event.description
    )
    if not recorded.first_time:
        raise WebhookRefused(f"carrier event {event.event_id} was received before: a replay; nothing changed")
    if recorded.order_id is None:
        note = f"tracking {tracker.tracking_code} is not a parcel of ours"
        return CarrierEventReceipt(event.event_id, False, None, note)
    note = f"tracking {tracker.tracking_code} {tracker.status.value}"
    return CarrierEventReceipt(event.event_id, True, recorded.order_id, note, recorded.signal_id)
