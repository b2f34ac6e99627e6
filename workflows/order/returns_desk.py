"""Returns on the order workflow: the return window after delivery and the `request_return` Update.

The order's returns desk, a part of OrderWorkflow (whose handlers call it). Each accepted request becomes
an RMA with its own child workflow (workflows/returns.py, id `return-<rma_id>`) that reports every step back by
the `return_progress` signal; the order's status, timeline, `returns` summary and OrderStatus search attribute
follow it. After the window (one durable timer, however long) and once every RMA is settled, the order closes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

from workflows.order.fulfilment import Fulfilment
from workflows.steps import describe

with workflow.unsafe.imports_passed_through():
    from common.models import (
        OrderLine,
        OrderStatus,
        OrderUpdateResult,
        OrderWorkflowInput,
        ReturnSummary,
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


class ReturnsDesk:
    """The order's returns: accepts `request_return` (an RMA and its return workflow each), follows each RMA
    into the order's status and timeline, and keeps a delivered order open for the return window."""

    def __init__(self, fulfilment: Fulfilment, placement: int) -> None:
        self._fulfilment = fulfilment
        self._view = fulfilment.view
        self._timeline = fulfilment.timeline
        self._placement = placement  # 2 and later: placed again under its id
        self._running: dict[str, ChildWorkflowHandle[Any, RmaView]] = {}
        self._starting: set[str] = set()  # accepted, the child workflow not started yet
        self._followers: list[asyncio.Task[None]] = []

    def intake_note(self, input: OrderWorkflowInput) -> str:
        """The first timeline entry: a replacement order says which order and RMA it replaces."""
        if input.replacement_for:
            self._view.replacement_for = input.replacement_for
            return f"replacement for order {input.replacement_for}: order placed"
        return "order placed"

    async def request_return(self, request: ReturnRequest) -> OrderUpdateResult:
        try:  # again: another request may have been accepted since this one was validated
            self.validate(request)
        except ValueError as err:
            raise ApplicationError(str(err), type="ReturnRefused", non_retryable=True) from None
        order = self._fulfilment.order
        n = len(self._view.returns) + 1
        rma_id = rma_id_for(self._fulfilment.key, n)
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
        what = describe(lines)
        self._timeline.record(
            OrderStatus.RETURN_REQUESTED,
            f"{rma_id}: return of {what} accepted ({request.reason.value}"
            + (", exchange" if request.exchange else "")
            + ")",
            waiting_for=f"return {rma_id}",
        )
        shipped_from = self._shipped_from()
        self._starting.add(rma_id)  # open before the child starts: the order must not close meanwhile
        try:
            handle = await self._start_return(request, n, rma_id, replacement, shipped_from)
        finally:
            self._starting.discard(rma_id)
        self._running[rma_id] = handle
        self._followers.append(asyncio.create_task(self._follow_rma(rma_id, handle)))
        return self._timeline.result().model_copy(update={"rma_id": rma_id})

    async def _start_return(
        self, request: ReturnRequest, n: int, rma_id: str, replacement: str | None, shipped_from: dict[str, str]
    ) -> ChildWorkflowHandle[Any, RmaView]:
        order = self._fulfilment.order
        what = describe(request.lines)
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
                policy=self._fulfilment.policy,
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

    def validate(self, request: ReturnRequest) -> None:
        """The request_return validator: why the request cannot be accepted (ValueError), if it cannot."""
        order_id = self._fulfilment.order.order_id
        status = self._view.status
        if self._fulfilment.closed or status in (OrderStatus.COMPLETED, OrderStatus.CANCELLED):
            raise ValueError(f"order {order_id} is {status.value}: its return window is over")
        delivered_at = self._delivered_at()
        if delivered_at is None:
            raise ValueError(f"order {order_id} was not delivered (it is {status.value}): nothing to return yet")
        closes = delivered_at + timedelta(seconds=self._fulfilment.policy.return_window_s)
        if workflow.now() >= closes:
            raise ValueError(f"the return window of order {order_id} closed on {closes:%Y-%m-%d %H:%M} UTC")
        delivered = self._delivered_units()
        returned = self._returned_units()
        ordered = {line.sku for line in self._fulfilment.order.lines}
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

    # ------------------------------------------------------------------------------------------ window

    async def window(self) -> None:
        """Keep the delivered order open for returns: one durable timer to the end of the window, then wait for
        the open RMAs to settle. With a zero window and no returns this adds nothing to history."""
        if self._fulfilment.policy.return_window_s <= 0 and not self._running and not self._starting:
            return
        delivered_at = self._delivered_at() or workflow.now()
        closes = delivered_at + timedelta(seconds=self._fulfilment.policy.return_window_s)
        remaining = closes - workflow.now()
        if remaining > timedelta(0):
            if self._view.waiting_for is None:
                self._view.waiting_for = f"returns until {closes:%Y-%m-%d %H:%M} UTC"
            await workflow.sleep(remaining, summary=f"return window until {closes:%Y-%m-%d %H:%M} UTC")
        if self._running or self._starting:
            open_rmas = ", ".join(sorted({*self._running, *self._starting}))
            self._timeline.note(f"return window closed; waiting for {open_rmas}")
            await workflow.wait_condition(lambda: not self._running and not self._starting)
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
                self.apply(ReturnProgress(rma_id=rma_id, status=final, note=note, refund_cents=view.refund_cents))
            else:
                self.apply(ReturnProgress(rma_id=rma_id, status=final, note=note))
        except ChildWorkflowError as err:
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
            self.apply(
                ReturnProgress(rma_id=rma_id, status=RmaStatus.FAILED, note=f"return failed, needs ops: {cause}")
            )
        finally:
            self._running.pop(rma_id, None)

    def apply(self, progress: ReturnProgress) -> None:
        """A return workflow reported a step (the return_progress signal), or its end."""
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
        for parcel in self._fulfilment.delivered_parcels():
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

    def _shipped_from(self) -> dict[str, str]:
        """sku -> the warehouse its delivered units left from (returns go back there)."""
        origin: dict[str, str] = {}
        for parcel in self._fulfilment.delivered_parcels():
            for line in parcel.lines:
                origin.setdefault(line.sku, parcel.warehouse)
        return origin
