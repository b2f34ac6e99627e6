"""Stock counts and adjustments: what the shelf holds corrects on hand. When on hand falls below what is reserved,
the newest orders' parcels not picked yet lose their reservations, their open pick tasks are cancelled and each
order is told (`reservation_released` in the order-signal outbox), all in the count's transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.store import require_skus, require_warehouse
from common.db import tables as t
from common.db.database import Database, StockMoved, lock_key, utc_now
from common.db.errors import StoreError
from common.db.inputs import require_int, require_text
from common.inventory.backorders import open_backorder
from common.inventory.books import add_ledger, ensure_stock_row, lock_stock_rows, track_low_stock, write_on_hand
from common.inventory.contracts import StockChange
from common.models import ReservationReleased
from common.outbox.store import add_order_signal
from common.warehouse.store import cancel_released_picks


def _picked() -> ColumnElement[bool]:
    """A reservation row whose shipment's pick is confirmed: its units are packed, off the shelf (the pick
    task of shipment n is the order's attempt n)."""
    rv, pt = t.reservations, t.pick_tasks
    return (
        select(pt.c.id)
        .where(pt.c.order_id == rv.c.order_id, pt.c.parcel_no == rv.c.shipment_no, pt.c.status == "confirmed")
        .exists()
    )


async def _picked_units(conn: AsyncConnection, sku: str, warehouse: str) -> int:
    """Units of `sku` at `warehouse` held by shipments whose pick is confirmed (packed, not shipped yet)."""
    rv = t.reservations
    picked = _picked()
    total = await conn.execute(
        select(func.coalesce(func.sum(rv.c.quantity), 0)).where(
            rv.c.sku == sku, rv.c.warehouse == warehouse, rv.c.status == "held", picked
        )
    )
    return int(total.scalar_one())


async def _orders_to_release(conn: AsyncConnection, sku: str, warehouse: str, excess: int) -> list[str]:
    """The orders a stock change must release to free `excess` units of `sku` at `warehouse`: those holding
    it in shipments not picked yet (picked units are off the shelf, in a parcel, so a count does not see
    them), newest reservation first, until enough are freed (all of them if they cannot free enough)."""
    rv = t.reservations
    rows = await conn.execute(
        select(rv.c.order_id, rv.c.quantity)
        .where(rv.c.sku == sku, rv.c.warehouse == warehouse, rv.c.status == "held", ~_picked())
        .order_by(rv.c.created_at.desc(), rv.c.id.desc())
    )
    freed: dict[str, int] = {}
    for r in rows:
        freed[r.order_id] = freed.get(r.order_id, 0) + r.quantity
    orders: list[str] = []
    for order_id, units in freed.items():  # dicts keep insertion order: newest first
        if excess <= 0:
            break
        orders.append(order_id)
        excess -= units
    return orders


async def _unpicked_keys(conn: AsyncConnection, orders: Sequence[str]) -> set[tuple[str, str]]:
    """(sku, warehouse) of the held reservations of these orders' shipments not picked yet."""
    if not orders:
        return set()
    rv = t.reservations
    rows = await conn.execute(
        select(rv.c.sku, rv.c.warehouse).where(rv.c.order_id.in_(orders), rv.c.status == "held", ~_picked()).distinct()
    )
    return {(r.sku, r.warehouse) for r in rows}


async def _release_order(
    conn: AsyncConnection, order_id: str, sku: str, warehouse: str, why: str, reason: str, now: datetime
) -> tuple[set[tuple[str, str]], list[int]]:
    """Release the held reservations of the order's shipments not picked yet (a stock change of `sku` at
    `warehouse` took their units), cancel those shipments' open pick tasks (pick task n is shipment n) so
    nobody picks goods that are not there, and tell the order: `reservation_released` in the outbox. The
    order waits for stock again (backorder row). The caller holds the order's lock and the stock rows'.
    Returns every (sku, warehouse) whose reservations changed, and the shipments released."""
    rv, sl = t.reservations, t.stock_levels
    held = (
        await conn.execute(
            select(rv.c.id, rv.c.sku, rv.c.warehouse, rv.c.quantity, rv.c.shipment_no)
            .where(rv.c.order_id == order_id, rv.c.status == "held", ~_picked())
            .order_by(rv.c.sku, rv.c.warehouse, rv.c.shipment_no)
        )
    ).all()
    for r in held:
        await conn.execute(
            update(sl)
            .where(sl.c.sku == r.sku, sl.c.warehouse == r.warehouse)
            .values(reserved=sl.c.reserved - r.quantity)
        )
    await conn.execute(update(rv).where(rv.c.id.in_([r.id for r in held])).values(status="released", updated_at=now))
    await add_ledger(
        conn,
        [(r.sku, r.warehouse, 0, -r.quantity) for r in held],
        "release",
        order_id,
        f"stock short at {warehouse} after {why}",
        now,
    )
    # It waits for the units the change took; a re-allocation records what else it is short of.
    await open_backorder(conn, order_id, {sku: sum(r.quantity for r in held if r.sku == sku)}, now)
    shipments = sorted({r.shipment_no for r in held})
    await cancel_released_picks(conn, order_id, shipments, now)
    message = ReservationReleased(sku=sku, warehouse=warehouse, shipments=shipments, reason=reason)
    await add_order_signal(conn, order_id, "signal", "reservation_released", message.model_dump(mode="json"), now)
    return {(r.sku, r.warehouse) for r in held}, shipments


async def _lock_orders_to_release(
    conn: AsyncConnection, sku: str, warehouse: str, target: Callable[[int, int], int]
) -> list[str]:
    """Lock (sorted) the orders the change would release as things stand before any lock; the caller checks
    under the locks that those are still the ones to release."""
    sl = t.stock_levels
    level = (
        await conn.execute(select(sl.c.on_hand, sl.c.reserved).where(sl.c.sku == sku, sl.c.warehouse == warehouse))
    ).one()
    wanted = target(level.on_hand, await _picked_units(conn, sku, warehouse))
    if wanted >= level.reserved:
        return []
    locked = sorted(await _orders_to_release(conn, sku, warehouse, level.reserved - wanted))
    for order_id in locked:
        await lock_key(conn, f"order:{order_id}")
    return locked


async def _release_excess(
    conn: AsyncConnection,
    sku: str,
    warehouse: str,
    new: int,
    reserved: int,
    locked: Sequence[str],
    why: str,
    reason: str,
    now: datetime,
) -> tuple[dict[str, list[int]], set[tuple[str, str]], int]:
    """Release the newest orders' unpicked shipments until `new` on hand covers what is reserved: (order id ->
    shipments released, in release order; every (sku, warehouse) whose reservations changed; reserved after)."""
    sl = t.stock_levels
    to_release = await _orders_to_release(conn, sku, warehouse, reserved - new)
    if not set(to_release) <= set(locked):
        raise StockMoved  # reservations changed before the locks: again, with the orders locked first
    shipments: dict[str, list[int]] = {}
    touched: set[tuple[str, str]] = set()
    for order_id in to_release:
        keys, shipments[order_id] = await _release_order(conn, order_id, sku, warehouse, why, reason, now)
        touched |= keys
    reserved = (
        await conn.execute(select(sl.c.reserved).where(sl.c.sku == sku, sl.c.warehouse == warehouse))
    ).scalar_one()
    if new < reserved:  # what is left is packed in parcels: those units exist, the change cannot be right
        raise StoreError(
            f"{sku} at {warehouse}: {reserved} units are packed in parcels waiting for the carrier, so on "
            f"hand cannot be {new}; nothing changed"
        )
    return shipments, touched, reserved


async def set_on_hand(
    conn: AsyncConnection,
    sku: str,
    warehouse: str,
    target: Callable[[int, int], int],
    kind: str,
    note: Callable[[int], str],
    ref: str | None,
    *,
    reason: str = "",
) -> StockChange:
    """Set on hand to target(on hand, units packed in parcels) with one ledger row (note(packed)); if that
    is below what is reserved, release the newest orders' unpicked shipments until the rest fit: their
    open pick tasks are cancelled and each order gets `reservation_released` (with `reason`) in the
    order-signal outbox, in this transaction.

    Locking, the rule every operation keeps: order advisory locks first (sorted by order id), then stock
    rows in (sku, warehouse) order. So the orders to release are found before any lock, locked in order,
    and only then this stock row and the other rows of those orders' reservations are locked (one
    FOR UPDATE, sorted). Everything is read again under the locks; if the orders to release are no
    longer among those locked (a new reservation came in meanwhile), the transaction is retried."""
    now = utc_now()
    await ensure_stock_row(conn, sku, warehouse)
    locked = await _lock_orders_to_release(conn, sku, warehouse, target)
    rows = await lock_stock_rows(conn, {(sku, warehouse)} | await _unpicked_keys(conn, locked))
    previous, reserved = rows[(sku, warehouse)]
    packed = await _picked_units(conn, sku, warehouse)
    new = target(previous, packed)
    shipments: dict[str, list[int]] = {}
    touched = {(sku, warehouse)}
    if new < reserved:
        shipments, released_keys, reserved = await _release_excess(
            conn, sku, warehouse, new, reserved, locked, note(packed), reason, now
        )
        touched |= released_keys
    ledger_id = await write_on_hand(conn, sku, warehouse, previous, new, kind, ref, note(packed), now)
    await track_low_stock(conn, touched, now)
    return StockChange(sku, warehouse, previous, new, reserved, new - previous, list(shipments), ledger_id, shipments)


class StockCountStore:
    """Counts and adjustments of on hand (stock imports, which release nothing, are StockStore.import_stock)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def count_stock(
        self, sku: str, warehouse: str, counted: int, *, reason: str | None = None, ref: str | None = None
    ) -> StockChange:
        """A physical count: on hand becomes `counted`, the difference is a "count" ledger row with the
        reason. If fewer units are on hand than reserved, held reservations of whole orders are released,
        newest order first, until the rest fit; those orders (returned in `released_orders`) are back to
        waiting for stock (backordered). Negative counts, unknown SKU or warehouse: an error, nothing changed.
        Locking: see `set_on_hand`."""
        require_text("sku", sku)
        require_text("warehouse", warehouse)
        require_int("counted quantity", counted, minimum=0)
        note = f"count: {reason}" if reason and reason.strip() else "count"

        def target(_on_hand: int, packed: int) -> int:
            # Units already picked into parcels waiting for the carrier are off the shelf but still ours.
            return counted + packed

        def counted_note(packed: int) -> str:
            return f"{note} (+{packed} in packed parcels)" if packed else note

        async def op(conn: AsyncConnection) -> StockChange:
            await require_skus(conn, [sku])
            await require_warehouse(conn, warehouse)
            return await set_on_hand(conn, sku, warehouse, target, "count", counted_note, ref, reason=note)

        return await self._db.write(op, f"count {sku} at {warehouse}")

    async def adjust_stock(
        self, sku: str, warehouse: str, delta: int, *, reason: str, ref: str | None = None
    ) -> StockChange:
        """Correct on hand by `delta` (damage, loss, found stock) with a reason: an "adjustment" ledger row.
        Going below what is reserved releases reservations like `count_stock`; below zero is an error.
        Locking: see `set_on_hand`."""
        require_text("sku", sku)
        require_text("warehouse", warehouse)
        require_text("reason", reason)
        if not isinstance(delta, int) or isinstance(delta, bool) or delta == 0:
            raise ValueError(f"adjustment must be a non-zero integer number of units, got {delta!r}")

        def target(on_hand: int, _packed: int) -> int:
            if on_hand + delta < 0:
                raise StoreError(
                    f"adjusting {sku} at {warehouse} by {delta} would leave {on_hand + delta} on hand "
                    f"(there are {on_hand}); nothing changed"
                )
            return on_hand + delta

        async def op(conn: AsyncConnection) -> StockChange:
            await require_skus(conn, [sku])
            await require_warehouse(conn, warehouse)
            return await set_on_hand(conn, sku, warehouse, target, "adjustment", lambda _: reason, ref, reason=reason)

        return await self._db.write(op, f"adjust {sku} at {warehouse}")
