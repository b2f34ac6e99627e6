"""ShipBob's objects (as JSON data) as the provider-neutral views of threepl_api.py, and our order as ShipBob's
create-order body.

ShipBob splits an order into shipments, each with a status (Processing, OnHold, Exception, Completed,
Cancelled) and status details (Labeled, InTransit, Delivered, OutOfStock, InvalidAddress...): the order's view
takes its status from them (threepl_api.ThreePLOrder says how). Times are ISO 8601, naive ones UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from common.integrations.threepl_api import (
    ThreePLCenterStock,
    ThreePLDetail,
    ThreePLOrder,
    ThreePLRecipient,
    ThreePLShipment,
    ThreePLStatus,
    ThreePLStock,
)

# What parse_order and parse_stock raise for data that is not what they read
UNREADABLE: tuple[type[Exception], ...] = (KeyError, TypeError, ValueError, ValidationError)
SHIPMENT_STATUSES = {
    "none": ThreePLStatus.PROCESSING,
    "processing": ThreePLStatus.PROCESSING,
    "labeledcreated": ThreePLStatus.PROCESSING,
    "onhold": ThreePLStatus.ON_HOLD,
    "on hold": ThreePLStatus.ON_HOLD,
    "exception": ThreePLStatus.EXCEPTION,
    "completed": ThreePLStatus.COMPLETED,
    "cancelled": ThreePLStatus.CANCELLED,
    "canceled": ThreePLStatus.CANCELLED,
}
# The order's own status, for an order that shows no shipments
ORDER_STATUSES = {
    "processing": ThreePLStatus.PROCESSING,
    "partiallyfulfilled": ThreePLStatus.PROCESSING,
    "importreview": ThreePLStatus.ON_HOLD,
    "exception": ThreePLStatus.EXCEPTION,
    "fulfilled": ThreePLStatus.COMPLETED,
    "completed": ThreePLStatus.COMPLETED,
    "cancelled": ThreePLStatus.CANCELLED,
}
DETAILS = {
    "picked": ThreePLDetail.PICKED,
    "packed": ThreePLDetail.PACKED,
    "labeled": ThreePLDetail.LABELED,
    "intransit": ThreePLDetail.IN_TRANSIT,
    "outfordelivery": ThreePLDetail.OUT_FOR_DELIVERY,
    "delivered": ThreePLDetail.DELIVERED,
    "deliveryexception": ThreePLDetail.DELIVERY_EXCEPTION,
    "outofstock": ThreePLDetail.OUT_OF_STOCK,
    "unknownsku": ThreePLDetail.UNKNOWN_SKU,
    "inactivesku": ThreePLDetail.UNKNOWN_SKU,
    "invalidaddress": ThreePLDetail.INVALID_ADDRESS,
    "manualhold": ThreePLDetail.MANUAL_HOLD,
}


def order_body(
    *,
    reference_id: str,
    order_number: str,
    lines: Sequence[tuple[str, int]],
    recipient: ThreePLRecipient,
    shipping_method: str,
    idempotency_key: str,
) -> dict[str, Any]:
    """ShipBob's create-order body. ShipBob has no idempotency header (the reference is the key); our key goes
    along as a tag, so the order shows which attempt made it."""
    a = recipient.address
    address = {
        "address1": a.line1,
        "address2": a.line2,
        "city": a.city,
        "state": a.region,
        "country": a.country,
        "zip_code": a.postal_code,
    }
    person = {"name": a.name, "address": _present(address), "email": recipient.email, "phone_number": recipient.phone}
    return {
        "reference_id": reference_id,
        "order_number": order_number,
        "shipping_method": shipping_method,
        "type": "DTC",
        "recipient": _present(person),
        "products": [{"reference_id": sku, "quantity": quantity} for sku, quantity in lines],
        "tags": [{"name": "idempotency_key", "value": idempotency_key}],
    }


def private_values(recipient: ThreePLRecipient) -> list[str]:
    """What of a recipient must never be in a message or a log line (names, street, city, zip, email, phone)."""
    a = recipient.address
    values = [a.name, a.line1, a.line2, a.city, a.postal_code, recipient.email, recipient.phone]
    return [v for v in values if v and len(v) >= 3]


def parse_order(d: Mapping[str, Any]) -> ThreePLOrder:
    """A ShipBob Order (GET /order, POST /order, a webhook's data) as our view; one of UNREADABLE if it is not
    one."""
    try:
        return _parse_order(d)
    except AttributeError as err:  # a part that is not an object where one belongs
        raise TypeError(str(err)) from err


def _parse_order(d: Mapping[str, Any]) -> ThreePLOrder:
    raw: list[Mapping[str, Any]] = list(d.get("shipments") or [])
    shipments = [parse_shipment(s) for s in raw]
    status, detail, reason = _order_status(d, shipments, raw)
    updates = [s.updated_at for s in shipments if s.updated_at is not None]
    created = parse_time(d.get("created_date"))
    return ThreePLOrder(
        provider_id=str(d["id"]),
        reference_id=str(d["reference_id"]),
        order_number=_text(d.get("order_number")),
        status=status,
        detail=detail,
        reason=reason,
        lines=[_line(p) for p in d.get("products") or []],
        shipments=shipments,
        created_at=created,
        updated_at=max(updates) if updates else parse_time(d.get("last_update_at")) or created,
    )


def parse_shipment(s: Mapping[str, Any]) -> ThreePLShipment:
    tracking = s.get("tracking") or {}
    location = s.get("location") or {}
    return ThreePLShipment(
        provider_id=str(s["id"]),
        status=shipment_status(s.get("status")),
        detail=_detail(s),
        carrier=_text(tracking.get("carrier")),
        service=_text(tracking.get("carrier_service")),
        tracking_number=_text(tracking.get("tracking_number")),
        tracking_url=_text(tracking.get("tracking_url")),
        shipped_at=parse_time(s.get("actual_fulfillment_date")) or parse_time(tracking.get("shipping_date")),
        delivered_at=parse_time(s.get("delivery_date")),
        fulfillment_center=_text(location.get("name")),
        updated_at=parse_time(s.get("last_update_at")),
    )


def parse_stock(d: Mapping[str, Any]) -> ThreePLStock:
    """An item of ShipBob's inventory levels (totals, and per fulfillment center); one of UNREADABLE if not."""
    try:
        return _parse_stock(d)
    except AttributeError as err:
        raise TypeError(str(err)) from err


def _parse_stock(d: Mapping[str, Any]) -> ThreePLStock:
    centers = [
        ThreePLCenterStock(
            fulfillment_center=str(fc.get("name") or fc.get("id")),
            on_hand=int(fc.get("on_hand_quantity") or 0),
            fulfillable=int(fc.get("fulfillable_quantity") or 0),
            committed=int(fc.get("committed_quantity") or 0),
        )
        for fc in d.get("fulfillment_centers") or []
    ]
    return ThreePLStock(
        sku=str(d["sku"]),
        on_hand=int(d.get("total_on_hand_quantity") or 0),
        fulfillable=int(d.get("total_fulfillable_quantity") or 0),
        committed=int(d.get("total_committed_quantity") or 0),
        fulfillment_centers=centers,
    )


def shipment_status(value: Any) -> ThreePLStatus:
    """ShipBob's shipment status as ours; one we do not know is PROCESSING (not shipped, not final)."""
    return SHIPMENT_STATUSES.get(str(value or "").strip().lower(), ThreePLStatus.PROCESSING)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _detail(s: Mapping[str, Any]) -> ThreePLDetail | None:
    first = _first_detail(s)
    if first is None:
        return None
    return DETAILS.get(str(first.get("name") or "").lower(), ThreePLDetail.OTHER)


def _first_detail(s: Mapping[str, Any]) -> Mapping[str, Any] | None:
    details = [d for d in s.get("status_details") or [] if isinstance(d, Mapping)]
    return details[0] if details else None


def _reason(s: Mapping[str, Any]) -> str | None:
    first = _first_detail(s)
    if first is None:
        return None
    return _text(first.get("description")) or _text(first.get("name"))


def _order_status(
    d: Mapping[str, Any], shipments: list[ThreePLShipment], raw: list[Mapping[str, Any]]
) -> tuple[ThreePLStatus, ThreePLDetail | None, str | None]:
    if not shipments:
        status = ORDER_STATUSES.get(str(d.get("status") or "").lower(), ThreePLStatus.PROCESSING)
        return status, None, None
    live = [(view, s) for view, s in zip(shipments, raw, strict=True) if view.status != ThreePLStatus.CANCELLED]
    if not live:
        return ThreePLStatus.CANCELLED, shipments[0].detail, _reason(raw[0])
    for wanted in (ThreePLStatus.EXCEPTION, ThreePLStatus.ON_HOLD, ThreePLStatus.PROCESSING):
        for view, s in live:
            if view.status == wanted:
                explained = wanted in (ThreePLStatus.EXCEPTION, ThreePLStatus.ON_HOLD)
                return wanted, view.detail, _reason(s) if explained else None
    pending = [view for view, _ in live if view.detail != ThreePLDetail.DELIVERED]
    return ThreePLStatus.COMPLETED, (pending[0] if pending else live[0][0]).detail, None


def _line(product: Mapping[str, Any]) -> tuple[str, int]:
    return str(product.get("reference_id") or product.get("sku")), int(product.get("quantity") or 0)


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
