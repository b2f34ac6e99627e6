"""What the engine needs from a 3PL (a fulfillment provider that holds our stock, picks, packs, ships and
reports back), whoever it is: the `ThreePLProvider` protocol, typed views of its objects, and errors that say
whether retrying helps.

The engine is typed against `ThreePLProvider`, not a vendor: ShipBob's adapter is `shipbob.ShipBobClient`; a
second 3PL (ShipHero, ShipMonk, Amazon MCF) is one more class with these methods that maps its objects onto
the views below and its errors onto the error classes.

An order is named by our `reference_id` (unique per 3PL account: the engine's key for the parcel it hands
over, e.g. "3pl:ORD-1:1"); submitting the same reference again returns the order the 3PL already has. Its
status is the 3PL's, in provider-neutral words: `status` says where it stands (processing, on hold, exception,
completed = left the 3PL's building, cancelled), `detail` what exactly (labeled, in transit, delivered, out of
stock, invalid address...), `reason` the 3PL's words for a hold, an exception or a refusal. The 3PL pushes
changes by signed webhook (`verify_webhook`); `changes_since` finds those a lost webhook did not bring.
Messages of errors and logs name orders by reference id, never by a customer's name, address, email or phone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from common.integrations import ProviderError
from common.models import Address

# ---------------------------------------------------------------------------------------------------------
# Errors


class ThreePLError(ProviderError):
    """The 3PL refused the request; retrying the same request will not help (a bad token, a malformed request:
    ops or code must change something)."""


class ThreePLTransientError(ThreePLError):
    """429, 408, 5xx, timeouts, connection errors, an answer that is not the 3PL's JSON: try again later. The
    request may have reached the 3PL: submitting again is safe (same reference), cancelling again too."""

    retryable = True


class ThreePLRefused(ThreePLError):
    """The 3PL refused the order itself: a SKU it does not stock, too little stock, an address it cannot ship
    to. `reason` is the 3PL's words, `detail` what kind of refusal it is when the 3PL says (UNKNOWN_SKU,
    OUT_OF_STOCK, INVALID_ADDRESS; None: another reason)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        detail: ThreePLDetail | None = None,
        status: int | None = 422,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.reason = reason
        self.detail = detail


class ThreePLNotFound(ThreePLError):
    """The 3PL has no such order."""


class ThreePLWebhookRefused(Exception):
    """A webhook that is not the 3PL's, or not as it sent it: a missing or wrong signature, a timestamp outside
    the tolerance (a replay), or a body that is not one of its events. Answer 4xx; never act on it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------
# Views


class ThreePLStatus(StrEnum):
    """Where an order (or one of its shipments) stands at the 3PL."""

    PROCESSING = "processing"  # being picked and packed
    ON_HOLD = "on_hold"  # not ready for fulfillment: an invalid address, a manual hold... (`reason`)
    EXCEPTION = "exception"  # cannot be fulfilled: out of stock, unknown SKU... (`reason`)
    COMPLETED = "completed"  # left the 3PL with a carrier (not necessarily delivered: see `detail`)
    CANCELLED = "cancelled"  # will not be fulfilled


class ThreePLDetail(StrEnum):
    """What exactly: the 3PL's status detail, in provider-neutral words."""

    PICKED = "picked"
    PACKED = "packed"
    LABELED = "labeled"
    AWAITING_PICKUP = "awaiting_pickup"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    DELIVERY_EXCEPTION = "delivery_exception"
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_SKU = "unknown_sku"
    INVALID_ADDRESS = "invalid_address"
    MANUAL_HOLD = "manual_hold"
    OTHER = "other"  # a detail this engine has no name for (the 3PL's own is in `reason`)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ThreePLRecipient(_View):
    """Who the 3PL ships to: the ship-to address (with the name on it) and how the carrier reaches them."""

    address: Address
    email: str | None = None
    phone: str | None = None


class ThreePLShipment(_View):
    """One box the 3PL ships (an order may be split into several)."""

    provider_id: str
    status: ThreePLStatus
    detail: ThreePLDetail | None = None
    carrier: str | None = None
    service: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    fulfillment_center: str | None = None
    updated_at: datetime | None = None


class ThreePLOrder(_View):
    """An order as the 3PL has it. `status`/`detail`/`reason` are the order's as a whole, from its shipments:
    CANCELLED when every shipment is; else the first live one in EXCEPTION, else ON_HOLD, else PROCESSING
    decides; COMPLETED once every live one left (detail DELIVERED once all are delivered). `updated_at`: the
    3PL's last change to it."""

    provider_id: str
    reference_id: str
    order_number: str | None = None
    status: ThreePLStatus
    detail: ThreePLDetail | None = None
    reason: str | None = None
    lines: list[tuple[str, int]] = Field(default_factory=list)  # (sku, quantity) as the 3PL took them
    shipments: list[ThreePLShipment] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CancelAnswer(_View):
    """What the 3PL made of a cancel request: `accepted` when nothing of the order will ship (also for an order
    cancelled before); refused once a shipment left, with the 3PL's `reason`. `status` and `order` are the
    order's after the request."""

    accepted: bool
    status: ThreePLStatus
    reason: str | None = None
    order: ThreePLOrder | None = None


class ThreePLCenterStock(_View):
    fulfillment_center: str
    on_hand: int
    fulfillable: int
    committed: int


class ThreePLStock(_View):
    """A SKU's stock at the 3PL, summed over its fulfillment centers (each in `fulfillment_centers`):
    `on_hand` on its shelves, `committed` to orders not shipped yet, `fulfillable` what a new order can have."""

    sku: str
    on_hand: int
    fulfillable: int
    committed: int
    fulfillment_centers: list[ThreePLCenterStock] = Field(default_factory=list)


class ThreePLEvent(_View):
    """A verified webhook. `event_id` (the webhook-id) is the same on every retry of one event: deduplicate on
    it. `sent_at` is its webhook-timestamp (this delivery attempt), `occurred_at` when the change happened (the
    event's own time, else `sent_at`); events come in no guaranteed order, so compare `order.updated_at`, or
    ask `get_order`, before acting on one. `order` is the order as the event shows it (None for a topic that
    carries no order)."""

    event_id: str
    topic: str
    sent_at: datetime
    occurred_at: datetime
    order: ThreePLOrder | None = None
    shipment_id: str | None = None


# Topics every 3PL adapter names its order events by (ShipBob's own names)
TOPIC_SHIPPED = "order.shipped"
TOPIC_DELIVERED = "order.shipment.delivered"
TOPIC_EXCEPTION = "order.shipment.exception"
TOPIC_ON_HOLD = "order.shipment.on_hold"
TOPIC_CANCELLED = "order.shipment.cancelled"
ORDER_TOPICS = frozenset({TOPIC_SHIPPED, TOPIC_DELIVERED, TOPIC_EXCEPTION, TOPIC_ON_HOLD, TOPIC_CANCELLED})


class ThreePLProvider(Protocol):
    """A 3PL. Every call raises ThreePLTransientError when retrying may help, another ThreePLError when it will
    not; `verify_webhook` raises ThreePLWebhookRefused."""

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
        """Hand an order over to the 3PL; the order it already has under `reference_id` if it was submitted
        before (whatever the lines of the repeat). ThreePLRefused if the 3PL refuses it at once; a 3PL may also
        accept it and put it in EXCEPTION or ON_HOLD later (its webhooks and `get_order` say)."""
        ...

    async def get_order(self, reference_id: str) -> ThreePLOrder | None:
        """The order the 3PL has under `reference_id`, None if it has none."""
        ...

    async def request_cancel(self, reference_id: str) -> CancelAnswer:
        """Ask the 3PL not to ship the order; ThreePLNotFound if it has none under this reference."""
        ...

    async def inventory_levels(self) -> list[ThreePLStock]:
        """Every SKU the 3PL stocks for us, with its levels."""
        ...

    async def changes_since(self, since: datetime) -> list[ThreePLOrder]:
        """The orders the 3PL changed at or after `since` (aware datetime), oldest change first: what webhooks
        may have missed."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None) -> ThreePLEvent:
        """The event if `body` and `headers` are a webhook the 3PL signed with our secret no more than the
        tolerance (5 minutes) from `now` (default: the clock); ThreePLWebhookRefused if not."""
        ...

    async def close(self) -> None: ...
