"""The model chosen per demand series, and what its forecast means for the reorder plan."""

from __future__ import annotations

import math

import pytest

from common.inventory import demand as dm
from common.inventory import forecast as fc

WEEK = [12, 14, 13, 15, 18, 30, 28]  # weekday sales, then a busy weekend


def weekly(weeks: int, growth: float = 0.0) -> list[float]:
    return [x + growth * i for i, x in enumerate(WEEK * weeks)]


def test_weekly_seasonal_series_gets_the_seasonal_model() -> None:
    assert dm.choose_model(weekly(8)) is dm.DemandModel.ETS


def test_mostly_zero_series_gets_tsb() -> None:
    series = [0, 0, 0, 3, 0, 0, 0, 0, 1, 0] * 6
    assert dm.choose_model(series) is dm.DemandModel.TSB


def test_five_days_of_history_stays_with_the_ewma() -> None:
    assert dm.choose_model([4, 6, 2, 8, 5]) is dm.DemandModel.EWMA
    # a 60-day window whose SKU started selling 5 days ago: the zeros before that are no history
    assert dm.choose_model([0] * 55 + [4, 6, 2, 8, 5]) is dm.DemandModel.EWMA
    assert dm.choose_model([0] * 60) is dm.DemandModel.EWMA


def test_closed_weekends_are_seasonal_not_intermittent() -> None:
    assert dm.choose_model([5, 6, 5, 7, 6, 0, 0] * 8) is dm.DemandModel.ETS


def test_seasonal_forecast_follows_the_weekend_peak() -> None:
    f = dm.forecast_demand(weekly(8), 7, alpha=0.3)
    # the series ends on a Sunday: the next 7 days are Monday..Sunday again
    assert f.daily[5] > f.daily[0] + 10  # Saturday well above Monday
    assert f.mean_daily == pytest.approx(sum(WEEK) / 7, rel=0.05)
    assert f.std_daily < 1  # the pattern repeats exactly: next to no residual error


def test_a_rising_trend_is_carried_into_the_lead_time() -> None:
    series = weekly(8, growth=0.5)  # +3.5 units a day per week
    plan = fc.plan(series, available=0, lead_time_days=14)
    last_week = sum(series[-7:]) / 7
    truth = sum(WEEK) / 7 + 0.5 * (56 + 69) / 2  # the next two weeks, had the growth gone on
    assert plan.model == "ets"
    assert plan.mean_daily > last_week + 2  # above last week's rate, not flat at it
    assert plan.mean_daily == pytest.approx(truth, rel=0.1)  # damped, so a little under the full slope


def test_intermittent_forecast_is_the_rate_and_drops_while_no_sale_comes() -> None:
    series = [0, 0, 0, 3, 0, 0, 0, 0, 1, 0] * 6
    f = dm.forecast_demand(series, 7, alpha=0.3)
    assert f.model is dm.DemandModel.TSB
    assert 0.2 < f.mean_daily < 0.8  # about 4 units every 10 days
    quiet = dm.forecast_demand([*series, *[0] * 20], 7, alpha=0.3)
    assert quiet.mean_daily < f.mean_daily / 2
    assert f.std_daily > 0


def test_plan_of_a_short_history_keeps_the_ewma_numbers() -> None:
    plan = fc.plan([4, 6, 2, 8], available=10, lead_time_days=7)
    assert plan.model == "ewma"
    assert plan.mean_daily == pytest.approx(5.074)
    assert plan.std_daily == pytest.approx(math.sqrt(5.074524))


def test_safety_stock_comes_from_the_model_residuals() -> None:
    noisy = [x + (3 if i % 3 == 0 else -1.5) for i, x in enumerate(weekly(8))]
    calm = dm.forecast_demand(weekly(8), 9, alpha=0.3)
    rough = dm.forecast_demand(noisy, 9, alpha=0.3)
    assert rough.std_daily > calm.std_daily + 1
    plan = fc.plan(noisy, available=0, lead_time_days=9)
    assert plan.safety_stock == pytest.approx(fc.safety_stock(rough.std_daily, 9))


def test_safety_stock_grows_faster_than_sqrt_lead_time_under_a_model() -> None:
    # ETS's errors build up over the lead time: a 4x longer lead time more than doubles the safety stock
    noisy = [x + (3 if i % 3 == 0 else -1.5) for i, x in enumerate(weekly(8))]
    short, long = fc.plan(noisy, available=0, lead_time_days=4), fc.plan(noisy, available=0, lead_time_days=16)
    assert long.safety_stock > 2.2 * short.safety_stock


def test_constant_demand_and_zero_lead_time() -> None:
    f = dm.forecast_demand([5.0] * 30, 0, alpha=0.3)
    assert f.model is dm.DemandModel.ETS
    assert f.mean_daily == pytest.approx(5.0)
    assert fc.plan([5] * 30, available=100, lead_time_days=0).reorder_point == 0


def test_a_model_asked_for_on_a_window_without_sales_falls_back_to_the_ewma() -> None:
    f = dm.forecast_demand([0] * 30, 7, alpha=0.3, model=dm.DemandModel.TSB)
    assert (f.model, f.mean_daily, f.std_daily) == (dm.DemandModel.EWMA, 0.0, 0.0)
