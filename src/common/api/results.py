"""What FulfillmentApi answers with, beside the engine's own models (OrderView, RmaView, PickTask...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from common.inventory.contracts import LowStockCrossing, StockChange
from common.order_signals import DeliveryReport


@dataclass(frozen=True)
class PlacedOrder:
    order_id: str
    workflow_id: str
    run_id: str
    # False: this same order was placed before (a retry); nothing new was started and this is its run
    created: bool = True


@dataclass(frozen=True)
class OrderSummary:
    order_id: str
    status: str
    customer_id: str
    started_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderSummary]
    next_cursor: str | None  # give it back for the next page; None: this was the last


@dataclass(frozen=True)
class StockUpdate:
    """A count or adjustment, and what followed it: the orders told of released reservations (or why they
    could not be told now: the worker's relay tells them later), the low-stock crossings it caused, and whether
    ops were emailed about them."""

    change: StockChange
    orders_told: DeliveryReport
    low_stock: list[LowStockCrossing] = field(default_factory=list)
    ops_alerted: bool = False
    alert_error: str | None = None
