"""Ops act while the order is busy. An Update that ends the order (a cancel: compensations run as local
activities and the workflow completes in the same workflow task) can meet an event arriving meanwhile (a
signal, an activity's result). The server then fails that task (UnhandledCommand) and aborts the Update
unapplied. The ops request must still be applied, once: never lost to the race, nor reported as "the engine
did not answer" while the order goes on as if nobody had asked."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from common.api import FulfillmentApi
from common.models import OrderStatus
from tests.orders import order_dict
from workflows.order import OrderWorkflow

pytestmark = pytest.mark.usefixtures("worker")


async def _picking(api: FulfillmentApi) -> str:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(order_id, {"MUG-BLUE": 1}))
    for _ in range(300):
        if (await api.order_status(order_id)).status == OrderStatus.PICKING:
            return order_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"{order_id} never reached PICKING")


async def _stream_signals(handle: WorkflowHandle[Any, Any], stop: asyncio.Event) -> None:
    while not stop.is_set():  # harmless: the order is not waiting for stock
        await handle.signal(OrderWorkflow.stock_received, "MUG-BLUE")


async def test_a_cancel_lands_while_signals_stream_into_the_order(api: FulfillmentApi) -> None:
    for _ in range(5):
        order_id = await _picking(api)
        stop = asyncio.Event()
        streamers = [asyncio.create_task(_stream_signals(api._handle(order_id), stop)) for _ in range(1)]
        await asyncio.sleep(0.05)
        try:
            cancelled = await api.cancel_order(order_id, reason="customer changed mind")
        finally:
            stop.set()
            await asyncio.gather(*streamers, return_exceptions=True)
        assert cancelled.status == OrderStatus.CANCELLED
