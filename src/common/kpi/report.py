"""The KPI report of a period: reads the facts (reads.py), computes each KPI once (measures.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from common.db.database import Database
from common.inventory import forecast as fc
from common.inventory.reservations import ReservationStore
from common.kpi import measures as m
from common.kpi import reads


class BadPeriod(ValueError):
    """The period asked for is no period: `to` before `from`, or too long."""


MAX_PERIOD_DAYS = 366


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `start` to `end` inclusive."""

    start: date
    end: date

    @classmethod
    def of(cls, start: date, end: date) -> Period:
        if end < start:
            raise BadPeriod(f"to ({end}) is before from ({start})")
        if (end - start).days + 1 > MAX_PERIOD_DAYS:
            raise BadPeriod(f"a period is at most {MAX_PERIOD_DAYS} days, {start}..{end} is longer")
        return cls(start, end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:  # exclusive
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


@dataclass(frozen=True)
class KpiReport:
    start: date
    end: date
    orders: int
    orders_per_day: list[int]
    on_time_rate: float | None
    on_time_measured: int
    fill_rate: float | None
    backorder_rate: float | None
    pick_to_ship_p50_s: float | None
    pick_to_ship_p95_s: float | None
    shipping_cost_per_order_cents: float | None
    return_rate: float | None
    return_reasons: dict[str, int]
    inventory_turns: float | None
    days_of_cover: float | None
    units_shipped: int
    forecast_mape: float | None
    forecast_wape: float | None
    orders_by_status: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


async def forecast_pairs(
    reservations: ReservationStore, period: Period, history_days: int = fc.DEFAULT_HISTORY_DAYS
) -> list[tuple[list[int], list[int]]]:
    """(daily demand in the `history_days` before the period, daily demand in the period) per sku/warehouse."""
    first = period.start - timedelta(days=history_days)
    demand = await reservations.demand_history(datetime.combine(first, time.min, tzinfo=UTC))
    keys = sorted({(d.sku, d.warehouse) for d in demand if d.at < period.until})
    out = []
    for key in keys:
        events = [(d.at, d.quantity) for d in demand if (d.sku, d.warehouse) == key]
        history = fc.daily_demand(events, first, history_days)
        if sum(history) == 0:  # nothing to forecast from: no forecast to judge
            continue
        out.append((history, fc.daily_demand(events, period.start, period.days)))
    return out


async def kpi_report(
    db: Database, reservations: ReservationStore, period: Period, orders: list[m.OrderFacts]
) -> KpiReport:
    """The KPIs of the orders placed in `period` (`orders`, from Temporal) and of the stock moved in it."""
    ids = {o.order_id for o in orders}
    short = await reads.backordered_skus(db, ids, period.since)
    rates = await reads.label_rates(db, ids, period.since)
    rmas = await reads.returns(db, ids, period.since)
    stock = await reads.stock_facts(db, period.since, period.until)
    errors = m.forecast_error(await forecast_pairs(reservations, period))
    hits, measured = m.on_time(orders)
    pick_to_ship = m.pick_to_ship_seconds(orders)
    delivered = [o.order_id for o in orders if o.first([m.OrderStatus.DELIVERED]) is not None]
    by_status: dict[str, int] = {}
    for o in orders:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    return KpiReport(
        start=period.start,
        end=period.end,
        orders=len(orders),
        orders_per_day=m.orders_per_day((o.placed_at for o in orders), period.start, period.days),
        on_time_rate=m.ratio(hits, measured),
        on_time_measured=measured,
        fill_rate=m.fill_rate(sum(o.lines for o in orders), sum(len(set(s)) for s in short.values())),
        backorder_rate=m.backorder_rate(ids, short),
        pick_to_ship_p50_s=m.percentile(pick_to_ship, 50),
        pick_to_ship_p95_s=m.percentile(pick_to_ship, 95),
        shipping_cost_per_order_cents=m.shipping_cost_per_order(rates),
        return_rate=m.return_rate(delivered, (order_id for order_id, _ in rmas)),
        return_reasons=m.return_reasons(reason for _, reason in rmas),
        inventory_turns=m.inventory_turns(stock.units_shipped, (stock.on_hand_start + stock.on_hand_end) / 2),
        days_of_cover=m.days_of_cover(stock.on_hand_end, stock.units_shipped, period.days),
        units_shipped=stock.units_shipped,
        forecast_mape=errors.mape,
        forecast_wape=errors.wape,
        orders_by_status=dict(sorted(by_status.items())),
    )
