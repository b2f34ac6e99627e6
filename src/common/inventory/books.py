"""The stock books: stock rows (on hand, reserved, reorder point), the ledger row every change writes in its
own transaction, and the low-stock crossings that follow available stock. These are the connection-level steps
every stock-changing operation is made of (here in inventory, and in the warehouse domain's counts and short
picks); each runs in the caller's transaction and locks nothing beyond the rows it changes, except
`lock_stock_rows`, which the caller uses in the order the locking rule fixes (common.db.database)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import StockMoved, insert, inserted_id
from common.inventory.contracts import LowStockCrossing, StockLevel


def to_stock_level(r: Row[Any]) -> StockLevel:
    return StockLevel(r.sku, r.warehouse, r.on_hand, r.reserved, r.on_hand - r.reserved)


async def add_ledger(
    conn: AsyncConnection,
    rows: Sequence[tuple[str, str, int, int]],
    kind: str,
    ref: str | None,
    note: str,
    at: datetime,
) -> None:
    if rows:
        await conn.execute(
            t.stock_ledger.insert(),
            [
                {
                    "sku": sku,
                    "warehouse": wh,
                    "delta_on_hand": d_on_hand,
                    "delta_reserved": d_reserved,
                    "kind": kind,
                    "ref": ref,
                    "note": note,
                    "at": at,
                }
                for sku, wh, d_on_hand, d_reserved in rows
            ],
        )


async def ledger_row(
    conn: AsyncConnection,
    sku: str,
    warehouse: str,
    d_on_hand: int,
    d_reserved: int,
    kind: str,
    ref: str | None,
    note: str,
    at: datetime,
) -> int:
    result = await conn.execute(
        t.stock_ledger.insert().values(
            sku=sku,
            warehouse=warehouse,
            delta_on_hand=d_on_hand,
            delta_reserved=d_reserved,
            kind=kind,
            ref=ref,
            note=note,
            at=at,
        )
    )
    return inserted_id(result)


async def read_level(conn: AsyncConnection, sku: str, warehouse: str) -> StockLevel:
    sl = t.stock_levels
    row = (await conn.execute(select(sl).where(sl.c.sku == sku, sl.c.warehouse == warehouse))).one()
    return to_stock_level(row)


async def ensure_stock_row(conn: AsyncConnection, sku: str, warehouse: str) -> None:
    """A first count, import or reorder point at a warehouse creates the row (a concurrent receipt may create it
    too). A row created here has nothing reserved, so no order lock can be needed after this row's lock."""
    sl = t.stock_levels
    await conn.execute(
        insert(conn, sl).values(sku=sku, warehouse=warehouse, on_hand=0, reserved=0).on_conflict_do_nothing()
    )


async def add_on_hand(conn: AsyncConnection, sku: str, warehouse: str, qty: int) -> None:
    """On hand of (sku, warehouse) up by `qty`, creating the row if need be (the caller writes the ledger row)."""
    sl = t.stock_levels
    ins = insert(conn, sl).values(sku=sku, warehouse=warehouse, on_hand=qty, reserved=0)
    await conn.execute(
        ins.on_conflict_do_update(
            index_elements=[sl.c.sku, sl.c.warehouse],
            set_={"on_hand": sl.c.on_hand + ins.excluded.on_hand},
        )
    )


async def write_on_hand(
    conn: AsyncConnection,
    sku: str,
    warehouse: str,
    previous: int,
    new: int,
    kind: str,
    ref: str | None,
    note: str,
    now: datetime,
) -> int:
    """Set on hand from `previous` (read under the row's lock) to `new` with its ledger row; returns the ledger
    row's id. StockMoved (the transaction is retried) if on hand is no longer `previous`."""
    sl = t.stock_levels
    result = await conn.execute(
        update(sl).where(sl.c.sku == sku, sl.c.warehouse == warehouse, sl.c.on_hand == previous).values(on_hand=new)
    )
    if result.rowcount != 1:
        raise StockMoved
    return await ledger_row(conn, sku, warehouse, new - previous, 0, kind, ref, note, now)


async def lock_stock_rows(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """Lock these stock rows (FOR UPDATE, in (sku, warehouse) order: the locking rule);
    (sku, warehouse) -> (on hand, reserved)."""
    sl = t.stock_levels
    wanted = sorted(set(keys))
    rows = await conn.execute(
        select(sl.c.sku, sl.c.warehouse, sl.c.on_hand, sl.c.reserved)
        .where(tuple_(sl.c.sku, sl.c.warehouse).in_(wanted))
        .order_by(sl.c.sku, sl.c.warehouse)
        .with_for_update()
    )
    return {(r.sku, r.warehouse): (r.on_hand, r.reserved) for r in rows}


async def available_totals(conn: AsyncConnection, skus: Sequence[str]) -> dict[str, int]:
    """sku -> units available (on hand - reserved) in all warehouses together."""
    sl = t.stock_levels
    totals = dict.fromkeys(skus, 0)
    if skus:
        for r in await conn.execute(
            select(sl.c.sku, (sl.c.on_hand - sl.c.reserved).label("available")).where(sl.c.sku.in_(skus))
        ):
            totals[r.sku] += max(r.available, 0)
    return totals


async def track_low_stock(
    conn: AsyncConnection,
    keys: Iterable[tuple[str, str]],
    now: datetime,
    pending: set[str] | None = None,
) -> list[LowStockCrossing]:
    """Open a crossing for each (sku, warehouse) whose available stock is at or below its reorder point
    and has none open; re-arm (close) open crossings whose stock is back above it (or whose reorder
    point was cleared). Runs inside the transaction that changed the stock, whose row locks serialize
    it per (sku, warehouse). Returns the crossings opened; adds to `pending` the SKUs left with an open
    crossing that ops were not alerted about yet."""
    wanted = set(keys)
    if not wanted:
        return []
    sl, lc = t.stock_levels, t.low_stock_crossings
    skus = sorted({sku for sku, _ in wanted})
    levels = {
        (r.sku, r.warehouse): r
        for r in await conn.execute(
            select(sl.c.sku, sl.c.warehouse, sl.c.on_hand, sl.c.reserved, sl.c.reorder_point).where(sl.c.sku.in_(skus))
        )
        if (r.sku, r.warehouse) in wanted
    }
    # A crossing is only ever open under a reorder point (`set_reorder_points` closes it when the point
    # is cleared): without any, nothing to do.
    if all(level.reorder_point is None for level in levels.values()):
        return []
    open_rows = {
        (r.sku, r.warehouse): r
        for r in await conn.execute(select(lc).where(lc.c.sku.in_(skus), lc.c.rearmed_at.is_(None)))
        if (r.sku, r.warehouse) in wanted
    }
    opened: list[LowStockCrossing] = []
    for key in sorted(wanted):
        level = levels.get(key)
        current = open_rows.get(key)
        point = level.reorder_point if level is not None else None
        low = point is not None and level is not None and level.on_hand - level.reserved <= point
        if low and current is None and level is not None and point is not None:
            available = level.on_hand - level.reserved
            result = await conn.execute(
                lc.insert().values(
                    sku=key[0], warehouse=key[1], available=available, reorder_point=point, crossed_at=now
                )
            )
            crossing_id = inserted_id(result)
            opened.append(LowStockCrossing(crossing_id, key[0], key[1], available, point, now, None, None))
            if pending is not None:
                pending.add(key[0])
        elif not low and current is not None:
            await conn.execute(update(lc).where(lc.c.id == current.id).values(rearmed_at=now))
        elif low and current is not None and current.alerted_at is None and pending is not None:
            pending.add(key[0])
    return opened


async def pending_low_stock(conn: AsyncConnection, keys: Iterable[tuple[str, str]]) -> list[str]:
    """SKUs among `keys` with an open crossing that ops were not alerted about yet."""
    wanted = set(keys)
    if not wanted:
        return []
    lc = t.low_stock_crossings
    rows = await conn.execute(
        select(lc.c.sku, lc.c.warehouse).where(
            lc.c.sku.in_({sku for sku, _ in wanted}), lc.c.rearmed_at.is_(None), lc.c.alerted_at.is_(None)
        )
    )
    return sorted({r.sku for r in rows if (r.sku, r.warehouse) in wanted})
