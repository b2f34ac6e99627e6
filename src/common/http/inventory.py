"""/v1/inventory: stock levels, receipts, counts, adjustments, history and forecast."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from common.access.contracts import ApiKey
from common.api import StockUpdate
from common.http.auth import OPS, OPS_OR_WAREHOUSE, READ_WAREHOUSE, api_of
from common.http.problems import NOT_FOUND
from common.http.schemas import (
    AdjustBody,
    CountBody,
    ForecastOut,
    LedgerEntryOut,
    LowStockOut,
    ReceiveStockBody,
    StockLevelOut,
    StockUpdateOut,
)
from common.models import SKU_PATTERN

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, examples=["MUG-RED"])]
WarehouseQuery = Annotated[str | None, Query(max_length=32, description="Only this warehouse")]


@router.get("", response_model=list[StockLevelOut], summary="Stock levels")
async def stock_levels(
    request: Request,
    _: Annotated[ApiKey, Depends(READ_WAREHOUSE)],
    sku: Annotated[str | None, Query(max_length=64)] = None,
    warehouse: WarehouseQuery = None,
) -> list[StockLevelOut]:
    return [StockLevelOut.model_validate(level) for level in await api_of(request).stock(sku, warehouse)]


@router.get("/forecast", response_model=list[ForecastOut], summary="Demand forecast and reorder plan")
async def forecast(
    request: Request,
    _: Annotated[ApiKey, Depends(READ_WAREHOUSE)],
    sku: Annotated[str | None, Query(max_length=64)] = None,
    warehouse: WarehouseQuery = None,
) -> list[ForecastOut]:
    return [
        ForecastOut(
            sku=f.sku,
            warehouse=f.warehouse,
            available=f.position.available,
            incoming=f.position.incoming,
            history_days=len(f.demand),
            demand_model=f.plan.model,
            demand_per_day=round(f.plan.mean_daily, 3),
            safety_stock=round(f.plan.safety_stock, 3),
            reorder_point=f.plan.reorder_point,
            days_of_cover=None if f.plan.days_of_cover is None else round(f.plan.days_of_cover, 1),
            order_quantity=f.plan.order_quantity,
        )
        for f in await api_of(request).stock_forecasts(sku, warehouse)
    ]


@router.post("/{sku}/receive", response_model=StockLevelOut, responses=NOT_FOUND, summary="Receive stock")
async def receive(
    request: Request, sku: SkuPath, body: ReceiveStockBody, _: Annotated[ApiKey, Depends(OPS_OR_WAREHOUSE)]
) -> StockLevelOut:
    """Goods in (closing purchase order `po` if given); wakes the orders waiting for this SKU."""
    level = await api_of(request).receive_stock(sku, body.quantity, body.warehouse, po=body.po)
    return StockLevelOut.model_validate(level)


def _update_out(update: StockUpdate) -> StockUpdateOut:
    change = update.change
    return StockUpdateOut(
        sku=change.sku,
        warehouse=change.warehouse,
        previous_on_hand=change.previous_on_hand,
        on_hand=change.on_hand,
        reserved=change.reserved,
        available=change.available,
        delta=change.delta,
        released_orders=change.released_orders,
        orders_told=update.orders_told.ok,
        low_stock=[LowStockOut.model_validate(c) for c in update.low_stock],
        ops_alerted=update.ops_alerted,
    )


@router.post("/{sku}/count", response_model=StockUpdateOut, responses=NOT_FOUND, summary="Record a physical count")
async def count(
    request: Request, sku: SkuPath, body: CountBody, _: Annotated[ApiKey, Depends(OPS_OR_WAREHOUSE)]
) -> StockUpdateOut:
    """The difference becomes a count ledger row; below the reserved units, the newest orders' unpicked reservations
    are released (they re-reserve or wait for stock)."""
    return _update_out(await api_of(request).count_stock(sku, body.warehouse, body.counted, reason=body.reason))


@router.post("/{sku}/adjust", response_model=StockUpdateOut, responses=NOT_FOUND, summary="Adjust on hand")
async def adjust(
    request: Request, sku: SkuPath, body: AdjustBody, _: Annotated[ApiKey, Depends(OPS)]
) -> StockUpdateOut:
    return _update_out(await api_of(request).adjust_stock(sku, body.warehouse, body.delta, reason=body.reason))


@router.get("/{sku}/history", response_model=list[LedgerEntryOut], responses=NOT_FOUND, summary="Stock history")
async def history(
    request: Request,
    sku: SkuPath,
    _: Annotated[ApiKey, Depends(READ_WAREHOUSE)],
    warehouse: WarehouseQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[LedgerEntryOut]:
    return [LedgerEntryOut.model_validate(e) for e in await api_of(request).stock_history(sku, warehouse, limit=limit)]
