"""Activity contracts for split shipments (plan, reserve, release and commit one shipment of an order).

Pydantic models like those in common.models; they live here until the order workflow uses them (then they
can move to common.models)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from common.models import OrderLine


class AllocationRequest(BaseModel):
    lines: list[OrderLine]
    ship_to_country: str | None = None
    ship_to_region: str | None = None


class ShipmentPlan(BaseModel):
    """Shipment `shipment_no` (1, 2, ...) of an order leaves `warehouse` with `lines`."""

    shipment_no: int = Field(ge=1)
    warehouse: str
    lines: list[OrderLine]


class ReserveShipmentRequest(BaseModel):
    order_id: str
    shipment_no: int = Field(ge=1)
    warehouse: str
    lines: list[OrderLine]


class ShipmentRef(BaseModel):
    order_id: str
    shipment_no: int = Field(ge=1)
