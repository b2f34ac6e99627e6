"""The outbox's record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class OrderSignal:
    """A signal or update for an order's workflow in the outbox: written in the transaction of the change it
    reports, delivered afterwards by `common.order_signals.deliver_order_signals`, in id order per workflow."""

    id: int
    workflow_id: str
    kind: str  # signal | update
    name: str
    payload: Any  # the one argument, as JSON
    created_at: datetime
    attempts: int
    delivered_at: datetime | None = None
    last_error: str | None = None
    note: str | None = None
