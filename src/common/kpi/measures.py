"""The KPIs as pure functions: each one is defined here, once, in its docstring. Inputs are plain facts about
orders, parcels and stock (ids, times, counts); no customer data goes in, so none can come out."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from common.inventory import forecast as fc
from common.models import OrderStatus

# Where an order's parcel is in the carrier's hands: the end of pick-to-ship.
SHIPPED = frozenset({OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED})
# Where the warehouse's work on it starts: our pick task, or the hand-over to a 3PL.
PICK_STARTS = frozenset({OrderStatus.PICKING, OrderStatus.SUBMITTED_TO_3PL})


@dataclass(frozen=True)
class OrderFacts:
    """What the KPIs need of one order: its id, when it was placed, and its timeline of statuses."""

    order_id: str
    placed_at: datetime
    status: str
    promised_delivery: date | None = None
    lines: int = 0  # order lines
    timeline: Sequence[tuple[datetime, str]] = field(default_factory=tuple)

    def first(self, statuses: Iterable[str]) -> datetime | None:
        wanted = set(statuses)
        return next((at for at, status in self.timeline if status in wanted), None)


def ratio(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to measure (whole == 0)."""
    return part / whole if whole else None


def _day(at: datetime) -> date:
    return (at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)).date()


def orders_per_day(placed: Iterable[datetime], start: date, days: int) -> list[int]:
    """Orders per day: orders whose workflow started on each UTC day from `start`, zero-filled."""
    return fc.daily_demand(((at, 1) for at in placed), start, days)


def on_time(orders: Iterable[OrderFacts]) -> tuple[int, int]:
    """On-time delivery: of the orders delivered that had a promised delivery date, those whose first
    DELIVERED came on or before that date (UTC). Returns (on time, measured)."""
    hits = measured = 0
    for order in orders:
        delivered = order.first([OrderStatus.DELIVERED])
        if delivered is None or order.promised_delivery is None:
            continue
        measured += 1
        hits += _day(delivered) <= order.promised_delivery
    return hits, measured


def fill_rate(lines_ordered: int, lines_short: int) -> float | None:
    """Fill rate: the share of order lines whose stock was there at the first allocation (not short, so not
    backordered): (lines ordered - lines short) / lines ordered."""
    return ratio(lines_ordered - lines_short, lines_ordered)


def backorder_rate(order_ids: Iterable[str], backordered: Iterable[str]) -> float | None:
    """Backorder rate: the share of the period's orders that waited for stock (have a backorder record)."""
    ids = set(order_ids)
    return ratio(len(ids & set(backordered)), len(ids))


def pick_to_ship_seconds(orders: Iterable[OrderFacts]) -> list[float]:
    """Pick-to-ship: per order, seconds from its first PICKING (or SUBMITTED_TO_3PL) to its first status in
    the carrier's hands (IN_TRANSIT, OUT_FOR_DELIVERY, DELIVERED). Orders not shipped yet are left out."""
    out = []
    for order in orders:
        start, end = order.first(PICK_STARTS), order.first(SHIPPED)
        if start is not None and end is not None and end >= start:
            out.append((end - start).total_seconds())
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (q in (0, 100]): the smallest value with at least q% of them at or
    below it; None for no values."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def shipping_cost_per_order(rates_by_order: Mapping[str, int]) -> float | None:
    """Shipping cost per order: purchased outbound labels' rates (cents) summed over the orders that bought any,
    divided by the number of those orders."""
    return ratio(sum(rates_by_order.values()), len(rates_by_order))


def return_rate(delivered: Iterable[str], returned: Iterable[str]) -> float | None:
    """Return rate: the share of the period's delivered orders with at least one return (RMA)."""
    ids = set(delivered)
    return ratio(len(ids & set(returned)), len(ids))


def return_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Returns by reason: how many RMAs gave each reason, most frequent first."""
    return dict(Counter(reasons).most_common())


def inventory_turns(units_shipped: int, average_on_hand: float) -> float | None:
    """Inventory turns over the period: units shipped (committed out of stock) / the average units on hand
    (the mean of on hand at the period's start and end)."""
    return units_shipped / average_on_hand if average_on_hand > 0 else None


def days_of_cover(on_hand: int, units_shipped: int, days: int) -> float | None:
    """Days of cover: units on hand at the period's end / units shipped per day in the period; None when
    nothing shipped."""
    return fc.days_of_cover(on_hand, units_shipped / days if days else 0.0)


@dataclass(frozen=True)
class ForecastError:
    mape: float | None  # mean absolute percentage error over sku-days that sold
    wape: float | None  # weighted: sum |actual - forecast| / sum actual
    forecast_units: float
    actual_units: int


def forecast_error(
    pairs: Iterable[tuple[Sequence[int], Sequence[int]]], alpha: float = fc.DEFAULT_ALPHA
) -> ForecastError:
    """Forecast error of last period's forecast: for each SKU at each warehouse, the forecast daily demand is
    the EWMA (common.inventory.forecast) of its daily demand before the period; each day of the period it is
    compared with that day's demand. MAPE = mean of |a - f| / a over the sku-days with a > 0; WAPE =
    sum |a - f| / sum a over all sku-days. `pairs`: (history, period) daily series per sku."""
    errors: list[float] = []
    abs_total = forecast_total = 0.0
    actual_total = 0
    for history, period in pairs:
        mean, _ = fc.ewma(history, alpha)
        for actual in period:
            abs_total += abs(actual - mean)
            forecast_total += mean
            actual_total += actual
            if actual > 0:
                errors.append(abs(actual - mean) / actual)
    return ForecastError(
        mape=sum(errors) / len(errors) if errors else None,
        wape=abs_total / actual_total if actual_total else None,
        forecast_units=forecast_total,
        actual_units=actual_total,
    )


def on_time_by_day(orders: Iterable[OrderFacts], start: date, days: int) -> list[float | None]:
    """On-time delivery (as in `on_time`) per UTC day of delivery, from `start`; None on a day without any."""
    hits, measured = [0] * days, [0] * days
    for order in orders:
        delivered = order.first([OrderStatus.DELIVERED])
        if delivered is None or order.promised_delivery is None:
            continue
        index = (_day(delivered) - start).days
        if 0 <= index < days:
            measured[index] += 1
            hits[index] += _day(delivered) <= order.promised_delivery
    return [ratio(h, n) for h, n in zip(hits, measured, strict=True)]


# Statuses in which an order waits for something that should come within the pick SLA: stock, a person, a
# reservation. PICKING is judged by the workflow itself (PickOverdue), a 3PL's parcel by ThreePLLate.
WAITING_STATUSES = frozenset({OrderStatus.RECEIVED, OrderStatus.RESERVED, OrderStatus.BACKORDERED, OrderStatus.ON_HOLD})


def stuck_reason(
    status: str, since: datetime, now: datetime, *, sla_s: float, pick_overdue: bool, threepl_late: bool
) -> str | None:
    """Why an open order is stuck, or None: its pick task is past the pick SLA (PickOverdue), its 3PL is past
    an SLA (ThreePLLate), or it has waited in RECEIVED, RESERVED, BACKORDERED or ON_HOLD longer than `sla_s`
    (FULFILL_PICK_ESCALATE_AFTER)."""
    if pick_overdue:
        return "pick overdue"
    if threepl_late:
        return "3PL late"
    waited = (now - since).total_seconds()
    if status in WAITING_STATUSES and waited > sla_s:
        return f"{status} for {waited / 3600:.1f} h"
    return None
