"""The order workflow: one durable workflow carries an order from intake to delivery (workflow.py)."""

from workflows.order.patches import (
    CONFIRMATION_FIRST,
    LABELLED_PARCELS_ASK_THE_CARRIER,
    LEAN_FOR_EVERY_ORDER,
    LEAN_HISTORY,
    PARK_FAILURES,
    REFUND_THROUGH_GATEWAY,
    TEMPORAL_CANCEL_COMPENSATES,
    UNDO_PER_PARCEL,
)
from workflows.order.workflow import OrderWorkflow

__all__ = [
    "CONFIRMATION_FIRST",
    "LABELLED_PARCELS_ASK_THE_CARRIER",
    "LEAN_FOR_EVERY_ORDER",
    "LEAN_HISTORY",
    "PARK_FAILURES",
    "REFUND_THROUGH_GATEWAY",
    "TEMPORAL_CANCEL_COMPENSATES",
    "UNDO_PER_PARCEL",
    "OrderWorkflow",
]
