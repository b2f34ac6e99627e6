"""Finding 13: the forecast chart shows every warehouse even when their on-hand lines would overlap, and its
history label says the span the data really covers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from common.inventory import forecast as fc
from common.inventory.charts import render_sku_chart, sku_figure
from common.inventory.contracts import InventoryPosition
from common.inventory.planning import StockForecast

TODAY = date(2026, 12, 1)


def _forecast(warehouse: str, demand: list[int]) -> StockForecast:
    position = InventoryPosition(
        sku="MUG-RED",
        warehouse=warehouse,
        on_hand=20,
        reserved=0,
        available=20,
        incoming=0,
        reorder_point=5,
        next_eta=None,
    )
    plan = fc.plan(demand, available=20, incoming=0, lead_time_days=7, service_level=0.95)
    return StockForecast(position, TODAY - timedelta(days=len(demand) - 1), demand, 7, plan)


def test_warehouses_with_the_same_stock_each_have_a_panel() -> None:
    demand = [0] * 59 + [3]
    forecasts = [_forecast("LDN-1", demand), _forecast("NYC-1", demand)]
    same = [20] * 60
    figure = sku_figure(forecasts, {"LDN-1": same, "NYC-1": same})
    titles = [ax.get_title() for ax in figure.axes]
    assert any("LDN-1" in t for t in titles) and any("NYC-1" in t for t in titles)
    panels = [ax for ax in figure.axes if any(w in ax.get_title() for w in ("LDN-1", "NYC-1"))]
    assert len(panels) == 2 and all(len(ax.get_lines()) >= 1 for ax in panels)


def test_the_history_label_says_what_the_data_covers(tmp_path: Path) -> None:
    forecasts = [_forecast("LDN-1", [0] * 59 + [3])]
    figure = sku_figure(forecasts, {"LDN-1": [20] * 60})
    assert "60-day window: orders on 1 day, 2026-12-01" in figure.axes[0].get_title()
    path = render_sku_chart(tmp_path / "MUG-RED.png", forecasts, {"LDN-1": [20] * 60})
    assert path.stat().st_size > 1000


def test_the_chart_draws_the_weekly_models_forecast() -> None:
    demand = [12, 14, 13, 15, 18, 30, 28] * 8 + [12, 14, 13, 15]
    figure = sku_figure([_forecast("LDN-1", demand)], {"LDN-1": [20] * 60})
    line = next(x for x in figure.axes[0].get_lines() if x.get_label() == "forecast (ets)")
    ahead = list(line.get_ydata())[1:]
    assert max(ahead) - min(ahead) > 10  # the weekend peak, not a flat line
