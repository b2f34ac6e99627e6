"""The 3PL through ShipBob's REST API (aiohttp): orders, cancellations, inventory levels, webhooks.

`ShipBobClient` implements the provider-neutral `ThreePLProvider` of threepl_api.py. Calls go to
`{threepl_api_base}` (which includes the API version, e.g. https://api.shipbob.com/2.0) with
`Authorization: Bearer <token>` and the `shipbob_channel_id` header:

- submit: `POST /order` (reference_id, order_number, shipping_method, recipient, products by SKU). ShipBob
  refuses a reference it has with 422: any 422 or 400 is first checked against `GET /order?ReferenceIds=`, so a
  repeat (a retry after a lost answer) returns the order it has; otherwise it is the 3PL's refusal.
- get: `GET /order?ReferenceIds=<ref>`; cancel: `POST /order/{id}/cancel` (results per shipment);
  inventory: `GET /inventory-level` (paged); changes: `GET /order?LastUpdateStartDate=<iso>` (paged).
- webhooks: Standard Webhooks signatures (threepl_webhooks.py); the body is `{"topic", "event_time",
  "shipment_id", "data": <Order>}`.

Every call is bounded by `threepl_timeout` (connection and answer). 408, 429, 5xx, timeouts, connection errors
and answers that are not JSON are ThreePLTransientError; 404 ThreePLNotFound; a refusal of the order (422, or
400 naming the recipient or products) ThreePLRefused with ShipBob's words; anything else (401, 403...)
ThreePLError. Messages and logs name the order by reference id; the recipient's name, address, email and phone
are blanked out of anything ShipBob says back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from common.config import Settings
from common.integrations.shipbob_views import (
    UNREADABLE,
    order_body,
    parse_order,
    parse_stock,
    parse_time,
    private_values,
)
from common.integrations.threepl_api import (
    ORDER_TOPICS,
    CancelAnswer,
    ThreePLDetail,
    ThreePLError,
    ThreePLEvent,
    ThreePLNotFound,
    ThreePLOrder,
    ThreePLRecipient,
    ThreePLRefused,
    ThreePLStock,
    ThreePLTransientError,
    ThreePLWebhookRefused,
)
from common.integrations.threepl_webhooks import verify_standard_webhook, webhook_key
from common.logs import redact

log = logging.getLogger("fulfill.integrations.threepl")

CHANNEL_HEADER = "shipbob_channel_id"
TOPIC_HEADER = "x-webhook-topic"
PAGE_SIZE = 250  # ShipBob's largest page
MAX_PAGES = 400  # 100,000 rows: a listing longer than that is a bug somewhere, not a page to wait for
RETRYABLE_STATUSES = frozenset({408, 425, 429})
REFUSAL_FIELDS = ("recipient", "products", "address")


class ShipBobClient:
    """ShipBob behind the `ThreePLProvider` methods. One aiohttp session, opened on first use; usable again
    after `close()`."""

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self._base = settings.threepl_api_base.rstrip("/")
        self._token = settings.threepl_api_token
        self._channel = settings.threepl_channel_id
        self._timeout = timeout if timeout is not None else settings.threepl_timeout
        secret = settings.threepl_webhook_secret
        self._signer = webhook_key(secret) if secret else None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- orders ----------------------------------------------------------------------------------------------

    async def submit_order(
        self,
        *,
        reference_id: str,
        order_number: str,
        lines: Sequence[tuple[str, int]],
        recipient: ThreePLRecipient,
        shipping_method: str,
        idempotency_key: str,
    ) -> ThreePLOrder:
        what = f"submit order {reference_id}"
        if not lines or any(quantity <= 0 for _, quantity in lines):
            raise ThreePLError(f"3pl {what}: an order needs lines with positive quantities")
        body = order_body(
            reference_id=reference_id,
            order_number=order_number,
            lines=lines,
            recipient=recipient,
            shipping_method=shipping_method,
            idempotency_key=idempotency_key,
        )
        try:
            data, _ = await self._call("POST", "/order", what, payload=body, private=private_values(recipient))
        except ThreePLRefused:
            # ShipBob's answer to a reference it has (422): the order it has is the answer to a repeat
            existing = await self.get_order(reference_id)
            if existing is None:
                raise
            log.info("3pl order %s was submitted before: provider id %s", reference_id, existing.provider_id)
            return existing
        order = self._order(data, what)
        log.info("3pl order %s submitted: provider id %s, %s", reference_id, order.provider_id, order.status.value)
        return order

    async def get_order(self, reference_id: str) -> ThreePLOrder | None:
        what = f"get order {reference_id}"
        data, _ = await self._call("GET", "/order", what, params={"ReferenceIds": reference_id})
        orders = [self._order(d, what) for d in _rows(data, what)]
        return next((o for o in orders if o.reference_id == reference_id), None)

    async def request_cancel(self, reference_id: str) -> CancelAnswer:
        what = f"cancel order {reference_id}"
        order = await self.get_order(reference_id)
        if order is None:
            raise ThreePLNotFound(f"3pl {what}: the 3PL has no order with this reference", status=404)
        data, _ = await self._call("POST", f"/order/{order.provider_id}/cancel", what)
        if not isinstance(data, dict):
            raise ThreePLTransientError(f"3pl {what}: the answer is not a cancel result", code="BAD_ANSWER")
        results = [r for r in (data.get("canceled_shipment_results") or []) if isinstance(r, Mapping)]
        accepted = str(data.get("status") or "").lower() == "success" and all(r.get("is_success") for r in results)
        reasons = [str(r.get("reason")) for r in results if not r.get("is_success") and r.get("reason")]
        after = await self.get_order(reference_id) or order
        verdict = "accepted" if accepted else "refused"
        log.info("3pl order %s: cancel %s (%s)", reference_id, verdict, after.status.value)
        return CancelAnswer(
            accepted=accepted,
            status=after.status,
            reason="; ".join(reasons) or (None if accepted else f"the 3PL answered {data.get('status')!r}"),
            order=after,
        )

    async def changes_since(self, since: datetime) -> list[ThreePLOrder]:
        if since.tzinfo is None:
            raise ValueError("since must be an aware datetime")
        stamp = since.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        what = f"list orders changed since {stamp}"
        params = {"LastUpdateStartDate": stamp, "SortOrder": "Oldest"}
        orders = [self._order(d, what) for d in await self._pages("/order", what, params)]
        return sorted(orders, key=lambda o: o.updated_at or datetime.min.replace(tzinfo=UTC))

    # -- inventory -------------------------------------------------------------------------------------------

    async def inventory_levels(self) -> list[ThreePLStock]:
        what = "inventory levels"
        levels = []
        for d in await self._pages("/inventory-level", what, {}):
            try:
                levels.append(parse_stock(d))
            except UNREADABLE as err:
                raise ThreePLTransientError(f"3pl {what}: an item is not readable ({err})", code="BAD_ANSWER") from err
        return levels

    # -- webhooks --------------------------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None) -> ThreePLEvent:
        if self._signer is None:
            raise ThreePLWebhookRefused("no webhook secret is set (FULFILL_THREEPL_WEBHOOK_SECRET): refusing all")
        verified = verify_standard_webhook(body, headers, self._signer, now=now)
        payload = verified.payload
        if not isinstance(payload, dict):
            raise ThreePLWebhookRefused("the body is not a JSON object")
        lowered = {k.lower(): v for k, v in headers.items()}
        topic = payload.get("topic") or lowered.get(TOPIC_HEADER)
        if not isinstance(topic, str) or not topic:
            raise ThreePLWebhookRefused("the event names no topic")
        data = payload.get("data")
        order = None
        if topic in ORDER_TOPICS or (isinstance(data, dict) and "reference_id" in data):
            if not isinstance(data, dict):
                raise ThreePLWebhookRefused(f"a {topic} event without its order (data)")
            try:
                order = parse_order(data)
            except UNREADABLE as err:
                raise ThreePLWebhookRefused(f"the {topic} event's order is not readable: {err}") from None
        shipment = payload.get("shipment_id")
        return ThreePLEvent(
            event_id=verified.webhook_id,
            topic=topic,
            sent_at=verified.sent_at,
            occurred_at=parse_time(payload.get("event_time")) or verified.sent_at,
            order=order,
            shipment_id=str(shipment) if shipment is not None else None,
        )

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _order(self, data: Any, what: str) -> ThreePLOrder:
        try:
            return parse_order(data)
        except UNREADABLE as err:
            raise ThreePLTransientError(
                f"3pl {what}: the answer is not a readable order ({err})", code="BAD_ANSWER"
            ) from err

    async def _pages(self, path: str, what: str, params: Mapping[str, str]) -> list[Any]:
        rows: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "Page": str(page), "Limit": str(PAGE_SIZE)}
            data, headers = await self._call("GET", path, what, params=query)
            batch = _rows(data, what)
            rows.extend(batch)
            total = headers.get("total-pages")
            last = int(total) <= page if total and total.isdigit() else len(batch) < PAGE_SIZE
            if last or not batch:
                return rows
        raise ThreePLError(f"3pl {what}: more than {MAX_PAGES} pages")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    CHANNEL_HEADER: self._channel,
                    "Accept": "application/json",
                    "User-Agent": "fulfillment-engine",
                },
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Any = None,
        private: Iterable[str] = (),
    ) -> tuple[Any, Mapping[str, str]]:
        """One request: its JSON answer and headers, or the ThreePLError its answer means."""
        try:
            async with self._http().request(method, self._base + path, params=params, json=payload) as resp:
                status, raw, headers = resp.status, await resp.read(), resp.headers
        except TimeoutError as err:
            raise ThreePLTransientError(f"3pl {what}: no answer within {self._timeout:g} s", code="TIMEOUT") from err
        except aiohttp.ClientError as err:
            raise ThreePLTransientError(f"3pl {what}: {type(err).__name__}: {err}", code="CONNECTION") from err
        data = _json(raw)
        if status < 300:
            if data is None:
                message = f"3pl {what}: the {status} answer is not JSON"
                raise ThreePLTransientError(message, status=status, code="BAD_ANSWER")
            return data, headers
        raise threepl_error(what, status, data, private, headers.get("Retry-After"))


def threepl_error(
    what: str, status: int, body: Any, private: Iterable[str] = (), retry_after: str | None = None
) -> ThreePLError:
    """The ThreePLError of a ShipBob error answer to call `what`."""
    title, fields = _problem(body)
    text = redact("; ".join(f"{name}: {msg}" for name, msg in fields) or title or "failed", *private)
    message = f"3pl {what}: {status}{' ' + title if title and fields else ''}: {text}"
    if retry_after:
        message += f" (retry after {retry_after[:20]} s)"
    if status in RETRYABLE_STATUSES or status >= 500:
        return ThreePLTransientError(message, status=status)
    if status == 404:
        return ThreePLNotFound(message, status=status)
    detail = _refusal_detail(fields)
    if status == 422 or (status == 400 and detail is not None):
        return ThreePLRefused(message, reason=text, detail=detail, status=status)
    return ThreePLError(message, status=status)


def _problem(body: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """(title, [(field, message)]) of ShipBob's error bodies: a validation problem (`errors` by field), a
    `{"field": ["message"]}` object, or a message."""
    if isinstance(body, list):
        return None, [("", str(m)) for m in body]
    if not isinstance(body, dict):
        return (str(body)[:200] if body else None), []
    title = body.get("title") or body.get("message") or body.get("error")
    errors = body.get("errors")
    if not isinstance(errors, dict):
        errors = {k: v for k, v in body.items() if isinstance(v, list)}
    fields = []
    for name, messages in errors.items():
        for msg in messages if isinstance(messages, list) else [messages]:
            fields.append((str(name), str(msg)))
    return (str(title) if title else None), fields


def _refusal_detail(fields: list[tuple[str, str]]) -> ThreePLDetail | None:
    """What kind of refusal ShipBob's field errors say: the address, a SKU it does not know, too little stock."""
    for name, msg in fields:
        name, msg = name.lower(), msg.lower()
        if "address" in name or "recipient" in name:
            return ThreePLDetail.INVALID_ADDRESS
        if "product" in name or "sku" in name:
            return ThreePLDetail.OUT_OF_STOCK if "stock" in msg else ThreePLDetail.UNKNOWN_SKU
    return None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return None


def _rows(data: Any, what: str) -> list[Any]:
    """A listing's rows: ShipBob answers a JSON array (or, in newer versions, `{"items": [...]}`)."""
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if not isinstance(data, list):
        raise ThreePLTransientError(f"3pl {what}: the answer is not a listing", code="BAD_ANSWER")
    return data
