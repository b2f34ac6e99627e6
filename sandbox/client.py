"""The running sandbox over HTTP: its outbox (what `fulfill outbox` reads) and its outages (`fulfill dev outage`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
from pydantic import BaseModel

from sandbox.store import OutboxMessage


class SandboxError(Exception):
    """The sandbox did not do what was asked (see the message)."""


class SandboxUnreachable(SandboxError):
    """Nothing answers at the sandbox's address (is the stack running?)."""


class SandboxRefused(ValueError):
    """The sandbox refused the request (bad input); nothing changed."""


class OutageInfo(BaseModel):
    service: str
    ends_at: datetime | None  # None: until ended
    seconds_left: float | None


async def fetch_outbox(base_url: str, order_id: str | None = None, *, timeout_s: float = 10.0) -> list[OutboxMessage]:
    """Messages the sandbox at `base_url` (e.g. http://127.0.0.1:8026) received, oldest first."""
    params = {"order_id": order_id} if order_id is not None else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(base_url.rstrip("/") + "/outbox", params=params) as resp,
    ):
        resp.raise_for_status()
        data = await resp.json()
    return [OutboxMessage.model_validate(m) for m in data["messages"]]


async def text_from(base_url: str, sender: str, body: str, to: str | None = None) -> dict[str, Any]:
    """A customer at `sender` texts `body` (STOP, START, HELP...) to the sandbox Twilio: the sandbox records an
    opt-out or opt-in and posts the message to the engine's inbound webhook. Returns the sandbox's answer: "sid",
    "opted_out", "replies" (what the customer got back) and "engine" (its HTTP status and TwiML)."""
    message = {"from": sender, "body": body, **({"to": to} if to is not None else {})}
    answer: dict[str, Any] = await _call(base_url, "POST", "/sms/_sandbox/inbound", message)
    return answer


async def start_outage(base_url: str, service: str, seconds: float | None = None) -> list[OutageInfo]:
    """Start an outage of `service` (None seconds: until ended); returns the active outages."""
    body: dict[str, Any] = {"service": service}
    if seconds is not None:
        body["seconds"] = seconds
    data = await _call(base_url, "POST", "/_sandbox/outages", body)
    return [OutageInfo.model_validate(o) for o in data["outages"]]


async def end_outage(base_url: str, service: str) -> tuple[bool, list[OutageInfo]]:
    """End the outage of `service`: (whether it had one, the outages still active)."""
    data = await _call(base_url, "DELETE", f"/_sandbox/outages/{service}", None)
    return bool(data["ended"]), [OutageInfo.model_validate(o) for o in data["outages"]]


async def list_outages(base_url: str) -> list[OutageInfo]:
    data = await _call(base_url, "GET", "/_sandbox/outages", None)
    return [OutageInfo.model_validate(o) for o in data["outages"]]


async def _call(base_url: str, method: str, path: str, body: dict[str, Any] | None, timeout_s: float = 10.0) -> Any:
    url = base_url.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.request(method, url, json=body) as resp,
        ):
            if resp.status == 400:
                problem = await resp.json(content_type=None)
                raise SandboxRefused(str(problem.get("detail") or problem.get("title") or "bad request"))
            if resp.status >= 300:
                raise SandboxError(f"the sandbox at {base_url} answered {method} {path} with HTTP {resp.status}")
            return await resp.json()
    except TimeoutError as err:
        raise SandboxUnreachable(f"the sandbox at {base_url} is not reachable (no answer in {timeout_s:g} s)") from err
    except aiohttp.ClientConnectionError as err:
        why = "nothing listens there" if isinstance(err, aiohttp.ClientConnectorError) else type(err).__name__
        raise SandboxUnreachable(f"the sandbox at {base_url} is not reachable ({why})") from err
