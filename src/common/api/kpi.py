"""FulfillmentApi's KPI desk (mixed into FulfillmentApi): the orders of a period from Temporal visibility and
their views (timelines), joined with the database's facts by common.kpi."""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import TYPE_CHECKING

from temporalio.client import Client, WorkflowExecution

from common.api._helpers import WORKFLOW_TYPE
from common.errors import FulfillmentError, InvalidRequest
from common.kpi import BadPeriod, KpiReport, OrderFacts, Period, kpi_report
from common.models import OrderView
from common.store import Store
from common.temporal import ORDER_STATUS

log = logging.getLogger("fulfill.api")

# Views are queried a few at a time: each query replays the order on a worker.
_CONCURRENT_VIEWS = 8


def period(start: date, end: date) -> Period:
    """The period `start`..`end` (inclusive), or InvalidRequest naming what is wrong with it."""
    try:
        return Period.of(start, end)
    except BadPeriod as err:
        raise InvalidRequest(f"period: {err}") from None


class KpiDesk:
    client: Client
    store: Store

    if TYPE_CHECKING:

        async def order_status(self, order_id: str, *, placed_by: str | None = None) -> OrderView: ...

    async def kpi(self, start: date, end: date) -> KpiReport:
        """The KPIs of the orders placed from `start` to `end` (UTC days, inclusive) and the stock moved then."""
        span = period(start, end)
        orders = await self.period_orders(span)
        return await kpi_report(self.store.db, self.store.reservations, span, orders)

    async def period_orders(self, span: Period) -> list[OrderFacts]:
        """The facts of each order whose workflow started in the period (ids, statuses and times: no customer
        data). An order whose view cannot be read (erased, or no worker) counts with its status alone."""
        query = (
            f'WorkflowType = "{WORKFLOW_TYPE}" AND StartTime >= "{span.since.isoformat()}"'
            f' AND StartTime < "{span.until.isoformat()}"'
        )
        listed = [wf async for wf in self.client.list_workflows(query)]
        gate = asyncio.Semaphore(_CONCURRENT_VIEWS)

        async def facts(wf: WorkflowExecution) -> OrderFacts:
            order_id = wf.id.removeprefix("order-")
            status = wf.typed_search_attributes.get(ORDER_STATUS) or "?"
            placed = wf.start_time
            async with gate:
                try:
                    view = await self.order_status(order_id)
                except FulfillmentError as err:
                    log.info("kpi: order %s counted without its timeline: %s", order_id, err)
                    return OrderFacts(order_id, placed, status)
            timeline = tuple((e.at, e.status.value) for e in view.timeline)
            return OrderFacts(order_id, placed, view.status.value, view.promised_delivery, len(view.lines), timeline)

        return list(await asyncio.gather(*(facts(wf) for wf in listed)))
