"""Sandbox carrier: EasyPost's API (`/v2`), so the unmodified `easypost` SDK runs against it.

Shipments with rates (`POST /v2/shipments`, `GET /v2/shipments/{id}`), label purchase (`POST .../buy` with
`{"rate": {"id"}}`), refunds (`POST .../refund`), trackers (`POST /v2/trackers`, `GET /v2/trackers/{id}`,
`GET /v2/trackers` by tracking code(s), newest first, `has_more`), and Events (`GET /v2/events`). Auth as
EasyPost: `Authorization: Bearer <key>` (what the SDK sends) or HTTP Basic with the key as user. Objects carry
EasyPost's `object`, `mode`, id prefixes (`shp_`, `rate_`, `trk_`, `adr_`, `evt_`...) and `created_at`, which
the SDK needs to make them into its classes (`shipment.lowest_rate()`); errors are EasyPost's
`{"error": {"code", "message", "errors": [{field, message}]}}`.

Tracker statuses follow wall-clock time since purchase (carrier_trackers.py); every change is an Event, POSTed
signed to the webhook URL (carrier_webhooks.py). Test controls under `/v2/_sandbox` (no auth): fault injection
per operation, forced tracker statuses ("holds" that pause the automatic progression until released with
status "auto"), a listing of all shipments, the webhooks and the events sent. During an outage (outages.py)
every `/v2` API call answers 503 with EasyPost's error body.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.carrier_trackers import (
    MESSAGES,
    TRACKER_STATUSES,
    Progression,
    iso,
    new_tracker,
    render_tracker,
    sandbox_state,
    started,
)
from sandbox.carrier_webhooks import CarrierWebhooks, Key, WebhookRoutes
from sandbox.httputil import api_key, easypost_error
from sandbox.outages import Outages
from sandbox.store import SandboxStore
from sandbox.webhook_delivery import LOCAL_HOSTS

__all__ = ["CarrierSandbox", "Progression", "easypost_error"]

log = logging.getLogger("fulfill.sandbox.carrier")

# (carrier, service, delivery_days, rate, delivery date guaranteed)
RATES: list[tuple[str, str, int, str, bool]] = [
    ("SandboxPost", "Ground", 5, "5.10", False),
    ("SandboxPost", "Priority", 2, "9.80", False),
    ("QuickShip", "Saver", 3, "7.90", False),
    ("QuickShip", "Overnight", 1, "24.50", True),
]
OPERATIONS = frozenset({"create_shipment", "get_shipment", "buy", "refund", "tracker", "create_tracker"})
DEFAULT_FAULT_CODES = {
    429: "RATE_LIMITED",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE.UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}
NOT_FOUND = "The requested resource could not be found."
COUNTRY = re.compile(r"^[A-Za-z]{2}$")
DAY = 86400.0
# A 1x1 PNG: labels only need to be fetchable
LABEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@dataclass
class Fault:
    remaining: int
    status: int | None  # None/0: only delay, then answer normally
    code: str
    message: str
    delay: float = 0.0


class _Reject(Exception):
    """Short-circuits a handler with an EasyPost error response."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


class CarrierSandbox:
    """`webhook_url`/`webhook_secret`: where tracker events go and what signs them (None: nowhere, unsigned);
    `webhooks_enabled` False keeps them listed but undelivered until switched on."""

    def __init__(
        self,
        store: SandboxStore,
        *,
        api_key: str,
        progression: Progression,
        outages: Outages | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhooks_enabled: bool = True,
        local_hosts: frozenset[str] = LOCAL_HOSTS,
    ) -> None:
        self._store = store
        self._outages = outages if outages is not None else Outages()
        self._api_key = api_key
        self.progression = progression
        self.faults: dict[str, Fault] = {}
        self.public_base = "http://127.0.0.1"  # set once the port is bound (label and tracking URLs)
        self.webhooks = CarrierWebhooks(
            load=self._load_key,
            save=self._save,
            keys=self._tracker_keys,
            public_base=lambda: self.public_base,
            url=webhook_url,
            secret=webhook_secret,
            enabled=webhooks_enabled,
            local_hosts=local_hosts,
        )

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v2/shipments", self.create_shipment)
        r.add_get("/v2/shipments/{id}", self.get_shipment)
        r.add_post("/v2/shipments/{id}/buy", self.buy)
        r.add_post("/v2/shipments/{id}/refund", self.refund)
        r.add_post("/v2/trackers", self.create_tracker)
        r.add_get("/v2/trackers", self.list_trackers)
        r.add_get("/v2/trackers/{id}", self.get_tracker)
        r.add_post("/v2/_sandbox/faults", self.set_fault)
        r.add_delete("/v2/_sandbox/faults", self.clear_faults_handler)
        r.add_post("/v2/_sandbox/trackers/{tracking_code}", self.force_tracker_handler)
        r.add_get("/v2/_sandbox/shipments", self.list_shipments)
        r.add_get("/labels/{file}", self.label)
        r.add_get("/track/{tracking_code}", self.track_page)
        WebhookRoutes(self.webhooks).add_routes(app)
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
        doc = self._tracked(tracking_code)
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
        self._save(doc)
        self.webhooks.watch(_key(doc))
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
        if started(doc):
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
        doc["_sandbox"].update(sandbox_state(now, self.progression))
        doc.update(
            selected_rate=rate,
            tracking_code=tracking_code,
            status="purchased",
            updated_at=iso(now),
            insurance=str(body["insurance"]) if body.get("insurance") is not None else doc.get("insurance"),
            postage_label={
                "id": "pl_" + secrets.token_hex(16),
                "object": "PostageLabel",
                "mode": "test",
                "label_file_type": "image/png",
                "label_date": iso(now),
                "created_at": iso(now),
                "updated_at": iso(now),
            },
            tracker={"id": "trk_" + secrets.token_hex(16)},
        )
        self._store.update_shipment(doc)
        self.webhooks.watch(_key(doc))
        log.info("label bought for %s: %s %s, tracking %s", doc["id"], rate["carrier"], rate["service"], tracking_code)
        return web.json_response(self._shipment(doc, now))

    async def refund(self, request: web.Request) -> web.Response:
        await self._fault("refund")
        doc = self._load(request.match_info["id"])
        now = time.time()
        if not started(doc):
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
        self.webhooks.watch(_key(doc))
        shown = self._shipment(doc, now)
        shown["refund_status"] = "submitted"
        log.info("label of %s refunded", doc["id"])
        return web.json_response(shown)

    # -- trackers ------------------------------------------------------------------------------------------

    async def create_tracker(self, request: web.Request) -> web.Response:
        """The tracker of a tracking code: a sandbox label's own, one created before, else a new standalone
        one that progresses by time from now."""
        body = await _json(request)
        await self._fault("create_tracker")
        data = body.get("tracker")
        code = data.get("tracking_code") if isinstance(data, dict) else None
        carrier = data.get("carrier") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code.strip():
            return _missing("tracker.tracking_code")
        if carrier is not None and not isinstance(carrier, str):
            return easypost_error(
                422, "PARAMETER.INVALID", "Invalid carrier.", [{"field": "tracker.carrier", "message": "invalid"}]
            )
        now = time.time()
        doc = self._tracked(code.strip())
        if doc is not None:
            return web.json_response(self._tracker(doc, now))
        doc = new_tracker(code.strip(), carrier, now, self.progression)
        self._store.insert_tracker(doc)
        self.webhooks.watch(_key(doc))
        log.info("standalone tracker %s created for %s", doc["id"], doc["tracking_code"])
        return web.json_response(self._tracker(doc, now), status=201)

    async def get_tracker(self, request: web.Request) -> web.Response:
        await self._fault("tracker")
        tracker_id = request.match_info["id"]
        doc = self._store.shipment_by_tracker_id(tracker_id) or self._store.tracker(tracker_id)
        if doc is None:
            return easypost_error(404, "NOT_FOUND", NOT_FOUND)
        return web.json_response(self._tracker(doc, time.time()))

    async def list_trackers(self, request: web.Request) -> web.Response:
        """EasyPost's tracker list: newest first, filtered by `tracking_code`, `tracking_codes[]` and `carrier`,
        `page_size` (default 20, at most 100) at a time, older ones with `before_id`."""
        await self._fault("tracker")
        q = request.query
        codes = {*q.getall("tracking_codes[]", []), *q.getall("tracking_codes", [])}
        if "tracking_code" in q:
            codes.add(q["tracking_code"])
        if codes:
            found = (self._tracked(code) for code in codes)
            docs = [d for d in found if d is not None]
        else:
            docs = [d for d in self._store.shipments() if started(d)] + self._store.trackers()
        carrier = (q.get("carrier") or "").lower()
        now = time.time()
        docs.sort(key=lambda d: d["_sandbox"]["purchased_at"], reverse=True)
        trackers = [t for t in (self._tracker(d, now) for d in docs) if carrier in ("", t["carrier"].lower())]
        if "before_id" in q:
            ids = [t["id"] for t in trackers]
            trackers = trackers[ids.index(q["before_id"]) + 1 :] if q["before_id"] in ids else []
        try:
            size = min(max(int(q.get("page_size", "20")), 1), 100)
        except ValueError:
            return easypost_error(400, "BAD_REQUEST", "page_size must be a number.")
        return web.json_response({"trackers": trackers[:size], "has_more": len(trackers) > size})

    async def label(self, request: web.Request) -> web.Response:
        shipment_id = request.match_info["file"].removesuffix(".png")
        doc = self._store.shipment(shipment_id)
        if doc is None or not started(doc):
            raise web.HTTPNotFound()
        return web.Response(body=LABEL_PNG, content_type="image/png")

    async def track_page(self, request: web.Request) -> web.Response:
        doc = self._tracked(request.match_info["tracking_code"])
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

    # -- documents -----------------------------------------------------------------------------------------

    def _load(self, shipment_id: str) -> dict[str, Any]:
        doc = self._store.shipment(shipment_id)
        if doc is None:
            raise _Reject(easypost_error(404, "NOT_FOUND", NOT_FOUND))
        return doc

    def _tracked(self, tracking_code: str) -> dict[str, Any] | None:
        """The bought shipment or the standalone tracker with this tracking code."""
        return self._store.shipment_by_tracking_code(tracking_code) or self._store.tracker_by_tracking_code(
            tracking_code
        )

    def _load_key(self, key: Key) -> dict[str, Any] | None:
        kind, doc_id = key
        return self._store.shipment(doc_id) if kind == "shipment" else self._store.tracker(doc_id)

    def _save(self, doc: dict[str, Any]) -> None:
        if doc.get("object") == "Shipment":
            self._store.update_shipment(doc)
        else:
            self._store.update_tracker(doc)

    def _tracker_keys(self) -> list[Key]:
        shipments = [_key(d) for d in self._store.shipments() if started(d)]
        return shipments + [_key(d) for d in self._store.trackers()]

    def _new_tracking_code(self) -> str:
        while True:
            code = "SBX" + "".join(secrets.choice("0123456789") for _ in range(16))
            if not self._store.tracking_code_taken(code):
                return code

    def _shipment(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        shown = {k: v for k, v in doc.items() if k != "_sandbox"}
        if not started(doc):
            shown["tracker"] = None
            return shown
        shown["postage_label"] = {
            **doc["postage_label"],
            "label_url": f"{self.public_base}/labels/{doc['id']}.png",
        }
        shown["tracker"] = self._tracker(doc, now)
        return shown

    def _tracker(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        return render_tracker(doc, now, self.public_base)


def _key(doc: dict[str, Any]) -> Key:
    return ("shipment" if doc.get("object") == "Shipment" else "tracker", doc["id"])


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
    street = str(address.get("street1") or "")
    if "invalid" in street.lower():
        # Quoting the street, as some carriers' verification messages do: the engine must keep it out of its logs
        errors.append({"field": "street1", "message": f"Address not found: {street}"})
    return errors


def _address(address: dict[str, Any], now: float) -> dict[str, Any]:
    stamp = {"mode": "test", "created_at": iso(now), "updated_at": iso(now)}
    return {**address, "id": "adr_" + secrets.token_hex(16), "object": "Address", **stamp}


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
    stamp = {"mode": "test", "created_at": iso(now), "updated_at": iso(now)}
    return {
        "id": shipment_id,
        "object": "Shipment",
        **stamp,
        "reference": data.get("reference"),
        "to_address": _address(data["to_address"], now),
        "from_address": _address(data["from_address"], now),
        "parcel": {**(data.get("parcel") or {}), "id": "prcl_" + secrets.token_hex(16), "object": "Parcel", **stamp},
        "is_return": bool(data.get("is_return", False)),
        "options": data.get("options") or {},
        "rates": [
            {
                "id": "rate_" + secrets.token_hex(16),
                "object": "Rate",
                **stamp,
                "carrier": carrier,
                "carrier_account_id": "ca_sandbox_" + carrier.lower(),
                "service": service,
                "rate": rate,
                "currency": "USD",
                "list_rate": rate,
                "list_currency": "USD",
                "retail_rate": rate,
                "retail_currency": "USD",
                "delivery_days": days,
                "est_delivery_days": days,
                "delivery_date": iso(now + days * DAY),
                "delivery_date_guaranteed": guaranteed,
                "shipment_id": shipment_id,
            }
            for carrier, service, days, rate, guaranteed in RATES
        ],
        "selected_rate": None,
        "postage_label": None,
        "tracking_code": None,
        "refund_status": None,
        "insurance": None,
        "status": "unknown",
        "messages": [],
        "_sandbox": {"purchased_at": None, "progression": None, "holds": [], "cancelled_at": None},
    }
