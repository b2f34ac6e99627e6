"""The carrier through EasyPost's official SDK (`easypost` 10): labels, refunds, tracking.

`CarrierClient` implements the provider-neutral `Carrier` protocol of carrier_api.py (which the activities are
typed against), so a second aggregator (Shippo, ShipEngine) is one adapter away: another class with the same
methods, mapping its objects onto the same views and its errors onto the same error classes.

The SDK is synchronous (requests): each call runs on a small thread pool the client owns (closed by `close()`),
under the client's timeout, both as the SDK's socket timeout and as a deadline for the whole call (a slow
answer is not read again inside the SDK: retrying is the caller's, after a CarrierTransientError). The SDK's
errors become ours: 408, 429, 5xx, timeouts and connection errors are CarrierTransientError (retry),
ADDRESS.VERIFY.FAILURE a CarrierAddressError naming our Address field, SHIPMENT.POSTAGE.EXISTS a
CarrierAlreadyPurchasedError, 404 a CarrierNotFoundError, any other refusal a CarrierError. Messages name the
call by shipment id, reference or tracking code and the carrier's code and fields, never names or addresses: the
carrier's own words are kept with the address it was sent redacted (common.logs.redact).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import easypost
from easypost import errors as ep
from easypost.easypost_object import EasyPostObject
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from common.config import Settings
from common.integrations.carrier_api import (
    Carrier,
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierError,
    CarrierNotFoundError,
    CarrierRate,
    CarrierShipment,
    CarrierTracker,
    CarrierTrackingDetail,
    CarrierTransientError,
)
from common.logs import customer_data, redact
from common.models import Address

__all__ = [
    "ADDRESS_FIELDS",
    "Carrier",
    "CarrierAddressError",
    "CarrierAlreadyPurchasedError",
    "CarrierClient",
    "CarrierError",
    "CarrierNotFoundError",
    "CarrierRate",
    "CarrierShipment",
    "CarrierTracker",
    "CarrierTrackingDetail",
    "CarrierTransientError",
    "carrier_error",
    "parse_shipment",
    "parse_tracker",
    "to_carrier_address",
]

# EasyPost's address fields -> our Address fields, so an address error names the field ops must fix
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
# Threads per client: concurrent carrier calls of one worker (requests keeps 10 connections per host).
POOL_THREADS = 8


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


class CarrierClient:
    """EasyPost's SDK behind the async `Carrier` methods. Usable again after `close()` (a new pool)."""

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self._api_key = settings.carrier_api_key
        self._api_base = settings.carrier_api_base.rstrip("/")
        self._timeout = timeout if timeout is not None else settings.carrier_timeout
        self._sdk: easypost.EasyPostClient | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def close(self) -> None:
        pool, sdk = self._pool, self._sdk
        self._pool = self._sdk = None
        if pool is not None:
            # In-flight calls end within the SDK's own timeout; queued ones are dropped.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        if sdk is not None:
            sdk._requests_session.close()  # its pooled connections

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
        params = {
            "reference": reference,
            "to_address": to_carrier_address(to_address),
            "from_address": dict(from_address),
            "parcel": dict(parcel),
            "is_return": is_return,
            "options": dict(options or {}),
        }
        known = customer_data(to_address)  # the carrier's verification messages may quote the address it was sent
        data = await self._call(f"create shipment {reference}", lambda c: c.shipment.create(**params), known=known)
        return parse_shipment(data)

    async def get_shipment(self, shipment_id: str) -> CarrierShipment:
        return parse_shipment(
            await self._call(f"get shipment {shipment_id}", lambda c: c.shipment.retrieve(shipment_id))
        )

    async def buy(self, shipment_id: str, rate_id: str) -> CarrierShipment:
        data = await self._call(
            f"buy shipment {shipment_id}", lambda c: c.shipment.buy(shipment_id, rate={"id": rate_id})
        )
        return parse_shipment(data)

    async def refund(self, shipment_id: str) -> CarrierShipment:
        return parse_shipment(
            await self._call(f"refund shipment {shipment_id}", lambda c: c.shipment.refund(shipment_id))
        )

    async def get_tracker(self, tracking_code: str) -> CarrierTracker:
        what = f"get tracker {tracking_code}"
        data = await self._call(what, lambda c: c.tracker.all(tracking_code=tracking_code, page_size=1))
        trackers = data.get("trackers") or []
        if not trackers:
            raise CarrierNotFoundError(
                f"carrier {what}: no tracker for this tracking code", status=404, code="NOT_FOUND"
            )
        return parse_tracker(trackers[0])

    async def get_tracker_by_id(self, tracker_id: str) -> CarrierTracker:
        return parse_tracker(await self._call(f"get tracker {tracker_id}", lambda c: c.tracker.retrieve(tracker_id)))

    async def create_tracker(self, tracking_code: str, carrier: str) -> CarrierTracker:
        what = f"create tracker {tracking_code}"
        data = await self._call(what, lambda c: c.tracker.create(tracking_code=tracking_code, carrier=carrier))
        return parse_tracker(data)

    # -- the SDK on the pool ---------------------------------------------------------------------------------

    def _clients(self) -> tuple[easypost.EasyPostClient, ThreadPoolExecutor]:
        if self._sdk is None or self._pool is None:
            # The SDK's hint says int; requests takes float seconds, as the tests' sub-second timeouts need.
            self._sdk = easypost.EasyPostClient(
                self._api_key,
                api_base=self._api_base,
                timeout=self._timeout,  # type: ignore[arg-type]
            )
            # The SDK's session retries failed connections (3 times), and also GETs whose answer is slow, each
            # after a full timeout: a slow carrier held a thread for 4 timeouts and saw each read again. Slow
            # answers are ours to retry (CarrierTransientError), connections still the session's.
            prefix = self._api_base.split("/v2")[0]
            adapter = HTTPAdapter(max_retries=Retry(total=3, read=False), pool_maxsize=POOL_THREADS)
            self._sdk._requests_session.mount(prefix, adapter)
            self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="easypost")
        return self._sdk, self._pool

    async def _call(
        self, what: str, call: Callable[[easypost.EasyPostClient], Any], *, known: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Run one SDK call on the pool; its answer as plain JSON data, its errors as ours (their text without
        the `known` values of the customer's data, see carrier_error)."""
        sdk, pool = self._clients()

        def run() -> dict[str, Any]:
            answer = call(sdk)
            data = answer.to_dict() if isinstance(answer, EasyPostObject) else answer
            if not isinstance(data, dict):
                raise ep.JsonError(f"unexpected answer of type {type(data).__name__}")
            return data

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, run), self._timeout)
        except TimeoutError as err:  # our deadline (the SDK's own timeout is ep.TimeoutError)
            raise CarrierTransientError(
                f"carrier {what}: no answer within {self._timeout:g} s", code="TIMEOUT"
            ) from err
        except ep.EasyPostError as err:
            # Not chained: the SDK's error keeps the carrier's raw words, and a cause is logged and recorded in
            # the order's history with the error
            raise carrier_error(what, err, known) from None


# ---------------------------------------------------------------------------------------------------------
# The SDK's errors as ours

# Statuses the SDK raises a class of its own for, and 502 (UnknownApiError) worth retrying
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CLASSES: tuple[type[ep.EasyPostError], ...] = (
    ep.TimeoutError,
    ep.HttpError,  # connection refused, reset, DNS: the request may not have reached the carrier
    ep.RateLimitError,
    ep.InternalServerError,
    ep.ServiceUnavailableError,
    ep.GatewayTimeoutError,
    ep.JsonError,  # an answer that is not EasyPost's JSON: a proxy's error page, a cut-off body
)


def carrier_error(what: str, err: ep.EasyPostError, known: Sequence[str] = ()) -> CarrierError:
    """The CarrierError for an SDK error of call `what`; its message has the `known` values (the address the
    call sent), e-mail addresses and phone numbers masked."""
    status = getattr(err, "http_status", None)
    code = getattr(err, "code", None)
    details = [d for d in getattr(err, "errors", None) or [] if isinstance(d, dict)]
    message = redact(_message(what, status, code, err.message, details), *known)
    if isinstance(err, TRANSIENT_CLASSES) or (status is not None and (status in RETRYABLE_STATUSES or status >= 500)):
        return CarrierTransientError(message, status=status, code=code)
    if code == "ADDRESS.VERIFY.FAILURE":
        field = details[0].get("field") if details else None
        return CarrierAddressError(message, ADDRESS_FIELDS.get(str(field), field), status=status, code=code)
    if code == "SHIPMENT.POSTAGE.EXISTS":
        return CarrierAlreadyPurchasedError(message, status=status, code=code)
    if isinstance(err, ep.NotFoundError) or status == 404:
        return CarrierNotFoundError(message, status=status, code=code)
    return CarrierError(message, status=status, code=code)


def _message(what: str, status: int | None, code: str | None, text: Any, details: list[dict[str, Any]]) -> str:
    """The carrier's words, field names and codes (EasyPost's messages name fields, but a carrier's may quote
    their values: carrier_error redacts them)."""
    head = " ".join(str(p) for p in (status, code) if p)
    message = f"carrier {what}: {head + ': ' if head else ''}{text or 'failed'}"
    if details:
        message += " (" + "; ".join(f"{d.get('field', '?')}: {d.get('message', '')}" for d in details) + ")"
    return message


# ---------------------------------------------------------------------------------------------------------
# EasyPost's objects (as JSON data) as our views


def _cents(amount: Any) -> int:
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _rate(d: Mapping[str, Any]) -> CarrierRate:
    days = d.get("delivery_days")
    return CarrierRate(
        id=d["id"],
        carrier=d["carrier"],
        service=d["service"],
        rate_cents=_cents(d["rate"]),
        currency=d.get("currency") or "USD",
        delivery_days=days if days is not None else d.get("est_delivery_days"),
        delivery_date=d.get("delivery_date") or None,
        delivery_date_guaranteed=bool(d.get("delivery_date_guaranteed")),
        shipment_id=d.get("shipment_id"),
    )


def parse_tracker(d: Mapping[str, Any]) -> CarrierTracker:
    """An EasyPost Tracker (API answer, or an Event's `result`) as our view."""
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
        shipment_id=d.get("shipment_id"),
        updated_at=d.get("updated_at"),
        message=details[-1].message if details else None,
        tracking_details=details,
    )


def parse_shipment(d: Mapping[str, Any]) -> CarrierShipment:
    """An EasyPost Shipment as our view."""
    tracker = parse_tracker(d["tracker"]) if d.get("tracker") else None
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
