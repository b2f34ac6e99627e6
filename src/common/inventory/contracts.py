"""Inventory's records and refusals, and the activity contract for one parcel of an order (commit its stock
when the carrier has it). Plain data: workflows may import this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel, Field

from common.db.errors import StoreError


class ParcelRef(BaseModel):
    order_id: str
    shipment_no: int = Field(ge=1)


@dataclass(frozen=True)
class StockLevel:
    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    available: int  # on_hand - reserved


@dataclass(frozen=True)
class StockChange:
    """What a count or an adjustment did to one SKU in one warehouse."""

    sku: str
    warehouse: str
    previous_on_hand: int
    on_hand: int
    reserved: int
    delta: int
    # Orders whose held reservations were released (newest first) because on hand fell below reserved.
    released_orders: list[str]
    ledger_id: int
    # order id -> the shipments it released (those not picked yet); their open pick tasks were cancelled, and
    # each order was sent `reservation_released` through the order-signal outbox, all in the same transaction.
    released_shipments: dict[str, list[int]] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    sku: str
    warehouse: str
    delta_on_hand: int
    delta_reserved: int
    kind: str  # receipt | reservation | release | commit | adjustment | count | return
    ref: str | None
    note: str
    at: datetime


@dataclass(frozen=True)
class InventoryPosition:
    """The real-time view of one SKU in one warehouse."""

    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    available: int
    incoming: int  # open purchase orders
    next_eta: date | None
    reorder_point: int | None


@dataclass(frozen=True)
class LowStockCrossing:
    """Available stock fell to or below the reorder point; open until it rises above it again."""

    id: int
    sku: str
    warehouse: str
    available: int
    reorder_point: int
    crossed_at: datetime
    rearmed_at: datetime | None
    alerted_at: datetime | None


@dataclass(frozen=True)
class StockImport:
    row: int
    sku: str
    warehouse: str
    on_hand: int


@dataclass(frozen=True)
class ReservationOutcome:
    reserved: bool
    warehouse: str | None
    lines: list[tuple[str, int]]
    # sku -> units missing in the best warehouse, when not reserved
    short: dict[str, int]
    # SKUs of this order whose available stock is at or below its reorder point with ops not yet alerted
    # (see `low_stock_crossings`): the caller should run the low-stock alert for them.
    low_stock: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Allocation:
    """What `ReservationStore.allocate` reserved: one or more shipments, and what is still missing (backordered)."""

    # (shipment no, warehouse, [(sku, qty), ...]) in shipment order
    shipments: list[tuple[int, str, list[tuple[str, int]]]]
    # sku -> units not reserved (all warehouses together lack them); empty when the whole request is reserved
    short: dict[str, int]
    low_stock: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reservation:
    id: int
    order_id: str
    sku: str
    warehouse: str
    quantity: int
    status: str  # held | released | committed
    created_at: datetime
    updated_at: datetime
    shipment_no: int = 1


@dataclass(frozen=True)
class DemandRecord:
    """Units an order reserved (held or committed), for demand forecasting."""

    sku: str
    warehouse: str
    at: datetime
    quantity: int


@dataclass(frozen=True)
class Backorder:
    order_id: str
    skus: list[str]
    created_at: datetime
    resolved_at: datetime | None
    # sku -> units the order needs of it to go ahead (0: unknown, from before this was recorded)
    needs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PurchaseOrder:
    """An expected receipt: `quantity` of `sku` due at `warehouse` (by `eta`, if known)."""

    id: str
    sku: str
    warehouse: str
    quantity: int
    received_quantity: int
    eta: date | None
    status: str  # open | received | cancelled
    note: str
    created_at: datetime
    closed_at: datetime | None


class PurchaseOrderNotFound(StoreError):
    def __init__(self, po: str) -> None:
        self.po = po
        super().__init__(f"no purchase order {po!r}")


class PurchaseOrderClosed(StoreError):
    def __init__(self, po: str, status: str) -> None:
        self.po = po
        self.status = status
        super().__init__(f"purchase order {po!r} is already {status}")
