"""Pick tasks and the warehouse's refusals. Plain data: workflows may import this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from common.db.errors import StoreError


@dataclass(frozen=True)
class PickTask:
    id: str
    order_id: str
    parcel_no: int
    warehouse: str
    lines: list[tuple[str, int]]
    status: str  # open | confirmed | cancelled
    created_at: datetime
    confirmed_at: datetime | None
    # sku -> units the picker could not find (a short pick), recorded with the confirmation
    short: dict[str, int] = field(default_factory=dict)
    # When a stock count or adjustment released this shipment's reservation and so cancelled the task
    released_at: datetime | None = None


class PickTaskNotFound(StoreError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no pick task {task_id!r}")


class PickTaskClosed(StoreError):
    def __init__(self, task_id: str, status: str) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(f"pick task {task_id!r} is {status} and can no longer change")


class ShipmentReleased(StoreError):
    """The shipment's reservation is no longer held (a stock count or adjustment released it): no pick task,
    no confirmation, nothing to ship."""

    def __init__(self, order_id: str, shipment_no: int) -> None:
        self.order_id = order_id
        self.shipment_no = shipment_no
        super().__init__(
            f"shipment {shipment_no} of order {order_id} lost its reservation (released by a stock count or "
            "adjustment): do not pick or ship it; the order re-reserves its goods or waits for stock"
        )
