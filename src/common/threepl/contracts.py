"""What the order workflow, the 3PL activities, the webhook endpoint and the reconciliation relay exchange about
a parcel at a 3PL, and the records kept of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from common.models import Address, OrderLine, ShippingSpeed

# The order workflow's signal for news of one of its 3PL parcels (OrderWorkflow.threepl_update): a name, not a
# typed reference, for the same reason as common.order_signals.STOCK_RECEIVED; a test ties the two.
THREEPL_UPDATE = "threepl_update"


def reference_id(order_key: str, shipment_no: int) -> str:
    """The parcel's reference at its 3PL, and the idempotency key of its submission: one order per parcel, however
    often it is submitted."""
    return f"3pl:{order_key}:{shipment_no}"


def parse_reference_id(reference: str) -> tuple[str, int] | None:
    """(order key, shipment no) of a reference made by `reference_id`; None for any other reference (an order
    somebody placed at the 3PL by hand)."""
    prefix, _, rest = reference.partition(":")
    key, _, number = rest.rpartition(":")
    if prefix != "3pl" or not key or not number.isdigit():
        return None
    return key, int(number)


class ThreePLState(StrEnum):
    """A parcel's state at its 3PL, as far as the engine knows; it only moves forward (RANK), except that a hold
    is lifted back to accepted."""

    SUBMITTED = "submitted"  # handed over; no answer yet
    ACCEPTED = "accepted"  # the 3PL is fulfilling it
    ON_HOLD = "on_hold"  # the 3PL holds it (an address it cannot ship to, a manual hold): `reason`
    REJECTED = "rejected"  # the 3PL will not fulfill it (unknown SKU, out of stock...): `reason`
    SHIPPED = "shipped"  # left the 3PL with a carrier: carrier and tracking number known
    DELIVERED = "delivered"
    CANCELLED = "cancelled"  # at our request, or by the 3PL


# How far along each state is: news of a lower rank than the parcel's is stale (a webhook that came late).
RANK = {
    ThreePLState.SUBMITTED: 0,
    ThreePLState.ACCEPTED: 1,
    ThreePLState.ON_HOLD: 1,
    ThreePLState.REJECTED: 2,
    ThreePLState.CANCELLED: 2,
    ThreePLState.SHIPPED: 3,
    ThreePLState.DELIVERED: 4,
}
FINAL_STATES = frozenset({ThreePLState.REJECTED, ThreePLState.CANCELLED, ThreePLState.DELIVERED})


def moves_forward(current: ThreePLState, current_changed: datetime | None, news: ThreePLUpdate) -> bool:
    """Whether `news` is newer than what a parcel in `current` (last changed at `current_changed`) knows: a
    state further along, or the same rank changed later (a hold lifted, a second reason)."""
    if RANK[news.state] != RANK[current]:
        return RANK[news.state] > RANK[current]
    if news.state == current and news.reason is None:
        return False
    return news.changed_at is not None and (current_changed is None or news.changed_at > current_changed)


class ThreePLSubmission(BaseModel):
    """Hand one parcel of an order to its warehouse's 3PL (activity input)."""

    order_id: str  # the order's key
    order_number: str  # the order id the customer knows
    shipment_no: int
    warehouse: str
    provider: str
    lines: list[OrderLine]
    ship_to: Address
    email: str | None = None
    phone: str | None = None
    speed: ShippingSpeed

    @property
    def reference_id(self) -> str:
        return reference_id(self.order_id, self.shipment_no)


class ThreePLUpdate(BaseModel):
    """News of a parcel at its 3PL: what the submission answered, a verified webhook, a poll or the
    reconciliation pull found. Signalled to the order as `threepl_update`; the order applies it only if it moves
    the parcel forward (`changed_at` newer than the last it applied, or a state further along)."""

    reference_id: str
    shipment_no: int
    state: ThreePLState
    reason: str | None = None
    carrier: str | None = None
    service: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    changed_at: datetime | None = None  # the 3PL's time of the change
    source: str = "poll"  # submit | webhook | poll | reconcile | sweep


class ThreePLPollRequest(BaseModel):
    """Wait (the activity's retries are the poll loop) for the parcel to leave `last_state` at its 3PL."""

    provider: str
    reference_id: str
    shipment_no: int
    last_state: ThreePLState


class ThreePLCancelRequest(BaseModel):
    provider: str
    reference_id: str
    shipment_no: int


class ThreePLCancelResult(BaseModel):
    """The 3PL's answer to a cancel request: accepted (nothing ships; also when it never had the order), or
    refused because the parcel left (`update` says with which carrier and tracking number)."""

    accepted: bool
    reason: str | None = None
    update: ThreePLUpdate | None = None


@dataclass(frozen=True)
class ThreePLParcel:
    """A parcel handed to a 3PL, as recorded (threepl_parcels)."""

    reference_id: str
    order_id: str
    shipment_no: int
    provider: str
    warehouse: str
    provider_order_id: str | None
    state: ThreePLState
    reason: str | None
    carrier: str | None
    service: str | None
    tracking_number: str | None
    tracking_url: str | None
    submitted_at: datetime
    accepted_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    provider_updated_at: datetime | None
    updated_at: datetime
