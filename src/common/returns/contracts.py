"""Returns: the request a customer (or ops for them) makes, the RMA that follows it, the contracts of the
return workflow's activities, and the RMA and refund records the returns store keeps. Plain data: workflows
import it (as common.returns).

Refund rule: a return is refunded at the price the customer paid (the order line's unit_price; the catalogue
price for orders placed before prices were kept) for the units the warehouse accepted. For reasons where the
customer is not at fault (damaged, wrong_item) every received unit is refunded, damaged on arrival or not; for
the other reasons only resellable units are. An exchange is not refunded: the replacement order is the remedy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from common.db.errors import StoreError
from common.models import Actor, Address, Customer, OrderPolicy, OrderStatus, Sku


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ReturnReason(StrEnum):
    DAMAGED = "damaged"
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"
    NO_LONGER_NEEDED = "no_longer_needed"
    OTHER = "other"

    @property
    def customer_not_at_fault(self) -> bool:
        """Damaged or wrong goods: refund every unit received, and a replacement may be asked for."""
        return self in (ReturnReason.DAMAGED, ReturnReason.WRONG_ITEM)


class ReturnLine(_Strict):
    sku: Sku
    quantity: int = Field(gt=0, le=10_000)


def _unique_skus(lines: list[ReturnLine] | list[InspectionLine], *, with_condition: bool = False) -> None:
    keys = [(li.sku, getattr(li, "condition", None)) if with_condition else (li.sku, None) for li in lines]
    dupes = sorted({k[0] for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"lines: each sku may appear once (repeated: {', '.join(dupes)})")


class ReturnRequest(_Strict):
    """What `request_return` takes: e.g. {"lines": [{"sku": "MUG-RED", "quantity": 1}], "reason": "damaged"}."""

    lines: list[ReturnLine] = Field(min_length=1, max_length=200)
    reason: ReturnReason
    exchange: bool = False  # ask for a replacement instead of a refund (damaged or wrong_item only)
    note: Text | None = None
    by: Actor | None = None  # who asked (ops, an API key), for the order's timeline

    @model_validator(mode="after")
    def _check(self) -> Self:
        _unique_skus(self.lines)
        if self.exchange and not self.reason.customer_not_at_fault:
            raise ValueError(f"exchange: only for reason damaged or wrong_item, not {self.reason.value}")
        return self


class Condition(StrEnum):
    RESELLABLE = "resellable"
    DAMAGED = "damaged"


class InspectionLine(_Strict):
    sku: Sku
    quantity: int = Field(gt=0, le=10_000)
    condition: Condition


class ReceiveReturnRequest(_Strict):
    """What the warehouse found in the parcel, e.g. {"lines": [{"sku": "MUG-RED", "quantity": 1,
    "condition": "resellable"}]}. Quantities up to what the RMA authorised."""

    lines: list[InspectionLine] = Field(min_length=1, max_length=400)
    note: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _unique_skus(self.lines, with_condition=True)
        return self


class RetryRefundRequest(_Strict):
    """Ops retry a refund that failed, e.g. {"description": "gateway back up"}."""

    description: Text


class RmaStatus(StrEnum):
    REQUESTED = "REQUESTED"  # accepted; return label bought and sent
    IN_TRANSIT = "IN_TRANSIT"  # the carrier has the parcel
    RECEIVED = "RECEIVED"  # inspected at the warehouse: restocked / written off
    REFUND_FAILED = "REFUND_FAILED"  # the gateway refused or kept failing: waits for ops (retry_refund)
    REFUNDED = "REFUNDED"
    EXCHANGED = "EXCHANGED"  # received; the replacement order is the remedy (no refund)
    EXPIRED = "EXPIRED"  # the parcel never moved within the return transit timeout
    FAILED = "FAILED"  # the return workflow failed: needs ops


FINAL_RMA_STATUSES = frozenset({RmaStatus.REFUNDED, RmaStatus.EXCHANGED, RmaStatus.EXPIRED, RmaStatus.FAILED})

# How an RMA's progress shows as the order's status (None: the order status does not change, only a note).
RMA_TO_ORDER_STATUS: dict[RmaStatus, OrderStatus | None] = {
    RmaStatus.REQUESTED: OrderStatus.RETURN_REQUESTED,
    RmaStatus.IN_TRANSIT: OrderStatus.RETURN_IN_TRANSIT,
    RmaStatus.RECEIVED: OrderStatus.RETURN_RECEIVED,
    RmaStatus.REFUND_FAILED: OrderStatus.RETURN_RECEIVED,
    RmaStatus.REFUNDED: OrderStatus.REFUNDED,
    RmaStatus.EXCHANGED: OrderStatus.RETURN_RECEIVED,
    RmaStatus.EXPIRED: OrderStatus.DELIVERED,
    RmaStatus.FAILED: None,
}


def rma_id_for(order_id: str, n: int) -> str:
    return f"RMA-{order_id}-{n}"


RETURN_WORKFLOW_TYPE = "ReturnWorkflow"


def return_workflow_id(rma_id: str) -> str:
    return f"return-{rma_id}"


def replacement_order_id(order_id: str, n: int, placement: int = 1) -> str:
    """The replacement of return n of an order: its own order `<order_id>-R<n>` (workflow order-<id>-R<n>);
    `<order_id>-P<placement>R<n>` for an order placed again under its id."""
    return f"{order_id}-R{n}" if placement <= 1 else f"{order_id}-P{placement}R{n}"


class RmaView(BaseModel):
    """What the return workflow's `status` query returns."""

    rma_id: str
    order_id: str
    status: RmaStatus
    reason: ReturnReason
    lines: list[ReturnLine]
    exchange: bool = False
    replacement_order_id: str | None = None
    waiting_for: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    label_url: str | None = None
    received: list[InspectionLine] = Field(default_factory=list)
    refund_cents: int | None = None
    refund_id: str | None = None
    note: str | None = None


class ReturnWorkflowInput(BaseModel):
    rma_id: str
    n: int  # the order's n-th return
    order_id: str
    parent_workflow_id: str
    customer: Customer
    ship_to: Address  # where the customer sends the parcel from
    reason: ReturnReason
    lines: list[ReturnLine]
    exchange: bool = False
    replacement_order_id: str | None = None
    note: str | None = None
    # sku -> warehouse the delivered units left from (where they go back to)
    warehouses: dict[str, str]
    policy: OrderPolicy = Field(default_factory=OrderPolicy)
    shipping_speed: str = "standard"
    task_queue: str | None = None
    # What the customer paid (sku -> cents per unit) and where it goes back to; empty for returns of orders
    # placed before prices were kept (those are refunded at the catalogue price).
    unit_prices: dict[str, int] = Field(default_factory=dict)
    payment_reference: str | None = None
    currency: str = "USD"


class ReturnProgress(BaseModel):
    """Signal `return_progress` from a return workflow to its order."""

    rma_id: str
    status: RmaStatus
    note: str
    tracking_number: str | None = None
    refund_cents: int | None = None
    replacement_order_id: str | None = None
    waiting_for: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Activity contracts


class RecordRmaRequest(BaseModel):
    rma_id: str
    order_id: str
    reason: ReturnReason
    lines: list[ReturnLine]
    exchange: bool = False
    replacement_order_id: str | None = None
    note: str | None = None


class RmaStatusChange(BaseModel):
    rma_id: str
    status: RmaStatus
    note: str = ""
    carrier: str | None = None
    tracking_number: str | None = None
    label_url: str | None = None


class ReturnLabelRequest(BaseModel):
    rma_id: str
    order_id: str
    customer_address: Address
    warehouse: str
    lines: list[ReturnLine]


class ReturnLabel(BaseModel):
    shipment_key: str
    carrier: str
    service: str
    tracking_number: str
    label_url: str
    tracking_url: str


class InspectRequest(BaseModel):
    rma_id: str
    order_id: str
    lines: list[InspectionLine]
    warehouses: dict[str, str]
    note: str | None = None


class InspectResult(BaseModel):
    restocked: dict[str, int] = Field(default_factory=dict)
    written_off: dict[str, int] = Field(default_factory=dict)
    woken_orders: list[str] = Field(default_factory=list)


class RefundRequest(BaseModel):
    rma_id: str
    order_id: str
    reason: ReturnReason
    lines: list[InspectionLine]
    # The prices paid (sku -> cents per unit); a SKU missing here is refunded at the catalogue price.
    unit_prices: dict[str, int] = Field(default_factory=dict)
    payment_reference: str | None = None
    currency: str = "USD"


class RefundResult(BaseModel):
    refund_id: str
    amount_cents: int
    currency: str = "USD"
    already_refunded: bool = False


def refundable_units(reason: ReturnReason, lines: list[InspectionLine]) -> dict[str, int]:
    """sku -> units refunded (see the module docstring for the rule)."""
    units: dict[str, int] = {}
    for line in lines:
        if line.condition == Condition.RESELLABLE or reason.customer_not_at_fault:
            units[line.sku] = units.get(line.sku, 0) + line.quantity
    return units


def refund_key(rma_id: str) -> str:
    return f"refund:{rma_id}"


def return_label_key(rma_id: str) -> str:
    return f"return-label:{rma_id}"


@dataclass(frozen=True)
class RmaLineRecord:
    sku: str
    quantity: int  # authorised
    resellable: int
    damaged: int


@dataclass(frozen=True)
class RmaRecord:
    rma_id: str
    order_id: str
    reason: str
    exchange: bool
    replacement_order_id: str | None
    status: str
    carrier: str | None
    tracking_number: str | None
    label_url: str | None
    note: str
    created_at: datetime
    updated_at: datetime
    lines: list[RmaLineRecord]


@dataclass(frozen=True)
class RefundRecord:
    key: str
    refund_id: str
    rma_id: str
    order_id: str
    amount_cents: int
    currency: str
    status: str
    created_at: datetime


class RmaNotFound(StoreError):
    def __init__(self, rma_id: str) -> None:
        self.rma_id = rma_id
        super().__init__(f"no RMA {rma_id!r}")
