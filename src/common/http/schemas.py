"""The HTTP API's own request and response bodies; orders, views and RMAs are the engine's models as they are."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.models import Address, DeliveryResolution, Reason, Sku
from common.returns import Condition, ReturnLine, ReturnReason
from common.threepl.contracts import ThreePLState

WarehouseCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
Units = Annotated[int, Field(ge=1, le=1_000_000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlacedOrderOut(BaseModel):
    order_id: str = Field(examples=["ORD-1001"])
    workflow_id: str = Field(examples=["order-ORD-1001"])
    run_id: str
    url: str = Field(description="Where the order's status is", examples=["/v1/orders/ORD-1001"])


class OrderSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: str
    status: str
    customer_id: str
    started_at: datetime | None
    closed_at: datetime | None


class OrderPageOut(BaseModel):
    orders: list[OrderSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")
    next: str | None = Field(description="The next page's URL; null on the last page")


class CancelBody(_Body):
    reason: Reason = Field(examples=["customer changed their mind"])


class HoldBody(_Body):
    reason: Reason = Field(examples=["fraud check"])


class RetryBody(_Body):
    note: Reason | None = Field(default=None, examples=["carrier account fixed"])


class ReturnBody(_Body):
    lines: list[ReturnLine] = Field(min_length=1, max_length=200)
    reason: ReturnReason
    exchange: bool = False
    note: Reason | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"lines": [{"sku": "MUG-RED", "quantity": 1}], "reason": "damaged"}]},
    )


class ResolveBody(_Body):
    action: DeliveryResolution = Field(examples=["reship"])
    note: Reason | None = None
    shipment: int | None = Field(default=None, ge=1)


class AddressBody(Address):
    """The new ship-to address."""


class PickOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    parcel_no: int
    warehouse: str
    lines: list[tuple[str, int]]
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    short: dict[str, int]


class PickConfirmBody(_Body):
    short: dict[Sku, Units] = Field(
        default_factory=dict, description="Units not found on the shelf, per SKU (a short pick)", examples=[{}]
    )


class ReceivedLine(_Body):
    sku: Sku
    quantity: Units
    condition: Condition = Field(examples=["resellable"])


class ReceiveReturnBody(_Body):
    lines: list[ReceivedLine] = Field(min_length=1, max_length=400)
    note: Reason | None = None


class RetryRefundBody(_Body):
    description: Reason = Field(examples=["gateway back up"])


class StockLevelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    available: int


class ReceiveStockBody(_Body):
    quantity: Units
    warehouse: WarehouseCode | None = Field(default=None, description="Default: the first warehouse")
    po: str | None = Field(default=None, max_length=100, description="The purchase order this closes")


class CountBody(_Body):
    warehouse: WarehouseCode
    counted: int = Field(ge=0, le=10_000_000)
    reason: Reason | None = None


class AdjustBody(_Body):
    warehouse: WarehouseCode
    delta: int = Field(ge=-10_000_000, le=10_000_000, description="Units to add (positive) or remove (negative)")
    reason: Reason


class LowStockOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    warehouse: str
    available: int
    reorder_point: int


class StockUpdateOut(BaseModel):
    sku: str
    warehouse: str
    previous_on_hand: int
    on_hand: int
    reserved: int
    available: int
    delta: int
    released_orders: list[str] = Field(description="Orders whose unpicked reservations it released, newest first")
    orders_told: bool = Field(description="False: the engine was not reachable; they are told later")
    low_stock: list[LowStockOut]
    ops_alerted: bool


class LedgerEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    warehouse: str
    delta_on_hand: int
    delta_reserved: int
    kind: str
    ref: str | None
    note: str
    at: datetime


class ForecastOut(BaseModel):
    sku: str
    warehouse: str
    available: int
    incoming: int
    history_days: int
    demand_model: str = Field(
        description="What forecast the demand: ets (weekly season, trend), tsb (intermittent), ewma (short history)"
    )
    demand_per_day: float
    safety_stock: float
    reorder_point: int
    days_of_cover: float | None
    order_quantity: int


class ThreePLParcelOut(BaseModel):
    """A parcel at a 3PL (GET /v1/3pl/parcels), with its SLA: `accept_due_at` = submitted_at + the accept SLA,
    `ship_due_at` = (accepted_at, else submitted_at) + the ship SLA; `late` when now is past the one its state
    waits for (submitted: to be accepted; accepted or on hold: to ship)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "reference_id": "3pl:ORD-1001:1",
                    "order_id": "ORD-1001",
                    "order_key": "ORD-1001",
                    "shipment_no": 1,
                    "provider": "shipbob",
                    "warehouse": "WH-3PL",
                    "state": "accepted",
                    "reason": None,
                    "carrier": None,
                    "tracking_number": None,
                    "submitted_at": "2026-03-01T09:00:00Z",
                    "accepted_at": "2026-03-01T09:05:00Z",
                    "shipped_at": None,
                    "delivered_at": None,
                    "accept_due_at": "2026-03-01T13:00:00Z",
                    "ship_due_at": "2026-03-03T09:05:00Z",
                    "late": False,
                }
            ]
        },
    )

    reference_id: str
    order_id: str = Field(description="The order id the customer knows")
    order_key: str = Field(description="The key of the order's rows: `<order_id>~<n>` for a re-placement")
    shipment_no: int
    provider: str
    warehouse: str
    state: ThreePLState
    reason: str | None = Field(description="The 3PL's words for a hold, a rejection or a cancellation")
    carrier: str | None
    tracking_number: str | None
    submitted_at: datetime
    accepted_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    accept_due_at: datetime
    ship_due_at: datetime
    late: bool


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict, examples=[{"temporal": "ok", "database": "ok"}])
