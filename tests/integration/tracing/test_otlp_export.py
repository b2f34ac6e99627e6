"""Tracing as it is deployed: the HTTP API and the worker as processes of their own (`python -m workers.api`,
`python -m workers.worker`) with FULFILL_OTEL_EXPORTER_OTLP_ENDPOINT pointing at a collector (here a stub
speaking OTLP/HTTP, decoding each export request as a collector does). And with it unset: nothing is sent,
even to a collector named by the standard OTEL_EXPORTER_OTLP_ENDPOINT variable."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from temporalio.testing import WorkflowEnvironment

from common.config import Settings
from common.demo import seed_demo
from common.store import Store
from tests.integration.conftest import FULFILL
from tests.integration.http.conftest import new_key
from tests.integration.worker_process import REPO, WorkerProcess, eventually, free_port, worker_env
from tests.orders import order_dict


@dataclass
class ExportedSpan:
    service: str
    name: str
    trace_id: bytes
    attributes: dict[str, str]


@dataclass
class Collector:
    url: str
    spans: list[ExportedSpan] = field(default_factory=list)
    requests: int = 0

    def names(self, service: str) -> set[str]:
        return {s.name for s in self.spans if s.service == service}


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    port = free_port()
    got = Collector(f"http://127.0.0.1:{port}")

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        got.requests += 1
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: str(getattr(a.value, a.value.WhichOneof("value"))) for a in span.attributes}
                    got.spans.append(ExportedSpan(resource["service.name"], span.name, span.trace_id, attributes))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield got
    await runner.cleanup()


class ApiProcess:
    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        self.env, self.log_path, self.url = env, log_path, f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers.api", cwd=REPO, env=self.env, stdout=log, stderr=log
            )

        async def ready() -> bool:
            assert self.proc is not None and self.proc.returncode is None, self.log_path.read_text()[-3000:]
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, "the API process to answer", within=30, interval=0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), timeout=30)


@pytest.fixture
async def own_settings(stack_settings: Settings, var_dir: Path) -> AsyncIterator[tuple[Settings, Store]]:
    """A task queue and a database of its own: only this test's worker process runs its orders."""
    tag = uuid.uuid4().hex[:6]
    settings = stack_settings.model_copy(
        update={
            "task_queue": f"otlp-{tag}",
            "database_url": f"sqlite+aiosqlite:///{var_dir / f'otlp-{tag}.db'}",
            "api_port": free_port(),
        }
    )
    store = await Store.open(settings.database_url)
    await seed_demo(store)
    yield settings, store
    await store.close()


async def test_the_api_and_the_worker_export_one_orders_trace_to_the_collector(
    dev_server: WorkflowEnvironment, own_settings: tuple[Settings, Store], collector: Collector, var_dir: Path
) -> None:
    settings, store = own_settings
    settings = settings.model_copy(update={"otel_exporter_otlp_endpoint": collector.url})
    intake, warehouse = await new_key(store, "intake"), await new_key(store, "warehouse")
    env = {**worker_env(settings), "PYTHONUNBUFFERED": "1"}
    log = var_dir / f"otlp-{settings.task_queue}.log"
    order_id = f"ORD-O{uuid.uuid4().hex[:8]}"
    async with WorkerProcess(settings, log) as worker, ApiProcess(env, log, settings.api_port) as api:
        await worker.start(dev_server.client)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            placed = await http.post("/v1/orders", json=order_dict(order_id), headers=intake)
            assert placed.status_code == 202, placed.text

            async def status(*wanted: str) -> dict | None:
                view = (await http.get(f"/v1/orders/{order_id}", headers=intake)).json()
                return view if view["status"] in wanted else None

            picking = await eventually(lambda: status("PICKING"), "the order to wait for its pick", within=30)
            confirmed = await http.post(f"/v1/picks/{picking['pick_task_id']}/confirm", headers=warehouse, json={})
            assert confirmed.status_code == 200, confirmed.text
            await eventually(lambda: status("LABELED", "IN_TRANSIT", "DELIVERED"), "the label", within=30)

        # The exporters send in batches every few seconds
        def exported() -> bool:
            api_spans = "POST /v1/orders" in collector.names("fulfill-api")
            return api_spans and "RunActivity:buy_label" in collector.names("fulfill-worker")

        await eventually(exported, "the worker's spans at the collector", within=30)
        await worker.terminate()

    [request] = [s for s in collector.spans if s.name == "POST /v1/orders"]
    assert request.service == "fulfill-api"
    order = [s for s in collector.spans if s.attributes.get("temporalWorkflowID", "").endswith(order_id)]
    in_trace = {(s.service, s.name) for s in order if s.trace_id == request.trace_id}
    assert ("fulfill-api", "StartWorkflow:OrderWorkflow") in in_trace
    for name in ["RunWorkflow:OrderWorkflow", "RunActivity:reserve_stock", "RunActivity:buy_label"]:
        assert ("fulfill-worker", name) in in_trace, sorted(in_trace)
    assert order_id not in request.attributes.values()  # ids in the URL stay out: the route template only


async def test_with_no_endpoint_set_nothing_is_exported(
    own_settings: tuple[Settings, Store], collector: Collector, var_dir: Path
) -> None:
    settings, store = own_settings
    assert settings.otel_exporter_otlp_endpoint is None  # the default
    # An SDK's own configuration would export here: the engine reads FULFILL_* settings only
    env = {**worker_env(settings), "PYTHONUNBUFFERED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    async with ApiProcess(env, var_dir / "otlp-off.log", settings.api_port) as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            placed = await http.post("/v1/orders", json=order_dict(), headers=await new_key(store, "intake"))
            assert placed.status_code == 202, placed.text
        await asyncio.sleep(6)  # longer than an exporter's batch delay (5 s)
    assert collector.requests == 0


async def test_the_cli_exports_its_start_of_an_order(
    own_settings: tuple[Settings, Store], collector: Collector, tmp_path: Path
) -> None:
    settings, _ = own_settings
    settings = settings.model_copy(update={"otel_exporter_otlp_endpoint": collector.url})
    order = order_dict(f"ORD-O{uuid.uuid4().hex[:8]}")
    (tmp_path / "order.json").write_text(json.dumps(order))
    # Not subprocess.run: the collector answers the command's export in this event loop
    placed = await asyncio.create_subprocess_exec(
        str(FULFILL), "order", "place", str(tmp_path / "order.json"), env=worker_env(settings), stderr=PIPE
    )
    _, stderr = await asyncio.wait_for(placed.communicate(), timeout=60)
    assert placed.returncode == 0, stderr.decode()
    # The command exits at once: its spans are exported on the way out
    [start] = [s for s in collector.spans if s.name == "StartWorkflow:OrderWorkflow"]
    assert start.service == "fulfill-cli"
    assert start.attributes["temporalWorkflowID"] == f"order-{order['order_id']}"
