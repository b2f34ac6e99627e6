"""Prometheus metrics from the real processes: a worker (`python -m workers.worker`) with its metrics port on and
the HTTP API (`python -m workers.api`), against a dev server and the sandboxes of their own. Orders placed over
HTTP (two delivered, one backordered then cancelled), then both endpoints are scraped: the SDK's metrics are
there, the business counters say what the orders did, and no label carries a customer's data or an order id.
That a replay counts nothing again: tests/replay/test_replay_metrics.py."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from temporalio.client import Client

from common import metrics
from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.demo import seed_demo
from common.privacy import data_converter
from common.store import Store
from sandbox import SandboxServers, free_port_settings
from tests.integration.conftest import settings_env
from tests.integration.worker_process import DevServerProcess, WorkerProcess, eventually, free_port
from tests.orders import order_dict
from workers.picker import run_picker

CUSTOMER_DATA = ("Ada", "Lovelace", "ada@example.com", "5555550100", "Analytical", "N1 9GU")


@dataclass
class Stack:
    http: httpx.AsyncClient
    worker_metrics_url: str


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    api_port, metrics_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    sandbox_settings = free_port_settings(
        sandbox_in_transit_after=0.3, sandbox_out_for_delivery_after=0.6, sandbox_delivered_after=0.9
    )
    async with (
        SandboxServers(sandbox_settings, db_path=tmp_path / "sandbox.db") as sandbox,
        DevServerProcess(tmp_path / "temporal.db", tmp_path / "temporal.log") as dev,
    ):
        await dev.start()
        base = Settings(
            temporal_address=dev.address,
            task_queue=f"fulfillment-metrics-{uuid.uuid4().hex[:6]}",
            var_dir=tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}",
            tracking_poll_interval=0.3,
            return_window=0,
            carrier_webhook_secret=None,
            api_host="127.0.0.1",
            api_port=api_port,
            worker_metrics_port=metrics_port,
        )
        settings = sandbox.settings_for_clients(base, engine_url=api_url)
        store = await Store.open(settings.database_url)
        await seed_demo(store)
        key = (await store.api_keys.create("metrics-test", ["intake", "ops", "read"])).secret
        client = await Client.connect(dev.address, data_converter=data_converter(get_settings()))
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        api_log = tmp_path / "api.log"
        with api_log.open("ab") as out:
            api_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers.api", env=settings_env(settings), stdout=out, stderr=out
            )
        stop_picker = asyncio.Event()
        picker = asyncio.create_task(run_picker(FulfillmentApi(client, store, settings), 0, stop_picker, poll_s=0.2))
        try:
            await worker.start(client)
            # Generous: a status query on a loaded two-core machine may first replay the order
            auth = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=api_url, headers=auth, timeout=60) as http:

                async def ready() -> bool:
                    assert api_proc.returncode is None, api_log.read_text()[-3000:]
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(ready, "the API process to be ready", 30, 0.2)
                yield Stack(http, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            stop_picker.set()
            await picker
            if api_proc.returncode is None:
                api_proc.terminate()
                await asyncio.wait_for(api_proc.wait(), 30)
            await worker.terminate()
            await store.close()


async def scrape(url: str) -> list[Sample]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


async def status_of(http: httpx.AsyncClient, order_id: str) -> str:
    return str((await http.get(f"/v1/orders/{order_id}")).json()["status"])


async def test_worker_and_api_metrics_say_what_the_orders_did(stack: Stack) -> None:
    http = stack.http
    orders = {"ORD-M1": {"MUG-RED": 1}, "ORD-M2": {"MUG-RED": 2}, "ORD-M3": {"POSTER-A2": 1}}
    for order_id, lines in orders.items():
        assert (await http.post("/v1/orders", json=order_dict(order_id, lines))).status_code == 202
    for order_id in ("ORD-M1", "ORD-M2"):
        await eventually(lambda o=order_id: _is(http, o, "COMPLETED"), f"{order_id} to complete", 120, 0.3)  # type: ignore[misc]
    await eventually(lambda: _is(http, "ORD-M3", "BACKORDERED"), "ORD-M3 to wait for stock", 60, 0.3)
    cancel = await http.post("/v1/orders/ORD-M3/cancel", json={"reason": "customer changed their mind"})
    assert cancel.status_code == 200, cancel.text
    await eventually(lambda: _is(http, "ORD-M3", "CANCELLED"), "ORD-M3 to be cancelled", 60, 0.3)
    # A webhook without a signature is refused
    assert (await http.post("/v1/webhooks/twilio/status", data={"MessageSid": "SM1"})).status_code == 401

    expected = {
        metrics.ORDERS_PLACED: 3,
        metrics.ORDERS_SHIPPED: 2,
        metrics.ORDERS_DELIVERED: 2,
        metrics.ORDERS_CANCELLED: 1,
        metrics.BACKORDERS: 1,
        metrics.STOCK_OUTS: 1,
    }

    got: dict[str, float] = {}

    async def counted() -> list[Sample] | None:
        samples = await scrape(stack.worker_metrics_url)
        got.update({m.name: total(samples, m.exported()) for m in expected})
        return samples if got == {m.name: n for m, n in expected.items()} else None

    try:
        samples = await eventually(counted, "the worker's counters to match the orders", 30, 0.5)
    except AssertionError:
        names = sorted({s.name for s in await scrape(stack.worker_metrics_url)})
        want = {m.name: n for m, n in expected.items()}
        raise AssertionError(f"counted {got}, expected {want}; exported: {names}") from None
    assert total(samples, metrics.ORDERS_FAILED.exported()) == 0
    assert total(samples, metrics.DELIVERIES.exported(), outcome="on_time") == 2
    assert total(samples, metrics.DELIVERIES.exported(), outcome="late") == 0
    for histogram in (metrics.PICK_SECONDS, metrics.PLACE_TO_SHIP_SECONDS, metrics.PLACE_TO_DELIVERY_SECONDS):
        assert total(samples, f"{histogram.name}_count") == 2, histogram.name
    assert total(samples, f"{metrics.LABEL_COST_CENTS.name}_count") == 2
    assert total(samples, f"{metrics.LABEL_COST_CENTS.name}_sum") > 0
    assert total(samples, metrics.NOTIFICATIONS.exported(), channel="email", outcome="sent") > 0
    assert total(samples, metrics.NOTIFICATIONS.exported(), channel="sms", outcome="sent") > 0
    names = {s.name for s in samples}
    for sdk in metrics.SDK_METRICS:  # the ones deploy/ uses
        assert sdk in names or f"{sdk}_bucket" in names, f"{sdk} not exported; exported: {sorted(names)}"
    assert_no_customer_data(samples)

    api = await scrape(f"{http.base_url}/metrics")  # no API key needed
    route = metrics.HTTP_REQUEST_SECONDS.name + "_count"
    assert total(api, route, method="POST", route="/v1/orders", status="202") == 3
    assert total(api, route, method="GET", route="/v1/orders/{order_id}") > 0
    webhooks = metrics.WEBHOOK_EVENTS.exported()
    assert total(api, webhooks, provider="twilio", outcome="refused") == 1
    assert total(api, webhooks, provider="twilio", outcome="verified") > 0  # the sandbox's signed SMS callbacks
    assert_no_customer_data(api)


async def _is(http: httpx.AsyncClient, order_id: str, status: str) -> bool:
    return await status_of(http, order_id) == status


def assert_no_customer_data(samples: list[Sample]) -> None:
    values = {v for s in samples for v in s.labels.values()}
    leaked = [v for v in values if "ORD-M" in v or any(c.lower() in v.lower() for c in CUSTOMER_DATA)]
    assert not leaked, leaked
