"""The database facts the KPIs read: SQL only, no arithmetic beyond sums (that is measures.py's)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from common.db import tables as t
from common.db.database import Database
from common.models import PLACEMENT_MARK

OUTBOUND_LABEL = "label:"  # activities.shipping.label_key's prefix


def _order_id(key: str) -> str:
    # Rows of an order placed again are keyed `<order_id>~<placement>`: they count for the same order.
    return key.split(PLACEMENT_MARK, 1)[0]


@dataclass(frozen=True)
class StockFacts:
    units_shipped: int  # units committed out of stock in the period
    on_hand_start: int
    on_hand_end: int


# Each read takes `since`, the period's start: rows of orders placed in the period are no older, so the scan
# stays within the period's rows however long the history is.


async def backordered_skus(db: Database, order_ids: Collection[str], since: datetime) -> dict[str, list[str]]:
    """The skus each of these orders was short of at its first allocation (its backorder record)."""
    bo = t.backorders.c
    rows = await db.read(select(bo.order_id, bo.skus).where(bo.created_at >= since))
    out: dict[str, list[str]] = {}
    for row in rows:
        order_id = _order_id(row.order_id)
        if order_id in order_ids:
            out.setdefault(order_id, []).extend(row.skus or [])
    return out


async def label_rates(db: Database, order_ids: Collection[str], since: datetime) -> dict[str, int]:
    """Cents spent on purchased (not voided) outbound labels, per order that bought any. Return labels (keyed
    `return-label:`) are a cost of the return, not of shipping the order."""
    sh = t.shipments.c
    rows = await db.read(
        select(sh.order_id, sh.rate_cents).where(
            sh.status == "purchased", sh.key.like(f"{OUTBOUND_LABEL}%"), sh.created_at >= since
        )
    )
    out: dict[str, int] = {}
    for row in rows:
        order_id = _order_id(row.order_id)
        if order_id in order_ids:
            out[order_id] = out.get(order_id, 0) + (row.rate_cents or 0)
    return out


async def returns(db: Database, order_ids: Collection[str], since: datetime) -> list[tuple[str, str]]:
    """(order id, reason) of each RMA of these orders."""
    rows = await db.read(select(t.rmas.c.order_id, t.rmas.c.reason).where(t.rmas.c.created_at >= since))
    return [(_order_id(r.order_id), r.reason) for r in rows if _order_id(r.order_id) in order_ids]


async def stock_facts(db: Database, start: datetime, end: datetime) -> StockFacts:
    """Units shipped in [start, end), and on hand (all skus, all warehouses) at start and at end, rebuilt
    backwards from today's stock levels and the ledger."""
    lg = t.stock_ledger.c
    now_on_hand = (await db.read(select(func.coalesce(func.sum(t.stock_levels.c.on_hand), 0))))[0][0]

    async def delta_since(at: datetime) -> int:
        stmt = select(func.coalesce(func.sum(lg.delta_on_hand), 0)).where(lg.at >= at)
        return int((await db.read(stmt))[0][0])

    shipped_stmt = select(func.coalesce(func.sum(-lg.delta_on_hand), 0)).where(
        lg.kind == "commit", lg.at >= start, lg.at < end
    )
    shipped = int((await db.read(shipped_stmt))[0][0])
    return StockFacts(
        units_shipped=shipped,
        on_hand_start=int(now_on_hand) - await delta_since(start),
        on_hand_end=int(now_on_hand) - await delta_since(end),
    )


async def low_stock(db: Database) -> list[tuple[str, str, int, int]]:
    """(sku, warehouse, available, reorder point) of stock at or below its reorder point."""
    sl = t.stock_levels.c
    available = sl.on_hand - sl.reserved
    stmt = (
        select(sl.sku, sl.warehouse, available.label("available"), sl.reorder_point)
        .where(sl.reorder_point.is_not(None), available <= sl.reorder_point)
        .order_by(sl.sku, sl.warehouse)
    )
    return [(r.sku, r.warehouse, int(r.available), int(r.reorder_point)) for r in await db.read(stmt)]
