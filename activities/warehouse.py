"""Warehouse side effects: pick tasks that staff (or the simulated picker) confirm."""

from __future__ import annotations

from temporalio import activity

from common.db import Store
from common.models import PickTaskRequest


class WarehouseActivities:
    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="create_pick_task")
    async def create_pick_task(self, request: PickTaskRequest) -> str:
        """Idempotent on (order, attempt): a retried activity gets the same task back."""
        task = await self._store.create_pick_task(
            request.order_id,
            request.attempt,
            request.warehouse,
            [(line.sku, line.quantity) for line in request.lines],
        )
        return task.id
