"""Demand forecasting and reorder planning: pure functions, no I/O.

- Daily demand: units reserved per UTC day (held and committed reservations; released ones were not
  demand that shipped), zero-filled over the history window.
- Daily demand forecast over the lead time: from a model chosen per series (`demand`: ETS with a weekly
  season and damped trend, TSB for intermittent demand, or, for short histories, the EWMA below), whose mean
  over the lead time is `mean_daily`; `std_daily` is the std-dev of its lead-time total over sqrt(L).
- The short-history fallback, an exponentially weighted mean and variance (West's / Finch's incremental
  form), with smoothing `alpha`:
      d_t = x_t - m_{t-1};  m_t = m_{t-1} + alpha * d_t;  v_t = (1 - alpha) * (v_{t-1} + alpha * d_t^2)
  starting from m_0 = x_0, v_0 = 0. The forecast daily demand is the last m, its std-dev sqrt(last v).
- Demand over the supplier lead time L (days): mean * L.
- Safety stock: z * sigma * sqrt(L), z = the standard normal quantile of the service level
  (0.95 -> 1.645), so stock covers lead-time demand in that share of replenishment cycles.
- Reorder point: ceil(lead-time demand + safety stock), in whole units.
- Suggested order: when the stock position (available + incoming) is at or below the reorder point,
  enough to bring it up to reorder point + `cover_days` of mean demand; otherwise 0. Never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist

from common.inventory import demand as dm

DEFAULT_ALPHA = 0.3
DEFAULT_LEAD_TIME_DAYS = 7
DEFAULT_SERVICE_LEVEL = 0.95
DEFAULT_COVER_DAYS = 14
DEFAULT_HISTORY_DAYS = 60

_EPS = 1e-9


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")


def _check_service_level(service_level: float) -> None:
    if not 0 < service_level < 1:
        raise ValueError(f"service level must be between 0 and 1 (exclusive), e.g. 0.95; got {service_level}")


def _check_lead_time(lead_time_days: float) -> None:
    if lead_time_days < 0:
        raise ValueError(f"lead time must be >= 0 days, got {lead_time_days}")


def history_window(days: int, today: date) -> tuple[date, int]:
    """The first day and length of a `days`-day history ending with `today` (inclusive)."""
    if days < 1:
        raise ValueError(f"history must be at least 1 day, got {days}")
    return today - timedelta(days=days - 1), days


def daily_demand(events: Iterable[tuple[datetime, int]], start: date, days: int) -> list[int]:
    """Units per UTC day for `days` days from `start`; events outside the window are ignored."""
    series = [0] * days
    for at, quantity in events:
        day = (at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)).date()
        index = (day - start).days
        if 0 <= index < days:
            series[index] += quantity
    return series


def ewma_path(series: Sequence[float], alpha: float = DEFAULT_ALPHA) -> list[tuple[float, float]]:
    """(mean, std-dev) after each observation."""
    _check_alpha(alpha)
    path: list[tuple[float, float]] = []
    mean = var = 0.0
    for i, x in enumerate(series):
        if i == 0:
            mean, var = float(x), 0.0
        else:
            diff = x - mean
            mean += alpha * diff
            var = (1 - alpha) * (var + alpha * diff * diff)
        path.append((mean, math.sqrt(max(var, 0.0))))
    return path


def ewma(series: Sequence[float], alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Exponentially weighted mean and std-dev of `series`; (0, 0) for an empty series."""
    path = ewma_path(series, alpha)
    return path[-1] if path else (0.0, 0.0)


def z_score(service_level: float) -> float:
    """The standard normal quantile for a cycle service level: 0.95 -> 1.645 (3 d.p.)."""
    _check_service_level(service_level)
    return NormalDist().inv_cdf(service_level)


def lead_time_demand(mean_daily: float, lead_time_days: float) -> float:
    _check_lead_time(lead_time_days)
    return mean_daily * lead_time_days


def safety_stock(std_daily: float, lead_time_days: float, service_level: float = DEFAULT_SERVICE_LEVEL) -> float:
    """z * sigma * sqrt(L); never negative (a service level below 0.5 asks for none)."""
    _check_lead_time(lead_time_days)
    return max(0.0, z_score(service_level) * std_daily * math.sqrt(lead_time_days))


def _ceil(x: float) -> int:
    return math.ceil(x - _EPS) if x > 0 else 0


def reorder_point(
    mean_daily: float, std_daily: float, lead_time_days: float, service_level: float = DEFAULT_SERVICE_LEVEL
) -> int:
    """ceil(lead-time demand + safety stock)."""
    return _ceil(lead_time_demand(mean_daily, lead_time_days) + safety_stock(std_daily, lead_time_days, service_level))


def order_quantity(position: int, reorder_point: int, mean_daily: float, cover_days: float = DEFAULT_COVER_DAYS) -> int:
    """Units to order now: up to reorder point + `cover_days` of demand once `position` (available +
    incoming) is at or below the reorder point; else 0."""
    if cover_days < 0:
        raise ValueError(f"cover days must be >= 0, got {cover_days}")
    if position > reorder_point:
        return 0
    return max(0, _ceil(reorder_point + mean_daily * cover_days - position))


def days_of_cover(available: int, mean_daily: float) -> float | None:
    """How many days `available` lasts at the forecast rate; None when there is no demand."""
    if mean_daily <= _EPS:
        return None
    return max(available, 0) / mean_daily


@dataclass(frozen=True)
class ReorderPlan:
    mean_daily: float
    std_daily: float
    lead_time_days: int
    lead_time_demand: float
    safety_stock: float
    reorder_point: int
    position: int  # available + incoming
    order_quantity: int
    days_of_cover: float | None
    model: str = "ewma"  # the demand.DemandModel that forecast mean_daily and std_daily


def plan(
    series: Sequence[float],
    *,
    available: int,
    incoming: int = 0,
    lead_time_days: int = DEFAULT_LEAD_TIME_DAYS,
    service_level: float = DEFAULT_SERVICE_LEVEL,
    alpha: float = DEFAULT_ALPHA,
    cover_days: float = DEFAULT_COVER_DAYS,
    model: dm.DemandModel | None = None,
) -> ReorderPlan:
    """Everything above for one SKU (at one warehouse) from its daily demand series; `model` overrides the
    rule of `demand` (the backtest compares models so)."""
    _check_lead_time(lead_time_days)
    demand = dm.forecast_demand(series, lead_time_days, alpha=alpha, model=model)
    mean, std = demand.mean_daily, demand.std_daily
    rop = reorder_point(mean, std, lead_time_days, service_level)
    position = available + incoming
    return ReorderPlan(
        mean_daily=mean,
        std_daily=std,
        lead_time_days=lead_time_days,
        lead_time_demand=lead_time_demand(mean, lead_time_days),
        safety_stock=safety_stock(std, lead_time_days, service_level),
        reorder_point=rop,
        position=position,
        order_quantity=order_quantity(position, rop, mean, cover_days),
        days_of_cover=days_of_cover(available, mean),
        model=demand.model.value,
    )
