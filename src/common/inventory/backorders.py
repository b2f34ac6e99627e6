"""Backorders: orders waiting for stock, in a first come, first served queue. `open_backorder` and
`resolve_backorder` run inside the reservation transactions; `fifo_budget` is what the queue leaves an order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.inputs import require_text
from common.inventory.books import available_totals
from common.inventory.contracts import Backorder


def backorder_needs(stored: Any) -> dict[str, int]:
    """The `skus` column holds {sku: units needed}; rows from before quantities were kept hold a list."""
    if isinstance(stored, dict):
        return {str(k): int(v) for k, v in stored.items()}
    return {str(sku): 0 for sku in stored}


def _backorder(r: Row[Any]) -> Backorder:
    needs = backorder_needs(r.skus)
    return Backorder(r.order_id, sorted(needs), r.created_at, r.resolved_at, needs)


def serve_in_order(
    waiting: Sequence[tuple[str, Mapping[str, int]]], available: Mapping[str, int]
) -> tuple[list[str], dict[str, int], set[str]]:
    """First come, first served over the backorder queue (`waiting`: order id -> units it needs per SKU,
    oldest first) with `available` units per SKU (all warehouses together). An order short of a SKU keeps
    what there is of that SKU for itself (no younger order gets any of it) and takes nothing, so an order
    still short of another SKU is passed over; an order that is short of nothing takes what it needs.
    Returns the orders served (in queue order), the units left per SKU, and the SKUs kept back."""
    left = dict(available)
    kept: set[str] = set()
    served: list[str] = []
    for order_id, needs in waiting:
        wanted = {sku: max(qty, 1) for sku, qty in needs.items()}  # unknown quantity: at least one unit
        short = {sku for sku, qty in wanted.items() if sku in kept or qty > left.get(sku, 0)}
        if short:
            kept |= short
            continue
        served.append(order_id)
        for sku, qty in wanted.items():
            left[sku] -= qty
    return served, left, kept


def waiting_orders() -> Select[Any]:
    """The order ids with an open backorder (a query to run or combine)."""
    return select(t.backorders.c.order_id).where(t.backorders.c.resolved_at.is_(None))


async def open_backorder(conn: AsyncConnection, order_id: str, needs: Mapping[str, int], now: datetime) -> None:
    """The order waits for stock: `needs` is sku -> units it needs of each SKU it is short of."""
    ins = insert(conn, t.backorders).values(
        order_id=order_id, skus=dict(sorted(needs.items())), created_at=now, resolved_at=None
    )
    # A re-opened backorder keeps its created_at: the order keeps its place in the queue.
    await conn.execute(
        ins.on_conflict_do_update(
            index_elements=[t.backorders.c.order_id],
            set_={"skus": ins.excluded.skus, "resolved_at": None},
        )
    )


async def resolve_backorder(conn: AsyncConnection, order_id: str, now: datetime) -> None:
    await conn.execute(
        update(t.backorders)
        .where(t.backorders.c.order_id == order_id, t.backorders.c.resolved_at.is_(None))
        .values(resolved_at=now)
    )


async def fifo_budget(conn: AsyncConnection, order_id: str, totals: Mapping[str, int]) -> dict[str, int]:
    """Units of each SKU in `totals` (available in all warehouses) the order may reserve: what is left
    once the backorders ahead of it in the queue are served first (`serve_in_order`). Ahead of it: waiting
    backorders created before its own backorder row (waiting or not: a re-opened wait keeps its place);
    with no row of its own, every waiting backorder."""
    bo = t.backorders
    own = (await conn.execute(select(bo.c.created_at).where(bo.c.order_id == order_id))).scalar_one_or_none()
    stmt = (
        select(bo.c.order_id, bo.c.skus)
        .where(bo.c.resolved_at.is_(None), bo.c.order_id != order_id)
        .order_by(bo.c.created_at, bo.c.order_id)
    )
    if own is not None:
        stmt = stmt.where(or_(bo.c.created_at < own, and_(bo.c.created_at == own, bo.c.order_id < order_id)))
    ahead = [(r.order_id, backorder_needs(r.skus)) for r in await conn.execute(stmt)]
    if not ahead:
        return dict(totals)
    # The orders ahead may need other SKUs too: whether they can go ahead decides what they take.
    others = sorted({sku for _, needs in ahead for sku in needs} - set(totals))
    _, left, kept = serve_in_order(ahead, {**totals, **await available_totals(conn, others)})
    return {sku: 0 if sku in kept else max(left[sku], 0) for sku in totals}


class BackorderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def close_backorder(self, order_id: str) -> bool:
        """End the order's wait for stock without touching its reservations (it gave up on the rest).
        True if it was waiting. Idempotent. Locking: the backorder row (its UPDATE; it changes no stock)."""
        require_text("order_id", order_id)

        async def op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(t.backorders)
                .where(t.backorders.c.order_id == order_id, t.backorders.c.resolved_at.is_(None))
                .values(resolved_at=utc_now())
            )
            return bool(result.rowcount)

        return await self._db.write(op, f"close backorder of order {order_id}")

    async def backordered_orders(self, skus: Iterable[str] | None = None) -> list[str]:
        """Orders still waiting for stock (short on any of `skus`, or all), oldest first."""
        rows = await self._db.read(
            select(t.backorders.c.order_id, t.backorders.c.skus)
            .where(t.backorders.c.resolved_at.is_(None))
            .order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        )
        if skus is None:
            return [r.order_id for r in rows]
        wanted = {skus} if isinstance(skus, str) else set(skus)
        return [r.order_id for r in rows if wanted.intersection(backorder_needs(r.skus))]

    async def backorders_to_wake(self, sku: str) -> list[str]:
        """Backordered orders waiting for `sku` that the stock available now can serve: first come, first
        served, and only as many as the stock covers. The oldest order that needs more of a SKU than is
        available keeps it (younger orders must not take its units); an order still short of another SKU is
        passed over without taking any (`serve_in_order`, the queue `ReservationStore.allocate` follows too)."""
        rows = await self._db.read(
            select(t.backorders.c.order_id, t.backorders.c.skus)
            .where(t.backorders.c.resolved_at.is_(None))
            .order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        )
        waiting = [(r.order_id, backorder_needs(r.skus)) for r in rows]
        if not any(sku in needs for _, needs in waiting):
            return []
        async with self._db.connect() as conn:
            available = await available_totals(conn, sorted({s for _, needs in waiting for s in needs}))
        served, _, _ = serve_in_order(waiting, available)
        needs_of = dict(waiting)
        return [order_id for order_id in served if sku in needs_of[order_id]]

    async def backorders(self, *, include_resolved: bool = False) -> list[Backorder]:
        stmt = select(t.backorders).order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        if not include_resolved:
            stmt = stmt.where(t.backorders.c.resolved_at.is_(None))
        return [_backorder(r) for r in await self._db.read(stmt)]
