"""Outages of the sandbox services, switched on and off while the stack runs.

During an outage a service fails the way its real provider fails transiently (SMTP 421, Twilio, EasyPost and the
3PL 503, Stripe 503 `api_error`), so the engine's adapters raise their transient errors and orders wait; when it
ends (by hand, or its time is up) the same clients succeed again. Control: `SandboxServers.start_outage` /
`end_outage` / `outages` in process, and `/_sandbox/outages` on the sandbox HTTP server (what `fulfill dev outage`
calls).
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

log = logging.getLogger("fulfill.sandbox.outages")

SERVICES = ("smtp", "sms", "carrier", "payments", "3pl")
PROBLEM_JSON = "application/problem+json"
EXAMPLE = '{"service": "smtp", "seconds": 600}'


class Outages:
    """Service -> wall-clock end of its outage (None: until ended). An outage whose time is up is over."""

    def __init__(self) -> None:
        self._ends: dict[str, float | None] = {}

    def start(self, service: str, seconds: float | None = None) -> float | None:
        """Start (or replace) the outage of `service`; returns its wall-clock end (None: until ended)."""
        check_service(service)
        if seconds is not None:
            # bool is an int: `True` seconds is a mistake, not one second
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError(f"seconds must be a number, got {seconds!r}")
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        end = None if seconds is None else time.time() + seconds
        self._ends[service] = end
        log.warning("outage of %s started (%s)", service, "until ended" if seconds is None else f"{seconds:g} s")
        return end

    def end(self, service: str) -> bool:
        """End the outage of `service`; False if it had none."""
        check_service(service)
        was_active = self.active(service)
        self._ends.pop(service, None)
        if was_active:
            log.warning("outage of %s ended", service)
        return was_active

    def active(self, service: str) -> bool:
        if service not in self._ends:
            return False
        end = self._ends[service]
        if end is not None and end <= time.time():
            del self._ends[service]
            log.warning("outage of %s is over (its time is up)", service)
            return False
        return True

    def snapshot(self) -> dict[str, float | None]:
        """The active outages: service -> wall-clock end (None: until ended), in SERVICES order."""
        return {s: self._ends[s] for s in SERVICES if self.active(s)}


def check_service(service: object) -> str:
    if not isinstance(service, str) or service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: the sandbox services are {', '.join(SERVICES)}")
    return service


def problem(status: int, title: str, detail: str) -> web.Response:
    """An RFC 9457 problem document."""
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type=PROBLEM_JSON,
    )


class OutageControl:
    """`/_sandbox/outages` on the sandbox HTTP server."""

    def __init__(self, outages: Outages) -> None:
        self._outages = outages

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_sandbox/outages", self.list_outages)
        app.router.add_post("/_sandbox/outages", self.start_outage)
        app.router.add_delete("/_sandbox/outages/{service}", self.end_outage)

    def listing(self) -> dict[str, Any]:
        now = time.time()
        return {
            "outages": [
                {
                    "service": service,
                    "ends_at": None if end is None else _iso(end),
                    "seconds_left": None if end is None else round(max(end - now, 0.0), 1),
                }
                for service, end in self._outages.snapshot().items()
            ]
        }

    async def list_outages(self, request: web.Request) -> web.Response:
        return web.json_response(self.listing())

    async def start_outage(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return problem(400, "Body is not JSON", f"the body must be JSON like {EXAMPLE}: {err}")
        if not isinstance(body, dict):
            return problem(400, "Body is not a JSON object", f"the body must be a JSON object like {EXAMPLE}")
        unknown = sorted(set(body) - {"service", "seconds"})
        if unknown:
            return problem(400, "Unknown field", f"unknown field(s) {', '.join(unknown)}: only service and seconds")
        if "service" not in body:
            return problem(400, "Missing service", f"service is required: one of {', '.join(SERVICES)}")
        try:
            self._outages.start(body["service"], body.get("seconds"))
        except ValueError as err:
            return problem(400, "Invalid outage", str(err))
        return web.json_response(self.listing(), status=201)

    async def end_outage(self, request: web.Request) -> web.Response:
        try:
            ended = self._outages.end(request.match_info["service"])
        except ValueError as err:
            return problem(400, "Invalid outage", str(err))
        return web.json_response({"ended": ended, **self.listing()})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
