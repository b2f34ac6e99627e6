"""What ops see of an order: its status and timeline, what it waits for, the Web UI's current details and the
search attributes (OrderStatus, WaitingFor, PickOverdue, Carrier, TrackingNumber) that lists filter on.

The order's status sums up its parts: a problem first, then waiting for stock, then the least advanced parcel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows.steps import Messenger, StepRunner, describe
from workflows.visibility import SearchAttributeBatch

with workflow.unsafe.imports_passed_through():
    from common import metrics
    from common.models import (
        OrderStatus,
        OrderUpdateResult,
        OrderView,
        ParcelView,
        TimelineEntry,
        TrackingStatus,
    )
    from common.temporal import ORDER_STATUS, WAITING_FOR

# Tracking statuses in the order they happen; the order only moves forward along them.
TRACKING_TO_ORDER = {
    TrackingStatus.IN_TRANSIT: OrderStatus.IN_TRANSIT,
    TrackingStatus.OUT_FOR_DELIVERY: OrderStatus.OUT_FOR_DELIVERY,
    TrackingStatus.AVAILABLE_FOR_PICKUP: OrderStatus.OUT_FOR_DELIVERY,
    TrackingStatus.DELIVERED: OrderStatus.DELIVERED,
}
FORWARD = [OrderStatus.LABELED, OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED]
# The order shows one of these once its parcels are with the carrier (a fast one may skip straight to DELIVERED).
_SHIPPED = {OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED}
# A parcel's way through the warehouse and the carrier; the order shows its least advanced parcel.
_PROGRESS = [
    OrderStatus.RESERVED,
    OrderStatus.PICKING,
    OrderStatus.SUBMITTED_TO_3PL,
    OrderStatus.ACCEPTED_BY_3PL,
    OrderStatus.PACKED,
    OrderStatus.ADDRESS_INVALID,
    *FORWARD,
]


class Timeline:
    """The order's view (the `status` query's answer) and every change to what ops see of it."""

    def __init__(self, view: OrderView) -> None:
        self.view = view
        # The starter sets OrderStatus=RECEIVED when it starts the workflow: no upsert needed for it.
        self._published_status: OrderStatus | None = OrderStatus.RECEIVED
        self.visibility = SearchAttributeBatch()
        self._waiting_base: str | None = None
        self._steps: StepRunner | None = None
        self._messenger: Messenger | None = None

    def watch(self, steps: StepRunner, messenger: Messenger) -> None:
        """Show the outages the order's steps wait out and the messages waiting to go out (see show_waits)."""
        self._steps, self._messenger = steps, messenger

    def record(
        self,
        status: OrderStatus,
        note: str,
        *,
        waiting_for: str | None = None,
        also: Sequence[SearchAttributeUpdate[Any]] = (),
    ) -> None:
        """One transition: timeline entry, OrderStatus search attribute (with `also`, in the same history event),
        current details for the UI."""
        view = self.view
        seen = {entry.status for entry in view.timeline}
        view.status = status
        self._waiting_base = waiting_for
        view.waiting_for = self._compose_waiting_for()
        view.timeline.append(TimelineEntry(at=workflow.now(), status=status, note=note))
        updates = list(also)
        if self._published_status != status:
            updates.append(ORDER_STATUS.value_set(status.value))
            self._published_status = status
        self.visibility.stage(updates)
        workflow.set_current_details(self._details_markdown())
        if status not in seen:
            self._measure(status, seen)

    def failed(self, reason: str) -> None:
        """The order closes FAILED; `reason` a kind (an error type, "gave_up"), never an error's text."""
        metrics.count(workflow.metric_meter(), metrics.ORDERS_FAILED, reason=reason)

    def _measure(self, status: OrderStatus, seen: set[OrderStatus]) -> None:
        """The business metrics of an order's first entry into `status` (the meter drops what a replay records,
        and an order re-entering a status, e.g. DELIVERED after a return, counts once)."""
        meter, view, now = workflow.metric_meter(), self.view, workflow.now()
        placed_at = view.timeline[0].at
        if status == OrderStatus.RECEIVED:
            metrics.count(meter, metrics.ORDERS_PLACED)
        elif status == OrderStatus.BACKORDERED:
            metrics.count(meter, metrics.BACKORDERS)
        if status in _SHIPPED and not seen & _SHIPPED:
            metrics.count(meter, metrics.ORDERS_SHIPPED)
            metrics.observe_duration(meter, metrics.PLACE_TO_SHIP_SECONDS, now - placed_at)
        if status == OrderStatus.DELIVERED:
            metrics.count(meter, metrics.ORDERS_DELIVERED)
            metrics.observe_duration(meter, metrics.PLACE_TO_DELIVERY_SECONDS, now - placed_at)
            on_time = view.promised_delivery is None or now.date() <= view.promised_delivery
            metrics.count(meter, metrics.DELIVERIES, outcome="on_time" if on_time else "late")
        elif status == OrderStatus.CANCELLED:
            metrics.count(meter, metrics.ORDERS_CANCELLED)

    def note(self, note: str) -> None:
        """A timeline entry without a change of status."""
        self.view.timeline.append(TimelineEntry(at=workflow.now(), status=self.view.status, note=note))
        workflow.set_current_details(self._details_markdown())

    def stage(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
        """Search attributes that change without a transition (with the next batch)."""
        self.visibility.stage(updates)

    def move(self, parcel: ParcelView, status: OrderStatus) -> None:
        """A parcel moved: its status, and the order's fields that show the latest parcel."""
        parcel.status = status
        view = self.view
        view.warehouse, view.pick_task_id = parcel.warehouse, parcel.pick_task_id
        if parcel.tracking_number:
            view.carrier, view.service = parcel.carrier, parcel.service
            view.tracking_number, view.tracking_url = parcel.tracking_number, parcel.tracking_url

    def parcel_prefix(self, parcel: ParcelView) -> str:
        """Notes about one parcel name it once the order has more than one."""
        return f"shipment {parcel.shipment_no}: " if len(self.view.shipments) > 1 else ""

    def status_of_parts(self, *, failed: bool, backordered: bool) -> OrderStatus:
        """The order's status from its parts: a problem first, then waiting for stock, then the least advanced
        parcel still going; DELIVERED once all are."""
        if failed:
            return OrderStatus.FAILED
        going = [p for p in self.view.shipments if p.outcome is None]
        statuses = {p.status for p in going}
        for problem in (OrderStatus.DELIVERY_EXCEPTION, OrderStatus.ADDRESS_INVALID):
            if problem in statuses:
                return problem
        if backordered:
            return OrderStatus.BACKORDERED
        progress = [p.status for p in going if p.status in _PROGRESS]
        if progress:
            return min(progress, key=_PROGRESS.index)
        if any(p.status == OrderStatus.REFUNDED for p in self.view.shipments):
            return OrderStatus.REFUNDED
        return self.view.status

    def waiting_for_parts(self, *, backordered: bool) -> str | None:
        if backordered:
            return "a restock"
        picking = [p.pick_task_id for p in self.view.shipments if p.status == OrderStatus.PICKING and p.outcome is None]
        return f"pick confirmation of {', '.join(str(t) for t in picking)}" if picking else None

    def show_waits(self) -> None:
        """A step started or stopped waiting out an outage, or a message queue changed (StepRunner.on_change)."""
        assert self._steps is not None and self._messenger is not None  # see watch
        view = self.view
        view.provider_waits = list(self._steps.waits.values())
        view.messages_waiting = self._messenger.waiting
        view.waiting_for = self._compose_waiting_for()
        providers = self._steps.providers
        self.visibility.stage([WAITING_FOR.value_set(providers) if providers else WAITING_FOR.value_unset()])
        workflow.set_current_details(self._details_markdown())

    def result(self) -> OrderUpdateResult:
        """What an Update answers: where the order stands after it."""
        view = self.view
        note = view.timeline[-1].note if view.timeline else ""
        return OrderUpdateResult(order_id=view.order_id, status=view.status, waiting_for=view.waiting_for, note=note)

    def _compose_waiting_for(self) -> str | None:
        """An outage first: that is what the order waits for while it lasts."""
        waits = list(self._steps.waits.values()) if self._steps is not None else []
        if waits:
            return "; ".join(f"the {w.provider} ({w.step})" for w in waits)
        return self._waiting_base

    def _details_markdown(self) -> str:
        v = self.view
        rows = [f"**{v.status.value}** — order `{v.order_id}`"]
        if v.waiting_for:
            rows.append(f"Waiting for: {v.waiting_for}")
        for wait in v.provider_waits:
            rows.append(f"The {wait.provider} is not answering since {wait.since:%Y-%m-%d %H:%M} UTC: {wait.error}")
        if v.messages_waiting:
            rows.append(f"Messages waiting to go out: {v.messages_waiting}")
        rows += self._parcel_rows()
        if v.backordered:
            rows.append(f"Waiting for stock: {describe(v.backordered)}")
        rows.append("")
        rows += [f"- {e.at:%Y-%m-%d %H:%M:%S} {e.status.value}: {e.note}" for e in v.timeline[-10:]]
        return "\n".join(rows)

    def _parcel_rows(self) -> list[str]:
        v = self.view
        if len(v.shipments) > 1:
            rows = []
            for p in v.shipments:
                tracking = f", {p.carrier} [{p.tracking_number}]({p.tracking_url})" if p.tracking_number else ""
                outcome = f" ({p.outcome})" if p.outcome else ""
                rows.append(f"Shipment {p.shipment_no}: {p.status.value}{outcome} from {p.warehouse}{tracking}")
            return rows
        if not v.warehouse:
            return []
        rows = [f"Warehouse: {v.warehouse}"]
        if v.tracking_number:
            rows.append(f"Tracking: {v.carrier} [{v.tracking_number}]({v.tracking_url})")
        return rows
