"""What the engine needs from a shipping aggregator, whoever it is: the `Carrier` protocol, typed views of
its objects, and errors that say whether retrying helps.

The activities are typed against `Carrier`, not an SDK: EasyPost's adapter is `carrier.CarrierClient`; a
second aggregator (Shippo, ShipEngine) is one more class with these methods that maps its objects onto the
views below and its errors onto the error classes. Addresses a caller passes as dicts (the sender, `parcel`)
use the common names street1/street2/city/state/zip/country and weight in ounces.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field, field_validator

from common.integrations import ProviderError
from common.models import Address, TrackingStatus


class CarrierError(ProviderError):
    """The carrier refused the request; retrying the same request will not help."""


class CarrierTransientError(CarrierError):
    """5xx, 429, 408, timeouts, connection errors: try again later."""

    retryable = True


class CarrierAddressError(CarrierError):
    """ADDRESS.VERIFY.FAILURE: the ship-to address needs fixing; `field` is the Address field (e.g. line1)."""

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        status: int | None = 422,
        code: str | None = "ADDRESS.VERIFY.FAILURE",
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.field = field


class CarrierAlreadyPurchasedError(CarrierError):
    """SHIPMENT.POSTAGE.EXISTS: the shipment already has a label (fetch it instead of buying another)."""


class CarrierNotFoundError(CarrierError):
    """No such shipment or tracker."""


# ---------------------------------------------------------------------------------------------------------
# Typed views of the carrier's objects


class CarrierRate(BaseModel):
    id: str
    carrier: str
    service: str
    rate_cents: int
    currency: str = "USD"
    delivery_days: int | None = None
    # The carrier's estimated delivery date for this rate (rate shopping against a promised date), if it gives one
    delivery_date: datetime | None = None
    delivery_date_guaranteed: bool = False
    shipment_id: str | None = None


class CarrierTrackingDetail(BaseModel):
    status: TrackingStatus
    message: str = ""
    at: datetime | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    zip: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _known_status(cls, value: Any) -> Any:
        return tracking_status(value)


class CarrierTracker(BaseModel):
    id: str
    tracking_code: str
    carrier: str
    status: TrackingStatus
    status_detail: str | None = None
    est_delivery_date: datetime | None = None
    public_url: str | None = None
    shipment_id: str | None = None
    updated_at: datetime | None = None
    # Message of the latest tracking detail ("Out for delivery", ...)
    message: str | None = None
    tracking_details: list[CarrierTrackingDetail] = Field(default_factory=list)

    @field_validator("status", mode="before")
    @classmethod
    def _known_status(cls, value: Any) -> Any:
        return tracking_status(value)


class CarrierShipment(BaseModel):
    id: str
    reference: str | None = None
    is_return: bool = False
    status: str = "unknown"
    rates: list[CarrierRate] = Field(default_factory=list)
    selected_rate: CarrierRate | None = None
    label_url: str | None = None
    tracking_code: str | None = None
    tracking_url: str | None = None
    tracker: CarrierTracker | None = None
    # None, submitted, refunded, rejected or not_applicable
    refund_status: str | None = None


def tracking_status(value: Any) -> TrackingStatus:
    """The carrier's status string as ours; one we do not know is UNKNOWN."""
    return TrackingStatus(value) if value in TrackingStatus._value2member_map_ else TrackingStatus.UNKNOWN


class Carrier(Protocol):
    """A shipping aggregator: shipments with rates, labels bought and refunded, trackers. Every method raises
    CarrierTransientError when retrying may help, another CarrierError when it will not."""

    async def create_shipment(
        self,
        *,
        reference: str,
        to_address: Address,
        from_address: Mapping[str, Any],
        parcel: Mapping[str, Any],
        is_return: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> CarrierShipment:
        """A rated shipment, not bought yet (`is_return`: a return label, from `to_address` back to the sender)."""
        ...

    async def get_shipment(self, shipment_id: str) -> CarrierShipment: ...

    async def buy(self, shipment_id: str, rate_id: str) -> CarrierShipment:
        """Buy the label at one of its rates; CarrierAlreadyPurchasedError if it has one."""
        ...

    async def refund(self, shipment_id: str) -> CarrierShipment:
        """Ask for the label's refund: `refund_status` says what the carrier made of it."""
        ...

    async def get_tracker(self, tracking_code: str) -> CarrierTracker:
        """The tracker of a tracking code; CarrierNotFoundError if the carrier has none."""
        ...

    async def get_tracker_by_id(self, tracker_id: str) -> CarrierTracker: ...

    async def create_tracker(self, tracking_code: str, carrier: str) -> CarrierTracker:
        """Start tracking a code (the existing tracker if there is one)."""
        ...

    async def close(self) -> None: ...
