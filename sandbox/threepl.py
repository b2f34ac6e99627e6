"""Sandbox 3PL: a ShipBob-shaped API, so the engine's ShipBob adapter runs against it.

`POST /{version}/order` (`Authorization: Bearer <token>`, `shipbob_channel_id` header), `GET /{version}/order`
(by `ReferenceIds`, `IDs`, `LastUpdateStartDate`/`EndDate`, `SortOrder`, `Page`, `Limit`; paging headers
`total-count`, `page-number`, `total-pages`, `next-page`), `GET /{version}/order/{id}`,
`POST /{version}/order/{id}/cancel`, `GET /{version}/inventory-level` (paged the same way); any version
(`1.0`, `2.0`, `2025-07`...). Errors are ShipBob's problem documents (`{"title", "status", "errors": {field:
[messages]}}`): 400 malformed, 401 bad token, 403 another channel, 404, 422 duplicate reference or refused.

What happens to orders and stock: threepl_orders.py; the webhooks it signs and sends: threepl_webhooks.py.
Test controls under `/_sandbox/3pl` (no auth) and as methods: fault injection per operation (create_order,
list_orders, get_order, cancel_order, inventory), refuse or hold the next orders, ship/deliver/hold/release an
order now, stock levels, pace and refusal mode, webhooks, events. During an outage of "3pl" (outages.py)
every API call answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sandbox.outages import Outages
from sandbox.store import SandboxStore
from sandbox.threepl_orders import EPOCH, Pace, Rejected, Warehouse, render
from sandbox.threepl_webhooks import ThreePLWebhooks
from sandbox.webhook_delivery import LOCAL_HOSTS

log = logging.getLogger("fulfill.sandbox.threepl")

VERSION = r"/{version:\d+\.\d+|\d{4}-\d{2}}"
CONTROL = "/_sandbox/3pl"
OPERATIONS = frozenset({"create_order", "list_orders", "get_order", "cancel_order", "inventory"})
CHANNEL_HEADER = "shipbob_channel_id"
ACTIONS = frozenset({"ship", "deliver", "hold", "release"})


@dataclass
class Fault:
    remaining: int
    status: int | None  # None: only the delay, then the normal answer
    message: str
    delay: float = 0.0


def problem(status: int, title: str, errors: dict[str, list[str]] | None = None) -> web.Response:
    """ShipBob's error body (an ASP.NET problem document)."""
    body: dict[str, Any] = {
        "type": f"https://httpstatuses.io/{status}",
        "title": title,
        "status": status,
        "traceId": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00",
    }
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, content_type="application/problem+json")


class ThreePLSandbox:
    """`webhook_url`/`webhook_secret`: where events go and what signs them (None: nowhere, unsigned); `stock`:
    units on hand of SKUs that have no level yet."""

    def __init__(
        self,
        store: SandboxStore,
        *,
        token: str,
        channel_id: str,
        pace: Pace,
        outages: Outages | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        stock: dict[str, int] | None = None,
        local_hosts: frozenset[str] = LOCAL_HOSTS,
        interval: float = 0.5,
    ) -> None:
        self._store = store
        self._token = token
        self._channel_id = channel_id
        self._outages = outages if outages is not None else Outages()
        self._interval = interval
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self.public_base = "http://127.0.0.1"  # set once the port is bound (tracking URLs)
        self.faults: dict[str, Fault] = {}
        self.webhooks = ThreePLWebhooks(url=webhook_url, secret=webhook_secret, local_hosts=local_hosts)
        self.warehouse = Warehouse(
            store,
            channel_id=channel_id,
            pace=pace,
            emit=self.webhooks.emit,
            public_base=lambda: self.public_base,
            wake=self._wake.set,
        )
        if stock:
            store.set_threepl_stock(stock, only_new=True)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post(VERSION + "/order", self.create_order)
        r.add_get(VERSION + "/order", self.list_orders)
        r.add_get(VERSION + r"/order/{id:\d+}", self.get_order)
        r.add_post(VERSION + r"/order/{id:\d+}/cancel", self.cancel_order)
        r.add_get(VERSION + "/inventory-level", self.inventory)
        r.add_get("/track/{number}", self.track_page)
        ControlRoutes(self).add_routes(app)
        app.middlewares.append(self._middleware)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def _start(self, app: web.Application) -> None:
        self.warehouse.load()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _stop(self, app: web.Application) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await self.webhooks.stop()

    async def _tick(self) -> None:
        """Ship and deliver orders as they fall due."""
        while True:
            try:
                due = self.warehouse.tick(time.time())
            except Exception:  # a bad document must not stop every other order
                log.exception("3pl sandbox step failed; going on")
                due = math.inf
            wait = min(max(due - time.time(), 0.0), self._interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith((CONTROL, "/track/", "/healthz")):
            if self._outages.active("3pl"):
                return problem(503, "Service Unavailable: the service is temporarily down, try again later")
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return problem(401, "Unauthorized: no bearer token (Authorization: Bearer <token>)")
            if token.strip() != self._token:
                return problem(401, "Unauthorized: the token is not valid")
        try:
            response: web.StreamResponse = await handler(request)
        except Rejected as err:
            return problem(err.status, err.title, err.errors)
        return response

    # -- the API ---------------------------------------------------------------------------------------------

    async def create_order(self, request: web.Request) -> web.Response:
        body = await _json(request)
        channel = request.headers.get(CHANNEL_HEADER)
        if not channel:
            raise Rejected(400, "Missing channel", {CHANNEL_HEADER: [f"The {CHANNEL_HEADER} header is required."]})
        if channel.strip() != self._channel_id:
            raise Rejected(403, "Forbidden: the token has no access to this channel")
        await self._fault("create_order")
        doc = self.warehouse.submit(body, time.time())
        shipment = doc["shipments"][0]
        log.info("3pl order %s accepted as %s: %s", doc["reference_id"], doc["id"], shipment["status"])
        return web.json_response(render(doc), status=201)

    async def list_orders(self, request: web.Request) -> web.Response:
        await self._fault("list_orders")
        q = request.query
        since = _ms(q.get("LastUpdateStartDate"), "LastUpdateStartDate")
        until = _ms(q.get("LastUpdateEndDate"), "LastUpdateEndDate")
        docs = self._store.threepl_orders(updated_since_ms=since)
        refs, ids = _csv(q.get("ReferenceIds")), _csv(q.get("IDs"))
        docs = [
            d
            for d in docs
            if (not refs or d["reference_id"] in refs)
            and (not ids or str(d["id"]) in ids)
            and (until is None or d["_sandbox"]["updated_ms"] <= until)
        ]
        if q.get("SortOrder", "Newest").lower() != "oldest":
            docs.reverse()
        return _page(request, [render(d) for d in docs], default_limit=50)

    async def get_order(self, request: web.Request) -> web.Response:
        await self._fault("get_order")
        doc = self._store.threepl_order(int(request.match_info["id"]))
        if doc is None:
            raise Rejected(404, "Order not found")
        return web.json_response(render(doc))

    async def cancel_order(self, request: web.Request) -> web.Response:
        await self._fault("cancel_order")
        doc = self._store.threepl_order(int(request.match_info["id"]))
        if doc is None:
            raise Rejected(404, "Order not found")
        answer = self.warehouse.cancel(doc, time.time())
        log.info("3pl order %s: cancel %s", doc["reference_id"], answer["status"])
        return web.json_response(answer)

    async def inventory(self, request: web.Request) -> web.Response:
        await self._fault("inventory")
        return _page(request, self.warehouse.inventory(), default_limit=50)

    async def track_page(self, request: web.Request) -> web.Response:
        number = request.match_info["number"]
        for doc in self._store.threepl_orders(statuses=["Completed"]):
            shipment = doc["shipments"][0]
            if (shipment.get("tracking") or {}).get("tracking_number") == number:
                detail = (shipment["status_details"] or [{}])[0].get("description", "")
                page = (
                    f"<!doctype html><html><head><title>Tracking {html.escape(number)}</title></head><body>"
                    f"<h1>{html.escape(shipment['tracking']['carrier'])} {html.escape(number)}</h1>"
                    f"<p>{html.escape(detail)}</p></body></html>"
                )
                return web.Response(text=page, content_type="text/html")
        raise web.HTTPNotFound(text="unknown tracking number")

    # -- test controls ---------------------------------------------------------------------------------------

    def inject_fault(
        self,
        operation: str,
        fail_next: int = 1,
        status: int | None = 503,
        message: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `fail_next` calls of `operation` wait `delay` seconds, then fail with `status` (None: answer
        normally after the delay). The adapter's get_order and changes_since go through list_orders."""
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(sorted(OPERATIONS))}")
        if fail_next < 1 or delay < 0:
            raise ValueError("fail_next must be at least 1 and delay not negative")
        self.faults[operation] = Fault(fail_next, status or None, message or f"Injected fault on {operation}", delay)

    def clear_faults(self) -> None:
        self.faults.clear()

    async def _fault(self, operation: str) -> None:
        fault = self.faults.get(operation)
        if fault is None:
            return
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self.faults[operation]
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status:
            log.info("3pl fault injected on %s: %s", operation, fault.status)
            raise Rejected(fault.status, fault.message)

    def set_stock(self, levels: dict[str, int]) -> list[dict[str, Any]]:
        """Set units on hand per SKU without an order (stock in, a recount, drift); the inventory levels after."""
        if not all(isinstance(s, str) and s and _count(n) for s, n in levels.items()):
            raise ValueError('levels must be {"SKU": units} with whole units, not negative')
        self.warehouse.set_stock(dict(levels), time.time())
        return self.warehouse.inventory()

    def refuse_next(self, count: int = 1, reason: str = "Refused by the 3PL (sandbox control)") -> None:
        """Refuse the next `count` orders at submit (422) with `reason`."""
        self.warehouse.refuse_next.extend([reason] * _checked_count(count))

    def hold_next(self, count: int = 1, reason: str = "Placed on hold by the merchant") -> None:
        """Accept the next `count` orders On Hold with `reason` (released with `act(ref, "release")`)."""
        self.warehouse.hold_next.extend([reason] * _checked_count(count))

    def act(self, reference_id: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """Ship, deliver, hold or release an order now; the order after. Rejected(404/409) if it cannot."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(sorted(ACTIONS))}")
        doc, now = self.warehouse.order(reference_id), time.time()
        if action == "ship":
            self.warehouse.ship(doc, now)
        elif action == "deliver":
            self.warehouse.deliver(doc, now)
        elif action == "hold":
            self.warehouse.hold(doc, reason, now)
        else:
            self.warehouse.release(doc, now)
        return render(doc)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change ship_after, deliver_after (seconds) or refuse_at_submit (bool); the settings after."""
        for name, value in changes.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 86400
            if name not in ("ship_after", "deliver_after", "refuse_at_submit"):
                raise ValueError(f"unknown setting {name}: ship_after, deliver_after or refuse_at_submit")
            if (name == "refuse_at_submit") != isinstance(value, bool) or (name != "refuse_at_submit" and not numeric):
                raise ValueError(f"invalid {name}={value!r}")
        for name, value in changes.items():
            target = self.warehouse if name == "refuse_at_submit" else self.warehouse.pace
            setattr(target, name, value)
        return self.settings()

    def settings(self) -> dict[str, Any]:
        w = self.warehouse
        return {
            "ship_after": w.pace.ship_after,
            "deliver_after": w.pace.deliver_after,
            "refuse_at_submit": w.refuse_at_submit,
            "refuse_next": len(w.refuse_next),
            "hold_next": len(w.hold_next),
            "faults": {
                op: {"remaining": f.remaining, "status": f.status, "delay": f.delay} for op, f in self.faults.items()
            },
        }

    def orders(self) -> list[dict[str, Any]]:
        """Every order as the API shows it, oldest first."""
        return [render(d) for d in self._store.threepl_orders()]

    def order(self, reference_id: str) -> dict[str, Any] | None:
        doc = self._store.threepl_order_by_reference(reference_id)
        return render(doc) if doc is not None else None


class ControlRoutes:
    """The test controls over HTTP, under /_sandbox/3pl (no auth)."""

    def __init__(self, sandbox: ThreePLSandbox) -> None:
        self._sb = sandbox

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(CONTROL + "/orders", self.orders)
        r.add_post(CONTROL + "/orders/{reference_id}/{action}", self.act)
        r.add_get(CONTROL + "/inventory", self.inventory)
        r.add_post(CONTROL + "/inventory", self.set_inventory)
        r.add_post(CONTROL + "/faults", self.set_fault)
        r.add_delete(CONTROL + "/faults", self.clear_faults)
        r.add_post(CONTROL + "/refuse", self.refuse)
        r.add_post(CONTROL + "/hold", self.hold)
        r.add_get(CONTROL + "/config", self.config)
        r.add_post(CONTROL + "/config", self.configure)
        r.add_get(CONTROL + "/webhooks", self.webhooks)
        r.add_post(CONTROL + "/webhooks", self.configure_webhooks)
        r.add_get(CONTROL + "/events", self.events)
        r.add_delete(CONTROL + "/events", self.clear_events)

    async def orders(self, request: web.Request) -> web.Response:
        return web.json_response({"orders": self._sb.orders()})

    async def act(self, request: web.Request) -> web.Response:
        body = await _json(request)
        action = request.match_info["action"]
        try:
            order = self._sb.act(request.match_info["reference_id"], action, body.get("reason"))
        except ValueError as err:
            raise Rejected(400, str(err)) from err
        return web.json_response(order)

    async def inventory(self, request: web.Request) -> web.Response:
        return web.json_response({"inventory": self._sb.warehouse.inventory()})

    async def set_inventory(self, request: web.Request) -> web.Response:
        levels = await _json(request)
        return web.json_response({"inventory": _control(lambda: self._sb.set_stock(levels))})

    async def set_fault(self, request: web.Request) -> web.Response:
        b = await _json(request)
        args = (str(b.get("operation")), b.get("fail_next", 1), b.get("status", 503), b.get("message"))
        _control(lambda: self._sb.inject_fault(*args, delay=float(b.get("delay", 0.0))))
        return web.json_response(self._sb.settings())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._sb.clear_faults()
        return web.json_response(self._sb.settings())

    async def refuse(self, request: web.Request) -> web.Response:
        b = await _json(request)
        _control(lambda: self._sb.refuse_next(b.get("count", 1), str(b.get("reason") or "Refused by the 3PL")))
        return web.json_response(self._sb.settings())

    async def hold(self, request: web.Request) -> web.Response:
        b = await _json(request)
        _control(lambda: self._sb.hold_next(b.get("count", 1), str(b.get("reason") or "Placed on hold")))
        return web.json_response(self._sb.settings())

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response(self._sb.settings())

    async def configure(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(_control(lambda: self._sb.configure(**body)))

    async def webhooks(self, request: web.Request) -> web.Response:
        return web.json_response(self._sb.webhooks.config.json())

    async def configure_webhooks(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return web.json_response(_control(lambda: self._sb.webhooks.configure(**body)).json())

    async def events(self, request: web.Request) -> web.Response:
        events = self._sb.webhooks.events(request.query.get("reference_id"))
        return web.json_response({"events": [e.json() for e in events]})

    async def clear_events(self, request: web.Request) -> web.Response:
        self._sb.webhooks.clear_events()
        return web.json_response({"events": []})


def _control(call: Any) -> Any:
    try:
        return call()
    except (TypeError, ValueError) as err:
        raise Rejected(400, str(err)) from err


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_count(value: Any) -> int:
    if not _count(value) or value < 1:
        raise ValueError(f"count must be a whole number of at least 1, got {value!r}")
    return int(value)


async def _json(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Rejected(400, f"The body is not JSON: {err}") from err


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def _ms(value: str | None, name: str) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 query value (naive: UTC), as the store keeps changes."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise Rejected(400, "Invalid date", {name: [f"{value[:40]!r} is not an ISO 8601 date"]}) from None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return (at - EPOCH) // timedelta(milliseconds=1)


def _page(request: web.Request, rows: list[dict[str, Any]], *, default_limit: int) -> web.Response:
    """One page of `rows` (`Page` from 1, `Limit` at most 250) with ShipBob's paging headers."""
    try:
        page = max(int(request.query.get("Page", "1")), 1)
        limit = min(max(int(request.query.get("Limit", str(default_limit))), 1), 250)
    except ValueError:
        raise Rejected(400, "Invalid paging", {"Page": ["Page and Limit must be whole numbers"]}) from None
    pages = max(math.ceil(len(rows) / limit), 1)
    headers = {"total-count": str(len(rows)), "page-number": str(page), "total-pages": str(pages)}
    if page < pages:
        headers["next-page"] = str(request.rel_url.update_query({"Page": str(page + 1)}))
    return web.json_response(rows[(page - 1) * limit : page * limit], headers=headers)
