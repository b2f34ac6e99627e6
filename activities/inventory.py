"""Stock side effects: reserve, release, commit. Each is idempotent by order id in the database."""

from __future__ import annotations

from temporalio import activity

from common.db import Store
from common.models import ReserveRequest, ReserveResult


class InventoryActivities:
    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, request: ReserveRequest) -> ReserveResult:
        outcome = await self._store.reserve(
            request.order_id, [(line.sku, line.quantity) for line in request.lines]
        )
        return ReserveResult(
            reserved=outcome.reserved, warehouse=outcome.warehouse, short=dict(outcome.short)
        )

    @activity.defn(name="release_stock")
    async def release_stock(self, order_id: str) -> int:
        return await self._store.release(order_id)

    @activity.defn(name="commit_stock")
    async def commit_stock(self, order_id: str) -> int:
        return await self._store.commit_reservation(order_id)
