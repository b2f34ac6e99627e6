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

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sandbox.threepl_orders import iso, render
from sandbox.webhook_delivery import LOCAL_HOSTS, Delivery, WebhookSender

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
class SentEvent(Delivery):
    """An event and what became of its delivery (Delivery)."""

    webhook_id: str
    topic: str
    reference_id: str
    payload: dict[str, Any]
    body: bytes

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


class ThreePLWebhooks(WebhookSender[SentEvent]):
    def __init__(
        self, *, url: str | None, secret: str | None, enabled: bool = True, local_hosts: frozenset[str] = LOCAL_HOSTS
    ) -> None:
        if secret is not None:
            signing_key(secret)
        super().__init__("3pl", log, local_hosts)
        self.config: WebhookConfig = WebhookConfig(url=url, secret=secret, enabled=enabled)
        self._events: OrderedDict[str, SentEvent] = OrderedDict()
        self._held: list[SentEvent] = []  # waiting to go out in reverse

    async def stop(self) -> None:
        await self._stop_deliveries()

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
        if not self._admit(sent):
            return
        if self.config.reorder_next > 0:
            self._hold(sent)
        else:
            self._chain(sent.reference_id, sent)

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

    # -- on the wire ----------------------------------------------------------------------------------------

    def _event_id(self, sent: SentEvent) -> str:
        return sent.webhook_id

    def _body(self, sent: SentEvent) -> bytes:
        return sent.body

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
