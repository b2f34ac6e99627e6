"""Returns on the order workflow: the return window after delivery and the `request_return` Update.

A mixin that OrderWorkflow inherits (workflow.defn picks up inherited handlers). Each accepted request becomes
an RMA with its own child workflow (workflows/returns.py, id `return-<rma_id>`) that reports every step back by
the `return_progress` signal; the order's status, timeline, `returns` summary and OrderStatus search attribute
follow it. After the window (one durable timer, however long) and once every RMA is settled, the order closes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

from workflows.order.timeline import Timeline

with workflow.unsafe.imports_passed_through():
    from common.models import (
        NotificationEvent,
        Order,
        OrderLine,
        OrderPolicy,
        OrderStatus,
        OrderUpdateResult,
        OrderView,
        OrderWorkflowInput,
        ReturnSummary,
        ShipmentView,
    )
    from common.returns import (
        FINAL_RMA_STATUSES,
        RETURN_WORKFLOW_TYPE,
        RMA_TO_ORDER_STATUS,
        ReturnProgress,
        ReturnRequest,
        ReturnWorkflowInput,
        RmaStatus,
        RmaView,
        replacement_order_id,
        return_workflow_id,
        rma_id_for,
    )


# RMA statuses whose units stay with the customer: they can be returned again (a failed RMA only if its parcel
# never moved: once the carrier or the warehouse had it, or an exchange's replacement left, they count)
_UNITS_NOT_RETURNED = frozenset({RmaStatus.EXPIRED.value, RmaStatus.FAILED.value})
_PARCEL_MOVED = frozenset({RmaStatus.IN_TRANSIT, RmaStatus.RECEIVED, RmaStatus.REFUND_FAILED, RmaStatus.REFUNDED})


@dataclass
class _ReturnsState:
    running: dict[str, ChildWorkflowHandle[Any, RmaView]] = field(default_factory=dict)
    starting: set[str] = field(default_factory=set)  # accepted, the child workflow not started yet
    followers: list[asyncio.Task[None]] = field(default_factory=list)


class OrderReturns:
    # Provided by OrderWorkflow.
    _order: Order
    _policy: OrderPolicy
    _view: OrderView
    _key: str  # the key of the order's rows (common.models.order_key)
    _placement: int  # 2 and later: placed again under its id
    _timeline: Timeline

    if TYPE_CHECKING:

        def _result(self) -> OrderUpdateResult: ...

        def _delivered_parcels(self) -> list[ShipmentView]: ...

        _closed: bool

        async def _notify(
            self,
            event: NotificationEvent,
            context: dict[str, str] | None = None,
            *,
            sms_only: bool = False,
            occurrence: str | None = None,
        ) -> None: ...

    def _shipped_from(self) -> dict[str, str]:
        """sku -> warehouse the delivered units left from (OrderWorkflow overrides this with the real answer
        once it ships from several warehouses)."""
        return {line.sku: self._view.warehouse or "" for line in self._order.lines}

    @property
    def _returns_state(self) -> _ReturnsState:
        # OrderWorkflow.__init__ does not know this mixin: its state is created on first use, per instance.
        state = self.__dict__.get("_returns_state_")
        if state is None:
            state = self.__dict__["_returns_state_"] = _ReturnsState()
        return state

    def _intake_note(self, input: OrderWorkflowInput) -> str:
        """The first timeline entry: a replacement order says which order and RMA it replaces."""
        if input.replacement_for:
            self._view.replacement_for = input.replacement_for
            return f"replacement for order {input.replacement_for}: order placed"
        return "order placed"

    # ------------------------------------------------------------------------------------------ messages

    @workflow.update(
        description='Request a return of delivered units within the return window, e.g. {"lines": [{"sku": '
        '"MUG-RED", "quantity": 1}], "reason": "damaged", "exchange": false}. Reasons: damaged, wrong_item, '
        "not_as_described, no_longer_needed, other; exchange (a replacement order) only for damaged or "
        "wrong_item. Creates an RMA, buys a return label and sends it to the customer."
    )
    async def request_return(self, request: ReturnRequest) -> OrderUpdateResult:
        try:  # again: another request may have been accepted since this one was validated
            self._validate_request_return(request)
        except ValueError as err:
            raise ApplicationError(str(err), type="ReturnRefused", non_retryable=True) from None
        order = self._order
        n = len(self._view.returns) + 1
        rma_id = rma_id_for(self._key, n)
        replacement = replacement_order_id(order.order_id, n, self._placement) if request.exchange else None
        lines = [OrderLine(sku=li.sku, quantity=li.quantity) for li in request.lines]
        self._view.returns.append(
            ReturnSummary(
                rma_id=rma_id,
                status=RmaStatus.REQUESTED.value,
                reason=request.reason.value,
                lines=lines,
                requested_at=workflow.now(),
                exchange=request.exchange,
                replacement_order_id=replacement,
                note=request.note,
            )
        )
        what = ", ".join(f"{li.sku} x{li.quantity}" for li in lines)
        self._timeline.record(
            OrderStatus.RETURN_REQUESTED,
            f"{rma_id}: return of {what} accepted ({request.reason.value}"
            + (", exchange" if request.exchange else "")
            + ")",
            waiting_for=f"return {rma_id}",
        )
        shipped_from = self._shipped_from()
        state = self._returns_state
        state.starting.add(rma_id)  # open before the child starts: the order must not close meanwhile
        try:
            handle = await self._start_return(request, n, rma_id, replacement, shipped_from)
        finally:
            state.starting.discard(rma_id)
        state.running[rma_id] = handle
        state.followers.append(asyncio.create_task(self._follow_rma(rma_id, handle)))
        return self._result().model_copy(update={"rma_id": rma_id})

    async def _start_return(
        self, request: ReturnRequest, n: int, rma_id: str, replacement: str | None, shipped_from: dict[str, str]
    ) -> ChildWorkflowHandle[Any, RmaView]:
        order = self._order
        what = ", ".join(f"{li.sku} x{li.quantity}" for li in request.lines)
        # By type name: importing workflows.returns here would re-run it in the sandbox for every order.
        return await workflow.start_child_workflow(
            RETURN_WORKFLOW_TYPE,
            ReturnWorkflowInput(
                rma_id=rma_id,
                n=n,
                order_id=order.order_id,
                parent_workflow_id=workflow.info().workflow_id,
                customer=order.customer,
                ship_to=order.ship_to,
                reason=request.reason,
                lines=list(request.lines),
                exchange=request.exchange,
                replacement_order_id=replacement,
                note=request.note,
                warehouses={li.sku: shipped_from.get(li.sku, "") for li in request.lines},
                policy=self._policy,
                shipping_speed=order.shipping_speed.value,
                unit_prices=order.unit_prices_cents(),
                payment_reference=order.payment.reference if order.payment else None,
                currency=order.currency,
            ),
            id=return_workflow_id(rma_id),
            # The customer's parcel is in the mail whatever happens to the order workflow: the return goes on.
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"Return {rma_id} of order {order.order_id}: {what} ({request.reason.value})",
            result_type=RmaView,
        )

    @request_return.validator
    def _validate_request_return(self, request: ReturnRequest) -> None:
        order_id = self._order.order_id
        status = self._view.status
        if self._closed or status in (OrderStatus.COMPLETED, OrderStatus.CANCELLED):
            raise ValueError(f"order {order_id} is {status.value}: its return window is over")
        delivered_at = self._delivered_at()
        if delivered_at is None:
            raise ValueError(f"order {order_id} was not delivered (it is {status.value}): nothing to return yet")
        closes = delivered_at + timedelta(seconds=self._policy.return_window_s)
        if workflow.now() >= closes:
            raise ValueError(f"the return window of order {order_id} closed on {closes:%Y-%m-%d %H:%M} UTC")
        delivered = self._delivered_units()
        returned = self._returned_units()
        ordered = {line.sku for line in self._order.lines}
        for line in request.lines:
            if line.sku not in ordered:
                raise ValueError(f"{line.sku} is not in order {order_id}")
            if line.sku not in delivered:
                raise ValueError(f"no {line.sku} of order {order_id} was delivered: nothing of it to return")
            left = delivered[line.sku] - returned.get(line.sku, 0)
            if line.quantity > left:
                raise ValueError(
                    f"{line.quantity} x {line.sku} cannot be returned: {delivered[line.sku]} delivered, "
                    f"{returned.get(line.sku, 0)} already returned, so at most {left}"
                )

    @workflow.signal(
        description="Progress of one of this order's returns (sent by its return workflow): the order's status "
        "and timeline follow it."
    )
    def return_progress(self, progress: ReturnProgress) -> None:
        self._apply_rma_progress(progress)

    # ------------------------------------------------------------------------------------------ window

    async def _return_window(self) -> None:
        """Keep the delivered order open for returns: one durable timer to the end of the window, then wait for
        the open RMAs to settle. With a zero window and no returns this adds nothing to history."""
        state = self._returns_state
        if self._policy.return_window_s <= 0 and not state.running and not state.starting:
            return
        delivered_at = self._delivered_at() or workflow.now()
        closes = delivered_at + timedelta(seconds=self._policy.return_window_s)
        remaining = closes - workflow.now()
        if remaining > timedelta(0):
            if self._view.waiting_for is None:
                self._view.waiting_for = f"returns until {closes:%Y-%m-%d %H:%M} UTC"
            await workflow.sleep(remaining, summary=f"return window until {closes:%Y-%m-%d %H:%M} UTC")
        if state.running or state.starting:
            open_rmas = ", ".join(sorted({*state.running, *state.starting}))
            self._timeline.note(f"return window closed; waiting for {open_rmas}")
            await workflow.wait_condition(lambda: not state.running and not state.starting)
        await workflow.wait_condition(workflow.all_handlers_finished)
        settled = len(self._view.returns)
        note = f"return window closed ({settled} return{'s' if settled != 1 else ''})"
        if self._view.status != OrderStatus.DELIVERED:
            self._timeline.record(OrderStatus.DELIVERED, note)  # back to where the goods stand, before COMPLETED
        else:
            self._view.waiting_for = None
            self._timeline.note(note)

    # ------------------------------------------------------------------------------------------ helpers

    async def _follow_rma(self, rma_id: str, handle: ChildWorkflowHandle[Any, RmaView]) -> None:
        """The return workflow's end settles its RMA (its last progress signal may arrive after it closed)."""
        try:
            view = await handle
            final = view.status
            note = view.note or final.value.lower()
            if view.status == RmaStatus.REFUNDED and view.refund_cents is not None:
                self._apply_rma_progress(
                    ReturnProgress(rma_id=rma_id, status=final, note=note, refund_cents=view.refund_cents)
                )
            else:
                self._apply_rma_progress(ReturnProgress(rma_id=rma_id, status=final, note=note))
        except ChildWorkflowError as err:
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
            self._apply_rma_progress(
                ReturnProgress(rma_id=rma_id, status=RmaStatus.FAILED, note=f"return failed, needs ops: {cause}")
            )
        finally:
            self._returns_state.running.pop(rma_id, None)

    def _apply_rma_progress(self, progress: ReturnProgress) -> None:
        summary = next((r for r in self._view.returns if r.rma_id == progress.rma_id), None)
        if summary is None or summary.status in {s.value for s in FINAL_RMA_STATUSES}:
            return  # unknown, or already settled (the signal and the child's result both report the end)
        summary.status = progress.status.value
        summary.parcel_moved = summary.parcel_moved or progress.status in _PARCEL_MOVED
        if progress.tracking_number:
            summary.tracking_number = progress.tracking_number
        if progress.refund_cents is not None:
            summary.refund_cents = progress.refund_cents
        if progress.replacement_order_id:
            summary.replacement_order_id = progress.replacement_order_id
        summary.note = progress.note
        note = f"{progress.rma_id}: {progress.note}"
        target = RMA_TO_ORDER_STATUS[progress.status]
        if target is None:
            self._timeline.note(note)
        else:
            self._timeline.record(target, note, waiting_for=progress.waiting_for)

    def _delivered_units(self) -> dict[str, int]:
        """sku -> units delivered to the customer (parcels refunded, reshipped or lost do not count)."""
        units: dict[str, int] = {}
        for parcel in self._delivered_parcels():
            for line in parcel.lines:
                units[line.sku] = units.get(line.sku, 0) + line.quantity
        return units

    def _delivered_at(self) -> datetime | None:
        return next((e.at for e in self._view.timeline if e.status == OrderStatus.DELIVERED), None)

    def _returned_units(self) -> dict[str, int]:
        units: dict[str, int] = {}
        for rma in self._view.returns:
            if rma.status in _UNITS_NOT_RETURNED and not rma.parcel_moved:
                continue
            for line in rma.lines:
                units[line.sku] = units.get(line.sku, 0) + line.quantity
        return units
