"""One order's trace, as an ops person sees it in their tracing backend: the storefront's `POST /v1/orders` and
everything the order then did in Temporal (the workflow, every activity it ran) under one trace id, with no
customer data in it.

The real pieces with tracing on through common.tracing (an in-memory exporter in place of the OTLP one): the
HTTP app, a Temporal client from common.privacy.connect, and the real worker built on that client, on a task
queue and a database of their own, so the session's untraced worker takes none of this order's tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from common import tracing
from common.api import FulfillmentApi
from common.config import Settings
from common.demo import seed_demo
from common.http.app import create_app
from common.privacy import connect
from common.store import Store
from tests.integration.http.conftest import new_key
from tests.integration.http.test_carrier_webhooks import wait_for
from tests.orders import order_dict
from workers.worker import running_worker

# What the order's customer is: none of it may appear in a span
CUSTOMER_DATA = ["Ada Lovelace", "ada@example.com", "+15555550100", "1 Analytical Way", "N1 9GU"]


@dataclass
class Traced:
    http: httpx.AsyncClient
    api: FulfillmentApi
    exporter: InMemorySpanExporter
    headers: dict[str, str]


@pytest.fixture(scope="module")
async def traced(dev_server: WorkflowEnvironment, stack_settings: Settings, var_dir: Path) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(stack_settings, "fulfill-test", exporter=exporter) is not None
    settings = stack_settings.model_copy(
        update={
            "task_queue": f"traced-{uuid.uuid4().hex[:6]}",
            "database_url": f"sqlite+aiosqlite:///{var_dir / f'traced-{uuid.uuid4().hex[:6]}.db'}",
        }
    )
    store = await Store.open(settings.database_url)
    await seed_demo(store)
    client = await connect(settings)  # with the tracing interceptor, now that tracing is on
    try:
        async with running_worker(client, settings, store):
            api = FulfillmentApi(client, store, settings)
            app = create_app(settings, api)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://engine.test", timeout=60) as http:
                yield Traced(http, api, exporter, await new_key(store, "intake"))
    finally:
        await store.close()
        tracing.shutdown()  # the tests after these make untraced clients again


async def place_and_deliver(traced: Traced) -> str:
    """An order placed over HTTP, picked by the warehouse, shipped, delivered and closed; its id."""
    order_id = f"ORD-T{uuid.uuid4().hex[:8]}"
    response = await traced.http.post("/v1/orders", json=order_dict(order_id), headers=traced.headers)
    assert response.status_code == 202, response.text
    picking = await wait_for(traced.api, order_id, "PICKING")
    assert picking.pick_task_id
    await traced.api.confirm_pick(picking.pick_task_id)
    # return_window is 0 here: an order closes at delivery
    await asyncio.wait_for(traced.api.client.get_workflow_handle(f"order-{order_id}").result(), timeout=60)
    return order_id


def spans_of(exporter: InMemorySpanExporter, workflow_id: str) -> list[ReadableSpan]:
    tracing.force_flush()
    return [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("temporalWorkflowID") == workflow_id]


async def test_one_trace_runs_from_the_http_request_through_every_activity(traced: Traced) -> None:
    order_id = await place_and_deliver(traced)

    order_spans = spans_of(traced.exporter, f"order-{order_id}")
    # The start is the request's child, and the workflow's run the start's
    [start] = [s for s in order_spans if s.name == "StartWorkflow:OrderWorkflow"]
    assert start.parent is not None
    [request] = [s for s in traced.exporter.get_finished_spans() if s.context.span_id == start.parent.span_id]
    assert request.name == "POST /v1/orders"
    assert request.attributes == {
        "http.request.method": "POST",
        "http.response.status_code": 202,
        "http.route": "/v1/orders",
    }
    [run] = [s for s in order_spans if s.name == "RunWorkflow:OrderWorkflow"]
    assert run.parent is not None and run.parent.span_id == start.context.span_id

    in_trace = [s for s in order_spans if s.context.trace_id == request.context.trace_id]
    # Outside it only what other callers did to the order (each call its own trace): the warehouse's signal,
    # the status queries of this test
    others = {s.name.split(":")[0] for s in order_spans if s not in in_trace}
    assert others <= {"SignalWorkflow", "QueryWorkflow", "HandleQuery"}, others
    names = {s.name for s in in_trace}
    # Each step the order took, scheduled by the workflow and run by the worker: the local activities (the
    # steps of workflows.steps) and the regular one (the tracking poll)
    steps = ["reserve_stock", "create_pick_task", "buy_label", "notify_customer", "commit_shipment"]
    for activity in [*steps, "await_tracking_change"]:
        assert f"StartActivity:{activity}" in names, sorted(names)
        assert f"RunActivity:{activity}" in names, sorted(names)
    # The warehouse's confirmation shows where it reached the order, and the order's end
    assert {"HandleSignal:pick_confirmed", "CompleteWorkflow:OrderWorkflow"} <= names


async def test_no_span_carries_customer_data(traced: Traced) -> None:
    await place_and_deliver(traced)

    tracing.force_flush()
    for span in traced.exporter.get_finished_spans():
        texts = [span.name, span.status.description or ""]
        texts += [str(v) for v in (span.attributes or {}).values()]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        texts += [str(v) for v in span.resource.attributes.values()]
        for text in texts:
            for value in CUSTOMER_DATA:
                assert value not in text, f"{value!r} in span {span.name}: {text!r}"
