"""What the parts of one order (the allocator, each parcel, the returns desk) share while it is fulfilled: the
order as it stands, the steps and messages, the timeline, the lines waiting for a parcel, and the ops requests
(cancel, hold, retry) that every part acts on at its next step boundary (`checkpoint`).

Failure handling: an error retrying cannot fix parks the part it hit in FAILED for ops (`park`: `retry` or
cancel, until `failed_wait_s`); orders recorded before PARK_FAILURES fail as a whole instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows.order.patches import LABELLED_PARCELS_ASK_THE_CARRIER, PARK_FAILURES
from workflows.order.timeline import Timeline
from workflows.steps import DATABASE, Messenger, Step, StepRunner, application_error, innermost, on_channels

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.notifications import NotificationActivities
    from activities.warehouse import WarehouseActivities
    from common.models import (
        SHIPPED_STATUSES,
        Channel,
        NotificationEvent,
        NotifyRequest,
        OpsAlert,
        Order,
        OrderLine,
        OrderStatus,
        OrderView,
        OrderWorkflowInput,
        ParcelView,
        order_key,
    )

if TYPE_CHECKING:  # for annotations only: parcel.py imports this module
    from workflows.order.parcel import Parcel

_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")

ALLOCATOR = 0  # the key of the allocator among the parts that can be parked in FAILED (parcels: their number)


class OrderCancelled(Exception):
    """Control flow inside the workflow only: unwinds a part (or, for older orders, the main path) to undo it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParcelReleased(Exception):
    """Control flow inside the workflow only: a stock count took an unpicked parcel's reservation."""


class Fulfilment:
    """One order's shared state. The workflow's handlers set the requests; the parts read them."""

    def __init__(self, input: OrderWorkflowInput) -> None:
        self.order = input.order  # replaced by update_address
        self.policy = input.policy
        # The key of the order's rows and idempotency keys: its id, unless it was placed again (see order_key).
        self.key = order_key(input.order.order_id, input.placement)
        self.view = OrderView(
            order_id=input.order.order_id,
            status=OrderStatus.RECEIVED,
            customer_id=input.order.customer.id,
            lines=list(input.order.lines),
            shipping_speed=input.order.shipping_speed,
            promised_delivery=input.order.promised_delivery,
        )
        self.timeline = timeline = Timeline(self.view)
        self.steps = StepRunner(on_change=timeline.show_waits, around_local=timeline.visibility.local_step)
        self.messenger = Messenger(self.steps, on_note=timeline.note, on_change=timeline.show_waits)
        timeline.watch(self.steps, self.messenger)
        self.lean = False  # set in run(): see LEAN_HISTORY
        self.parcels: list[Parcel] = []  # in the order of view.shipments
        self.allocator: asyncio.Task[None] | None = None
        # The first error of any parcel (or a cancellation it hit): the main path rethrows it.
        self.failure: BaseException | None = None
        # Lines not in any parcel yet, and since when they wait for stock (None: not waiting)
        self.unallocated: list[OrderLine] = list(input.order.lines)
        self.waiting_since: datetime | None = None
        self.failed_parts: list[str] = []  # what was given up after waiting for ops in vain
        self.closed = False
        # Signals and Updates the parcels wait for
        self.confirmed_picks: set[str] = set()
        self.pick_shortages: dict[str, dict[str, int]] = {}
        self.address_updates = 0
        self.awaiting_return = input.awaiting_return  # a replacement ships once this RMA's goods are on their way
        self.label_bought = False
        self.buying_labels = 0  # purchases in flight: an address change now would be silently ignored
        self.overdue_picks = 0
        self.late_at_3pl = 0  # parcels past a 3PL's SLA (ThreePLLate while any is)
        self.excluded_warehouses: set[str] = set()  # 3PLs that rejected a parcel: not reserved from again
        # Ops requests, acted on at the next step boundary (or at once while the order waits).
        self.cancel_reason: str | None = None
        self.cancel_confirmed = False  # decided: the parts undo themselves at their next step
        self.deciding = False  # the carrier is being asked whether a cancel or hold can still be honoured
        self.hold_reason: str | None = None
        # Parts parked in FAILED (parcel number, or ALLOCATOR) -> the retry round they wait for.
        self.parked: dict[int, int] = {}
        self.retry_round = 0
        self.retry_note: str | None = None
        # Patches, evaluated where the behaviour first differs (None: not reached yet).
        self.asks_the_carrier: bool | None = None
        self.undoes_per_parcel: bool | None = None
        # Saga (orders recorded before UNDO_PER_PARCEL): undo steps, run newest first on cancel or failure.
        self.compensations: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    # ------------------------------------------------------------------------------------------ the parts

    def going(self) -> bool:
        """A parcel is still on its way (not undone, refunded or reshipped)."""
        return any(p.outcome is None for p in self.view.shipments)

    def delivered_parcels(self) -> list[ParcelView]:
        return [p for p in self.view.shipments if p.status == OrderStatus.DELIVERED and p.outcome is None]

    def handed_to_carrier(self) -> bool:
        return any(
            p.view.status in SHIPPED_STATUSES
            or p.view.status == OrderStatus.REFUNDED
            or p.kept_by_the_carrier
            or p.committed
            for p in self.parcels
        )

    def labelled_parcels_ask_the_carrier(self) -> bool:
        """Decided when the order's first label is bought: before undoing or holding a labelled parcel the
        carrier is asked where it is, a hold does not stop following it, and the customer hears "shipped"
        when the carrier has it (so never "shipped", then "cancelled")."""
        if self.asks_the_carrier is None:
            self.asks_the_carrier = workflow.patched(LABELLED_PARCELS_ASK_THE_CARRIER)
        return self.asks_the_carrier

    async def guard(self, work: Awaitable[None]) -> None:
        """Run one parcel or the allocator; record its failure for the main path instead of losing it."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            if self.failure is None:
                self.failure = err

    # ------------------------------------------------------------------------------------------ status

    def status_now(self) -> OrderStatus:
        return self.timeline.status_of_parts(failed=bool(self.parked), backordered=self.waiting_since is not None)

    def waiting_for_now(self) -> str | None:
        return self.timeline.waiting_for_parts(backordered=self.waiting_since is not None)

    def advance(
        self,
        parcel: ParcelView,
        status: OrderStatus,
        note: str,
        *,
        waiting_for: str | None = None,
        also: Sequence[SearchAttributeUpdate[Any]] = (),
    ) -> None:
        """A parcel moved: its status, the order's fields that show the latest parcel, and one order transition."""
        timeline = self.timeline
        timeline.move(parcel, status)
        if self.view.status == OrderStatus.ON_HOLD and self.hold_reason is not None:
            timeline.note(timeline.parcel_prefix(parcel) + note)  # stays ON_HOLD until released
            if also:
                timeline.stage(also)
            return
        timeline.record(self.status_now(), timeline.parcel_prefix(parcel) + note, waiting_for=waiting_for, also=also)

    def record_released(self) -> None:
        self.timeline.record(self.status_now(), "released from hold; resuming", waiting_for=self.waiting_for_now())

    # ------------------------------------------------------------------------------------------ ops requests

    def cancelled(self, parcel: Parcel) -> bool:
        return self.cancel_confirmed and not parcel.kept_by_the_carrier

    def interrupted(self, parcel: Parcel | None = None) -> bool:
        released = parcel is not None and parcel.released and parcel.view.pick_task_id not in self.confirmed_picks
        cancelled = self.cancel_confirmed and (parcel is None or self.cancelled(parcel))
        return self.deciding or cancelled or self.hold_reason is not None or released

    async def checkpoint(self, parcel: Parcel | None = None) -> None:
        """Step boundary: act on a pending cancel (raise) or hold (wait here until released), or on a stock
        count that took this parcel's reservation."""
        if self.deciding:
            await workflow.wait_condition(lambda: not self.deciding)
        if self.cancel_confirmed and (parcel is None or self.cancelled(parcel)):
            raise OrderCancelled(f"cancelled: {self.cancel_reason}")
        if parcel is not None and parcel.released:
            parcel.released = False
            if parcel.view.pick_task_id not in self.confirmed_picks:  # picked first: the count did not take it
                raise ParcelReleased()
        if self.hold_reason is None:
            return
        if self.view.status != OrderStatus.ON_HOLD:  # the first of the order's parts to stop records the hold
            self.timeline.record(OrderStatus.ON_HOLD, f"on hold: {self.hold_reason}", waiting_for="release by ops")
        await workflow.wait_condition(lambda: self.hold_reason is None or self.cancel_confirmed)
        if self.cancel_confirmed:
            raise OrderCancelled(f"cancelled: {self.cancel_reason}")
        if self.view.status == OrderStatus.ON_HOLD:
            self.record_released()

    async def wait_until(
        self, condition: Callable[[], bool], deadline: datetime | None = None, parcel: Parcel | None = None
    ) -> bool:
        """Wait for `condition` (True) or the deadline (False), honouring holds and cancels meanwhile."""
        while not condition():
            timeout = None
            if deadline is not None:
                timeout = deadline - workflow.now()
                if timeout <= timedelta(0):
                    return False
            try:
                await workflow.wait_condition(lambda: condition() or self.interrupted(parcel), timeout=timeout)
            except TimeoutError:
                return False
            if not condition():
                await self.checkpoint(parcel)
        return True

    # ------------------------------------------------------------------------------------------ failures

    async def park(self, parcel: Parcel | None, problem: str) -> bool:
        """An error retrying cannot fix: the part waits in FAILED for ops to retry it (True) or cancel the order,
        until failed_wait_s (False: give it up). Ops are told."""
        key = parcel.view.shipment_no if parcel is not None else ALLOCATOR
        before = parcel.view.status if parcel is not None else None
        self.parked[key] = self.retry_round
        order_id = self.order.order_id
        waiting = f"ops: retry (fulfill order retry {order_id}) or cancel"
        if parcel is not None:
            self.advance(parcel.view, OrderStatus.FAILED, f"failed: {problem}", waiting_for=waiting)
        else:
            self.timeline.record(OrderStatus.FAILED, f"failed: {problem}", waiting_for=waiting)
        await self.alert_ops(
            "order_failed",
            f"Order {order_id} needs ops: {problem}"[:200],
            f"{problem}\n\nRetry it once the cause is fixed: `fulfill order retry {order_id}` (or the "
            "Update `retry` in the Web UI), or cancel the order.",
            occurrence=f"{key}:{self.retry_round}",
        )
        limit = self.policy.failed_wait_s
        deadline = workflow.now() + timedelta(seconds=limit) if limit is not None else None
        waited_for = self.retry_round
        try:
            retried = await self.wait_until(lambda: self.retry_round > waited_for, deadline, parcel)
        finally:
            self.parked.pop(key, None)
        if retried:
            note = f"retried by ops{f': {self.retry_note}' if self.retry_note else ''}"
            if parcel is not None and before is not None:
                self.advance(parcel.view, before, note, waiting_for=self.waiting_for_now())
            else:
                self.timeline.record(self.status_now(), note, waiting_for=self.waiting_for_now())
        return retried

    # ------------------------------------------------------------------------------------------ steps and messages

    async def step(self, fn: Callable[[Any, _Arg], Awaitable[_Result]], arg: _Arg, step: Step, summary: str) -> _Result:
        return await self.steps.run(fn, arg, step=step, summary=summary)

    async def release_stock(self) -> object:
        return await self.step(InventoryActivities.release_stock, self.key, DATABASE, "release reservation")

    async def cancel_picks(self) -> object:
        return await self.step(WarehouseActivities.cancel_pick_tasks, self.key, DATABASE, "cancel pick tasks")

    @property
    def placed_again_key(self) -> str | None:
        """The order's key for messages' idempotency keys when it differs from its id (placed again)."""
        return self.key if self.key != self.order.order_id else None

    async def notify(
        self,
        event: NotificationEvent,
        context: dict[str, str] | None = None,
        *,
        sms_only: bool = False,
        occurrence: str | None = None,
        task_queue: str | None = None,
    ) -> None:
        order: Order = self.order
        channels = [c for c in order.customer.channels if not sms_only or c == Channel.SMS]
        if not channels:
            return
        request = NotifyRequest(
            order_id=order.order_id,
            key=self.placed_again_key,
            event=event,
            customer=order.customer,
            channels=channels,
            context=context or {},
            occurrence=occurrence,
        )
        await self.messenger.send(
            NotificationActivities.notify_customer,
            request,
            summary=f"notify {event.value}",
            lanes=[c.value for c in channels],
            narrow=on_channels,
            task_queue=task_queue,
        )

    async def alert_ops(self, kind: str, subject: str, body: str, *, occurrence: str | None = None) -> None:
        alert = OpsAlert(
            order_id=self.order.order_id,
            kind=kind,
            subject=subject,
            body=body,
            occurrence=occurrence,
            key=self.placed_again_key,
        )
        await self.messenger.send(
            NotificationActivities.alert_ops, alert, summary=f"alert ops: {kind}", lanes=[Channel.EMAIL.value]
        )

    async def alert_low_stock(self, skus: list[str]) -> None:
        """This reservation took stock to its reorder point: ops get one email per crossing (idempotent)."""
        await self.messenger.send(
            InventoryActivities.alert_low_stock, skus, summary="low-stock alert", lanes=[Channel.EMAIL.value]
        )


def problem_of(err: BaseException) -> str:
    """What an error retrying cannot fix means for the part it hit: a released reservation, or a problem
    for ops (orders recorded before PARK_FAILURES fail as a whole instead: the error is raised)."""
    if not workflow.patched(PARK_FAILURES):
        raise err
    if error_type(err) == "ShipmentReleased":
        raise ParcelReleased()
    return innermost(err)


def error_type(err: BaseException) -> str | None:
    """The type of an activity's ApplicationError (see workflows/steps.py application_error)."""
    cause = application_error(err)
    return cause.type if cause is not None else None


def merge(lines: Sequence[OrderLine], more: Sequence[OrderLine]) -> list[OrderLine]:
    units: dict[str, int] = {}
    for line in (*lines, *more):
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(units.items())]
