"""Reservations: stock held for an order's parcels (shipments), from allocation to release or commit (the goods
left the building). Every reservation operation takes the order's advisory lock first, then the stock rows of
its SKUs FOR UPDATE in (sku, warehouse) order (the locking rule of common.db.database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.store import all_warehouses, require_skus, require_warehouse
from common.db import tables as t
from common.db.database import Database, StockMoved, insert, lock_key, utc_now
from common.db.inputs import normalize_lines, require_int, require_text
from common.inventory.allocation import Site, choose_warehouse, missing, plan_split
from common.inventory.backorders import fifo_budget, open_backorder, resolve_backorder
from common.inventory.books import add_ledger, pending_low_stock, track_low_stock
from common.inventory.contracts import Allocation, DemandRecord, Reservation, ReservationOutcome


def _reservation(r: Row[Any]) -> Reservation:
    return Reservation(
        r.id, r.order_id, r.sku, r.warehouse, r.quantity, r.status, r.created_at, r.updated_at, r.shipment_no
    )


def orders_with_held_stock() -> Select[Any]:
    """The order ids holding a reservation (a query to run or combine)."""
    return select(t.reservations.c.order_id).where(t.reservations.c.status == "held")


async def _sites(conn: AsyncConnection) -> list[Site]:
    return [Site(w.code, w.country, w.region) for w in await all_warehouses(conn)]


async def _availability(
    conn: AsyncConnection, skus: Sequence[str], *, lock: bool, warehouse: str | None = None
) -> dict[str, dict[str, int]]:
    """warehouse -> sku -> available. With `lock`, FOR UPDATE (PostgreSQL; SQLite already holds the
    write lock) in a fixed order: what we read stays true until commit, and concurrent orders cannot
    deadlock on these rows."""
    sl = t.stock_levels
    stmt = (
        select(sl.c.sku, sl.c.warehouse, (sl.c.on_hand - sl.c.reserved).label("available"))
        .where(sl.c.sku.in_(skus))
        .order_by(sl.c.sku, sl.c.warehouse)
    )
    if warehouse is not None:
        stmt = stmt.where(sl.c.warehouse == warehouse)
    if lock:
        stmt = stmt.with_for_update()
    available: dict[str, dict[str, int]] = {}
    for r in await conn.execute(stmt):
        available.setdefault(r.warehouse, {})[r.sku] = r.available
    return available


async def _existing_reservations(conn: AsyncConnection, order_id: str, shipment_no: int | None) -> list[Any]:
    rv = t.reservations
    conditions = [rv.c.order_id == order_id, rv.c.status.in_(("held", "committed"))]
    if shipment_no is not None:
        conditions.append(rv.c.shipment_no == shipment_no)
    stmt = (
        select(rv.c.sku, rv.c.warehouse, rv.c.quantity)
        .where(*conditions)
        .order_by(rv.c.sku, rv.c.shipment_no, rv.c.warehouse)
    )
    return list((await conn.execute(stmt)).all())


async def _hold(
    conn: AsyncConnection,
    order_id: str,
    shipment_no: int,
    warehouse: str,
    items: Sequence[tuple[str, int]],
    now: datetime,
) -> None:
    """Reserve `items` at `warehouse` (conditional UPDATEs that cannot oversell), record the
    reservation rows and the ledger."""
    sl, rv = t.stock_levels, t.reservations
    for sku, qty in items:
        result = await conn.execute(
            update(sl)
            .where(sl.c.sku == sku, sl.c.warehouse == warehouse, sl.c.on_hand - sl.c.reserved >= qty)
            .values(reserved=sl.c.reserved + qty)
        )
        if result.rowcount != 1:
            raise StockMoved  # rolls back the lines already reserved in this attempt
    ins = insert(conn, rv)
    # Rows released earlier (same order, shipment, sku, warehouse) are held again rather than duplicated.
    await conn.execute(
        ins.on_conflict_do_update(
            index_elements=[rv.c.order_id, rv.c.shipment_no, rv.c.sku, rv.c.warehouse],
            set_={
                "quantity": ins.excluded.quantity,
                "status": ins.excluded.status,
                "updated_at": ins.excluded.updated_at,
            },
        ),
        [
            {
                "order_id": order_id,
                "shipment_no": shipment_no,
                "sku": sku,
                "warehouse": warehouse,
                "quantity": qty,
                "status": "held",
                "created_at": now,
                "updated_at": now,
            }
            for sku, qty in items
        ],
    )
    note = "reserve" if shipment_no == 1 else f"reserve shipment {shipment_no}"
    await add_ledger(conn, [(sku, warehouse, 0, qty) for sku, qty in items], "reservation", order_id, note, now)


async def shipment_status(conn: AsyncConnection, order_id: str, shipment_no: int) -> str:
    """The shipment's reservation status, read in the caller's transaction: held if it holds any reservation,
    else committed if it shipped, released if it had reservations and lost them all, none if it never had any."""
    rv = t.reservations
    statuses = set(
        (
            await conn.execute(
                select(rv.c.status).where(rv.c.order_id == order_id, rv.c.shipment_no == shipment_no).distinct()
            )
        ).scalars()
    )
    return next((s for s in ("held", "committed", "released") if s in statuses), "none")


async def _done_shipments(conn: AsyncConnection, order_id: str, first_shipment: int) -> list[Any]:
    """The order's reservations (held or committed) of shipments from `first_shipment` on."""
    rv = t.reservations
    stmt = (
        select(rv.c.shipment_no, rv.c.warehouse, rv.c.sku, rv.c.quantity)
        .where(rv.c.order_id == order_id, rv.c.shipment_no >= first_shipment, rv.c.status.in_(("held", "committed")))
        .order_by(rv.c.shipment_no, rv.c.sku)
    )
    return list((await conn.execute(stmt)).all())


async def _allocated(conn: AsyncConnection, done: Sequence[Any], items: Sequence[tuple[str, int]]) -> Allocation:
    """What a retried `allocate` returns: the shipments already reserved, and what they leave short."""
    shipments: dict[int, tuple[str, list[tuple[str, int]]]] = {}
    got: dict[str, int] = {}
    for r in done:
        shipments.setdefault(r.shipment_no, (r.warehouse, []))[1].append((r.sku, r.quantity))
        got[r.sku] = got.get(r.sku, 0) + r.quantity
    short = {sku: qty - got.get(sku, 0) for sku, qty in items if got.get(sku, 0) < qty}
    waiting = await pending_low_stock(conn, {(r.sku, r.warehouse) for r in done})
    return Allocation([(n, wh, ls) for n, (wh, ls) in sorted(shipments.items())], short, waiting)


def _plan(
    sites: Sequence[Site],
    available: Mapping[str, Mapping[str, int]],
    items: Sequence[tuple[str, int]],
    budget: Mapping[str, int],
    prefer: tuple[str | None, str | None],
    allow_partial: bool,
) -> list[tuple[str, list[tuple[str, int]]]]:
    """How `allocate` ships `items` within `budget` (the units the backorder queue leaves the order): one
    warehouse if one covers them all, else a split over the fewest; with `allow_partial`, what is in stock."""
    fits = all(qty <= budget[sku] for sku, qty in items)
    chosen = choose_warehouse(sites, available, items, *prefer) if fits else None
    plan: list[tuple[str, list[tuple[str, int]]]] = [(chosen, list(items))] if chosen else []
    if not plan and fits:
        plan = plan_split(sites, available, items, *prefer)
    if not plan and allow_partial:
        coverable = [(sku, min(qty, budget[sku])) for sku, qty in items if budget[sku] > 0]
        plan = plan_split(sites, available, coverable, *prefer) if coverable else []
    return plan


async def _allocate_new(
    conn: AsyncConnection,
    order_id: str,
    items: Sequence[tuple[str, int]],
    prefer: tuple[str | None, str | None],
    allow_partial: bool,
    first_shipment: int,
    exclude: Sequence[str] = (),
) -> Allocation:
    wanted = dict(items)
    skus = list(wanted)
    await require_skus(conn, skus)
    sites = await _sites(conn)
    available = await _availability(conn, skus, lock=True)
    # Warehouses that refused these lines before (a 3PL that rejected the parcel): not asked again
    available = {warehouse: stock for warehouse, stock in available.items() if warehouse not in exclude}
    totals = {sku: sum(max(stock.get(sku, 0), 0) for stock in available.values()) for sku in skus}
    # What older backorders wait for is theirs: this order may take only the rest (a plan takes exactly
    # the units it is given, so any plan within `budget` leaves them their units).
    budget = await fifo_budget(conn, order_id, totals)
    plan = _plan(sites, available, items, budget, prefer, allow_partial)
    now = utc_now()
    if not plan:  # nothing reserved: short is what all warehouses together lack (for this order)
        short = {sku: qty - budget[sku] for sku, qty in items if budget[sku] < qty}
        await open_backorder(conn, order_id, {sku: wanted[sku] for sku in short}, now)
        return Allocation([], short)
    planned: dict[str, int] = {}
    shipments_out = []
    for n, (warehouse, part) in enumerate(plan, start=first_shipment):
        await _hold(conn, order_id, n, warehouse, part, now)
        shipments_out.append((n, warehouse, list(part)))
        for sku, qty in part:
            planned[sku] = planned.get(sku, 0) + qty
    short = {sku: qty - planned.get(sku, 0) for sku, qty in items if planned.get(sku, 0) < qty}
    if short:
        await open_backorder(conn, order_id, short, now)
    else:
        await resolve_backorder(conn, order_id, now)
    pending: set[str] = set()
    touched = [(sku, warehouse) for warehouse, part in plan for sku, _ in part]
    await track_low_stock(conn, touched, now, pending)
    return Allocation(shipments_out, short, sorted(pending))


async def _backorder_whole(
    conn: AsyncConnection,
    order_id: str,
    items: Sequence[tuple[str, int]],
    sites: Sequence[Site],
    available: Mapping[str, Mapping[str, int]],
    now: datetime,
) -> ReservationOutcome:
    """No warehouse covers the order: it waits (backorder row), short of what the best warehouse lacks."""
    skus = [sku for sku, _ in items]
    codes = [s.code for s in sites]

    def total(code: str) -> int:
        return sum(available.get(code, {}).get(sku, 0) for sku in skus)

    def short_in(code: str) -> dict[str, int]:
        return missing(available.get(code, {}), items)

    best = min(codes, key=lambda c: (sum(short_in(c).values()), -total(c), c)) if codes else None
    short = short_in(best) if best is not None else dict(items)
    await open_backorder(conn, order_id, {sku: dict(items)[sku] for sku in short}, now)
    return ReservationOutcome(False, None, list(items), short)


async def _held_outcome(conn: AsyncConnection, existing: Sequence[Any]) -> ReservationOutcome:
    """What a retried reservation returns: the reservations already held (or committed)."""
    waiting = await pending_low_stock(conn, {(r.sku, r.warehouse) for r in existing})
    return ReservationOutcome(True, existing[0].warehouse, [(r.sku, r.quantity) for r in existing], {}, waiting)


async def _reserve_shipment(
    conn: AsyncConnection, order_id: str, shipment_no: int, warehouse: str, items: list[tuple[str, int]], now: datetime
) -> ReservationOutcome:
    """Hold `items` in `warehouse` as shipment `shipment_no` of the order, which then waits for nothing more;
    the caller checked they are available, under the order's lock and the stock rows' locks."""
    await _hold(conn, order_id, shipment_no, warehouse, items, now)
    await resolve_backorder(conn, order_id, now)
    pending: set[str] = set()
    await track_low_stock(conn, [(sku, warehouse) for sku, _ in items], now, pending)
    return ReservationOutcome(True, warehouse, items, {}, sorted(pending))


class ReservationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(
        self,
        order_id: str,
        lines: Sequence[tuple[str, int]],
        *,
        prefer_country: str | None = None,
        prefer_region: str | None = None,
    ) -> ReservationOutcome:
        """Reserve every line in one warehouse, all or nothing; idempotent by order id.

        If the order already holds (or has committed) reservations they are returned unchanged. Otherwise,
        among the warehouses that cover every line, one in the ship-to region (`prefer_region`, within
        `prefer_country`) is chosen first, then one in the ship-to country, then the one with the most total
        available, then by code. Each line is reserved with a conditional UPDATE that cannot oversell, and
        the order's backorder (if any) is resolved. If no warehouse covers the order it is recorded as
        backordered and `short` says what is missing in the best warehouse (`allocate`, which the order
        workflow uses, splits it instead). Duplicate skus in `lines` are summed.

        Locking: the order's advisory lock, then the stock rows of its SKUs FOR UPDATE in (sku, warehouse)
        order.
        """
        require_text("order_id", order_id)
        items = normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]

        async def op(conn: AsyncConnection) -> ReservationOutcome:
            await lock_key(conn, f"order:{order_id}")
            existing = await _existing_reservations(conn, order_id, None)
            if existing:
                return await _held_outcome(conn, existing)
            await require_skus(conn, skus)
            sites = await _sites(conn)
            available = await _availability(conn, skus, lock=True)
            now = utc_now()
            chosen = choose_warehouse(sites, available, items, prefer_country, prefer_region)
            if chosen is None:
                return await _backorder_whole(conn, order_id, items, sites, available, now)
            return await _reserve_shipment(conn, order_id, 1, chosen, items, now)

        return await self._db.write(op, f"reserve order {order_id}")

    async def plan_allocation(
        self,
        lines: Sequence[tuple[str, int]],
        prefer_country: str | None = None,
        prefer_region: str | None = None,
    ) -> list[tuple[str, list[tuple[str, int]]]]:
        """How to ship `lines` from the fewest warehouses given stock available now, preferring the ship-to
        region, then country: [(warehouse, [(sku, qty), ...]), ...]. One entry when a single warehouse
        covers the order (the one `reserve` would choose); [] when all warehouses together cannot. Reserves
        nothing (`allocate` plans and reserves in one transaction; `reserve_in` reserves one part, and a part
        that no longer fits comes back not reserved)."""
        items = normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]
        async with self._db.connect() as conn:
            await require_skus(conn, skus)
            sites = await _sites(conn)
            available = await _availability(conn, skus, lock=False)
        return plan_split(sites, available, items, prefer_country, prefer_region)

    async def reserve_in(
        self, order_id: str, shipment_no: int, warehouse: str, lines: Sequence[tuple[str, int]]
    ) -> ReservationOutcome:
        """Reserve exactly `lines` in `warehouse` for shipment `shipment_no` of the order, all or nothing;
        idempotent by (order_id, shipment_no): if that shipment already holds (or committed) reservations
        they are returned unchanged. When the warehouse cannot cover the lines, nothing is written and the
        outcome is not reserved with `short` per sku. A reserved part ends the order's backorder wait (if it
        then cannot get its other parts, release the order and `reserve` again, which re-opens it).
        Locking: the order's advisory lock, then the warehouse's stock rows of its SKUs FOR UPDATE in sku
        order."""
        require_text("order_id", order_id)
        require_int("shipment_no", shipment_no, minimum=1)
        require_text("warehouse", warehouse)
        items = normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]

        async def op(conn: AsyncConnection) -> ReservationOutcome:
            await lock_key(conn, f"order:{order_id}")
            existing = await _existing_reservations(conn, order_id, shipment_no)
            if existing:
                return await _held_outcome(conn, existing)
            await require_skus(conn, skus)
            await require_warehouse(conn, warehouse)
            available = await _availability(conn, skus, lock=True, warehouse=warehouse)
            short = missing(available.get(warehouse, {}), items)
            if short:
                return ReservationOutcome(False, warehouse, items, short)
            return await _reserve_shipment(conn, order_id, shipment_no, warehouse, items, utc_now())

        return await self._db.write(op, f"reserve shipment {shipment_no} of order {order_id}")

    async def allocate(
        self,
        order_id: str,
        lines: Sequence[tuple[str, int]],
        *,
        prefer_country: str | None = None,
        prefer_region: str | None = None,
        allow_partial: bool = False,
        first_shipment: int = 1,
        exclude: Sequence[str] = (),
    ) -> Allocation:
        """Reserve `lines` for the order in one transaction, as shipments numbered from `first_shipment`:
        from one warehouse if one covers them all (ship-to region first, like `reserve`), else split over the
        fewest warehouses (`plan_split`). If all warehouses together fall short, nothing is reserved and the
        order waits (backorder row) — unless `allow_partial`, which reserves what is in stock now and leaves
        only the rest waiting. Idempotent: if shipments from `first_shipment` on are already reserved (a
        retried call) they are returned as they are, with what they leave short. Warehouses in `exclude` (a 3PL
        that refused these lines) are not reserved from.

        First come, first served: units that backorders waiting since before this order's own backorder row
        need are not available to it (an order with no backorder row comes after all of them); see
        `fifo_budget`, which follows the same queue as `BackorderStore.backorders_to_wake`.

        Locking: the order's advisory lock, then the stock rows of its SKUs FOR UPDATE in (sku, warehouse)
        order."""
        require_text("order_id", order_id)
        require_int("first_shipment", first_shipment, minimum=1)
        items = normalize_lines(lines, merge=True)

        async def op(conn: AsyncConnection) -> Allocation:
            await lock_key(conn, f"order:{order_id}")
            done = await _done_shipments(conn, order_id, first_shipment)
            if done:
                return await _allocated(conn, done, items)
            prefer = (prefer_country, prefer_region)
            return await _allocate_new(conn, order_id, items, prefer, allow_partial, first_shipment, exclude)

        return await self._db.write(op, f"allocate order {order_id}")

    async def _settle(
        self, order_id: str, *, to: str, kind: str, note: str, ships: bool, shipment_no: int | None = None
    ) -> int:
        """Move the order's held reservations (of one shipment, if given) to `to`, giving the units back
        (release) or taking them out of on_hand (commit, `ships`). Idempotent: nothing held, nothing done.
        Locking (release and commit): the order's advisory lock, then its stock rows in (sku, warehouse)
        order."""
        require_text("order_id", order_id)
        if shipment_no is not None:
            require_int("shipment_no", shipment_no, minimum=1)
        sl, rv = t.stock_levels, t.reservations
        whole_order = shipment_no is None

        async def op(conn: AsyncConnection) -> int:
            await lock_key(conn, f"order:{order_id}")
            stmt = (
                select(rv.c.id, rv.c.sku, rv.c.warehouse, rv.c.quantity)
                .where(rv.c.order_id == order_id, rv.c.status == "held")
                .order_by(rv.c.sku, rv.c.warehouse)
            )
            if shipment_no is not None:
                stmt = stmt.where(rv.c.shipment_no == shipment_no)
            held = (await conn.execute(stmt)).all()
            if not held:
                if kind == "release" and whole_order:  # a cancelled backordered order stops waiting too
                    await resolve_backorder(conn, order_id, utc_now())
                return 0
            now = utc_now()
            for r in held:
                values: dict[str, ColumnElement[int]] = {"reserved": sl.c.reserved - r.quantity}
                if ships:
                    values["on_hand"] = sl.c.on_hand - r.quantity
                await conn.execute(update(sl).where(sl.c.sku == r.sku, sl.c.warehouse == r.warehouse).values(values))
            await conn.execute(update(rv).where(rv.c.id.in_([r.id for r in held])).values(status=to, updated_at=now))
            await add_ledger(
                conn,
                [(r.sku, r.warehouse, -r.quantity if ships else 0, -r.quantity) for r in held],
                kind,
                order_id,
                note,
                now,
            )
            if kind == "release" and whole_order:
                await resolve_backorder(conn, order_id, now)
            await track_low_stock(conn, {(r.sku, r.warehouse) for r in held}, now)
            return sum(r.quantity for r in held)

        what = f"{kind} order {order_id}" + (f" shipment {shipment_no}" if shipment_no is not None else "")
        return await self._db.write(op, what)

    async def release(self, order_id: str, *, note: str = "release", shipment_no: int | None = None) -> int:
        """Give back what the order holds (held -> released); also ends its backorder wait. Returns the units
        released, 0 if nothing was held. Idempotent. With `shipment_no`, only that shipment's reservations
        (and the backorder wait is left as it is). Locking: `_settle`."""
        return await self._settle(
            order_id, to="released", kind="release", note=note, ships=False, shipment_no=shipment_no
        )

    async def commit_reservation(self, order_id: str, *, shipment_no: int | None = None) -> int:
        """The goods left the building: held -> committed, on_hand and reserved both drop. Returns the units
        committed, 0 if nothing was held. Idempotent. With `shipment_no`, only that shipment. Locking: `_settle`."""
        return await self._settle(
            order_id, to="committed", kind="commit", note="shipped", ships=True, shipment_no=shipment_no
        )

    async def reservations(self, order_id: str | None = None) -> list[Reservation]:
        stmt = select(t.reservations).order_by(t.reservations.c.id)
        if order_id is not None:
            stmt = stmt.where(t.reservations.c.order_id == order_id)
        return [_reservation(r) for r in await self._db.read(stmt)]

    async def demand_history(
        self, since: datetime, sku: str | None = None, warehouse: str | None = None
    ) -> list[DemandRecord]:
        """Reserved units (held or committed reservations) created at or after `since`, oldest first:
        the order history that demand forecasting works from."""
        rv = t.reservations
        stmt = (
            select(rv.c.sku, rv.c.warehouse, rv.c.created_at, rv.c.quantity)
            .where(rv.c.status.in_(("held", "committed")), rv.c.created_at >= since)
            .order_by(rv.c.created_at, rv.c.id)
        )
        if sku is not None:
            stmt = stmt.where(rv.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(rv.c.warehouse == warehouse)
        return [DemandRecord(r.sku, r.warehouse, r.created_at, r.quantity) for r in await self._db.read(stmt)]

    async def shipment_reservation_status(self, order_id: str, shipment_no: int) -> str:
        """Where the shipment's stock stands: "held" (reserved, or packed and waiting for the carrier),
        "committed" (shipped), "released" (it lost its reservation, e.g. to a stock count, or the order gave it
        back), "none" (nothing was ever reserved for it)."""
        require_text("order_id", order_id)
        require_int("shipment_no", shipment_no, minimum=0)
        async with self._db.connect() as conn:
            return await shipment_status(conn, order_id, shipment_no)
