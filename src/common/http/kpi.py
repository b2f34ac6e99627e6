"""/v1/kpi: the KPIs of a period (common.kpi); docs/operations.md#kpis-and-the-dashboard defines each."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from common.access.contracts import ApiKey
from common.http.auth import READ_ALL, api_of

router = APIRouter(tags=["kpi"])


class KpiOut(BaseModel):
    """Rates are fractions (0.95 = 95%); null where there was nothing to measure (e.g. no delivery)."""

    start: date
    end: date
    orders: int = Field(description="Orders placed in the period")
    orders_per_day: list[int] = Field(description="Orders placed each UTC day, start to end")
    on_time_rate: float | None = Field(description="Delivered by promised_delivery, of those delivered with one")
    on_time_measured: int
    fill_rate: float | None = Field(description="Order lines in stock at the first allocation")
    backorder_rate: float | None = Field(description="Orders that waited for stock")
    pick_to_ship_p50_s: float | None = Field(description="Seconds from PICKING to the carrier's hands, median")
    pick_to_ship_p95_s: float | None
    shipping_cost_per_order_cents: float | None
    return_rate: float | None = Field(description="Delivered orders with a return")
    return_reasons: dict[str, int]
    inventory_turns: float | None
    days_of_cover: float | None
    units_shipped: int
    forecast_mape: float | None
    forecast_wape: float | None
    orders_by_status: dict[str, int]


@router.get("/v1/kpi", response_model=KpiOut, summary="KPIs of a period")
async def kpi(
    request: Request,
    _: Annotated[ApiKey, Depends(READ_ALL)],
    start: Annotated[date, Query(alias="from", description="First UTC day", examples=["2026-03-01"])],
    end: Annotated[date, Query(alias="to", description="Last UTC day (inclusive)", examples=["2026-03-31"])],
) -> KpiOut:
    """The KPIs of the orders placed from `from` to `to` and of the stock moved then. A `to` before `from`, or a
    period over 366 days, is 422."""
    report = await api_of(request).kpi(start, end)
    return KpiOut.model_validate(report.to_json())
