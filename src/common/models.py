"""Pydantic models shared by the starter client, workflows and activities.

The intake models (`Order` and its parts) are the contract in docs/design.md: strict, so a bad order is
rejected with the field that is wrong before any workflow starts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

# ---------------------------------------------------------------------------------------------------------
# Intake contract


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class ShippingSpeed(StrEnum):
    STANDARD = "standard"
    EXPRESS = "express"
    OVERNIGHT = "overnight"

    @property
    def max_delivery_days(self) -> int:
        return {"standard": 7, "express": 3, "overnight": 1}[self.value]

    def promised_by(self, placed_at: datetime) -> date:
        """The delivery date promised to the customer for an order placed at `placed_at` (UTC calendar days)."""
        return (placed_at + timedelta(days=self.max_delivery_days)).date()


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PostalCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
E164Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")]
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SKU_PATTERN = r"^[A-Z0-9][A-Z0-9._-]{0,63}$"
OrderId = Annotated[str, StringConstraints(pattern=ORDER_ID_PATTERN)]
Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(_Strict):
    id: NonEmpty  # repr and str (a log line's %s) show the id only: customer data has repr=False, JSON as it was
    name: NonEmpty = Field(repr=False)
    email: EmailStr = Field(repr=False)
    phone: E164Phone | None = Field(default=None, repr=False)
    channels: list[Channel] = Field(default_factory=lambda: [Channel.EMAIL], min_length=1)

    @model_validator(mode="after")
    def _sms_needs_phone(self) -> Self:
        if Channel.SMS in self.channels and self.phone is None:
            raise ValueError("channel 'sms' needs a phone number in E.164 form (e.g. +15555550100)")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must not repeat")
        return self


class Address(_Strict):
    name: NonEmpty = Field(repr=False)  # as Customer's: a repr shows the country only
    line1: NonEmpty = Field(repr=False)
    line2: NonEmpty | None = Field(default=None, repr=False)
    city: NonEmpty = Field(repr=False)
    region: NonEmpty | None = Field(default=None, repr=False)
    postal_code: PostalCode = Field(repr=False)
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


# A price in the order's currency: at most two decimals ("12.50" or 12.5), never negative.
Money = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=2)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value(ROUND_HALF_UP))


class OrderLine(_Strict):
    sku: Sku
    quantity: int = Field(gt=0, le=10_000)
    # The price paid per unit (refunds pay it back). Optional at intake: the starter keeps the catalogue
    # price at placement when it is missing.
    unit_price: Money | None = None


class Payment(_Strict):
    """How the customer paid: the payment provider's reference (a Stripe PaymentIntent `pi_...`), which refunds
    go back to, and the currency of the order's prices."""

    reference: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,254}$")]
    currency: Currency = "USD"


class Order(_Strict):
    order_id: OrderId
    customer: Customer
    ship_to: Address
    lines: list[OrderLine] = Field(min_length=1, max_length=200)
    shipping_speed: ShippingSpeed = ShippingSpeed.STANDARD
    # The delivery date promised to the customer: the storefront's own, or set at intake from shipping_speed.
    # Labels are bought from the rates that arrive by it.
    promised_delivery: date | None = None
    payment: Payment | None = None

    @model_validator(mode="after")
    def _skus_unique(self) -> Self:
        skus = [line.sku for line in self.lines]
        dupes = sorted({s for s in skus if skus.count(s) > 1})
        if dupes:
            raise ValueError(f"lines: each sku may appear once (repeated: {', '.join(dupes)})")
        return self

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.order_id)

    @property
    def currency(self) -> str:
        return self.payment.currency if self.payment else "USD"

    def unit_prices_cents(self) -> dict[str, int]:
        """sku -> the price paid per unit, in cents (lines without a price are left out)."""
        return {line.sku: to_cents(line.unit_price) for line in self.lines if line.unit_price is not None}


# An order placed again under its id after it failed for good keeps its rows (reservations, pick tasks, labels,
# messages) apart from the earlier placement's: its key is `<order_id>~<placement>`. "~" is not allowed in an
# order id, so a key names one order.
PLACEMENT_MARK = "~"


def order_key(order_id: str, placement: int = 1) -> str:
    """The key of an order's rows and business idempotency keys: the order id for its first placement."""
    return order_id if placement <= 1 else f"{order_id}{PLACEMENT_MARK}{placement}"


def workflow_id_for(order_id: str) -> str:
    """The workflow of an order, from its id or the key of one of its placements."""
    return f"order-{order_id.split(PLACEMENT_MARK, 1)[0]}"


# ---------------------------------------------------------------------------------------------------------
# Order state


class OrderStatus(StrEnum):
    RECEIVED = "RECEIVED"
    BACKORDERED = "BACKORDERED"
    RESERVED = "RESERVED"
    PICKING = "PICKING"
    SUBMITTED_TO_3PL = "SUBMITTED_TO_3PL"  # a 3PL parcel: handed over, the 3PL has not answered yet
    ACCEPTED_BY_3PL = "ACCEPTED_BY_3PL"  # the 3PL is picking and packing it
    PACKED = "PACKED"
    LABELED = "LABELED"
    IN_TRANSIT = "IN_TRANSIT"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    COMPLETED = "COMPLETED"
    ON_HOLD = "ON_HOLD"
    ADDRESS_INVALID = "ADDRESS_INVALID"
    DELIVERY_EXCEPTION = "DELIVERY_EXCEPTION"
    RETURN_REQUESTED = "RETURN_REQUESTED"
    RETURN_IN_TRANSIT = "RETURN_IN_TRANSIT"
    RETURN_RECEIVED = "RETURN_RECEIVED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class TimelineEntry(BaseModel):
    at: datetime
    status: OrderStatus
    note: str = ""


class ParcelView(BaseModel):
    """One parcel of the order: its own pick task, label, tracking and messages."""

    shipment_no: int
    warehouse: str
    lines: list[OrderLine]
    status: OrderStatus = OrderStatus.RESERVED
    pick_task_id: str | None = None
    carrier: str | None = None
    service: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    estimated_delivery: datetime | None = None
    # A parcel from a 3PL's warehouse: the 3PL (e.g. "shipbob") and its state there (common.threepl.ThreePLState);
    # late_at_3pl once the 3PL missed its acceptance or ship SLA for it.
    fulfilled_by: str | None = None
    threepl_state: str | None = None
    late_at_3pl: bool = False
    # Set when the parcel ends any other way than delivered: "refunded", "reshipped", "nothing found at the pick"
    outcome: str | None = None


class ReturnSummary(BaseModel):
    """One return (RMA) of the order as the order's view shows it (the rest: common.returns.RmaView)."""

    rma_id: str
    status: str  # common.returns.RmaStatus
    reason: str  # common.returns.ReturnReason
    lines: list[OrderLine]
    requested_at: datetime
    exchange: bool = False
    replacement_order_id: str | None = None
    tracking_number: str | None = None
    refund_cents: int | None = None
    note: str | None = None
    parcel_moved: bool = False  # the carrier or the warehouse had the return parcel at some point


class ProviderWait(BaseModel):
    """A step that cannot reach its provider (an outage) and retries until it answers."""

    provider: str  # database, carrier, email, sms, payments
    step: str  # what it is doing, e.g. "buy label (shipment 1)"
    since: datetime
    error: str = ""  # the provider's last answer


class OrderView(BaseModel):
    """What `fulfill order status` prints and the workflow's `status` query returns."""

    order_id: str
    status: OrderStatus
    customer_id: str
    lines: list[OrderLine]
    shipping_speed: ShippingSpeed
    promised_delivery: date | None = None
    waiting_for: str | None = None
    warehouse: str | None = None
    pick_task_id: str | None = None
    carrier: str | None = None
    service: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    estimated_delivery: datetime | None = None
    # Every parcel (most orders have one; a split or a partial shipment has more). The fields above
    # (warehouse, tracking...) repeat those of the parcel that moved last.
    shipments: list[ParcelView] = Field(default_factory=list)
    # Lines waiting for stock, not in any shipment yet
    backordered: list[OrderLine] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    # Returns (RMAs) of this order, and the order this one replaces (an exchange), if any.
    returns: list[ReturnSummary] = Field(default_factory=list)
    replacement_for: str | None = None
    # Steps that cannot reach their provider right now and retry until it answers (an outage), and customer or
    # ops messages queued behind one.
    provider_waits: list[ProviderWait] = Field(default_factory=list)
    messages_waiting: int = 0


class OrderUpdateResult(BaseModel):
    """What an ops Update on an order returns: small (Update results are kept in the order's history), the
    whole view is one `status` query away."""

    order_id: str
    status: OrderStatus
    waiting_for: str | None = None
    note: str = ""  # the order's latest timeline entry
    rma_id: str | None = None  # request_return: the RMA it created


class PartialShipment(StrEnum):
    WAIT_FOR_ALL = "wait_for_all"
    SHIP_AVAILABLE = "ship_available"


class OrderPolicy(BaseModel):
    """Durations the workflow needs, fixed when the order is placed (seconds in the demo, hours in prod)."""

    tracking_poll_interval_s: float = 2.0
    # Set when the carrier pushes tracking (webhooks): the order's parcels poll this seldom, as a safety net for
    # a lost event. None: they poll every tracking_poll_interval_s (return parcels always do).
    tracking_safety_poll_interval_s: float | None = None
    tracking_timeout_s: float = 30 * 24 * 3600
    backorder_recheck_interval_s: float = 3600
    # A backordered order still without stock after this long is cancelled (with a message).
    backorder_max_wait_s: float = 14 * 24 * 3600
    # Pick SLA: past the first, ops are alerted (PickOverdue); past the second, the customer hears of a delay.
    pick_escalate_after_s: float = 4 * 3600
    pick_customer_delay_after_s: float = 24 * 3600
    # A delivery is late once its estimate passed by this much (estimates are rough; don't cry wolf).
    delivery_delay_grace_s: float = 3600
    # How long a delivery exception waits for ops (reship or refund) before the order is FAILED for review.
    delivery_exception_timeout_s: float = 7 * 24 * 3600
    # Some lines in stock, others not: wait for all (one shipment), or ship what is there now and the rest later.
    partial_shipment: PartialShipment = PartialShipment.WAIT_FOR_ALL
    # After delivery the order stays open this long for returns, then closes as COMPLETED.
    return_window_s: float = 30 * 24 * 3600
    # A return label whose parcel never moves within this long expires (the customer is told).
    return_transit_timeout_s: float = 14 * 24 * 3600
    # Deadlines added later. None (what orders placed before them carry) means no deadline, the way those
    # orders were recorded; the starter sets every one for new orders.
    # A parcel whose address the carrier rejected waits this long for ops to correct it, then fails for ops.
    address_fix_timeout_s: float | None = None
    # Something retrying cannot fix waits this long for ops (retry or cancel) in FAILED, then the part that
    # failed is given up (its stock released, its label voided) and the customer is told.
    failed_wait_s: float | None = None
    # A return parcel the carrier has must reach the warehouse within this long, else the RMA fails for ops.
    return_receive_timeout_s: float | None = None
    # A 3PL parcel: how long the 3PL has to accept it after submission, and to ship it after accepting it; past
    # either, ops are alerted and the order shows ThreePLLate. How often the order asks the 3PL for news a lost
    # webhook did not bring (its safety-net poll).
    threepl_accept_sla_s: float = 4 * 3600
    threepl_ship_sla_s: float = 48 * 3600
    threepl_poll_interval_s: float = 3600


TERMINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.FAILED})
# Once the carrier has the parcel, the order can no longer be cancelled or held: it is a return now.
SHIPPED_STATUSES = frozenset(
    {
        OrderStatus.IN_TRANSIT,
        OrderStatus.OUT_FOR_DELIVERY,
        OrderStatus.DELIVERED,
        OrderStatus.DELIVERY_EXCEPTION,
    }
)

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
# Who asked for an ops action (an API key's name, `cli:<user>`): the `by` of every ops Update's request, kept in
# the order's timeline. Optional: requests sent before it existed have none.
Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]


class CancelRequest(_Strict):
    reason: Reason
    by: Actor | None = None


class RetryRequest(_Strict):
    """Ops retry what failed (the order is FAILED and waits for them), e.g. {"note": "carrier account fixed"}."""

    note: Reason | None = None
    by: Actor | None = None


class HoldRequest(_Strict):
    reason: Reason
    by: Actor | None = None


class ReleaseRequest(_Strict):
    by: Actor | None = None


class AddressChange(_Strict):
    """What `update_address` takes: the new ship-to address and who asked (an Address alone is also taken)."""

    address: Address
    by: Actor | None = None


# How OrderWorkflow runs an order, fixed when the order starts (see workflows/order/patches.py, LEAN_HISTORY).
ORDER_WORKFLOW_VERSION = 2


class OrderWorkflowInput(BaseModel):
    order: Order
    policy: OrderPolicy = Field(default_factory=OrderPolicy)
    # Replay safety: an input without it (an order started before versions existed) runs as version 1 on
    # replay too. Starters set ORDER_WORKFLOW_VERSION.
    workflow_version: int = Field(default=1, ge=1)
    # Set on a replacement order (an exchange): the order id it replaces and the RMA, e.g. "ORD-1 (RMA-ORD-1-1)".
    replacement_for: str | None = None
    # A replacement that ships only once the customer sent the goods back: the RMA it waits for (its return
    # workflow signals `return_sent` on the first carrier scan or on receipt, `return_abandoned` on expiry).
    awaiting_return: str | None = None
    # The order's placement under its id: 2 and later once it failed for good and was placed again.
    placement: int = Field(default=1, ge=1)


# ---------------------------------------------------------------------------------------------------------
# Activity contracts


class NotificationEvent(StrEnum):
    ORDER_CONFIRMED = "order_confirmed"
    BACKORDERED = "backordered"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    ADDRESS_PROBLEM = "address_problem"
    PICK_DELAYED = "pick_delayed"
    DELIVERY_DELAYED = "delivery_delayed"
    DELIVERY_PROBLEM = "delivery_problem"
    REFUND_ISSUED = "refund_issued"
    PARTIAL_SHIPMENT = "partial_shipment"  # part of the order ships now, the rest when it is in stock
    RESHIPPED = "reshipped"
    PARTLY_CANCELLED = "partly_cancelled"  # a part never came (or could not be sent); the rest still does
    FULFILMENT_FAILED = "fulfilment_failed"  # nothing could be sent: the order is given up
    # Returns
    RETURN_LABEL = "return_label"
    RETURN_EXPIRED = "return_expired"
    RETURN_RECEIVED = "return_received"
    RETURN_REFUNDED = "return_refunded"
    REPLACEMENT_PLACED = "replacement_placed"


class NotifyRequest(BaseModel):
    order_id: str
    event: NotificationEvent
    customer: Customer
    channels: list[Channel]
    # Values the message templates use (carrier, tracking number/link, lines...)
    context: dict[str, str] = Field(default_factory=dict)
    # For events that may happen more than once (a delay per new estimate): part of the idempotency key.
    occurrence: str | None = None
    # The order's key when it is not its id (an order placed again: see order_key)
    key: str | None = None


class OpsAlert(BaseModel):
    """An email to the ops mailbox, exactly once per (order, kind, occurrence)."""

    order_id: str
    kind: str
    subject: str
    body: str
    occurrence: str | None = None
    key: str | None = None  # the order's key when it is not its id (see order_key)


class DeliveryResolution(StrEnum):
    RESHIP = "reship"
    REFUND = "refund"


class ResolveDeliveryRequest(_Strict):
    action: DeliveryResolution
    note: Reason | None = None
    # Which parcel (shipment no) when several are in exception; default: the first
    shipment: int | None = Field(default=None, ge=1)
    by: Actor | None = None


class ParcelRefundRequest(BaseModel):
    """Pay back one parcel of an order (ops decided to refund a delivery exception), at the prices paid."""

    order_id: str
    shipment_no: int
    lines: list[OrderLine]
    key: str | None = None  # the order's key when it is not its id (see order_key)
    unit_prices: dict[str, int] = Field(default_factory=dict)  # sku -> cents per unit paid
    payment_reference: str | None = None
    currency: str = "USD"


class PaymentRefund(BaseModel):
    refund_id: str
    amount_cents: int
    currency: str = "USD"
    already_refunded: bool = False

    @property
    def amount(self) -> str:
        return f"{self.amount_cents / 100:.2f} {self.currency}"


class NotifyResult(BaseModel):
    sent: list[Channel] = Field(default_factory=list)
    already_sent: list[Channel] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)  # channel -> why (e.g. permanent opt-out)


class ReserveRequest(BaseModel):
    order_id: str
    lines: list[OrderLine]
    # Where the parcel goes: allocation prefers a warehouse serving this country/region.
    ship_to_country: str | None = None
    ship_to_region: str | None = None
    # Reserve what is in stock now and leave the rest waiting (PartialShipment.SHIP_AVAILABLE)
    allow_partial: bool = False
    # Number of the first shipment this reservation creates (later ones for a remainder, a reship...)
    first_shipment: int = 1
    exclude_warehouses: list[str] = Field(default_factory=list)  # 3PLs that rejected a parcel of these lines


class ParcelAllocation(BaseModel):
    shipment_no: int
    warehouse: str
    lines: list[OrderLine]
    # The warehouse's 3PL, None for our own (and in histories recorded before 3PL warehouses existed)
    provider: str | None = None


class ReserveResult(BaseModel):
    reserved: bool
    warehouse: str | None = None  # of the first shipment
    # sku -> units not reserved (still waiting for stock)
    short: dict[str, int] = Field(default_factory=dict)
    # The shipments reserved: one warehouse when one covers the order, else a split
    shipments: list[ParcelAllocation] = Field(default_factory=list)
    # SKUs now at or below their reorder point with ops not alerted yet
    low_stock: list[str] = Field(default_factory=list)


class PickShortage(BaseModel):
    """A pick confirmed short: sku -> units the picker could not find."""

    task_id: str
    short: dict[str, int]


class PickTaskRequest(BaseModel):
    # Sent as "attempt", its first name: recorded histories and workers of an older release carry that key.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    order_id: str
    parcel_no: int = Field(alias="attempt")
    warehouse: str
    lines: list[OrderLine]


class LabelRequest(BaseModel):
    order_id: str
    shipment_no: int
    warehouse: str
    ship_to: Address
    lines: list[OrderLine]
    speed: ShippingSpeed
    # None (orders placed before promises): the speed's delivery days from the day the label is bought
    promised_delivery: date | None = None


class Label(BaseModel):
    shipment_key: str
    carrier: str
    service: str
    rate_cents: int
    tracking_number: str
    label_url: str
    tracking_url: str
    carrier_shipment_id: str
    # Why this rate: the promise, the strategy, the alternatives passed over (for the order's timeline)
    choice: str = ""


class TrackingStatus(StrEnum):
    PRE_TRANSIT = "pre_transit"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    DELIVERED = "delivered"
    RETURN_TO_SENDER = "return_to_sender"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    ERROR = "error"
    UNKNOWN = "unknown"


# The carrier has the parcel: it left the building (a "cancelled" tracker means the label was voided, and
# "error" or "unknown" say nothing about where the parcel is).
MOVED_TRACKING_STATUSES = frozenset(
    {
        TrackingStatus.IN_TRANSIT,
        TrackingStatus.OUT_FOR_DELIVERY,
        TrackingStatus.AVAILABLE_FOR_PICKUP,
        TrackingStatus.DELIVERED,
        TrackingStatus.RETURN_TO_SENDER,
        TrackingStatus.FAILURE,
    }
)


class TrackingPollRequest(BaseModel):
    tracking_number: str
    carrier: str
    last_status: TrackingStatus
    # A new delivery estimate is news too (the customer hears of each new one when it slips).
    last_estimate: datetime | None = None


class TrackingUpdate(BaseModel):
    status: TrackingStatus
    estimated_delivery: datetime | None = None
    message: str = ""


class ReservationReleased(BaseModel):
    """Signal `reservation_released`, written by the stock change's own transaction (the order-signal outbox):
    these shipments of the order lost their reservation before they were picked; their pick tasks are cancelled."""

    sku: str
    warehouse: str
    shipments: list[int]
    reason: str = ""
