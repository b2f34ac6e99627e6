"""The confirmation goes out first, on the customer task queue, in a workflow task of its own (patch
CONFIRMATION_FIRST): in a rush of orders each customer hears before the orders' heavier first steps run. If no
worker serves that queue (a deployment that runs an older worker beside a new one), the confirmation is still
sent, once, through the engine's own queue."""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from common.temporal import customer_task_queue
from tests.orders import sample_order
from tests.workflows.orders.test_order_workflow import confirm_pick, start, statuses, worker, world
from workflows.order import OrderWorkflow


async def test_the_confirmation_is_sent_on_the_customer_queue_before_stock_is_reserved(
    env: WorkflowEnvironment,
) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 5})
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await handle.result()

    assert statuses(view)[-1] == "COMPLETED"
    events = [e async for e in handle.fetch_history_events()]
    confirmation = next(
        e.activity_task_scheduled_event_attributes
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    assert confirmation.activity_type.name == "notify_customer"
    assert confirmation.task_queue.name == customer_task_queue("test-orders")
    first_schedule = next(
        i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    first_local_step = next(
        i for i, e in enumerate(events) if e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )
    assert first_schedule < first_local_step, "the confirmation must go out before the reservation (a local step)"
    assert fake.messages.count(("order_confirmed", "email")) == 1
    assert fake.messages.count(("order_confirmed", "sms")) == 1


async def test_without_a_customer_queue_worker_the_confirmation_goes_out_once_through_the_engine_queue(
    env: WorkflowEnvironment,
) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 5})
    # Only the engine's own queue is served, as by a worker of an older build
    async with Worker(env.client, task_queue="test-orders", workflows=[OrderWorkflow], activities=fake.activities()):
        handle = await start(env.client, order)
        # The test server skips no time while an activity waits to start: its 60 s to start run out in real time
        for _ in range(10):
            if ("order_confirmed", "email") in fake.messages:
                break
            await env.sleep(10)
        await confirm_pick(env, handle)
        view = await handle.result()

    assert statuses(view)[-1] == "COMPLETED"
    assert fake.messages.count(("order_confirmed", "email")) == 1
    assert fake.messages.count(("order_confirmed", "sms")) == 1
    notes = " | ".join(e.note for e in view.timeline)
    assert "notify order_confirmed: waiting for" in notes and "notify order_confirmed: sent by" in notes, notes
