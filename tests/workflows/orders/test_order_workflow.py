"""OrderWorkflow logic on the time-skipping server: days of tracking pass in seconds.

The outside world is a small in-memory stand-in registered under the real activity names, so these
tests pin the workflow's decisions (states, messages, stock calls); tests/integration runs the same
workflow against the real activities, database and sandbox servers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from common.inventory.contracts import ParcelRef
from common.models import (
    MOVED_TRACKING_STATUSES,
    ORDER_WORKFLOW_VERSION,
    Label,
    LabelRequest,
    NotifyRequest,
    NotifyResult,
    OpsAlert,
    Order,
    OrderLine,
    OrderPolicy,
    OrderStatus,
    OrderView,
    OrderWorkflowInput,
    ParcelAllocation,
    ParcelRefundRequest,
    PartialShipment,
    PaymentRefund,
    PickShortage,
    PickTaskRequest,
    ReserveRequest,
    ReserveResult,
    ResolveDeliveryRequest,
    TrackingPollRequest,
    TrackingStatus,
    TrackingUpdate,
)
from common.shipping.contracts import LabelUndo, LabelUndoResult
from common.temporal import ORDER_STATUS, PICK_OVERDUE
from tests.orders import sample_order
from workers.worker import engine_workers
from workflows.order import OrderWorkflow

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass
class FakeWorld:
    """Stock, carrier and messaging as the workflow sees them through its activities."""

    env: WorkflowEnvironment
    available: dict[str, int]
    # Seconds after label purchase at which the parcel reaches each tracking status.
    progression: list[tuple[float, TrackingStatus]]
    # Seconds after purchase at which the carrier announces an estimate (seconds after purchase).
    estimates: list[tuple[float, float]] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    messages: list[tuple[str, str]] = field(default_factory=list)  # (event, channel)
    ops_alerts: list[str] = field(default_factory=list)
    labels_bought: int = 0
    shipments: dict[int, ParcelAllocation] = field(default_factory=dict)
    gave_up: bool = False
    short_picks: list[str] = field(default_factory=list)
    bought_at: datetime | None = None
    tracking_polls: int = 0
    parcel_refunds: list[tuple[int, int]] = field(default_factory=list)  # (shipment no, cents)
    voided_labels: list[int] = field(default_factory=list)
    # Per parcel (shipment no): when its label was bought, and its own progression if it has one.
    bought: dict[int, datetime] = field(default_factory=dict)
    progressions: dict[int, list[tuple[float, TrackingStatus]]] = field(default_factory=dict)
    # Failure injection: activity name -> time until which it fails as an outage of its provider (transient),
    # or the type of an error retrying cannot fix (raised until removed).
    down_until: dict[str, datetime] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    checks: int = 0  # where-is-it questions to the carrier
    cancelled_picks: list[str] = field(default_factory=list)
    split_lines: bool = False  # reserve each line as a parcel of its own
    label_addresses: dict[int, str] = field(default_factory=dict)  # shipment no -> line1 the label went to
    contexts: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (event, message context)

    async def _gate(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.broken:
            raise ApplicationError(f"{name}: cannot be done", type=self.broken[name], non_retryable=True)
        until = self.down_until.get(name)
        if until is not None and await self.env.get_current_time() < until:
            raise ApplicationError(f"{name}: provider unavailable (503)", type="Unavailable")

    async def outage(self, *names: str, hours: float) -> None:
        until = await self.env.get_current_time() + timedelta(hours=hours)
        for name in names:
            self.down_until[name] = until

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, request: ReserveRequest) -> ReserveResult:
        """One warehouse; all or nothing, or what is there with allow_partial."""
        await self._gate("reserve_stock")
        if request.first_shipment in self.shipments:
            return ReserveResult(reserved=True, warehouse="LDN-1", shipments=[self.shipments[request.first_shipment]])
        if self.split_lines and all(self.available.get(li.sku, 0) >= li.quantity for li in request.lines):
            # One parcel per line (a split over warehouses), numbered from first_shipment.
            parcels = []
            for n, line in enumerate(request.lines, start=request.first_shipment):
                self.available[line.sku] -= line.quantity
                self.reserved[line.sku] = self.reserved.get(line.sku, 0) + line.quantity
                self.shipments[n] = ParcelAllocation(shipment_no=n, warehouse=f"WH-{n}", lines=[line])
                parcels.append(self.shipments[n])
            return ReserveResult(reserved=True, warehouse="WH-1", shipments=parcels)
        take = {li.sku: min(li.quantity, self.available.get(li.sku, 0)) for li in request.lines}
        short = {li.sku: li.quantity - take[li.sku] for li in request.lines if take[li.sku] < li.quantity}
        if (short and not request.allow_partial) or not any(take.values()):
            return ReserveResult(reserved=False, short=short)
        for sku, qty in take.items():
            if qty:
                self.available[sku] -= qty
                self.reserved[sku] = self.reserved.get(sku, 0) + qty
        lines = [OrderLine(sku=sku, quantity=qty) for sku, qty in take.items() if qty]
        shipment = ParcelAllocation(shipment_no=request.first_shipment, warehouse="LDN-1", lines=lines)
        self.shipments[request.first_shipment] = shipment
        return ReserveResult(reserved=not short, warehouse="LDN-1", short=short, shipments=[shipment])

    @activity.defn(name="release_stock")
    async def release_stock(self, order_id: str) -> int:
        await self._gate("release_stock")
        for sku, qty in self.reserved.items():
            self.available[sku] += qty
        units = sum(self.reserved.values())
        self.reserved.clear()
        return units

    @activity.defn(name="commit_shipment")
    async def commit_shipment(self, ref: ParcelRef) -> int:
        await self._gate("commit_shipment")
        for line in self.shipments[ref.shipment_no].lines:
            self.committed[line.sku] = self.committed.get(line.sku, 0) + line.quantity
            self.reserved[line.sku] -= line.quantity
            if not self.reserved[line.sku]:
                del self.reserved[line.sku]
        return sum(line.quantity for line in self.shipments[ref.shipment_no].lines)

    @activity.defn(name="release_shipment")
    async def release_shipment(self, ref: ParcelRef) -> int:
        await self._gate("release_shipment")
        units = 0
        for line in self.shipments[ref.shipment_no].lines:
            held = min(self.reserved.get(line.sku, 0), line.quantity)
            self.reserved[line.sku] = self.reserved.get(line.sku, 0) - held
            self.available[line.sku] += held
            units += held
        return units

    @activity.defn(name="close_backorder")
    async def close_backorder(self, order_id: str) -> bool:
        self.gave_up = True
        return True

    @activity.defn(name="alert_low_stock")
    async def alert_low_stock(self, skus: list[str]) -> int:
        await self._gate("alert_low_stock")
        self.ops_alerts += [f"low_stock:{sku}" for sku in skus]
        return len(skus)

    @activity.defn(name="create_pick_task")
    async def create_pick_task(self, request: PickTaskRequest) -> str:
        await self._gate("create_pick_task")
        return f"PICK-{request.order_id}-{request.parcel_no}"

    @activity.defn(name="confirm_short_pick")
    async def confirm_short_pick(self, shortage: PickShortage) -> dict[str, int]:
        self.short_picks.append(shortage.task_id)
        return shortage.short

    @activity.defn(name="cancel_pick_task")
    async def cancel_pick_task(self, task_id: str) -> bool:
        await self._gate("cancel_pick_task")
        self.cancelled_picks.append(task_id)
        return True

    @activity.defn(name="cancel_pick_tasks")
    async def cancel_pick_tasks(self, order_id: str) -> list[str]:
        return []

    @activity.defn(name="buy_label")
    async def buy_label(self, request: LabelRequest) -> Label:
        await self._gate("buy_label")
        n = request.shipment_no
        if n not in self.bought:  # idempotent by key, as the real one
            self.labels_bought += 1
            self.bought[n] = self.bought_at = await self.env.get_current_time()
            self.label_addresses[n] = request.ship_to.line1
        return Label(
            shipment_key=f"label:{request.order_id}:{n}",
            carrier="SandboxPost",
            service="Ground",
            rate_cents=510,
            tracking_number=f"SBX000{n}",
            label_url="http://l",
            tracking_url="http://t",
            carrier_shipment_id=f"shp_{n}",
        )

    @activity.defn(name="void_label")
    async def void_label(self, request: LabelRequest) -> bool:
        return True

    async def _elapsed(self, n: int) -> float:
        return (await self.env.get_current_time() - self.bought[n]).total_seconds()

    async def _status_now(self, n: int) -> TrackingStatus:
        elapsed = await self._elapsed(n)
        status = TrackingStatus.PRE_TRANSIT
        for after, reached in self.progressions.get(n, self.progression):
            if elapsed >= after:
                status = reached
        return status

    @activity.defn(name="check_tracking")
    async def check_tracking(self, request: TrackingPollRequest) -> TrackingUpdate:
        await self._gate("check_tracking")
        self.checks += 1
        n = int(request.tracking_number.removeprefix("SBX000"))
        return TrackingUpdate(status=await self._status_now(n), message="fake carrier")

    @activity.defn(name="void_label_if_unshipped")
    async def void_label_if_unshipped(self, ref: ParcelRef) -> LabelUndoResult:
        await self._gate("void_label_if_unshipped")
        if ref.shipment_no not in self.bought:
            return LabelUndoResult(outcome=LabelUndo.NOTHING_BOUGHT)
        if (await self._status_now(ref.shipment_no)) in MOVED_TRACKING_STATUSES:
            return LabelUndoResult(outcome=LabelUndo.IN_USE, note="the carrier has it")
        if ref.shipment_no not in self.voided_labels:
            self.voided_labels.append(ref.shipment_no)
        return LabelUndoResult(outcome=LabelUndo.VOIDED)

    @activity.defn(name="refund_shipment")
    async def refund_shipment(self, request: ParcelRefundRequest) -> PaymentRefund:
        await self._gate("refund_shipment")
        cents = sum(request.unit_prices.get(li.sku, 0) * li.quantity for li in request.lines)
        self.parcel_refunds.append((request.shipment_no, cents))
        return PaymentRefund(refund_id=f"re_{request.shipment_no}", amount_cents=cents)

    @activity.defn(name="await_tracking_change")
    async def await_tracking_change(self, request: TrackingPollRequest) -> TrackingUpdate:
        await self._gate("await_tracking_change")
        self.tracking_polls += 1
        n = int(request.tracking_number.removeprefix("SBX000"))
        elapsed = await self._elapsed(n)
        status = await self._status_now(n)
        estimate = None
        for after, offset in self.estimates:
            if elapsed >= after:
                estimate = self.bought[n] + timedelta(seconds=offset)
        moved = request.last_estimate is not None and estimate != request.last_estimate
        if status in (request.last_status, TrackingStatus.PRE_TRANSIT) and not moved:
            raise ApplicationError("unchanged", type="TrackingUnchanged")
        return TrackingUpdate(status=status, estimated_delivery=estimate, message=f"fake carrier: {status.value}")

    @activity.defn(name="alert_ops")
    async def alert_ops(self, alert: OpsAlert) -> bool:
        await self._gate("alert_ops")
        self.ops_alerts.append(alert.kind)
        return True

    @activity.defn(name="notify_customer")
    async def notify_customer(self, request: NotifyRequest) -> NotifyResult:
        await self._gate("notify_customer")
        self.messages += [(request.event.value, channel.value) for channel in request.channels]
        self.contexts.append((request.event.value, dict(request.context)))
        return NotifyResult(sent=list(request.channels))

    def activities(self) -> list:
        return [
            self.reserve_stock,
            self.release_stock,
            self.commit_shipment,
            self.close_backorder,
            self.release_shipment,
            self.alert_low_stock,
            self.create_pick_task,
            self.cancel_pick_task,
            self.cancel_pick_tasks,
            self.confirm_short_pick,
            self.buy_label,
            self.void_label,
            self.void_label_if_unshipped,
            self.check_tracking,
            self.refund_shipment,
            self.await_tracking_change,
            self.notify_customer,
            self.alert_ops,
        ]


POLICY = OrderPolicy(
    tracking_poll_interval_s=HOUR,
    tracking_timeout_s=30 * DAY,
    backorder_recheck_interval_s=DAY,
    backorder_max_wait_s=14 * DAY,
    return_window_s=0,  # close at delivery; the returns tests open a window
    address_fix_timeout_s=7 * DAY,
    failed_wait_s=3 * DAY,
    return_receive_timeout_s=30 * DAY,
)


async def start(client: Client, order: Order, policy: OrderPolicy = POLICY) -> WorkflowHandle:
    return await client.start_workflow(
        OrderWorkflow.run,
        OrderWorkflowInput(order=order, policy=policy, workflow_version=ORDER_WORKFLOW_VERSION),
        id=order.workflow_id,
        task_queue="test-orders",
        result_type=OrderView,
    )


async def wait_for_status(
    env: WorkflowEnvironment, handle: WorkflowHandle, status: OrderStatus, step: float = 60
) -> OrderView:
    for _ in range(200):
        view = await handle.query(OrderWorkflow.status)
        if view.status == status:
            return view
        await env.sleep(step)
    raise AssertionError(f"order never reached {status}; it is {view.status}")


async def eventually(env: WorkflowEnvironment, predicate: Callable[[], bool]) -> None:
    """Side effects (alerts, messages) run as activities just after a status change: give them a moment."""
    for _ in range(100):
        if predicate():
            return
        await env.sleep(1)
    raise AssertionError("condition never became true")


def statuses(view: OrderView) -> list[str]:
    return [entry.status.value for entry in view.timeline]


def world(env: WorkflowEnvironment, stock: dict[str, int], days_to_deliver: float = 1.0) -> FakeWorld:
    d = days_to_deliver * DAY
    return FakeWorld(
        env,
        dict(stock),
        [
            (0.2 * d, TrackingStatus.IN_TRANSIT),
            (0.9 * d, TrackingStatus.OUT_FOR_DELIVERY),
            (d, TrackingStatus.DELIVERED),
        ],
    )


def worker(env: WorkflowEnvironment, fake: FakeWorld) -> AbstractAsyncContextManager[Worker]:
    """The engine's workers (its task queue and the customer task queue) on the fake world."""
    return engine_workers(env.client, "test-orders", workflows=[OrderWorkflow], activities=fake.activities())


async def confirm_pick(env: WorkflowEnvironment, handle: WorkflowHandle) -> None:
    view = await wait_for_status(env, handle, OrderStatus.PICKING)
    assert view.pick_task_id
    await handle.signal(OrderWorkflow.pick_confirmed, view.pick_task_id)


async def test_happy_path_walks_every_status_and_messages_once(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 2})
    fake = world(env, {"MUG-RED": 5})
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await handle.result()

    assert statuses(view) == [
        "RECEIVED",
        "RESERVED",
        "PICKING",
        "PACKED",
        "LABELED",
        "IN_TRANSIT",
        "OUT_FOR_DELIVERY",
        "DELIVERED",
        "COMPLETED",
    ]
    assert view.tracking_number == "SBX0001" and view.carrier == "SandboxPost"
    assert fake.messages == [
        ("order_confirmed", "email"),
        ("order_confirmed", "sms"),
        ("shipped", "email"),
        ("shipped", "sms"),
        ("out_for_delivery", "sms"),
        ("delivered", "email"),
        ("delivered", "sms"),
    ]
    assert fake.committed == {"MUG-RED": 2} and fake.reserved == {} and fake.available == {"MUG-RED": 3}
    assert fake.labels_bought == 1


async def test_ops_lists_see_each_status_the_order_waits_in_with_one_upsert_per_wait(env: WorkflowEnvironment) -> None:
    """Statuses passed through inside one workflow task (RESERVED on the way to PICKING, PACKED on the way to
    LABELED, DELIVERED on the way to COMPLETED) are never visible to a list, so they cost no upsert; every
    status the order waits in is upserted once, and the last one is COMPLETED."""
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 5})
    async with worker(env, fake):
        handle = await start(env.client, order)
        await wait_for_status(env, handle, OrderStatus.PICKING)
        assert (await handle.describe()).typed_search_attributes.get(ORDER_STATUS) == "PICKING"
        await confirm_pick(env, handle)
        await handle.result()
        history = await handle.fetch_history()

    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    # The SDK's own upsert that makes a patch (workflow.patched) searchable is not one of ours.
    upserts = [fields for fields in upserts if set(fields) != {"TemporalChangeVersion"}]
    published = [json.loads(fields["OrderStatus"].data) for fields in upserts if "OrderStatus" in fields]
    assert published == ["PICKING", "LABELED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "COMPLETED"]
    assert len(upserts) == len(published)  # carrier and tracking number went out with LABELED
    assert (await handle.describe()).typed_search_attributes.get(ORDER_STATUS) == "COMPLETED"


async def test_backorder_waits_for_restock_then_ships(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 3})
    fake = world(env, {"MUG-RED": 1})
    async with worker(env, fake):
        handle = await start(env.client, order)
        view = await wait_for_status(env, handle, OrderStatus.BACKORDERED)
        assert view.waiting_for == "a restock"
        assert "MUG-RED x2" in view.timeline[-1].note
        fake.available["MUG-RED"] += 10
        await handle.signal(OrderWorkflow.stock_received, "MUG-RED")
        await confirm_pick(env, handle)
        view = await handle.result()

    assert statuses(view)[:3] == ["RECEIVED", "BACKORDERED", "RESERVED"]
    assert view.status == OrderStatus.COMPLETED
    # The customer hears about the delay exactly once.
    assert fake.messages.count(("backordered", "email")) == 1
    assert fake.committed == {"MUG-RED": 3} and fake.available == {"MUG-RED": 8}


async def test_backorder_recheck_finds_stock_without_a_signal(env: WorkflowEnvironment) -> None:
    """A restock whose signal was lost is still noticed at the next periodic recheck."""
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 0})
    async with worker(env, fake):
        handle = await start(env.client, order)
        await wait_for_status(env, handle, OrderStatus.BACKORDERED)
        fake.available["MUG-RED"] = 1
        await env.sleep(DAY + 60)  # past the one-day recheck
        await confirm_pick(env, handle)
        view = await handle.result()
    assert view.status == OrderStatus.COMPLETED


async def test_tracking_that_takes_days_costs_few_history_events(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 1}, days_to_deliver=6)
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await handle.result()
        history = await handle.fetch_history()

    assert view.status == OrderStatus.COMPLETED
    delivered = next(e.at for e in view.timeline if e.status == OrderStatus.DELIVERED)
    labeled = next(e.at for e in view.timeline if e.status == OrderStatus.LABELED)
    assert delivered - labeled >= timedelta(days=6)
    # Hourly polls over six days: ~144 attempts, none of them in history.
    assert fake.tracking_polls > 100
    assert len(history.events) < 120


async def test_backorder_still_short_after_fourteen_days_is_cancelled_with_a_message(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 2})
    fake = world(env, {"MUG-RED": 0})
    async with worker(env, fake):
        handle = await start(env.client, order)
        view = await handle.result()  # the server skips the 14 days

    assert view.status == OrderStatus.CANCELLED
    assert "backordered too long" in view.timeline[-1].note
    cancelled_at, backordered_at = view.timeline[-1].at, view.timeline[1].at
    assert timedelta(days=14) <= cancelled_at - backordered_at < timedelta(days=15)
    assert fake.messages.count(("backordered", "email")) == 1
    assert fake.messages.count(("cancelled", "email")) == 1 and fake.messages.count(("cancelled", "sms")) == 1
    assert fake.reserved == {} and fake.labels_bought == 0


async def test_overdue_pick_alerts_ops_then_tells_the_customer(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 1})
    async with worker(env, fake):
        handle = await start(env.client, order)
        view = await wait_for_status(env, handle, OrderStatus.PICKING)
        await env.sleep(5 * HOUR)  # past the 4-hour SLA
        await eventually(env, lambda: bool(fake.ops_alerts))
        attrs = (await handle.describe()).typed_search_attributes
        assert attrs.get(PICK_OVERDUE) is True
        assert fake.ops_alerts == ["pick_overdue"]
        assert ("pick_delayed", "email") not in fake.messages
        await env.sleep(20 * HOUR)  # past the 24-hour customer threshold
        await eventually(env, lambda: ("pick_delayed", "sms") in fake.messages)
        assert fake.messages.count(("pick_delayed", "email")) == 1
        assert view.pick_task_id
        await handle.signal(OrderWorkflow.pick_confirmed, view.pick_task_id)
        view = await handle.result()
        attrs = (await handle.describe()).typed_search_attributes

    assert view.status == OrderStatus.COMPLETED
    assert attrs.get(PICK_OVERDUE) is False
    assert fake.ops_alerts == ["pick_overdue"]  # once


async def test_customer_hears_of_each_new_estimate_that_slips_once(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 1})
    fake.progression = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (4 * DAY, TrackingStatus.DELIVERED)]
    # Promised for day 1; slips to day 2.5 after it passed; delivered on day 4.
    fake.estimates = [(0.1 * DAY, 1 * DAY), (1.6 * DAY, 2.5 * DAY)]
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await handle.result()

    assert view.status == OrderStatus.COMPLETED
    assert fake.messages.count(("delivery_delayed", "email")) == 2
    assert fake.messages.count(("delivery_delayed", "sms")) == 2
    notes = [e.note for e in view.timeline if "passed; customer told" in e.note]
    assert len(notes) == 2


async def test_delivery_exception_waits_for_ops_and_refund_closes_the_order(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 2})
    fake = world(env, {"MUG-RED": 2})
    fake.progression = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (DAY, TrackingStatus.RETURN_TO_SENDER)]
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await wait_for_status(env, handle, OrderStatus.DELIVERY_EXCEPTION, step=HOUR)
        assert view.waiting_for and "reship or refund" in view.waiting_for
        await eventually(env, lambda: bool(fake.ops_alerts) and ("delivery_problem", "sms") in fake.messages)
        assert fake.ops_alerts == ["delivery_exception"]
        assert fake.messages.count(("delivery_problem", "sms")) == 1
        await handle.execute_update(
            OrderWorkflow.resolve_delivery_exception, ResolveDeliveryRequest(action="refund", note="parcel lost")
        )
        view = await handle.result()

    statuses = [e.status.value for e in view.timeline]
    assert statuses[-3:] == ["DELIVERY_EXCEPTION", "REFUNDED", "COMPLETED"]
    assert fake.messages.count(("refund_issued", "email")) == 1
    assert fake.parcel_refunds == [(1, 2 * 1250)]  # through the payments gateway, at the price paid
    assert fake.committed == {"MUG-RED": 2}  # the goods are gone either way


async def test_delivery_exception_that_recovers_needs_no_ops(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 1})
    fake.progression = [
        (0.2 * DAY, TrackingStatus.IN_TRANSIT),
        (DAY, TrackingStatus.FAILURE),
        (1.5 * DAY, TrackingStatus.IN_TRANSIT),
        (2 * DAY, TrackingStatus.DELIVERED),
    ]
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        view = await handle.result()

    statuses = [e.status.value for e in view.timeline]
    assert "DELIVERY_EXCEPTION" in statuses
    assert statuses[-2:] == ["DELIVERED", "COMPLETED"]


async def test_unresolved_delivery_exception_fails_for_ops_after_the_timeout(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 1})
    fake = world(env, {"MUG-RED": 1})
    fake.progression = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (DAY, TrackingStatus.FAILURE)]
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        view = await handle.query(OrderWorkflow.status)

    assert view.status == OrderStatus.FAILED
    assert "not resolved by ops" in view.timeline[-1].note


async def test_ship_available_sends_what_is_there_and_gives_up_the_rest_after_the_limit(
    env: WorkflowEnvironment,
) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 2, "TEE-M": 1})
    fake = world(env, {"MUG-RED": 2, "TEE-M": 0})
    policy = POLICY.model_copy(update={"partial_shipment": PartialShipment.SHIP_AVAILABLE})
    async with worker(env, fake):
        handle = await start(env.client, order, policy)
        view = await wait_for_status(env, handle, OrderStatus.BACKORDERED)  # the order waits for TEE-M...
        await env.sleep(60)
        view = await handle.query(OrderWorkflow.status)
        assert [(li.sku, li.quantity) for li in view.shipments[0].lines] == [("MUG-RED", 2)]  # ...the mugs go
        assert view.shipments[0].status == OrderStatus.PICKING
        await handle.signal(OrderWorkflow.pick_confirmed, view.shipments[0].pick_task_id or "")
        view = await handle.result()  # TEE-M never comes: after 14 days that part is given up

    assert view.status == OrderStatus.COMPLETED
    assert view.shipments[0].status == OrderStatus.DELIVERED and fake.gave_up
    assert "TEE-M x1 cancelled (not restocked in time)" in view.timeline[-1].note
    # One delay message (the partial shipment), then one for the part that is cancelled (not "nothing shipped").
    assert fake.messages.count(("partial_shipment", "email")) == 1
    assert ("backordered", "email") not in fake.messages
    assert fake.messages.count(("partly_cancelled", "email")) == 1 and ("cancelled", "email") not in fake.messages
    assert fake.committed == {"MUG-RED": 2} and fake.reserved == {}


async def test_pick_short_of_everything_reserves_the_goods_again_as_a_new_parcel(env: WorkflowEnvironment) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines={"MUG-RED": 2})
    fake = world(env, {"MUG-RED": 5})
    async with worker(env, fake):
        handle = await start(env.client, order)
        view = await wait_for_status(env, handle, OrderStatus.PICKING)
        with pytest.raises(WorkflowUpdateFailedError):  # more than the task holds: refused, nothing changes
            await handle.execute_update(
                OrderWorkflow.pick_short, PickShortage(task_id=view.pick_task_id or "", short={"MUG-RED": 3})
            )
        await handle.execute_update(
            OrderWorkflow.pick_short, PickShortage(task_id=view.pick_task_id or "", short={"MUG-RED": 2})
        )
        await env.sleep(60)
        view = await handle.query(OrderWorkflow.status)
        assert view.shipments[0].outcome == "nothing found at the pick"
        assert view.pick_task_id == f"PICK-{order.order_id}-2"  # the second parcel's pick
        await handle.signal(OrderWorkflow.pick_confirmed, view.pick_task_id)
        view = await handle.result()

    assert view.status == OrderStatus.COMPLETED
    assert [(p.shipment_no, p.status) for p in view.shipments] == [
        (1, OrderStatus.CANCELLED),  # nothing of it was ever going to ship
        (2, OrderStatus.DELIVERED),
    ]
    assert fake.labels_bought == 1  # nothing was shipped from the empty pick
    assert fake.short_picks == [f"PICK-{order.order_id}-1"]  # the stock correction, recorded once
    assert fake.messages.count(("shipped", "email")) == 1
