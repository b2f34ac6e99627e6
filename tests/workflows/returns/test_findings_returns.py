"""The failure-handling review's findings about returns, on the time-skipping server (the order workflow and
its RMA workflows against test_returns_workflow's ReturnsWorld)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

import tests.workflows.orders.test_order_workflow as base
import tests.workflows.returns.test_returns_workflow as rw
from common.models import OrderStatus, OrderView, ResolveDeliveryRequest, TrackingStatus, workflow_id_for
from common.returns import RmaStatus
from tests.orders import sample_order
from workflows.order import OrderWorkflow

HOUR, DAY = base.HOUR, base.DAY
# Returns policy of test_returns_workflow, with the deadlines the starter sets for new orders.
POLICY = rw.POLICY.model_copy(update={"failed_wait_s": 3 * DAY, "return_receive_timeout_s": 5 * DAY})


async def delivered(env: WorkflowEnvironment, lines: dict[str, int]) -> WorkflowHandle[Any, OrderView]:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines=lines)
    handle = await base.start(env.client, order, POLICY)
    await base.confirm_pick(env, handle)
    await base.wait_for_status(env, handle, OrderStatus.DELIVERED, step=HOUR)
    return handle


async def view_when(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, OrderView], test: Callable[[OrderView], bool], step: float
) -> OrderView:
    view = None
    for _ in range(300):
        view = await handle.query(OrderWorkflow.status)
        if test(view):
            return view
        await (env.sleep(step) if step else asyncio.sleep(0.05))
    raise AssertionError(f"the order never got there: {view}")


def replacement_of(env: WorkflowEnvironment, view: OrderView) -> WorkflowHandle[Any, OrderView]:
    replacement = view.returns[0].replacement_order_id
    assert replacement
    return env.client.get_workflow_handle(workflow_id_for(replacement), result_type=OrderView)


# -------------------------------------------------------------------- 1: a message never fails a return


async def test_finding_1_a_messaging_outage_during_a_return_does_not_fail_it_and_the_refund_is_paid(
    env: WorkflowEnvironment,
) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 2})
    async with rw.worker(env, fake):
        handle = await delivered(env, {"MUG-RED": 1})
        rma = (await rw.request(handle, MUG_RED=1)).returns[0].rma_id
        await fake.outage("notify_customer", hours=3)  # the "received" and "refunded" notices cannot go out
        await rw.receive(env, rma, MUG_RED=(1, "resellable"))
        refunded = await rw.rma_status(env, rma, RmaStatus.REFUNDED, step=600)
        await env.sleep(4 * HOUR)

    assert fake.refunds == {rma: 1200}
    assert refunded.status == RmaStatus.REFUNDED
    assert ("return_received", "email") in fake.messages and ("return_refunded", "email") in fake.messages


# ---------------------------------------------------------- 4: an exchange cannot be had for free, or twice


async def test_finding_4_an_exchange_replacement_waits_for_the_return_and_ships_on_its_first_scan(
    env: WorkflowEnvironment,
) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 3})  # the return parcel moves 2 days after its label
    async with rw.worker(env, fake):
        handle = await delivered(env, {"MUG-RED": 1})
        view = await rw.request(handle, "wrong_item", exchange=True, MUG_RED=1)
        replacement = replacement_of(env, view)
        await env.sleep(DAY)
        waiting = await replacement.query(OrderWorkflow.status)
        await env.sleep(2 * DAY)
        going = await replacement.query(OrderWorkflow.status)

    assert waiting.status == OrderStatus.RESERVED  # its goods are kept for it...
    assert waiting.waiting_for and "send back" in waiting.waiting_for
    assert not any(p.pick_task_id for p in waiting.shipments)  # ...but nothing is picked before the goods come back
    assert going.status == OrderStatus.PICKING


async def test_finding_4_an_exchange_whose_return_never_ships_cancels_its_replacement(env: WorkflowEnvironment) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 3})
    fake.return_moves_after = None  # the customer keeps the goods
    async with rw.worker(env, fake):
        handle = await delivered(env, {"MUG-RED": 1})
        view = await rw.request(handle, "damaged", exchange=True, MUG_RED=1)
        rma = view.returns[0].rma_id
        replacement = replacement_of(env, view)
        await rw.rma_status(env, rma, RmaStatus.EXPIRED)
        replaced = await asyncio.wait_for(replacement.result(), 60)

    assert replaced.status == OrderStatus.CANCELLED and "never sent back" in replaced.timeline[-1].note
    assert fake.labels_bought == 1  # the replacement never got a label: it was never shipped


async def test_finding_4_units_whose_return_moved_cannot_be_exchanged_again(env: WorkflowEnvironment) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 3})  # moves after 2 days, never reaches the warehouse
    async with rw.worker(env, fake):
        handle = await delivered(env, {"MUG-RED": 1})
        rma = (await rw.request(handle, "damaged", exchange=True, MUG_RED=1)).returns[0].rma_id
        failed = await rw.rma_status(env, rma, RmaStatus.FAILED)  # not received 5 days after the carrier had it
        message = await rw.refused(handle, "damaged", MUG_RED=1)

    assert failed.note and "not received within 5 days" in failed.note
    assert "already returned" in message
    assert "return_failed" in fake.ops_alerts


# --------------------------------------------------------------- 7: the return window is never skipped


async def test_finding_7_a_return_requested_while_the_delivered_notice_waits_keeps_the_window_open(
    env: WorkflowEnvironment,
) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 2})
    async with rw.worker(env, fake):
        order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
        handle = await base.start(env.client, order, POLICY)
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.OUT_FOR_DELIVERY, step=600)
        await fake.outage("notify_customer", hours=0.5)  # the DELIVERED notice is in flight for half an hour
        await base.wait_for_status(env, handle, OrderStatus.DELIVERED, step=60)
        rma = (await rw.request(handle, MUG_RED=1)).returns[0].rma_id
        # (Received once in transit: the time-skipping server stops skipping time for good when an activity in
        # retry backoff is cancelled, as receiving before the carrier's scan does to the tracking poll.)
        await rw.rma_status(env, rma, RmaStatus.IN_TRANSIT)
        open_after_the_notice = (await handle.describe()).status
        await rw.receive(env, rma, MUG_RED=(1, "resellable"))
        view = await asyncio.wait_for(handle.result(), 60)

    assert open_after_the_notice == WorkflowExecutionStatus.RUNNING  # not closed with the return in flight
    assert view.status == OrderStatus.COMPLETED and view.returns[0].status == RmaStatus.REFUNDED.value
    assert "return window closed (1 return)" in " | ".join(e.note for e in view.timeline)


# ------------------------------------------------------------------- 9: only what arrived can come back


async def test_finding_9_units_that_were_never_delivered_cannot_be_returned(env: WorkflowEnvironment) -> None:
    fake = rw.returns_world(env, {"MUG-RED": 1, "TEE-M": 1})
    fake.split_lines = True
    fake.progressions[2] = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (0.5 * DAY, TrackingStatus.RETURN_TO_SENDER)]
    async with rw.worker(env, fake):
        order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1, "TEE-M": 1})
        handle = await base.start(env.client, order, POLICY)
        view = await base.wait_for_status(env, handle, OrderStatus.PICKING)
        for parcel in view.shipments:
            await handle.signal(OrderWorkflow.pick_confirmed, parcel.pick_task_id or "")
        # Parcel 1 arrives; parcel 2 is lost, and ops refund it. (Resolved once no time needs to pass: resolving
        # cancels parcel 2's tracking poll in retry backoff, after which the time-skipping server skips no more.)
        await view_when(env, handle, lambda v: v.shipments[0].status == OrderStatus.DELIVERED, step=HOUR)
        await handle.execute_update(
            OrderWorkflow.resolve_delivery_exception, ResolveDeliveryRequest(action="refund", note="lost")
        )
        await view_when(env, handle, lambda v: v.status == OrderStatus.DELIVERED, step=0)
        message = await rw.refused(handle, "damaged", TEE_M=1)  # refunded as lost: never delivered
        accepted = await rw.request(handle, "damaged", MUG_RED=1)

    assert "was delivered" in message and "nothing of it to return" in message
    assert [r.lines[0].sku for r in accepted.returns] == ["MUG-RED"]
