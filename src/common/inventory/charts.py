"""One PNG per SKU for `fulfill inventory forecast --chart-dir`: demand history with its EWMA and the
forecast of the model `demand` picks for it, and on hand against the reorder point, one panel per warehouse
(so that warehouses with the same stock do not hide each other). Matplotlib, Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.inventory import demand as dm
from common.inventory import forecast as fc
from common.inventory.planning import StockForecast

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORECAST_DAYS = 14


def demand_span(start: date, series: Sequence[Sequence[int]]) -> str:
    """What the demand history really covers, for a title: a 60-day window of a demo started this morning
    has one day of orders, and says so."""
    length = max(map(len, series), default=0)
    days = [start + timedelta(days=i) for i in range(length) if any(_at(s, i) for s in series)]
    if not days:
        return "no orders in it"
    if len(days) == 1:
        return f"orders on 1 day, {days[0]}"
    return f"orders on {len(days)} days, {days[0]} to {days[-1]}"


def _at(values: Sequence[int], i: int) -> int:
    return values[i] if i < len(values) else 0


def render_sku_chart(
    path: Path,
    forecasts: Sequence[StockForecast],
    on_hand: dict[str, list[int]],
    *,
    alpha: float = fc.DEFAULT_ALPHA,
) -> Path:
    """Draw one SKU (all its warehouses in `forecasts`) to `path`. `on_hand`: warehouse -> end-of-day on
    hand over the same days as the demand history."""
    import matplotlib.pyplot as plt

    fig = sku_figure(forecasts, on_hand, alpha=alpha)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def sku_figure(
    forecasts: Sequence[StockForecast], on_hand: dict[str, list[int]], *, alpha: float = fc.DEFAULT_ALPHA
) -> Figure:
    """The chart of `render_sku_chart`: demand on top, then one on-hand panel per warehouse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not forecasts:
        raise ValueError("nothing to draw")
    days = chart_days(forecasts[0].start, len(forecasts[0].demand))
    fig, axes = plt.subplots(
        1 + len(forecasts),
        1,
        figsize=(10, 4 + 2.4 * len(forecasts)),
        sharex=True,
        constrained_layout=True,
        squeeze=False,
    )
    _demand_panel(axes[0][0], forecasts, days, alpha)
    for i, f in enumerate(forecasts):
        _on_hand_panel(axes[i + 1][0], f, days, on_hand.get(f.warehouse, []), _COLORS[i % len(_COLORS)])
    axes[-1][0].set_xlabel("day (UTC)")
    fig.autofmt_xdate()
    return fig


_COLORS = ["#1f4e8c", "#2e8b57", "#8b2e5c", "#8b6f2e", "#555555"]


# The axes are Any: matplotlib's stubs do not take the dates it plots.
def _demand_panel(ax: Any, forecasts: Sequence[StockForecast], days: list[date], alpha: float) -> None:
    total = [sum(f.demand[i] for f in forecasts) for i in range(len(days))]
    smoothed = [m for m, _ in fc.ewma_path(total, alpha)]
    ahead = [days[-1] + timedelta(days=i) for i in range(1, FORECAST_DAYS + 1)] if days else []
    ax.bar(days, total, color="#9db4d3", label="units reserved per day")
    ax.plot(days, smoothed, color="#1f4e8c", linewidth=2, label=f"EWMA (alpha {alpha:g})")
    if ahead:
        f = dm.forecast_demand(total, FORECAST_DAYS, alpha=alpha)
        path = list(f.daily)
        ax.plot([days[-1], *ahead], [total[-1], *path], "--", color="#d9822b", label=f"forecast ({f.model})")
        low, high = [max(x - f.std_daily, 0) for x in path], [x + f.std_daily for x in path]
        ax.fill_between(ahead, low, high, color="#d9822b", alpha=0.15, label="±1 sd")
    span = demand_span(days[0], [f.demand for f in forecasts]) if days else "no data"
    ax.set_ylabel("units / day")
    ax.set_title(f"{forecasts[0].sku}: demand, all warehouses ({len(days)}-day window: {span})")
    ax.legend(loc="upper left", fontsize="small")


def _on_hand_panel(ax: Any, f: StockForecast, days: list[date], series: list[int], color: str) -> None:
    if series:
        ax.step(days[: len(series)], series, where="post", color=color, label=f"on hand (now {series[-1]})")
    point = f.position.reorder_point
    label = "reorder point"
    if point is None:
        point, label = f.plan.reorder_point, "reorder point (forecast)"
    ax.axhline(point, color=color, linestyle=":", linewidth=1.5, label=f"{label} {point}")
    ax.set_ylabel("units")
    ax.set_title(f"{f.sku} at {f.warehouse}: on hand against the reorder point")
    ax.legend(loc="upper left", fontsize="small")


def chart_file(directory: Path, sku: str) -> Path:
    # SKUs are upper-case letters, digits, '.', '_', '-': safe file names as they are.
    return directory / f"{sku}.png"


def chart_days(start: date, length: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(length)]
