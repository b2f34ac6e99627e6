"""The label record of a parcel and the refusals about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from common.db.errors import StoreError


@dataclass(frozen=True)
class LabelRecord:
    """A parcel's label, from the carrier shipment it is bought on (created) to purchased, or voided."""

    key: str
    order_id: str
    carrier_shipment_id: str
    carrier: str | None
    service: str | None
    rate_cents: int | None
    tracking_number: str | None
    label_url: str | None
    tracking_url: str | None
    status: str  # created | purchased | voided
    created_at: datetime
    updated_at: datetime


class LabelNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no shipment recorded under {key!r}")
