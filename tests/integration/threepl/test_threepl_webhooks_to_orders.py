"""The 3PL's webhooks drive an order on the real stack: the sandbox 3PL signs and posts them to the engine's HTTP
API, which records each once and signals the order through the outbox. Repeats and reordering change nothing;
with every webhook lost, the reconciliation pull brings the same news. The order's own poll is hourly here, so
what moves it is the push."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.integrations.threepl_providers import threepl_providers
from common.models import OrderStatus, OrderView, workflow_id_for
from common.store import Store
from common.threepl.contracts import reference_id
from sandbox import SandboxServers
from tests.orders import sample_order
from tests.threepl import new_sku, threepl_warehouse
from workers.reconciler import ThreePLReconciler

pytestmark = pytest.mark.usefixtures("worker")

TPL = "TPL-HOOKS"


@pytest.fixture
def pushing(sandbox: SandboxServers, engine_http: str) -> Iterator[Any]:
    """The session's sandbox 3PL posting its webhooks to the session's engine API, shipping only when told."""
    sb = sandbox.threepl
    before = sb.settings()
    sb.configure(ship_after=3600, deliver_after=3600)
    sb.webhooks.configure(enabled=True, url=f"{engine_http}/v1/webhooks/3pl/shipbob", retry_delays=[0.2, 0.5])
    yield sb
    sb.webhooks.configure(url=None, drop_next=0, duplicate_next=0, reorder_next=0)
    sb.configure(ship_after=before["ship_after"], deliver_after=before["deliver_after"])


@pytest.fixture
def hourly_poll(dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings) -> FulfillmentApi:
    return FulfillmentApi(dev_server.client, store, stack_settings.model_copy(update={"threepl_poll_interval": 3600}))


async def placed_at_the_3pl(api: FulfillmentApi, store: Store, sb: Any) -> tuple[str, str]:
    await threepl_warehouse(store, TPL, "GB", "LDN")
    sku = await new_sku(store)
    await store.stock.receive_stock(sku, 5, TPL)
    sb.set_stock({sku: 5})
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(sample_order(order_id, {sku: 1}))
    await until(api, order_id, lambda v: v.status == OrderStatus.ACCEPTED_BY_3PL)
    return order_id, sku


async def first_poll_done(api: FulfillmentApi, order_id: str) -> None:
    """Wait until the order's safety-net poll of the 3PL (at once, then hourly) has made its first attempt: the
    poll activity is pending on its second attempt (the first found nothing new)."""
    handle = api.client.get_workflow_handle(workflow_id_for(order_id))
    for _ in range(240):
        pending = (await handle.describe()).raw_description.pending_activities
        if any(a.activity_type.name == "await_3pl_change" and a.attempt >= 2 for a in pending):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{order_id}: the 3PL poll never made its first attempt")


async def until(api: FulfillmentApi, order_id: str, done: Any, attempts: int = 120) -> OrderView:
    for _ in range(attempts):
        view = await api.order_status(order_id)
        if done(view):
            return view
        await asyncio.sleep(0.25)
    raise AssertionError(f"{order_id}: {view.status} {[e.note for e in view.timeline]}")


async def test_repeated_and_reordered_webhooks_ship_and_deliver_the_order_once(
    hourly_poll: FulfillmentApi, store: Store, pushing: Any
) -> None:
    order_id, sku = await placed_at_the_3pl(hourly_poll, store, pushing)
    pushing.webhooks.configure(duplicate_next=4, reorder_next=2)  # shipped and delivered: twice each, swapped
    pushing.act(reference_id(order_id, 1), "ship")
    pushing.act(reference_id(order_id, 1), "deliver")

    view = await until(hourly_poll, order_id, lambda v: v.status == OrderStatus.COMPLETED)

    assert view.shipments[0].tracking_number
    sent = [f"{n.event}:{n.channel}" for n in await hourly_poll.notifications(order_id)]
    assert sent.count("shipped:email") == 1 and sent.count("delivered:email") == 1, sent
    assert (await store.stock.stock_levels(sku, TPL))[0].on_hand == 4
    topics = [e.topic for e in pushing.webhooks.events(reference_id(order_id, 1))]
    assert "order.shipped" in topics and "order.shipment.delivered" in topics


async def test_a_forged_webhook_changes_nothing(
    hourly_poll: FulfillmentApi, store: Store, pushing: Any, engine_http: str
) -> None:
    order_id, _ = await placed_at_the_3pl(hourly_poll, store, pushing)
    body = (
        '{"topic": "order.shipped", "data": {"id": 1, "reference_id": "' + reference_id(order_id, 1) + '", '
        '"status": "Completed", "shipments": []}}'
    )
    headers = {"webhook-id": "msg_forged", "webhook-timestamp": "1764633600", "webhook-signature": "v1,Zm9yZ2Vk"}
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{engine_http}/v1/webhooks/3pl/shipbob", content=body, headers=headers)
    assert answer.status_code == 401
    await asyncio.sleep(1.0)
    view = await hourly_poll.order_status(order_id)
    assert view.status == OrderStatus.ACCEPTED_BY_3PL and view.shipments[0].tracking_number is None
    await hourly_poll.cancel_order(order_id, "test over")


async def test_with_every_webhook_lost_the_reconciliation_pull_ships_the_order(
    dev_server: WorkflowEnvironment, hourly_poll: FulfillmentApi, store: Store, pushing: Any, stack_settings: Settings
) -> None:
    order_id, _ = await placed_at_the_3pl(hourly_poll, store, pushing)
    await first_poll_done(hourly_poll, order_id)  # its next one is an hour away: only the pull can bring news
    pushing.webhooks.configure(drop_next=10)
    pushing.act(reference_id(order_id, 1), "ship")
    await asyncio.sleep(1.0)
    assert (await hourly_poll.order_status(order_id)).shipments[0].tracking_number is None  # nothing came

    providers = threepl_providers(stack_settings)
    try:
        await ThreePLReconciler(dev_server.client, store, providers).round()
    finally:
        for provider in providers.values():
            await provider.close()

    view = await until(
        hourly_poll, order_id, lambda v: bool(v.shipments) and v.shipments[0].tracking_number is not None
    )
    assert view.shipments[0].status in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED)
