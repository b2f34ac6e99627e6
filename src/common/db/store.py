"""Every database operation the activities, the CLI and the client need, behind one async `Store`.

Rules the methods keep:
- Each call is one transaction on its own pooled connection; a method never leaves partial changes.
- Every stock change writes a `stock_ledger` row in the same transaction as the change.
- Side-effect bookkeeping is idempotent by business key (order id, (order, attempt), label key,
  notification key), so activity retries and replays never double-reserve, double-buy or double-send.
- Write transactions on SQLite start with BEGIN IMMEDIATE (writers queue on the busy timeout instead of
  failing halfway); on PostgreSQL they run at READ COMMITTED with row locks taken in a fixed order.
  Lock/deadlock/serialization errors retry the whole transaction a few times.
- Bad input raises ValueError or a StoreError subclass with a clear message and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Row, Select, Table, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.db import tables as t
from common.db.engine import SQLITE_BEGIN_OPTION, create_engine, run_migrations

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    weight_grams: int
    created_at: datetime


@dataclass(frozen=True)
class Warehouse:
    code: str
    name: str
    country: str
    region: str | None


@dataclass(frozen=True)
class StockLevel:
    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    available: int  # on_hand - reserved


@dataclass(frozen=True)
class ReservationOutcome:
    reserved: bool
    warehouse: str | None
    lines: list[tuple[str, int]]
    # sku -> units missing in the best warehouse, when not reserved
    short: dict[str, int]


@dataclass(frozen=True)
class Reservation:
    id: int
    order_id: str
    sku: str
    warehouse: str
    quantity: int
    status: str  # held | released | committed
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    sku: str
    warehouse: str
    delta_on_hand: int
    delta_reserved: int
    kind: str  # receipt | reservation | release | commit | adjustment
    ref: str | None
    note: str
    at: datetime


@dataclass(frozen=True)
class Backorder:
    order_id: str
    skus: list[str]
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True)
class PickTask:
    id: str
    order_id: str
    attempt: int
    warehouse: str
    lines: list[tuple[str, int]]
    status: str  # open | confirmed | cancelled
    created_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True)
class ShipmentRecord:
    key: str
    order_id: str
    carrier_shipment_id: str
    carrier: str | None
    service: str | None
    rate_cents: int | None
    tracking_number: str | None
    label_url: str | None
    tracking_url: str | None
    status: str  # created | purchased | voided
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NotificationRecord:
    key: str
    order_id: str
    event: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    status: str  # sending | sent | failed
    provider_message_id: str | None
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None


# Seed rows for `seed_catalogue`: (sku, name, price_cents, weight_grams), (code, name, country, region),
# (sku, warehouse, on_hand).
ProductSeed = tuple[str, str, int, int]
WarehouseSeed = tuple[str, str, str, str | None]
StockSeed = tuple[str, str, int]

# ---------------------------------------------------------------------------------------------------------
# Errors


class StoreError(Exception):
    """A database operation was refused; the message says why. Nothing was changed."""


class UnknownSkuError(StoreError):
    def __init__(self, skus: Sequence[str]) -> None:
        self.skus = sorted(skus)
        listed = ", ".join(repr(s) for s in self.skus)
        noun = "SKU" if len(self.skus) == 1 else "SKUs"
        super().__init__(f"unknown {noun} {listed}: not in the product catalogue")


class UnknownWarehouseError(StoreError):
    def __init__(self, code: str | None, known: Sequence[str]) -> None:
        self.code = code
        self.known = list(known)
        if code is None:
            super().__init__("no warehouses are defined: add one first")
        else:
            super().__init__(f"unknown warehouse {code!r} (known: {', '.join(known) or 'none'})")


class PickTaskNotFound(StoreError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no pick task {task_id!r}")


class PickTaskClosed(StoreError):
    def __init__(self, task_id: str, status: str) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(f"pick task {task_id!r} is {status} and can no longer change")


class ShipmentNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no shipment recorded under {key!r}")


class NotificationNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no notification claimed under {key!r}")


class _StockMoved(Exception):
    """A conditional stock update found less available than the read before it; the attempt is retried."""


# ---------------------------------------------------------------------------------------------------------
# Retry policy for write transactions

MAX_TRANSIENT_ATTEMPTS = 8  # database locked / deadlock / serialization failure
MAX_STOCK_MOVED_ATTEMPTS = 10
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database schema has changed")


def _is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    message = str(orig).lower()
    return any(m in message for m in _TRANSIENT_SQLITE)


def _backoff(attempt: int) -> float:
    # Jittered so retrying writers do not collide again in lock step.
    return random.uniform(0.005, 0.02 * 2 ** min(attempt, 5))


# ---------------------------------------------------------------------------------------------------------
# Validation


_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _now() -> datetime:
    return datetime.now(UTC)


def _require_text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _require_int(what: str, value: object, *, minimum: int) -> int:
    # bool is an int subclass; True units of stock is a bug, not a quantity.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def _normalize_lines(lines: Sequence[tuple[str, int]], *, merge: bool) -> list[tuple[str, int]]:
    if isinstance(lines, str | bytes) or not lines:
        raise ValueError("at least one (sku, quantity) line is required")
    out: dict[str, int] = {}
    for line in lines:
        sku, qty = line
        _require_text("sku", sku)
        _require_int(f"quantity of {sku}", qty, minimum=1)
        if sku in out and not merge:
            raise ValueError(f"sku {sku!r} appears more than once")
        out[sku] = out.get(sku, 0) + qty
    return sorted(out.items())


# ---------------------------------------------------------------------------------------------------------
# Row mapping


def _product(r: Row[Any]) -> Product:
    return Product(r.sku, r.name, r.price_cents, r.weight_grams, r.created_at)


def _warehouse(r: Row[Any]) -> Warehouse:
    return Warehouse(r.code, r.name, r.country, r.region)


def _stock(r: Row[Any]) -> StockLevel:
    return StockLevel(r.sku, r.warehouse, r.on_hand, r.reserved, r.on_hand - r.reserved)


def _reservation(r: Row[Any]) -> Reservation:
    return Reservation(r.id, r.order_id, r.sku, r.warehouse, r.quantity, r.status, r.created_at, r.updated_at)


def _ledger(r: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        r.id, r.sku, r.warehouse, r.delta_on_hand, r.delta_reserved, r.kind, r.ref, r.note, r.at
    )


def _pick_task(r: Row[Any]) -> PickTask:
    lines = [(str(line["sku"]), int(line["quantity"])) for line in r.lines]
    return PickTask(r.id, r.order_id, r.attempt, r.warehouse, lines, r.status, r.created_at, r.confirmed_at)


def _shipment(r: Row[Any]) -> ShipmentRecord:
    return ShipmentRecord(
        r.key,
        r.order_id,
        r.carrier_shipment_id,
        r.carrier,
        r.service,
        r.rate_cents,
        r.tracking_number,
        r.label_url,
        r.tracking_url,
        r.status,
        r.created_at,
        r.updated_at,
    )


def _notification(r: Row[Any]) -> NotificationRecord:
    return NotificationRecord(
        r.key,
        r.order_id,
        r.event,
        r.channel,
        r.recipient,
        r.subject,
        r.body,
        r.status,
        r.provider_message_id,
        r.error,
        r.attempts,
        r.created_at,
        r.sent_at,
    )


def _backorder(r: Row[Any]) -> Backorder:
    return Backorder(r.order_id, list(r.skus), r.created_at, r.resolved_at)


# ---------------------------------------------------------------------------------------------------------
# Store


class Store:
    """Async access to the fulfillment database. One engine (connection pool) per Store; share one Store
    per process. Create with `await Store.open(url)`, finish with `await store.close()`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        # Write transactions take SQLite's write lock at BEGIN (no-op option on PostgreSQL).
        self._writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "immediate"})
        # SQLite has one writer at a time anyway: queueing this process's writers on an asyncio lock is
        # cheaper than SQLite's sleep-and-poll busy handler. Other processes still queue on busy_timeout.
        self._sqlite_write_lock: asyncio.Lock | None = asyncio.Lock() if self._dialect == "sqlite" else None

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Self:
        """Connect to `url` (sqlite+aiosqlite:///path or postgresql+asyncpg://...) and, when `migrate`,
        apply the Alembic migrations up to head first."""
        engine = create_engine(url)
        try:
            if migrate:
                await run_migrations(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        """The backend: "sqlite" or "postgresql"."""
        return self._dialect

    # -----------------------------------------------------------------------------------------------------
    # Transactions

    async def _write(self, op: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        """Run `op` in one write transaction, retrying the whole transaction on transient lock errors."""
        transient = moved = 0
        while True:
            try:
                lock = self._sqlite_write_lock or contextlib.nullcontext()
                async with lock, self._writer.begin() as conn:
                    return await op(conn)
            except _StockMoved as exc:
                moved += 1
                if moved >= MAX_STOCK_MOVED_ATTEMPTS:
                    raise StoreError(
                        f"{what}: stock kept changing underneath, gave up after {moved} tries"
                    ) from exc
                await asyncio.sleep(_backoff(moved))
            except DBAPIError as exc:
                transient += 1
                if not _is_transient(exc) or transient >= MAX_TRANSIENT_ATTEMPTS:
                    raise
                await asyncio.sleep(_backoff(transient))

    async def _read(self, stmt: Select[Any]) -> Sequence[Row[Any]]:
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt)).all()

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT support."""
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    async def _lock_key(self, conn: AsyncConnection, key: str) -> None:
        """Serialize transactions on one business key on PostgreSQL (SQLite writers are serial already)."""
        if self._dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})

    async def _require_skus(self, conn: AsyncConnection, skus: Iterable[str]) -> None:
        wanted = set(skus)
        found = set(
            (await conn.execute(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))).scalars()
        )
        if wanted - found:
            raise UnknownSkuError(sorted(wanted - found))

    async def _resolve_warehouse(self, conn: AsyncConnection, code: str | None) -> str:
        codes = list(
            (await conn.execute(select(t.warehouses.c.code).order_by(t.warehouses.c.code))).scalars()
        )
        if code is None and codes:
            return codes[0]
        if code is None or code not in codes:
            raise UnknownWarehouseError(code, codes)
        return code

    async def _add_ledger(
        self,
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

    # -----------------------------------------------------------------------------------------------------
    # Catalogue

    async def upsert_product(self, sku: str, name: str, price_cents: int, weight_grams: int) -> None:
        _require_text("sku", sku)
        _require_text("name", name)
        _require_int("price_cents", price_cents, minimum=0)
        _require_int("weight_grams", weight_grams, minimum=1)

        async def op(conn: AsyncConnection) -> None:
            ins = self._insert(t.products).values(
                sku=sku, name=name, price_cents=price_cents, weight_grams=weight_grams, created_at=_now()
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.products.c.sku],
                    set_={
                        "name": ins.excluded.name,
                        "price_cents": ins.excluded.price_cents,
                        "weight_grams": ins.excluded.weight_grams,
                    },
                )
            )

        await self._write(op, f"upsert product {sku}")

    async def upsert_warehouse(self, code: str, name: str, country: str, region: str | None) -> None:
        _require_text("warehouse code", code)
        _require_text("warehouse name", name)
        country = country.upper() if isinstance(country, str) else country
        if not isinstance(country, str) or not _COUNTRY.match(country):
            raise ValueError(f"country must be an ISO 3166-1 alpha-2 code like 'GB', got {country!r}")

        async def op(conn: AsyncConnection) -> None:
            ins = self._insert(t.warehouses).values(code=code, name=name, country=country, region=region)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.warehouses.c.code],
                    set_={
                        "name": ins.excluded.name,
                        "country": ins.excluded.country,
                        "region": ins.excluded.region,
                    },
                )
            )

        await self._write(op, f"upsert warehouse {code}")

    async def unknown_skus(self, skus: Iterable[str]) -> list[str]:
        """The given skus that are not in the catalogue, sorted."""
        wanted = {skus} if isinstance(skus, str) else set(skus)
        if not wanted:
            return []
        found = {
            r.sku for r in await self._read(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))
        }
        return sorted(wanted - found)

    async def products(self) -> list[Product]:
        return [_product(r) for r in await self._read(select(t.products).order_by(t.products.c.sku))]

    async def warehouses(self) -> list[Warehouse]:
        return [_warehouse(r) for r in await self._read(select(t.warehouses).order_by(t.warehouses.c.code))]

    async def seed_catalogue(
        self,
        products: Sequence[ProductSeed],
        warehouses: Sequence[WarehouseSeed],
        stock: Sequence[StockSeed],
        *,
        ref: str = "seed",
    ) -> bool:
        """Insert warehouses, products and opening stock in one transaction, only if there are no products
        yet (so two processes starting together seed once). Returns True if it seeded."""
        for sku, name, price_cents, weight_grams in products:
            _require_text("sku", sku)
            _require_text("name", name)
            _require_int(f"price_cents of {sku}", price_cents, minimum=0)
            _require_int(f"weight_grams of {sku}", weight_grams, minimum=1)
        for code, _name, country, _region in warehouses:
            if not _COUNTRY.match(country):
                raise ValueError(f"country of {code} must be an ISO-2 code like 'GB', got {country!r}")
        for sku, _wh, qty in stock:
            _require_int(f"opening stock of {sku}", qty, minimum=0)

        async def op(conn: AsyncConnection) -> bool:
            await self._lock_key(conn, "seed-catalogue")
            if (await conn.execute(select(t.products.c.sku).limit(1))).first() is not None:
                return False
            now = _now()
            if warehouses:
                await conn.execute(
                    self._insert(t.warehouses).on_conflict_do_nothing(),
                    [{"code": c, "name": n, "country": co, "region": r} for c, n, co, r in warehouses],
                )
            if products:
                await conn.execute(
                    t.products.insert(),
                    [
                        {"sku": s, "name": n, "price_cents": p, "weight_grams": w, "created_at": now}
                        for s, n, p, w in products
                    ],
                )
            for sku, wh, qty in stock:
                await self._require_skus(conn, [sku])
                await self._resolve_warehouse(conn, wh)
                ins = self._insert(t.stock_levels).values(sku=sku, warehouse=wh, on_hand=qty, reserved=0)
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[t.stock_levels.c.sku, t.stock_levels.c.warehouse],
                        set_={"on_hand": t.stock_levels.c.on_hand + ins.excluded.on_hand},
                    )
                )
                if qty > 0:
                    await self._add_ledger(conn, [(sku, wh, qty, 0)], "receipt", ref, "opening stock", now)
            return True

        return await self._write(op, "seed catalogue")

    # -----------------------------------------------------------------------------------------------------
    # Stock

    async def receive_stock(
        self,
        sku: str,
        qty: int,
        warehouse: str | None = None,
        *,
        ref: str | None = None,
        note: str = "receipt",
    ) -> StockLevel:
        """Add `qty` units of `sku` to `warehouse` (None: the first warehouse by code)."""
        _require_text("sku", sku)
        _require_int("quantity received", qty, minimum=1)

        async def op(conn: AsyncConnection) -> StockLevel:
            await self._require_skus(conn, [sku])
            code = await self._resolve_warehouse(conn, warehouse)
            ins = self._insert(t.stock_levels).values(sku=sku, warehouse=code, on_hand=qty, reserved=0)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.stock_levels.c.sku, t.stock_levels.c.warehouse],
                    set_={"on_hand": t.stock_levels.c.on_hand + ins.excluded.on_hand},
                )
            )
            await self._add_ledger(conn, [(sku, code, qty, 0)], "receipt", ref, note, _now())
            row = (
                await conn.execute(
                    select(t.stock_levels).where(
                        t.stock_levels.c.sku == sku, t.stock_levels.c.warehouse == code
                    )
                )
            ).one()
            return _stock(row)

        return await self._write(op, f"receive {qty} x {sku}")

    async def stock_levels(self, sku: str | None = None, warehouse: str | None = None) -> list[StockLevel]:
        stmt = select(t.stock_levels).order_by(t.stock_levels.c.sku, t.stock_levels.c.warehouse)
        if sku is not None:
            stmt = stmt.where(t.stock_levels.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(t.stock_levels.c.warehouse == warehouse)
        return [_stock(r) for r in await self._read(stmt)]

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
        return [_ledger(r) for r in await self._read(stmt)]

    async def reservations(self, order_id: str | None = None) -> list[Reservation]:
        stmt = select(t.reservations).order_by(t.reservations.c.id)
        if order_id is not None:
            stmt = stmt.where(t.reservations.c.order_id == order_id)
        return [_reservation(r) for r in await self._read(stmt)]

    async def reserve(self, order_id: str, lines: Sequence[tuple[str, int]]) -> ReservationOutcome:
        """Reserve every line in one warehouse, all or nothing; idempotent by order id.

        If the order already holds (or has committed) reservations they are returned unchanged. Otherwise the
        warehouse that covers every line with the most total available (then by code) is chosen, each line
        is reserved with a conditional UPDATE that cannot oversell, and the order's backorder (if any) is
        resolved. If no warehouse covers the order it is recorded as backordered and `short` says what is
        missing in the best warehouse. Duplicate skus in `lines` are summed.
        """
        _require_text("order_id", order_id)
        items = _normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]
        sl = t.stock_levels

        async def op(conn: AsyncConnection) -> ReservationOutcome:
            await self._lock_key(conn, f"order:{order_id}")
            existing = (
                await conn.execute(
                    select(t.reservations.c.sku, t.reservations.c.warehouse, t.reservations.c.quantity)
                    .where(
                        t.reservations.c.order_id == order_id,
                        t.reservations.c.status.in_(("held", "committed")),
                    )
                    .order_by(t.reservations.c.sku)
                )
            ).all()
            if existing:
                return ReservationOutcome(
                    True, existing[0].warehouse, [(r.sku, r.quantity) for r in existing], {}
                )

            await self._require_skus(conn, skus)
            codes = list(
                (await conn.execute(select(t.warehouses.c.code).order_by(t.warehouses.c.code))).scalars()
            )
            # FOR UPDATE (PostgreSQL; SQLite already holds the write lock) in a fixed order: what we read
            # stays true until commit and concurrent orders cannot deadlock on these rows.
            levels = await conn.execute(
                select(sl.c.sku, sl.c.warehouse, (sl.c.on_hand - sl.c.reserved).label("available"))
                .where(sl.c.sku.in_(skus))
                .order_by(sl.c.sku, sl.c.warehouse)
                .with_for_update()
            )
            available: dict[str, dict[str, int]] = {code: {} for code in codes}
            for r in levels:
                available.setdefault(r.warehouse, {})[r.sku] = r.available

            def total(code: str) -> int:
                return sum(available[code].get(sku, 0) for sku in skus)

            def missing(code: str) -> dict[str, int]:
                return {s: q - available[code].get(s, 0) for s, q in items if available[code].get(s, 0) < q}

            now = _now()
            covering = [code for code in codes if not missing(code)]
            if not covering:
                best = min(codes, key=lambda c: (sum(missing(c).values()), -total(c), c)) if codes else None
                short = missing(best) if best is not None else dict(items)
                ins = self._insert(t.backorders).values(
                    order_id=order_id, skus=sorted(short), created_at=now, resolved_at=None
                )
                # A re-opened backorder keeps its created_at: the order keeps its place in the queue.
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[t.backorders.c.order_id],
                        set_={"skus": ins.excluded.skus, "resolved_at": None},
                    )
                )
                return ReservationOutcome(False, None, items, short)

            chosen = min(covering, key=lambda c: (-total(c), c))
            for sku, qty in items:
                result = await conn.execute(
                    update(sl)
                    .where(sl.c.sku == sku, sl.c.warehouse == chosen, sl.c.on_hand - sl.c.reserved >= qty)
                    .values(reserved=sl.c.reserved + qty)
                )
                if result.rowcount != 1:
                    raise _StockMoved  # rolls back the lines already reserved in this attempt
            ins = self._insert(t.reservations)
            # Rows released earlier (same order, sku, warehouse) are held again rather than duplicated.
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[
                        t.reservations.c.order_id,
                        t.reservations.c.sku,
                        t.reservations.c.warehouse,
                    ],
                    set_={
                        "quantity": ins.excluded.quantity,
                        "status": ins.excluded.status,
                        "updated_at": ins.excluded.updated_at,
                    },
                ),
                [
                    {
                        "order_id": order_id,
                        "sku": sku,
                        "warehouse": chosen,
                        "quantity": qty,
                        "status": "held",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for sku, qty in items
                ],
            )
            await self._add_ledger(
                conn, [(sku, chosen, 0, qty) for sku, qty in items], "reservation", order_id, "reserve", now
            )
            await self._resolve_backorder(conn, order_id, now)
            return ReservationOutcome(True, chosen, items, {})

        return await self._write(op, f"reserve order {order_id}")

    async def _resolve_backorder(self, conn: AsyncConnection, order_id: str, now: datetime) -> None:
        await conn.execute(
            update(t.backorders)
            .where(t.backorders.c.order_id == order_id, t.backorders.c.resolved_at.is_(None))
            .values(resolved_at=now)
        )

    async def _settle(self, order_id: str, *, to: str, kind: str, note: str, ships: bool) -> int:
        """Move the order's held reservations to `to`, giving the units back (release) or taking them out
        of on_hand (commit, `ships`). Idempotent: nothing held, nothing done."""
        _require_text("order_id", order_id)
        sl, rv = t.stock_levels, t.reservations

        async def op(conn: AsyncConnection) -> int:
            await self._lock_key(conn, f"order:{order_id}")
            held = (
                await conn.execute(
                    select(rv.c.id, rv.c.sku, rv.c.warehouse, rv.c.quantity)
                    .where(rv.c.order_id == order_id, rv.c.status == "held")
                    .order_by(rv.c.sku, rv.c.warehouse)
                )
            ).all()
            if not held:
                if kind == "release":  # a cancelled backordered order stops waiting too
                    await self._resolve_backorder(conn, order_id, _now())
                return 0
            now = _now()
            for r in held:
                values: dict[str, ColumnElement[int]] = {"reserved": sl.c.reserved - r.quantity}
                if ships:
                    values["on_hand"] = sl.c.on_hand - r.quantity
                await conn.execute(
                    update(sl).where(sl.c.sku == r.sku, sl.c.warehouse == r.warehouse).values(values)
                )
            await conn.execute(
                update(rv).where(rv.c.id.in_([r.id for r in held])).values(status=to, updated_at=now)
            )
            await self._add_ledger(
                conn,
                [(r.sku, r.warehouse, -r.quantity if ships else 0, -r.quantity) for r in held],
                kind,
                order_id,
                note,
                now,
            )
            if kind == "release":
                await self._resolve_backorder(conn, order_id, now)
            return sum(r.quantity for r in held)

        return await self._write(op, f"{kind} order {order_id}")

    async def release(self, order_id: str, *, note: str = "release") -> int:
        """Give back what the order holds (held -> released); also ends its backorder wait. Returns the units
        released, 0 if nothing was held. Idempotent."""
        return await self._settle(order_id, to="released", kind="release", note=note, ships=False)

    async def commit_reservation(self, order_id: str) -> int:
        """The goods left the building: held -> committed, on_hand and reserved both drop. Returns the units
        committed, 0 if nothing was held. Idempotent."""
        return await self._settle(order_id, to="committed", kind="commit", note="shipped", ships=True)

    async def backordered_orders(self, skus: Iterable[str] | None = None) -> list[str]:
        """Orders still waiting for stock (short on any of `skus`, or all), oldest first."""
        rows = await self._read(
            select(t.backorders.c.order_id, t.backorders.c.skus)
            .where(t.backorders.c.resolved_at.is_(None))
            .order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        )
        if skus is None:
            return [r.order_id for r in rows]
        wanted = {skus} if isinstance(skus, str) else set(skus)
        return [r.order_id for r in rows if wanted.intersection(r.skus)]

    async def backorders(self, *, include_resolved: bool = False) -> list[Backorder]:
        stmt = select(t.backorders).order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        if not include_resolved:
            stmt = stmt.where(t.backorders.c.resolved_at.is_(None))
        return [_backorder(r) for r in await self._read(stmt)]

    # -----------------------------------------------------------------------------------------------------
    # Pick tasks

    async def create_pick_task(
        self, order_id: str, attempt: int, warehouse: str, lines: Sequence[tuple[str, int]]
    ) -> PickTask:
        """A new open pick task, or the existing one for (order_id, attempt)."""
        _require_text("order_id", order_id)
        _require_int("attempt", attempt, minimum=0)
        _require_text("warehouse", warehouse)
        items = _normalize_lines(lines, merge=True)
        pt = t.pick_tasks

        async def existing(conn: AsyncConnection) -> PickTask | None:
            row = (
                await conn.execute(select(pt).where(pt.c.order_id == order_id, pt.c.attempt == attempt))
            ).first()
            return _pick_task(row) if row is not None else None

        async def op(conn: AsyncConnection) -> PickTask:
            task = await existing(conn)
            if task is not None:
                return task
            await self._resolve_warehouse(conn, warehouse)
            await self._require_skus(conn, [sku for sku, _ in items])
            now = _now()
            for _ in range(10):
                task_id = f"PICK-{secrets.token_hex(4).upper()}"
                result = await conn.execute(
                    self._insert(pt)
                    .values(
                        id=task_id,
                        order_id=order_id,
                        attempt=attempt,
                        warehouse=warehouse,
                        lines=[{"sku": s, "quantity": q} for s, q in items],
                        status="open",
                        created_at=now,
                        confirmed_at=None,
                    )
                    .on_conflict_do_nothing()
                )
                if result.rowcount == 1:
                    return PickTask(task_id, order_id, attempt, warehouse, items, "open", now, None)
                task = await existing(conn)  # a concurrent call won the (order, attempt) race
                if task is not None:
                    return task
                # else the random id collided with another task's: draw again
            raise StoreError(f"could not allocate a pick task id for order {order_id}")

        return await self._write(op, f"create pick task for order {order_id}")

    async def get_pick_task(self, task_id: str) -> PickTask | None:
        rows = await self._read(select(t.pick_tasks).where(t.pick_tasks.c.id == task_id))
        return _pick_task(rows[0]) if rows else None

    async def pick_tasks_for_order(self, order_id: str) -> list[PickTask]:
        stmt = (
            select(t.pick_tasks).where(t.pick_tasks.c.order_id == order_id).order_by(t.pick_tasks.c.attempt)
        )
        return [_pick_task(r) for r in await self._read(stmt)]

    async def open_pick_tasks(self, older_than_s: float | None = None) -> list[PickTask]:
        """Open tasks (created at least `older_than_s` seconds ago, if given), oldest first."""
        pt = t.pick_tasks
        stmt = select(pt).where(pt.c.status == "open").order_by(pt.c.created_at, pt.c.id)
        if older_than_s is not None:
            stmt = stmt.where(pt.c.created_at <= _now() - timedelta(seconds=older_than_s))
        return [_pick_task(r) for r in await self._read(stmt)]

    async def _close_pick_task(self, task_id: str, to: str) -> PickTask:
        pt = t.pick_tasks

        async def op(conn: AsyncConnection) -> PickTask:
            row = (await conn.execute(select(pt).where(pt.c.id == task_id))).first()
            if row is None:
                raise PickTaskNotFound(task_id)
            task = _pick_task(row)
            if task.status == to:
                return task
            if task.status != "open":
                raise PickTaskClosed(task_id, task.status)
            now = _now()
            values: dict[str, Any] = {"status": to}
            if to == "confirmed":
                values["confirmed_at"] = now
            await conn.execute(update(pt).where(pt.c.id == task_id, pt.c.status == "open").values(values))
            return PickTask(
                task.id,
                task.order_id,
                task.attempt,
                task.warehouse,
                task.lines,
                to,
                task.created_at,
                now if to == "confirmed" else None,
            )

        return await self._write(op, f"{to} pick task {task_id}")

    async def confirm_pick_task(self, task_id: str) -> PickTask:
        """open -> confirmed (idempotent). PickTaskNotFound, or PickTaskClosed if it was cancelled."""
        return await self._close_pick_task(task_id, "confirmed")

    async def cancel_pick_task(self, task_id: str) -> PickTask:
        """open -> cancelled (idempotent). PickTaskNotFound, or PickTaskClosed if it was already confirmed."""
        return await self._close_pick_task(task_id, "cancelled")

    # -----------------------------------------------------------------------------------------------------
    # Shipments (labels)

    async def get_shipment(self, key: str) -> ShipmentRecord | None:
        rows = await self._read(select(t.shipments).where(t.shipments.c.key == key))
        return _shipment(rows[0]) if rows else None

    async def shipments_for_order(self, order_id: str) -> list[ShipmentRecord]:
        stmt = (
            select(t.shipments)
            .where(t.shipments.c.order_id == order_id)
            .order_by(t.shipments.c.created_at, t.shipments.c.key)
        )
        return [_shipment(r) for r in await self._read(stmt)]

    async def record_carrier_shipment(
        self, key: str, order_id: str, carrier_shipment_id: str
    ) -> ShipmentRecord:
        """Record the carrier shipment created for `key` (status "created"). If `key` is already recorded,
        the existing record wins and is returned unchanged."""
        _require_text("shipment key", key)
        _require_text("order_id", order_id)
        _require_text("carrier_shipment_id", carrier_shipment_id)

        async def op(conn: AsyncConnection) -> ShipmentRecord:
            now = _now()
            await conn.execute(
                self._insert(t.shipments)
                .values(
                    key=key,
                    order_id=order_id,
                    carrier_shipment_id=carrier_shipment_id,
                    status="created",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[t.shipments.c.key])
            )
            return _shipment((await conn.execute(select(t.shipments).where(t.shipments.c.key == key))).one())

        return await self._write(op, f"record shipment {key}")

    async def record_label(
        self,
        key: str,
        *,
        carrier: str,
        service: str,
        rate_cents: int,
        tracking_number: str,
        label_url: str,
        tracking_url: str,
    ) -> ShipmentRecord:
        """The label for `key` was bought: status "purchased" with its details (idempotent)."""
        _require_int("rate_cents", rate_cents, minimum=0)
        sh = t.shipments

        async def op(conn: AsyncConnection) -> ShipmentRecord:
            row = (await conn.execute(select(sh.c.status).where(sh.c.key == key))).first()
            if row is None:
                raise ShipmentNotFound(key)
            if row.status == "voided":
                raise StoreError(f"shipment {key!r} was voided; buy under a new shipment number")
            await conn.execute(
                update(sh)
                .where(sh.c.key == key)
                .values(
                    status="purchased",
                    carrier=carrier,
                    service=service,
                    rate_cents=rate_cents,
                    tracking_number=tracking_number,
                    label_url=label_url,
                    tracking_url=tracking_url,
                    updated_at=_now(),
                )
            )
            return _shipment((await conn.execute(select(sh).where(sh.c.key == key))).one())

        return await self._write(op, f"record label {key}")

    async def mark_shipment_voided(self, key: str) -> ShipmentRecord:
        """The label for `key` was refunded/voided (idempotent)."""
        sh = t.shipments

        async def op(conn: AsyncConnection) -> ShipmentRecord:
            await conn.execute(
                update(sh)
                .where(sh.c.key == key, sh.c.status != "voided")
                .values(status="voided", updated_at=_now())
            )
            row = (await conn.execute(select(sh).where(sh.c.key == key))).first()
            if row is None:
                raise ShipmentNotFound(key)
            return _shipment(row)

        return await self._write(op, f"void shipment {key}")

    # -----------------------------------------------------------------------------------------------------
    # Notification delivery log: one message per (order, event, channel)

    async def claim_notification(
        self,
        key: str,
        *,
        order_id: str,
        event: str,
        channel: str,
        recipient: str,
        subject: str | None,
        body: str,
    ) -> bool:
        """True if the caller should send now. False once `key` was sent. A key left "sending" (the sender
        crashed) or "failed" is claimed again, counting the attempt."""
        _require_text("notification key", key)
        n = t.notifications

        async def op(conn: AsyncConnection) -> bool:
            fields = {"recipient": recipient, "subject": subject, "body": body}
            inserted = await conn.execute(
                self._insert(n)
                .values(
                    key=key,
                    order_id=order_id,
                    event=event,
                    channel=channel,
                    status="sending",
                    attempts=1,
                    created_at=_now(),
                    **fields,
                )
                .on_conflict_do_nothing(index_elements=[n.c.key])
            )
            if inserted.rowcount == 1:
                return True
            # Conditional, so a concurrent "sent" is never claimed again.
            reclaimed = await conn.execute(
                update(n)
                .where(n.c.key == key, n.c.status != "sent")
                .values(status="sending", attempts=n.c.attempts + 1, error=None, **fields)
            )
            return reclaimed.rowcount == 1

        return await self._write(op, f"claim notification {key}")

    async def mark_notification_sent(self, key: str, provider_message_id: str) -> None:
        n = t.notifications

        async def op(conn: AsyncConnection) -> None:
            result = await conn.execute(
                update(n)
                .where(n.c.key == key)
                .values(status="sent", provider_message_id=provider_message_id, error=None, sent_at=_now())
            )
            if result.rowcount != 1:
                raise NotificationNotFound(key)

        await self._write(op, f"mark notification {key} sent")

    async def mark_notification_failed(self, key: str, error: str) -> None:
        """Record why sending failed; a later claim may try again. Never downgrades a "sent" message."""
        n = t.notifications

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(n).where(n.c.key == key, n.c.status != "sent").values(status="failed", error=error)
            )
            exists = (
                await conn.execute(select(func.count()).select_from(n).where(n.c.key == key))
            ).scalar_one()
            if not exists:
                raise NotificationNotFound(key)

        await self._write(op, f"mark notification {key} failed")

    async def notifications(self, order_id: str | None = None) -> list[NotificationRecord]:
        stmt = select(t.notifications).order_by(t.notifications.c.created_at, t.notifications.c.key)
        if order_id is not None:
            stmt = stmt.where(t.notifications.c.order_id == order_id)
        return [_notification(r) for r in await self._read(stmt)]
