"""Activity contract for one parcel (shipment) of an order: commit its stock when the carrier has it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ShipmentRef(BaseModel):
    order_id: str
    shipment_no: int = Field(ge=1)
