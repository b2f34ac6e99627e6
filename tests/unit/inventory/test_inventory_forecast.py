"""Forecasting and reorder planning on known series, against values worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from common.inventory import forecast as fc


def test_daily_demand_buckets_by_utc_day_and_zero_fills() -> None:
    start = date(2025, 3, 1)
    events = [
        (datetime(2025, 3, 1, 0, 0, tzinfo=UTC), 2),
        (datetime(2025, 3, 1, 23, 59, tzinfo=UTC), 3),
        # 23:30 at UTC-2 is 01:30 UTC the next day
        (datetime(2025, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-2))), 4),
        (datetime(2025, 2, 28, 23, 59, tzinfo=UTC), 100),  # before the window
        (datetime(2025, 3, 5, 0, 0, tzinfo=UTC), 100),  # after it
    ]
    assert fc.daily_demand(events, start, 4) == [5, 0, 4, 0]


def test_history_window() -> None:
    assert fc.history_window(60, date(2025, 3, 1)) == (date(2025, 1, 1), 60)
    assert fc.history_window(1, date(2025, 3, 1)) == (date(2025, 3, 1), 1)
    with pytest.raises(ValueError, match="at least 1 day"):
        fc.history_window(0, date(2025, 3, 1))


def test_ewma_by_hand_alpha_half() -> None:
    # m: 10 -> 15 -> 12.5; v: 0 -> 0.5*(0 + 0.5*10^2) = 25 -> 0.5*(25 + 0.5*(-5)^2) = 18.75
    assert fc.ewma_path([10, 20, 10], alpha=0.5) == [(10.0, 0.0), (15.0, 5.0), (12.5, math.sqrt(18.75))]
    mean, std = fc.ewma([10, 20, 10], alpha=0.5)
    assert mean == pytest.approx(12.5)
    assert std == pytest.approx(4.330127, abs=1e-6)


def test_ewma_by_hand_default_alpha() -> None:
    # alpha 0.3 over 4, 6, 2, 8:
    #   m = 4                        v = 0
    #   d = 2     m = 4.6            v = 0.7 * (0 + 0.3 * 4)           = 0.84
    #   d = -2.6  m = 3.82           v = 0.7 * (0.84 + 0.3 * 6.76)     = 2.0076
    #   d = 4.18  m = 5.074          v = 0.7 * (2.0076 + 0.3 * 17.4724) = 5.074524
    mean, std = fc.ewma([4, 6, 2, 8])
    assert mean == pytest.approx(5.074)
    assert std == pytest.approx(math.sqrt(5.074524))
    assert fc.DEFAULT_ALPHA == 0.3


def test_ewma_of_constant_and_empty_series() -> None:
    assert fc.ewma([5] * 10) == (5.0, 0.0)
    assert fc.ewma([]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        fc.ewma([1, 2], alpha=0)
    with pytest.raises(ValueError, match="alpha"):
        fc.ewma([1, 2], alpha=1.5)


def test_z_score_from_the_service_level() -> None:
    assert round(fc.z_score(0.95), 3) == 1.645
    assert round(fc.z_score(0.99), 3) == 2.326
    assert fc.z_score(0.5) == pytest.approx(0.0)
    for bad in (0, 1, 1.2, -0.1):
        with pytest.raises(ValueError, match="service level"):
            fc.z_score(bad)


def test_safety_stock_and_reorder_point_by_hand() -> None:
    # z(0.95) * sigma 2 * sqrt(9 days) = 1.6448536 * 6 = 9.8691
    assert fc.safety_stock(2, 9, 0.95) == pytest.approx(9.869122, abs=1e-6)
    assert fc.lead_time_demand(3, 9) == 27
    # ceil(27 + 9.8691) = 37
    assert fc.reorder_point(3, 2, 9, 0.95) == 37
    # no variability: exactly the lead-time demand, not rounded up past it
    assert fc.reorder_point(5, 0, 7) == 35
    assert fc.reorder_point(0.1, 0, 30) == 3  # 3.0000000000000004 in floating point is still 3
    assert fc.reorder_point(0, 0, 7) == 0
    # a service level below one half asks for no safety stock (never negative)
    assert fc.safety_stock(2, 9, 0.3) == 0
    with pytest.raises(ValueError, match="lead time"):
        fc.reorder_point(1, 1, -1)


def test_order_quantity_up_to_reorder_point_plus_cover() -> None:
    # position 10 <= reorder point 37: order up to 37 + 3/day * 14 days = 79, i.e. 69 units
    assert fc.order_quantity(10, 37, 3, 14) == 69
    assert fc.order_quantity(37, 37, 3, 14) == 42  # at the reorder point: reorder
    assert fc.order_quantity(38, 37, 3, 14) == 0  # above it: not yet
    assert fc.order_quantity(-5, 0, 0, 14) == 5  # oversold position: at least back to zero
    assert fc.order_quantity(0, 0, 0, 14) == 0  # no demand, nothing to order
    with pytest.raises(ValueError, match="cover"):
        fc.order_quantity(0, 0, 0, -1)


def test_days_of_cover() -> None:
    assert fc.days_of_cover(30, 3) == 10.0
    assert fc.days_of_cover(30, 0) is None
    assert fc.days_of_cover(-2, 3) == 0.0


def test_plan_puts_it_together() -> None:
    # Demand 4, 6, 2, 8 (mean 5.074, var 5.074524), lead time 4 days, 95%:
    #   lead-time demand 20.296; safety stock 1.6448536 * 2.252671 * 2 = 7.410627; reorder point 28
    #   position 12 + 6 = 18 <= 28: order up to 28 + 5.074 * 10 = 78.74 -> 61 units
    plan = fc.plan([4, 6, 2, 8], available=12, incoming=6, lead_time_days=4, service_level=0.95, cover_days=10)
    assert plan.mean_daily == pytest.approx(5.074)
    assert plan.std_daily == pytest.approx(2.252671, abs=1e-6)
    assert plan.lead_time_demand == pytest.approx(20.296)
    assert plan.safety_stock == pytest.approx(7.410627, abs=1e-5)
    assert plan.reorder_point == 28
    assert plan.position == 18
    assert plan.order_quantity == 61
    assert plan.days_of_cover == pytest.approx(12 / 5.074)


def test_plan_without_demand() -> None:
    plan = fc.plan([0] * 60, available=7)
    assert (plan.mean_daily, plan.std_daily, plan.reorder_point, plan.order_quantity) == (0, 0, 0, 0)
    assert plan.days_of_cover is None
    assert plan.lead_time_days == fc.DEFAULT_LEAD_TIME_DAYS == 7
