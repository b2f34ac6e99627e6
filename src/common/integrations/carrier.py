"""Carrier adapter for an EasyPost-shaped API (default: the sandbox carrier): labels, refunds, tracking.

A small aiohttp client rather than the `easypost` SDK (not a dependency): one session per CarrierClient,
created lazily in the running loop, with a total timeout per request. Errors say whether retrying helps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
from pydantic import BaseModel, Field, field_validator

from common.config import Settings
from common.models import Address, TrackingStatus

# Carrier address fields -> our Address fields, so an address error names the field ops must fix
ADDRESS_FIELDS = {
    "name": "name",
    "street1": "line1",
    "street2": "line2",
    "city": "city",
    "state": "region",
    "zip": "postal_code",
    "country": "country",
    "to_address": "ship_to",
}


class CarrierError(Exception):
    """The carrier refused the request; retrying the same request will not help."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class CarrierTransientError(CarrierError):
    """5xx, 429, timeouts, connection errors: try again later."""

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
    delivery_date: datetime | None = None  # the carrier's own date, when it gives one
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
        return _status(value)


class CarrierTracker(BaseModel):
    id: str
    tracking_code: str
    carrier: str
    status: TrackingStatus
    status_detail: str | None = None
    est_delivery_date: datetime | None = None
    public_url: str | None = None
    # Message of the latest tracking detail ("Out for delivery", ...)
    message: str | None = None
    tracking_details: list[CarrierTrackingDetail] = Field(default_factory=list)

    @field_validator("status", mode="before")
    @classmethod
    def _known_status(cls, value: Any) -> Any:
        return _status(value)


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


def choose_rate(rates: Sequence[CarrierRate], max_delivery_days: int) -> CarrierRate:
    """Cheapest rate delivering within `max_delivery_days`; if none does, the fastest one."""
    if not rates:
        raise CarrierError("the carrier offered no rates")
    meeting = [r for r in rates if r.delivery_days is not None and r.delivery_days <= max_delivery_days]
    if meeting:
        return min(meeting, key=lambda r: (r.rate_cents, r.delivery_days or 0, r.carrier, r.service))
    return min(
        rates,
        key=lambda r: (
            r.delivery_days if r.delivery_days is not None else 10**6,
            r.rate_cents,
            r.carrier,
            r.service,
        ),
    )


def to_carrier_address(address: Address) -> dict[str, str]:
    fields = {
        "name": address.name,
        "street1": address.line1,
        "street2": address.line2,
        "city": address.city,
        "state": address.region,
        "zip": address.postal_code,
        "country": address.country,
    }
    return {k: v for k, v in fields.items() if v is not None}


# ---------------------------------------------------------------------------------------------------------


class CarrierClient:
    choose_rate = staticmethod(choose_rate)

    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self._base = settings.carrier_api_base.rstrip("/")
        self._headers = {"Authorization": aiohttp.encode_basic_auth(settings.carrier_api_key, "")}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create_shipment(
        self,
        *,
        reference: str,
        to_address: Address,
        from_address: dict[str, Any],
        parcel: dict[str, Any],
        is_return: bool = False,
        options: dict[str, Any] | None = None,
    ) -> CarrierShipment:
        body = {
            "shipment": {
                "reference": reference,
                "to_address": to_carrier_address(to_address),
                "from_address": from_address,
                "parcel": parcel,
                "is_return": is_return,
                "options": options or {},
            }
        }
        return _shipment(await self._request("POST", "/shipments", json_body=body))

    async def get_shipment(self, shipment_id: str) -> CarrierShipment:
        return _shipment(await self._request("GET", f"/shipments/{shipment_id}"))

    async def buy(self, shipment_id: str, rate_id: str) -> CarrierShipment:
        body = {"rate": {"id": rate_id}}
        return _shipment(await self._request("POST", f"/shipments/{shipment_id}/buy", json_body=body))

    async def refund(self, shipment_id: str) -> CarrierShipment:
        return _shipment(await self._request("POST", f"/shipments/{shipment_id}/refund", json_body={}))

    async def get_tracker(self, tracking_code: str) -> CarrierTracker:
        data = await self._request("GET", "/trackers", params={"tracking_code": tracking_code})
        trackers = data.get("trackers") or []
        if not trackers:
            raise CarrierNotFoundError(f"no tracker for tracking code {tracking_code}", status=404, code="NOT_FOUND")
        return _tracker(trackers[0])

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        url = self._base + path
        try:
            async with self._session.request(method, url, json=json_body, params=params) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise CarrierTransientError(f"carrier {method} {path} failed: {err!r}") from err
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError:
            data = {}
        if 200 <= status < 300:
            if not isinstance(data, dict):
                raise CarrierTransientError(f"carrier {method} {path}: unreadable answer", status=status)
            return data
        raise _error(method, path, status, data if isinstance(data, dict) else {})


def _error(method: str, path: str, status: int, data: dict[str, Any]) -> CarrierError:
    err = data.get("error") if isinstance(data.get("error"), dict) else {}
    assert isinstance(err, dict)
    code = err.get("code")
    message = str(err.get("message") or f"HTTP {status}")
    details: list[dict[str, Any]] = [e for e in err.get("errors") or [] if isinstance(e, dict)]
    if details:
        message += " (" + "; ".join(f"{d.get('field', '?')}: {d.get('message', '')}" for d in details) + ")"
    if status == 429 or status >= 500:
        return CarrierTransientError(f"carrier {method} {path}: {message}", status=status, code=code)
    if code == "ADDRESS.VERIFY.FAILURE":
        field = details[0].get("field") if details else None
        return CarrierAddressError(message, ADDRESS_FIELDS.get(str(field), field), status=status, code=code)
    if code == "SHIPMENT.POSTAGE.EXISTS":
        return CarrierAlreadyPurchasedError(message, status=status, code=code)
    if status == 404:
        return CarrierNotFoundError(f"carrier {method} {path}: {message}", status=status, code=code)
    return CarrierError(f"carrier {method} {path}: {message}", status=status, code=code)


def _status(value: Any) -> TrackingStatus:
    return TrackingStatus(value) if value in TrackingStatus._value2member_map_ else TrackingStatus.UNKNOWN


def _cents(amount: Any) -> int:
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _rate(d: dict[str, Any]) -> CarrierRate:
    return CarrierRate(
        id=d["id"],
        carrier=d["carrier"],
        service=d["service"],
        rate_cents=_cents(d["rate"]),
        currency=d.get("currency") or "USD",
        delivery_days=d.get("delivery_days"),
        delivery_date=d.get("delivery_date"),
        shipment_id=d.get("shipment_id"),
    )


def parse_tracker(d: dict[str, Any]) -> CarrierTracker:
    """An EasyPost Tracker object (as JSON) as our view of it."""
    return _tracker(d)


def _tracker(d: dict[str, Any]) -> CarrierTracker:
    details = []
    for item in d.get("tracking_details") or []:
        loc = item.get("tracking_location") or {}
        details.append(
            CarrierTrackingDetail(
                status=item.get("status"),
                message=item.get("message") or "",
                at=item.get("datetime"),
                city=loc.get("city"),
                state=loc.get("state"),
                country=loc.get("country"),
                zip=loc.get("zip"),
            )
        )
    return CarrierTracker(
        id=d["id"],
        tracking_code=d["tracking_code"],
        carrier=d.get("carrier") or "",
        status=d.get("status"),
        status_detail=d.get("status_detail"),
        est_delivery_date=d.get("est_delivery_date"),
        public_url=d.get("public_url"),
        message=details[-1].message if details else None,
        tracking_details=details,
    )


def _shipment(d: dict[str, Any]) -> CarrierShipment:
    tracker = _tracker(d["tracker"]) if d.get("tracker") else None
    label = d.get("postage_label") or {}
    return CarrierShipment(
        id=d["id"],
        reference=d.get("reference"),
        is_return=bool(d.get("is_return")),
        status=d.get("status") or "unknown",
        rates=[_rate(r) for r in d.get("rates") or []],
        selected_rate=_rate(d["selected_rate"]) if d.get("selected_rate") else None,
        label_url=label.get("label_url"),
        tracking_code=d.get("tracking_code"),
        tracking_url=tracker.public_url if tracker else None,
        tracker=tracker,
        refund_status=d.get("refund_status"),
    )
