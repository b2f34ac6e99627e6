"""Sandbox carrier: an EasyPost-shaped API (`/v2`) for rates, labels, refunds and tracking.

Tracker status is computed from wall-clock time since purchase and the progression stored with the shipment
at purchase (pre_transit -> in_transit -> out_for_delivery -> delivered), so a restarted sandbox tells the
same story. Test controls under `/v2/_sandbox` (no auth): fault injection per operation, forced tracker
statuses ("holds" that pause the automatic progression until released with status "auto"), and a listing
of all shipments. During an outage (outages.py) every `/v2` API call answers 503 with EasyPost's error body.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sandbox.httputil import api_key
from sandbox.outages import Outages
from sandbox.store import SandboxStore

log = logging.getLogger("fulfill.sandbox.carrier")

# (carrier, service, delivery_days, rate)
RATES: list[tuple[str, str, int, str]] = [
    ("SandboxPost", "Ground", 5, "5.10"),
    ("SandboxPost", "Priority", 2, "9.80"),
    ("QuickShip", "Saver", 3, "7.90"),
    ("QuickShip", "Overnight", 1, "24.50"),
]
OPERATIONS = frozenset({"create_shipment", "get_shipment", "buy", "refund", "tracker"})
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
DEFAULT_FAULT_CODES = {
    429: "RATE_LIMITED",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE.UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}
COUNTRY = re.compile(r"^[A-Za-z]{2}$")
# A 1x1 PNG: labels only need to be fetchable
LABEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@dataclass(frozen=True)
class Progression:
    """Seconds after purchase at which the tracker reaches each status."""

    in_transit_after: float
    out_for_delivery_after: float
    delivered_after: float


@dataclass
class Fault:
    remaining: int
    status: int | None  # None/0: only delay, then answer normally
    code: str
    message: str
    delay: float = 0.0


def easypost_error(status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "errors": errors or []}}, status=status)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Reject(Exception):
    """Short-circuits a handler with an EasyPost-shaped error response."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


class CarrierSandbox:
    def __init__(
        self, store: SandboxStore, *, api_key: str, progression: Progression, outages: Outages | None = None
    ) -> None:
        self._store = store
        self._outages = outages if outages is not None else Outages()
        self._api_key = api_key
        self.progression = progression
        self.faults: dict[str, Fault] = {}
        self.public_base = "http://127.0.0.1"  # set once the port is bound (label and tracking URLs)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v2/shipments", self.create_shipment)
        r.add_get("/v2/shipments/{id}", self.get_shipment)
        r.add_post("/v2/shipments/{id}/buy", self.buy)
        r.add_post("/v2/shipments/{id}/refund", self.refund)
        r.add_get("/v2/trackers", self.list_trackers)
        r.add_get("/v2/trackers/{id}", self.get_tracker)
        r.add_post("/v2/_sandbox/faults", self.set_fault)
        r.add_delete("/v2/_sandbox/faults", self.clear_faults_handler)
        r.add_post("/v2/_sandbox/trackers/{tracking_code}", self.force_tracker_handler)
        r.add_get("/v2/_sandbox/shipments", self.list_shipments)
        r.add_get("/labels/{file}", self.label)
        r.add_get("/track/{tracking_code}", self.track_page)
        app.middlewares.append(self._middleware)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path.startswith("/v2/") and not path.startswith("/v2/_sandbox"):
            if self._outages.active("carrier"):
                return easypost_error(
                    503, "SERVICE.UNAVAILABLE", "The service is temporarily unavailable. Please try again later."
                )
            key = api_key(request.headers.get("Authorization"))
            if key is None:
                return easypost_error(
                    401, "APIKEY.REQUIRED", "No API key provided (Authorization: Bearer <key>, or Basic, key as user)."
                )
            if key != self._api_key:
                return easypost_error(401, "APIKEY.INACTIVE", "This API key is no longer active.")
        try:
            response: web.StreamResponse = await handler(request)
        except _Reject as reject:
            return reject.response
        return response

    # -- test controls -------------------------------------------------------------------------------------

    def inject_fault(
        self,
        operation: str,
        fail_next: int = 1,
        status: int | None = 503,
        code: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> None:
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {sorted(OPERATIONS)}")
        status = status or None
        default_code = DEFAULT_FAULT_CODES.get(status or 0, "SANDBOX.FAULT")
        self.faults[operation] = Fault(
            remaining=fail_next,
            status=status,
            code=code or default_code,
            message=message or f"Injected fault on {operation}",
            delay=delay,
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def force_tracker_status(
        self, tracking_code: str, status: str | None, message: str | None = None
    ) -> dict[str, Any]:
        """Hold the tracker at `status` (automatic progression paused); None or "auto" releases the hold."""
        doc = self._store.shipment_by_tracking_code(tracking_code)
        if doc is None:
            raise KeyError(tracking_code)
        if status not in TRACKER_STATUSES and status not in (None, "auto"):
            raise ValueError(f"status must be one of {sorted(TRACKER_STATUSES)} or 'auto'")
        now = time.time()
        holds: list[list[Any]] = doc["_sandbox"]["holds"]
        if holds and holds[-1][1] is None:
            holds[-1][1] = now
        if status not in (None, "auto"):
            holds.append([now, None, status, message or MESSAGES.get(status, status)])
        self._store.update_shipment(doc)
        return self._tracker(doc, now)

    async def _fault(self, operation: str) -> None:
        fault = self.faults.get(operation)
        if fault is None or fault.remaining <= 0:
            return
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self.faults[operation]
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status:
            log.info("fault injected on %s: %s %s", operation, fault.status, fault.code)
            raise _Reject(easypost_error(fault.status, fault.code, fault.message))

    async def set_fault(self, request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            self.inject_fault(
                str(body.get("operation")),
                int(body.get("fail_next", 1)),
                body.get("status", 503),
                body.get("code"),
                body.get("message"),
                float(body.get("delay", 0.0)),
            )
        except (TypeError, ValueError) as err:
            return easypost_error(400, "BAD_REQUEST", str(err))
        return web.json_response({"faults": self._faults_json()})

    async def clear_faults_handler(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": {}})

    async def force_tracker_handler(self, request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            tracker = self.force_tracker_status(
                request.match_info["tracking_code"], body.get("status"), body.get("message")
            )
        except KeyError:
            return easypost_error(404, "NOT_FOUND", "No tracker with that tracking code.")
        except ValueError as err:
            return easypost_error(400, "BAD_REQUEST", str(err))
        return web.json_response(tracker)

    async def list_shipments(self, request: web.Request) -> web.Response:
        return web.json_response({"shipments": self.shipments()})

    def shipments(self) -> list[dict[str, Any]]:
        now = time.time()
        return [self._shipment(doc, now) for doc in self._store.shipments()]

    def _faults_json(self) -> dict[str, Any]:
        return {
            op: {"remaining": f.remaining, "status": f.status, "code": f.code, "delay": f.delay}
            for op, f in self.faults.items()
        }

    # -- shipments -----------------------------------------------------------------------------------------

    async def create_shipment(self, request: web.Request) -> web.Response:
        body = await _json(request)
        await self._fault("create_shipment")
        data = body.get("shipment")
        problem = _shipment_problem(data)
        if problem is not None:
            return problem
        assert isinstance(data, dict)
        now = time.time()
        doc = _new_shipment(data, now)
        self._store.insert_shipment(doc)
        log.info("shipment %s created (reference %s)", doc["id"], doc["reference"])
        return web.json_response(self._shipment(doc, now), status=201)

    async def get_shipment(self, request: web.Request) -> web.Response:
        await self._fault("get_shipment")
        doc = self._load(request.match_info["id"])
        return web.json_response(self._shipment(doc, time.time()))

    async def buy(self, request: web.Request) -> web.Response:
        body = await _json(request)
        await self._fault("buy")
        doc = self._load(request.match_info["id"])
        if doc["_sandbox"]["purchased_at"] is not None:
            return easypost_error(422, "SHIPMENT.POSTAGE.EXISTS", "Postage already exists for this shipment.")
        rate_id = body["rate"].get("id") if isinstance(body.get("rate"), dict) else None
        rate = next((r for r in doc["rates"] if r["id"] == rate_id), None)
        if rate is None:
            return easypost_error(
                422,
                "SHIPMENT.RATE.NOT_FOUND",
                f"Rate {rate_id!r} is not a rate of this shipment.",
                [{"field": "rate.id", "message": "not found"}],
            )
        now = time.time()
        tracking_code = self._new_tracking_code()
        p = self.progression
        doc["_sandbox"].update(
            purchased_at=now, progression=[p.in_transit_after, p.out_for_delivery_after, p.delivered_after]
        )
        doc.update(
            selected_rate=rate,
            tracking_code=tracking_code,
            status="purchased",
            updated_at=iso(now),
            postage_label={
                "id": "pl_" + secrets.token_hex(16),
                "object": "PostageLabel",
                "label_file_type": "image/png",
                "label_date": iso(now),
            },
            tracker={"id": "trk_" + secrets.token_hex(16)},
        )
        self._store.update_shipment(doc)
        log.info(
            "label bought for %s: %s %s, tracking %s",
            doc["id"],
            rate["carrier"],
            rate["service"],
            tracking_code,
        )
        return web.json_response(self._shipment(doc, now))

    async def refund(self, request: web.Request) -> web.Response:
        await self._fault("refund")
        doc = self._load(request.match_info["id"])
        now = time.time()
        if doc["_sandbox"]["purchased_at"] is None:
            shown = self._shipment(doc, now)
            shown["refund_status"] = "not_applicable"
            return web.json_response(shown)
        if doc.get("refund_status") in ("submitted", "refunded"):
            return web.json_response(self._shipment(doc, now))  # idempotent: a second refund changes nothing
        if self._tracker(doc, now)["status"] != "pre_transit":
            doc["refund_status"] = "rejected"  # the parcel is already moving
            self._store.update_shipment(doc)
            return web.json_response(self._shipment(doc, now))
        doc["_sandbox"]["cancelled_at"] = now
        doc["refund_status"] = "refunded"  # what later reads see
        doc["updated_at"] = iso(now)
        self._store.update_shipment(doc)
        shown = self._shipment(doc, now)
        shown["refund_status"] = "submitted"
        log.info("label of %s refunded", doc["id"])
        return web.json_response(shown)

    # -- trackers ------------------------------------------------------------------------------------------

    async def get_tracker(self, request: web.Request) -> web.Response:
        await self._fault("tracker")
        doc = self._store.shipment_by_tracker_id(request.match_info["id"])
        if doc is None:
            return easypost_error(404, "NOT_FOUND", "The requested resource could not be found.")
        return web.json_response(self._tracker(doc, time.time()))

    async def list_trackers(self, request: web.Request) -> web.Response:
        await self._fault("tracker")
        now = time.time()
        code = request.query.get("tracking_code")
        if code is not None:
            doc = self._store.shipment_by_tracking_code(code)
            docs = [doc] if doc is not None else []
        else:
            docs = [d for d in self._store.shipments() if d.get("tracking_code")]
        return web.json_response({"trackers": [self._tracker(d, now) for d in docs], "has_more": False})

    async def label(self, request: web.Request) -> web.Response:
        shipment_id = request.match_info["file"].removesuffix(".png")
        doc = self._store.shipment(shipment_id)
        if doc is None or doc["_sandbox"]["purchased_at"] is None:
            raise web.HTTPNotFound()
        return web.Response(body=LABEL_PNG, content_type="image/png")

    async def track_page(self, request: web.Request) -> web.Response:
        doc = self._store.shipment_by_tracking_code(request.match_info["tracking_code"])
        if doc is None:
            raise web.HTTPNotFound(text="unknown tracking code")
        tracker = self._tracker(doc, time.time())
        rows = "".join(
            f"<li>{html.escape(d['datetime'])}: {html.escape(d['message'])}</li>"
            for d in reversed(tracker["tracking_details"])
        )
        code = html.escape(tracker["tracking_code"])
        page = (
            f"<!doctype html><html><head><title>Tracking {code}</title></head><body>"
            f"<h1>{html.escape(tracker['carrier'])} {code}</h1>"
            f"<p>Status: <strong>{html.escape(tracker['status'])}</strong>; estimated delivery "
            f"{html.escape(tracker['est_delivery_date'] or '-')}</p><ul>{rows}</ul></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    # -- rendering -----------------------------------------------------------------------------------------

    def _load(self, shipment_id: str) -> dict[str, Any]:
        doc = self._store.shipment(shipment_id)
        if doc is None:
            raise _Reject(easypost_error(404, "NOT_FOUND", "The requested resource could not be found."))
        return doc

    def _new_tracking_code(self) -> str:
        while True:
            code = "SBX" + "".join(secrets.choice("0123456789") for _ in range(16))
            if not self._store.tracking_code_taken(code):
                return code

    def _shipment(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        shown = {k: v for k, v in doc.items() if k != "_sandbox"}
        if doc["_sandbox"]["purchased_at"] is None:
            shown["tracker"] = None
            return shown
        shown["postage_label"] = {
            **doc["postage_label"],
            "label_url": f"{self.public_base}/labels/{doc['id']}.png",
        }
        shown["tracker"] = self._tracker(doc, now)
        return shown

    def _tracker(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        sb = doc["_sandbox"]
        t0: float = sb["purchased_at"]
        steps = [0.0, *sb["progression"]]
        holds = sorted(sb["holds"], key=lambda h: h[0])
        cancelled_at: float | None = sb["cancelled_at"]
        until = now if cancelled_at is None else min(now, cancelled_at)
        to_loc, from_loc = _location(doc["to_address"]), _location(doc["from_address"])

        # (wall time, order, status, message, location); automatic steps are pushed back by holds
        events: list[tuple[float, int, str, str, dict[str, Any]]] = []
        for i, (after, status) in enumerate(
            zip(steps, ("pre_transit", "in_transit", "out_for_delivery", "delivered"), strict=True)
        ):
            at = _shifted(t0 + after, holds, open_end=math.inf)
            if at <= until:
                events.append((at, i, status, MESSAGES[status], from_loc if i < 2 else to_loc))
        for start, end, status, message in holds:
            if start <= until:
                events.append((start, 10, status, message, to_loc))
            if end is not None and end <= until:
                # Back to the automatic progression: record where it stands
                reached = [e for e in events if e[1] < 10 and e[0] <= end]
                current = max(reached, key=lambda e: (e[0], e[1])) if reached else None
                if current is not None:
                    # Order 9: a hold that starts at the same instant (a forced status replacing another) wins.
                    events.append((end, 9, current[2], f"Resumed: {current[3]}", current[4]))
        if cancelled_at is not None and cancelled_at <= now:
            events.append((cancelled_at, 20, "cancelled", MESSAGES["cancelled"], from_loc))
        events.sort(key=lambda e: (e[0], e[1]))
        status = events[-1][2] if events else "pre_transit"
        est = _shifted(t0 + steps[-1], holds, open_end=now)
        carrier = doc["selected_rate"]["carrier"]
        code = doc["tracking_code"]
        return {
            "id": doc["tracker"]["id"],
            "object": "Tracker",
            "mode": "test",
            "tracking_code": code,
            "carrier": carrier,
            "shipment_id": doc["id"],
            "status": status,
            "status_detail": STATUS_DETAIL.get(status, "unknown"),
            "est_delivery_date": iso(est) if status not in ("cancelled",) else None,
            "public_url": f"{self.public_base}/track/{code}",
            "created_at": iso(t0),
            "updated_at": iso(events[-1][0]) if events else iso(t0),
            "tracking_details": [
                {
                    "object": "TrackingDetail",
                    "status": s,
                    "status_detail": STATUS_DETAIL.get(s, "unknown"),
                    "message": m,
                    "datetime": iso(at),
                    "source": carrier,
                    "tracking_location": loc,
                }
                for at, _, s, m, loc in events
            ],
        }


def _shifted(t: float, holds: list[list[Any]], *, open_end: float) -> float:
    """Wall time at which an automatic step planned for `t` happens, once the holds have paused the clock."""
    for start, end, _status, _message in holds:
        if start <= t:
            t += (end if end is not None else max(open_end, start)) - start
    return t


def _verify_address(address: Any) -> list[dict[str, str]]:
    if not isinstance(address, dict):
        return [{"field": "to_address", "message": "is required"}]
    errors = [
        {"field": field, "message": f"{field} is required"}
        for field in ("street1", "city", "zip", "country")
        if not str(address.get(field) or "").strip()
    ]
    country = str(address.get("country") or "").strip()
    if country and not COUNTRY.match(country):
        errors.append({"field": "country", "message": "country must be a 2-letter ISO code"})
    if "invalid" in str(address.get("street1") or "").lower():
        errors.append({"field": "street1", "message": "Address not found"})
    return errors


def _address(address: dict[str, Any]) -> dict[str, Any]:
    return {"id": "adr_" + secrets.token_hex(16), "object": "Address", **address}


def _location(address: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "TrackingLocation",
        "city": address.get("city"),
        "state": address.get("state"),
        "country": address.get("country"),
        "zip": address.get("zip"),
    }


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _Reject(easypost_error(400, "BAD_REQUEST", f"Body is not JSON: {err}")) from err
    if not isinstance(body, dict):
        raise _Reject(easypost_error(400, "BAD_REQUEST", "Body must be a JSON object."))
    return body


def _missing(field: str) -> web.Response:
    return easypost_error(
        422, "PARAMETER.REQUIRED", f"Missing required parameter: {field}.", [{"field": field, "message": "is required"}]
    )


def _shipment_problem(data: object) -> web.Response | None:
    """EasyPost's 422 for a shipment request it would refuse, or None."""
    if not isinstance(data, dict):
        return _missing("shipment")
    to_address = data.get("to_address")
    errors = _verify_address(to_address)
    if errors or not isinstance(to_address, dict):
        return easypost_error(422, "ADDRESS.VERIFY.FAILURE", "Unable to verify address.", errors)
    if not isinstance(data.get("from_address"), dict):
        return _missing("from_address")
    return None


def _new_shipment(data: dict[str, Any], now: float) -> dict[str, Any]:
    """A stored shipment as EasyPost creates it: rated, not yet bought."""
    shipment_id = "shp_" + secrets.token_hex(16)
    return {
        "id": shipment_id,
        "object": "Shipment",
        "mode": "test",
        "reference": data.get("reference"),
        "created_at": iso(now),
        "updated_at": iso(now),
        "to_address": _address(data["to_address"]),
        "from_address": _address(data["from_address"]),
        "parcel": {"id": "prcl_" + secrets.token_hex(16), "object": "Parcel", **(data.get("parcel") or {})},
        "is_return": bool(data.get("is_return", False)),
        "options": data.get("options") or {},
        "rates": [
            {
                "id": "rate_" + secrets.token_hex(16),
                "object": "Rate",
                "carrier": carrier,
                "service": service,
                "rate": rate,
                "currency": "USD",
                "delivery_days": days,
                "est_delivery_days": days,
                "shipment_id": shipment_id,
            }
            for carrier, service, days, rate in RATES
        ],
        "selected_rate": None,
        "postage_label": None,
        "tracking_code": None,
        "refund_status": None,
        "status": "unknown",
        "messages": [],
        "_sandbox": {"purchased_at": None, "progression": None, "holds": [], "cancelled_at": None},
    }
