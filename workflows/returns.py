"""One return (RMA): a child of the order workflow, id `return-<rma_id>`.

record the RMA -> (exchange: start the replacement order) -> buy the return label -> send it to the customer
-> follow the return tracking (expires if the parcel never moves) -> wait for the warehouse's receive-return
-> inspect (restock resellable, write off damaged, wake backorders)
-> refund (an outage is waited out; a refund the gateway declines waits for ops)
-> done. Each step is reported to the order by the `return_progress` signal, so the order's status, timeline
and OrderStatus search attribute follow the return.

Deterministic code only; every side effect is an activity with a business idempotency key.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

from workflows.steps import (
    CARRIER,
    DATABASE,
    PAYMENTS,
    Messenger,
    StepRunner,
    describe,
    innermost,
    on_channels,
    settle,
    timed_out,
)

with workflow.unsafe.imports_passed_through():
    import email_validator  # noqa: F401  (see workflows/order/workflow.py)

    from activities.notifications import NotificationActivities
    from activities.returns import ReturnActivities
    from activities.shipping import ShippingActivities
    from common import metrics
    from common.models import (
        MOVED_TRACKING_STATUSES,
        ORDER_WORKFLOW_VERSION,
        Channel,
        NotificationEvent,
        NotifyRequest,
        OpsAlert,
        Order,
        OrderLine,
        OrderStatus,
        OrderWorkflowInput,
        Payment,
        ShippingSpeed,
        TrackingPollRequest,
        TrackingStatus,
        workflow_id_for,
    )
    from common.returns import (
        RETURN_WORKFLOW_TYPE,
        InspectRequest,
        InspectResult,
        ReceiveReturnRequest,
        RecordRmaRequest,
        RefundRequest,
        RefundResult,
        RetryRefundRequest,
        ReturnLabel,
        ReturnLabelRequest,
        ReturnProgress,
        ReturnWorkflowInput,
        RmaStatus,
        RmaStatusChange,
        RmaView,
    )
    from common.temporal import CUSTOMER_ID, ORDER_STATUS, PICK_OVERDUE, SKUS

# Patch ids (see workflows/order/patches.py).
REPLACEMENT_SHIPS_ON_RETURN = "replacement-ships-on-return"  # an exchange ships once the goods are on their way
RETURN_FAILURES_ALERT_OPS = "return-failures-alert-ops"


_AWAITING_PARCEL = (RmaStatus.REQUESTED, RmaStatus.IN_TRANSIT)


@workflow.defn(name=RETURN_WORKFLOW_TYPE)
class ReturnWorkflow:
    @workflow.init
    def __init__(self, input: ReturnWorkflowInput) -> None:
        self._input = input
        self._view = RmaView(
            rma_id=input.rma_id,
            order_id=input.order_id,
            status=RmaStatus.REQUESTED,
            reason=input.reason,
            lines=list(input.lines),
            exchange=input.exchange,
            replacement_order_id=input.replacement_order_id,
            waiting_for="the return label",
        )
        self._received: ReceiveReturnRequest | None = None
        self._inspected = False
        self._refund_retry: str | None = None
        self._refund_rounds = 0
        self._steps = StepRunner()
        self._messenger = Messenger(self._steps, on_note=self._note)
        self._replacement_waits = False  # the exchange's replacement ships once the goods are on their way
        self._last_note: str | None = None

    # ------------------------------------------------------------------------------------------ messages

    @workflow.query(description="The return (RMA): status, label and tracking, what was received, the refund.")
    def status(self) -> RmaView:
        return self._view

    @workflow.update(
        description='The warehouse received the parcel: {"lines": [{"sku": "MUG-RED", "quantity": 1, "condition": '
        '"resellable"}]} (condition resellable or damaged). Only SKUs of this RMA, at most the authorised '
        "quantities. Resellable units go back on hand, damaged ones are written off."
    )
    async def receive_return(self, request: ReceiveReturnRequest) -> RmaView:
        self._received = request
        await workflow.wait_condition(lambda: self._inspected or self._view.status == RmaStatus.FAILED)
        return self._view

    @receive_return.validator
    def _validate_receive(self, request: ReceiveReturnRequest) -> None:
        rma = self._input.rma_id
        if self._received is not None:
            raise ValueError(f"RMA {rma} was already received")
        if self._view.status not in _AWAITING_PARCEL:
            raise ValueError(f"RMA {rma} is {self._view.status.value}: nothing to receive")
        authorised = {li.sku: li.quantity for li in self._input.lines}
        found: dict[str, int] = {}
        for line in request.lines:
            if line.sku not in authorised:
                listed = ", ".join(f"{s} x{q}" for s, q in sorted(authorised.items()))
                raise ValueError(f"{line.sku} is not on RMA {rma} (it authorises {listed})")
            found[line.sku] = found.get(line.sku, 0) + line.quantity
        for sku, qty in sorted(found.items()):
            if qty > authorised[sku]:
                raise ValueError(f"{qty} x {sku} received but RMA {rma} authorises only {authorised[sku]}")

    @workflow.update(
        description='Retry a refund that failed and waits for ops, e.g. {"description": "gateway back up"}. '
        "Only while the RMA is REFUND_FAILED."
    )
    async def retry_refund(self, request: RetryRefundRequest) -> RmaView:
        rounds = self._refund_rounds
        self._refund_retry = request.description
        await workflow.wait_condition(lambda: self._refund_rounds > rounds)
        return self._view

    @retry_refund.validator
    def _validate_retry_refund(self, request: RetryRefundRequest) -> None:
        if self._view.status != RmaStatus.REFUND_FAILED or self._refund_retry is not None:
            raise ValueError(
                f"RMA {self._input.rma_id} has no failed refund to retry (it is {self._view.status.value})"
            )

    # ------------------------------------------------------------------------------------------ main path

    @workflow.run
    async def run(self, input: ReturnWorkflowInput) -> RmaView:
        metrics.count(workflow.metric_meter(), metrics.RETURNS)  # one return workflow per RMA
        try:
            view = await self._run(input)
        except (ActivityError, ApplicationError) as err:
            problem = innermost(err)
            self._set(RmaStatus.FAILED, waiting_for="ops")
            self._view.note = problem
            await self._progress(RmaStatus.FAILED, f"return failed, needs ops: {problem}")
            await self._abandon_replacement()
            if workflow.patched(RETURN_FAILURES_ALERT_OPS):
                await self._alert_ops(
                    "return_failed", f"Return {input.rma_id} failed (order {input.order_id})", problem
                )
            await self._messenger.drained()
            raise ApplicationError(f"return {input.rma_id} failed: {problem}", non_retryable=True) from err
        await self._messenger.drained()
        return view

    async def _run(self, input: ReturnWorkflowInput) -> RmaView:
        await self._steps.run(
            ReturnActivities.record_rma,
            RecordRmaRequest(
                rma_id=input.rma_id,
                order_id=input.order_id,
                reason=input.reason,
                lines=input.lines,
                exchange=input.exchange,
                replacement_order_id=input.replacement_order_id,
                note=input.note,
            ),
            step=DATABASE,
            summary="record RMA",
        )
        if input.exchange and input.replacement_order_id:
            await self._place_replacement(input.replacement_order_id)
        label = await self._buy_label()
        if not await self._follow_tracking(label):
            return await self._expire()
        await self._replacement_may_ship()
        self._set(self._view.status, waiting_for="the warehouse to receive the parcel (warehouse receive-return)")
        await self._await_receipt()
        assert self._received is not None
        await self._inspect(self._received)
        if input.exchange:
            await self._finish(RmaStatus.EXCHANGED, f"closed: replaced by order {input.replacement_order_id}")
            return self._view
        await self._refund()
        return self._view

    async def _await_receipt(self) -> None:
        """The carrier has the parcel; the warehouse receives it within return_receive_timeout_s (orders placed
        before that setting wait without a deadline), else the RMA fails for ops."""
        limit = self._input.policy.return_receive_timeout_s
        try:
            await workflow.wait_condition(
                lambda: self._received is not None, timeout=timedelta(seconds=limit) if limit is not None else None
            )
        except asyncio.TimeoutError:  # noqa: UP041 (this module's TimeoutError is Temporal's)
            raise ApplicationError(
                f"the return parcel was not received within {limit / 86400:g} days of the carrier's first scan"
                if limit is not None
                else "the return parcel was not received",
                type="ReturnNotReceived",
                non_retryable=True,
            ) from None

    async def _place_replacement(self, replacement_id: str) -> None:
        """The replacement is its own order (own workflow, stock, label and return window), started at once and
        abandoned by this return workflow, which closes long before the replacement is delivered. It reserves
        its goods now and ships once the customer's parcel is on its way (the first carrier scan, or the
        warehouse receiving it); if the return expires or fails, it is cancelled: a replacement cannot be had
        for free (orders recorded before REPLACEMENT_SHIPS_ON_RETURN shipped it at once)."""
        i = self._input
        self._replacement_waits = workflow.patched(REPLACEMENT_SHIPS_ON_RETURN)
        order = Order(
            order_id=replacement_id,
            customer=i.customer,
            ship_to=i.ship_to,
            # What the customer paid for the goods it replaces: returning the replacement refunds that.
            lines=[
                OrderLine(sku=li.sku, quantity=li.quantity, unit_price=_from_cents(i.unit_prices.get(li.sku)))
                for li in i.lines
            ],
            shipping_speed=ShippingSpeed(i.shipping_speed),
            payment=Payment(reference=i.payment_reference, currency=i.currency) if i.payment_reference else None,
        )
        await workflow.start_child_workflow(
            "OrderWorkflow",
            OrderWorkflowInput(
                order=order,
                policy=i.policy,
                replacement_for=f"{i.order_id} ({i.rma_id})",
                workflow_version=ORDER_WORKFLOW_VERSION,
                awaiting_return=i.rma_id if self._replacement_waits else None,
            ),
            id=workflow_id_for(replacement_id),
            parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(ORDER_STATUS, OrderStatus.RECEIVED.value),
                    SearchAttributePair(CUSTOMER_ID, i.customer.id),
                    SearchAttributePair(SKUS, [li.sku for li in i.lines]),
                    SearchAttributePair(PICK_OVERDUE, False),
                ]
            ),
            static_summary=f"Replacement order {replacement_id} for {i.order_id} ({i.rma_id})",
        )
        await self._notify(NotificationEvent.REPLACEMENT_PLACED, {"replacement_order_id": replacement_id})
        await self._progress(
            RmaStatus.REQUESTED,
            f"replacement order {replacement_id} placed",
            replacement_order_id=replacement_id,
        )

    async def _buy_label(self) -> ReturnLabel:
        i = self._input
        warehouse = next(iter(sorted(set(i.warehouses.values()))), "")
        label = await workflow.execute_activity_method(
            ReturnActivities.buy_return_label,
            ReturnLabelRequest(
                rma_id=i.rma_id, order_id=i.order_id, customer_address=i.ship_to, warehouse=warehouse, lines=i.lines
            ),
            summary="buy return label",
            **CARRIER.patient_options(),  # an outage waits (the pending activity shows its attempts)
        )
        v = self._view
        v.carrier, v.tracking_number, v.tracking_url, v.label_url = (
            label.carrier,
            label.tracking_number,
            label.tracking_url,
            label.label_url,
        )
        await self._set_db(RmaStatus.REQUESTED, "return label bought", label)
        await self._notify(
            NotificationEvent.RETURN_LABEL,
            {
                "carrier": label.carrier,
                "tracking_number": label.tracking_number,
                "tracking_url": label.tracking_url,
                "label_url": label.label_url,
                "items": describe(i.lines),
            },
        )
        self._set(RmaStatus.REQUESTED, waiting_for="the customer to send the parcel")
        await self._progress(
            RmaStatus.REQUESTED,
            f"return label {label.carrier} {label.tracking_number} sent to the customer",
            tracking_number=label.tracking_number,
            waiting_for=f"the customer to send the parcel ({i.rma_id})",
        )
        return label

    async def _follow_tracking(self, label: ReturnLabel) -> bool:
        """True once the parcel moves (or the warehouse already has it); False if it never moved within the
        return transit timeout. Infrequent polling: retries of the poll activity are not history."""
        return await self._poll_tracking(
            label,
            TrackingStatus.PRE_TRANSIT,
            workflow.now() + timedelta(seconds=self._input.policy.return_transit_timeout_s),
        )

    async def _poll_tracking(self, label: ReturnLabel, last_status: TrackingStatus, deadline: datetime) -> bool:
        """One poll of `_follow_tracking`: waits for a status other than `last_status`, until `deadline`."""
        poll_every = timedelta(seconds=self._input.policy.tracking_poll_interval_s)
        poll = workflow.start_activity_method(
            ShippingActivities.await_tracking_change,
            TrackingPollRequest(tracking_number=label.tracking_number, carrier=label.carrier, last_status=last_status),
            summary="wait for the return parcel to move",
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=max(deadline - workflow.now(), timedelta(seconds=1)),
            retry_policy=RetryPolicy(initial_interval=poll_every, backoff_coefficient=1.0, maximum_interval=poll_every),
        )
        await workflow.wait_condition(lambda: poll.done() or self._received is not None)
        if not poll.done():  # the warehouse has it before the carrier said so
            poll.cancel()
            await settle(poll)
            return True
        try:
            update = await poll
        except ActivityError as err:
            # Out of time: a schedule-to-close timeout, or retries stopped by it (the last poll's "unchanged").
            if timed_out(err) and self._received is None:
                return False
            if self._received is not None:
                return True
            raise
        if update.status not in MOVED_TRACKING_STATUSES:
            # "cancelled" or "error": the carrier does not have the parcel; it expires if it never moves.
            # The next poll waits for another status, so a tracker stuck there is not polled back to back.
            self._note(f"return parcel {label.tracking_number}: carrier reports {update.status.value}")
            return await self._poll_tracking(label, update.status, deadline)
        self._set(RmaStatus.IN_TRANSIT, waiting_for="the parcel to reach the warehouse")
        await self._set_db(RmaStatus.IN_TRANSIT, update.message)
        await self._progress(RmaStatus.IN_TRANSIT, f"return parcel {label.tracking_number}: {update.message}")
        return True

    async def _expire(self) -> RmaView:
        days = self._input.policy.return_transit_timeout_s / 86400
        self._set(RmaStatus.EXPIRED)
        self._view.note = f"the parcel did not move within {days:g} days"
        try:
            await workflow.execute_activity_method(
                ReturnActivities.void_return_label,
                self._input.rma_id,
                summary="void return label",
                **CARRIER.patient_options(),
            )
        except ActivityError as err:  # the unused label costs a little; the RMA still expires
            workflow.logger.warning("could not void return label of %s: %s", self._input.rma_id, err)
        await self._abandon_replacement()
        await self._set_db(RmaStatus.EXPIRED, self._view.note)
        await self._notify(NotificationEvent.RETURN_EXPIRED, {"days": f"{days:g}"})
        await self._progress(RmaStatus.EXPIRED, f"expired: {self._view.note}; customer told")
        return self._view

    async def _replacement_may_ship(self) -> None:
        """The customer's parcel is on its way (or at the warehouse): the exchange's replacement ships."""
        replacement = self._input.replacement_order_id
        if not self._replacement_waits or replacement is None:
            return
        self._replacement_waits = False
        await self._signal_replacement("return_sent", replacement)
        self._note(f"replacement order {replacement} ships now")

    async def _abandon_replacement(self) -> None:
        """The goods never came back: the replacement that waited for them is cancelled."""
        replacement = self._input.replacement_order_id
        if not self._replacement_waits or replacement is None:
            return
        self._replacement_waits = False
        await self._signal_replacement("return_abandoned", replacement)
        self._note(f"replacement order {replacement} cancelled: the goods were not sent back")

    async def _signal_replacement(self, signal: str, replacement: str) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id_for(replacement)).signal(signal, self._input.rma_id)
        except Exception as err:  # it closed (ops cancelled it): nothing to tell it
            workflow.logger.warning("replacement %s did not get %s: %s", replacement, signal, err)

    async def _inspect(self, request: ReceiveReturnRequest) -> None:
        i = self._input
        await self._replacement_may_ship()  # received before the carrier's first scan reached us
        result: InspectResult = await self._steps.run(
            ReturnActivities.inspect_return,
            InspectRequest(
                rma_id=i.rma_id, order_id=i.order_id, lines=request.lines, warehouses=i.warehouses, note=request.note
            ),
            step=DATABASE,
            summary="inspect: restock / write off",
        )
        self._view.received = list(request.lines)
        parts = []
        if result.restocked:
            parts.append("restocked " + ", ".join(f"{s} x{q}" for s, q in sorted(result.restocked.items())))
        if result.written_off:
            parts.append(
                "written off (damaged) " + ", ".join(f"{s} x{q}" for s, q in sorted(result.written_off.items()))
            )
        if result.woken_orders:
            parts.append("woke backordered " + ", ".join(result.woken_orders))
        summary = "; ".join(parts) or "nothing received"
        self._set(RmaStatus.RECEIVED, waiting_for=None if i.exchange else "the refund")
        self._inspected = True
        await self._set_db(RmaStatus.RECEIVED, summary)
        await self._notify(NotificationEvent.RETURN_RECEIVED, {"items": _inspected_text(request)})
        await self._progress(RmaStatus.RECEIVED, f"received at the warehouse: {summary}")

    async def _refund(self) -> None:
        i = self._input
        assert self._received is not None
        request = RefundRequest(
            rma_id=i.rma_id,
            order_id=i.order_id,
            reason=i.reason,
            lines=self._received.lines,
            unit_prices=i.unit_prices,
            payment_reference=i.payment_reference,
            currency=i.currency,
        )
        while True:
            try:
                result: RefundResult = await workflow.execute_activity_method(
                    # An outage waits; a refund the gateway declines waits for ops (retry_refund).
                    ReturnActivities.refund_return,
                    request,
                    summary="refund",
                    **PAYMENTS.patient_options(),
                )
                break
            except ActivityError as err:
                problem = innermost(err)
                self._refund_rounds += 1
                self._refund_retry = None
                waiting = f"ops: retry_refund on workflow return-{i.rma_id} (fulfill order retry-refund {i.rma_id})"
                self._set(RmaStatus.REFUND_FAILED, waiting_for=waiting)
                self._view.note = f"refund failed: {problem}"
                await self._set_db(RmaStatus.REFUND_FAILED, self._view.note)
                await self._alert_ops(
                    "refund_failed",
                    f"Refund of {i.rma_id} failed (order {i.order_id})",
                    f"{problem}. Retry it with `fulfill order retry-refund {i.rma_id} --description ...` "
                    "or from the Web UI (Update retry_refund).",
                    occurrence=f"{i.rma_id}:{self._refund_rounds}",
                )
                await self._progress(RmaStatus.REFUND_FAILED, self._view.note, waiting_for=waiting)
                await workflow.wait_condition(lambda: self._refund_retry is not None)
                self._view.note = f"refund retried by ops: {self._refund_retry}"
        self._view.refund_cents, self._view.refund_id = result.amount_cents, result.refund_id
        amount = f"{result.amount_cents / 100:.2f} {result.currency}"
        await self._notify(NotificationEvent.RETURN_REFUNDED, {"amount": amount})
        await self._finish(
            RmaStatus.REFUNDED, f"refunded {amount} ({result.refund_id})", refund_cents=result.amount_cents
        )
        self._refund_rounds += 1  # last: a retry_refund Update returns the outcome

    # ------------------------------------------------------------------------------------------ helpers

    async def _finish(self, status: RmaStatus, note: str, *, refund_cents: int | None = None) -> None:
        self._set(status)
        self._view.note = note
        await self._set_db(status, note)
        await self._progress(status, note, refund_cents=refund_cents)

    def _set(self, status: RmaStatus, *, waiting_for: str | None = None) -> None:
        v = self._view
        v.status, v.waiting_for = status, waiting_for
        rows = [f"**{status.value}** — return `{v.rma_id}` of order `{v.order_id}` ({v.reason.value})"]
        if waiting_for:
            rows.append(f"Waiting for: {waiting_for}")
        if v.tracking_number:
            rows.append(f"Return label: {v.carrier} [{v.tracking_number}]({v.tracking_url})")
        if v.replacement_order_id:
            rows.append(f"Replacement order: {v.replacement_order_id}")
        rows.append("Lines: " + describe(v.lines))
        if self._last_note:
            rows.append(f"Latest: {self._last_note}")
        workflow.set_current_details("\n\n".join(rows))

    def _note(self, note: str) -> None:
        """Something worth a line in the Web UI's current details (e.g. a message waiting for its provider)."""
        self._last_note = note
        self._set(self._view.status, waiting_for=self._view.waiting_for)

    async def _alert_ops(self, kind: str, subject: str, body: str, *, occurrence: str | None = None) -> None:
        alert = OpsAlert(order_id=self._input.order_id, kind=kind, subject=subject, body=body, occurrence=occurrence)
        await self._messenger.send(
            NotificationActivities.alert_ops, alert, summary=f"alert ops: {kind}", lanes=[Channel.EMAIL.value]
        )

    async def _set_db(self, status: RmaStatus, note: str, label: ReturnLabel | None = None) -> None:
        await self._steps.run(
            ReturnActivities.set_rma_status,
            RmaStatusChange(
                rma_id=self._input.rma_id,
                status=status,
                note=note,
                carrier=label.carrier if label else None,
                tracking_number=label.tracking_number if label else None,
                label_url=label.label_url if label else None,
            ),
            step=DATABASE,
            summary=f"RMA {status.value}",
        )

    async def _notify(self, event: NotificationEvent, context: dict[str, str]) -> None:
        i = self._input
        channels = [c for c in i.customer.channels if c in (Channel.EMAIL, Channel.SMS)]
        if not channels:
            return
        request = NotifyRequest(
            order_id=i.order_id,
            event=event,
            customer=i.customer,
            channels=channels,
            context={"rma_id": i.rma_id, **context},
            occurrence=i.rma_id,
        )
        await self._messenger.send(
            NotificationActivities.notify_customer,
            request,
            summary=f"notify {event.value}",
            lanes=[c.value for c in channels],
            narrow=on_channels,
        )

    async def _progress(
        self,
        status: RmaStatus,
        note: str,
        *,
        tracking_number: str | None = None,
        refund_cents: int | None = None,
        replacement_order_id: str | None = None,
        waiting_for: str | None = None,
    ) -> None:
        """Tell the order (its status, timeline and search attribute follow). A closed order (terminated by
        ops) is not an error for the return."""
        progress = ReturnProgress(
            rma_id=self._input.rma_id,
            status=status,
            note=note,
            tracking_number=tracking_number,
            refund_cents=refund_cents,
            replacement_order_id=replacement_order_id,
            waiting_for=waiting_for,
        )
        try:
            await workflow.get_external_workflow_handle(self._input.parent_workflow_id).signal(
                "return_progress", progress
            )
        except Exception as err:
            workflow.logger.warning("order %s did not get %s: %s", self._input.order_id, status.value, err)


def _from_cents(cents: int | None) -> Decimal | None:
    return None if cents is None else Decimal(cents) / 100


def _inspected_text(request: ReceiveReturnRequest) -> str:
    return ", ".join(f"{li.sku} x{li.quantity} ({li.condition.value})" for li in request.lines)
