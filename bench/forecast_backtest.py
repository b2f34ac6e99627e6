"""Forecast backtest (`make bench-forecast`): the demand models of common.inventory.demand against naive ones,
on real public demand that an installed package ships (nothing is downloaded).

    python bench/forecast_backtest.py                 # every origin, 7-day horizon
    python bench/forecast_backtest.py --step 7        # one origin a week (quicker)

Series (both from pmdarima's `load_taylor`: half-hourly electricity demand in England and Wales, Monday
5 June to Sunday 27 August 2000, 84 days; Taylor 2003):

  smooth   the daily total (MWh): weekday/weekend season, a slow summer trend
  peaks    per day, the half-hours in the series' top 2% of demand: a count that is zero on 81% of days, as
           a slow seller's sales are, and that fades out as the summer's demand falls (84 days)
  surges   per day, the half-hours whose demand beat the same half-hour a week before by more than 4%: zero
           on 71% of days, lumpy (a heatwave in August), not fading (77 days: the first week has no week before)

Rolling origin: at each origin t (from day `--min-train` on, every `--step` days, while t + horizon fits),
each method sees at most the last 60 days before t (the engine's history window) and forecasts the next
`--horizon` (7: the default lead time) days. Errors over all origins and days:

  MAPE   mean |e| / y over days with y > 0 (undefined on zeros: the intermittent rows leave it out)
  WAPE   sum |e| / sum y
  MASE   MAE / the in-sample MAE of the one-season naive forecast on the training window, averaged
  LT-WAPE  WAPE of the lead-time total (the sum over the horizon), which is what a reorder point uses
  covered  for the engine's own methods: the share of origins where the reorder point `fc.plan` sets (service
           level 0.95, lead time = the horizon) was at least the lead-time demand; 95% is on target
  ROP/demand  those reorder points summed over the lead-time demand summed: the stock that bought the cover

Methods: `model` = what the engine's rule picks (common.inventory.demand.choose_model), `ets`, `tsb`,
`croston` (statsforecast's CrostonClassic), `ewma` (the engine before models), `seasonal-naive` (the same
weekday last week), `naive` (yesterday, every day). Then the time `fc.plan` takes for 200 60-day series.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.inventory import demand as dm
from common.inventory import forecast as fc

HISTORY_DAYS = fc.DEFAULT_HISTORY_DAYS
SEASON = dm.SEASON_DAYS
Forecaster = Callable[[np.ndarray, int], np.ndarray]


def taylor_daily() -> np.ndarray:
    """Daily electricity demand, MWh (48 half-hours of MW, times 0.5 h)."""
    from pmdarima.datasets import load_taylor

    return np.asarray(load_taylor(), dtype=float).reshape(-1, 48).sum(axis=1) / 2


def taylor_peaks(quantile: float = 0.98) -> np.ndarray:
    """Half-hours per day in the series' top (1 - quantile) of demand: a zero-inflated count."""
    from pmdarima.datasets import load_taylor

    half_hours = np.asarray(load_taylor(), dtype=float)
    return (half_hours > np.quantile(half_hours, quantile)).reshape(-1, 48).sum(axis=1).astype(float)


def taylor_surges(threshold: float = 0.04) -> np.ndarray:
    """Half-hours per day more than `threshold` above the same half-hour a week earlier."""
    from pmdarima.datasets import load_taylor

    half_hours = np.asarray(load_taylor(), dtype=float)
    week = 48 * 7
    surge = half_hours[week:] / half_hours[:-week] - 1 > threshold
    return surge.reshape(-1, 48).sum(axis=1).astype(float)


def _engine(model: dm.DemandModel | None) -> Forecaster:
    def forecast(y: np.ndarray, h: int) -> np.ndarray:
        return np.asarray(dm.forecast_demand(list(y), h, alpha=fc.DEFAULT_ALPHA, model=model).daily)

    return forecast


def _reorder_point(model: dm.DemandModel | None) -> Callable[[np.ndarray, int], int]:
    def point(y: np.ndarray, h: int) -> int:
        plan = fc.plan(list(y), available=0, lead_time_days=h, alpha=fc.DEFAULT_ALPHA, model=model)
        return plan.reorder_point

    return point


def croston(y: np.ndarray, h: int) -> np.ndarray:
    from statsforecast.models import CrostonClassic

    return np.asarray(CrostonClassic().forecast(y=y, h=h)["mean"])


def seasonal_naive(y: np.ndarray, h: int) -> np.ndarray:
    return np.array([y[len(y) - SEASON + (i % SEASON)] for i in range(h)])


def naive(y: np.ndarray, h: int) -> np.ndarray:
    return np.full(h, y[-1])


METHODS: dict[str, Forecaster] = {
    "model": _engine(None),
    "ets": _engine(dm.DemandModel.ETS),
    "tsb": _engine(dm.DemandModel.TSB),
    "croston": croston,
    "ewma": _engine(dm.DemandModel.EWMA),
    "seasonal-naive": seasonal_naive,
    "naive": naive,
}


# What the engine would set as the reorder point, for the methods that are the engine's
REORDER_POINTS = {
    "model": _reorder_point(None),
    "ets": _reorder_point(dm.DemandModel.ETS),
    "tsb": _reorder_point(dm.DemandModel.TSB),
    "ewma": _reorder_point(dm.DemandModel.EWMA),
}


@dataclass(frozen=True)
class Score:
    method: str
    mape: float | None
    wape: float
    mase: float
    lt_wape: float
    origins: int
    covered: float | None  # share of origins whose lead-time demand the reorder point covered
    stock: float | None  # the reorder points over the lead-time demand, summed over origins: what it costs


def backtest(series: Sequence[float], method: str, *, horizon: int = 7, min_train: int = 28, step: int = 1) -> Score:
    """Rolling-origin errors of `method` on `series` (see the module docstring)."""
    y = np.asarray(series, dtype=float)
    forecaster = METHODS[method]
    errors, actuals, scaled, totals, total_errors, points = [], [], [], [], [], []
    origins = range(min_train, len(y) - horizon + 1, step)
    for t in origins:
        train, test = y[max(0, t - HISTORY_DAYS) : t], y[t : t + horizon]
        predicted = np.clip(forecaster(train, horizon), 0, None)
        e = np.abs(test - predicted)
        errors.append(e)
        actuals.append(test)
        scale = np.mean(np.abs(train[SEASON:] - train[:-SEASON]))
        scaled.append(np.mean(e) / scale if scale > 0 else np.nan)
        totals.append(test.sum())
        total_errors.append(abs(test.sum() - predicted.sum()))
        if method in REORDER_POINTS:
            points.append(REORDER_POINTS[method](train, horizon))
    e_all, y_all = np.concatenate(errors), np.concatenate(actuals)
    positive = y_all > 0
    mape = float(np.mean(e_all[positive] / y_all[positive])) if positive.all() else None
    return Score(
        method=method,
        mape=mape,
        wape=float(e_all.sum() / y_all.sum()),
        mase=float(np.nanmean(scaled)),
        lt_wape=float(sum(total_errors) / sum(totals)),
        origins=len(origins),
        covered=float(np.mean(np.array(totals) <= np.array(points))) if points else None,
        stock=float(sum(points) / sum(totals)) if points else None,
    )


def _row(name: str, s: Score) -> str:
    mape = "-" if s.mape is None else f"{s.mape:.1%}"
    covered = "-" if s.covered is None else f"{s.covered:.0%}"
    stock = "-" if s.stock is None else f"{s.stock:.2f}"
    errors = f"{mape} | {s.wape:.1%} | {s.mase:.2f} | {s.lt_wape:.1%}"
    return f"| {name} | {s.method} | {errors} | {covered} | {stock} | {s.origins} |"


def time_plans(count: int = 200) -> tuple[float, float]:
    """Seconds for `fc.plan` on the first series (including statsforecast's import) and then on `count`
    60-day series, half smooth and half intermittent windows of the series above, as one API call plans them."""
    smooth, peaks = taylor_daily() / 1000, taylor_peaks()
    windows = [(smooth if i % 2 else peaks)[i % 24 : i % 24 + HISTORY_DAYS] for i in range(count)]
    started = time.perf_counter()
    fc.plan(list(windows[1]), available=10)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for window in windows:
        fc.plan(list(window), available=10)
    return first, time.perf_counter() - started


INTERMITTENT = ["model", "tsb", "croston", "ewma", "seasonal-naive", "naive"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=fc.DEFAULT_LEAD_TIME_DAYS)
    parser.add_argument("--min-train", type=int, default=28)
    parser.add_argument("--step", type=int, default=1)
    args = parser.parse_args(argv)
    first, total = time_plans()  # first: statsforecast is not imported yet
    runs = {
        "smooth": (taylor_daily(), ["model", "ets", "ewma", "seasonal-naive", "naive"]),
        "peaks": (taylor_peaks(), INTERMITTENT),
        "surges": (taylor_surges(), INTERMITTENT),
    }
    print("| series | method | MAPE | WAPE | MASE | LT-WAPE | covered | ROP/demand | origins |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (series, methods) in runs.items():
        picked = dm.choose_model(list(series[-HISTORY_DAYS:])).value
        for method in methods:
            score = backtest(series, method, horizon=args.horizon, min_train=args.min_train, step=args.step)
            print(_row(f"{name} (picks {picked})", score))
    print(f"\nplan(): first series {first:.2f} s (with the import), then 200 series {total:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
