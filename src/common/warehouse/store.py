"""Pick tasks: one per parcel (pick task n is shipment n of its order), created when the order's stock is
reserved, confirmed (in full or short) or cancelled. A pick task row is only locked or changed under its order's
advisory lock, then (for a short pick) the stock rows."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.store import require_skus, resolve_warehouse
from common.db import tables as t
from common.db.database import Database, insert, lock_key, utc_now
from common.db.errors import StoreError
from common.db.inputs import normalize_lines, require_int, require_text
from common.inventory.books import ledger_row, track_low_stock
from common.inventory.reservations import shipment_status
from common.models import PickShortage
from common.outbox.store import add_order_signal
from common.warehouse.contracts import PickTask, PickTaskClosed, PickTaskNotFound, ShipmentReleased
from common.warehouse.short_picks import reservation_after_short, shortage_problem


def _pick_task(r: Row[Any]) -> PickTask:
    lines = [(str(line["sku"]), int(line["quantity"])) for line in r.lines]
    short = {str(line["sku"]): int(line["short"]) for line in r.lines if line.get("short")}
    return PickTask(
        r.id, r.order_id, r.parcel_no, r.warehouse, lines, r.status, r.created_at, r.confirmed_at, short, r.released_at
    )


def orders_with_open_picks() -> Select[Any]:
    """The order ids with an open pick task (a query to run or combine)."""
    return select(t.pick_tasks.c.order_id).where(t.pick_tasks.c.status == "open")


async def cancel_released_picks(conn: AsyncConnection, order_id: str, shipments: Sequence[int], now: datetime) -> None:
    """Cancel the open pick tasks of these shipments of the order, whose reservations a stock change released,
    so nobody picks goods that are not there. The caller holds the order's lock."""
    pt = t.pick_tasks
    await conn.execute(
        update(pt)
        .where(pt.c.order_id == order_id, pt.c.parcel_no.in_(shipments), pt.c.status == "open")
        .values(status="cancelled", released_at=now)
    )


async def _pick_task_for_update(conn: AsyncConnection, task_id: str) -> PickTask:
    """The pick task, read under its order's lock and with its row locked: order advisory lock first,
    then the task row (and after it any stock rows), like every operation (the locking rule of common.db.database). Read
    before the locks, a concurrent confirmation or cancellation would go unseen."""
    pt = t.pick_tasks
    order_id = (await conn.execute(select(pt.c.order_id).where(pt.c.id == task_id))).scalar_one_or_none()
    if order_id is None:
        raise PickTaskNotFound(task_id)
    await lock_key(conn, f"order:{order_id}")
    return _pick_task((await conn.execute(select(pt).where(pt.c.id == task_id).with_for_update())).one())


async def _confirmable(conn: AsyncConnection, task: PickTask) -> None:
    """Refuse to confirm a task that is not open, or whose shipment lost its reservation (a confirmed pick
    always has its reservation, so what ships is always committed)."""
    if task.status == "cancelled" and task.released_at is not None:
        raise ShipmentReleased(task.order_id, task.parcel_no)  # cancelled by the stock change that released it
    if task.status != "open":
        raise PickTaskClosed(task.id, task.status)
    if await shipment_status(conn, task.order_id, task.parcel_no) == "released":
        raise ShipmentReleased(task.order_id, task.parcel_no)


async def _drop_short_units(conn: AsyncConnection, task: PickTask, sku: str, qty: int, now: datetime) -> None:
    """`qty` units of `sku` were not on the shelf for the task: the books of a short pick (see short_picks)."""
    sl, rv = t.stock_levels, t.reservations
    held = (
        await conn.execute(
            select(rv.c.id, rv.c.quantity).where(
                rv.c.order_id == task.order_id,
                rv.c.shipment_no == task.parcel_no,
                rv.c.sku == sku,
                rv.c.warehouse == task.warehouse,
                rv.c.status == "held",
            )
        )
    ).first()
    dropped = 0
    if held is not None:
        dropped, left = reservation_after_short(held.quantity, qty)
        # Nothing left of the line: the row is released (keeping the quantity it had held).
        values = {"quantity": left, "status": "held"} if left else {"status": "released"}
        await conn.execute(update(rv).where(rv.c.id == held.id).values(**values, updated_at=now))
    result = await conn.execute(
        update(sl)
        .where(sl.c.sku == sku, sl.c.warehouse == task.warehouse, sl.c.on_hand >= qty)
        .values(on_hand=sl.c.on_hand - qty, reserved=sl.c.reserved - dropped)
    )
    if result.rowcount != 1:
        raise StoreError(f"{sku} at {task.warehouse}: fewer than {qty} on hand in the books")
    note = f"short pick: {qty} x {sku} not found for order {task.order_id}"
    await ledger_row(conn, sku, task.warehouse, -qty, -dropped, "adjustment", task.id, note, now)


async def _confirm_short(conn: AsyncConnection, task: PickTask, short: dict[str, int]) -> PickTask:
    """Confirm the open task short of `short` (a valid shortage), with its books, in the caller's transaction."""
    pt = t.pick_tasks
    now = utc_now()
    for sku, qty in sorted(short.items()):
        await _drop_short_units(conn, task, sku, qty, now)
    lines = [
        {"sku": sku, "quantity": qty, **({"short": short[sku]} if sku in short else {})} for sku, qty in task.lines
    ]
    result = await conn.execute(
        update(pt)
        .where(pt.c.id == task.id, pt.c.status == "open")
        .values(status="confirmed", confirmed_at=now, lines=lines)
    )
    if result.rowcount != 1:  # rolls back the stock correction: it must happen once, with the confirmation
        raise PickTaskClosed(task.id, "closed")
    shortage = PickShortage(task_id=task.id, short=short)
    await add_order_signal(conn, task.order_id, "update", "pick_short", shortage.model_dump(), now)
    await track_low_stock(conn, {(sku, task.warehouse) for sku in short}, now)
    return replace(task, status="confirmed", confirmed_at=now, short=short)


class PickTaskStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, order_id: str, parcel_no: int, warehouse: str, lines: Sequence[tuple[str, int]]) -> PickTask:
        """A new open pick task, or the existing one for (order_id, parcel_no). ShipmentReleased if parcel
        `parcel_no` of the order had a reservation and lost it (a stock count released it): nothing to pick.

        Locking: the order's advisory lock first, so a count releasing the shipment comes wholly before or
        after."""
        require_text("order_id", order_id)
        require_int("parcel_no", parcel_no, minimum=0)
        require_text("warehouse", warehouse)
        items = normalize_lines(lines, merge=True)
        pt = t.pick_tasks

        async def existing(conn: AsyncConnection) -> PickTask | None:
            row = (await conn.execute(select(pt).where(pt.c.order_id == order_id, pt.c.parcel_no == parcel_no))).first()
            return _pick_task(row) if row is not None else None

        async def op(conn: AsyncConnection) -> PickTask:
            await lock_key(conn, f"order:{order_id}")
            task = await existing(conn)
            if task is not None and task.status == "confirmed":
                return task  # picked before anything was released: a retried call gets it back
            if await shipment_status(conn, order_id, parcel_no) == "released":
                raise ShipmentReleased(order_id, parcel_no)
            if task is not None:
                return task
            await resolve_warehouse(conn, warehouse)
            await require_skus(conn, [sku for sku, _ in items])
            now = utc_now()
            for _ in range(10):
                task_id = f"PICK-{secrets.token_hex(4).upper()}"
                result = await conn.execute(
                    insert(conn, pt)
                    .values(
                        id=task_id,
                        order_id=order_id,
                        parcel_no=parcel_no,
                        warehouse=warehouse,
                        lines=[{"sku": s, "quantity": q} for s, q in items],
                        status="open",
                        created_at=now,
                        confirmed_at=None,
                    )
                    .on_conflict_do_nothing()
                )
                if result.rowcount == 1:
                    return PickTask(task_id, order_id, parcel_no, warehouse, items, "open", now, None)
                task = await existing(conn)  # a concurrent call won the (order, parcel) race
                if task is not None:
                    return task
                # else the random id collided with another task's: draw again
            raise StoreError(f"could not allocate a pick task id for order {order_id}")

        return await self._db.write(op, f"create pick task for order {order_id}")

    async def get(self, task_id: str) -> PickTask | None:
        rows = await self._db.read(select(t.pick_tasks).where(t.pick_tasks.c.id == task_id))
        return _pick_task(rows[0]) if rows else None

    async def for_order(self, order_id: str) -> list[PickTask]:
        stmt = select(t.pick_tasks).where(t.pick_tasks.c.order_id == order_id).order_by(t.pick_tasks.c.parcel_no)
        return [_pick_task(r) for r in await self._db.read(stmt)]

    async def open_tasks(self, older_than_s: float | None = None) -> list[PickTask]:
        """Open tasks (created at least `older_than_s` seconds ago, if given), oldest first."""
        pt = t.pick_tasks
        stmt = select(pt).where(pt.c.status == "open").order_by(pt.c.created_at, pt.c.id)
        if older_than_s is not None:
            stmt = stmt.where(pt.c.created_at <= utc_now() - timedelta(seconds=older_than_s))
        return [_pick_task(r) for r in await self._db.read(stmt)]

    async def _close(self, task_id: str, to: str) -> PickTask:
        """open -> `to`; idempotent when it is `to` already. A confirmation goes into the order-signal
        outbox (`pick_confirmed`) in the same transaction. Locking: `_pick_task_for_update`."""
        pt = t.pick_tasks

        async def op(conn: AsyncConnection) -> PickTask:
            task = await _pick_task_for_update(conn, task_id)
            if task.status == to:
                return task
            if to == "confirmed":
                await _confirmable(conn, task)
            elif task.status != "open":
                raise PickTaskClosed(task_id, task.status)
            now = utc_now()
            values: dict[str, Any] = {"status": to}
            if to == "confirmed":
                values["confirmed_at"] = now
            result = await conn.execute(update(pt).where(pt.c.id == task_id, pt.c.status == "open").values(values))
            if result.rowcount != 1:  # never tell a caller it won when the task changed underneath
                raise PickTaskClosed(task_id, "closed")
            if to == "confirmed":
                await add_order_signal(conn, task.order_id, "signal", "pick_confirmed", task_id, now)
            return replace(task, status=to, confirmed_at=now if to == "confirmed" else None)

        return await self._db.write(op, f"{to} pick task {task_id}")

    async def confirm(self, task_id: str, short: Mapping[str, int] | None = None) -> PickTask:
        """open -> confirmed (idempotent). PickTaskNotFound; PickTaskClosed if it was cancelled (or, with
        `short`, confirmed otherwise); ShipmentReleased if its shipment's reservation is gone (a stock count
        released it, and cancelled the task). The order is told through the order-signal outbox, in the
        same transaction: signal `pick_confirmed` (the task id), or for a short pick update `pick_short`
        (PickShortage). A repeated confirmation changes nothing and writes nothing.

        With `short` (sku -> units the picker could not find), a short pick: StoreError unless it is a valid
        shortage of the task, and on hand and the order's reservation are corrected with the confirmation
        (the rule: common.warehouse.short_picks).

        Locking: the order's advisory lock, then the task row, then the stock rows in sku order (one
        warehouse): two confirmations of one task are serial, and only the first changes anything."""
        if not short:
            return await self._close(task_id, "confirmed")
        missing_units = {str(sku): qty for sku, qty in short.items()}

        async def op(conn: AsyncConnection) -> PickTask:
            task = await _pick_task_for_update(conn, task_id)
            if task.status == "confirmed" and task.short == missing_units:
                return task  # the same short confirmation again: already done
            await _confirmable(conn, task)
            problem = shortage_problem(task_id, dict(task.lines), missing_units)
            if problem is not None:
                raise StoreError(problem)
            return await _confirm_short(conn, task, missing_units)

        return await self._db.write(op, f"confirm pick task {task_id} short")

    async def cancel(self, task_id: str) -> PickTask:
        """open -> cancelled (idempotent). PickTaskNotFound, or PickTaskClosed if it was already confirmed.
        Locking: the order's advisory lock, then the task row; against a confirmation, exactly one wins."""
        return await self._close(task_id, "cancelled")
