"""The record of parcels handed to a 3PL, on a real SQLite file: news only moves a parcel forward, so webhooks
that come twice, late or out of order end the same; a carrier's tracking event for the tracking number a 3PL
shipped with reaches the order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.models import Address, OrderLine, ShippingSpeed
from common.store import Store
from common.threepl.contracts import ThreePLState, ThreePLSubmission, ThreePLUpdate, parse_reference_id, reference_id

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
SUBMISSION = ThreePLSubmission(
    order_id="ORD-1",
    order_number="ORD-1",
    shipment_no=2,
    warehouse="SB-RENO",
    provider="shipbob",
    lines=[OrderLine(sku="MUG-RED", quantity=1)],
    ship_to=Address(name="A", line1="1 Road", city="Reno", postal_code="89501", country="US"),
    speed=ShippingSpeed.STANDARD,
)
REF = SUBMISSION.reference_id


def news(state: ThreePLState, minutes: int, **more: str) -> ThreePLUpdate:
    return ThreePLUpdate(
        reference_id=REF, shipment_no=2, state=state, changed_at=T0 + timedelta(minutes=minutes), **more
    )


def test_references_name_the_order_key_and_parcel() -> None:
    assert reference_id("ORD-1~2", 3) == "3pl:ORD-1~2:3"
    assert parse_reference_id("3pl:ORD-1~2:3") == ("ORD-1~2", 3)
    assert parse_reference_id("3pl:a:b:4") == ("a:b", 4)
    for other in ("ORD-1", "3pl:ORD-1", "3pl::1", "label:ORD-1:1", "3pl:ORD-1:x"):
        assert parse_reference_id(other) is None


async def test_news_moves_a_parcel_forward_only(shop: Store) -> None:
    first = await shop.threepl.record_submission(SUBMISSION, "9001", news(ThreePLState.ACCEPTED, 0))
    assert (first.state, first.provider_order_id, first.accepted_at) == (ThreePLState.ACCEPTED, "9001", T0)
    # A repeat of the submission keeps the first record
    again = await shop.threepl.record_submission(SUBMISSION, "9002", news(ThreePLState.ACCEPTED, 0))
    assert (again.provider_order_id, again.submitted_at) == ("9001", first.submitted_at)

    shipped = news(ThreePLState.SHIPPED, 10, carrier="UPS", tracking_number="1Z9")
    assert await shop.threepl.apply(shipped)
    assert not await shop.threepl.apply(shipped)  # the same webhook twice
    assert not await shop.threepl.apply(news(ThreePLState.ACCEPTED, 5))  # a late one
    assert not await shop.threepl.apply(news(ThreePLState.ON_HOLD, 20, reason="late hold"))  # behind shipped
    assert await shop.threepl.apply(news(ThreePLState.DELIVERED, 30))
    record = await shop.threepl.get(REF)
    assert record is not None
    assert (record.state, record.carrier, record.tracking_number) == (ThreePLState.DELIVERED, "UPS", "1Z9")
    assert (record.shipped_at, record.delivered_at) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=30))


async def test_a_hold_is_lifted_by_later_news_only(shop: Store) -> None:
    await shop.threepl.record_submission(SUBMISSION, "9001", news(ThreePLState.ON_HOLD, 0, reason="bad address"))
    assert not await shop.threepl.apply(news(ThreePLState.ACCEPTED, -5))  # from before the hold
    assert await shop.threepl.apply(news(ThreePLState.ACCEPTED, 5))
    record = await shop.threepl.get(REF)
    assert record is not None and (record.state, record.reason) == (ThreePLState.ACCEPTED, None)


async def test_a_webhook_is_recorded_once_with_the_orders_signal(shop: Store) -> None:
    await shop.threepl.record_submission(SUBMISSION, "9001", news(ThreePLState.ACCEPTED, 0))
    shipped = news(ThreePLState.SHIPPED, 10, carrier="UPS", tracking_number="1Z9")

    first = await shop.threepl.record_event("shipbob", "msg_1", "order.shipped", shipped)
    repeat = await shop.threepl.record_event("shipbob", "msg_1", "order.shipped", shipped)
    late = await shop.threepl.record_event("shipbob", "msg_0", "order.shipped", news(ThreePLState.ACCEPTED, 1))
    stranger = await shop.threepl.record_event(
        "shipbob", "msg_2", "order.shipped", shipped.model_copy(update={"reference_id": "3pl:ORD-9:1"})
    )

    assert first.first_time and first.parcel is not None and first.signal_id is not None
    assert not repeat.first_time and repeat.signal_id is None
    assert late.first_time and late.signal_id is None  # not news: the order hears nothing
    assert stranger.first_time and stranger.parcel is None and stranger.signal_id is None
    rows = await shop.signals.order_signals("order-ORD-1", pending_only=True)
    assert [(r.name, r.payload["state"]) for r in rows] == [("threepl_update", "shipped")]


async def test_a_carrier_event_for_a_3pl_tracking_number_reaches_its_order(shop: Store) -> None:
    await shop.threepl.record_submission(SUBMISSION, "9001", news(ThreePLState.ACCEPTED, 0))
    await shop.threepl.apply(news(ThreePLState.SHIPPED, 10, carrier="UPS", tracking_number="1Z9"))

    recorded = await shop.labels.record_tracking_event("easypost", "evt_1", "1Z9", {"status": "in_transit"})
    unknown = await shop.labels.record_tracking_event("easypost", "evt_2", "1Z-NOT-OURS", {"status": "in_transit"})

    assert recorded.order_id == "ORD-1" and recorded.signal_id is not None
    assert unknown.order_id is None and unknown.signal_id is None


async def test_reconciliation_cursors_never_move_back(shop: Store) -> None:
    assert await shop.threepl.orders_since("shipbob") is None
    await shop.threepl.advance_orders_since("shipbob", T0)
    await shop.threepl.advance_orders_since("shipbob", T0 - timedelta(hours=1))
    assert await shop.threepl.orders_since("shipbob") == T0
    await shop.threepl.mark_inventory_synced("shipbob", T0)
    assert await shop.threepl.inventory_synced_at("shipbob") == T0
    assert await shop.threepl.orders_since("shipbob") == T0
