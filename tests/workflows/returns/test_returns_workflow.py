"""Returns on the time-skipping server: a 30-day window passes in seconds.

The order's outside world is the in-memory stand-in of test_order_workflow (registered under the real activity
names), extended with the return activities: return labels whose parcel moves (or never does), inspection,
and a refunds ledger with a failure switch. tests/integration/returns/test_returns.py runs the same path on the real
activities, database and sandbox servers.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import tests.workflows.orders.test_order_workflow as base
from common.models import (
    OrderPolicy,
    OrderStatus,
    OrderView,
    TrackingPollRequest,
    TrackingStatus,
    TrackingUpdate,
    workflow_id_for,
)
from common.returns import (
    InspectRequest,
    InspectResult,
    ReceiveReturnRequest,
    RecordRmaRequest,
    RefundRequest,
    RefundResult,
    RetryRefundRequest,
    ReturnLabel,
    ReturnLabelRequest,
    ReturnRequest,
    RmaStatus,
    RmaStatusChange,
    RmaView,
    refundable_units,
    return_workflow_id,
)
from tests.orders import sample_order
from workers.worker import engine_workers
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow

HOUR, DAY = base.HOUR, base.DAY
PRICES = {"MUG-RED": 1200, "MUG-BLUE": 1500}
POLICY = OrderPolicy(
    tracking_poll_interval_s=HOUR,
    tracking_timeout_s=30 * DAY,
    backorder_recheck_interval_s=DAY,
    backorder_max_wait_s=14 * DAY,
    return_window_s=30 * DAY,
    return_transit_timeout_s=10 * DAY,
)


@dataclass
class ReturnsWorld(base.FakeWorld):
    # Seconds after a return label's purchase at which its parcel is in transit (None: it never moves).
    return_moves_after: float | None = 2 * DAY
    # What the carrier's tracker of a return label says from the start (None: as return_moves_after says).
    return_tracker_status: TrackingStatus | None = None
    return_labels: dict[str, datetime] = field(default_factory=dict)  # tracking number -> bought at
    voided: list[str] = field(default_factory=list)
    rmas: dict[str, str] = field(default_factory=dict)  # rma -> status in the "DB"
    restocked: dict[str, int] = field(default_factory=dict)
    written_off: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)  # rma -> cents
    refund_attempts: int = 0
    gateway_down: bool = False
    gateway_declines: bool = False

    @activity.defn(name="await_tracking_change")
    async def await_tracking_change(self, request: TrackingPollRequest) -> TrackingUpdate:
        bought = self.return_labels.get(request.tracking_number)
        if bought is None:
            return await super().await_tracking_change(request)
        if self.return_tracker_status is not None:  # the real poll's rule: return on a status other than these
            if self.return_tracker_status in (request.last_status, TrackingStatus.UNKNOWN, TrackingStatus.PRE_TRANSIT):
                raise ApplicationError("unchanged", type="TrackingUnchanged", category=ApplicationErrorCategory.BENIGN)
            return TrackingUpdate(status=self.return_tracker_status, message="fake carrier: tracker says so")
        elapsed = (await self.env.get_current_time() - bought).total_seconds()
        if self.return_moves_after is None or elapsed < self.return_moves_after:
            raise ApplicationError("unchanged", type="TrackingUnchanged", category=ApplicationErrorCategory.BENIGN)
        return TrackingUpdate(status=TrackingStatus.IN_TRANSIT, message="fake carrier: return in transit")

    @activity.defn(name="record_rma")
    async def record_rma(self, request: RecordRmaRequest) -> str:
        self.rmas.setdefault(request.rma_id, "REQUESTED")
        return self.rmas[request.rma_id]

    @activity.defn(name="set_rma_status")
    async def set_rma_status(self, change: RmaStatusChange) -> None:
        self.rmas[change.rma_id] = change.status.value

    @activity.defn(name="buy_return_label")
    async def buy_return_label(self, request: ReturnLabelRequest) -> ReturnLabel:
        tracking = f"RET-{request.rma_id}"
        self.return_labels.setdefault(tracking, await self.env.get_current_time())
        return ReturnLabel(
            shipment_key=f"return-label:{request.rma_id}",
            carrier="SandboxPost",
            service="Ground",
            tracking_number=tracking,
            label_url=f"http://labels/{request.rma_id}.png",
            tracking_url=f"http://track/{tracking}",
        )

    @activity.defn(name="void_return_label")
    async def void_return_label(self, rma_id: str) -> bool:
        self.voided.append(rma_id)
        return True

    @activity.defn(name="inspect_return")
    async def inspect_return(self, request: InspectRequest) -> InspectResult:
        result = InspectResult()
        for line in request.lines:
            target = result.restocked if line.condition == "resellable" else result.written_off
            target[line.sku] = target.get(line.sku, 0) + line.quantity
        for sku, qty in result.restocked.items():
            self.restocked[sku] = self.restocked.get(sku, 0) + qty
            self.available[sku] = self.available.get(sku, 0) + qty
        for sku, qty in result.written_off.items():
            self.written_off[sku] = self.written_off.get(sku, 0) + qty
        return result

    @activity.defn(name="refund_return")
    async def refund_return(self, request: RefundRequest) -> RefundResult:
        self.refund_attempts += 1
        if self.gateway_down:
            raise ApplicationError("fake gateway unavailable", type="PaymentUnavailable")
        if self.gateway_declines:
            raise ApplicationError("fake gateway: charge not refundable", type="PaymentDeclined", non_retryable=True)
        amount = sum(PRICES[sku] * qty for sku, qty in refundable_units(request.reason, request.lines).items())
        self.refunds.setdefault(request.rma_id, amount)
        return RefundResult(refund_id=f"re_{request.rma_id}", amount_cents=self.refunds[request.rma_id])

    def activities(self) -> list:
        return [
            *super().activities(),
            self.record_rma,
            self.set_rma_status,
            self.buy_return_label,
            self.void_return_label,
            self.inspect_return,
            self.refund_return,
        ]


def returns_world(env: WorkflowEnvironment, stock: dict[str, int]) -> ReturnsWorld:
    d = DAY
    return ReturnsWorld(
        env,
        dict(stock),
        [
            (0.2 * d, TrackingStatus.IN_TRANSIT),
            (0.9 * d, TrackingStatus.OUT_FOR_DELIVERY),
            (d, TrackingStatus.DELIVERED),
        ],
    )


def worker(env: WorkflowEnvironment, fake: ReturnsWorld) -> AbstractAsyncContextManager[Worker]:
    return engine_workers(
        env.client, "test-orders", workflows=[OrderWorkflow, ReturnWorkflow], activities=fake.activities()
    )


async def delivered_order(env: WorkflowEnvironment, lines: dict[str, int]) -> tuple[WorkflowHandle, datetime]:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines=lines)
    handle = await base.start(env.client, order, POLICY)
    await base.confirm_pick(env, handle)
    view = await base.wait_for_status(env, handle, OrderStatus.DELIVERED, step=HOUR)
    return handle, next(e.at for e in view.timeline if e.status == OrderStatus.DELIVERED)


async def sleep_until(env: WorkflowEnvironment, at: datetime) -> None:
    left = (at - await env.get_current_time()).total_seconds()
    if left > 0:
        await env.sleep(left)


async def request(handle: WorkflowHandle, reason: str = "no_longer_needed", exchange: bool = False, **lines: int):
    req = ReturnRequest.model_validate(
        {
            "lines": [{"sku": s.replace("_", "-"), "quantity": q} for s, q in lines.items()],
            "reason": reason,
            "exchange": exchange,
        }
    )
    await handle.execute_update(OrderWorkflow.request_return, req)
    return await handle.query(OrderWorkflow.status)


async def refused(handle: WorkflowHandle, reason: str = "no_longer_needed", **lines: int) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await request(handle, reason, **lines)
    cause = info.value.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def rma_handle(env: WorkflowEnvironment, rma_id: str) -> WorkflowHandle:
    return env.client.get_workflow_handle(return_workflow_id(rma_id), result_type=RmaView)


async def receive(env: WorkflowEnvironment, rma_id: str, **found: tuple[int, str]) -> RmaView:
    req = ReceiveReturnRequest.model_validate(
        {"lines": [{"sku": s.replace("_", "-"), "quantity": q, "condition": c} for s, (q, c) in found.items()]}
    )
    return await rma_handle(env, rma_id).execute_update(ReturnWorkflow.receive_return, req)


async def rma_status(env: WorkflowEnvironment, rma_id: str, status: RmaStatus, step: float = HOUR) -> RmaView:
    for _ in range(300):
        view = await rma_handle(env, rma_id).query(ReturnWorkflow.status)
        if view.status == status:
            return view
        await env.sleep(step)
    raise AssertionError(f"RMA {rma_id} never reached {status}; it is {view.status}")


def statuses(view: OrderView) -> list[str]:
    return [e.status.value for e in view.timeline]


# ---------------------------------------------------------------------------------------------------------


async def test_return_window_accepts_day_29_refuses_day_31_then_closes(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 5})
    fake.return_moves_after = None  # the customer keeps the parcel a while: the warehouse gets it on day 31
    async with worker(env, fake):
        handle, delivered_at = await delivered_order(env, {"MUG-RED": 2})
        await sleep_until(env, delivered_at + timedelta(days=29))
        view = await request(handle, MUG_RED=1)
        assert view.status == OrderStatus.RETURN_REQUESTED
        rma = view.returns[0].rma_id
        await base.eventually(env, lambda: ("return_label", "email") in fake.messages)

        await sleep_until(env, delivered_at + timedelta(days=31))
        message = await refused(handle, MUG_RED=1)
        assert "return window" in message and "closed" in message
        assert (await handle.query(OrderWorkflow.status)).returns[0].rma_id == rma  # nothing changed

        received = await receive(env, rma, MUG_RED=(1, "resellable"))
        assert received.status in (RmaStatus.RECEIVED, RmaStatus.REFUNDED)
        view = await handle.result()
        history = await handle.fetch_history()

    assert view.status == OrderStatus.COMPLETED
    assert statuses(view)[-6:] == [
        "RETURN_REQUESTED",  # accepted
        "RETURN_REQUESTED",  # label sent
        "RETURN_RECEIVED",
        "REFUNDED",
        "DELIVERED",  # return window closed
        "COMPLETED",
    ]
    assert view.returns[0].status == "REFUNDED" and view.returns[0].refund_cents == 1200
    assert fake.refunds == {rma: 1200} and fake.restocked == {"MUG-RED": 1}
    assert fake.rmas[rma] == "REFUNDED"
    for event in ("return_label", "return_received", "return_refunded"):
        assert fake.messages.count((event, "email")) == 1 and fake.messages.count((event, "sms")) == 1
    # A month open costs one timer, not a history that grows with the window.
    assert len(history.events) < 150


async def test_partial_and_multiple_returns_with_transit_and_refund_rule(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 5, "MUG-BLUE": 5})
    async with worker(env, fake):
        handle, _ = await delivered_order(env, {"MUG-RED": 3, "MUG-BLUE": 1})
        await env.sleep(2 * DAY)
        first = await request(handle, "damaged", MUG_RED=1)
        rma1 = first.returns[0].rma_id

        assert "at most 2" in await refused(handle, MUG_RED=3)
        assert "MUG-GREEN is not in order" in await refused(handle, MUG_GREEN=1)

        second = await request(handle, "no_longer_needed", MUG_RED=2, MUG_BLUE=1)
        rma2 = second.returns[1].rma_id
        assert rma2 != rma1 and len(second.returns) == 2
        assert "at most 0" in await refused(handle, MUG_BLUE=1)

        await rma_status(env, rma1, RmaStatus.IN_TRANSIT)
        await rma_status(env, rma2, RmaStatus.IN_TRANSIT)
        view = await handle.query(OrderWorkflow.status)
        assert "RETURN_IN_TRANSIT" in statuses(view)

        # The warehouse cannot receive more than the RMA authorised, nor another SKU.
        with pytest.raises(WorkflowUpdateFailedError):
            await receive(env, rma1, MUG_RED=(2, "resellable"))
        with pytest.raises(WorkflowUpdateFailedError):
            await receive(env, rma1, MUG_BLUE=(1, "resellable"))

        await receive(env, rma1, MUG_RED=(1, "damaged"))
        await receive(env, rma2, MUG_RED=(2, "resellable"), MUG_BLUE=(1, "damaged"))
        view = await handle.result()

    assert view.status == OrderStatus.COMPLETED
    # damaged: the customer is not at fault, the damaged unit is refunded; no_longer_needed: only resellable units.
    assert fake.refunds == {rma1: 1200, rma2: 2 * 1200}
    assert fake.restocked == {"MUG-RED": 2} and fake.written_off == {"MUG-RED": 1, "MUG-BLUE": 1}
    assert [r.status for r in view.returns] == ["REFUNDED", "REFUNDED"]
    notes = " | ".join(e.note for e in view.timeline)
    assert rma1 in notes and rma2 in notes


async def test_return_whose_parcel_never_moves_expires_with_a_message(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 2})
    fake.return_moves_after = None
    async with worker(env, fake):
        handle, _ = await delivered_order(env, {"MUG-RED": 2})
        view = await request(handle, MUG_RED=2)
        rma = view.returns[0].rma_id
        expired = await rma_status(env, rma, RmaStatus.EXPIRED, step=DAY)
        await base.eventually(env, lambda: ("return_expired", "sms") in fake.messages)
        # The units were never sent back: they can be returned again while the window is open.
        again = await request(handle, MUG_RED=2)
        assert again.returns[1].status == "REQUESTED"
        await rma_handle(env, again.returns[1].rma_id).cancel()  # the second return is not this test's concern
        order_view = await handle.query(OrderWorkflow.status)

    assert "10 days" in (expired.note or "")
    assert fake.voided == [rma] and fake.rmas[rma] == "EXPIRED" and fake.refunds == {}
    assert fake.messages.count(("return_expired", "email")) == 1
    assert order_view.returns[0].status == "EXPIRED"
    assert any("expired" in e.note for e in order_view.timeline if e.status == OrderStatus.DELIVERED)


async def test_a_return_tracker_the_carrier_cancelled_is_polled_patiently_and_expires(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 2})
    fake.return_tracker_status = TrackingStatus.CANCELLED
    async with worker(env, fake):
        handle, _ = await delivered_order(env, {"MUG-RED": 2})
        rma = (await request(handle, MUG_RED=2)).returns[0].rma_id
        expired = await rma_status(env, rma, RmaStatus.EXPIRED, step=DAY)
        history = await rma_handle(env, rma).fetch_history()

    polls = [
        e
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "await_tracking_change"
    ]
    assert "10 days" in (expired.note or "")
    assert len(polls) <= 3, f"{len(polls)} polls: the carrier's 'cancelled' must be waited on, not polled at once"


async def test_exchange_places_a_replacement_order_linked_both_ways(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 3})
    async with worker(env, fake):
        handle, _ = await delivered_order(env, {"MUG-RED": 1})
        view = await request(handle, "wrong_item", exchange=True, MUG_RED=1)
        summary = view.returns[0]
        assert summary.exchange and summary.replacement_order_id
        replacement = env.client.get_workflow_handle(
            workflow_id_for(summary.replacement_order_id), result_type=OrderView
        )
        await base.eventually(env, lambda: ("replacement_placed", "email") in fake.messages)
        placed = await replacement.query(OrderWorkflow.status)

        await receive(env, summary.rma_id, MUG_RED=(1, "damaged"))
        rma = await rma_status(env, summary.rma_id, RmaStatus.EXCHANGED)
        order_view = await handle.query(OrderWorkflow.status)

    assert summary.replacement_order_id == f"{view.order_id}-R1"
    assert placed.replacement_for and view.order_id in placed.replacement_for
    assert "replacement for order" in placed.timeline[0].note and summary.rma_id in placed.timeline[0].note
    assert f"replacement order {summary.replacement_order_id} placed" in " | ".join(e.note for e in order_view.timeline)
    assert rma.refund_cents is None and fake.refunds == {}  # the replacement is the remedy


async def test_failed_refund_waits_for_ops_then_retry_refund_pays_once(env: WorkflowEnvironment) -> None:
    fake = returns_world(env, {"MUG-RED": 2})
    fake.gateway_declines = True
    async with worker(env, fake):
        handle, _ = await delivered_order(env, {"MUG-RED": 2})
        rma = (await request(handle, "not_as_described", MUG_RED=2)).returns[0].rma_id
        await receive(env, rma, MUG_RED=(2, "resellable"))
        failed = await rma_status(env, rma, RmaStatus.REFUND_FAILED, step=60)
        await base.eventually(env, lambda: "refund_failed" in fake.ops_alerts)
        order_view = await handle.query(OrderWorkflow.status)
        attempts = fake.refund_attempts

        with pytest.raises(WorkflowUpdateFailedError):  # nothing to retry on another RMA state
            await rma_handle(env, rma).execute_update(
                ReturnWorkflow.receive_return,
                ReceiveReturnRequest.model_validate(
                    {"lines": [{"sku": "MUG-RED", "quantity": 1, "condition": "damaged"}]}
                ),
            )
        fake.gateway_declines = False
        done = await rma_handle(env, rma).execute_update(
            ReturnWorkflow.retry_refund, RetryRefundRequest(description="gateway back up")
        )

    assert attempts == 1  # declined: retrying cannot fix it, ops must look
    assert failed.waiting_for and "retry_refund" in failed.waiting_for
    assert order_view.waiting_for and "retry_refund" in order_view.waiting_for
    assert order_view.returns[0].status == "REFUND_FAILED"
    assert done.status == RmaStatus.REFUNDED and fake.refunds == {rma: 2400}
    assert fake.ops_alerts.count("refund_failed") == 1
