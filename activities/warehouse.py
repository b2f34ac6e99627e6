"""Warehouse side effects: pick tasks that staff (or the simulated picker) confirm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.db.errors import StoreError
from common.models import PickShortage, PickTaskRequest
from common.store import Store
from common.warehouse.contracts import PickTaskClosed, ShipmentReleased


class WarehouseActivities:
    def __init__(self, store: Store) -> None:
        self._store = store

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of this domain, bound to their clients: what a worker registers."""
        return [
            self.create_pick_task,
            self.cancel_pick_tasks,
            self.cancel_pick_task,
            self.confirm_short_pick,
        ]

    @activity.defn(name="create_pick_task")
    async def create_pick_task(self, request: PickTaskRequest) -> str:
        """Idempotent on (order, attempt): a retried activity gets the same task back. A parcel whose
        reservation a stock count released fails with type "ShipmentReleased" (retrying cannot bring it back)."""
        try:
            task = await self._store.picks.create(
                request.order_id,
                request.parcel_no,
                request.warehouse,
                [(line.sku, line.quantity) for line in request.lines],
            )
        except ShipmentReleased as err:
            raise ApplicationError(str(err), type="ShipmentReleased", non_retryable=True) from err
        return task.id

    @activity.defn(name="confirm_short_pick")
    async def confirm_short_pick(self, shortage: PickShortage) -> dict[str, int]:
        """Confirm the task short and correct on hand (a discrepancy ledger row); a no-op if already done. The
        parcel lost its reservation to a stock count meanwhile: type "ShipmentReleased"."""
        try:
            task = await self._store.picks.confirm(shortage.task_id, shortage.short)
        except ShipmentReleased as err:
            raise ApplicationError(str(err), type="ShipmentReleased", non_retryable=True) from err
        except StoreError as err:  # e.g. confirmed in full meanwhile: retrying cannot change that
            raise ApplicationError(str(err), type="PickConflict", non_retryable=True) from err
        return task.short

    @activity.defn(name="cancel_pick_tasks")
    async def cancel_pick_tasks(self, order_id: str) -> list[str]:
        """Compensation: cancel the order's open pick tasks so staff don't pick goods nobody will ship."""
        cancelled = []
        for task in await self._store.picks.for_order(order_id):
            if task.status == "open":
                await self._store.picks.cancel(task.id)
                cancelled.append(task.id)
        return cancelled

    @activity.defn(name="cancel_pick_task")
    async def cancel_pick_task(self, task_id: str) -> bool:
        """Undo of one parcel's pick: True if the open task is cancelled now, False if it was closed before
        (confirmed: the packed goods go back to the shelf; or cancelled already). Idempotent."""
        try:
            task = await self._store.picks.cancel(task_id)
        except PickTaskClosed:
            return False
        return task.status == "cancelled"
