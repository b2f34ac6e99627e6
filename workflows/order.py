"""The per-order state machine: one durable workflow carries an order from intake to delivery.

Deterministic code only: time from workflow.now(), no I/O. Every side effect is an activity with a
business idempotency key, so retries, worker crashes and replays never double-reserve, double-buy or
double-send. See DESIGN.md for the states and rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order_returns import OrderReturns

with workflow.unsafe.imports_passed_through():
    # pydantic imports email_validator lazily when it validates an EmailStr: pass it through, or the
    # sandbox re-imports it for every workflow run.
    import email_validator  # noqa: F401

    from activities.inventory import InventoryActivities
    from activities.notifications import NotificationActivities
    from activities.shipping import ShippingActivities
    from activities.warehouse import WarehouseActivities
    from common.models import (
        SHIPPED_STATUSES,
        TERMINAL_STATUSES,
        Address,
        CancelRequest,
        Channel,
        DeliveryResolution,
        HoldRequest,
        Label,
        LabelRequest,
        NotificationEvent,
        NotifyRequest,
        OpsAlert,
        OrderStatus,
        OrderView,
        OrderWorkflowInput,
        PickTaskRequest,
        ReserveRequest,
        ResolveDeliveryRequest,
        TimelineEntry,
        TrackingPollRequest,
        TrackingStatus,
        TrackingUpdate,
    )
    from common.temporal import CARRIER, ORDER_STATUS, PICK_OVERDUE, TRACKING_NUMBER


class ActivityOptions(TypedDict, total=False):
    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy


# Short steps run as local activities: a marker in history instead of three events and a workflow-task round
# trip each, and no task-queue wait before the customer's confirmation goes out. Their side effects are
# idempotent by business key, so re-running one after a crash is safe.
# DB steps: fail fast, retry a bounded number of times, then the order goes to FAILED for ops.
DB_STEP = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=20
    ),
)
# Customer and ops messages: the provider may be down for a while; keep trying for an hour.
MESSAGE_SEND = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=45),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)),
)
# Carrier calls are regular activities (slower, rate-limited by workers): transient failures retry with backoff
# for up to an hour; an address the carrier rejects, or another refusal, is final.
EXTERNAL_CALL = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=["CarrierAddressError", "CarrierRejected"],
    ),
)

# Tracking statuses in the order they happen; the order only moves forward along them.
_TRACKING_TO_ORDER = {
    TrackingStatus.IN_TRANSIT: OrderStatus.IN_TRANSIT,
    TrackingStatus.OUT_FOR_DELIVERY: OrderStatus.OUT_FOR_DELIVERY,
    TrackingStatus.AVAILABLE_FOR_PICKUP: OrderStatus.OUT_FOR_DELIVERY,
    TrackingStatus.DELIVERED: OrderStatus.DELIVERED,
}
_EXCEPTION_STATUSES = frozenset({TrackingStatus.FAILURE, TrackingStatus.RETURN_TO_SENDER})
_FORWARD = [OrderStatus.LABELED, OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED]


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow(OrderReturns):
    @workflow.init
    def __init__(self, input: OrderWorkflowInput) -> None:
        self._order = input.order
        self._policy = input.policy
        self._view = OrderView(
            order_id=input.order.order_id,
            status=OrderStatus.RECEIVED,
            customer_id=input.order.customer.id,
            lines=list(input.order.lines),
            shipping_speed=input.order.shipping_speed,
        )
        # The starter sets OrderStatus=RECEIVED when it starts the workflow: no upsert needed for it.
        self._published_status: OrderStatus | None = OrderStatus.RECEIVED
        self._restocks_seen = 0
        self._confirmed_picks: set[str] = set()
        self._address_updates = 0
        # Ops requests, acted on at the next step boundary (or at once while the order waits).
        self._cancel_reason: str | None = None
        self._hold_reason: str | None = None
        self._label_bought = False
        self._delivery_resolution: ResolveDeliveryRequest | None = None
        self._delay_notified_for: datetime | None = None  # the estimate the customer was last told had slipped
        # Saga: undo steps, registered before the step they undo, run newest first on cancel or failure.
        self._compensations: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    # ------------------------------------------------------------------------------------------ messages

    @workflow.query(description="The order as ops see it: status, timeline, tracking, what it waits for.")
    def status(self) -> OrderView:
        return self._view

    @workflow.signal(description="The warehouse confirmed the pick task with this id (all lines picked and packed).")
    def pick_confirmed(self, task_id: str) -> None:
        self._confirmed_picks.add(task_id)

    @workflow.signal(
        description="Stock arrived for one of this order's SKUs: a backordered order retries its reservation."
    )
    def stock_received(self, sku: str) -> None:
        self._restocks_seen += 1

    @workflow.update(
        description='Cancel the order, e.g. {"reason": "customer changed their mind"}. Releases stock, cancels '
        "the pick task and voids a bought label. Refused once the parcel is with the carrier."
    )
    async def cancel(self, request: CancelRequest) -> OrderView:
        self._cancel_reason = request.reason
        await workflow.wait_condition(lambda: self._view.status in TERMINAL_STATUSES)
        return self._view

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._refuse_if_closed_or_shipped("cancel")
        if self._cancel_reason is not None:
            raise ValueError(f"a cancellation is already under way ({self._cancel_reason})")

    @workflow.update(
        description='Hold the order at its next step, e.g. {"reason": "fraud check"}. It shows ON_HOLD with '
        "the reason until released. Refused once shipped."
    )
    async def hold(self, request: HoldRequest) -> OrderView:
        self._hold_reason = request.reason
        await workflow.wait_condition(
            lambda: self._view.status in (OrderStatus.ON_HOLD, *TERMINAL_STATUSES) or self._hold_reason is None
        )
        return self._view

    @hold.validator
    def _validate_hold(self, request: HoldRequest) -> None:
        self._refuse_if_closed_or_shipped("hold")
        if self._hold_reason is not None:
            raise ValueError(f"the order is already on hold ({self._hold_reason})")

    @workflow.update(description="Release an order on hold: it resumes where it stopped.")
    async def release(self) -> OrderView:
        self._hold_reason = None
        await workflow.wait_condition(lambda: self._view.status != OrderStatus.ON_HOLD)
        return self._view

    @release.validator
    def _validate_release(self) -> None:
        if self._hold_reason is None:
            raise ValueError(f"order {self._order.order_id} is not on hold (it is {self._view.status.value})")

    @workflow.update(
        description="Correct the ship-to address (an Address object: name, line1, line2, city, region, "
        "postal_code, country). Allowed until a label is bought, and while the order is ADDRESS_INVALID."
    )
    async def update_address(self, address: Address) -> OrderView:
        self._order = self._order.model_copy(update={"ship_to": address})
        self._address_updates += 1
        self._note("ship-to address updated by ops")
        return self._view

    @update_address.validator
    def _validate_update_address(self, address: Address) -> None:
        self._refuse_if_closed_or_shipped("change the address of")
        if self._label_bought:
            raise ValueError("a label is already bought for the old address: cancel and place the order again")

    @workflow.update(
        description='Decide a DELIVERY_EXCEPTION: {"action": "refund", "note": "lost"} refunds and closes the order. '
        "Only while the order is in DELIVERY_EXCEPTION."
    )
    async def resolve_delivery_exception(self, request: ResolveDeliveryRequest) -> OrderView:
        self._delivery_resolution = request
        await workflow.wait_condition(lambda: self._view.status != OrderStatus.DELIVERY_EXCEPTION)
        return self._view

    @resolve_delivery_exception.validator
    def _validate_resolution(self, request: ResolveDeliveryRequest) -> None:
        if self._view.status != OrderStatus.DELIVERY_EXCEPTION:
            raise ValueError(
                f"order {self._order.order_id} has no delivery exception to resolve (it is {self._view.status.value})"
            )
        if self._delivery_resolution is not None:
            raise ValueError(f"already being resolved ({self._delivery_resolution.action.value})")
        if request.action == DeliveryResolution.RESHIP:
            raise ValueError("reship is not available yet: refund, then place a new order")

    def _refuse_if_closed_or_shipped(self, action: str) -> None:
        status = self._view.status
        if status in TERMINAL_STATUSES:
            raise ValueError(f"cannot {action} order {self._order.order_id}: it is already {status.value}")
        if status in SHIPPED_STATUSES:
            raise ValueError(f"cannot {action} order {self._order.order_id}: already shipped: request a return")

    # ------------------------------------------------------------------------------------------ main path

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderView:
        self._record(OrderStatus.RECEIVED, self._intake_note(input))
        try:
            await self._notify(NotificationEvent.ORDER_CONFIRMED)
            await self._checkpoint()
            warehouse = await self._reserve()
            await self._checkpoint()
            task_id = await self._pick(warehouse)
            self._record(OrderStatus.PACKED, f"pick task {task_id} confirmed, parcel packed")
            await self._checkpoint()
            label = await self._buy_label(warehouse)
            await self._follow_tracking(label)
            # Delivered, or refunded after a lost parcel: either way the goods have left for good.
            await workflow.execute_local_activity_method(
                InventoryActivities.commit_stock, self._order.order_id, summary="commit stock", **DB_STEP
            )
            self._compensations.clear()
            if self._view.status == OrderStatus.DELIVERED:
                await self._return_window()
            done = "delivered" if self._view.status == OrderStatus.DELIVERED else "refunded"
            self._record(OrderStatus.COMPLETED, f"{done}; stock committed")
            return self._view
        except OrderCancelled as cancelled:
            await self._compensate()
            await self._notify(NotificationEvent.CANCELLED, {"reason": cancelled.reason})
            # Last, so that CANCELLED (which the cancel Update waits for) means everything is done.
            self._record(OrderStatus.CANCELLED, cancelled.reason)
            return self._view
        except (ActivityError, ApplicationError) as err:
            await self._compensate()
            self._record(OrderStatus.FAILED, f"needs ops: {_cause(err)}")
            raise ApplicationError(f"order {self._order.order_id} failed: {_cause(err)}", non_retryable=True) from err

    async def _reserve(self) -> str:
        """Reserve every line in one warehouse; while stock is short, wait BACKORDERED for a restock."""
        order = self._order
        told_customer = False
        give_up_at = workflow.now() + timedelta(seconds=self._policy.backorder_max_wait_s)
        # Registered once, before the first attempt: releasing is idempotent, and it also closes the
        # order's backorder entry when the order is cancelled while waiting for stock.
        self._compensations.append(("release reservation", self._release_stock))
        while True:
            seen = self._restocks_seen
            result = await workflow.execute_local_activity_method(
                InventoryActivities.reserve_stock,
                ReserveRequest(
                    order_id=order.order_id,
                    lines=order.lines,
                    ship_to_country=order.ship_to.country,
                    ship_to_region=order.ship_to.region,
                ),
                summary="reserve stock",
                **DB_STEP,
            )
            if result.reserved and result.warehouse:
                self._view.warehouse = result.warehouse
                self._record(OrderStatus.RESERVED, f"reserved in {result.warehouse}")
                return result.warehouse
            short = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(result.short.items()))
            if self._view.status != OrderStatus.BACKORDERED:
                self._record(OrderStatus.BACKORDERED, f"waiting for stock: {short}", waiting_for="a restock")
            if not told_customer:
                told_customer = True
                await self._notify(NotificationEvent.BACKORDERED, {"short": short})
            if workflow.now() >= give_up_at:
                raise OrderCancelled(f"backordered too long: still short of {short}")
            # A restock signal wakes us; the periodic recheck covers a signal sent before we started waiting.
            recheck = min(give_up_at, workflow.now() + timedelta(seconds=self._policy.backorder_recheck_interval_s))
            await self._wait_until(lambda: self._restocks_seen > seen, recheck)  # noqa: B023 (awaited here)

    async def _pick(self, warehouse: str) -> str:
        order = self._order
        request = PickTaskRequest(order_id=order.order_id, attempt=1, warehouse=warehouse, lines=order.lines)
        self._compensations.append(("cancel pick task", partial(self._cancel_pick, request)))
        task_id = await workflow.execute_local_activity_method(
            WarehouseActivities.create_pick_task, request, summary="create pick task", **DB_STEP
        )
        self._view.pick_task_id = task_id
        self._record(
            OrderStatus.PICKING,
            f"pick task {task_id} in {warehouse}",
            waiting_for=f"pick confirmation of {task_id}",
        )
        await self._await_pick(task_id)
        self._compensations.pop()  # a confirmed pick has nothing to cancel; the reservation still does
        return task_id

    async def _await_pick(self, task_id: str) -> None:
        """Wait for the pick; past the SLA alert ops (PickOverdue), later tell the customer of the delay."""
        started = workflow.now()
        policy = self._policy

        def picked() -> bool:
            return task_id in self._confirmed_picks

        if await self._wait_until(picked, started + timedelta(seconds=policy.pick_escalate_after_s)):
            return
        workflow.upsert_search_attributes([PICK_OVERDUE.value_set(True)])
        self._note(f"pick {task_id} overdue: ops alerted")
        await self._alert_ops(
            "pick_overdue",
            f"Pick {task_id} for order {self._order.order_id} is overdue",
            f"Pick task {task_id} in {self._view.warehouse} was created {started:%Y-%m-%d %H:%M} UTC and is not "
            "confirmed yet. Confirm it with `fulfill warehouse confirm` or put the order on hold.",
        )
        if not await self._wait_until(picked, started + timedelta(seconds=policy.pick_customer_delay_after_s)):
            self._note("customer told of the delay")
            await self._notify(NotificationEvent.PICK_DELAYED)
            await self._wait_until(picked)
        workflow.upsert_search_attributes([PICK_OVERDUE.value_set(False)])

    async def _buy_label(self, warehouse: str) -> Label:
        """Rate-shop and buy; an address the carrier rejects parks the order until ops correct it."""
        while True:
            order = self._order
            request = LabelRequest(
                order_id=order.order_id,
                shipment_no=1,
                warehouse=warehouse,
                ship_to=order.ship_to,
                lines=order.lines,
                speed=order.shipping_speed,
            )
            self._compensations.append(("void label", partial(self._void_label, request)))
            try:
                label = await workflow.execute_activity_method(
                    ShippingActivities.buy_label, request, summary="rate-shop and buy label", **EXTERNAL_CALL
                )
                break
            except ActivityError as err:
                if _error_type(err) != "CarrierAddressError":
                    raise  # keep "void label": the carrier may have sold one before the failure (voiding is safe)
                self._compensations.pop()  # the carrier refused the address: nothing was bought
                resume_at = self._view.status
                self._record(
                    OrderStatus.ADDRESS_INVALID,
                    f"carrier rejected the address: {_cause(err)}",
                    waiting_for="ops to send update_address",
                )
                await self._notify(NotificationEvent.ADDRESS_PROBLEM)
                seen = self._address_updates
                await self._wait_until(lambda: self._address_updates > seen)  # noqa: B023 (awaited here)
                self._record(resume_at, "address corrected; buying the label again")
        self._label_bought = True
        view = self._view
        view.carrier, view.service = label.carrier, label.service
        view.tracking_number, view.tracking_url = label.tracking_number, label.tracking_url
        self._record(
            OrderStatus.LABELED,
            f"{label.carrier} {label.service} label, tracking {label.tracking_number}",
            also=[CARRIER.value_set(label.carrier), TRACKING_NUMBER.value_set(label.tracking_number)],
        )
        await self._notify(NotificationEvent.SHIPPED, self._tracking_context())
        return label

    async def _follow_tracking(self, label: Label) -> None:
        """Infrequent polling: the activity fails while nothing changed and its retry policy is the poll loop,
        so a parcel that takes days costs a handful of history events. While a poll is in flight the order
        also watches the delivery estimate (delay notice when it passes), ops requests before shipping, and
        an ops decision on a delivery exception."""
        last, estimate = TrackingStatus.PRE_TRANSIT, None
        poll: workflow.ActivityHandle[TrackingUpdate] | None = None
        exception_deadline: datetime | None = None
        # One timer for the next deadline, kept across polls while that deadline stays the same.
        alarm = _Alarm()
        try:
            while self._view.status != OrderStatus.DELIVERED:
                if poll is None:
                    poll = self._start_tracking_poll(label, last, estimate)
                in_flight = poll
                alarm.set(self._next_wake(exception_deadline))
                await workflow.wait_condition(
                    lambda: in_flight.done() or alarm.rang or self._tracking_interrupted()  # noqa: B023
                )
                if not poll.done() and alarm.rang:
                    alarm.clear()
                    if exception_deadline is not None and workflow.now() >= exception_deadline:
                        raise ApplicationError(
                            "delivery exception not resolved by ops in time", type="DeliveryExceptionTimeout"
                        )
                    await self._notify_delivery_delay()
                    continue
                if not poll.done():  # ops: a hold or cancel before shipping, or a delivery exception decision
                    poll.cancel()
                    await _settle(poll)
                    poll = None
                    if self._delivery_resolution is not None:
                        await self._resolve_delivery_exception(self._delivery_resolution)
                        return
                    await self._checkpoint()
                    continue
                update = await poll
                poll = None
                last = update.status
                if update.estimated_delivery is not None and update.estimated_delivery != estimate:
                    estimate = self._view.estimated_delivery = update.estimated_delivery
                if update.status in _EXCEPTION_STATUSES:
                    if self._view.status != OrderStatus.DELIVERY_EXCEPTION:
                        timeout = timedelta(seconds=self._policy.delivery_exception_timeout_s)
                        exception_deadline = workflow.now() + timeout
                        await self._enter_delivery_exception(update)
                    continue
                target = _TRACKING_TO_ORDER.get(update.status)
                if target is None:
                    continue
                if self._view.status == OrderStatus.DELIVERY_EXCEPTION:
                    exception_deadline = None  # the carrier recovered on its own ("failure" is not final)
                elif _FORWARD.index(target) <= _FORWARD.index(self._view.status):
                    continue  # carrier noise or an out-of-order update: the order only moves forward
                self._record(target, update.message or f"carrier reports {update.status.value}")
                if target == OrderStatus.OUT_FOR_DELIVERY:
                    await self._notify(NotificationEvent.OUT_FOR_DELIVERY, self._tracking_context(), sms_only=True)
                elif target == OrderStatus.DELIVERED:
                    await self._notify(NotificationEvent.DELIVERED, self._tracking_context())
        finally:
            alarm.clear()

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

    def _tracking_interrupted(self) -> bool:
        if self._view.status in SHIPPED_STATUSES:
            return self._delivery_resolution is not None
        return self._interrupted()  # before the carrier has it, ops may still hold or cancel

    def _next_wake(self, exception_deadline: datetime | None) -> datetime | None:
        """When the estimate passes (if the customer was not told about this one yet) or the exception times out."""
        wakes = []
        estimate = self._view.estimated_delivery
        shipped = self._view.status in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY)
        if shipped and estimate is not None and estimate != self._delay_notified_for:
            wakes.append(estimate + timedelta(seconds=self._policy.delivery_delay_grace_s))
        if exception_deadline is not None:
            wakes.append(exception_deadline)
        return min(wakes) if wakes else None

    async def _notify_delivery_delay(self) -> None:
        estimate = self._view.estimated_delivery
        late_from = estimate + timedelta(seconds=self._policy.delivery_delay_grace_s) if estimate else None
        if estimate is None or late_from is None or estimate == self._delay_notified_for or workflow.now() < late_from:
            return
        self._delay_notified_for = estimate
        self._note(f"expected delivery {estimate:%Y-%m-%d %H:%M} UTC passed; customer told")
        await self._notify(
            NotificationEvent.DELIVERY_DELAYED,
            {**self._tracking_context(), "estimate": f"{estimate:%Y-%m-%d}"},
            occurrence=estimate.isoformat(),
        )

    async def _enter_delivery_exception(self, update: TrackingUpdate) -> None:
        problem = update.message or update.status.value.replace("_", " ")
        self._record(
            OrderStatus.DELIVERY_EXCEPTION,
            f"carrier reports {update.status.value}: {problem}",
            waiting_for="ops: resolve_delivery_exception (reship or refund)",
        )
        occurrence = str(sum(e.status == OrderStatus.DELIVERY_EXCEPTION for e in self._view.timeline))
        await self._notify(
            NotificationEvent.DELIVERY_PROBLEM, {**self._tracking_context(), "problem": problem}, occurrence=occurrence
        )
        await self._alert_ops(
            "delivery_exception",
            f"Delivery exception on order {self._order.order_id}",
            f"{self._view.carrier} {self._view.tracking_number}: {problem}. Resolve it with `fulfill order "
            f"resolve {self._order.order_id} --action reship|refund`.",
            occurrence=occurrence,
        )

    async def _resolve_delivery_exception(self, decision: ResolveDeliveryRequest) -> None:
        """Ops decided (the validator admits only what is implemented): refund and close."""
        note = f" ({decision.note})" if decision.note else ""
        await self._notify(NotificationEvent.REFUND_ISSUED)
        self._record(OrderStatus.REFUNDED, f"ops: refund and close{note}")

    # ------------------------------------------------------------------------------------------ ops requests

    def _interrupted(self) -> bool:
        return self._cancel_reason is not None or self._hold_reason is not None

    async def _checkpoint(self) -> None:
        """Step boundary: act on a pending cancel (raise) or hold (wait here until released)."""
        if self._cancel_reason is not None:
            raise OrderCancelled(f"cancelled: {self._cancel_reason}")
        if self._hold_reason is None:
            return
        resume_status, resume_waiting = self._view.status, self._view.waiting_for
        self._record(OrderStatus.ON_HOLD, f"on hold: {self._hold_reason}", waiting_for="release by ops")
        await workflow.wait_condition(lambda: self._hold_reason is None or self._cancel_reason is not None)
        if self._cancel_reason is not None:
            raise OrderCancelled(f"cancelled: {self._cancel_reason}")
        self._record(resume_status, "released from hold; resuming", waiting_for=resume_waiting)

    async def _wait_until(self, condition: Callable[[], bool], deadline: datetime | None = None) -> bool:
        """Wait for `condition` (True) or the deadline (False), honouring holds and cancels meanwhile."""
        while not condition():
            timeout = None
            if deadline is not None:
                timeout = deadline - workflow.now()
                if timeout <= timedelta(0):
                    return False
            try:
                await workflow.wait_condition(lambda: condition() or self._interrupted(), timeout=timeout)
            except TimeoutError:
                return False
            if not condition():
                await self._checkpoint()
        return True

    # ------------------------------------------------------------------------------------------ helpers

    def _record(
        self,
        status: OrderStatus,
        note: str,
        *,
        waiting_for: str | None = None,
        also: Sequence[SearchAttributeUpdate[Any]] = (),
    ) -> None:
        """One transition: timeline entry, OrderStatus search attribute (with `also`, in the same history event),
        current details for the UI."""
        view = self._view
        view.status = status
        view.waiting_for = waiting_for
        view.timeline.append(TimelineEntry(at=workflow.now(), status=status, note=note))
        updates = list(also)
        if self._published_status != status:
            updates.append(ORDER_STATUS.value_set(status.value))
            self._published_status = status
        if updates:
            workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details_markdown())

    def _note(self, note: str) -> None:
        """A timeline entry without a change of status."""
        self._view.timeline.append(TimelineEntry(at=workflow.now(), status=self._view.status, note=note))
        workflow.set_current_details(self._details_markdown())

    def _details_markdown(self) -> str:
        v = self._view
        rows = [f"**{v.status.value}** — order `{v.order_id}`"]
        if v.waiting_for:
            rows.append(f"Waiting for: {v.waiting_for}")
        if v.warehouse:
            rows.append(f"Warehouse: {v.warehouse}")
        if v.tracking_number:
            rows.append(f"Tracking: {v.carrier} [{v.tracking_number}]({v.tracking_url})")
        rows.append("")
        rows += [f"- {e.at:%Y-%m-%d %H:%M:%S} {e.status.value}: {e.note}" for e in v.timeline[-10:]]
        return "\n".join(rows)

    def _tracking_context(self) -> dict[str, str]:
        v = self._view
        return {
            "carrier": v.carrier or "",
            "service": v.service or "",
            "tracking_number": v.tracking_number or "",
            "tracking_url": v.tracking_url or "",
        }

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
        await workflow.execute_local_activity_method(
            NotificationActivities.notify_customer,
            NotifyRequest(
                order_id=self._order.order_id,
                event=event,
                customer=self._order.customer,
                channels=channels,
                context=context or {},
                occurrence=occurrence,
            ),
            summary=f"notify {event.value}",
            **MESSAGE_SEND,
        )

    async def _alert_ops(self, kind: str, subject: str, body: str, *, occurrence: str | None = None) -> None:
        alert = OpsAlert(order_id=self._order.order_id, kind=kind, subject=subject, body=body, occurrence=occurrence)
        await workflow.execute_local_activity_method(
            NotificationActivities.alert_ops, alert, summary=f"alert ops: {kind}", **MESSAGE_SEND
        )

    async def _release_stock(self) -> object:
        return await workflow.execute_local_activity_method(
            InventoryActivities.release_stock, self._order.order_id, summary="release reservation", **DB_STEP
        )

    async def _cancel_pick(self, request: PickTaskRequest) -> object:
        return await workflow.execute_local_activity_method(
            WarehouseActivities.cancel_pick_tasks, request.order_id, summary="cancel pick task", **DB_STEP
        )

    async def _void_label(self, request: LabelRequest) -> object:
        return await workflow.execute_activity_method(
            ShippingActivities.void_label, request, summary="void label", **EXTERNAL_CALL
        )

    async def _compensate(self) -> None:
        """Undo what was done, newest first, shielded from cancellation; each undo step is idempotent."""
        for name, undo in reversed(self._compensations):
            try:
                await asyncio.shield(asyncio.ensure_future(undo()))
                self._view.timeline.append(
                    TimelineEntry(at=workflow.now(), status=self._view.status, note=f"compensated: {name}")
                )
            except (ActivityError, ApplicationError) as undo_err:
                workflow.logger.error("compensation %s failed: %s", name, undo_err)
                self._view.timeline.append(
                    TimelineEntry(at=workflow.now(), status=self._view.status, note=f"FAILED to {name}")
                )
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
    """Control flow inside the workflow only: unwinds the main path to run compensations."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _settle(task: Awaitable[object]) -> None:
    """Wait for a cancelled activity to finish cancelling (its outcome no longer matters)."""
    try:
        await task
    except (ActivityError, asyncio.CancelledError):
        pass


def _error_type(err: BaseException) -> str | None:
    cause = err.__cause__
    return cause.type if isinstance(cause, ApplicationError) else None


def _cause(err: BaseException) -> str:
    """The innermost message: an ActivityError wraps the ApplicationError that says what went wrong."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)
