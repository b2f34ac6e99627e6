"""The promise: an order's shipping speed becomes a promised delivery date at intake (or the storefront's own
date is kept), and its label is the rate that keeps it, with the choice and the alternatives in its timeline."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from common.api import FulfillmentApi
from tests.integration.http.test_carrier_webhooks import wait_for
from tests.integration.http.test_http_orders import assert_problem
from tests.orders import order_dict


def new_id() -> str:
    return f"ORD-P{uuid.uuid4().hex[:8]}"


async def labelled(api: FulfillmentApi, order_id: str) -> None:
    picking = await wait_for(api, order_id, "PICKING")
    assert picking.pick_task_id
    await api.confirm_pick(picking.pick_task_id)
    await wait_for(api, order_id, "LABELED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED", "COMPLETED")


async def test_express_promises_three_days_and_buys_the_cheapest_rate_that_keeps_it(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id = new_id()
    today = datetime.now(UTC).date()
    response = await http.post("/v1/orders", json=order_dict(order_id, shipping_speed="express"), headers=intake)
    assert response.status_code == 202, response.text
    await labelled(api, order_id)
    view = await api.order_status(order_id)
    assert view.promised_delivery == today + timedelta(days=3)
    # Sandbox rates: Ground 5 days $5.10, Saver 3 days $7.90, Priority 2 days $9.80, Overnight 1 day $24.50
    assert (view.carrier, view.service) == ("QuickShip", "Saver")
    note = next(e.note for e in view.timeline if e.status.value == "LABELED")
    assert note.startswith("QuickShip Saver label, tracking SBX")
    assert "cheapest that keeps the promise" in note and f"promised by {today + timedelta(days=3)}" in note
    assert "SandboxPost Ground $5.10" in note and "misses the promise" in note


async def test_the_storefronts_own_promise_is_kept_and_a_past_one_refused(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id = new_id()
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    body = order_dict(order_id, shipping_speed="standard", promised_delivery=tomorrow.isoformat())
    assert (await http.post("/v1/orders", json=body, headers=intake)).status_code == 202
    await labelled(api, order_id)
    view = await api.order_status(order_id)
    assert view.promised_delivery == tomorrow
    assert (view.carrier, view.service) == ("QuickShip", "Overnight")  # only overnight arrives by tomorrow

    past = order_dict(new_id(), promised_delivery=(date.today() - timedelta(days=10)).isoformat())
    problem = assert_problem(await http.post("/v1/orders", json=past, headers=intake), 422)
    assert problem["errors"][0]["field"] == "promised_delivery" and "in the past" in problem["detail"]
