"""The HTTP API when the engine is slow or away: an action still under way is 202 (and goes on), an
unreachable Temporal is 503 with Retry-After and starts nothing; the readiness check says which part fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.http.app import create_app
from common.privacy import data_converter
from common.store import Store
from sandbox import SandboxServers
from tests.integration.http.test_http_orders import assert_problem, new_id, wait_for_status
from tests.orders import order_dict


async def _client(app_api: FulfillmentApi, settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings, app_api))
    return httpx.AsyncClient(transport=transport, base_url="http://engine.test", timeout=60)


@pytest.fixture
async def impatient(
    dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """An API that waits half a second for an action to be carried out."""
    api = FulfillmentApi(dev_server.client, store, stack_settings, update_wait=0.5)
    async with await _client(api, stack_settings) as client:
        yield client


async def test_an_action_still_under_way_is_202_and_is_carried_out(
    impatient: httpx.AsyncClient,
    http: httpx.AsyncClient,
    intake: dict[str, str],
    ops: dict[str, str],
    warehouse: dict[str, str],
    sandbox: SandboxServers,
) -> None:
    order_id = new_id()
    assert (await http.post("/v1/orders", json=order_dict(order_id), headers=intake)).status_code == 202
    view = await wait_for_status(http, ops, order_id, "PICKING")
    sandbox.start_outage("carrier")
    try:
        confirmed = await http.post(f"/v1/picks/{view['pick_task_id']}/confirm", headers=warehouse)
        assert confirmed.status_code == 200, confirmed.text
        for _ in range(240):  # the label purchase waits for the carrier
            view = (await http.get(f"/v1/orders/{order_id}", headers=ops)).json()
            if view["provider_waits"]:
                break
            await asyncio.sleep(0.25)
        # Before undoing the label, the cancel asks the carrier what it has: it waits for the carrier too.
        cancelled = await impatient.post(f"/v1/orders/{order_id}/cancel", json={"reason": "changed mind"}, headers=ops)
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.headers["location"] == f"/v1/orders/{order_id}"
        assert cancelled.json()["status"] != "CANCELLED"
    finally:
        sandbox.end_outage("carrier")
    done = await wait_for_status(http, ops, order_id, "CANCELLED")
    assert done["provider_waits"] == []
    assert_problem(await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "x"}, headers=ops), 409)


async def test_temporal_unreachable_is_503_and_starts_nothing(
    store: Store, stack_settings: Settings, api: FulfillmentApi, intake: dict[str, str]
) -> None:
    # As the API process starts while Temporal is away: its client connects lazily, at the first call.
    gone = await Client.connect("127.0.0.1:1", lazy=True, data_converter=data_converter(get_settings()))
    async with await _client(FulfillmentApi(gone, store, stack_settings), stack_settings) as client:
        order_id = new_id()
        response = await client.post("/v1/orders", json=order_dict(order_id), headers=intake)
        assert_problem(response, 503)
        assert response.headers["retry-after"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["temporal"].startswith("failing")
    # The engine is back: the same request, retried, places the order once.
    async with await _client(api, stack_settings) as client:
        assert (await client.post("/v1/orders", json=order_dict(order_id), headers=intake)).status_code == 202
        assert (await client.get(f"/v1/orders/{order_id}", headers=intake)).status_code == 200
