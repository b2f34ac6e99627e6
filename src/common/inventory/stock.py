"""Stock on hand and its books: receipts, customer returns, stock imports, reorder points and low-stock
crossings, and the views over them (levels, positions, ledger, history). Counts and adjustments, which can
release orders' reservations and cancel their picks, belong to the warehouse domain (common.warehouse.counts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.contracts import ImportResult, InvalidRows, ProductSeed, StockSeed, WarehouseSeed
from common.catalog.store import (
    check_seed,
    known_skus,
    require_skus,
    require_warehouse,
    resolve_warehouse,
    seed_rows,
    warehouse_codes,
)
from common.db import tables as t
from common.db.database import Database, insert, lock_key, utc_now
from common.db.errors import StoreError
from common.db.inputs import require_int, require_text
from common.inventory.books import (
    add_ledger,
    add_on_hand,
    ensure_stock_row,
    lock_stock_rows,
    read_level,
    to_stock_level,
    track_low_stock,
    write_on_hand,
)
from common.inventory.contracts import InventoryPosition, LedgerEntry, LowStockCrossing, StockImport, StockLevel
from common.inventory.purchasing import open_purchase_order


def _ledger(r: Row[Any]) -> LedgerEntry:
    return LedgerEntry(r.id, r.sku, r.warehouse, r.delta_on_hand, r.delta_reserved, r.kind, r.ref, r.note, r.at)


def _crossing(r: Row[Any]) -> LowStockCrossing:
    return LowStockCrossing(
        r.id, r.sku, r.warehouse, r.available, r.reorder_point, r.crossed_at, r.rearmed_at, r.alerted_at
    )


def _stock_row_problems(rows: Sequence[StockImport]) -> list[str]:
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        try:
            require_text("sku", r.sku)
            require_text("warehouse", r.warehouse)
            require_int("on_hand", r.on_hand, minimum=0)
        except ValueError as err:
            problems.append(f"row {r.row}: {err}")
        key = (r.sku, r.warehouse)
        if key in seen:
            problems.append(f"row {r.row}: {r.sku} at {r.warehouse} already on row {seen[key]}")
        seen.setdefault(key, r.row)
    return problems


async def _imported_levels(conn: AsyncConnection, rows: Sequence[StockImport]) -> dict[tuple[str, str], Any]:
    """(sku, warehouse) -> the stock row (on hand, reserved) of the imported rows that have one. InvalidRows for
    unknown SKUs or warehouses, or on hand below what is already reserved."""
    sl = t.stock_levels
    skus = sorted({r.sku for r in rows})
    found = await known_skus(conn, skus)
    codes = await warehouse_codes(conn)
    levels = {
        (r.sku, r.warehouse): r
        for r in await conn.execute(
            select(sl.c.sku, sl.c.warehouse, sl.c.on_hand, sl.c.reserved).where(sl.c.sku.in_(skus))
        )
    }
    bad = []
    for r in rows:
        if r.sku not in found:
            bad.append(f"row {r.row}: sku: unknown SKU {r.sku!r} (not in the product catalogue)")
        if r.warehouse not in codes:
            known = ", ".join(codes) or "none"
            bad.append(f"row {r.row}: warehouse: unknown warehouse {r.warehouse!r} (known: {known})")
        level = levels.get((r.sku, r.warehouse))
        if level is not None and r.on_hand < level.reserved:
            bad.append(
                f"row {r.row}: on_hand: {r.on_hand} is less than the {level.reserved} units reserved for "
                f"orders; use `fulfill inventory count` to release reservations"
            )
    if bad:
        raise InvalidRows(bad)
    return levels


async def _set_imported(conn: AsyncConnection, row: StockImport, ref: str | None) -> int:
    """On hand of the row's (sku, warehouse) set to the imported figure, an "adjustment" ledger row for the
    difference; returns the difference. It releases nothing: on hand below reserved is refused."""
    sku, warehouse = row.sku, row.warehouse
    now = utc_now()
    await ensure_stock_row(conn, sku, warehouse)
    previous, reserved = (await lock_stock_rows(conn, {(sku, warehouse)}))[(sku, warehouse)]
    if row.on_hand < reserved:
        raise StoreError(
            f"{sku} at {warehouse}: {row.on_hand} on hand would be less than the {reserved} units reserved"
        )
    delta = row.on_hand - previous
    if delta:
        note = f"stock import: on hand set to {row.on_hand}"
        await write_on_hand(conn, sku, warehouse, previous, row.on_hand, "adjustment", ref, note, now)
    await track_low_stock(conn, {(sku, warehouse)}, now)
    return delta


class StockStore:
    """Stock levels and the ledger. Every change writes its ledger row and follows the low-stock crossings in
    the same transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def seed_catalogue(
        self,
        products: Sequence[ProductSeed],
        warehouses: Sequence[WarehouseSeed],
        stock: Sequence[StockSeed],
        *,
        ref: str = "seed",
    ) -> bool:
        """Insert warehouses, products and opening stock in one transaction, only if there are no products
        yet (so two processes starting together seed once). Returns True if it seeded. Locking: the
        "seed-catalogue" advisory lock, then the stock rows."""
        check_seed(products, warehouses)
        for sku, _wh, qty in stock:
            require_int(f"opening stock of {sku}", qty, minimum=0)

        async def op(conn: AsyncConnection) -> bool:
            now = utc_now()
            if not await seed_rows(conn, products, warehouses, now):
                return False
            for sku, wh, qty in stock:
                await require_skus(conn, [sku])
                await resolve_warehouse(conn, wh)
                await add_on_hand(conn, sku, wh, qty)
                if qty > 0:
                    await add_ledger(conn, [(sku, wh, qty, 0)], "receipt", ref, "opening stock", now)
            return True

        return await self._db.write(op, "seed catalogue")

    async def receive_stock(
        self,
        sku: str,
        qty: int,
        warehouse: str | None = None,
        *,
        ref: str | None = None,
        note: str = "receipt",
        po: str | None = None,
    ) -> StockLevel:
        """Add `qty` units of `sku` to `warehouse` (None: the first warehouse by code, or the purchase
        order's). With `po`, the receipt closes that open purchase order (which must be for this SKU and
        warehouse); the ledger ref is then the PO id unless `ref` is given. Locking: the one stock row (no
        order lock)."""
        require_text("sku", sku)
        require_int("quantity received", qty, minimum=1)
        if po is not None:
            require_text("purchase order id", po)

        async def op(conn: AsyncConnection) -> StockLevel:
            await require_skus(conn, [sku])
            code = warehouse
            ledger_ref = ref
            now = utc_now()
            if po is not None:
                order = await open_purchase_order(conn, po)
                if order.sku != sku:
                    raise StoreError(f"purchase order {po!r} is for {order.sku}, not {sku}")
                if code is not None and code != order.warehouse:
                    raise StoreError(f"purchase order {po!r} is due at {order.warehouse}, not {code}")
                code = order.warehouse
                ledger_ref = ref or po
                await conn.execute(
                    update(t.purchase_orders)
                    .where(t.purchase_orders.c.id == po)
                    .values(status="received", received_quantity=qty, closed_at=now)
                )
            code = await resolve_warehouse(conn, code)
            await add_on_hand(conn, sku, code, qty)
            await add_ledger(conn, [(sku, code, qty, 0)], "receipt", ledger_ref, note, now)
            await track_low_stock(conn, [(sku, code)], now)
            return await read_level(conn, sku, code)

        return await self._db.write(op, f"receive {qty} x {sku}")

    async def return_stock(
        self, sku: str, qty: int, warehouse: str | None = None, *, ref: str, note: str = "customer return"
    ) -> StockLevel:
        """Goods back from a customer (`ref`: the RMA or order id) go back on hand: a "return" ledger row.
        Idempotent by (ref, sku, warehouse): a retried call adds nothing. Locking: the return's advisory lock,
        then the one stock row (no order lock)."""
        require_text("sku", sku)
        require_int("quantity returned", qty, minimum=1)
        require_text("return reference", ref)
        lg = t.stock_ledger

        async def op(conn: AsyncConnection) -> StockLevel:
            await require_skus(conn, [sku])
            code = await resolve_warehouse(conn, warehouse)
            await lock_key(conn, f"return:{ref}")
            done = (
                await conn.execute(
                    select(lg.c.id).where(
                        lg.c.kind == "return", lg.c.ref == ref, lg.c.sku == sku, lg.c.warehouse == code
                    )
                )
            ).first()
            if done is None:
                now = utc_now()
                await add_on_hand(conn, sku, code, qty)
                await add_ledger(conn, [(sku, code, qty, 0)], "return", ref, note, now)
                await track_low_stock(conn, [(sku, code)], now)
            return await read_level(conn, sku, code)

        return await self._db.write(op, f"return {qty} x {sku}")

    async def import_stock(self, rows: Sequence[StockImport], *, ref: str | None = None) -> ImportResult:
        """Set on hand per (sku, warehouse) to the imported figure, each difference an "adjustment" ledger
        row (`ref`, e.g. the file name). Unknown SKUs or warehouses, or on hand below what is already
        reserved, are row errors. Locking: the stock rows in (sku, warehouse) order (it releases nothing,
        so no order lock)."""
        problems = _stock_row_problems(rows)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])

        async def op(conn: AsyncConnection) -> ImportResult:
            levels = await _imported_levels(conn, rows)
            created = updated = unchanged = 0
            # Stock rows are locked in (sku, warehouse) order, whatever the file's order (the locking rule).
            for r in sorted(rows, key=lambda r: (r.sku, r.warehouse)):
                delta = await _set_imported(conn, r, ref)
                if (r.sku, r.warehouse) not in levels:
                    created += 1
                elif delta:
                    updated += 1
                else:
                    unchanged += 1
            return ImportResult(created, updated, unchanged)

        return await self._db.write(op, "import stock")

    async def stock_levels(self, sku: str | None = None, warehouse: str | None = None) -> list[StockLevel]:
        stmt = select(t.stock_levels).order_by(t.stock_levels.c.sku, t.stock_levels.c.warehouse)
        if sku is not None:
            stmt = stmt.where(t.stock_levels.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(t.stock_levels.c.warehouse == warehouse)
        return [to_stock_level(r) for r in await self._db.read(stmt)]

    async def inventory_positions(
        self, sku: str | None = None, warehouse: str | None = None
    ) -> list[InventoryPosition]:
        """On hand, reserved, available, incoming (open purchase orders) and reorder point per SKU and
        warehouse, including pairs with only incoming stock so far."""
        sl, po = t.stock_levels, t.purchase_orders
        levels = select(sl)
        orders = select(po.c.sku, po.c.warehouse, po.c.quantity, po.c.received_quantity, po.c.eta).where(
            po.c.status == "open"
        )
        if sku is not None:
            levels = levels.where(sl.c.sku == sku)
            orders = orders.where(po.c.sku == sku)
        if warehouse is not None:
            levels = levels.where(sl.c.warehouse == warehouse)
            orders = orders.where(po.c.warehouse == warehouse)
        async with self._db.connect() as conn:
            level_rows = (await conn.execute(levels)).all()
            order_rows = (await conn.execute(orders)).all()
        incoming: dict[tuple[str, str], int] = {}
        eta: dict[tuple[str, str], date] = {}
        for r in order_rows:
            key = (r.sku, r.warehouse)
            incoming[key] = incoming.get(key, 0) + max(r.quantity - r.received_quantity, 0)
            if r.eta is not None and (key not in eta or r.eta < eta[key]):
                eta[key] = r.eta
        rows = {(r.sku, r.warehouse): r for r in level_rows}
        out = []
        for key in sorted(set(rows) | set(incoming)):
            row = rows.get(key)
            on_hand, reserved = (row.on_hand, row.reserved) if row is not None else (0, 0)
            out.append(
                InventoryPosition(
                    key[0],
                    key[1],
                    on_hand,
                    reserved,
                    on_hand - reserved,
                    incoming.get(key, 0),
                    eta.get(key),
                    row.reorder_point if row is not None else None,
                )
            )
        return out

    async def ledger(
        self, sku: str | None = None, warehouse: str | None = None, ref: str | None = None
    ) -> list[LedgerEntry]:
        """Stock ledger rows, oldest first."""
        stmt = select(t.stock_ledger).order_by(t.stock_ledger.c.id)
        if sku is not None:
            stmt = stmt.where(t.stock_ledger.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(t.stock_ledger.c.warehouse == warehouse)
        if ref is not None:
            stmt = stmt.where(t.stock_ledger.c.ref == ref)
        return [_ledger(r) for r in await self._db.read(stmt)]

    async def stock_history(self, sku: str, warehouse: str | None = None, *, limit: int = 50) -> list[LedgerEntry]:
        """The latest `limit` ledger rows of `sku` (at `warehouse`), newest first. Unknown SKU or
        warehouse: an error."""
        require_text("sku", sku)
        require_int("limit", limit, minimum=1)
        lg = t.stock_ledger
        stmt = select(lg).where(lg.c.sku == sku).order_by(lg.c.id.desc()).limit(limit)
        if warehouse is not None:
            stmt = stmt.where(lg.c.warehouse == warehouse)
        async with self._db.connect() as conn:
            await require_skus(conn, [sku])
            if warehouse is not None:
                await require_warehouse(conn, warehouse)
            return [_ledger(r) for r in (await conn.execute(stmt)).all()]

    async def set_reorder_points(self, points: Mapping[tuple[str, str], int | None]) -> list[LowStockCrossing]:
        """Set (or with None clear) the reorder point of each (sku, warehouse), in one transaction. Returns
        the crossings this opens (available already at or below the new point). Locking: the stock rows in
        (sku, warehouse) order (no order lock)."""
        for (sku, warehouse), point in points.items():
            require_text("sku", sku)
            require_text("warehouse", warehouse)
            if point is not None:
                require_int(f"reorder point of {sku} at {warehouse}", point, minimum=0)
        sl = t.stock_levels

        async def op(conn: AsyncConnection) -> list[LowStockCrossing]:
            await require_skus(conn, {sku for sku, _ in points})
            for warehouse in sorted({wh for _, wh in points}):
                await require_warehouse(conn, warehouse)
            now = utc_now()
            for (sku, warehouse), point in sorted(points.items()):
                ins = insert(conn, sl).values(sku=sku, warehouse=warehouse, on_hand=0, reserved=0, reorder_point=point)
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[sl.c.sku, sl.c.warehouse], set_={"reorder_point": ins.excluded.reorder_point}
                    )
                )
                if point is None:  # no reorder point, no low stock: close an open crossing
                    lc = t.low_stock_crossings
                    await conn.execute(
                        update(lc)
                        .where(lc.c.sku == sku, lc.c.warehouse == warehouse, lc.c.rearmed_at.is_(None))
                        .values(rearmed_at=now)
                    )
            return await track_low_stock(conn, points.keys(), now)

        return await self._db.write(op, "set reorder points")

    async def set_reorder_point(self, sku: str, warehouse: str, point: int | None) -> list[LowStockCrossing]:
        return await self.set_reorder_points({(sku, warehouse): point})

    async def low_stock_crossings(
        self, skus: Iterable[str] | None = None, *, open_only: bool = False, pending_only: bool = False
    ) -> list[LowStockCrossing]:
        """Crossings, oldest first. `open_only`: not re-armed yet; `pending_only`: open and not alerted."""
        lc = t.low_stock_crossings
        stmt = select(lc).order_by(lc.c.id)
        if skus is not None:
            stmt = stmt.where(lc.c.sku.in_({skus} if isinstance(skus, str) else set(skus)))
        if open_only or pending_only:
            stmt = stmt.where(lc.c.rearmed_at.is_(None))
        if pending_only:
            stmt = stmt.where(lc.c.alerted_at.is_(None))
        return [_crossing(r) for r in await self._db.read(stmt)]

    async def mark_low_stock_alerted(self, crossing_id: int) -> None:
        """Ops were told of this crossing (idempotent; keeps the first time). Locking: the crossing row (its UPDATE)."""
        lc = t.low_stock_crossings

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(lc).where(lc.c.id == crossing_id, lc.c.alerted_at.is_(None)).values(alerted_at=utc_now())
            )

        await self._db.write(op, f"mark low-stock crossing {crossing_id} alerted")
