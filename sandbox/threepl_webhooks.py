"""The sandbox 3PL's webhooks, signed the Standard Webhooks way, as ShipBob sends them.

Each change with a topic becomes one event: a `msg_...` id (the `webhook-id`, the same on every retry and copy)
and the body `{"topic", "event_time", "shipment_id", "data": <the Order as GET /order shows it>}`, POSTed with
`webhook-timestamp` (Unix seconds of that attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 over
"{id}.{timestamp}.{body}", key the base64-decoded part of the whsec_ secret>` (a new timestamp and signature on
each attempt), plus ShipBob's `x-webhook-topic`. At least once: an event is retried with backoff while the
receiver does not answer 2xx, until its retry delays run out. The events of one order go one after the other,
in order (ShipBob promises no order: `reorder_next` shows what a receiver must cope with). Only this
machine is called. Test controls: on/off, URL, secret, drop the next N events, send the next N twice, hold
the next N and send them in reverse once N are held (or when reorder_next is set to 0), retry delays; every
event is listed with how its delivery went.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sandbox.carrier_webhooks import LOCAL_HOSTS
from sandbox.threepl_orders import iso, render

log = logging.getLogger("fulfill.sandbox.threepl.webhooks")

USER_AGENT = "ShipBob-Webhooks/sandbox"
MAX_EVENTS = 10_000  # kept in memory, oldest forgotten first


def signing_key(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret; ValueError if it is not one."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padded or not
    except (binascii.Error, ValueError) as err:
        raise ValueError("the webhook secret must be whsec_ followed by base64") from err
    if not key:
        raise ValueError("the webhook secret has an empty key")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` of a Standard Webhooks message."""
    digest = hmac.new(signing_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class SentEvent:
    """An event and what became of it: pending, delivered, failed (retries exhausted), dropped (test control),
    disabled (webhooks off or no URL), refused (a URL off this machine) or held (waiting to be reordered)."""

    webhook_id: str
    topic: str
    reference_id: str
    payload: dict[str, Any]
    body: bytes
    url: str | None
    delivery: str = "pending"
    attempts: int = 0
    deliveries: int = 0  # successful posts: 2 for a duplicated event
    last_error: str | None = None
    copies: int = 1

    def json(self) -> dict[str, Any]:
        shipment = self.payload["data"]["shipments"][0]
        return {
            "webhook_id": self.webhook_id,
            "topic": self.topic,
            "reference_id": self.reference_id,
            "status": shipment["status"],
            "detail": (shipment["status_details"] or [{}])[0].get("name"),
            "url": self.url,
            "delivery": self.delivery,
            "attempts": self.attempts,
            "deliveries": self.deliveries,
            "last_error": self.last_error,
            "payload": self.payload,
        }


@dataclass
class WebhookConfig:
    url: str | None
    secret: str | None
    enabled: bool = True
    drop_next: int = 0
    duplicate_next: int = 0
    reorder_next: int = 0
    retry_delays: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])

    def json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "url": self.url,
            "signed": self.secret is not None,
            "drop_next": self.drop_next,
            "duplicate_next": self.duplicate_next,
            "reorder_next": self.reorder_next,
            "retry_delays": self.retry_delays,
        }


class ThreePLWebhooks:
    def __init__(
        self, *, url: str | None, secret: str | None, enabled: bool = True, local_hosts: frozenset[str] = LOCAL_HOSTS
    ) -> None:
        if secret is not None:
            signing_key(secret)
        self.config = WebhookConfig(url=url, secret=secret, enabled=enabled)
        self._local_hosts = local_hosts
        self._events: OrderedDict[str, SentEvent] = OrderedDict()
        self._chains: dict[str, asyncio.Task[None]] = {}  # reference id -> its last delivery
        self._held: list[SentEvent] = []  # waiting to go out in reverse
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    async def stop(self) -> None:
        tasks = [*self._chains.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._chains.clear()
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- making events ---------------------------------------------------------------------------------------

    def emit(self, topic: str, doc: dict[str, Any], now: float) -> SentEvent:
        order = render(doc)
        payload = {"topic": topic, "event_time": iso(now), "shipment_id": order["shipments"][0]["id"], "data": order}
        cfg = self.config
        url = cfg.url if cfg.enabled else None
        sent = SentEvent(
            webhook_id="msg_" + secrets.token_urlsafe(18),
            topic=topic,
            reference_id=order["reference_id"],
            payload=payload,
            body=json.dumps(payload).encode(),
            url=url,
        )
        self._events[sent.webhook_id] = sent
        while len(self._events) > MAX_EVENTS:
            self._events.popitem(last=False)
        self._dispatch(sent)
        return sent

    def _dispatch(self, sent: SentEvent) -> None:
        cfg = self.config
        if sent.url is None:
            sent.delivery = "disabled"
        elif cfg.drop_next > 0:
            cfg.drop_next -= 1
            sent.delivery = "dropped"
        elif urlsplit(sent.url).hostname not in self._local_hosts:
            sent.delivery = "refused"
            log.info("3pl event %s not delivered to %s: the sandbox only calls this machine", sent.webhook_id, sent.url)
        else:
            if cfg.duplicate_next > 0:
                cfg.duplicate_next -= 1
                sent.copies = 2
            if cfg.reorder_next > 0:
                self._hold(sent)
            else:
                self._chain(sent)

    def _hold(self, sent: SentEvent) -> None:
        self.config.reorder_next -= 1
        sent.delivery = "held"
        self._held.append(sent)
        if self.config.reorder_next == 0:
            self._release_held()

    def _release_held(self) -> None:
        """Send the held events, last first."""
        batch, self._held = list(reversed(self._held)), []
        for event in batch:
            event.delivery = "pending"
        if batch:
            self._spawn(self._deliver_all(batch))

    # -- delivery --------------------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chain(self, sent: SentEvent) -> None:
        """Deliver after the order's earlier events, so a receiver sees them in order."""
        before = self._chains.get(sent.reference_id)
        task = asyncio.get_running_loop().create_task(self._deliver_after(before, sent))
        self._chains[sent.reference_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(sent.reference_id) is done:
                del self._chains[sent.reference_id]

        task.add_done_callback(forget)

    async def _deliver_after(self, before: asyncio.Task[None] | None, sent: SentEvent) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(before)
        await self._deliver_all([sent])

    async def _deliver_all(self, batch: list[SentEvent]) -> None:
        for sent in batch:
            for _ in range(sent.copies):
                await self._deliver(sent)

    async def _deliver(self, sent: SentEvent) -> None:
        assert sent.url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        for attempt, delay in enumerate([0.0, *self.config.retry_delays], start=1):
            await asyncio.sleep(delay)
            sent.attempts += 1
            try:
                async with self._session.post(sent.url, data=sent.body, headers=self._headers(sent)) as resp:
                    await resp.read()
                    if resp.status < 300:
                        sent.deliveries += 1
                        sent.delivery, sent.last_error = "delivered", None
                        self._failing_now(False, sent.url, "")
                        return
                    sent.last_error = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                sent.last_error = f"{type(err).__name__}: {err}"
            self._failing_now(True, sent.url, sent.last_error)
            log.debug("3pl event %s attempt %d to %s failed: %s", sent.webhook_id, attempt, sent.url, sent.last_error)
        if sent.delivery != "delivered":
            sent.delivery = "failed"

    def _headers(self, sent: SentEvent) -> dict[str, str]:
        """This attempt's headers: a new timestamp, and the signature over it."""
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": sent.webhook_id,
            "webhook-timestamp": str(stamp),
            "x-webhook-topic": sent.topic,
        }
        if self.config.secret is not None:
            headers["webhook-signature"] = sign(self.config.secret, sent.webhook_id, stamp, sent.body)
        return headers

    def _failing_now(self, failing: bool, url: str, error: str) -> None:
        """Say it once when a receiver starts failing and once when it works again, not at every attempt."""
        if failing and not self._failing:
            log.info("3pl webhooks to %s failing (%s); retrying quietly", url, error)
        elif not failing and self._failing:
            log.info("3pl webhooks to %s delivered again", url)
        self._failing = failing

    # -- inspection and controls -----------------------------------------------------------------------------

    def events(self, reference_id: str | None = None) -> list[SentEvent]:
        """Oldest first."""
        return [e for e in self._events.values() if reference_id in (None, e.reference_id)]

    def clear_events(self) -> None:
        self._events.clear()

    def configure(self, **changes: Any) -> WebhookConfig:
        """Change enabled, url, secret, drop_next, duplicate_next, reorder_next or retry_delays; ValueError (and
        nothing changed) if one is invalid."""
        for name, value in changes.items():
            _check(name, value)
        for name, value in changes.items():
            setattr(self.config, name, [float(v) for v in value] if name == "retry_delays" else value)
        if self.config.reorder_next == 0:
            self._release_held()  # a batch cut short goes out as it is
        return self.config


def _check(name: str, value: Any) -> None:
    counts = ("drop_next", "duplicate_next", "reorder_next")
    if name == "enabled" and isinstance(value, bool):
        return
    if name == "url" and (value is None or (isinstance(value, str) and value)):
        return
    if name == "secret" and (value is None or isinstance(value, str)):
        if value is not None:
            signing_key(value)
        return
    if name in counts and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return
    if name == "retry_delays" and isinstance(value, list) and all(_seconds(v) for v in value):
        return
    raise ValueError(f"invalid webhook setting {name}={value!r}")


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 600
