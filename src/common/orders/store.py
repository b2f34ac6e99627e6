"""What orders still hold, for the sweeper of orders whose workflow ended without compensating."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, union

from common.db.database import Database
from common.inventory.backorders import waiting_orders
from common.inventory.reservations import orders_with_held_stock
from common.warehouse.store import orders_with_open_picks


class OrderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def holding_resources(self, order_ids: Iterable[str] | None = None) -> list[str]:
        """Orders (of `order_ids`, or all) that still hold something a closed order must give back, sorted:
        held reservations, open pick tasks, or an open backorder (which keeps its place in the restock queue).
        A label is only worth undoing where its shipment's reservation is still held, so labels are found
        through those. One query (no lock)."""
        holding = union(orders_with_held_stock(), orders_with_open_picks(), waiting_orders()).subquery()
        stmt = select(holding.c.order_id).order_by(holding.c.order_id)
        if order_ids is not None:
            stmt = stmt.where(holding.c.order_id.in_(list(order_ids)))
        return [r.order_id for r in await self._db.read(stmt)]
