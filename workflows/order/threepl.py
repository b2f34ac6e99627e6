"""A parcel from a 3PL's warehouse (parcel.py hands it here instead of picking it and buying a label): submitted
to the 3PL, accepted (or rejected: its lines go back to allocation, never to that warehouse again), shipped with
the 3PL's carrier and tracking number, after which ParcelTracking follows it like any other parcel.

The 3PL's news comes as the `threepl_update` signal (its webhooks, through the order-signal outbox, and the
reconciliation relay) and from an infrequent poll, the safety net, in flight while the parcel waits: the same
pattern as tracking. News only moves the parcel forward, so a lost, repeated or late webhook ends the same.
Past the acceptance or ship SLA ops are alerted and the order shows ThreePLLate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.order.fulfilment import Fulfilment, merge
from workflows.order.tracking import Alarm
from workflows.steps import CARRIER, DATABASE, THREEPL, describe, settle

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.threepl import ThreePLActivities
    from common.inventory.contracts import ParcelRef
    from common.models import Label, NotificationEvent, OrderStatus, TrackingStatus, TrackingUpdate
    from common.temporal import CARRIER as CARRIER_ATTR
    from common.temporal import THREEPL_LATE, TRACKING_NUMBER
    from common.threepl.contracts import (
        ThreePLCancelRequest,
        ThreePLPollRequest,
        ThreePLState,
        ThreePLSubmission,
        ThreePLUpdate,
        moves_forward,
        reference_id,
    )

if TYPE_CHECKING:  # for annotations only: parcel.py imports this module
    from workflows.order.parcel import Parcel

_GONE = frozenset({ThreePLState.REJECTED, ThreePLState.CANCELLED})
_LEFT = frozenset({ThreePLState.SHIPPED, ThreePLState.DELIVERED})
# States in which the 3PL may still be asked not to ship the parcel
OPEN_STATES = frozenset({ThreePLState.SUBMITTED, ThreePLState.ACCEPTED, ThreePLState.ON_HOLD})


class AtThreePL:
    """One parcel's time at its 3PL; what it knows is kept on the parcel (so a retry by ops resumes it)."""

    def __init__(self, parcel: Parcel, fulfilment: Fulfilment) -> None:
        assert parcel.provider is not None
        self._parcel = parcel
        self._fulfilment = fulfilment
        self.provider = parcel.provider
        self.reference = reference_id(fulfilment.key, parcel.view.shipment_no)
        self._poll: workflow.ActivityHandle[ThreePLUpdate] | None = None

    async def ship(self) -> Label | None:
        """Until the 3PL ships the parcel (its label: the 3PL's carrier and tracking number), or None when the
        3PL rejected or cancelled it (its lines wait for a parcel again)."""
        parcel, fulfilment = self._parcel, self._fulfilment
        if parcel.threepl_state is None:
            await fulfilment.checkpoint(parcel)
            await self._submit()
        alarm = Alarm()
        try:
            while True:
                if parcel.threepl_news:
                    outcome = await self._apply_news()
                    if outcome is not None:
                        return outcome if outcome is not False else None
                    continue
                if self._poll is None:
                    self._poll = self._start_poll()
                in_flight = self._poll
                alarm.set(self._sla_deadline())
                await workflow.wait_condition(
                    lambda: (
                        in_flight.done()  # noqa: B023 (awaited here)
                        or alarm.rang
                        or bool(parcel.threepl_news)
                        or fulfilment.interrupted(parcel)
                    )
                )
                if in_flight.done():
                    self._poll = None
                    parcel.threepl_news.append(await in_flight)
                elif alarm.rang:
                    alarm.clear()
                    await self._late()
                elif not parcel.threepl_news:
                    await self._stop_poll()
                    await fulfilment.checkpoint(parcel)  # a cancel raises here: parcel.py asks the 3PL
        finally:
            alarm.clear()
            await self._stop_poll()

    async def cancel(self) -> bool:
        """Ask the 3PL not to ship the parcel: True if it will not (its stock can be released), False if it
        left already (the news says with which carrier: the parcel goes on)."""
        parcel, fulfilment = self._parcel, self._fulfilment
        if parcel.threepl_state in _GONE:
            return True
        if parcel.threepl_state in _LEFT:
            return False
        request = ThreePLCancelRequest(
            provider=self.provider, reference_id=self.reference, shipment_no=parcel.view.shipment_no
        )
        answer = await fulfilment.step(
            ThreePLActivities.cancel_at_3pl, request, THREEPL, f"ask {self.provider} to cancel it"
        )
        prefix = fulfilment.timeline.parcel_prefix(parcel.view)
        if answer.accepted:
            self._set_state(ThreePLState.CANCELLED)
            fulfilment.timeline.note(f"{prefix}{self.provider} cancelled it")
            self._clear_late()
            return True
        fulfilment.timeline.note(f"{prefix}{self.provider} refused to cancel it: {answer.reason or 'it shipped'}")
        if answer.update is not None:
            parcel.threepl_news.append(answer.update)
        return False

    async def check(self) -> ThreePLUpdate:
        """Where the parcel is at the 3PL now (one call): asked before a cancel is accepted."""
        request = self._poll_request()
        return await self._fulfilment.step(
            ThreePLActivities.check_at_3pl, request, THREEPL, f"ask {self.provider} where it is"
        )

    # ------------------------------------------------------------------------------------------ hand over

    async def _submit(self) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        order, view = fulfilment.order, parcel.view
        submission = ThreePLSubmission(
            order_id=fulfilment.key,
            order_number=order.order_id,
            shipment_no=view.shipment_no,
            warehouse=view.warehouse,
            provider=self.provider,
            lines=view.lines,
            ship_to=order.ship_to,
            email=order.customer.email,
            phone=order.customer.phone,
            speed=order.shipping_speed,
        )
        parcel.submitting = True
        try:
            answer = await fulfilment.step(
                ThreePLActivities.submit_to_3pl, submission, THREEPL, f"submit to {self.provider}"
            )
        finally:
            parcel.submitting = False
        parcel.submitted_at = workflow.now()
        view.fulfilled_by = self.provider
        self._set_state(ThreePLState.SUBMITTED)
        parcel.advance(
            OrderStatus.SUBMITTED_TO_3PL,
            f"submitted to {self.provider} as {self.reference}",
            waiting_for=f"{self.provider} to accept it",
        )
        parcel.threepl_news.append(answer)

    def _poll_request(self) -> ThreePLPollRequest:
        state = self._parcel.threepl_state or ThreePLState.SUBMITTED
        return ThreePLPollRequest(
            provider=self.provider,
            reference_id=self.reference,
            shipment_no=self._parcel.view.shipment_no,
            last_state=state,
        )

    def _start_poll(self) -> workflow.ActivityHandle[ThreePLUpdate]:
        interval = timedelta(seconds=self._fulfilment.policy.threepl_poll_interval_s)
        return workflow.start_activity_method(
            ThreePLActivities.await_3pl_change,
            self._poll_request(),
            summary=f"wait for {self.provider} to move it on from {self._poll_request().last_state.value}",
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(
                initial_interval=interval,
                backoff_coefficient=1.0,
                maximum_interval=interval,
                non_retryable_error_types=list(THREEPL.non_retryable),
            ),
        )

    async def _stop_poll(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            await settle(self._poll)
            self._poll = None

    # ------------------------------------------------------------------------------------------ news

    async def _apply_news(self) -> Label | Literal[False] | None:
        """Apply the news in order; a Label once shipped, False once rejected or cancelled, None to wait on."""
        parcel = self._parcel
        news, parcel.threepl_news = parcel.threepl_news, []
        for update in news:
            state = parcel.threepl_state or ThreePLState.SUBMITTED
            if not moves_forward(state, parcel.threepl_changed_at, update):
                continue
            if update.changed_at is not None:
                parcel.threepl_changed_at = update.changed_at
            if update.state in _LEFT:
                return await self._shipped(update, any(u.state == ThreePLState.DELIVERED for u in news))
            if update.state in _GONE:
                await self._rejected(update)
                return False
            await self._moved(update)
        return None

    async def _moved(self, update: ThreePLUpdate) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        self._set_state(update.state)
        if update.state == ThreePLState.ACCEPTED:
            if parcel.accepted_at is None:
                parcel.accepted_at = workflow.now()
            if parcel.late_for == "accept":
                self._clear_late()
            parcel.advance(
                OrderStatus.ACCEPTED_BY_3PL,
                f"{self.provider} accepted it",
                waiting_for=f"{self.provider} to ship it",
            )
        elif update.state == ThreePLState.ON_HOLD:
            if parcel.accepted_at is None:
                parcel.accepted_at = workflow.now()
            reason = update.reason or "no reason given"
            parcel.advance(
                OrderStatus.ACCEPTED_BY_3PL,
                f"{self.provider} holds it: {reason}",
                waiting_for=f"{self.provider} to release its hold",
            )
            parcel.holds_at_3pl += 1
            await fulfilment.alert_ops(
                "threepl_on_hold",
                f"{self.provider} holds a parcel of order {fulfilment.order.order_id}",
                f"{self.provider} put {self.reference} on hold: {reason}. Release it in {self.provider}'s "
                "dashboard, or cancel the order.",
                occurrence=f"{parcel.view.shipment_no}:{parcel.holds_at_3pl}",
            )

    async def _shipped(self, update: ThreePLUpdate, delivered: bool) -> Label:
        """The goods left the 3PL: the stock is committed, the carrier follows the tracking number, the customer
        hears "shipped" as for our own parcels."""
        parcel, fulfilment = self._parcel, self._fulfilment
        view = parcel.view
        self._set_state(ThreePLState.SHIPPED)
        self._clear_late()
        if not parcel.committed:
            parcel.committed = True
            ref = ParcelRef(order_id=fulfilment.key, shipment_no=view.shipment_no)
            await fulfilment.step(InventoryActivities.commit_shipment, ref, DATABASE, "commit stock")
        label = Label(
            shipment_key=self.reference,
            carrier=update.carrier or "",
            service=update.service or "",
            rate_cents=0,  # the 3PL bills its shipping itself
            tracking_number=update.tracking_number or "",
            label_url="",
            tracking_url=update.tracking_url or "",
            carrier_shipment_id="",
        )
        view.carrier, view.service = label.carrier, label.service
        view.tracking_number, view.tracking_url = label.tracking_number, label.tracking_url
        await fulfilment.step(ThreePLActivities.track_3pl_parcel, update, CARRIER, "follow the 3PL's tracking")
        fulfilment.advance(
            view,
            OrderStatus.IN_TRANSIT,
            f"{self.provider} shipped it: {label.carrier} {label.service}, tracking {label.tracking_number}",
            also=[CARRIER_ATTR.value_set(label.carrier), TRACKING_NUMBER.value_set(label.tracking_number)],
        )
        parcel.last = TrackingStatus.IN_TRANSIT
        if fulfilment.cancelled(parcel):  # the cancel was accepted as the 3PL shipped it
            await parcel.escaped_cancel()
        await fulfilment.notify(NotificationEvent.SHIPPED, parcel.tracking_context(), occurrence=parcel.occurrence)
        if delivered:  # the carrier's tracking may say so later, or never: the 3PL's word is news enough
            parcel.pushed.append(delivered_by_the_3pl(self.provider))
        return label

    async def _rejected(self, update: ThreePLUpdate) -> None:
        """The 3PL will not ship it: its reservation is released and its lines are reserved again, from any
        warehouse but this one, or wait for stock."""
        parcel, fulfilment = self._parcel, self._fulfilment
        view = parcel.view
        self._set_state(update.state)
        self._clear_late()
        reason = update.reason or ("cancelled by the 3PL" if update.state == ThreePLState.CANCELLED else "no reason")
        ref = ParcelRef(order_id=fulfilment.key, shipment_no=view.shipment_no)
        await fulfilment.step(InventoryActivities.release_shipment, ref, DATABASE, "release reservation")
        fulfilment.excluded_warehouses.add(view.warehouse)
        fulfilment.unallocated = merge(fulfilment.unallocated, view.lines)
        view.outcome = f"rejected by {self.provider}: {reason}"
        parcel.advance(
            OrderStatus.CANCELLED,
            f"{self.provider} rejected it ({reason}); reserving {describe(view.lines)} elsewhere",
        )
        await fulfilment.alert_ops(
            "threepl_rejected",
            f"{self.provider} rejected a parcel of order {fulfilment.order.order_id}",
            f"{self.provider} will not ship {self.reference} ({describe(view.lines)}): {reason}. The order reserves "
            f"those goods elsewhere or waits for stock; check {view.warehouse}'s stock figures.",
            occurrence=str(view.shipment_no),
        )

    # ------------------------------------------------------------------------------------------ SLAs

    def _sla_deadline(self) -> datetime | None:
        parcel, policy = self._parcel, self._fulfilment.policy
        if parcel.late_for is not None or parcel.submitted_at is None:
            return None
        if parcel.threepl_state == ThreePLState.SUBMITTED:
            return parcel.submitted_at + timedelta(seconds=policy.threepl_accept_sla_s)
        if parcel.threepl_state in (ThreePLState.ACCEPTED, ThreePLState.ON_HOLD) and parcel.accepted_at is not None:
            return parcel.accepted_at + timedelta(seconds=policy.threepl_ship_sla_s)
        return None

    async def _late(self) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        what = "accept" if parcel.threepl_state == ThreePLState.SUBMITTED else "ship"
        parcel.late_for = what
        parcel.view.late_at_3pl = True
        fulfilment.late_at_3pl += 1
        if fulfilment.late_at_3pl == 1:
            fulfilment.timeline.stage([THREEPL_LATE.value_set(True)])
        hours = (
            fulfilment.policy.threepl_accept_sla_s if what == "accept" else fulfilment.policy.threepl_ship_sla_s
        ) / 3600
        fulfilment.timeline.note(
            f"{fulfilment.timeline.parcel_prefix(parcel.view)}{self.provider} did not {what} it within "
            f"{hours:g} h: ops alerted"
        )
        await fulfilment.alert_ops(
            "threepl_late",
            f"{self.provider} is late with order {fulfilment.order.order_id}",
            f"{self.provider} did not {what} {self.reference} within its SLA of {hours:g} h. Ask {self.provider}, "
            "or cancel the order.",
            occurrence=f"{parcel.view.shipment_no}:{what}",
        )

    def _clear_late(self) -> None:
        parcel, fulfilment = self._parcel, self._fulfilment
        if parcel.late_for is None:
            return
        parcel.late_for = None
        parcel.view.late_at_3pl = False
        fulfilment.late_at_3pl -= 1
        if fulfilment.late_at_3pl == 0:
            fulfilment.timeline.stage([THREEPL_LATE.value_set(False)])

    def _set_state(self, state: ThreePLState) -> None:
        self._parcel.threepl_state = state
        self._parcel.view.threepl_state = state.value


def delivered_by_the_3pl(provider: str) -> TrackingUpdate:
    """The 3PL reports the parcel delivered: tracking news like the carrier's own."""
    return TrackingUpdate(status=TrackingStatus.DELIVERED, message=f"{provider} reports it delivered")
