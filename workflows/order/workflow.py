"""The per-order state machine: one durable workflow carries an order from intake to delivery.

Deterministic code only: time from workflow.now(), no I/O. Every side effect is an activity with a
business idempotency key, so retries, worker crashes and replays never double-reserve, double-buy or
double-send. See DESIGN.md for the states and rules.

Failure handling (workflows/steps.py runs the steps): an outage makes the order wait, visibly, and carry on by
itself; messages never hold it up; an error retrying cannot fix parks the part it hit in FAILED for ops
(`retry` or cancel, until `failed_wait_s`), and never undoes parcels the carrier already has. A cancel or a
hold of a labelled parcel asks the carrier first, and each parcel is undone on its own. Orders recorded
before a behaviour existed replay the way they ran: each change sits behind the patch id named beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.order.returns_desk import OrderReturns
from workflows.order.timeline import FORWARD, TRACKING_TO_ORDER, Timeline, describe
from workflows.steps import CARRIER, DATABASE, PAYMENTS, Messenger, Step, StepRunner, on_channels

with workflow.unsafe.imports_passed_through():
    # pydantic imports email_validator lazily when it validates an EmailStr: pass it through, or the
    # sandbox re-imports it for every workflow run.
    import email_validator  # noqa: F401

    from activities.inventory import InventoryActivities
    from activities.notifications import NotificationActivities
    from activities.returns import ReturnActivities
    from activities.shipping import ShippingActivities
    from activities.warehouse import WarehouseActivities
    from common.inventory.contracts import ShipmentRef
    from common.models import (
        MOVED_TRACKING_STATUSES,
        SHIPPED_STATUSES,
        Address,
        CancelRequest,
        Channel,
        DeliveryResolution,
        HoldRequest,
        Label,
        LabelRequest,
        LabelUndo,
        NotificationEvent,
        NotifyRequest,
        OpsAlert,
        OrderLine,
        OrderStatus,
        OrderUpdateResult,
        OrderView,
        OrderWorkflowInput,
        ParcelRefundRequest,
        PartialShipment,
        PickShortage,
        PickTaskRequest,
        ReservationReleased,
        ReserveRequest,
        ResolveDeliveryRequest,
        RetryRequest,
        ShipmentAllocation,
        ShipmentView,
        TrackingPollRequest,
        TrackingStatus,
        TrackingUpdate,
        order_key,
    )
    from common.temporal import CARRIER as CARRIER_ATTR
    from common.temporal import PICK_OVERDUE, TRACKING_NUMBER


# Orders of this OrderWorkflowInput.workflow_version and later batch their search attribute upserts
# (workflows/visibility.py) and buy labels as local activities. Orders of version 1 recorded before then replay
# the way they were recorded (tests/replay/histories); one a starter creates with version 1 today takes the new
# path (LEAN_FOR_EVERY_ORDER), so the old path ends with the orders that use it. Later changes are patches.
LEAN_HISTORY = 2

# Patch ids: the behaviour they name is what orders started since then do.
LEAN_FOR_EVERY_ORDER = "lean-history-for-every-order"
PARK_FAILURES = "park-failures"  # an error retrying cannot fix waits for ops in FAILED, part by part
LABELLED_PARCELS_ASK_THE_CARRIER = "labelled-parcels-ask-the-carrier"  # and "shipped" goes out on the first scan
UNDO_PER_PARCEL = "undo-per-parcel"  # a cancel undoes each parcel on its own, never one the carrier has
REFUND_THROUGH_GATEWAY = "refund-through-gateway"  # resolve --action refund pays the parcel back
TEMPORAL_CANCEL_COMPENSATES = "temporal-cancel-compensates"  # the Web UI's cancel works like `order cancel`

_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")

_EXCEPTION_STATUSES = frozenset({TrackingStatus.FAILURE, TrackingStatus.RETURN_TO_SENDER})
_ALLOCATOR = 0  # the key of the allocator among the parts that can be parked in FAILED (parcels: their number)


@dataclass
class _ParcelProgress:
    """How far a parcel got: after a failure ops retry, it resumes here (every step is idempotent anyway)."""

    picked: bool = False
    label: Label | None = None
    label_attempted: bool = False  # a purchase was started: undoing the parcel must ask the carrier
    last: TrackingStatus = TrackingStatus.PRE_TRANSIT
    estimate: datetime | None = None
    committed: bool = False  # the carrier has the parcel: its stock left the building
    exception_deadline: datetime | None = None


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow(OrderReturns):
    """One order from intake to delivery. Stock is reserved as one or more shipments (parcels): one warehouse
    when one covers the order, else a split, or what is in stock now under the ship-available policy. Each
    parcel runs its own pick, label, tracking and messages concurrently; the order's status sums them up, and
    lines that could not be reserved (or went missing at the pick, or were lost and reshipped) wait for stock
    and become further parcels."""

    @workflow.init
    def __init__(self, input: OrderWorkflowInput) -> None:
        self._order = input.order
        self._policy = input.policy
        # The key of the order's rows and idempotency keys: its id, unless it was placed again (see order_key).
        self._key = order_key(input.order.order_id, input.placement)
        self._placement = input.placement
        self._view = OrderView(
            order_id=input.order.order_id,
            status=OrderStatus.RECEIVED,
            customer_id=input.order.customer.id,
            lines=list(input.order.lines),
            shipping_speed=input.order.shipping_speed,
        )
        self._timeline = timeline = Timeline(self._view)
        self._steps = StepRunner(on_change=timeline.show_waits, around_local=timeline.visibility.local_step)
        self._messenger = Messenger(self._steps, on_note=timeline.note, on_change=timeline.show_waits)
        timeline.watch(self._steps, self._messenger)
        self._lean = False  # set in run(): see LEAN_HISTORY
        self._restocks_seen = 0
        self._confirmed_picks: set[str] = set()
        self._pick_shortages: dict[str, dict[str, int]] = {}
        self._address_updates = 0
        # Lines not in any parcel yet, and since when they wait for stock (None: not waiting)
        self._unallocated: list[OrderLine] = list(input.order.lines)
        self._waiting_since: datetime | None = None
        self._next_shipment = 1
        self._told_delayed = False
        self._given_up: list[OrderLine] = []  # lines never restocked in time (cancelled, the rest shipped)
        self._parcels: list[asyncio.Task[None]] = []
        self._progress: dict[int, _ParcelProgress] = {}
        self._allocator: asyncio.Task[None] | None = None
        # The first error of any parcel (or a cancellation it hit): the main path rethrows it.
        self._failure: BaseException | None = None
        # Parcels whose reservation a stock count released before they were packed; of those, the ones the
        # count's own transaction released (their pick tasks are cancelled already).
        self._released: set[int] = set()
        self._released_in_the_db: set[int] = set()
        self._overdue_picks = 0
        # Ops requests, acted on at the next step boundary (or at once while the order waits).
        self._cancel_reason: str | None = None
        self._cancel_confirmed = False  # decided: the parts undo themselves at their next step
        self._deciding = False  # the carrier is being asked whether a cancel or hold can still be honoured
        self._uncancellable: set[int] = set()  # parcels a cancel found with the carrier: they go on
        self._requests: list[asyncio.Task[Any]] = []  # cancels requested by a signal or in Temporal
        self._hold_reason: str | None = None
        self._hold_recorded_by_request = False
        self._awaiting_return = input.awaiting_return
        self._label_bought = False
        self._buying_labels = 0  # purchases in flight: an address change now would be silently ignored
        self._resolutions: dict[int, ResolveDeliveryRequest] = {}  # shipment no -> ops decision
        self._delay_notified_for: dict[int, datetime] = {}  # shipment no -> the estimate the customer heard slip
        self._seen_by_check: dict[int, TrackingUpdate] = {}  # a carrier check found the parcel moved
        # Parts parked in FAILED (parcel number, or _ALLOCATOR) -> the retry round they wait for.
        self._parked: dict[int, int] = {}
        self._retry_round = 0
        self._retry_note: str | None = None
        self._failed_parts: list[str] = []  # what was given up after waiting for ops in vain
        self._closed = False
        self._waiting_base: str | None = None
        # Patches, evaluated where the behaviour first differs (None: not reached yet).
        self._asks_the_carrier: bool | None = None
        self._undoes_per_parcel: bool | None = None
        # Saga (orders recorded before UNDO_PER_PARCEL): undo steps, run newest first on cancel or failure.
        self._compensations: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    # ------------------------------------------------------------------------------------------ messages

    @workflow.query(description="The order as ops see it: status, parcels, timeline, what it waits for.")
    def status(self) -> OrderView:
        return self._view

    @workflow.signal(description="The warehouse confirmed the pick task with this id (all lines picked and packed).")
    def pick_confirmed(self, task_id: str) -> None:
        self._confirmed_picks.add(task_id)

    @workflow.update(
        description='Confirm a pick short, e.g. {"task_id": "PICK-1A2B", "short": {"MUG-RED": 1}} (units not on '
        "the shelf): on hand is corrected with a recorded discrepancy and the missing units are re-reserved "
        "elsewhere or wait for stock. Only for a pick task of this order that is waiting for confirmation."
    )
    async def pick_short(self, shortage: PickShortage) -> OrderUpdateResult:
        self._pick_shortages[shortage.task_id] = dict(shortage.short)
        self._confirmed_picks.add(shortage.task_id)
        return self._result()

    @pick_short.validator
    def _validate_pick_short(self, shortage: PickShortage) -> None:
        parcels = [p for p in self._view.shipments if p.pick_task_id == shortage.task_id]
        if not parcels or parcels[0].status != OrderStatus.PICKING or shortage.task_id in self._confirmed_picks:
            raise ValueError(
                f"{shortage.task_id} is not a pick of order {self._order.order_id} waiting to be confirmed"
            )
        ordered = {line.sku: line.quantity for line in parcels[0].lines}
        if not shortage.short:
            raise ValueError('say which units are missing, e.g. {"MUG-RED": 1}')
        for sku, units in shortage.short.items():
            if sku not in ordered:
                raise ValueError(f"pick task {shortage.task_id} has no line for {sku} (it has {', '.join(ordered)})")
            if not 0 < units <= ordered[sku]:
                raise ValueError(f"short {sku}={units} must be between 1 and the {ordered[sku]} to pick")

    @workflow.signal(
        description="Stock arrived for one of this order's SKUs: a backordered order retries its reservation."
    )
    def stock_received(self, sku: str) -> None:
        self._restocks_seen += 1

    @workflow.signal(
        description="(Sent before reservation_released existed.) A stock count released this order's "
        "reservations of parcels not picked yet: they are re-reserved, or wait for stock."
    )
    def stock_released(self, sku: str) -> None:
        for parcel in self._view.shipments:
            if parcel.outcome is None and parcel.status in (OrderStatus.RESERVED, OrderStatus.PICKING):
                self._released.add(parcel.shipment_no)

    @workflow.signal(
        description="A stock count released the reservations of these parcels before they were picked (their "
        "pick tasks are cancelled): their goods are reserved again, or wait for stock."
    )
    def reservation_released(self, released: ReservationReleased) -> None:
        for parcel in self._view.shipments:
            if parcel.shipment_no in released.shipments and parcel.outcome is None:
                self._released.add(parcel.shipment_no)
                self._released_in_the_db.add(parcel.shipment_no)

    @workflow.signal(
        description="(Replacement orders of an exchange.) The customer sent the goods back: the replacement ships."
    )
    def return_sent(self, rma_id: str) -> None:
        if self._awaiting_return == rma_id:
            self._awaiting_return = None

    @workflow.signal(
        description="(Replacement orders of an exchange.) The return expired or failed: the replacement is "
        "cancelled unless it already left."
    )
    def return_abandoned(self, rma_id: str) -> None:
        if self._awaiting_return == rma_id and self._cancel_reason is None and not self._closed:
            reason = f"the goods of {rma_id} were never sent back"
            self._requests.append(asyncio.create_task(self._request_cancel(reason)))

    @workflow.update(
        description='Cancel the order, e.g. {"reason": "customer changed their mind"}. Releases stock, cancels '
        "the pick tasks and voids bought labels. Refused once a parcel is with the carrier (the carrier is "
        "asked first)."
    )
    async def cancel(self, request: CancelRequest) -> OrderUpdateResult:
        refusal = await self._request_cancel(request.reason)
        if refusal is not None:
            raise ApplicationError(refusal, type="CancelRefused", non_retryable=True)
        await workflow.wait_condition(lambda: self._closed or self._cancel_went_as_far_as_it_can())
        return self._result()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._refuse_if_closed_or_shipped("cancel")
        if self._cancel_reason is not None:
            raise ValueError(f"a cancellation is already under way ({self._cancel_reason})")

    @workflow.update(
        description='Hold the order at its next step, e.g. {"reason": "fraud check"}. It shows ON_HOLD with '
        "the reason until released. Refused once shipped (the carrier is asked first)."
    )
    async def hold(self, request: HoldRequest) -> OrderUpdateResult:
        refusal = await self._request_hold(request.reason)
        if refusal is not None:
            raise ApplicationError(refusal, type="HoldRefused", non_retryable=True)
        await workflow.wait_condition(
            lambda: self._view.status == OrderStatus.ON_HOLD or self._closed or self._hold_reason is None
        )
        return self._result()

    @hold.validator
    def _validate_hold(self, request: HoldRequest) -> None:
        self._refuse_if_closed_or_shipped("hold")
        if self._hold_reason is not None:
            raise ValueError(f"the order is already on hold ({self._hold_reason})")
        if self._cancel_reason is not None:
            raise ValueError(f"a cancellation is under way ({self._cancel_reason})")

    @workflow.update(description="Release an order on hold: it resumes where it stopped.")
    async def release(self) -> OrderUpdateResult:
        self._hold_reason = None
        if self._hold_recorded_by_request and self._view.status == OrderStatus.ON_HOLD:
            # Only labelled parcels were moving: no step of the order will record the release.
            self._record_released()
        self._hold_recorded_by_request = False
        await workflow.wait_condition(lambda: self._view.status != OrderStatus.ON_HOLD)
        return self._result()

    @release.validator
    def _validate_release(self) -> None:
        if self._hold_reason is None:
            raise ValueError(f"order {self._order.order_id} is not on hold (it is {self._view.status.value})")

    @workflow.update(
        description="Correct the ship-to address (an Address object: name, line1, line2, city, region, "
        "postal_code, country). Allowed until a label is bought, and while a parcel is ADDRESS_INVALID."
    )
    async def update_address(self, address: Address) -> OrderUpdateResult:
        self._order = self._order.model_copy(update={"ship_to": address})
        self._address_updates += 1
        self._timeline.note("ship-to address updated by ops")
        return self._result()

    @update_address.validator
    def _validate_update_address(self, address: Address) -> None:
        if self._buying_labels:
            raise ValueError(
                f"a label is being bought for order {self._order.order_id} right now, for the address it has; "
                "try again once it is LABELED (then: cancel and place the order again) or ADDRESS_INVALID"
            )
        if any(p.status == OrderStatus.ADDRESS_INVALID for p in self._view.shipments):
            return
        self._refuse_if_closed_or_shipped("change the address of")
        if self._label_bought:
            raise ValueError("a label is already bought for the old address: cancel and place the order again")

    @workflow.update(
        description='Decide a DELIVERY_EXCEPTION: {"action": "reship"} sends the parcel\'s goods again as a new '
        'parcel; {"action": "refund", "note": "lost"} refunds it. Optional "shipment": which parcel (default: '
        "the first in exception). Only while the order is in DELIVERY_EXCEPTION."
    )
    async def resolve_delivery_exception(self, request: ResolveDeliveryRequest) -> OrderUpdateResult:
        parcel = self._exception_parcel(request.shipment)
        assert parcel is not None  # the validator checked
        self._resolutions[parcel.shipment_no] = request
        await workflow.wait_condition(
            lambda: parcel.status != OrderStatus.DELIVERY_EXCEPTION or parcel.outcome is not None
        )
        return self._result()

    @resolve_delivery_exception.validator
    def _validate_resolution(self, request: ResolveDeliveryRequest) -> None:
        parcel = self._exception_parcel(request.shipment)
        if parcel is None:
            which = f" shipment {request.shipment}" if request.shipment is not None else ""
            raise ValueError(
                f"order {self._order.order_id}{which} has no delivery exception to resolve "
                f"(it is {self._view.status.value})"
            )
        if parcel.shipment_no in self._resolutions:
            raise ValueError(f"already being resolved ({self._resolutions[parcel.shipment_no].action.value})")

    @workflow.update(
        description='Retry what failed and waits for ops (the order is FAILED), e.g. {"note": "carrier account '
        'fixed"}: the step that failed runs again where it stopped.'
    )
    async def retry(self, request: RetryRequest) -> OrderUpdateResult:
        this_round = self._retry_round
        self._retry_round += 1
        self._retry_note = request.note
        await workflow.wait_condition(lambda: all(r > this_round for r in self._parked.values()) or self._closed)
        return self._result()

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        if not self._parked:
            raise ValueError(
                f"order {self._order.order_id} has nothing that failed to retry (it is {self._view.status.value})"
            )

    def _exception_parcel(self, shipment_no: int | None) -> ShipmentView | None:
        for parcel in self._view.shipments:
            in_exception = parcel.status == OrderStatus.DELIVERY_EXCEPTION and parcel.outcome is None
            if in_exception and (shipment_no is None or parcel.shipment_no == shipment_no):
                if shipment_no is not None or parcel.shipment_no not in self._resolutions:
                    return parcel
        return None

    def _refuse_if_closed_or_shipped(self, action: str) -> None:
        status = self._view.status
        if self._closed or status in (OrderStatus.COMPLETED, OrderStatus.CANCELLED):
            raise ValueError(f"cannot {action} order {self._order.order_id}: it is already {status.value}")
        if self._handed_to_carrier():
            raise ValueError(f"cannot {action} order {self._order.order_id}: already shipped: request a return")

    def _handed_to_carrier(self) -> bool:
        return any(
            p.status in SHIPPED_STATUSES
            or p.status == OrderStatus.REFUNDED
            or p.shipment_no in self._uncancellable
            or self._progress.get(p.shipment_no, _ParcelProgress()).committed
            for p in self._view.shipments
        )

    def _shipped_from(self) -> dict[str, str]:
        """sku -> the warehouse its delivered units left from (returns go back there)."""
        origin: dict[str, str] = {}
        for parcel in self._delivered_parcels():
            for line in parcel.lines:
                origin.setdefault(line.sku, parcel.warehouse)
        return origin

    def _delivered_parcels(self) -> list[ShipmentView]:
        return [p for p in self._view.shipments if p.status == OrderStatus.DELIVERED and p.outcome is None]

    @property
    def _placed_again_key(self) -> str | None:
        """The order's key for messages' idempotency keys when it differs from its id (placed again)."""
        return self._key if self._key != self._order.order_id else None

    def _result(self) -> OrderUpdateResult:
        return self._timeline.result()

    # ------------------------------------------------------------------------------------------ main path

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderView:
        if input.workflow_version >= LEAN_HISTORY or workflow.patched(LEAN_FOR_EVERY_ORDER):
            self._lean = True
            self._timeline.visibility.start_batching()
        self._timeline.record(OrderStatus.RECEIVED, self._intake_note(input))
        # The work runs in a task of its own, so that a cancel requested in Temporal (the Web UI's button)
        # reaches this loop only, and becomes a cancel request like `fulfill order cancel`.
        body = asyncio.create_task(self._run())
        try:
            while True:
                try:
                    return await asyncio.shield(body)
                except asyncio.CancelledError:
                    if body.done() or not workflow.patched(TEMPORAL_CANCEL_COMPENSATES):
                        body.cancel()
                        return await body  # the way orders recorded before the patch closed
                    self._requests.append(asyncio.create_task(self._cancel_requested_in_temporal()))
        finally:
            self._timeline.visibility.flush()  # the final status, before the workflow closes

    async def _run(self) -> OrderView:
        try:
            await self._notify(NotificationEvent.ORDER_CONFIRMED)
            await self._checkpoint()
            await self._fulfil()
            self._compensations.clear()
            return await self._finish()
        except OrderCancelled as cancelled:
            await self._compensate()
            await self._notify(NotificationEvent.CANCELLED, {"reason": cancelled.reason})
            # Last, so that CANCELLED (which the cancel Update waits for) means everything is done.
            return await self._close(OrderStatus.CANCELLED, cancelled.reason)
        except (ActivityError, ApplicationError) as err:
            await self._compensate()
            self._timeline.record(OrderStatus.FAILED, f"needs ops: {_cause(err)}")
            self._closed = True
            raise ApplicationError(
                f"order {self._order.order_id} failed: {_cause(err)}", self._view, non_retryable=True
            ) from err

    async def _finish(self) -> OrderView:
        """Every part is done: cancelled, failed for good, or delivered (then the return window)."""
        delivered = self._delivered_parcels()
        if self._cancel_confirmed and self._undoes_per_parcel and not self._handed_to_carrier():
            # Each parcel undid itself; this catches a reservation no parcel knew of, and the backorder.
            await self._release_stock()
            await self._notify(NotificationEvent.CANCELLED, {"reason": self._cancel_reason or "cancelled"})
            return await self._close(OrderStatus.CANCELLED, f"cancelled: {self._cancel_reason}")
        reached_the_customer = delivered or any(p.outcome in ("refunded", "reshipped") for p in self._view.shipments)
        if self._failed_parts and not reached_the_customer:
            what = "; ".join(self._failed_parts)
            await self._release_stock()
            await self._notify(NotificationEvent.FULFILMENT_FAILED, {"what": describe(self._order.lines)})
            await self._close(OrderStatus.FAILED, f"gave up: {what}")
            raise ApplicationError(f"order {self._order.order_id} failed: {what}", self._view, non_retryable=True)
        # Return window hook: after delivery (stock committed per parcel), before COMPLETED.
        if delivered:
            await self._return_window()
        return await self._close(OrderStatus.COMPLETED, self._summary(delivered))

    async def _close(self, status: OrderStatus, note: str) -> OrderView:
        """The final status; the workflow ends once its queued messages went out and its handlers finished."""
        self._timeline.record(status, note)
        self._closed = True
        if self._messenger.waiting:
            await self._messenger.drained()
        if not workflow.all_handlers_finished():
            await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    def _summary(self, delivered: list[ShipmentView]) -> str:
        parcels = self._view.shipments
        given_up = [f"{describe(self._given_up)} cancelled (not restocked in time)"] if self._given_up else []
        given_up += [f"failed: {what}" for what in self._failed_parts]
        if len(parcels) == 1:
            return "; ".join(["delivered" if delivered else "refunded", *given_up])
        others = [f"shipment {p.shipment_no} {p.outcome}" for p in parcels if p.outcome]
        return "; ".join([f"{len(delivered)} of {len(parcels)} parcels delivered", *others, *given_up])

    async def _fulfil(self) -> None:
        """Run the allocator (whenever lines wait for a parcel) and every parcel until all are done; the first
        failure or cancellation any of them hits stops the rest and is raised here."""
        # Registered once, before the first reservation: releasing is idempotent, and it also closes the
        # order's backorder entry when the order is cancelled while waiting for stock. Cancelling pick tasks
        # only touches open ones.
        self._compensations.append(("release reservation", self._release_stock))
        self._compensations.append(("cancel pick tasks", self._cancel_picks))
        evicted = False
        try:
            while True:
                if self._unallocated and (self._allocator is None or self._allocator.done()):
                    self._allocator = asyncio.create_task(self._guard(self._allocate()))
                await workflow.wait_condition(
                    lambda: (
                        self._failure is not None
                        or self._all_done()
                        or (bool(self._unallocated) and self._allocator is not None and self._allocator.done())
                    )
                )
                if self._failure is not None:
                    raise self._failure
                if self._all_done() and not self._unallocated:
                    return
        except GeneratorExit:
            # The worker dropped this workflow from its cache and Python is closing the coroutine: awaiting on
            # the way out is not allowed then ("coroutine ignored GeneratorExit"); a replay picks it up again.
            evicted = True
            raise
        finally:
            running = [t for t in (*self._parcels, self._allocator) if t is not None and not t.done()]
            for task in running:
                task.cancel()
            if not evicted:
                for task in running:
                    await _settle(task)

    def _all_done(self) -> bool:
        """Every parcel finished (delivered, refunded, reshipped...) and the allocator is not running."""
        return all(t.done() for t in self._parcels) and (self._allocator is None or self._allocator.done())

    async def _guard(self, work: Awaitable[None]) -> None:
        """Run one parcel or the allocator; record its failure for the main path instead of losing it."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            if self._failure is None:
                self._failure = err

    # ------------------------------------------------------------------------------------------ allocation

    async def _allocate(self) -> None:
        """Reserve the unallocated lines as parcels; what cannot be reserved waits BACKORDERED for a restock
        (the customer hears once), up to the backorder limit. A cancel stops the wait; an error retrying
        cannot fix waits for ops."""
        try:
            await self._allocate_until_reserved()
        except OrderCancelled:
            if not self._undoes_per_parcel:
                raise
            await self._step(InventoryActivities.close_backorder, self._key, DATABASE, "stop waiting for stock")
            self._unallocated, self._waiting_since = [], None
            self._view.backordered = []

    async def _allocate_until_reserved(self) -> None:
        order = self._order
        while self._unallocated:
            seen = self._restocks_seen
            request = ReserveRequest(
                order_id=self._key,
                lines=self._unallocated,
                ship_to_country=order.ship_to.country,
                ship_to_region=order.ship_to.region,
                allow_partial=self._policy.partial_shipment == PartialShipment.SHIP_AVAILABLE,
                first_shipment=self._next_shipment,
            )
            try:
                result = await self._step(InventoryActivities.reserve_stock, request, DATABASE, "reserve stock")
            except (ActivityError, ApplicationError) as err:
                problem = self._problem_of(err)
                if await self._park(None, problem):
                    continue
                self._failed_parts.append(f"{describe(self._unallocated)} ({problem})")
                await self._give_up_unallocated(f"could not be reserved: {problem}")
                return
            if result.shipments:  # what is left waits; with nothing reserved, all of it still does
                self._unallocated = [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(result.short.items())]
            self._view.backordered = list(self._unallocated)
            if not self._unallocated:
                self._waiting_since = None
            elif self._waiting_since is None:
                self._waiting_since = workflow.now()
            self._start_parcels(result.shipments)
            if result.shipments:
                self._next_shipment = result.shipments[-1].shipment_no + 1
            if result.low_stock:
                await self._alert_low_stock(result.low_stock)
            if not self._unallocated:
                return
            short = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(result.short.items()))
            if result.shipments:
                self._timeline.record(self._status_now(), f"shipping what is in stock; waiting for {short}")
            elif self._view.status != OrderStatus.BACKORDERED:
                self._timeline.record(self._status_now(), f"waiting for stock: {short}", waiting_for="a restock")
            if not self._told_delayed:
                self._told_delayed = True
                # "Ships in parts" only while a parcel is really on its way; else the order just waits.
                going = any(p.outcome is None for p in self._view.shipments)
                event = NotificationEvent.PARTIAL_SHIPMENT if going else NotificationEvent.BACKORDERED
                await self._notify(event, {"short": describe(self._unallocated)})
            assert self._waiting_since is not None  # set above while lines wait
            give_up_at = self._waiting_since + timedelta(seconds=self._policy.backorder_max_wait_s)
            if workflow.now() >= give_up_at:
                await self._give_up_waiting(short)
                return
            # A restock signal wakes us; the periodic recheck covers a signal sent before we started waiting.
            recheck = min(give_up_at, workflow.now() + timedelta(seconds=self._policy.backorder_recheck_interval_s))
            await self._wait_until(lambda: self._restocks_seen > seen, recheck)  # noqa: B023 (awaited here)

    async def _give_up_waiting(self, short: str) -> None:
        """Backordered past the limit: cancel the order, or only the part that never came when parcels are on
        their way already."""
        if not any(p.outcome is None for p in self._view.shipments) and not self._handed_to_carrier():
            raise OrderCancelled(f"backordered too long: still short of {short}")
        self._given_up = _merge(self._given_up, self._unallocated)
        await self._give_up_unallocated(f"{short} could not be restocked in time")

    async def _give_up_unallocated(self, why: str) -> None:
        """Stop waiting for the lines no parcel holds; the rest of the order goes on, and the customer hears."""
        what = describe(self._unallocated)
        await self._step(InventoryActivities.close_backorder, self._key, DATABASE, "stop waiting for stock")
        self._unallocated, self._waiting_since = [], None
        self._view.backordered = []
        self._timeline.record(self._status_now(), f"gave up waiting for {what}: that part is cancelled ({why})")
        if any(p.outcome is None for p in self._view.shipments) or self._delivered_parcels():
            await self._notify(
                NotificationEvent.PARTLY_CANCELLED, {"what": what, "reason": why}, occurrence="remainder"
            )

    def _start_parcels(self, allocations: Sequence[ShipmentAllocation]) -> None:
        """Each reserved shipment becomes a parcel with its own pick, label and tracking, running concurrently."""
        parcels = [
            ShipmentView(shipment_no=a.shipment_no, warehouse=a.warehouse, lines=list(a.lines)) for a in allocations
        ]
        self._view.shipments += parcels  # all of them first: the timeline then names each parcel
        for parcel in parcels:
            self._progress[parcel.shipment_no] = _ParcelProgress()
            what = f": {describe(parcel.lines)}" if len(self._view.shipments) > 1 else ""
            self._advance(parcel, OrderStatus.RESERVED, f"reserved in {parcel.warehouse}{what}")
            self._parcels.append(asyncio.create_task(self._guard(self._ship(parcel))))

    # ------------------------------------------------------------------------------------------ one parcel

    async def _ship(self, parcel: ShipmentView) -> None:
        progress = self._progress[parcel.shipment_no]
        while True:
            try:
                try:
                    await self._ship_from_where_it_is(parcel, progress)
                    return
                except (ActivityError, ApplicationError) as err:
                    problem = self._problem_of(err)
                if await self._park(parcel, problem):
                    self._resume(parcel, progress)
                    continue  # ops retried: from where it failed
                if not await self._give_up_parcel(parcel, progress, problem):
                    continue  # the carrier has it: it goes on
                return
            except ParcelReleased:
                # A stock count took this parcel's units before they were picked: its lines wait for stock again.
                parcel.outcome = "stock released by a count; its goods are reserved again"
                self._unallocated = _merge(self._unallocated, parcel.lines)
                if parcel.shipment_no not in self._released_in_the_db:
                    await self._cancel_picks()  # the count's transaction cancelled them in the other case
                self._advance(parcel, OrderStatus.CANCELLED, f"reservation released by a stock count; {parcel.outcome}")
                return
            except OrderCancelled:
                if not self._undoes_per_parcel:
                    raise
                if await self._undo_cancelled_parcel(parcel, progress):
                    return
                # the carrier had it after all: it goes on (see _undo_cancelled_parcel)

    def _resume(self, parcel: ShipmentView, progress: _ParcelProgress) -> None:
        """After a retry by ops: a delivery exception gets its full time for ops again."""
        if parcel.status == OrderStatus.DELIVERY_EXCEPTION:
            timeout = timedelta(seconds=self._policy.delivery_exception_timeout_s)
            progress.exception_deadline = workflow.now() + timeout

    async def _ship_from_where_it_is(self, parcel: ShipmentView, progress: _ParcelProgress) -> None:
        if not progress.picked:
            await self._checkpoint(parcel)
            if self._awaiting_return is not None:
                await self._await_return(parcel)
            if not await self._pick(parcel):
                return
            progress.picked = True
        if progress.label is None:
            await self._checkpoint(parcel)
            progress.label = await self._buy_label(parcel, progress)
            if self._asks_the_carrier and self._cancelled(parcel):
                raise OrderCancelled(f"cancelled: {self._cancel_reason}")  # accepted while the label was bought
        await self._follow_tracking(parcel, progress)

    def _problem_of(self, err: BaseException) -> str:
        """What an error retrying cannot fix means for the part it hit: a released reservation, or a problem
        for ops (orders recorded before PARK_FAILURES fail as a whole instead: the error is raised)."""
        if not workflow.patched(PARK_FAILURES):
            raise err
        if _error_type(err) == "ShipmentReleased":
            raise ParcelReleased()
        return _cause(err)

    async def _await_return(self, parcel: ShipmentView) -> None:
        """A replacement ships once the customer sent the goods it replaces back (or never, if they don't)."""
        self._advance(
            parcel,
            parcel.status,
            f"reserved; ships once the return {self._awaiting_return} is on its way",
            waiting_for=f"the customer to send back the goods of {self._awaiting_return}",
        )
        await self._wait_until(lambda: self._awaiting_return is None, None, parcel)
        self._timeline.note("the return is on its way: the replacement ships")

    async def _pick(self, parcel: ShipmentView) -> bool:
        """Create the pick task and wait for it; a short pick sends the missing units back to allocation.
        False if nothing at all could be picked (the parcel ends there)."""
        request = PickTaskRequest(
            order_id=self._key,
            attempt=parcel.shipment_no,
            warehouse=parcel.warehouse,
            lines=parcel.lines,
        )
        task_id = await self._step(WarehouseActivities.create_pick_task, request, DATABASE, "create pick task")
        parcel.pick_task_id = task_id
        self._advance(
            parcel,
            OrderStatus.PICKING,
            f"pick task {task_id} in {parcel.warehouse}",
            waiting_for=f"pick confirmation of {task_id}",
        )
        await self._await_pick(parcel, task_id)
        short = self._pick_shortages.get(task_id, {})
        if not short:
            self._advance(parcel, OrderStatus.PACKED, f"pick task {task_id} confirmed, parcel packed")
            return True
        # The stock correction (idempotent: the CLI makes it before asking, the Web UI does not).
        await self._step(
            WarehouseActivities.confirm_short_pick,
            PickShortage(task_id=task_id, short=short),
            DATABASE,
            "record short pick",
        )
        missing = [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(short.items())]
        parcel.lines = [
            OrderLine(sku=line.sku, quantity=line.quantity - short.get(line.sku, 0))
            for line in parcel.lines
            if line.quantity > short.get(line.sku, 0)
        ]
        self._unallocated = _merge(self._unallocated, missing)
        self._view.backordered = list(self._unallocated)
        if not parcel.lines:
            parcel.outcome = "nothing found at the pick"
            self._advance(parcel, OrderStatus.CANCELLED, f"pick {task_id} short of everything; re-reserving it all")
            return False
        self._advance(
            parcel, OrderStatus.PACKED, f"pick {task_id} short of {describe(missing)}; packed the rest, re-reserving"
        )
        return True

    async def _await_pick(self, parcel: ShipmentView, task_id: str) -> None:
        """Wait for the pick; past the SLA alert ops (PickOverdue), later tell the customer of the delay."""
        started = workflow.now()
        policy = self._policy

        def picked() -> bool:
            return task_id in self._confirmed_picks

        if await self._wait_until(picked, started + timedelta(seconds=policy.pick_escalate_after_s), parcel):
            return
        self._overdue_picks += 1
        if self._overdue_picks == 1:
            self._timeline.visibility.stage([PICK_OVERDUE.value_set(True)])
        try:
            self._timeline.note(f"pick {task_id} overdue: ops alerted")
            await self._alert_ops(
                "pick_overdue",
                f"Pick {task_id} for order {self._order.order_id} is overdue",
                f"Pick task {task_id} in {parcel.warehouse} was created {started:%Y-%m-%d %H:%M} UTC and is not "
                "confirmed yet. Confirm it with `fulfill warehouse confirm` or put the order on hold.",
                occurrence=_occurrence(parcel),
            )
            deadline = started + timedelta(seconds=policy.pick_customer_delay_after_s)
            if not await self._wait_until(picked, deadline, parcel):
                self._timeline.note("customer told of the delay")
                await self._notify(NotificationEvent.PICK_DELAYED)
                await self._wait_until(picked, None, parcel)
        finally:
            # Also when a count or a cancel ends the wait: PickOverdue must not stick.
            self._overdue_picks -= 1
            if self._overdue_picks == 0:
                self._timeline.visibility.stage([PICK_OVERDUE.value_set(False)])

    async def _buy_label(self, parcel: ShipmentView, progress: _ParcelProgress) -> Label:
        """Rate-shop and buy; an address the carrier rejects parks the parcel until ops correct it."""
        while True:
            order = self._order
            request = LabelRequest(
                order_id=self._key,
                shipment_no=parcel.shipment_no,
                warehouse=parcel.warehouse,
                ship_to=order.ship_to,
                lines=parcel.lines,
                speed=order.shipping_speed,
            )
            self._compensations.append((f"void label {parcel.shipment_no}", partial(self._void_label, request)))
            progress.label_attempted = True
            self._buying_labels += 1
            try:
                if self._lean:
                    label = await self._step(ShippingActivities.buy_label, request, CARRIER, "rate-shop and buy label")
                else:
                    label = await workflow.execute_activity_method(
                        ShippingActivities.buy_label,
                        request,
                        summary="rate-shop and buy label",
                        **CARRIER.patient_options(),
                    )
                break
            except (ActivityError, ApplicationError) as err:
                if _error_type(err) != "CarrierAddressError":
                    raise  # keep "void label": the carrier may have sold one before the failure (voiding is safe)
                self._compensations.pop()  # the carrier refused the address: nothing was bought
                problem = _cause(err)
            finally:
                self._buying_labels -= 1
            await self._await_address_fix(parcel, problem)
        self._label_bought = True
        parcel.carrier, parcel.service = label.carrier, label.service
        parcel.tracking_number, parcel.tracking_url = label.tracking_number, label.tracking_url
        self._advance(
            parcel,
            OrderStatus.LABELED,
            f"{label.carrier} {label.service} label, tracking {label.tracking_number}",
            also=[CARRIER_ATTR.value_set(label.carrier), TRACKING_NUMBER.value_set(label.tracking_number)],
        )
        if not self._labelled_parcels_ask_the_carrier():
            # Orders recorded before then told the customer "shipped" now, before the carrier had the parcel.
            await self._notify(
                NotificationEvent.SHIPPED, self._tracking_context(parcel), occurrence=_occurrence(parcel)
            )
        return label

    async def _await_address_fix(self, parcel: ShipmentView, problem: str) -> None:
        self._advance(
            parcel,
            OrderStatus.ADDRESS_INVALID,
            f"carrier rejected the address: {problem}",
            waiting_for="ops to send update_address",
        )
        await self._notify(NotificationEvent.ADDRESS_PROBLEM, occurrence=_occurrence(parcel))
        seen = self._address_updates
        limit = self._policy.address_fix_timeout_s
        deadline = workflow.now() + timedelta(seconds=limit) if limit is not None else None
        if not await self._wait_until(lambda: self._address_updates > seen, deadline, parcel):
            days = (limit or 0) / 86400
            raise ApplicationError(
                f"the address the carrier rejected was not corrected within {days:g} days: {problem}",
                type="AddressNotCorrected",
                non_retryable=True,
            )
        self._advance(parcel, OrderStatus.PACKED, "address corrected; buying the label again")

    def _labelled_parcels_ask_the_carrier(self) -> bool:
        """Decided when the order's first label is bought: before undoing or holding a labelled parcel the
        carrier is asked where it is, a hold does not stop following it, and the customer hears "shipped"
        when the carrier has it (so never "shipped", then "cancelled")."""
        if self._asks_the_carrier is None:
            self._asks_the_carrier = workflow.patched(LABELLED_PARCELS_ASK_THE_CARRIER)
        return self._asks_the_carrier

    async def _follow_tracking(self, parcel: ShipmentView, progress: _ParcelProgress) -> None:
        """Infrequent polling: the activity fails while nothing changed and its retry policy is the poll loop,
        so a parcel that takes days costs a handful of history events. While a poll is in flight the parcel
        also watches its delivery estimate (delay notice when it passes), ops requests before shipping, and
        an ops decision on a delivery exception. The stock is committed when the carrier first moves it."""
        assert progress.label is not None
        label = progress.label
        n = parcel.shipment_no
        poll: workflow.ActivityHandle[TrackingUpdate] | None = None
        # One timer for the next deadline, kept across polls while that deadline stays the same.
        alarm = _Alarm()
        try:
            while parcel.status != OrderStatus.DELIVERED:
                if poll is None:
                    poll = self._start_tracking_poll(label, progress.last, progress.estimate)
                in_flight = poll
                alarm.set(self._next_wake(parcel, progress.exception_deadline))
                await workflow.wait_condition(
                    lambda: (
                        in_flight.done()  # noqa: B023 (awaited here)
                        or alarm.rang
                        or self._tracking_interrupted(parcel)
                        or n in self._seen_by_check
                    )
                )
                if not poll.done() and alarm.rang:
                    alarm.clear()
                    if progress.exception_deadline is not None and workflow.now() >= progress.exception_deadline:
                        raise ApplicationError(
                            "delivery exception not resolved by ops in time", type="DeliveryExceptionTimeout"
                        )
                    await self._notify_delivery_delay(parcel)
                    continue
                if not poll.done() and n in self._seen_by_check:
                    # A cancel or hold asked the carrier, which had moved the parcel: that is the news.
                    poll.cancel()
                    await _settle(poll)
                    poll = None
                    await self._on_tracking_update(parcel, progress, self._seen_by_check.pop(n))
                    continue
                if not poll.done():  # ops: a cancel before shipping (a hold, for older orders), a decision
                    poll.cancel()
                    await _settle(poll)
                    poll = None
                    decision = self._resolutions.get(n)
                    if decision is not None:
                        await self._resolve_delivery_exception(parcel, decision)
                        return
                    await self._checkpoint(parcel)
                    continue
                try:
                    update = await poll
                except ActivityError as err:
                    poll = None
                    if not _timed_out(err) or not workflow.patched(PARK_FAILURES):
                        raise
                    await self._tracking_went_silent(parcel, progress)
                    continue
                poll = None
                self._seen_by_check.pop(n, None)
                await self._on_tracking_update(parcel, progress, update)
        finally:
            alarm.clear()

    async def _on_tracking_update(
        self, parcel: ShipmentView, progress: _ParcelProgress, update: TrackingUpdate
    ) -> None:
        progress.last = update.status
        if update.estimated_delivery is not None and update.estimated_delivery != progress.estimate:
            progress.estimate = parcel.estimated_delivery = update.estimated_delivery
            self._view.estimated_delivery = progress.estimate
        first_scan = not progress.committed and update.status in MOVED_TRACKING_STATUSES
        if first_scan:
            progress.committed = True  # the goods left the building
            await self._commit_parcel(parcel)
            if self._asks_the_carrier and self._cancelled(parcel):  # confirmed as the carrier picked it up
                await self._escaped_cancel(parcel)
        if update.status in _EXCEPTION_STATUSES:
            if parcel.status != OrderStatus.DELIVERY_EXCEPTION:
                timeout = timedelta(seconds=self._policy.delivery_exception_timeout_s)
                progress.exception_deadline = workflow.now() + timeout
                await self._enter_delivery_exception(parcel, update)
            return
        target = TRACKING_TO_ORDER.get(update.status)
        if target is None:
            return
        if parcel.status == OrderStatus.DELIVERY_EXCEPTION:
            progress.exception_deadline = None  # the carrier recovered on its own ("failure" is not final)
        elif FORWARD.index(target) <= FORWARD.index(parcel.status):
            return  # carrier noise or an out-of-order update: the parcel only moves forward
        self._advance(parcel, target, update.message or f"carrier reports {update.status.value}")
        context = self._tracking_context(parcel)
        if first_scan and target != OrderStatus.DELIVERED and self._asks_the_carrier:
            await self._notify(NotificationEvent.SHIPPED, context, occurrence=_occurrence(parcel))
        if target == OrderStatus.OUT_FOR_DELIVERY:
            await self._notify(
                NotificationEvent.OUT_FOR_DELIVERY, context, sms_only=True, occurrence=_occurrence(parcel)
            )
        elif target == OrderStatus.DELIVERED:
            await self._notify(NotificationEvent.DELIVERED, context, occurrence=_occurrence(parcel))

    async def _tracking_went_silent(self, parcel: ShipmentView, progress: _ParcelProgress) -> None:
        """The carrier reported nothing new for the whole tracking timeout: lost in transit, for ops to decide
        (or the carrier recovers it: polling goes on)."""
        days = self._policy.tracking_timeout_s / 86400
        update = TrackingUpdate(
            status=TrackingStatus.FAILURE, message=f"no tracking update from the carrier for {days:g} days"
        )
        if parcel.status != OrderStatus.DELIVERY_EXCEPTION:
            progress.exception_deadline = workflow.now() + timedelta(seconds=self._policy.delivery_exception_timeout_s)
            await self._enter_delivery_exception(parcel, update)

    async def _commit_parcel(self, parcel: ShipmentView) -> None:
        await self._step(
            InventoryActivities.commit_shipment,
            ShipmentRef(order_id=self._key, shipment_no=parcel.shipment_no),
            DATABASE,
            "commit stock",
        )

    def _start_tracking_poll(
        self, label: Label, last: TrackingStatus, estimate: datetime | None
    ) -> workflow.ActivityHandle[TrackingUpdate]:
        poll = timedelta(seconds=self._policy.tracking_poll_interval_s)
        return workflow.start_activity_method(
            ShippingActivities.await_tracking_change,
            TrackingPollRequest(
                tracking_number=label.tracking_number, carrier=label.carrier, last_status=last, last_estimate=estimate
            ),
            summary=f"wait for tracking to leave {last.value}",
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(seconds=self._policy.tracking_timeout_s),
            retry_policy=RetryPolicy(initial_interval=poll, backoff_coefficient=1.0, maximum_interval=poll),
        )

    def _tracking_interrupted(self, parcel: ShipmentView) -> bool:
        if parcel.status in SHIPPED_STATUSES:
            return parcel.shipment_no in self._resolutions
        if self._asks_the_carrier:  # a hold does not stop following a labelled parcel
            return self._cancelled(parcel)
        return self._interrupted(parcel)  # before the carrier has it, ops may still hold or cancel

    def _next_wake(self, parcel: ShipmentView, exception_deadline: datetime | None) -> datetime | None:
        """When the estimate passes (if the customer was not told about this one yet) or the exception times out."""
        wakes = []
        estimate = parcel.estimated_delivery
        shipped = parcel.status in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY)
        if shipped and estimate is not None and estimate != self._delay_notified_for.get(parcel.shipment_no):
            wakes.append(estimate + timedelta(seconds=self._policy.delivery_delay_grace_s))
        if exception_deadline is not None:
            wakes.append(exception_deadline)
        return min(wakes) if wakes else None

    async def _notify_delivery_delay(self, parcel: ShipmentView) -> None:
        estimate = parcel.estimated_delivery
        if estimate is None or estimate == self._delay_notified_for.get(parcel.shipment_no):
            return
        if workflow.now() < estimate + timedelta(seconds=self._policy.delivery_delay_grace_s):
            return
        self._delay_notified_for[parcel.shipment_no] = estimate
        prefix = self._timeline.parcel_prefix(parcel)
        self._timeline.note(f"{prefix}expected delivery {estimate:%Y-%m-%d %H:%M} UTC passed; customer told")
        occurrence = estimate.isoformat() if parcel.shipment_no == 1 else f"{parcel.shipment_no}:{estimate.isoformat()}"
        await self._notify(
            NotificationEvent.DELIVERY_DELAYED,
            {**self._tracking_context(parcel), "estimate": f"{estimate:%Y-%m-%d}"},
            occurrence=occurrence,
        )

    async def _enter_delivery_exception(self, parcel: ShipmentView, update: TrackingUpdate) -> None:
        problem = update.message or update.status.value.replace("_", " ")
        self._advance(
            parcel,
            OrderStatus.DELIVERY_EXCEPTION,
            f"carrier reports {update.status.value}: {problem}",
            waiting_for="ops: resolve_delivery_exception (reship or refund)",
        )
        count = sum(e.status == OrderStatus.DELIVERY_EXCEPTION for e in self._view.timeline)
        occurrence = str(count) if parcel.shipment_no == 1 else f"{parcel.shipment_no}:{count}"
        await self._notify(
            NotificationEvent.DELIVERY_PROBLEM,
            {**self._tracking_context(parcel), "problem": problem},
            occurrence=occurrence,
        )
        await self._alert_ops(
            "delivery_exception",
            f"Delivery exception on order {self._order.order_id}",
            f"{parcel.carrier} {parcel.tracking_number}: {problem}. Resolve it with `fulfill order "
            f"resolve {self._order.order_id} --action reship|refund`.",
            occurrence=occurrence,
        )

    async def _resolve_delivery_exception(self, parcel: ShipmentView, decision: ResolveDeliveryRequest) -> None:
        """Ops decided: refund the parcel, or send its goods again as a new parcel (reserved afresh)."""
        note = f" ({decision.note})" if decision.note else ""
        if decision.action == DeliveryResolution.RESHIP:
            parcel.outcome = "reshipped"
            self._unallocated = _merge(self._unallocated, parcel.lines)
            self._advance(parcel, parcel.status, f"ops: reship{note}; reserving the goods again")
            await self._notify(NotificationEvent.RESHIPPED, occurrence=_occurrence(parcel))
            return
        context: dict[str, str] = {"what": describe(parcel.lines), "amount": "the amount you paid for it"}
        if workflow.patched(REFUND_THROUGH_GATEWAY):
            order = self._order
            refund = await self._step(
                ReturnActivities.refund_shipment,
                ParcelRefundRequest(
                    order_id=order.order_id,
                    key=self._key,
                    shipment_no=parcel.shipment_no,
                    lines=parcel.lines,
                    unit_prices=order.unit_prices_cents(),
                    payment_reference=order.payment.reference if order.payment else None,
                    currency=order.currency,
                ),
                PAYMENTS,
                f"refund shipment {parcel.shipment_no}",
            )
            context["amount"] = refund.amount
            note += f"; refunded {refund.amount} ({refund.refund_id})"
        parcel.outcome = "refunded"
        await self._notify(NotificationEvent.REFUND_ISSUED, context, occurrence=_occurrence(parcel))
        self._advance(parcel, OrderStatus.REFUNDED, f"ops: refund{note}")

    # ------------------------------------------------------------------------------------------ failures

    async def _park(self, parcel: ShipmentView | None, problem: str) -> bool:
        """An error retrying cannot fix: the part waits in FAILED for ops to retry it (True) or cancel the order,
        until failed_wait_s (False: give it up). Ops are told."""
        key = parcel.shipment_no if parcel is not None else _ALLOCATOR
        before = parcel.status if parcel is not None else None
        self._parked[key] = self._retry_round
        waiting = f"ops: retry (fulfill order retry {self._order.order_id}) or cancel"
        if parcel is not None:
            self._advance(parcel, OrderStatus.FAILED, f"failed: {problem}", waiting_for=waiting)
        else:
            self._timeline.record(OrderStatus.FAILED, f"failed: {problem}", waiting_for=waiting)
        await self._alert_ops(
            "order_failed",
            f"Order {self._order.order_id} needs ops: {problem}"[:200],
            f"{problem}\n\nRetry it once the cause is fixed: `fulfill order retry {self._order.order_id}` (or the "
            "Update `retry` in the Web UI), or cancel the order.",
            occurrence=f"{key}:{self._retry_round}",
        )
        limit = self._policy.failed_wait_s
        deadline = workflow.now() + timedelta(seconds=limit) if limit is not None else None
        waited_for = self._retry_round
        try:
            retried = await self._wait_until(lambda: self._retry_round > waited_for, deadline, parcel)
        finally:
            self._parked.pop(key, None)
        if retried:
            note = f"retried by ops{f': {self._retry_note}' if self._retry_note else ''}"
            if parcel is not None and before is not None:
                self._advance(parcel, before, note, waiting_for=self._waiting_for_now())
            else:
                self._timeline.record(self._status_now(), note, waiting_for=self._waiting_for_now())
        return retried

    async def _give_up_parcel(self, parcel: ShipmentView, progress: _ParcelProgress, problem: str) -> bool:
        """Ops did not retry in time: undo the parcel (unless the carrier has it, then it goes on: False)."""
        if not progress.committed and not await self._undo_parcel(parcel, progress):
            return False  # the carrier had it after all: its tracking finds the scan
        parcel.outcome = f"failed: {problem}"
        self._failed_parts.append(f"shipment {parcel.shipment_no}: {problem}")
        self._advance(parcel, OrderStatus.FAILED, f"gave up after waiting for ops: {problem}")
        others = [p for p in self._view.shipments if p is not parcel and (p.outcome is None or p.outcome == "refunded")]
        if others and not progress.committed:
            await self._notify(
                NotificationEvent.PARTLY_CANCELLED,
                {"what": describe(parcel.lines), "reason": "it could not be sent"},
                occurrence=f"failed-{parcel.shipment_no}",
            )
        return True

    async def _undo_parcel(self, parcel: ShipmentView, progress: _ParcelProgress) -> bool:
        """Undo what the parcel did, newest first, each step retried until done: its label (only if the carrier
        does not have the parcel: False then, and nothing else is undone), its pick task, its reservation."""
        ref = ShipmentRef(order_id=self._key, shipment_no=parcel.shipment_no)
        prefix = self._timeline.parcel_prefix(parcel)
        if progress.label_attempted:
            undo = await self._step(ShippingActivities.void_label_if_unshipped, ref, CARRIER, "void label")
            if undo.outcome == LabelUndo.IN_USE:
                self._timeline.note(f"{prefix}label kept: {undo.note}")
                return False
            if undo.outcome == LabelUndo.VOIDED:
                self._timeline.note(f"{prefix}label voided")
        if parcel.pick_task_id is not None:
            await self._step(WarehouseActivities.cancel_pick_task, parcel.pick_task_id, DATABASE, "cancel pick task")
        await self._step(InventoryActivities.release_shipment, ref, DATABASE, "release reservation")
        return True

    async def _undo_cancelled_parcel(self, parcel: ShipmentView, progress: _ParcelProgress) -> bool:
        """A confirmed cancel reached this parcel: undo it. False if the carrier picked it up between the check
        and the void: then it is not cancelled but shipped, the rest of the order is, and the customer hears."""
        if await self._undo_parcel(parcel, progress):
            parcel.outcome = "cancelled"
            self._advance(parcel, OrderStatus.CANCELLED, f"cancelled: {self._cancel_reason}")
            return True
        await self._escaped_cancel(parcel)  # its tracking poll finds the scan and commits the stock
        return False

    def _cancelled(self, parcel: ShipmentView) -> bool:
        return self._cancel_confirmed and parcel.shipment_no not in self._uncancellable

    async def _escaped_cancel(self, parcel: ShipmentView) -> None:
        """The carrier picked the parcel up after the cancel was accepted: it is shipped, not cancelled; the rest
        of the order is, and the customer hears which part still comes."""
        self._uncancellable.add(parcel.shipment_no)
        self._timeline.note(f"{self._timeline.parcel_prefix(parcel)}the carrier has it: not cancelled, it goes on")
        await self._notify(
            NotificationEvent.PARTLY_CANCELLED,
            {
                "what": ", ".join(describe(p.lines) for p in self._view.shipments if p is not parcel) or "nothing",
                "reason": f"{describe(parcel.lines)} was already on its way; return it once it arrives",
            },
            occurrence=f"cancel-{parcel.shipment_no}",
        )

    def _cancel_went_as_far_as_it_can(self) -> bool:
        """A cancel the carrier beat for some parcels: every other part is undone (the order goes on)."""
        return (
            bool(self._uncancellable)
            and all(p.outcome is not None or p.shipment_no in self._uncancellable for p in self._view.shipments)
            and (self._allocator is None or self._allocator.done())
        )

    # ------------------------------------------------------------------------------------------ ops requests

    async def _request_cancel(self, reason: str) -> str | None:
        """A cancel from ops, the Web UI or a replacement's abandoned return. Returns why it is refused, or None
        once it is under way: a labelled parcel the carrier has (asked now, not the last poll) cannot be undone."""
        self._cancel_reason = reason
        refusal = await self._refusal_by_the_carrier("cancel")
        if refusal is not None:
            self._cancel_reason = None
            return refusal
        self._cancel_confirmed = True
        if self._undoes_per_parcel is None:
            self._undoes_per_parcel = workflow.patched(UNDO_PER_PARCEL)
        return None

    async def _request_hold(self, reason: str) -> str | None:
        self._hold_reason = reason
        refusal = await self._refusal_by_the_carrier("hold")
        if refusal is not None:
            self._hold_reason = None
            return refusal
        if self._labelled() and self._view.status != OrderStatus.ON_HOLD:
            # Labelled parcels go on being followed, and may be all there is: the hold shows now.
            self._timeline.record(OrderStatus.ON_HOLD, f"on hold: {reason}", waiting_for="release by ops")
            self._hold_recorded_by_request = True
        return None

    def _labelled(self) -> list[ShipmentView]:
        return [
            p
            for p in self._view.shipments
            if p.outcome is None and p.status == OrderStatus.LABELED and p.shipment_no not in self._uncancellable
        ]

    async def _refusal_by_the_carrier(self, action: str) -> str | None:
        """Ask the carrier where each labelled parcel is (orders recorded before the patch trusted the last
        poll); a parcel it has moved is the answer to the request, and news for the parcel's tracking."""
        labelled = self._labelled()
        if not labelled or not self._labelled_parcels_ask_the_carrier():
            return None
        self._deciding = True  # the other parts wait at their next step meanwhile
        try:
            updates = await asyncio.gather(
                *(
                    self._step(
                        ShippingActivities.check_tracking,
                        TrackingPollRequest(
                            tracking_number=p.tracking_number or "",
                            carrier=p.carrier or "",
                            last_status=TrackingStatus.PRE_TRANSIT,
                        ),
                        CARRIER,
                        f"ask the carrier where shipment {p.shipment_no} is",
                    )
                    for p in labelled
                )
            )
        finally:
            self._deciding = False
        moved = [(p, u) for p, u in zip(labelled, updates, strict=True) if u.status in MOVED_TRACKING_STATUSES]
        for parcel, update in moved:
            self._seen_by_check[parcel.shipment_no] = update
        if not moved:
            return None
        where = ", ".join(f"{p.carrier} {p.tracking_number} is {u.status.value}" for p, u in moved)
        self._timeline.note(f"{action} refused: the carrier has the parcel ({where})")
        return f"cannot {action} order {self._order.order_id}: already shipped ({where}): request a return"

    async def _cancel_requested_in_temporal(self) -> None:
        if self._cancel_reason is not None or self._closed:
            return
        if self._handed_to_carrier():
            self._timeline.note("cancel requested in Temporal refused: already shipped: request a return")
            return
        refusal = await self._request_cancel("cancel requested in Temporal (Web UI or CLI)")
        if refusal is not None:
            self._timeline.note(f"cancel requested in Temporal refused: {refusal}")

    def _interrupted(self, parcel: ShipmentView | None = None) -> bool:
        released = (
            parcel is not None
            and parcel.shipment_no in self._released
            and parcel.pick_task_id not in self._confirmed_picks
        )
        cancelled = self._cancel_confirmed and (parcel is None or self._cancelled(parcel))
        return self._deciding or cancelled or self._hold_reason is not None or released

    async def _checkpoint(self, parcel: ShipmentView | None = None) -> None:
        """Step boundary: act on a pending cancel (raise) or hold (wait here until released), or on a stock
        count that took this parcel's reservation."""
        if self._deciding:
            await workflow.wait_condition(lambda: not self._deciding)
        if self._cancel_confirmed and (parcel is None or self._cancelled(parcel)):
            raise OrderCancelled(f"cancelled: {self._cancel_reason}")
        if parcel is not None and parcel.shipment_no in self._released:
            self._released.discard(parcel.shipment_no)
            if parcel.pick_task_id not in self._confirmed_picks:  # picked first: the count did not take it
                raise ParcelReleased()
        if self._hold_reason is None:
            return
        if self._view.status != OrderStatus.ON_HOLD:  # the first of the order's parts to stop records the hold
            self._timeline.record(OrderStatus.ON_HOLD, f"on hold: {self._hold_reason}", waiting_for="release by ops")
        await workflow.wait_condition(lambda: self._hold_reason is None or self._cancel_confirmed)
        if self._cancel_confirmed:
            raise OrderCancelled(f"cancelled: {self._cancel_reason}")
        if self._view.status == OrderStatus.ON_HOLD:
            self._record_released()

    async def _wait_until(
        self, condition: Callable[[], bool], deadline: datetime | None = None, parcel: ShipmentView | None = None
    ) -> bool:
        """Wait for `condition` (True) or the deadline (False), honouring holds and cancels meanwhile."""
        while not condition():
            timeout = None
            if deadline is not None:
                timeout = deadline - workflow.now()
                if timeout <= timedelta(0):
                    return False
            try:
                await workflow.wait_condition(lambda: condition() or self._interrupted(parcel), timeout=timeout)
            except TimeoutError:
                return False
            if not condition():
                await self._checkpoint(parcel)
        return True

    # ------------------------------------------------------------------------------------------ status

    def _record_released(self) -> None:
        self._timeline.record(self._status_now(), "released from hold; resuming", waiting_for=self._waiting_for_now())

    def _status_now(self) -> OrderStatus:
        return self._timeline.status_of_parts(failed=bool(self._parked), backordered=self._waiting_since is not None)

    def _waiting_for_now(self) -> str | None:
        return self._timeline.waiting_for_parts(backordered=self._waiting_since is not None)

    def _advance(
        self,
        parcel: ShipmentView,
        status: OrderStatus,
        note: str,
        *,
        waiting_for: str | None = None,
        also: Sequence[SearchAttributeUpdate[Any]] = (),
    ) -> None:
        """A parcel moved: its status, the order's fields that show the latest parcel, and one order transition."""
        timeline = self._timeline
        timeline.move(parcel, status)
        if self._view.status == OrderStatus.ON_HOLD and self._hold_reason is not None:
            timeline.note(timeline.parcel_prefix(parcel) + note)  # stays ON_HOLD until released
            if also:
                timeline.stage(also)
            return
        timeline.record(self._status_now(), timeline.parcel_prefix(parcel) + note, waiting_for=waiting_for, also=also)

    # ------------------------------------------------------------------------------------------ helpers

    def _tracking_context(self, parcel: ShipmentView) -> dict[str, str]:
        # The customer counts the parcels that go (or went) to them, not the ones a count or a pick undid.
        sent = [p for p in self._view.shipments if p.outcome is None or p.tracking_number]
        position = next((i for i, p in enumerate(sent, start=1) if p is parcel), parcel.shipment_no)
        return {
            "carrier": parcel.carrier or "",
            "service": parcel.service or "",
            "tracking_number": parcel.tracking_number or "",
            "tracking_url": parcel.tracking_url or "",
            # "(parcel 2: TEE-M x1)" once the order has more than one parcel; nothing for a single one
            "parcel": f" (parcel {position}: {describe(parcel.lines)})" if len(sent) > 1 else "",
        }

    async def _step(
        self, fn: Callable[[Any, _Arg], Awaitable[_Result]], arg: _Arg, step: Step, summary: str
    ) -> _Result:
        return await self._steps.run(fn, arg, step=step, summary=summary)

    async def _notify(
        self,
        event: NotificationEvent,
        context: dict[str, str] | None = None,
        *,
        sms_only: bool = False,
        occurrence: str | None = None,
    ) -> None:
        channels = [c for c in self._order.customer.channels if not sms_only or c == Channel.SMS]
        if not channels:
            return
        request = NotifyRequest(
            order_id=self._order.order_id,
            key=self._placed_again_key,
            event=event,
            customer=self._order.customer,
            channels=channels,
            context=context or {},
            occurrence=occurrence,
        )
        await self._messenger.send(
            NotificationActivities.notify_customer,
            request,
            summary=f"notify {event.value}",
            lanes=[c.value for c in channels],
            narrow=on_channels,
        )

    async def _alert_ops(self, kind: str, subject: str, body: str, *, occurrence: str | None = None) -> None:
        alert = OpsAlert(
            order_id=self._order.order_id,
            kind=kind,
            subject=subject,
            body=body,
            occurrence=occurrence,
            key=self._placed_again_key,
        )
        await self._messenger.send(
            NotificationActivities.alert_ops, alert, summary=f"alert ops: {kind}", lanes=[Channel.EMAIL.value]
        )

    async def _alert_low_stock(self, skus: list[str]) -> None:
        """This reservation took stock to its reorder point: ops get one email per crossing (idempotent)."""
        await self._messenger.send(
            InventoryActivities.alert_low_stock, skus, summary="low-stock alert", lanes=[Channel.EMAIL.value]
        )

    async def _release_stock(self) -> object:
        return await self._step(InventoryActivities.release_stock, self._key, DATABASE, "release reservation")

    async def _cancel_picks(self) -> object:
        return await self._step(WarehouseActivities.cancel_pick_tasks, self._key, DATABASE, "cancel pick tasks")

    async def _void_label(self, request: LabelRequest) -> object:
        return await workflow.execute_activity_method(
            ShippingActivities.void_label, request, summary="void label", **CARRIER.patient_options()
        )

    async def _compensate(self) -> None:
        """Orders recorded before UNDO_PER_PARCEL: undo what was done, newest first, shielded from cancellation;
        each undo step is idempotent."""
        for name, undo in reversed(self._compensations):
            try:
                await asyncio.shield(asyncio.ensure_future(undo()))
                self._timeline.note(f"compensated: {name}")
            except (ActivityError, ApplicationError) as undo_err:
                workflow.logger.error("compensation %s failed: %s", name, undo_err)
                self._timeline.note(f"FAILED to {name}")
        self._compensations.clear()


class _Alarm:
    """A durable timer for an absolute time, re-armed only when that time changes (each timer costs history
    events, and the tracking loop wakes many times for the same deadline)."""

    def __init__(self) -> None:
        self._at: datetime | None = None
        self._timer: asyncio.Task[None] | None = None

    @property
    def rang(self) -> bool:
        return self._timer is not None and self._timer.done()

    def set(self, at: datetime | None) -> None:
        if at == self._at and (self._timer is not None or at is None):
            return
        self.clear()
        if at is not None:
            delay = max(at - workflow.now(), timedelta(seconds=1))
            self._timer = asyncio.create_task(workflow.sleep(delay, summary=f"deadline {at:%Y-%m-%d %H:%M} UTC"))
            self._at = at

    def clear(self) -> None:
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._timer, self._at = None, None


class OrderCancelled(Exception):
    """Control flow inside the workflow only: unwinds a part (or, for older orders, the main path) to undo it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParcelReleased(Exception):
    """Control flow inside the workflow only: a stock count took an unpicked parcel's reservation."""


def _occurrence(parcel: ShipmentView) -> str | None:
    """Idempotency-key suffix for a parcel's messages: none for the first (as for a one-parcel order)."""
    return None if parcel.shipment_no == 1 else str(parcel.shipment_no)


def _merge(lines: Sequence[OrderLine], more: Sequence[OrderLine]) -> list[OrderLine]:
    units: dict[str, int] = {}
    for line in (*lines, *more):
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(units.items())]


async def _settle(task: Awaitable[object]) -> None:
    """Wait for a cancelled activity to finish cancelling (its outcome no longer matters)."""
    try:
        await task
    except (ActivityError, asyncio.CancelledError):
        pass


def _timed_out(err: ActivityError) -> bool:
    """A tracking poll that ran out of time (schedule-to-close), whether by a timeout or a last "unchanged"."""
    return isinstance(err.cause, TemporalTimeoutError) or err.retry_state == RetryState.TIMEOUT


def _error_type(err: BaseException) -> str | None:
    """The type of an activity's ApplicationError: wrapped in an ActivityError for a regular activity, raised
    as it is when a local activity fails for good."""
    cause = err if isinstance(err, ApplicationError) else err.__cause__
    return cause.type if isinstance(cause, ApplicationError) else None


def _cause(err: BaseException) -> str:
    """The innermost message: an ActivityError wraps the ApplicationError that says what went wrong."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)
