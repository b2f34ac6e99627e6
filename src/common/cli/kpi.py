"""`fulfill kpi`: the KPIs of a period (common.kpi), from the database and Temporal."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from common.api import FulfillmentApi
from common.api.kpi import period
from common.cli._base import out, print_json, run_async
from common.cli._output import key, table
from common.config import get_settings
from common.kpi import KpiReport
from common.privacy import connect

_DAY = ["%Y-%m-%d"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def rows(report: KpiReport) -> list[tuple[str, str]]:
    """The report as (KPI, value) lines, in the order ops read them."""
    reasons = ", ".join(f"{r} {n}" for r, n in report.return_reasons.items()) or "-"
    cost = report.shipping_cost_per_order_cents
    return [
        ("orders", str(report.orders)),
        ("orders per day", " ".join(str(n) for n in report.orders_per_day)),
        ("on-time delivery", f"{_pct(report.on_time_rate)} of {report.on_time_measured} delivered"),
        ("fill rate", _pct(report.fill_rate)),
        ("backorder rate", _pct(report.backorder_rate)),
        ("pick-to-ship p50", _duration(report.pick_to_ship_p50_s)),
        ("pick-to-ship p95", _duration(report.pick_to_ship_p95_s)),
        ("shipping cost per order", "-" if cost is None else f"{cost / 100:.2f}"),
        ("return rate", _pct(report.return_rate)),
        ("return reasons", reasons),
        ("units shipped", str(report.units_shipped)),
        ("inventory turns", _num(report.inventory_turns)),
        ("days of cover", _num(report.days_of_cover, " d")),
        ("forecast MAPE", _pct(report.forecast_mape)),
        ("forecast WAPE", _pct(report.forecast_wape)),
    ]


@run_async
async def kpi(
    start: Annotated[datetime, typer.Option("--from", formats=_DAY, help="First UTC day, YYYY-MM-DD.")],
    end: Annotated[datetime, typer.Option("--to", formats=_DAY, help="Last UTC day, YYYY-MM-DD (inclusive).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """KPIs of the orders placed from --from to --to (UTC days, inclusive): orders per day, on-time delivery, fill
    and backorder rates, pick-to-ship, shipping cost, returns, inventory turns, days of cover, forecast error.
    docs/operations.md#kpis-and-the-dashboard defines each."""
    period(start.date(), end.date())  # a bad range is refused before anything is connected
    settings = get_settings()
    async with await FulfillmentApi.connect(settings, client=await connect(settings)) as api:
        report = await api.kpi(start.date(), end.date())
    if as_json:
        print_json(report.to_json())
        return
    shown = table(key("KPI"), "value", title=f"{report.start} .. {report.end}")
    for name, value in rows(report):
        shown.add_row(name, value)
    out.print(shown)
