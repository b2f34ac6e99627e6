"""The KPI definitions (common.kpi.measures) on hand-made facts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from common.kpi import measures as m
from common.kpi.report import BadPeriod, Period

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def order(order_id: str, *steps: tuple[int, str], promised: date | None = None, lines: int = 1) -> m.OrderFacts:
    timeline = [(T0 + timedelta(minutes=minutes), status) for minutes, status in steps]
    return m.OrderFacts(order_id, T0, timeline[-1][1] if timeline else "RECEIVED", promised, lines, timeline)


def test_orders_per_day_zero_fills_and_ignores_outside() -> None:
    placed = [T0, T0 + timedelta(hours=1), T0 + timedelta(days=2), T0 + timedelta(days=9)]
    assert m.orders_per_day(placed, T0.date(), 3) == [2, 0, 1]


def test_on_time_counts_only_delivered_orders_with_a_promise() -> None:
    orders = [
        order("A", (0, "PICKING"), (60, "DELIVERED"), promised=T0.date()),  # on time
        order("B", (0, "PICKING"), (60 * 24 * 3, "DELIVERED"), promised=T0.date() + timedelta(days=1)),  # late
        order("C", (0, "PICKING"), (60, "DELIVERED")),  # no promise: not measured
        order("D", (0, "PICKING"), promised=T0.date()),  # not delivered yet
    ]
    assert m.on_time(orders) == (1, 2)


def test_fill_and_backorder_rates() -> None:
    assert m.fill_rate(4, 1) == 0.75
    assert m.fill_rate(0, 0) is None
    assert m.backorder_rate(["A", "B", "C", "D"], ["B", "Z"]) == 0.25


def test_pick_to_ship_from_first_pick_to_first_shipped_status() -> None:
    orders = [
        order("A", (0, "RESERVED"), (10, "PICKING"), (20, "PACKED"), (40, "IN_TRANSIT"), (90, "DELIVERED")),
        order("B", (0, "SUBMITTED_TO_3PL"), (5, "ACCEPTED_BY_3PL"), (60, "IN_TRANSIT")),
        order("C", (0, "PICKING")),  # not shipped
    ]
    assert m.pick_to_ship_seconds(orders) == [30 * 60.0, 60 * 60.0]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert m.percentile(values, 50) == 10
    assert m.percentile(values, 95) == 19
    assert m.percentile([7.0], 95) == 7
    assert m.percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        m.percentile(values, 0)


def test_costs_returns_and_reasons() -> None:
    assert m.shipping_cost_per_order({"A": 500, "B": 700}) == 600
    assert m.shipping_cost_per_order({}) is None
    assert m.return_rate(["A", "B", "C", "D"], ["A", "A", "X"]) == 0.25
    assert m.return_reasons(["damaged", "wrong_size", "damaged"]) == {"damaged": 2, "wrong_size": 1}


def test_turns_and_days_of_cover() -> None:
    assert m.inventory_turns(30, 60.0) == 0.5
    assert m.inventory_turns(30, 0) is None
    assert m.days_of_cover(50, 10, 5) == 25  # 2 a day
    assert m.days_of_cover(50, 0, 5) is None


def test_forecast_error_against_the_periods_demand() -> None:
    # A steady 4 a day before the period forecasts 4 a day; the period sold 2, 4, 6 and 0.
    error = m.forecast_error([([4] * 10, [2, 4, 6, 0])])
    assert error.forecast_units == 16
    assert error.actual_units == 12
    assert error.wape == pytest.approx((2 + 0 + 2 + 4) / 12)
    assert error.mape == pytest.approx((1.0 + 0 + 1 / 3) / 3)
    assert m.forecast_error([]).mape is None


def test_period_rejects_backwards_and_overlong_ranges() -> None:
    assert Period.of(date(2026, 3, 1), date(2026, 3, 1)).days == 1
    with pytest.raises(BadPeriod, match="before"):
        Period.of(date(2026, 3, 2), date(2026, 3, 1))
    with pytest.raises(BadPeriod, match="at most"):
        Period.of(date(2025, 1, 1), date(2026, 3, 1))
