"""One PNG per SKU for `fulfill inventory forecast --chart-dir`: demand history with its exponentially
weighted forecast, and on hand against the reorder point per warehouse. Matplotlib, Agg backend (no
display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from common.inventory import forecast as fc
from common.inventory.planning import StockForecast

FORECAST_DAYS = 14


def render_sku_chart(
    path: Path,
    forecasts: Sequence[StockForecast],
    on_hand: dict[str, list[int]],
    *,
    alpha: float = fc.DEFAULT_ALPHA,
) -> Path:
    """Draw one SKU (all its warehouses in `forecasts`) to `path`. `on_hand`: warehouse -> end-of-day on
    hand over the same days as the demand history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not forecasts:
        raise ValueError("nothing to draw")
    sku = forecasts[0].sku
    start = forecasts[0].start
    length = len(forecasts[0].demand)
    days = [start + timedelta(days=i) for i in range(length)]
    total = [sum(f.demand[i] for f in forecasts) for i in range(length)]
    smoothed = [m for m, _ in fc.ewma_path(total, alpha)]
    mean, std = fc.ewma(total, alpha)
    ahead = [days[-1] + timedelta(days=i) for i in range(1, FORECAST_DAYS + 1)] if days else []

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    try:
        top.bar(days, total, color="#9db4d3", label="units reserved per day")
        top.plot(days, smoothed, color="#1f4e8c", linewidth=2, label=f"EWMA (alpha {alpha:g})")
        if ahead:
            top.plot([days[-1], *ahead], [smoothed[-1], *[mean] * len(ahead)], "--", color="#d9822b", label="forecast")
            top.fill_between(ahead, max(mean - std, 0), mean + std, color="#d9822b", alpha=0.15, label="±1 sd")
        top.set_ylabel("units / day")
        top.set_title(f"{sku}: demand (all warehouses)")
        top.legend(loc="upper left", fontsize="small")

        colors = ["#1f4e8c", "#2e8b57", "#8b2e5c", "#8b6f2e", "#555555"]
        for i, f in enumerate(forecasts):
            color = colors[i % len(colors)]
            series = on_hand.get(f.warehouse, [])
            if series:
                bottom.step(days[: len(series)], series, where="post", color=color, label=f"{f.warehouse} on hand")
            point = f.position.reorder_point
            label = "reorder point"
            if point is None:
                point, label = f.plan.reorder_point, "reorder point (forecast)"
            bottom.axhline(point, color=color, linestyle=":", linewidth=1.5, label=f"{f.warehouse} {label} {point}")
        bottom.set_ylabel("units")
        bottom.set_title(f"{sku}: on hand against the reorder point")
        bottom.legend(loc="upper left", fontsize="small")
        bottom.set_xlabel("day (UTC)")
        fig.autofmt_xdate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def chart_file(directory: Path, sku: str) -> Path:
    # SKUs are upper-case letters, digits, '.', '_', '-': safe file names as they are.
    return directory / f"{sku}.png"


def chart_days(start: date, length: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(length)]
