"""Purchase orders: stock expected at a warehouse (incoming until received). A receipt against one closes it
(`StockStore.receive_stock(..., po=id)`)."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.store import require_skus, require_warehouse
from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.errors import StoreError
from common.db.inputs import require_int, require_text
from common.inventory.contracts import PurchaseOrder, PurchaseOrderClosed, PurchaseOrderNotFound


def _purchase_order(r: Row[Any]) -> PurchaseOrder:
    return PurchaseOrder(
        r.id, r.sku, r.warehouse, r.quantity, r.received_quantity, r.eta, r.status, r.note, r.created_at, r.closed_at
    )


async def open_purchase_order(conn: AsyncConnection, po: str) -> PurchaseOrder:
    """The purchase order, its row locked (FOR UPDATE); PurchaseOrderNotFound, or PurchaseOrderClosed if it is
    not open."""
    pt = t.purchase_orders
    row = (await conn.execute(select(pt).where(pt.c.id == po).with_for_update())).first()
    if row is None:
        raise PurchaseOrderNotFound(po)
    order = _purchase_order(row)
    if order.status != "open":
        raise PurchaseOrderClosed(po, order.status)
    return order


class PurchaseOrderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def expect_receipt(
        self,
        sku: str,
        qty: int,
        warehouse: str,
        *,
        eta: date | None = None,
        po: str | None = None,
        note: str = "",
    ) -> PurchaseOrder:
        """Record an expected receipt (a purchase order line): incoming until `receive_stock(..., po=id)`.
        `po` names it (default: a new PO-XXXXXXXX id). Recording the same PO again with the same details
        returns it unchanged; with other details it is an error. Locking: the purchase order row (its INSERT)."""
        require_text("sku", sku)
        require_int("quantity expected", qty, minimum=1)
        require_text("warehouse", warehouse)
        if po is not None:
            require_text("purchase order id", po)
            if len(po) > 64:
                raise ValueError(f"purchase order id must be at most 64 characters, got {len(po)}")
        if eta is not None and (not isinstance(eta, date) or isinstance(eta, datetime)):
            raise ValueError(f"eta must be a date, got {eta!r}")
        pt = t.purchase_orders

        async def op(conn: AsyncConnection) -> PurchaseOrder:
            await require_skus(conn, [sku])
            await require_warehouse(conn, warehouse)
            now = utc_now()
            values = {
                "sku": sku,
                "warehouse": warehouse,
                "quantity": qty,
                "received_quantity": 0,
                "eta": eta,
                "status": "open",
                "note": note,
                "created_at": now,
                "closed_at": None,
            }
            for _ in range(10):
                po_id = po or f"PO-{secrets.token_hex(4).upper()}"
                result = await conn.execute(insert(conn, pt).values(id=po_id, **values).on_conflict_do_nothing())
                if result.rowcount == 1:
                    return PurchaseOrder(po_id, sku, warehouse, qty, 0, eta, "open", note, now, None)
                if po is not None:
                    existing = _purchase_order((await conn.execute(select(pt).where(pt.c.id == po))).one())
                    if (existing.sku, existing.warehouse, existing.quantity, existing.eta) == (
                        sku,
                        warehouse,
                        qty,
                        eta,
                    ):
                        return existing
                    raise StoreError(
                        f"purchase order {po!r} already exists ({existing.quantity} x {existing.sku} to "
                        f"{existing.warehouse}, {existing.status}); nothing changed"
                    )
            raise StoreError("could not allocate a purchase order id")

        return await self._db.write(op, f"expect {qty} x {sku}")

    async def cancel_purchase_order(self, po: str) -> PurchaseOrder:
        """open -> cancelled: no longer incoming. Idempotent; a received PO cannot be cancelled.
        Locking: the purchase order row (FOR UPDATE)."""
        require_text("purchase order id", po)
        pt = t.purchase_orders

        async def op(conn: AsyncConnection) -> PurchaseOrder:
            row = (await conn.execute(select(pt).where(pt.c.id == po).with_for_update())).first()
            if row is None:
                raise PurchaseOrderNotFound(po)
            if row.status == "received":
                raise PurchaseOrderClosed(po, row.status)
            if row.status == "open":
                await conn.execute(update(pt).where(pt.c.id == po).values(status="cancelled", closed_at=utc_now()))
            return _purchase_order((await conn.execute(select(pt).where(pt.c.id == po))).one())

        return await self._db.write(op, f"cancel purchase order {po}")

    async def purchase_orders(
        self, sku: str | None = None, warehouse: str | None = None, *, open_only: bool = True
    ) -> list[PurchaseOrder]:
        """Purchase orders, by eta (unknown last) then creation."""
        pt = t.purchase_orders
        stmt = select(pt).order_by(pt.c.eta.is_(None), pt.c.eta, pt.c.created_at, pt.c.id)
        if open_only:
            stmt = stmt.where(pt.c.status == "open")
        if sku is not None:
            stmt = stmt.where(pt.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(pt.c.warehouse == warehouse)
        return [_purchase_order(r) for r in await self._db.read(stmt)]
