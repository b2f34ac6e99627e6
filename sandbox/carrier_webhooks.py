"""EasyPost's webhooks from the sandbox carrier: an Event per tracker change, signed as EasyPost signs them.

A watcher task follows every started tracker (bought shipments and standalone trackers), waking when the
next automatic change is due (carrier_trackers.timeline says when) or when something changed it (a forced
status, a refund), at most every `interval` seconds. Each new tracking detail makes one Event, in order:
`tracker.created` for a tracker's first, `tracker.updated` (with `previous_attributes.status`) for the rest;
an estimated delivery that moves without a new detail makes a `tracker.updated` too. What was announced is
kept with the tracker, so a restarted sandbox goes on where it stopped.

Events are POSTed to the webhook URL with `X-Hmac-Signature: hmac-sha256-hex=<HMAC-SHA256 of the body, key
the NFKD-normalised secret>`, what `easypost.validate_webhook` checks; the events of one tracker one after
the other, each retried with backoff while the receiver fails. Only this machine is called. Every event is
listed (`GET /v2/events`, EasyPost's API; `GET /v2/_sandbox/events` with how its delivery went), delivered
or not. Test controls: `/v2/_sandbox/webhooks` switches delivery on and off, sets the URL, drops or
duplicates the next events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.carrier_trackers import hold_open, iso, render_tracker, timeline
from sandbox.httputil import easypost_error
from sandbox.webhook_delivery import LOCAL_HOSTS, Delivery, WebhookSender

log = logging.getLogger("fulfill.sandbox.carrier.webhooks")

SIGNATURE_HEADER = "X-Hmac-Signature"
USER_AGENT = "EasyPost WebHook Agent 1.0"
MAX_EVENTS = 10_000  # kept in memory, oldest forgotten first
Key = tuple[str, str]  # ("shipment" | "tracker", document id)


def signature(body: bytes, secret: str) -> str:
    """The X-Hmac-Signature EasyPost sends: HMAC-SHA256 over the raw body, key the NFKD-normalised secret."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass
class SentEvent(Delivery):
    """An event and what became of its delivery (Delivery)."""

    event: dict[str, Any]
    body: bytes | None = None
    signature: str | None = None

    def api_json(self) -> dict[str, Any]:
        """The Event as EasyPost's API shows it afterwards (`GET /v2/events/{id}`)."""
        done = self.delivery == "delivered"
        status = {"delivered": "completed", "failed": "failed", "pending": "pending"}.get(self.delivery, "completed")
        return {
            **self.event,
            "status": status,
            "pending_urls": [self.url] if self.url and self.delivery == "pending" else [],
            "completed_urls": [self.url] if done and self.url else [],
        }

    def json(self) -> dict[str, Any]:
        result = self.event["result"]
        return {
            "id": self.event["id"],
            "description": self.event["description"],
            "tracker_id": result["id"],
            "tracking_code": result["tracking_code"],
            "status": result["status"],
            "previous_status": self.event["previous_attributes"].get("status"),
            "url": self.url,
            "delivery": self.delivery,
            "attempts": self.attempts,
            "deliveries": self.deliveries,
            "last_error": self.last_error,
            "event": self.event,
        }


@dataclass
class WebhookConfig:
    url: str | None
    secret: str | None
    enabled: bool = True
    drop_next: int = 0
    duplicate_next: int = 0
    retry_delays: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])

    def json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "url": self.url,
            "signed": self.secret is not None,
            "drop_next": self.drop_next,
            "duplicate_next": self.duplicate_next,
            "retry_delays": self.retry_delays,
        }


class CarrierWebhooks(WebhookSender[SentEvent]):
    """Watches trackers, makes their Events and delivers them. `load`/`save` read and write the documents
    (shipments and standalone trackers) by key; `public_base` renders tracker URLs."""

    def __init__(
        self,
        *,
        load: Callable[[Key], dict[str, Any] | None],
        save: Callable[[dict[str, Any]], None],
        keys: Callable[[], list[Key]],
        public_base: Callable[[], str],
        url: str | None,
        secret: str | None,
        enabled: bool = True,
        local_hosts: frozenset[str] = LOCAL_HOSTS,
        interval: float = 0.25,
    ) -> None:
        super().__init__("carrier", log, local_hosts)
        self._load, self._save, self._keys, self._public_base = load, save, keys, public_base
        self.config: WebhookConfig = WebhookConfig(url=url, secret=secret, enabled=enabled)
        self._interval = interval
        self._due: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self._events: OrderedDict[str, SentEvent] = OrderedDict()
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, app: web.Application | None = None) -> None:
        for key in self._keys():
            self._due[key] = 0.0
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self, app: web.Application | None = None) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await self._stop_deliveries()

    def watch(self, key: Key) -> None:
        """Something changed this tracker (bought, forced, refunded): look at it now."""
        self._due[key] = 0.0
        self._wake.set()

    # -- watching --------------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                self.check(time.time())
            except Exception:  # a bad document must not stop the webhooks of all the others
                log.exception("carrier webhook watcher failed; going on")

    def check(self, now: float) -> None:
        """Make the events of every tracker whose change is due by `now`."""
        for key, due in list(self._due.items()):
            if due > now:
                continue
            doc = self._load(key)
            if doc is None or "_sandbox" not in doc or doc["_sandbox"].get("purchased_at") is None:
                self._due.pop(key, None)
                continue
            self._announce(doc, now)
            _, _, next_at = timeline(doc, now)
            if math.isinf(next_at):
                self._due.pop(key, None)  # delivered, cancelled or held: until something changes it
            else:
                self._due[key] = next_at

    def _announce(self, doc: dict[str, Any], now: float) -> None:
        sb = doc["_sandbox"]
        current = render_tracker(doc, now, self._public_base())
        count, est = len(current["tracking_details"]), current["est_delivery_date"]
        notified = sb.get("notified")
        if notified is None:  # a tracker from before webhooks: what it says now is known already
            sb["notified"] = {"details": count, "est": est}
            self._save(doc)
            return
        if count > notified["details"]:
            for upto in range(notified["details"] + 1, count + 1):
                tracker = render_tracker(doc, now, self._public_base(), upto=upto)
                tracker["est_delivery_date"] = est if tracker["status"] != "cancelled" else None
                previous = current["tracking_details"][upto - 2]["status"] if upto > 1 else None
                self._emit(tracker, previous_status=previous, created=upto == 1, now=now)
        elif est != notified["est"] and not hold_open(doc):
            self._emit(current, previous_status=None, previous_est=notified["est"], now=now)
        else:
            return
        sb["notified"] = {"details": count, "est": est}
        self._save(doc)

    def _emit(
        self,
        tracker: dict[str, Any],
        *,
        previous_status: str | None,
        now: float,
        created: bool = False,
        previous_est: str | None = None,
    ) -> None:
        previous: dict[str, Any] = {}
        if previous_status is not None and previous_status != tracker["status"]:
            previous["status"] = previous_status
        if previous_est is not None:
            previous["est_delivery_date"] = previous_est
        cfg = self.config
        url = cfg.url if cfg.enabled else None
        event = {
            "object": "Event",
            "id": "evt_" + secrets.token_hex(16),
            "mode": "test",
            "description": "tracker.created" if created else "tracker.updated",
            "user_id": "user_sandbox",
            "status": "pending",
            "previous_attributes": previous,
            "result": tracker,
            "pending_urls": [url] if url else [],
            "completed_urls": [],
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        sent = SentEvent(event=event, url=url)
        self._remember(sent)
        if self._admit(sent):
            self._chain(str(tracker["id"]), sent)

    def _remember(self, sent: SentEvent) -> None:
        self._events[sent.event["id"]] = sent
        while len(self._events) > MAX_EVENTS:
            self._events.popitem(last=False)

    # -- on the wire ----------------------------------------------------------------------------------------

    def _event_id(self, sent: SentEvent) -> str:
        return str(sent.event["id"])

    def _body(self, sent: SentEvent) -> bytes:
        """Made once: a duplicate or a retry is the same bytes, signature and all."""
        if sent.body is None:
            sent.body = json.dumps(sent.event).encode()
            sent.signature = signature(sent.body, self.config.secret) if self.config.secret is not None else None
        return sent.body

    def _headers(self, sent: SentEvent) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if sent.signature is not None:
            headers[SIGNATURE_HEADER] = sent.signature
        return headers

    # -- inspection ------------------------------------------------------------------------------------------

    def events(self, tracking_code: str | None = None) -> list[SentEvent]:
        """Oldest first."""
        return [e for e in self._events.values() if tracking_code in (None, e.event["result"]["tracking_code"])]

    def event(self, event_id: str) -> SentEvent | None:
        return self._events.get(event_id)

    def clear_events(self) -> None:
        self._events.clear()

    def configure(self, **changes: Any) -> WebhookConfig:
        """Change enabled, url, secret, drop_next, duplicate_next or retry_delays; ValueError if invalid."""
        cfg = self.config
        for name, value in changes.items():
            if name == "enabled" and isinstance(value, bool):
                cfg.enabled = value
            elif name in ("url", "secret") and (value is None or (isinstance(value, str) and value)):
                setattr(cfg, name, value)
            elif name in ("drop_next", "duplicate_next") and _count(value):
                setattr(cfg, name, value)
            elif name == "retry_delays" and isinstance(value, list) and all(_seconds(v) for v in value):
                cfg.retry_delays = [float(v) for v in value]
            else:
                raise ValueError(f"invalid webhook setting {name}={value!r}")
        return cfg


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 60


# ---------------------------------------------------------------------------------------------------------
# HTTP: EasyPost's Events API and the test controls


class WebhookRoutes:
    def __init__(self, webhooks: CarrierWebhooks) -> None:
        self._webhooks = webhooks

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v2/events", self.list_events)
        r.add_get("/v2/events/{id}", self.get_event)
        r.add_get("/v2/_sandbox/webhooks", self.get_config)
        r.add_post("/v2/_sandbox/webhooks", self.set_config)
        r.add_get("/v2/_sandbox/events", self.sandbox_events)
        r.add_delete("/v2/_sandbox/events", self.clear_events)
        app.on_startup.append(self._webhooks.start)
        app.on_cleanup.append(self._webhooks.stop)

    async def list_events(self, request: web.Request) -> web.Response:
        """Newest first, `page_size` (default 20, at most 100) at a time, older ones with `before_id`."""
        events = list(reversed(self._webhooks.events()))
        before = request.query.get("before_id")
        if before is not None:
            ids = [e.event["id"] for e in events]
            events = events[ids.index(before) + 1 :] if before in ids else []
        try:
            size = min(max(int(request.query.get("page_size", "20")), 1), 100)
        except ValueError:
            return easypost_error(400, "BAD_REQUEST", "page_size must be a number.")
        page = events[:size]
        return web.json_response({"events": [e.api_json() for e in page], "has_more": len(events) > size})

    async def get_event(self, request: web.Request) -> web.Response:
        sent = self._webhooks.event(request.match_info["id"])
        if sent is None:
            return easypost_error(404, "NOT_FOUND", "The requested resource could not be found.")
        return web.json_response(sent.api_json())

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._webhooks.config.json())

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text() or "{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            config = self._webhooks.configure(**body)
        except ValueError as err:  # JSONDecodeError too
            return easypost_error(400, "BAD_REQUEST", str(err))
        return web.json_response(config.json())

    async def sandbox_events(self, request: web.Request) -> web.Response:
        events = self._webhooks.events(request.query.get("tracking_code"))
        return web.json_response({"events": [e.json() for e in events]})

    async def clear_events(self, request: web.Request) -> web.Response:
        self._webhooks.clear_events()
        return web.json_response({"events": []})
