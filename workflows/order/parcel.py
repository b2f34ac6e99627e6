"""One parcel of an order: its pick, its label, following its tracking to delivery (tracking.py: the tracking
loop, a delivery exception and ops' decision on it), and undoing it on a cancel or after a failure. Each parcel
runs in a task of its own, concurrently with the others (the allocator starts it once its stock is reserved),
and keeps how far it got, so that after a failure ops retry it from there (every step is idempotent anyway).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from functools import partial

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order.fulfilment import Fulfilment, OrderCancelled, ParcelReleased, error_type, merge, problem_of
from workflows.order.threepl import OPEN_STATES, AtThreePL
from workflows.order.tracking import ParcelTracking
from workflows.steps import CARRIER, DATABASE, describe, innermost

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.shipping import ShippingActivities
    from activities.warehouse import WarehouseActivities
    from common import metrics
    from common.inventory.contracts import ParcelRef
    from common.models import (
        Label,
        LabelRequest,
        NotificationEvent,
        OrderLine,
        OrderStatus,
        ParcelAllocation,
        ParcelView,
        PickShortage,
        PickTaskRequest,
        ResolveDeliveryRequest,
        TrackingStatus,
        TrackingUpdate,
    )
    from common.shipping.contracts import LabelUndo, TrackingPush
    from common.temporal import CARRIER as CARRIER_ATTR
    from common.temporal import PICK_OVERDUE, TRACKING_NUMBER
    from common.threepl.contracts import ThreePLState, ThreePLUpdate


class Parcel:
    """A parcel's state (`view` is what ops see of it) and its way from the shelf to the customer."""

    def __init__(self, allocation: ParcelAllocation, fulfilment: Fulfilment) -> None:
        self.view = ParcelView(
            shipment_no=allocation.shipment_no, warehouse=allocation.warehouse, lines=list(allocation.lines)
        )
        self._fulfilment = fulfilment
        # How far it got: after a failure ops retry, it resumes here.
        self.picked = False
        self.label: Label | None = None
        self.label_attempted = False  # a purchase was started: undoing the parcel must ask the carrier
        self.last = TrackingStatus.PRE_TRANSIT
        self.estimate: datetime | None = None
        self.committed = False  # the carrier has the parcel: its stock left the building
        self.exception_deadline: datetime | None = None
        self.delay_notified_for: datetime | None = None  # the estimate the customer heard slip
        # Set by the order's handlers
        self.released = False  # a stock count released its reservation before it was packed
        self.released_in_the_db = False  # by the count's own transaction (its pick task is cancelled already)
        self.resolution: ResolveDeliveryRequest | None = None  # ops' decision on a delivery exception
        self.seen_by_check: TrackingUpdate | None = None  # a carrier check found the parcel moved
        self.pushed: list[TrackingUpdate] = []  # tracking events the carrier pushed, not applied yet, in order
        self.last_push_at: datetime | None = None  # when the carrier's tracker changed, as of the latest push
        self.kept_by_the_carrier = False  # a cancel found it with the carrier: it goes on
        # A parcel from a 3PL's warehouse (threepl.py): the 3PL, its state there (None: not submitted yet), the
        # news not applied yet, when it was submitted and accepted, which SLA it missed, how often it was held.
        self.provider = allocation.provider
        self.threepl_state: ThreePLState | None = None
        self.submitting = False  # the submission is in flight: the 3PL may have the order already
        self.threepl_changed_at: datetime | None = None
        self.threepl_news: list[ThreePLUpdate] = []
        self.submitted_at: datetime | None = None
        self.accepted_at: datetime | None = None
        self.late_for: str | None = None
        self.holds_at_3pl = 0
        self._at_3pl: AtThreePL | None = None
        self.task: asyncio.Task[None] | None = None

    def push(self, event: TrackingPush) -> bool:
        """A tracking event the carrier pushed; False (nothing changes) when it is older than one applied already:
        webhooks come out of order."""
        if self.last_push_at is not None and event.occurred_at < self.last_push_at:
            return False
        self.last_push_at = event.occurred_at
        self.pushed.append(
            TrackingUpdate(status=event.status, estimated_delivery=event.estimated_delivery, message=event.message)
        )
        return True

    @property
    def at_3pl(self) -> AtThreePL:
        if self._at_3pl is None:
            self._at_3pl = AtThreePL(self, self._fulfilment)
        return self._at_3pl

    def with_3pl(self) -> bool:
        """The 3PL has it and may still be asked not to ship it."""
        return self.view.outcome is None and self.threepl_state in OPEN_STATES and not self.kept_by_the_carrier

    def handed_to_3pl(self) -> bool:
        """A 3PL has (or is being given) the parcel for the address it was given: ours cannot change it."""
        return self.view.outcome is None and (self.submitting or self.threepl_state is not None)

    def start(self) -> None:
        """The parcel goes its way in a task of its own; its failure is the order's (Fulfilment.guard)."""
        self.task = asyncio.create_task(self._fulfilment.guard(self.ship()))

    @property
    def occurrence(self) -> str | None:
        """Idempotency-key suffix for the parcel's messages: none for the first (as for a one-parcel order)."""
        return None if self.view.shipment_no == 1 else str(self.view.shipment_no)

    def tracking_context(self) -> dict[str, str]:
        """What the customer's messages about this parcel say of it."""
        view = self.view
        # The customer counts the parcels that go (or went) to them, not the ones a count or a pick undid.
        sent = [p for p in self._fulfilment.view.shipments if p.outcome is None or p.tracking_number]
        position = next((i for i, p in enumerate(sent, start=1) if p is view), view.shipment_no)
        return {
            "carrier": view.carrier or "",
            "service": view.service or "",
            "tracking_number": view.tracking_number or "",
            "tracking_url": view.tracking_url or "",
            # "(parcel 2: TEE-M x1)" once the order has more than one parcel; nothing for a single one
            "parcel": f" (parcel {position}: {describe(view.lines)})" if len(sent) > 1 else "",
        }

    def advance(self, status: OrderStatus, note: str, *, waiting_for: str | None = None) -> None:
        self._fulfilment.advance(self.view, status, note, waiting_for=waiting_for)

    # ------------------------------------------------------------------------------------------ the way

    async def ship(self) -> None:
        """From reserved to delivered (or undone); a failure waits for ops, a cancel undoes the parcel."""
        while True:
            try:
                try:
                    await self._ship_from_where_it_is()
                    return
                except (ActivityError, ApplicationError) as err:
                    problem = problem_of(err)
                if await self._fulfilment.park(self, problem):
                    self._resume()
                    continue  # ops retried: from where it failed
                if not await self._give_up(problem):
                    continue  # the carrier has it: it goes on
                return
            except ParcelReleased:
                await self._released_by_a_count()
                return
            except OrderCancelled:
                if not self._fulfilment.undoes_per_parcel:
                    raise
                if await self._undo_cancelled():
                    return
                # the carrier had it after all: it goes on (see _undo_cancelled)

    def _resume(self) -> None:
        """After a retry by ops: a delivery exception gets its full time for ops again."""
        if self.view.status == OrderStatus.DELIVERY_EXCEPTION:
            timeout = timedelta(seconds=self._fulfilment.policy.delivery_exception_timeout_s)
            self.exception_deadline = workflow.now() + timeout

    async def _ship_from_where_it_is(self) -> None:
        fulfilment = self._fulfilment
        if self.provider is not None:  # the 3PL picks, packs and ships it
            if self.label is None:
                label = await self.at_3pl.ship()
                if label is None:
                    return  # rejected: its lines are reserved again
                self.label = label
            await ParcelTracking(self, fulfilment).follow()
            return
        if not self.picked:
            await fulfilment.checkpoint(self)
            if fulfilment.awaiting_return is not None:
                await self._await_return()
            if not await self._pick():
                return
            self.picked = True
        if self.label is None:
            await fulfilment.checkpoint(self)
            self.label = await self._buy_label()
            if fulfilment.asks_the_carrier and fulfilment.cancelled(self):
                raise OrderCancelled(f"cancelled: {fulfilment.cancel_reason}")  # accepted while the label was bought
        await ParcelTracking(self, fulfilment).follow()

    async def _released_by_a_count(self) -> None:
        """A stock count took this parcel's units before they were picked: its lines wait for stock again."""
        fulfilment = self._fulfilment
        self.view.outcome = "stock released by a count; its goods are reserved again"
        fulfilment.unallocated = merge(fulfilment.unallocated, self.view.lines)
        if not self.released_in_the_db:
            await fulfilment.cancel_picks()  # the count's transaction cancelled them in the other case
        self.advance(OrderStatus.CANCELLED, f"reservation released by a stock count; {self.view.outcome}")

    async def _await_return(self) -> None:
        """A replacement ships once the customer sent the goods it replaces back (or never, if they don't)."""
        fulfilment = self._fulfilment
        rma_id = fulfilment.awaiting_return
        self.advance(
            self.view.status,
            f"reserved; ships once the return {rma_id} is on its way",
            waiting_for=f"the customer to send back the goods of {rma_id}",
        )
        await fulfilment.wait_until(lambda: fulfilment.awaiting_return is None, None, self)
        fulfilment.timeline.note("the return is on its way: the replacement ships")

    # ------------------------------------------------------------------------------------------ pick

    async def _pick(self) -> bool:
        """Create the pick task and wait for it; a short pick sends the missing units back to allocation.
        False if nothing at all could be picked (the parcel ends there)."""
        fulfilment, view = self._fulfilment, self.view
        request = PickTaskRequest(
            order_id=fulfilment.key, parcel_no=view.shipment_no, warehouse=view.warehouse, lines=view.lines
        )
        task_id = await fulfilment.step(WarehouseActivities.create_pick_task, request, DATABASE, "create pick task")
        view.pick_task_id = task_id
        self.advance(
            OrderStatus.PICKING,
            f"pick task {task_id} in {view.warehouse}",
            waiting_for=f"pick confirmation of {task_id}",
        )
        asked_at = workflow.now()
        await self._await_pick(task_id)
        metrics.observe_duration(workflow.metric_meter(), metrics.PICK_SECONDS, workflow.now() - asked_at)
        short = fulfilment.pick_shortages.get(task_id, {})
        if not short:
            self.advance(OrderStatus.PACKED, f"pick task {task_id} confirmed, parcel packed")
            return True
        return await self._picked_short(task_id, short)

    async def _picked_short(self, task_id: str, short: dict[str, int]) -> bool:
        """Units were not on the shelf: the stock is corrected, the rest is packed, the missing units go back to
        allocation. False if nothing was found."""
        fulfilment, view = self._fulfilment, self.view
        # The stock correction (idempotent: the CLI makes it before asking, the Web UI does not).
        await fulfilment.step(
            WarehouseActivities.confirm_short_pick,
            PickShortage(task_id=task_id, short=short),
            DATABASE,
            "record short pick",
        )
        missing = [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(short.items())]
        view.lines = [
            OrderLine(sku=line.sku, quantity=line.quantity - short.get(line.sku, 0))
            for line in view.lines
            if line.quantity > short.get(line.sku, 0)
        ]
        fulfilment.unallocated = merge(fulfilment.unallocated, missing)
        fulfilment.view.backordered = list(fulfilment.unallocated)
        if not view.lines:
            view.outcome = "nothing found at the pick"
            self.advance(OrderStatus.CANCELLED, f"pick {task_id} short of everything; re-reserving it all")
            return False
        self.advance(OrderStatus.PACKED, f"pick {task_id} short of {describe(missing)}; packed the rest, re-reserving")
        return True

    async def _await_pick(self, task_id: str) -> None:
        """Wait for the pick; past the SLA alert ops (PickOverdue), later tell the customer of the delay."""
        fulfilment = self._fulfilment
        started = workflow.now()
        policy = fulfilment.policy

        def picked() -> bool:
            return task_id in fulfilment.confirmed_picks

        if await fulfilment.wait_until(picked, started + timedelta(seconds=policy.pick_escalate_after_s), self):
            return
        fulfilment.overdue_picks += 1
        if fulfilment.overdue_picks == 1:
            fulfilment.timeline.stage([PICK_OVERDUE.value_set(True)])
        try:
            fulfilment.timeline.note(f"pick {task_id} overdue: ops alerted")
            await fulfilment.alert_ops(
                "pick_overdue",
                f"Pick {task_id} for order {fulfilment.order.order_id} is overdue",
                f"Pick task {task_id} in {self.view.warehouse} was created {started:%Y-%m-%d %H:%M} UTC and is not "
                "confirmed yet. Confirm it with `fulfill warehouse confirm` or put the order on hold.",
                occurrence=self.occurrence,
            )
            deadline = started + timedelta(seconds=policy.pick_customer_delay_after_s)
            if not await fulfilment.wait_until(picked, deadline, self):
                fulfilment.timeline.note("customer told of the delay")
                await fulfilment.notify(NotificationEvent.PICK_DELAYED)
                await fulfilment.wait_until(picked, None, self)
        finally:
            # Also when a count or a cancel ends the wait: PickOverdue must not stick.
            fulfilment.overdue_picks -= 1
            if fulfilment.overdue_picks == 0:
                fulfilment.timeline.stage([PICK_OVERDUE.value_set(False)])

    # ------------------------------------------------------------------------------------------ label

    async def _buy_label(self) -> Label:
        """Rate-shop and buy; an address the carrier rejects parks the parcel until ops correct it."""
        fulfilment = self._fulfilment
        while True:
            order = fulfilment.order
            request = LabelRequest(
                order_id=fulfilment.key,
                shipment_no=self.view.shipment_no,
                warehouse=self.view.warehouse,
                ship_to=order.ship_to,
                lines=self.view.lines,
                speed=order.shipping_speed,
                promised_delivery=order.promised_delivery,
            )
            fulfilment.compensations.append((f"void label {self.view.shipment_no}", partial(_void_label, request)))
            self.label_attempted = True
            fulfilment.buying_labels += 1
            try:
                label = await self._purchase(request)
                break
            except (ActivityError, ApplicationError) as err:
                if error_type(err) != "CarrierAddressError":
                    raise  # keep "void label": the carrier may have sold one before the failure (voiding is safe)
                fulfilment.compensations.pop()  # the carrier refused the address: nothing was bought
                problem = innermost(err)
            finally:
                fulfilment.buying_labels -= 1
            await self._await_address_fix(problem)
        await self._labelled(label)
        return label

    async def _purchase(self, request: LabelRequest) -> Label:
        if self._fulfilment.lean:
            return await self._fulfilment.step(
                ShippingActivities.buy_label, request, CARRIER, "rate-shop and buy label"
            )
        return await workflow.execute_activity_method(
            ShippingActivities.buy_label, request, summary="rate-shop and buy label", **CARRIER.patient_options()
        )

    async def _labelled(self, label: Label) -> None:
        fulfilment, view = self._fulfilment, self.view
        fulfilment.label_bought = True
        metrics.observe(workflow.metric_meter(), metrics.LABEL_COST_CENTS, label.rate_cents, carrier=label.carrier)
        view.carrier, view.service = label.carrier, label.service
        view.tracking_number, view.tracking_url = label.tracking_number, label.tracking_url
        fulfilment.advance(
            view,
            OrderStatus.LABELED,
            f"{label.carrier} {label.service} label, tracking {label.tracking_number}"
            + (f"; {label.choice}" if label.choice else ""),
            also=[CARRIER_ATTR.value_set(label.carrier), TRACKING_NUMBER.value_set(label.tracking_number)],
        )
        if not fulfilment.labelled_parcels_ask_the_carrier():
            # Orders recorded before then told the customer "shipped" now, before the carrier had the parcel.
            await fulfilment.notify(NotificationEvent.SHIPPED, self.tracking_context(), occurrence=self.occurrence)

    async def _await_address_fix(self, problem: str) -> None:
        fulfilment = self._fulfilment
        self.advance(
            OrderStatus.ADDRESS_INVALID,
            f"carrier rejected the address: {problem}",
            waiting_for="ops to send update_address",
        )
        await fulfilment.notify(NotificationEvent.ADDRESS_PROBLEM, occurrence=self.occurrence)
        seen = fulfilment.address_updates
        limit = fulfilment.policy.address_fix_timeout_s
        deadline = workflow.now() + timedelta(seconds=limit) if limit is not None else None
        if not await fulfilment.wait_until(lambda: fulfilment.address_updates > seen, deadline, self):
            days = (limit or 0) / 86400
            raise ApplicationError(
                f"the address the carrier rejected was not corrected within {days:g} days: {problem}",
                type="AddressNotCorrected",
                non_retryable=True,
            )
        self.advance(OrderStatus.PACKED, "address corrected; buying the label again")

    # ------------------------------------------------------------------------------------------ undo

    async def _give_up(self, problem: str) -> bool:
        """Ops did not retry in time: undo the parcel (unless the carrier has it, then it goes on: False)."""
        fulfilment, view = self._fulfilment, self.view
        if not self.committed and not await self._undo():
            return False  # the carrier had it after all: its tracking finds the scan
        view.outcome = f"failed: {problem}"
        fulfilment.failed_parts.append(f"shipment {view.shipment_no}: {problem}")
        self.advance(OrderStatus.FAILED, f"gave up after waiting for ops: {problem}")
        others = [
            p for p in fulfilment.view.shipments if p is not view and (p.outcome is None or p.outcome == "refunded")
        ]
        if others and not self.committed:
            await fulfilment.notify(
                NotificationEvent.PARTLY_CANCELLED,
                {"what": describe(view.lines), "reason": "it could not be sent"},
                occurrence=f"failed-{view.shipment_no}",
            )
        return True

    async def _undo(self) -> bool:
        """Undo what the parcel did, newest first, each step retried until done: its label (only if the carrier
        does not have the parcel: False then, and nothing else is undone), its pick task, its reservation."""
        fulfilment = self._fulfilment
        ref = ParcelRef(order_id=fulfilment.key, shipment_no=self.view.shipment_no)
        prefix = fulfilment.timeline.parcel_prefix(self.view)
        if self.threepl_state is not None and not await self.at_3pl.cancel():
            return False  # the 3PL shipped it: its news says with which carrier
        if self.label_attempted:
            undo = await fulfilment.step(ShippingActivities.void_label_if_unshipped, ref, CARRIER, "void label")
            if undo.outcome == LabelUndo.IN_USE:
                fulfilment.timeline.note(f"{prefix}label kept: {undo.note}")
                return False
            if undo.outcome == LabelUndo.VOIDED:
                fulfilment.timeline.note(f"{prefix}label voided")
        if self.view.pick_task_id is not None:
            await fulfilment.step(
                WarehouseActivities.cancel_pick_task, self.view.pick_task_id, DATABASE, "cancel pick task"
            )
        await fulfilment.step(InventoryActivities.release_shipment, ref, DATABASE, "release reservation")
        return True

    async def _undo_cancelled(self) -> bool:
        """A confirmed cancel reached this parcel: undo it. False if the carrier picked it up between the check
        and the void: then it is not cancelled but shipped, the rest of the order is, and the customer hears."""
        if await self._undo():
            self.view.outcome = "cancelled"
            self.advance(OrderStatus.CANCELLED, f"cancelled: {self._fulfilment.cancel_reason}")
            return True
        await self.escaped_cancel()  # its tracking poll finds the scan and commits the stock
        return False

    async def escaped_cancel(self) -> None:
        """The carrier picked the parcel up after the cancel was accepted: it is shipped, not cancelled; the rest
        of the order is, and the customer hears which part still comes."""
        fulfilment, view = self._fulfilment, self.view
        self.kept_by_the_carrier = True
        fulfilment.timeline.note(
            f"{fulfilment.timeline.parcel_prefix(view)}the carrier has it: not cancelled, it goes on"
        )
        await fulfilment.notify(
            NotificationEvent.PARTLY_CANCELLED,
            {
                "what": ", ".join(describe(p.lines) for p in fulfilment.view.shipments if p is not view) or "nothing",
                "reason": f"{describe(view.lines)} was already on its way; return it once it arrives",
            },
            occurrence=f"cancel-{view.shipment_no}",
        )


async def _void_label(request: LabelRequest) -> object:
    """The saga's undo of a label purchase (orders recorded before UNDO_PER_PARCEL)."""
    return await workflow.execute_activity_method(
        ShippingActivities.void_label, request, summary="void label", **CARRIER.patient_options()
    )
