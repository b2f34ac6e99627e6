"""Following one labelled parcel (parcel.py) to the customer: tracking polls, the delivery estimate, a delivery
exception and ops' decision on it.

Infrequent polling: the activity fails while nothing changed and its retry policy is the poll loop, so a parcel
that takes days costs a handful of history events. While a poll is in flight the parcel also watches its
delivery estimate (delay notice when it passes), ops requests before shipping, and an ops decision on a
delivery exception. The stock is committed when the carrier first moves the parcel.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order.fulfilment import Fulfilment, merge
from workflows.order.patches import PARK_FAILURES, REFUND_THROUGH_GATEWAY
from workflows.order.timeline import FORWARD, TRACKING_TO_ORDER
from workflows.steps import DATABASE, PAYMENTS, describe, settle, timed_out

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.returns import ReturnActivities
    from activities.shipping import ShippingActivities
    from common.inventory.contracts import ParcelRef
    from common.models import (
        MOVED_TRACKING_STATUSES,
        SHIPPED_STATUSES,
        DeliveryResolution,
        NotificationEvent,
        OrderStatus,
        ParcelRefundRequest,
        PaymentRefund,
        ResolveDeliveryRequest,
        TrackingPollRequest,
        TrackingStatus,
        TrackingUpdate,
    )

if TYPE_CHECKING:  # for annotations only: parcel.py imports this module
    from workflows.order.parcel import Parcel

_EXCEPTION_STATUSES = frozenset({TrackingStatus.FAILURE, TrackingStatus.RETURN_TO_SENDER})


class ParcelTracking:
    """The tracking loop of one parcel; the state it keeps is the parcel's (so a retry resumes it)."""

    def __init__(self, parcel: Parcel, fulfilment: Fulfilment) -> None:
        self._parcel = parcel
        self._fulfilment = fulfilment
        self._poll: workflow.ActivityHandle[TrackingUpdate] | None = None

    async def follow(self) -> None:
        """Until delivered, or ops decided a delivery exception."""
        parcel = self._parcel
        # One timer for the next deadline, kept across polls while that deadline stays the same.
        alarm = Alarm()
        try:
            while parcel.view.status != OrderStatus.DELIVERED:
                if parcel.pushed:  # the poll in flight goes on: with pushes it is only the safety net
                    await self._apply_pushed()
                    continue
                if self._poll is None:
                    self._poll = self._start_poll()
                in_flight = self._poll
                alarm.set(self._next_wake())
                await workflow.wait_condition(
                    lambda: (
                        in_flight.done()  # noqa: B023 (awaited here)
                        or alarm.rang
                        or self._interrupted()
                        or parcel.seen_by_check is not None
                        or bool(parcel.pushed)
                    )
                )
                if in_flight.done():
                    self._poll = None
                    await self._on_poll_done(in_flight)
                elif alarm.rang:
                    alarm.clear()
                    await self._on_deadline()
                elif parcel.pushed:
                    continue
                elif await self._on_interruption(in_flight):
                    return
            if self._poll is not None:  # delivered by a push: the safety net is not needed any more
                self._poll.cancel()
                await settle(self._poll)
                self._poll = None
        finally:
            alarm.clear()

    async def _on_poll_done(self, poll: workflow.ActivityHandle[TrackingUpdate]) -> None:
        try:
            update = await poll
        except ActivityError as err:
            if not timed_out(err) or not workflow.patched(PARK_FAILURES):
                raise
            await self._went_silent()
            return
        self._parcel.seen_by_check = None
        await self._on_update(update)

    async def _on_deadline(self) -> None:
        """The exception ran out of time for ops, or the delivery estimate passed."""
        deadline = self._parcel.exception_deadline
        if deadline is not None and workflow.now() >= deadline:
            raise ApplicationError("delivery exception not resolved by ops in time", type="DeliveryExceptionTimeout")
        await self._notify_delivery_delay()

    async def _on_interruption(self, poll: workflow.ActivityHandle[TrackingUpdate]) -> bool:
        """A carrier check found the parcel moved (that is the news), or ops: a cancel before shipping (a hold,
        for older orders), a decision on a delivery exception (True: the parcel is done)."""
        parcel = self._parcel
        seen = parcel.seen_by_check is not None
        poll.cancel()
        await settle(poll)
        self._poll = None
        if seen:
            update, parcel.seen_by_check = parcel.seen_by_check, None
            assert update is not None
            await self._on_update(update)
            return False
        if parcel.resolution is not None:
            await self._resolve(parcel.resolution)
            return True
        await self._fulfilment.checkpoint(parcel)
        return False

    async def _apply_pushed(self) -> None:
        parcel = self._parcel
        pushed, parcel.pushed = parcel.pushed, []
        for update in pushed:
            if parcel.view.status == OrderStatus.DELIVERED or parcel.resolution is not None:
                return  # what comes after delivery (or ops' decision) is not the order's news
            await self._on_update(update)

    def _interrupted(self) -> bool:
        parcel, fulfilment = self._parcel, self._fulfilment
        if parcel.view.status in SHIPPED_STATUSES:
            return parcel.resolution is not None
        if fulfilment.asks_the_carrier:  # a hold does not stop following a labelled parcel
            return fulfilment.cancelled(parcel)
        return fulfilment.interrupted(parcel)  # before the carrier has it, ops may still hold or cancel

    def _start_poll(self) -> workflow.ActivityHandle[TrackingUpdate]:
        parcel, policy = self._parcel, self._fulfilment.policy
        assert parcel.label is not None
        label = parcel.label
        # With tracking pushed by the carrier, the poll is the safety net for an event that never came
        poll = timedelta(seconds=policy.tracking_safety_poll_interval_s or policy.tracking_poll_interval_s)
        return workflow.start_activity_method(
            ShippingActivities.await_tracking_change,
            TrackingPollRequest(
                tracking_number=label.tracking_number,
                carrier=label.carrier,
                last_status=parcel.last,
                last_estimate=parcel.estimate,
            ),
            summary=f"wait for tracking to leave {parcel.last.value}",
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(seconds=policy.tracking_timeout_s),
            retry_policy=RetryPolicy(initial_interval=poll, backoff_coefficient=1.0, maximum_interval=poll),
        )

    # ------------------------------------------------------------------------------------------ updates

    async def _on_update(self, update: TrackingUpdate) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        parcel.last = update.status
        if update.estimated_delivery is not None and update.estimated_delivery != parcel.estimate:
            parcel.estimate = parcel.view.estimated_delivery = update.estimated_delivery
            fulfilment.view.estimated_delivery = parcel.estimate
        first_scan = not parcel.committed and update.status in MOVED_TRACKING_STATUSES
        if first_scan:
            await self._first_scan()
        if update.status in _EXCEPTION_STATUSES:
            if parcel.view.status != OrderStatus.DELIVERY_EXCEPTION:
                timeout = timedelta(seconds=fulfilment.policy.delivery_exception_timeout_s)
                parcel.exception_deadline = workflow.now() + timeout
                await self._enter_exception(update)
            return
        target = TRACKING_TO_ORDER.get(update.status)
        if target is None:
            return
        if parcel.view.status == OrderStatus.DELIVERY_EXCEPTION:
            parcel.exception_deadline = None  # the carrier recovered on its own ("failure" is not final)
        elif FORWARD.index(target) <= FORWARD.index(parcel.view.status):
            return  # carrier noise or an out-of-order update: the parcel only moves forward
        await self._moved(target, update, first_scan)

    async def _first_scan(self) -> None:
        """The goods left the building: the stock is committed."""
        parcel, fulfilment = self._parcel, self._fulfilment
        parcel.committed = True
        await fulfilment.step(
            InventoryActivities.commit_shipment,
            ParcelRef(order_id=fulfilment.key, shipment_no=parcel.view.shipment_no),
            DATABASE,
            "commit stock",
        )
        if fulfilment.asks_the_carrier and fulfilment.cancelled(parcel):  # confirmed as the carrier picked it up
            await parcel.escaped_cancel()

    async def _moved(self, target: OrderStatus, update: TrackingUpdate, first_scan: bool) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        parcel.advance(target, update.message or f"carrier reports {update.status.value}")
        context = parcel.tracking_context()
        if first_scan and target != OrderStatus.DELIVERED and fulfilment.asks_the_carrier:
            await fulfilment.notify(NotificationEvent.SHIPPED, context, occurrence=parcel.occurrence)
        if target == OrderStatus.OUT_FOR_DELIVERY:
            await fulfilment.notify(
                NotificationEvent.OUT_FOR_DELIVERY, context, sms_only=True, occurrence=parcel.occurrence
            )
        elif target == OrderStatus.DELIVERED:
            await fulfilment.notify(NotificationEvent.DELIVERED, context, occurrence=parcel.occurrence)

    async def _went_silent(self) -> None:
        """The carrier reported nothing new for the whole tracking timeout: lost in transit, for ops to decide
        (or the carrier recovers it: polling goes on)."""
        parcel, policy = self._parcel, self._fulfilment.policy
        days = policy.tracking_timeout_s / 86400
        update = TrackingUpdate(
            status=TrackingStatus.FAILURE, message=f"no tracking update from the carrier for {days:g} days"
        )
        if parcel.view.status != OrderStatus.DELIVERY_EXCEPTION:
            parcel.exception_deadline = workflow.now() + timedelta(seconds=policy.delivery_exception_timeout_s)
            await self._enter_exception(update)

    # ------------------------------------------------------------------------------------------ late, lost

    def _next_wake(self) -> datetime | None:
        """When the estimate passes (if the customer was not told about this one yet) or the exception times out."""
        parcel = self._parcel
        wakes = []
        estimate = parcel.view.estimated_delivery
        shipped = parcel.view.status in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY)
        if shipped and estimate is not None and estimate != parcel.delay_notified_for:
            wakes.append(estimate + timedelta(seconds=self._fulfilment.policy.delivery_delay_grace_s))
        if parcel.exception_deadline is not None:
            wakes.append(parcel.exception_deadline)
        return min(wakes) if wakes else None

    async def _notify_delivery_delay(self) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        estimate = parcel.view.estimated_delivery
        if estimate is None or estimate == parcel.delay_notified_for:
            return
        if workflow.now() < estimate + timedelta(seconds=fulfilment.policy.delivery_delay_grace_s):
            return
        parcel.delay_notified_for = estimate
        prefix = fulfilment.timeline.parcel_prefix(parcel.view)
        fulfilment.timeline.note(f"{prefix}expected delivery {estimate:%Y-%m-%d %H:%M} UTC passed; customer told")
        n = parcel.view.shipment_no
        occurrence = estimate.isoformat() if n == 1 else f"{n}:{estimate.isoformat()}"
        await fulfilment.notify(
            NotificationEvent.DELIVERY_DELAYED,
            {**parcel.tracking_context(), "estimate": f"{estimate:%Y-%m-%d}"},
            occurrence=occurrence,
        )

    async def _enter_exception(self, update: TrackingUpdate) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        view, order_id = parcel.view, fulfilment.order.order_id
        problem = update.message or update.status.value.replace("_", " ")
        parcel.advance(
            OrderStatus.DELIVERY_EXCEPTION,
            f"carrier reports {update.status.value}: {problem}",
            waiting_for="ops: resolve_delivery_exception (reship or refund)",
        )
        count = sum(e.status == OrderStatus.DELIVERY_EXCEPTION for e in fulfilment.view.timeline)
        occurrence = str(count) if view.shipment_no == 1 else f"{view.shipment_no}:{count}"
        await fulfilment.notify(
            NotificationEvent.DELIVERY_PROBLEM,
            {**parcel.tracking_context(), "problem": problem},
            occurrence=occurrence,
        )
        await fulfilment.alert_ops(
            "delivery_exception",
            f"Delivery exception on order {order_id}",
            f"{view.carrier} {view.tracking_number}: {problem}. Resolve it with `fulfill order "
            f"resolve {order_id} --action reship|refund`.",
            occurrence=occurrence,
        )

    async def _resolve(self, decision: ResolveDeliveryRequest) -> None:
        """Ops decided: refund the parcel, or send its goods again as a new parcel (reserved afresh)."""
        parcel, fulfilment = self._parcel, self._fulfilment
        view = parcel.view
        note = f" ({decision.note})" if decision.note else ""
        if decision.action == DeliveryResolution.RESHIP:
            view.outcome = "reshipped"
            fulfilment.unallocated = merge(fulfilment.unallocated, view.lines)
            parcel.advance(view.status, f"ops: reship{note}; reserving the goods again")
            await fulfilment.notify(NotificationEvent.RESHIPPED, occurrence=parcel.occurrence)
            return
        context: dict[str, str] = {"what": describe(view.lines), "amount": "the amount you paid for it"}
        if workflow.patched(REFUND_THROUGH_GATEWAY):
            refund = await self._refund()
            context["amount"] = refund.amount
            note += f"; refunded {refund.amount} ({refund.refund_id})"
        view.outcome = "refunded"
        await fulfilment.notify(NotificationEvent.REFUND_ISSUED, context, occurrence=parcel.occurrence)
        parcel.advance(OrderStatus.REFUNDED, f"ops: refund{note}")

    async def _refund(self) -> PaymentRefund:
        parcel, fulfilment = self._parcel, self._fulfilment
        order, n = fulfilment.order, parcel.view.shipment_no
        return await fulfilment.step(
            ReturnActivities.refund_shipment,
            ParcelRefundRequest(
                order_id=order.order_id,
                key=fulfilment.key,
                shipment_no=n,
                lines=parcel.view.lines,
                unit_prices=order.unit_prices_cents(),
                payment_reference=order.payment.reference if order.payment else None,
                currency=order.currency,
            ),
            PAYMENTS,
            f"refund shipment {n}",
        )


class Alarm:
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
