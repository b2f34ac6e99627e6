"""FulfillmentApi's KPI desk (mixed into FulfillmentApi): the orders of a period from Temporal visibility and
their views (timelines), joined with the database's facts by common.kpi."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowExecution, WorkflowQueryFailedError
from temporalio.service import RPCError

from common.api._helpers import WORKFLOW_TYPE
from common.config import Settings
from common.errors import FulfillmentError, InvalidRequest
from common.inventory.planning import StockForecast, stock_forecasts
from common.kpi import BadPeriod, KpiReport, OrderFacts, Period, kpi_report
from common.kpi import measures as m
from common.kpi.reads import low_stock
from common.models import OrderView
from common.store import Store
from common.temporal import ORDER_STATUS, PICK_OVERDUE, THREEPL_LATE

log = logging.getLogger("fulfill.api")

# An order whose view cannot be read now (erased, no worker answers its query, Temporal slow) counts by what
# visibility says of it: one such order must not fail the whole report.
_UNREADABLE = (FulfillmentError, RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError)

# Views are queried a few at a time: each query replays the order on a worker.
_CONCURRENT_VIEWS = 8


def period(start: date, end: date) -> Period:
    """The period `start`..`end` (inclusive), or InvalidRequest naming what is wrong with it."""
    try:
        return Period.of(start, end)
    except BadPeriod as err:
        raise InvalidRequest(f"period: {err}") from None


@dataclass(frozen=True)
class StuckOrder:
    order_id: str
    status: str
    since: datetime
    reason: str


@dataclass(frozen=True)
class Dashboard:
    """What the ops dashboard shows: the KPIs of the last days, and where open orders and stock stand now."""

    report: KpiReport
    on_time_by_day: list[float | None]
    open_by_status: dict[str, int]
    stuck: list[StuckOrder]
    low_stock: list[tuple[str, str, int, int]]  # sku, warehouse, available, reorder point
    forecasts: list[StockForecast]


class KpiDesk:
    client: Client
    store: Store
    settings: Settings

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
            f'WorkflowType = "{WORKFLOW_TYPE}" AND TaskQueue = "{self.settings.task_queue}"'
            f' AND StartTime >= "{span.since.isoformat()}" AND StartTime < "{span.until.isoformat()}"'
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
                except _UNREADABLE as err:
                    log.info("kpi: order %s counted without its timeline: %s", order_id, type(err).__name__)
                    return OrderFacts(order_id, placed, status)
            timeline = tuple((e.at, e.status.value) for e in view.timeline)
            return OrderFacts(order_id, placed, view.status.value, view.promised_delivery, len(view.lines), timeline)

        return list(await asyncio.gather(*(facts(wf) for wf in listed)))

    async def dashboard(self, days: int = 14, now: datetime | None = None) -> Dashboard:
        """The dashboard's data: `days` days of KPIs ending today, open orders by status, stuck orders, low stock
        and the demand forecasts."""
        now = now or datetime.now(UTC)
        span = Period.of(now.date() - timedelta(days=days - 1), now.date())
        orders = await self.period_orders(span)
        report = await kpi_report(self.store.db, self.store.reservations, span, orders)
        by_status: dict[str, int] = {}
        stuck = []
        query = (
            f'WorkflowType = "{WORKFLOW_TYPE}" AND TaskQueue = "{self.settings.task_queue}"'
            ' AND ExecutionStatus = "Running"'
        )
        async for wf in self.client.list_workflows(query, limit=5000):
            attrs = wf.typed_search_attributes
            status = attrs.get(ORDER_STATUS) or "?"
            by_status[status] = by_status.get(status, 0) + 1
            flags = {"pick_overdue": bool(attrs.get(PICK_OVERDUE)), "threepl_late": bool(attrs.get(THREEPL_LATE))}
            sla = self.settings.pick_escalate_after
            # The start time bounds how long it can have been in its status: only then is its timeline read.
            if not m.stuck_reason(status, wf.start_time, now, sla_s=sla, **flags):
                continue
            order_id = wf.id.removeprefix("order-")
            since = await self._status_since(order_id, wf.start_time)
            reason = m.stuck_reason(status, since, now, sla_s=sla, **flags)
            if reason:
                stuck.append(StuckOrder(order_id, status, since, reason))
        return Dashboard(
            report=report,
            on_time_by_day=m.on_time_by_day(orders, span.start, span.days),
            open_by_status=dict(sorted(by_status.items())),
            stuck=sorted(stuck, key=lambda s: s.since),
            low_stock=await low_stock(self.store.db),
            forecasts=[f for f in await stock_forecasts(self.store, today=now.date()) if f.plan.mean_daily > 0],
        )

    async def _status_since(self, order_id: str, started: datetime) -> datetime:
        try:
            view = await self.order_status(order_id)
        except _UNREADABLE:
            return started
        return view.timeline[-1].at if view.timeline else started
