"""Which model forecasts a daily demand series, and its forecast over the lead time. Pure, no I/O.

The rule, per SKU x warehouse series (units per day, oldest first, zero-filled):

1. History starts at the first day with demand (the zeros before it are days the SKU was not yet selling,
   not days it sold none). Fewer than `MIN_MODEL_DAYS` (21) days of history, or none at all: **EWMA**, the
   exponentially weighted mean and variance of `forecast.ewma` over the whole window, as before models.
2. Otherwise, if more than half of those days (`INTERMITTENT_ZERO_SHARE`) sold nothing: **TSB**
   (Teunter-Syntetos-Babai), intermittent demand: it smooths the size of a sale and the chance of a sale
   on a day apart, and unlike Croston lowers the forecast while no sale comes (a SKU going out of fashion).
   Above one half, because a weekly pattern such as a closed weekend (2/7 zero days) stays with the model below.
3. Otherwise: **ETS** with an additive damped trend and an additive 7-day season (Holt-Winters in state space
   form, statsforecast's AutoETS with model "AAA", damped): weekday/weekend patterns and demand that rises
   or falls, the trend damped so that 60 days of growth are not extrapolated weeks ahead at full slope.

Mean daily demand over the lead time L: the mean of the model's forecast for the next max(L, 1) days,
never below 0. The std-dev of the lead-time total, for safety stock: ETS's h-step std-devs (from its
residual variance and state-space form) summed over the lead time; TSB's one-step residual std-dev times
sqrt(L). `std_daily` is that over sqrt(L), so forecast.safety_stock's z * std_daily * sqrt(L) is z times it.

statsforecast, not statsmodels: its ETS fits about 10x faster (200 series in under 1 s against ~10 s), and
statsmodels has no Croston/TSB; it is imported on first use (about 1 s). docs/performance.md, "Forecast
backtest", has how these models do against seasonal-naive on real demand.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist
from typing import Any

SEASON_DAYS = 7
MIN_MODEL_DAYS = 21  # three weeks: ETS needs a few full seasons to tell the weekday pattern from a trend
INTERMITTENT_ZERO_SHARE = 0.5
TSB_ALPHA_DEMAND = 0.1  # the usual smoothing for intermittent demand (Teunter et al. 2011)
TSB_ALPHA_PROBABILITY = 0.1
_Z95 = NormalDist().inv_cdf(0.975)  # half a 95% interval in std-devs


class DemandModel(StrEnum):
    EWMA = "ewma"
    TSB = "tsb"
    ETS = "ets"


@dataclass(frozen=True)
class DemandForecast:
    model: DemandModel
    mean_daily: float  # mean forecast daily demand over the lead time
    std_daily: float  # the lead-time total's std-dev over sqrt(lead time), as forecast.safety_stock takes it
    daily: tuple[float, ...]  # the forecast, day by day


def history(series: Sequence[float]) -> Sequence[float]:
    """The series from its first day with demand on (empty when there is none)."""
    for i, x in enumerate(series):
        if x > 0:
            return series[i:]
    return series[:0]


def choose_model(series: Sequence[float]) -> DemandModel:
    """The model the rule of the module docstring picks for `series`."""
    seen = history(series)
    if len(seen) < MIN_MODEL_DAYS:
        return DemandModel.EWMA
    zeros = sum(1 for x in seen if x <= 0)
    return DemandModel.TSB if zeros / len(seen) > INTERMITTENT_ZERO_SHARE else DemandModel.ETS


def forecast_demand(
    series: Sequence[float], horizon: int, *, alpha: float, model: DemandModel | None = None
) -> DemandForecast:
    """Forecast `horizon` (at least 1) days after `series` with `model` (default: `choose_model`); `alpha` is
    the EWMA fallback's smoothing."""
    from common.inventory.forecast import ewma  # here: forecast imports this module

    horizon = max(horizon, 1)
    model = model or choose_model(series)
    if model is DemandModel.EWMA:
        mean, std = ewma(series, alpha)
        return DemandForecast(model, mean, std, (mean,) * horizon)
    import numpy as np

    y = np.asarray(history(series), dtype=float)
    if y.size == 0:  # nothing sold in the window: no model has anything to fit
        return forecast_demand(series, horizon, alpha=alpha, model=DemandModel.EWMA)
    result = _fit(model, y, horizon)
    daily = np.clip(result["mean"], 0.0, None)
    residuals = (y - result["fitted"])[1:]  # the first fitted value is the starting guess, not a forecast
    residuals = residuals[np.isfinite(residuals)]
    one_day = float(np.sqrt(np.mean(residuals**2))) if residuals.size else 0.0
    # The lead-time total's std-dev: ETS's own h-step std-devs, summed (a bad week's errors go the same way:
    # the backtest's reorder points cover ~95% of weeks so, ~85% if taken as independent); TSB has no
    # intervals, so its residuals' std-dev as if independent.
    lead = float(result["sigma"].sum()) if "sigma" in result else one_day * math.sqrt(horizon)
    std = lead / math.sqrt(horizon)
    mean = float(daily.mean())
    if not (math.isfinite(mean) and math.isfinite(std)):  # a fit that diverged: plan with the EWMA instead
        return forecast_demand(series, horizon, alpha=alpha, model=DemandModel.EWMA)
    return DemandForecast(model, mean, std, tuple(float(x) for x in daily))


def _fit(model: DemandModel, y: Any, horizon: int) -> dict[str, Any]:
    import numpy as np
    from statsforecast.models import TSB, AutoETS

    if model is DemandModel.TSB:
        tsb = TSB(alpha_d=TSB_ALPHA_DEMAND, alpha_p=TSB_ALPHA_PROBABILITY)
        out: dict[str, Any] = tsb.forecast(y=y, h=horizon, fitted=True)
        return out
    if float(y.std()) == 0.0:  # a constant series leaves ETS nothing to fit (it would divide by zero)
        return {"mean": np.full(horizon, y[0]), "fitted": y.copy(), "sigma": np.zeros(horizon)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optimiser chatter on short series; the fit is still usable
        ets = AutoETS(season_length=SEASON_DAYS, model="AAA", damped=True)
        out = ets.forecast(y=y, h=horizon, fitted=True, level=[95])
    out["sigma"] = (out["hi-95"] - out["mean"]) / _Z95
    return out
