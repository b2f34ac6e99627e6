"""Reserving an order's lines as parcels: one warehouse when one covers the order, else a split, or what is in
stock now under the ship-available policy. What cannot be reserved waits BACKORDERED for a restock (the
customer hears once), up to the backorder limit; lines that went missing at a pick, or were lost and reshipped,
come back here and become further parcels.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order.fulfilment import Fulfilment, OrderCancelled, merge, problem_of
from workflows.order.parcel import Parcel
from workflows.steps import DATABASE, describe

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from common import metrics
    from common.models import (
        NotificationEvent,
        OrderLine,
        OrderStatus,
        ParcelAllocation,
        PartialShipment,
        ReserveRequest,
        ReserveResult,
    )


class Allocator:
    """Runs whenever lines wait for a parcel (OrderWorkflow starts it); each reserved shipment becomes a Parcel."""

    def __init__(self, fulfilment: Fulfilment) -> None:
        self._fulfilment = fulfilment
        self.restocks_seen = 0  # stock_received signals
        self._next_shipment = 1
        self._told_delayed = False
        self.given_up: list[OrderLine] = []  # lines never restocked in time (cancelled, the rest shipped)

    async def run(self) -> None:
        """Reserve the unallocated lines. A cancel stops the wait; an error retrying cannot fix waits for ops."""
        fulfilment = self._fulfilment
        try:
            await self._until_reserved()
        except OrderCancelled:
            if not fulfilment.undoes_per_parcel:
                raise
            await self._close_backorder()

    async def _until_reserved(self) -> None:
        fulfilment = self._fulfilment
        while fulfilment.unallocated:
            seen = self.restocks_seen
            try:
                result = await fulfilment.step(
                    InventoryActivities.reserve_stock, self._request(), DATABASE, "reserve stock"
                )
            except (ActivityError, ApplicationError) as err:
                if await self._failed(err):
                    continue  # ops retried
                return
            if not await self._reserved(result, seen):
                return

    def _request(self) -> ReserveRequest:
        fulfilment = self._fulfilment
        order = fulfilment.order
        return ReserveRequest(
            order_id=fulfilment.key,
            lines=fulfilment.unallocated,
            ship_to_country=order.ship_to.country,
            ship_to_region=order.ship_to.region,
            allow_partial=fulfilment.policy.partial_shipment == PartialShipment.SHIP_AVAILABLE,
            first_shipment=self._next_shipment,
            exclude_warehouses=sorted(fulfilment.excluded_warehouses),
        )

    async def _failed(self, err: BaseException) -> bool:
        """The reservation hit an error retrying cannot fix: True once ops retried, False when given up."""
        fulfilment = self._fulfilment
        problem = problem_of(err)
        if await fulfilment.park(None, problem):
            return True
        fulfilment.failed_parts.append(f"{describe(fulfilment.unallocated)} ({problem})")
        await self._give_up_unallocated(f"could not be reserved: {problem}")
        return False

    async def _reserved(self, result: ReserveResult, seen: int) -> bool:
        """Start the parcels reserved; True if lines still wait (after waiting for a restock or a recheck)."""
        fulfilment = self._fulfilment
        if result.shipments:  # what is left waits; with nothing reserved, all of it still does
            fulfilment.unallocated = [OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(result.short.items())]
        fulfilment.view.backordered = list(fulfilment.unallocated)
        if not fulfilment.unallocated:
            fulfilment.waiting_since = None
        elif fulfilment.waiting_since is None:
            fulfilment.waiting_since = workflow.now()
        self._start_parcels(result.shipments)
        if result.shipments:
            self._next_shipment = result.shipments[-1].shipment_no + 1
        if result.low_stock:
            await fulfilment.alert_low_stock(result.low_stock)
        if not fulfilment.unallocated:
            return False
        short = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(result.short.items()))
        await self._tell_waiting(result, short)
        assert fulfilment.waiting_since is not None  # set above while lines wait
        policy = fulfilment.policy
        give_up_at = fulfilment.waiting_since + timedelta(seconds=policy.backorder_max_wait_s)
        if workflow.now() >= give_up_at:
            await self._give_up_waiting(short)
            return False
        # A restock signal wakes us; the periodic recheck covers a signal sent before we started waiting.
        recheck = min(give_up_at, workflow.now() + timedelta(seconds=policy.backorder_recheck_interval_s))
        await fulfilment.wait_until(lambda: self.restocks_seen > seen, recheck)
        return True

    async def _tell_waiting(self, result: ReserveResult, short: str) -> None:
        """The timeline shows what waits for stock; the customer hears once."""
        fulfilment = self._fulfilment
        if result.shipments:
            fulfilment.timeline.record(fulfilment.status_now(), f"shipping what is in stock; waiting for {short}")
        elif fulfilment.view.status != OrderStatus.BACKORDERED:
            fulfilment.timeline.record(fulfilment.status_now(), f"waiting for stock: {short}", waiting_for="a restock")
        if not self._told_delayed:
            self._told_delayed = True
            metrics.count(workflow.metric_meter(), metrics.STOCK_OUTS, len(result.short))  # once an order
            # "Ships in parts" only while a parcel is really on its way; else the order just waits.
            event = NotificationEvent.PARTIAL_SHIPMENT if fulfilment.going() else NotificationEvent.BACKORDERED
            await fulfilment.notify(event, {"short": describe(fulfilment.unallocated)})

    async def _give_up_waiting(self, short: str) -> None:
        """Backordered past the limit: cancel the order, or only the part that never came when parcels are on
        their way already."""
        fulfilment = self._fulfilment
        if not fulfilment.going() and not fulfilment.handed_to_carrier():
            raise OrderCancelled(f"backordered too long: still short of {short}")
        self.given_up = merge(self.given_up, fulfilment.unallocated)
        await self._give_up_unallocated(f"{short} could not be restocked in time")

    async def _give_up_unallocated(self, why: str) -> None:
        """Stop waiting for the lines no parcel holds; the rest of the order goes on, and the customer hears."""
        fulfilment = self._fulfilment
        what = describe(fulfilment.unallocated)
        await self._close_backorder()
        fulfilment.timeline.record(
            fulfilment.status_now(), f"gave up waiting for {what}: that part is cancelled ({why})"
        )
        if fulfilment.going() or fulfilment.delivered_parcels():
            await fulfilment.notify(
                NotificationEvent.PARTLY_CANCELLED, {"what": what, "reason": why}, occurrence="remainder"
            )

    async def _close_backorder(self) -> None:
        """No line waits for stock any more."""
        fulfilment = self._fulfilment
        await fulfilment.step(InventoryActivities.close_backorder, fulfilment.key, DATABASE, "stop waiting for stock")
        fulfilment.unallocated, fulfilment.waiting_since = [], None
        fulfilment.view.backordered = []

    def _start_parcels(self, allocations: Sequence[ParcelAllocation]) -> None:
        """Each reserved shipment becomes a parcel with its own pick, label and tracking, running concurrently."""
        fulfilment = self._fulfilment
        parcels = [Parcel(allocation, fulfilment) for allocation in allocations]
        fulfilment.parcels += parcels
        fulfilment.view.shipments += [p.view for p in parcels]  # all of them first: the timeline then names each
        for parcel in parcels:
            what = f": {describe(parcel.view.lines)}" if len(fulfilment.view.shipments) > 1 else ""
            parcel.advance(OrderStatus.RESERVED, f"reserved in {parcel.view.warehouse}{what}")
            parcel.start()
