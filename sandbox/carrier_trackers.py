"""The story a sandbox tracker tells: EasyPost's Tracker object computed from wall-clock time.

A tracker belongs to a bought shipment (its `tracker`) or stands alone (created with `POST /v2/trackers` for
a tracking code the sandbox never sold). Either document keeps, under `_sandbox`, when tracking started
(`purchased_at`), the progression (seconds to in_transit, out_for_delivery, delivered), forced statuses
("holds" that pause the progression until released) and when the label was cancelled. From these the
tracking details up to any moment follow, so a restarted sandbox tells the same story, and the webhooks
(carrier_webhooks.py) learn when the next change is due without polling every tracker.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TRACKER_STATUSES = frozenset(
    {
        "unknown",
        "pre_transit",
        "in_transit",
        "out_for_delivery",
        "available_for_pickup",
        "delivered",
        "return_to_sender",
        "failure",
        "cancelled",
        "error",
    }
)
STATUS_DETAIL = {
    "pre_transit": "label_created",
    "in_transit": "arrived_at_facility",
    "out_for_delivery": "out_for_delivery",
    "delivered": "arrived_at_destination",
    "failure": "delivery_exception",
    "return_to_sender": "return",
    "cancelled": "cancelled",
    "available_for_pickup": "available_for_pickup",
}
MESSAGES = {
    "pre_transit": "Shipping label created",
    "in_transit": "Arrived at carrier facility",
    "out_for_delivery": "Out for delivery",
    "delivered": "Delivered",
    "available_for_pickup": "Available for pickup",
    "return_to_sender": "Returning to sender",
    "failure": "Delivery attempt failed",
    "cancelled": "Label voided; shipment cancelled",
    "error": "Carrier error",
    "unknown": "Status unknown",
}
AUTOMATIC = ("pre_transit", "in_transit", "out_for_delivery", "delivered")
DEFAULT_CARRIER = "SandboxPost"


@dataclass(frozen=True)
class Progression:
    """Seconds after purchase at which the tracker reaches each status."""

    in_transit_after: float
    out_for_delivery_after: float
    delivered_after: float


# (wall time, order among details of the same instant, status, message, tracking location)
Detail = tuple[float, int, str, str, dict[str, Any]]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sandbox_state(started_at: float, progression: Progression) -> dict[str, Any]:
    """The `_sandbox` part of a tracker that starts now; `notified` 0: its webhooks start with the first detail."""
    p = progression
    return {
        "purchased_at": started_at,
        "progression": [p.in_transit_after, p.out_for_delivery_after, p.delivered_after],
        "holds": [],
        "cancelled_at": None,
        "notified": {"details": 0, "est": None},
    }


def new_tracker(tracking_code: str, carrier: str | None, now: float, progression: Progression) -> dict[str, Any]:
    """A standalone tracker (no sandbox shipment behind it): it progresses by time from now."""
    return {
        "id": "trk_" + secrets.token_hex(16),
        "object": "Tracker",
        "tracking_code": tracking_code,
        "carrier": carrier or DEFAULT_CARRIER,
        "_sandbox": sandbox_state(now, progression),
    }


def tracker_id(doc: dict[str, Any]) -> str:
    return str(doc["tracker"]["id"] if doc.get("object") == "Shipment" else doc["id"])


def started(doc: dict[str, Any]) -> bool:
    """Whether the document has a tracker: a standalone one, or a shipment whose label was bought."""
    return doc["_sandbox"].get("purchased_at") is not None


def hold_open(doc: dict[str, Any]) -> bool:
    holds = doc["_sandbox"]["holds"]
    return bool(holds) and holds[-1][1] is None


def timeline(doc: dict[str, Any], now: float) -> tuple[list[Detail], float, float]:
    """(tracking details up to `now` in order, estimated delivery, when the next automatic detail is due;
    inf: none, because delivered, cancelled or held)."""
    sb = doc["_sandbox"]
    t0: float = sb["purchased_at"]
    steps = [0.0, *sb["progression"]]
    holds = sorted(sb["holds"], key=lambda h: h[0])
    cancelled_at: float | None = sb["cancelled_at"]
    until = now if cancelled_at is None else min(now, cancelled_at)
    origin, destination = _locations(doc)

    details: list[Detail] = []
    next_at = math.inf
    for i, (after, status) in enumerate(zip(steps, AUTOMATIC, strict=True)):
        # Automatic steps are pushed back by holds
        at = _shifted(t0 + after, holds, open_end=math.inf)
        if at <= until:
            details.append((at, i, status, MESSAGES[status], origin if i < 2 else destination))
        elif cancelled_at is None:
            next_at = min(next_at, at)
    for start, end, status, message in holds:
        if start <= until:
            details.append((start, 10, status, message, destination))
        if end is not None and end <= until:
            # Back to the automatic progression: record where it stands
            reached = [d for d in details if d[1] < 10 and d[0] <= end]
            current = max(reached, key=lambda d: (d[0], d[1])) if reached else None
            if current is not None:
                # Order 9: a hold that starts at the same instant (a forced status replacing another) wins.
                details.append((end, 9, current[2], f"Resumed: {current[3]}", current[4]))
    if cancelled_at is not None and cancelled_at <= now:
        details.append((cancelled_at, 20, "cancelled", MESSAGES["cancelled"], origin))
    details.sort(key=lambda d: (d[0], d[1]))
    est = _shifted(t0 + steps[-1], holds, open_end=now)
    return details, est, next_at


def render_tracker(doc: dict[str, Any], now: float, public_base: str, upto: int | None = None) -> dict[str, Any]:
    """EasyPost's Tracker as of `now`; with `upto`, as it was when it had its first `upto` details."""
    details, est, _ = timeline(doc, now)
    if upto is not None:
        details = details[:upto]
    t0: float = doc["_sandbox"]["purchased_at"]
    status = details[-1][2] if details else "pre_transit"
    is_shipment = doc.get("object") == "Shipment"
    carrier = doc["selected_rate"]["carrier"] if is_shipment else doc["carrier"]
    code = doc["tracking_code"]
    return {
        "id": tracker_id(doc),
        "object": "Tracker",
        "mode": "test",
        "tracking_code": code,
        "carrier": carrier,
        "shipment_id": doc["id"] if is_shipment else None,
        "status": status,
        "status_detail": STATUS_DETAIL.get(status, "unknown"),
        "est_delivery_date": iso(est) if status != "cancelled" else None,
        "signed_by": None,
        "weight": None,
        "public_url": f"{public_base}/track/{code}",
        "created_at": iso(t0),
        "updated_at": iso(details[-1][0]) if details else iso(t0),
        "fees": [],
        "tracking_details": [
            {
                "object": "TrackingDetail",
                "status": s,
                "status_detail": STATUS_DETAIL.get(s, "unknown"),
                "message": m,
                "description": "",
                "datetime": iso(at),
                "source": carrier,
                "tracking_location": loc,
            }
            for at, _, s, m, loc in details
        ],
    }


def _shifted(t: float, holds: list[list[Any]], *, open_end: float) -> float:
    """Wall time at which an automatic step planned for `t` happens, once the holds have paused the clock."""
    for start, end, _status, _message in holds:
        if start <= t:
            t += (end if end is not None else max(open_end, start)) - start
    return t


def _locations(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where the parcel starts and where it goes: a return label runs from `to_address` back to the sender."""
    if doc.get("object") != "Shipment":
        return _location({}), _location({})
    sender, recipient = _location(doc["from_address"]), _location(doc["to_address"])
    return (recipient, sender) if doc.get("is_return") else (sender, recipient)


def _location(address: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "TrackingLocation",
        "city": address.get("city"),
        "state": address.get("state"),
        "country": address.get("country"),
        "zip": address.get("zip"),
    }
