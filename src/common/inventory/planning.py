"""Forecasts and reorder plans for stored stock: reads the stock, reservation and catalogue stores, computes
with `forecast`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from common.catalog.store import CatalogStore
from common.inventory import forecast as fc
from common.inventory.contracts import InventoryPosition
from common.inventory.reservations import ReservationStore
from common.inventory.stock import StockStore


@dataclass(frozen=True)
class StockForecast:
    """One SKU at one warehouse: where it stands, its demand history and the reorder plan."""

    position: InventoryPosition
    start: date  # first day of `demand`
    demand: list[int]  # units reserved per day, oldest first, ending today
    lead_time_days: int
    plan: fc.ReorderPlan

    @property
    def sku(self) -> str:
        return self.position.sku

    @property
    def warehouse(self) -> str:
        return self.position.warehouse


class Stores(Protocol):
    """The stores planning reads (common.store.Store has them)."""

    catalog: CatalogStore
    stock: StockStore
    reservations: ReservationStore


async def stock_forecasts(
    store: Stores,
    *,
    sku: str | None = None,
    warehouse: str | None = None,
    days: int = fc.DEFAULT_HISTORY_DAYS,
    service_level: float = fc.DEFAULT_SERVICE_LEVEL,
    alpha: float = fc.DEFAULT_ALPHA,
    cover_days: float = fc.DEFAULT_COVER_DAYS,
    today: date | None = None,
) -> list[StockForecast]:
    """A forecast per (sku, warehouse) in the stock books, from `days` days of demand ending `today`."""
    fc.z_score(service_level)  # validates
    today = today or datetime.now(UTC).date()
    start, length = fc.history_window(days, today)
    since = datetime.combine(start, time.min, tzinfo=UTC)
    positions = await store.stock.inventory_positions(sku, warehouse)
    demand = await store.reservations.demand_history(since, sku, warehouse)
    lead_times = {p.sku: p.lead_time_days for p in await store.catalog.products()}
    inputs = []
    for position in positions:
        events = [(d.at, d.quantity) for d in demand if (d.sku, d.warehouse) == (position.sku, position.warehouse)]
        lead = lead_times.get(position.sku)
        lead_time = fc.DEFAULT_LEAD_TIME_DAYS if lead is None else lead
        inputs.append((position, fc.daily_demand(events, start, length), lead_time))

    def plans() -> list[StockForecast]:
        return [
            StockForecast(
                position,
                start,
                series,
                lead_time,
                fc.plan(
                    series,
                    available=position.available,
                    incoming=position.incoming,
                    lead_time_days=lead_time,
                    service_level=service_level,
                    alpha=alpha,
                    cover_days=cover_days,
                ),
            )
            for position, series, lead_time in inputs
        ]

    # Fitting a model per series is CPU work (about 2 ms each, 1 s to import statsforecast the first time):
    # off the event loop, so that the API's other requests are not held up behind a large catalogue.
    return await asyncio.to_thread(plans)


async def on_hand_history(store: Stores, sku: str, warehouse: str, start: date, days: int) -> list[int]:
    """On hand at the end of each day from `start`, rebuilt backwards from today's figure and the ledger."""
    levels = await store.stock.stock_levels(sku, warehouse)
    current = levels[0].on_hand if levels else 0
    since = datetime.combine(start, time.min, tzinfo=UTC)
    entries = [e for e in await store.stock.ledger(sku, warehouse) if e.at >= since]
    out = []
    for i in range(days):
        end = datetime.combine(start + timedelta(days=i + 1), time.min, tzinfo=UTC)
        out.append(current - sum(e.delta_on_hand for e in entries if e.at >= end))
    return out
