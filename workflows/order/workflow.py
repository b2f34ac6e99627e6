"""The per-order state machine: one durable workflow carries an order from intake to delivery.

Deterministic code only: time from workflow.now(), no I/O. Every side effect is an activity with a
business idempotency key, so retries, worker crashes and replays never double-reserve, double-buy or
double-send. See docs/design.md for the states and rules.

This module holds what Temporal calls (the handlers and `run`) and the order's way to its end: the allocator
(allocation.py) reserves lines as parcels, each parcel (parcel.py) goes its own way concurrently, the
timeline (timeline.py) shows where the order stands, the returns desk (returns_desk.py) keeps it open for
returns after delivery. What those parts share, and the ops requests they act on, is the Fulfilment.

Failure handling (workflows/steps.py runs the steps): an outage makes the order wait, visibly, and carry on by
itself; messages never hold it up; an error retrying cannot fix parks the part it hit in FAILED for ops
(`retry` or cancel, until `failed_wait_s`), and never undoes parcels the carrier already has. A cancel or a
hold of a labelled parcel asks the carrier first, and each parcel is undone on its own. Orders recorded
before a behaviour existed replay the way they ran: each change sits behind a patch id (patches.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order.allocation import Allocator
from workflows.order.fulfilment import Fulfilment, OrderCancelled, error_type
from workflows.order.parcel import Parcel
from workflows.order.patches import (
    CONFIRMATION_FIRST,
    LEAN_FOR_EVERY_ORDER,
    LEAN_HISTORY,
    TEMPORAL_CANCEL_COMPENSATES,
    UNDO_PER_PARCEL,
)
from workflows.order.refusals import labelled, refusal_by_the_3pl, refusal_by_the_carrier
from workflows.order.returns_desk import ReturnsDesk
from workflows.order.threepl import delivered_by_the_3pl
from workflows.steps import describe, innermost, settle

with workflow.unsafe.imports_passed_through():
    # pydantic imports email_validator lazily when it validates an EmailStr: pass it through, or the
    # sandbox re-imports it for every workflow run.
    import email_validator  # noqa: F401

    from common.models import (
        Actor,
        Address,
        AddressChange,
        CancelRequest,
        HoldRequest,
        NotificationEvent,
        Order,
        OrderStatus,
        OrderUpdateResult,
        OrderView,
        OrderWorkflowInput,
        ParcelView,
        PickShortage,
        ReleaseRequest,
        ReservationReleased,
        ResolveDeliveryRequest,
        RetryRequest,
    )
    from common.returns import ReturnProgress, ReturnRequest
    from common.shipping.contracts import TrackingPush
    from common.temporal import customer_task_queue
    from common.threepl.contracts import ThreePLState, ThreePLUpdate
    from common.warehouse.short_picks import shortage_problem


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow:
    """One order from intake to delivery. Stock is reserved as one or more parcels: one warehouse when one
    covers the order, else a split, or what is in stock now under the ship-available policy. Each parcel runs
    its own pick, label, tracking and messages concurrently; the order's status sums them up, and lines that
    could not be reserved (or went missing at the pick, or were lost and reshipped) wait for stock and become
    further parcels."""

    @workflow.init
    def __init__(self, input: OrderWorkflowInput) -> None:
        self._fulfilment = fulfilment = Fulfilment(input)
        self._view = fulfilment.view
        self._timeline = fulfilment.timeline
        self._confirmed_picks = fulfilment.confirmed_picks
        self._allocation = Allocator(fulfilment)
        self._returns = ReturnsDesk(fulfilment, input.placement)
        self._requests: list[asyncio.Task[Any]] = []  # cancels requested by a signal or in Temporal
        self._hold_recorded_by_request = False

    @property
    def _order(self) -> Order:
        return self._fulfilment.order

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
        self._fulfilment.pick_shortages[shortage.task_id] = dict(shortage.short)
        self._confirmed_picks.add(shortage.task_id)
        return self._timeline.result()

    @pick_short.validator
    def _validate_pick_short(self, shortage: PickShortage) -> None:
        parcels = [p for p in self._view.shipments if p.pick_task_id == shortage.task_id]
        if not parcels or parcels[0].status != OrderStatus.PICKING or shortage.task_id in self._confirmed_picks:
            raise ValueError(
                f"{shortage.task_id} is not a pick of order {self._order.order_id} waiting to be confirmed"
            )
        ordered = {line.sku: line.quantity for line in parcels[0].lines}
        problem = shortage_problem(shortage.task_id, ordered, shortage.short)
        if problem is not None:
            raise ValueError(problem)

    @workflow.signal(
        description="A tracking event the carrier pushed for one of this order's parcels (an EasyPost "
        "tracker.updated webhook the HTTP API verified): applied at once, as a poll's answer would be. An event "
        "older than one already applied changes nothing."
    )
    def carrier_tracking(self, event: TrackingPush) -> None:
        for parcel in self._fulfilment.parcels:
            if parcel.label is not None and parcel.label.tracking_number == event.tracking_number:
                parcel.push(event)

    @workflow.signal(
        description="News of one of this order's parcels at its 3PL (a webhook the HTTP API verified, the "
        "reconciliation pull): accepted, on hold, rejected, shipped with a carrier and tracking number, delivered. "
        "News that does not move the parcel forward (a repeat, a late webhook) changes nothing."
    )
    def threepl_update(self, update: ThreePLUpdate) -> None:
        for parcel in self._fulfilment.parcels:
            if parcel.provider is None or parcel.view.shipment_no != update.shipment_no:
                continue
            if parcel.view.outcome is not None:
                return
            if parcel.label is None:
                parcel.threepl_news.append(update)
            elif update.state == ThreePLState.DELIVERED and parcel.view.status != OrderStatus.DELIVERED:
                parcel.pushed.append(delivered_by_the_3pl(parcel.provider))
            return

    @workflow.signal(
        description="Stock arrived for one of this order's SKUs: a backordered order retries its reservation."
    )
    def stock_received(self, sku: str) -> None:
        self._allocation.restocks_seen += 1

    @workflow.signal(
        description="(Sent before reservation_released existed.) A stock count released this order's "
        "reservations of parcels not picked yet: they are re-reserved, or wait for stock."
    )
    def stock_released(self, sku: str) -> None:
        for parcel in self._fulfilment.parcels:
            if parcel.provider is not None:
                continue  # handed to a 3PL: it ships or rejects it, whatever our books say
            if parcel.view.outcome is None and parcel.view.status in (OrderStatus.RESERVED, OrderStatus.PICKING):
                parcel.released = True

    @workflow.signal(
        description="A stock count released the reservations of these parcels before they were picked (their "
        "pick tasks are cancelled): their goods are reserved again, or wait for stock."
    )
    def reservation_released(self, released: ReservationReleased) -> None:
        for parcel in self._fulfilment.parcels:
            if parcel.view.shipment_no in released.shipments and parcel.view.outcome is None:
                if parcel.threepl_state is not None:
                    continue  # handed to a 3PL: it ships or rejects it, whatever our books say
                parcel.released = parcel.released_in_the_db = True

    @workflow.signal(
        description="(Replacement orders of an exchange.) The customer sent the goods back: the replacement ships."
    )
    def return_sent(self, rma_id: str) -> None:
        if self._fulfilment.awaiting_return == rma_id:
            self._fulfilment.awaiting_return = None

    @workflow.signal(
        description="(Replacement orders of an exchange.) The return expired or failed: the replacement is "
        "cancelled unless it already left."
    )
    def return_abandoned(self, rma_id: str) -> None:
        fulfilment = self._fulfilment
        if fulfilment.awaiting_return == rma_id and fulfilment.cancel_reason is None and not fulfilment.closed:
            reason = f"the goods of {rma_id} were never sent back"
            self._requests.append(asyncio.create_task(self._request_cancel(reason)))

    @workflow.update(
        description='Cancel the order, e.g. {"reason": "customer changed their mind"}. Releases stock, cancels '
        "the pick tasks and voids bought labels. Refused once a parcel is with the carrier (the carrier is "
        "asked first)."
    )
    async def cancel(self, request: CancelRequest) -> OrderUpdateResult:
        self._audit(f"cancel requested: {request.reason}", request.by)
        refusal = await self._request_cancel(request.reason)
        if refusal is not None:
            raise ApplicationError(refusal, type="CancelRefused", non_retryable=True)
        await workflow.wait_condition(lambda: self._fulfilment.closed or self._cancel_went_as_far_as_it_can())
        return self._timeline.result()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._refuse_if_closed_or_shipped("cancel")
        if self._fulfilment.cancel_reason is not None:
            raise ValueError(f"a cancellation is already under way ({self._fulfilment.cancel_reason})")

    @workflow.update(
        description='Hold the order at its next step, e.g. {"reason": "fraud check"}. It shows ON_HOLD with '
        "the reason until released. Refused once shipped (the carrier is asked first)."
    )
    async def hold(self, request: HoldRequest) -> OrderUpdateResult:
        self._audit(f"hold requested: {request.reason}", request.by)
        refusal = await self._request_hold(request.reason)
        if refusal is not None:
            raise ApplicationError(refusal, type="HoldRefused", non_retryable=True)
        fulfilment = self._fulfilment
        await workflow.wait_condition(
            lambda: self._view.status == OrderStatus.ON_HOLD or fulfilment.closed or fulfilment.hold_reason is None
        )
        return self._timeline.result()

    @hold.validator
    def _validate_hold(self, request: HoldRequest) -> None:
        fulfilment = self._fulfilment
        self._refuse_if_closed_or_shipped("hold")
        at_3pl = [p for p in fulfilment.parcels if p.handed_to_3pl()]
        if at_3pl:
            which = ", ".join(f"shipment {p.view.shipment_no} is with {p.provider}" for p in at_3pl)
            raise ValueError(f"cannot hold order {self._order.order_id}: {which}, which has no hold; cancel instead")
        if fulfilment.hold_reason is not None:
            raise ValueError(f"the order is already on hold ({fulfilment.hold_reason})")
        if fulfilment.cancel_reason is not None:
            raise ValueError(f"a cancellation is under way ({fulfilment.cancel_reason})")

    @workflow.update(description="Release an order on hold: it resumes where it stopped.")
    async def release(self, request: ReleaseRequest | None = None) -> OrderUpdateResult:
        self._audit("release requested", request.by if request else None)
        self._fulfilment.hold_reason = None
        if self._hold_recorded_by_request and self._view.status == OrderStatus.ON_HOLD:
            # Only labelled parcels were moving: no step of the order will record the release.
            self._fulfilment.record_released()
        self._hold_recorded_by_request = False
        await workflow.wait_condition(lambda: self._view.status != OrderStatus.ON_HOLD)
        return self._timeline.result()

    @release.validator
    def _validate_release(self, request: ReleaseRequest | None = None) -> None:
        if self._fulfilment.hold_reason is None:
            raise ValueError(f"order {self._order.order_id} is not on hold (it is {self._view.status.value})")

    @workflow.update(
        description="Correct the ship-to address (an Address object: name, line1, line2, city, region, "
        "postal_code, country). Allowed until a label is bought, and while a parcel is ADDRESS_INVALID."
    )
    async def update_address(self, change: Address | AddressChange) -> OrderUpdateResult:
        # An Address alone: sent before AddressChange (who asked) existed, and still accepted
        address, by = (change.address, change.by) if isinstance(change, AddressChange) else (change, None)
        fulfilment = self._fulfilment
        fulfilment.order = fulfilment.order.model_copy(update={"ship_to": address})
        fulfilment.address_updates += 1
        self._timeline.note(f"ship-to address updated by {by or 'ops'}")
        return self._timeline.result()

    @update_address.validator
    def _validate_update_address(self, change: Address | AddressChange) -> None:
        if self._fulfilment.buying_labels:
            raise ValueError(
                f"a label is being bought for order {self._order.order_id} right now, for the address it has; "
                "try again once it is LABELED (then: cancel and place the order again) or ADDRESS_INVALID"
            )
        if any(p.status == OrderStatus.ADDRESS_INVALID for p in self._view.shipments):
            return
        self._refuse_if_closed_or_shipped("change the address of")
        if self._fulfilment.label_bought:
            raise ValueError("a label is already bought for the old address: cancel and place the order again")
        handed = [p for p in self._fulfilment.parcels if p.handed_to_3pl()]
        if handed:
            raise ValueError(
                f"shipment {handed[0].view.shipment_no} is with {handed[0].provider} for the old address: change it "
                "in the 3PL's dashboard, or cancel and place the order again"
            )

    @workflow.update(
        description='Decide a DELIVERY_EXCEPTION: {"action": "reship"} sends the parcel\'s goods again as a new '
        'parcel; {"action": "refund", "note": "lost"} refunds it. Optional "shipment": which parcel (default: '
        "the first in exception). Only while the order is in DELIVERY_EXCEPTION."
    )
    async def resolve_delivery_exception(self, request: ResolveDeliveryRequest) -> OrderUpdateResult:
        self._audit(f"delivery exception: {request.action.value} requested", request.by)
        parcel = self._exception_parcel(request.shipment)
        assert parcel is not None  # the validator checked
        parcel.resolution = request
        view = parcel.view
        await workflow.wait_condition(lambda: view.status != OrderStatus.DELIVERY_EXCEPTION or view.outcome is not None)
        return self._timeline.result()

    @resolve_delivery_exception.validator
    def _validate_resolution(self, request: ResolveDeliveryRequest) -> None:
        parcel = self._exception_parcel(request.shipment)
        if parcel is None:
            which = f" shipment {request.shipment}" if request.shipment is not None else ""
            raise ValueError(
                f"order {self._order.order_id}{which} has no delivery exception to resolve "
                f"(it is {self._view.status.value})"
            )
        if parcel.resolution is not None:
            raise ValueError(f"already being resolved ({parcel.resolution.action.value})")

    @workflow.update(
        description='Retry what failed and waits for ops (the order is FAILED), e.g. {"note": "carrier account '
        'fixed"}: the step that failed runs again where it stopped.'
    )
    async def retry(self, request: RetryRequest) -> OrderUpdateResult:
        self._audit("retry requested" + (f": {request.note}" if request.note else ""), request.by)
        fulfilment = self._fulfilment
        this_round = fulfilment.retry_round
        fulfilment.retry_round += 1
        fulfilment.retry_note = request.note
        await workflow.wait_condition(
            lambda: all(r > this_round for r in fulfilment.parked.values()) or fulfilment.closed
        )
        return self._timeline.result()

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        if not self._fulfilment.parked:
            raise ValueError(
                f"order {self._order.order_id} has nothing that failed to retry (it is {self._view.status.value})"
            )

    @workflow.update(
        description='Request a return of delivered units within the return window, e.g. {"lines": [{"sku": '
        '"MUG-RED", "quantity": 1}], "reason": "damaged", "exchange": false}. Reasons: damaged, wrong_item, '
        "not_as_described, no_longer_needed, other; exchange (a replacement order) only for damaged or "
        "wrong_item. Creates an RMA, buys a return label and sends it to the customer."
    )
    async def request_return(self, request: ReturnRequest) -> OrderUpdateResult:
        self._audit(f"return requested ({request.reason.value})", request.by)
        return await self._returns.request_return(request)

    @request_return.validator
    def _validate_request_return(self, request: ReturnRequest) -> None:
        self._returns.validate(request)

    @workflow.signal(
        description="Progress of one of this order's returns (sent by its return workflow): the order's status "
        "and timeline follow it."
    )
    def return_progress(self, progress: ReturnProgress) -> None:
        self._returns.apply(progress)

    def _audit(self, what: str, by: Actor | None) -> None:
        """Who asked for an ops action, in the timeline (callers that name nobody leave no entry)."""
        if by is not None:
            self._timeline.note(f"{what} (by {by})")

    def _exception_parcel(self, shipment_no: int | None) -> Parcel | None:
        for parcel in self._fulfilment.parcels:
            view = parcel.view
            in_exception = view.status == OrderStatus.DELIVERY_EXCEPTION and view.outcome is None
            if in_exception and (shipment_no is None or view.shipment_no == shipment_no):
                if shipment_no is not None or parcel.resolution is None:
                    return parcel
        return None

    def _refuse_if_closed_or_shipped(self, action: str) -> None:
        status = self._view.status
        if self._fulfilment.closed or status in (OrderStatus.COMPLETED, OrderStatus.CANCELLED):
            raise ValueError(f"cannot {action} order {self._order.order_id}: it is already {status.value}")
        if self._fulfilment.handed_to_carrier():
            raise ValueError(f"cannot {action} order {self._order.order_id}: already shipped: request a return")

    # ------------------------------------------------------------------------------------------ main path

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderView:
        timeline = self._timeline
        if input.workflow_version >= LEAN_HISTORY or workflow.patched(LEAN_FOR_EVERY_ORDER):
            self._fulfilment.lean = True
            timeline.visibility.start_batching()
        timeline.record(OrderStatus.RECEIVED, self._returns.intake_note(input))
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
            timeline.visibility.flush()  # the final status, before the workflow closes

    @staticmethod
    def _confirmation_queue() -> str | None:
        """Where the confirmation goes out: on the customer task queue, so that in a rush of orders every
        customer hears first and the orders' heavier first steps queue after (docs/performance.md, Flash sale)."""
        if not workflow.patched(CONFIRMATION_FIRST):
            return None  # orders recorded before: inside the first workflow task, as a local activity
        return customer_task_queue(workflow.info().task_queue)

    async def _run(self) -> OrderView:
        fulfilment = self._fulfilment
        try:
            await fulfilment.notify(NotificationEvent.ORDER_CONFIRMED, task_queue=self._confirmation_queue())
            await fulfilment.checkpoint()
            await self._fulfil()
            fulfilment.compensations.clear()
            return await self._finish()
        except OrderCancelled as cancelled:
            await self._compensate()
            await fulfilment.notify(NotificationEvent.CANCELLED, {"reason": cancelled.reason})
            # Last, so that CANCELLED (which the cancel Update waits for) means everything is done.
            return await self._close(OrderStatus.CANCELLED, cancelled.reason)
        except (ActivityError, ApplicationError) as err:
            await self._compensate()
            self._timeline.record(OrderStatus.FAILED, f"needs ops: {innermost(err)}")
            self._timeline.failed(error_type(err) or "error")
            fulfilment.closed = True
            raise ApplicationError(
                f"order {self._order.order_id} failed: {innermost(err)}", self._view, non_retryable=True
            ) from err

    async def _finish(self) -> OrderView:
        """Every part is done: cancelled, failed for good, or delivered (then the return window)."""
        fulfilment = self._fulfilment
        delivered = fulfilment.delivered_parcels()
        if fulfilment.cancel_confirmed and fulfilment.undoes_per_parcel and not fulfilment.handed_to_carrier():
            # Each parcel undid itself; this catches a reservation no parcel knew of, and the backorder.
            await fulfilment.release_stock()
            await fulfilment.notify(NotificationEvent.CANCELLED, {"reason": fulfilment.cancel_reason or "cancelled"})
            return await self._close(OrderStatus.CANCELLED, f"cancelled: {fulfilment.cancel_reason}")
        reached_the_customer = delivered or any(p.outcome in ("refunded", "reshipped") for p in self._view.shipments)
        if fulfilment.failed_parts and not reached_the_customer:
            what = "; ".join(fulfilment.failed_parts)
            await fulfilment.release_stock()
            await fulfilment.notify(NotificationEvent.FULFILMENT_FAILED, {"what": describe(self._order.lines)})
            self._timeline.failed("gave_up")
            await self._close(OrderStatus.FAILED, f"gave up: {what}")
            raise ApplicationError(f"order {self._order.order_id} failed: {what}", self._view, non_retryable=True)
        # Return window hook: after delivery (stock committed per parcel), before COMPLETED.
        if delivered:
            await self._returns.window()
        return await self._close(OrderStatus.COMPLETED, self._summary(delivered))

    async def _close(self, status: OrderStatus, note: str) -> OrderView:
        """The final status; the workflow ends once its queued messages went out and its handlers finished."""
        self._timeline.record(status, note)
        self._fulfilment.closed = True
        messenger = self._fulfilment.messenger
        if messenger.waiting:
            await messenger.drained()
        if not workflow.all_handlers_finished():
            await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    def _summary(self, delivered: list[ParcelView]) -> str:
        parcels = self._view.shipments
        given_up = self._allocation.given_up
        gone = [f"{describe(given_up)} cancelled (not restocked in time)"] if given_up else []
        gone += [f"failed: {what}" for what in self._fulfilment.failed_parts]
        if len(parcels) == 1:
            return "; ".join(["delivered" if delivered else "refunded", *gone])
        others = [f"shipment {p.shipment_no} {p.outcome}" for p in parcels if p.outcome]
        return "; ".join([f"{len(delivered)} of {len(parcels)} parcels delivered", *others, *gone])

    async def _fulfil(self) -> None:
        """Run the allocator (whenever lines wait for a parcel) and every parcel until all are done; the first
        failure or cancellation any of them hits stops the rest and is raised here."""
        fulfilment = self._fulfilment
        # Registered once, before the first reservation: releasing is idempotent, and it also closes the
        # order's backorder entry when the order is cancelled while waiting for stock. Cancelling pick tasks
        # only touches open ones.
        fulfilment.compensations.append(("release reservation", fulfilment.release_stock))
        fulfilment.compensations.append(("cancel pick tasks", fulfilment.cancel_picks))
        evicted = False
        try:
            while True:
                if fulfilment.unallocated and (fulfilment.allocator is None or fulfilment.allocator.done()):
                    fulfilment.allocator = asyncio.create_task(fulfilment.guard(self._allocation.run()))
                await workflow.wait_condition(self._fulfil_must_act)
                if fulfilment.failure is not None:
                    raise fulfilment.failure
                if self._all_done() and not fulfilment.unallocated:
                    return
        except GeneratorExit:
            # The worker dropped this workflow from its cache and Python is closing the coroutine: awaiting on
            # the way out is not allowed then ("coroutine ignored GeneratorExit"); a replay picks it up again.
            evicted = True
            raise
        finally:
            tasks = (*(p.task for p in fulfilment.parcels), fulfilment.allocator)
            running = [t for t in tasks if t is not None and not t.done()]
            for task in running:
                task.cancel()
            if not evicted:
                for task in running:
                    await settle(task)

    def _fulfil_must_act(self) -> bool:
        """A part failed, all are done, or lines wait for a parcel and the allocator is not running."""
        fulfilment = self._fulfilment
        allocator = fulfilment.allocator
        idle_with_lines = bool(fulfilment.unallocated) and allocator is not None and allocator.done()
        return fulfilment.failure is not None or self._all_done() or idle_with_lines

    def _all_done(self) -> bool:
        """Every parcel finished (delivered, refunded, reshipped...) and the allocator is not running."""
        fulfilment = self._fulfilment
        parcels_done = all(p.task is not None and p.task.done() for p in fulfilment.parcels)
        return parcels_done and (fulfilment.allocator is None or fulfilment.allocator.done())

    async def _compensate(self) -> None:
        """Orders recorded before UNDO_PER_PARCEL: undo what was done, newest first, shielded from cancellation;
        each undo step is idempotent."""
        compensations = self._fulfilment.compensations
        for name, undo in reversed(compensations):
            try:
                await asyncio.shield(asyncio.ensure_future(undo()))
                self._timeline.note(f"compensated: {name}")
            except (ActivityError, ApplicationError) as undo_err:
                workflow.logger.error("compensation %s failed: %s", name, undo_err)
                self._timeline.note(f"FAILED to {name}")
        compensations.clear()

    # ------------------------------------------------------------------------------------------ ops requests

    async def _request_cancel(self, reason: str) -> str | None:
        """A cancel from ops, the Web UI or a replacement's abandoned return. Returns why it is refused, or None
        once it is under way: a labelled parcel the carrier has (asked now, not the last poll) cannot be undone."""
        fulfilment = self._fulfilment
        fulfilment.cancel_reason = reason
        refusal = await refusal_by_the_carrier(self._fulfilment, "cancel") or await refusal_by_the_3pl(self._fulfilment)
        if refusal is not None:
            fulfilment.cancel_reason = None
            return refusal
        fulfilment.cancel_confirmed = True
        if fulfilment.undoes_per_parcel is None:
            fulfilment.undoes_per_parcel = workflow.patched(UNDO_PER_PARCEL)
        return None

    async def _request_hold(self, reason: str) -> str | None:
        fulfilment = self._fulfilment
        fulfilment.hold_reason = reason
        refusal = await refusal_by_the_carrier(self._fulfilment, "hold")
        if refusal is not None:
            fulfilment.hold_reason = None
            return refusal
        if labelled(self._fulfilment) and self._view.status != OrderStatus.ON_HOLD:
            # Labelled parcels go on being followed, and may be all there is: the hold shows now.
            self._timeline.record(OrderStatus.ON_HOLD, f"on hold: {reason}", waiting_for="release by ops")
            self._hold_recorded_by_request = True
        return None

    async def _cancel_requested_in_temporal(self) -> None:
        if self._fulfilment.cancel_reason is not None or self._fulfilment.closed:
            return
        if self._fulfilment.handed_to_carrier():
            self._timeline.note("cancel requested in Temporal refused: already shipped: request a return")
            return
        refusal = await self._request_cancel("cancel requested in Temporal (Web UI or CLI)")
        if refusal is not None:
            self._timeline.note(f"cancel requested in Temporal refused: {refusal}")

    def _cancel_went_as_far_as_it_can(self) -> bool:
        """A cancel the carrier beat for some parcels: every other part is undone (the order goes on)."""
        parcels = self._fulfilment.parcels
        allocator = self._fulfilment.allocator
        return (
            any(p.kept_by_the_carrier for p in parcels)
            and all(p.view.outcome is not None or p.kept_by_the_carrier for p in parcels)
            and (allocator is None or allocator.done())
        )
