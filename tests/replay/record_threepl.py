"""Recorded paths of orders whose goods sit at a 3PL (tests/replay/record.py runs them): the 3PL's news by its
safety-net poll, or pushed (its webhooks, as the HTTP API signals them) with a repeat and a stale one; a
rejection re-allocated to our own shelf; a cancel the 3PL accepts, one it refuses; a ship SLA missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from common.api import FulfillmentApi
from common.errors import Conflict
from common.integrations.shipbob import ShipBobClient
from common.integrations.threepl_api import ThreePLOrder
from common.models import OrderStatus
from common.threepl.contracts import ThreePLState, reference_id
from common.threepl.news import news_of
from tests.orders import order_dict
from tests.threepl import new_sku, threepl_warehouse
from workflows.order import OrderWorkflow

if TYPE_CHECKING:
    from tests.replay.record import Stack

TPL, OWN = "REC-3PL", "REC-OWN"


@asynccontextmanager
async def at_the_3pl(stack: Stack, lines: int = 1, own: int = 0, **pace: float) -> AsyncIterator[str]:
    """A SKU the recording's 3PL warehouse stocks (and our own, with `own` units); the sandbox 3PL's pace."""
    store = stack.api.store
    await threepl_warehouse(store, TPL, "GB", "LDN")
    await store.catalog.upsert_warehouse(OWN, "Our annex", "US", None)
    sku = await new_sku(store, "REC")
    await store.stock.receive_stock(sku, 10, TPL)
    if own:
        await store.stock.receive_stock(sku, own, OWN)
    sb = stack.sandbox.threepl
    sb.set_stock({sku: 10})
    before = sb.settings()
    sb.configure(ship_after=pace.get("ship_after", 1.0), deliver_after=pace.get("deliver_after", 1.0))
    try:
        yield sku
    finally:
        sb.configure(ship_after=before["ship_after"], deliver_after=before["deliver_after"])


async def place(stack: Stack, path: str, sku: str, **settings: float) -> str:
    api = FulfillmentApi(
        stack.api.client,
        stack.api.store,
        stack.api.settings.model_copy(update={"threepl_poll_interval": 0.5, **settings}),
    )
    order_id = f"REC-{path.replace('_', '-')}"
    await api.place_order(order_dict(order_id, {sku: 1}))
    return order_id


async def threepl_shipped_by_poll(stack: Stack, path: str) -> str:
    async with at_the_3pl(stack) as sku:
        order_id = await place(stack, path, sku)
        view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED and view.shipments[0].fulfilled_by == "shipbob", view.timeline
    return order_id


async def threepl_news_pushed(stack: Stack, path: str) -> str:
    """Webhooks bring the news; the hourly poll is only the safety net."""
    async with at_the_3pl(stack, ship_after=3600, deliver_after=3600) as sku:
        order_id = await place(stack, path, sku, threepl_poll_interval=3600)
        await stack.wait_for(order_id, OrderStatus.ACCEPTED_BY_3PL)
        reference = reference_id(order_id, 1)
        client = ShipBobClient(stack.api.settings)
        try:
            accepted = news_of(await _order(client, reference), source="webhook")
            stack.sandbox.threepl.act(reference, "ship")
            shipped = news_of(await _order(client, reference), source="webhook")
            stack.sandbox.threepl.act(reference, "deliver")
            delivered = news_of(await _order(client, reference), source="webhook")
        finally:
            await client.close()
        assert accepted and shipped and delivered and shipped.state == ThreePLState.SHIPPED
        handle = stack.handle(order_id)
        for update in (shipped, shipped, accepted, delivered):  # a repeat and a stale one change nothing
            await handle.signal(OrderWorkflow.threepl_update, update)
        view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def _order(client: ShipBobClient, reference: str) -> ThreePLOrder:
    order = await client.get_order(reference)
    assert order is not None
    return order


async def threepl_rejected_reallocated(stack: Stack, path: str) -> str:
    async with at_the_3pl(stack, own=5) as sku:
        stack.sandbox.threepl.refuse_next(1, "Merchant account on credit hold")
        order_id = await place(stack, path, sku)
        await stack.confirm_pick(order_id)
        view = await stack.finished(order_id)
    assert [p.warehouse for p in view.shipments] == [TPL, OWN], view.timeline
    return order_id


async def threepl_cancelled(stack: Stack, path: str) -> str:
    async with at_the_3pl(stack, ship_after=3600) as sku:
        order_id = await place(stack, path, sku)
        await stack.wait_for(order_id, OrderStatus.ACCEPTED_BY_3PL)
        await stack.api.cancel_order(order_id, "customer changed their mind")
        view = await stack.finished(order_id)
    assert view.status == OrderStatus.CANCELLED, view.timeline
    return order_id


async def threepl_cancel_refused(stack: Stack, path: str) -> str:
    async with at_the_3pl(stack, ship_after=3600) as sku:
        order_id = await place(stack, path, sku)
        await stack.wait_for(order_id, OrderStatus.ACCEPTED_BY_3PL)
        stack.sandbox.threepl.act(reference_id(order_id, 1), "ship")
        try:
            await stack.api.cancel_order(order_id, "too late")
        except Conflict as refused:
            assert "already shipped" in str(refused)
        else:
            raise AssertionError("the cancel of a parcel the 3PL shipped was accepted")
        stack.sandbox.threepl.configure(deliver_after=1.0)
        view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def threepl_late_then_shipped(stack: Stack, path: str) -> str:
    async with at_the_3pl(stack, ship_after=3600) as sku:
        order_id = await place(stack, path, sku, threepl_ship_sla=1.0)
        for _ in range(100):
            if (await stack.api.order_status(order_id)).shipments[0].late_at_3pl:
                break
            await asyncio.sleep(0.2)
        stack.sandbox.threepl.act(reference_id(order_id, 1), "ship")
        view = await stack.finished(order_id)
    assert any("did not ship it" in e.note for e in view.timeline), view.timeline
    return order_id


SCENARIOS = {
    "threepl_shipped_by_poll": threepl_shipped_by_poll,
    "threepl_news_pushed": threepl_news_pushed,
    "threepl_rejected_reallocated": threepl_rejected_reallocated,
    "threepl_cancelled": threepl_cancelled,
    "threepl_cancel_refused": threepl_cancel_refused,
    "threepl_late_then_shipped": threepl_late_then_shipped,
}
