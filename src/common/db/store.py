"""Every database operation the activities, the CLI and the client need, behind one async `Store`.

Rules the methods keep:
- Each call is one transaction on its own pooled connection; a method never leaves partial changes.
- Every stock change writes a `stock_ledger` row in the same transaction as the change.
- Side-effect bookkeeping is idempotent by business key (order id, (order, attempt), label key,
  notification key), so activity retries and replays never double-reserve, double-buy or double-send.
- Write transactions on SQLite start with BEGIN IMMEDIATE (writers queue on the busy timeout instead of
  failing halfway) and run on the Store's writer thread (SqliteFileWriter), so the write lock is held for
  the SQL alone (write transactions await nothing but `conn.execute`); on PostgreSQL they run at READ
  COMMITTED, and every one takes its locks in one fixed order: order advisory locks first (sorted by order
  id), then stock rows in (sku, warehouse) order (a pick task row is only locked or changed under its order's
  lock). What a decision rests on is read under those locks. Lock/deadlock/serialization errors retry the
  whole transaction a few times (`Store.retries` counts them).
- Bad input raises ValueError or a StoreError subclass with a clear message and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Table,
    and_,
    case,
    func,
    or_,
    select,
    text,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.db import tables as t
from common.db.engine import SQLITE_BEGIN_OPTION, SqliteFileWriter, create_engine, run_migrations
from common.inventory.allocation import Site, choose_warehouse, missing, plan_split
from common.models import PickShortage, ReservationReleased, workflow_id_for

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
    lead_time_days: int | None = None  # supplier lead time; None: the planning default
    dimensions_mm: tuple[int, int, int] | None = None  # length, width, height


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
    # SKUs of this order whose available stock is at or below its reorder point with ops not yet alerted
    # (see `low_stock_crossings`): the caller should run the low-stock alert for them.
    low_stock: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Allocation:
    """What `allocate` reserved: one or more shipments, and what is still missing (backordered)."""

    # (shipment no, warehouse, [(sku, qty), ...]) in shipment order
    shipments: list[tuple[int, str, list[tuple[str, int]]]]
    # sku -> units not reserved (all warehouses together lack them); empty when the whole request is reserved
    short: dict[str, int]
    low_stock: list[str] = field(default_factory=list)


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
    shipment_no: int = 1


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    sku: str
    warehouse: str
    delta_on_hand: int
    delta_reserved: int
    kind: str  # receipt | reservation | release | commit | adjustment | count | return
    ref: str | None
    note: str
    at: datetime


@dataclass(frozen=True)
class StockChange:
    """What a count or an adjustment did to one SKU in one warehouse."""

    sku: str
    warehouse: str
    previous_on_hand: int
    on_hand: int
    reserved: int
    delta: int
    # Orders whose held reservations were released (newest first) because on hand fell below reserved.
    released_orders: list[str]
    ledger_id: int
    # order id -> the shipments it released (those not picked yet); their open pick tasks were cancelled, and
    # each order was sent `reservation_released` through the order-signal outbox, all in the same transaction.
    released_shipments: dict[str, list[int]] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class PurchaseOrder:
    """An expected receipt: `quantity` of `sku` due at `warehouse` (by `eta`, if known)."""

    id: str
    sku: str
    warehouse: str
    quantity: int
    received_quantity: int
    eta: date | None
    status: str  # open | received | cancelled
    note: str
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True)
class InventoryPosition:
    """The real-time view of one SKU in one warehouse."""

    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    available: int
    incoming: int  # open purchase orders
    next_eta: date | None
    reorder_point: int | None


@dataclass(frozen=True)
class LowStockCrossing:
    """Available stock fell to or below the reorder point; open until it rises above it again."""

    id: int
    sku: str
    warehouse: str
    available: int
    reorder_point: int
    crossed_at: datetime
    rearmed_at: datetime | None
    alerted_at: datetime | None


@dataclass(frozen=True)
class DemandRecord:
    """Units an order reserved (held or committed), for demand forecasting."""

    sku: str
    warehouse: str
    at: datetime
    quantity: int


@dataclass(frozen=True)
class ProductImport:
    row: int  # line in the source file, for error messages
    sku: str
    name: str
    price_cents: int
    weight_grams: int
    dimensions_mm: tuple[int, int, int] | None = None
    lead_time_days: int | None = None


@dataclass(frozen=True)
class WarehouseImport:
    row: int
    code: str
    name: str
    country: str
    region: str | None


@dataclass(frozen=True)
class StockImport:
    row: int
    sku: str
    warehouse: str
    on_hand: int


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class Backorder:
    order_id: str
    skus: list[str]
    created_at: datetime
    resolved_at: datetime | None
    # sku -> units the order needs of it to go ahead (0: unknown, from before this was recorded)
    needs: dict[str, int] = field(default_factory=dict)


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
    # sku -> units the picker could not find (a short pick), recorded with the confirmation
    short: dict[str, int] = field(default_factory=dict)
    # When a stock count or adjustment released this shipment's reservation and so cancelled the task
    released_at: datetime | None = None


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


@dataclass(frozen=True)
class OrderSignal:
    """A signal or update for an order's workflow in the outbox: written in the transaction of the change it
    reports, delivered afterwards by `common.order_signals.deliver_order_signals`, in id order per workflow."""

    id: int
    workflow_id: str
    kind: str  # signal | update
    name: str
    payload: Any  # the one argument, as JSON
    created_at: datetime
    attempts: int
    delivered_at: datetime | None = None
    last_error: str | None = None
    note: str | None = None


class _KnownNotification(Exception):
    """Control flow in `Store.claim_notifications`: a key is already in the log."""


@dataclass(frozen=True)
class NotificationClaim:
    """One message to claim in the delivery log before sending it (see `Store.claim_notifications`)."""

    key: str
    order_id: str
    event: str
    channel: str
    recipient: str
    subject: str | None
    body: str


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


class ShipmentReleased(StoreError):
    """The shipment's reservation is no longer held (a stock count or adjustment released it): no pick task,
    no confirmation, nothing to ship."""

    def __init__(self, order_id: str, shipment_no: int) -> None:
        self.order_id = order_id
        self.shipment_no = shipment_no
        super().__init__(
            f"shipment {shipment_no} of order {order_id} lost its reservation (released by a stock count or "
            "adjustment): do not pick or ship it; the order re-reserves its goods or waits for stock"
        )


class ShipmentNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no shipment recorded under {key!r}")


class NotificationNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no notification claimed under {key!r}")


class PurchaseOrderNotFound(StoreError):
    def __init__(self, po: str) -> None:
        self.po = po
        super().__init__(f"no purchase order {po!r}")


class PurchaseOrderClosed(StoreError):
    def __init__(self, po: str, status: str) -> None:
        self.po = po
        self.status = status
        super().__init__(f"purchase order {po!r} is already {status}")


class InvalidRows(StoreError):
    """Rows of an import that cannot be written; nothing was written. `problems` lists them all."""

    def __init__(self, problems: Sequence[str], what: str = "imported") -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        listing = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} {noun}, nothing was {what}:{listing}")


class _StockMoved(Exception):
    """A conditional stock update found less available than the read before it; the attempt is retried."""


# ---------------------------------------------------------------------------------------------------------
# Retry policy for write transactions

MAX_TRANSIENT_ATTEMPTS = 8  # database locked / deadlock / serialization failure
MAX_STOCK_MOVED_ATTEMPTS = 10
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database schema has changed")


def _transient_reason(exc: DBAPIError) -> str | None:
    """Why a failed statement is worth retrying the transaction for (a SQLSTATE, or "sqlite busy"), or None."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return str(sqlstate)
    message = str(orig).lower()
    return "sqlite busy" if any(m in message for m in _TRANSIENT_SQLITE) else None


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
    dims = (r.length_mm, r.width_mm, r.height_mm)
    return Product(
        r.sku,
        r.name,
        r.price_cents,
        r.weight_grams,
        r.created_at,
        r.lead_time_days,
        (dims[0], dims[1], dims[2]) if None not in dims else None,
    )


def _warehouse(r: Row[Any]) -> Warehouse:
    return Warehouse(r.code, r.name, r.country, r.region)


def _stock(r: Row[Any]) -> StockLevel:
    return StockLevel(r.sku, r.warehouse, r.on_hand, r.reserved, r.on_hand - r.reserved)


def _reservation(r: Row[Any]) -> Reservation:
    return Reservation(
        r.id, r.order_id, r.sku, r.warehouse, r.quantity, r.status, r.created_at, r.updated_at, r.shipment_no
    )


def _purchase_order(r: Row[Any]) -> PurchaseOrder:
    return PurchaseOrder(
        r.id, r.sku, r.warehouse, r.quantity, r.received_quantity, r.eta, r.status, r.note, r.created_at, r.closed_at
    )


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _crossing(r: Row[Any]) -> LowStockCrossing:
    return LowStockCrossing(
        r.id, r.sku, r.warehouse, r.available, r.reorder_point, r.crossed_at, r.rearmed_at, r.alerted_at
    )


def _ledger(r: Row[Any]) -> LedgerEntry:
    return LedgerEntry(r.id, r.sku, r.warehouse, r.delta_on_hand, r.delta_reserved, r.kind, r.ref, r.note, r.at)


def _pick_task(r: Row[Any]) -> PickTask:
    lines = [(str(line["sku"]), int(line["quantity"])) for line in r.lines]
    short = {str(line["sku"]): int(line["short"]) for line in r.lines if line.get("short")}
    return PickTask(
        r.id, r.order_id, r.attempt, r.warehouse, lines, r.status, r.created_at, r.confirmed_at, short, r.released_at
    )


def _order_signal(r: Row[Any]) -> OrderSignal:
    return OrderSignal(
        r.id, r.workflow_id, r.kind, r.name, r.payload, r.created_at, r.attempts, r.delivered_at, r.last_error, r.note
    )


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
    needs = _backorder_needs(r.skus)
    return Backorder(r.order_id, sorted(needs), r.created_at, r.resolved_at, needs)


def _picked() -> ColumnElement[bool]:
    """A reservation row whose shipment's pick is confirmed: its units are packed, off the shelf (the pick
    task of shipment n is the order's attempt n)."""
    rv, pt = t.reservations, t.pick_tasks
    return (
        select(pt.c.id)
        .where(pt.c.order_id == rv.c.order_id, pt.c.attempt == rv.c.shipment_no, pt.c.status == "confirmed")
        .exists()
    )


def _serve_in_order(
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


def _backorder_needs(stored: Any) -> dict[str, int]:
    """The `skus` column holds {sku: units needed}; rows from before quantities were kept hold a list."""
    if isinstance(stored, dict):
        return {str(k): int(v) for k, v in stored.items()}
    return {str(sku): 0 for sku in stored}


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
        # A SQLite file is written through a thread of its own (see SqliteFileWriter). An in-memory database
        # is written through the async engine, and this process's writers queue on an asyncio lock, cheaper
        # than SQLite's sleep-and-poll busy handler (other processes still queue on busy_timeout).
        sqlite_db = self._dialect == "sqlite"
        self._file_writer = SqliteFileWriter.for_url(engine.url) if sqlite_db else None
        self._sqlite_write_lock = asyncio.Lock() if sqlite_db and self._file_writer is None else None
        # Transactions retried, by reason: a deadlock (40P01) here means two operations took locks in
        # different orders, which the locking rules below exist to prevent.
        self._retries: Counter[str] = Counter()

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
        writer, self._file_writer = self._file_writer, None  # closing twice is harmless
        if writer is not None:
            await writer.close()
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

    @property
    def retries(self) -> dict[str, int]:
        """Write transactions this Store retried so far, by reason: a PostgreSQL SQLSTATE ("40P01" deadlock,
        "40001" serialization failure, "55P03" lock not available), "sqlite busy", or "stock moved" (a
        conditional stock update found less than the read before it)."""
        return dict(self._retries)

    # -----------------------------------------------------------------------------------------------------
    # Transactions

    async def _write(self, op: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        """Run `op` in one write transaction, retrying the whole transaction on transient lock errors."""
        transient = moved = 0
        while True:
            try:
                if self._file_writer is not None:
                    return await self._file_writer.run(op)
                lock = self._sqlite_write_lock or contextlib.nullcontext()
                async with lock, self._writer.begin() as conn:
                    return await op(conn)
            except _StockMoved as exc:
                moved += 1
                self._retries["stock moved"] += 1
                if moved >= MAX_STOCK_MOVED_ATTEMPTS:
                    raise StoreError(f"{what}: stock kept changing underneath, gave up after {moved} tries") from exc
                await asyncio.sleep(_backoff(moved))
            except DBAPIError as exc:
                transient += 1
                reason = _transient_reason(exc)
                if reason is None or transient >= MAX_TRANSIENT_ATTEMPTS:
                    raise
                self._retries[reason] += 1
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
        found = set((await conn.execute(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))).scalars())
        if wanted - found:
            raise UnknownSkuError(sorted(wanted - found))

    async def _resolve_warehouse(self, conn: AsyncConnection, code: str | None) -> str:
        codes = list((await conn.execute(select(t.warehouses.c.code).order_by(t.warehouses.c.code))).scalars())
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

    async def upsert_product(
        self,
        sku: str,
        name: str,
        price_cents: int,
        weight_grams: int,
        *,
        lead_time_days: int | None = None,
        dimensions_mm: tuple[int, int, int] | None = None,
    ) -> None:
        """Create or update a product; `lead_time_days` and `dimensions_mm` are only changed when given."""
        _require_text("sku", sku)
        _require_text("name", name)
        _require_int("price_cents", price_cents, minimum=0)
        _require_int("weight_grams", weight_grams, minimum=1)
        extra: dict[str, int] = {}
        if lead_time_days is not None:
            extra["lead_time_days"] = _require_int("lead_time_days", lead_time_days, minimum=0)
        if dimensions_mm is not None:
            length, width, height = (_require_int("dimensions_mm", d, minimum=1) for d in dimensions_mm)
            extra.update(length_mm=length, width_mm=width, height_mm=height)

        async def op(conn: AsyncConnection) -> None:
            ins = self._insert(t.products).values(
                sku=sku, name=name, price_cents=price_cents, weight_grams=weight_grams, created_at=_now(), **extra
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.products.c.sku],
                    set_={
                        "name": ins.excluded.name,
                        "price_cents": ins.excluded.price_cents,
                        "weight_grams": ins.excluded.weight_grams,
                        **{column: getattr(ins.excluded, column) for column in extra},
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
        found = {r.sku for r in await self._read(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))}
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
        po: str | None = None,
    ) -> StockLevel:
        """Add `qty` units of `sku` to `warehouse` (None: the first warehouse by code, or the purchase
        order's). With `po`, the receipt closes that open purchase order (which must be for this SKU and
        warehouse); the ledger ref is then the PO id unless `ref` is given. Locking: the one stock row (no
        order lock)."""
        _require_text("sku", sku)
        _require_int("quantity received", qty, minimum=1)
        if po is not None:
            _require_text("purchase order id", po)

        async def op(conn: AsyncConnection) -> StockLevel:
            await self._require_skus(conn, [sku])
            code = warehouse
            ledger_ref = ref
            now = _now()
            if po is not None:
                order = await self._open_purchase_order(conn, po)
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
            code = await self._resolve_warehouse(conn, code)
            ins = self._insert(t.stock_levels).values(sku=sku, warehouse=code, on_hand=qty, reserved=0)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.stock_levels.c.sku, t.stock_levels.c.warehouse],
                    set_={"on_hand": t.stock_levels.c.on_hand + ins.excluded.on_hand},
                )
            )
            await self._add_ledger(conn, [(sku, code, qty, 0)], "receipt", ledger_ref, note, now)
            await self._track_low_stock(conn, [(sku, code)], now)
            return await self._level(conn, sku, code)

        return await self._write(op, f"receive {qty} x {sku}")

    async def return_stock(
        self, sku: str, qty: int, warehouse: str | None = None, *, ref: str, note: str = "customer return"
    ) -> StockLevel:
        """Goods back from a customer (`ref`: the RMA or order id) go back on hand: a "return" ledger row.
        Idempotent by (ref, sku, warehouse): a retried call adds nothing. Locking: the return's advisory lock,
        then the one stock row (no order lock)."""
        _require_text("sku", sku)
        _require_int("quantity returned", qty, minimum=1)
        _require_text("return reference", ref)
        lg = t.stock_ledger

        async def op(conn: AsyncConnection) -> StockLevel:
            await self._require_skus(conn, [sku])
            code = await self._resolve_warehouse(conn, warehouse)
            await self._lock_key(conn, f"return:{ref}")
            done = (
                await conn.execute(
                    select(lg.c.id).where(
                        lg.c.kind == "return", lg.c.ref == ref, lg.c.sku == sku, lg.c.warehouse == code
                    )
                )
            ).first()
            if done is None:
                now = _now()
                ins = self._insert(t.stock_levels).values(sku=sku, warehouse=code, on_hand=qty, reserved=0)
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[t.stock_levels.c.sku, t.stock_levels.c.warehouse],
                        set_={"on_hand": t.stock_levels.c.on_hand + ins.excluded.on_hand},
                    )
                )
                await self._add_ledger(conn, [(sku, code, qty, 0)], "return", ref, note, now)
                await self._track_low_stock(conn, [(sku, code)], now)
            return await self._level(conn, sku, code)

        return await self._write(op, f"return {qty} x {sku}")

    async def count_stock(
        self, sku: str, warehouse: str, counted: int, *, reason: str | None = None, ref: str | None = None
    ) -> StockChange:
        """A physical count: on hand becomes `counted`, the difference is a "count" ledger row with the
        reason. If fewer units are on hand than reserved, held reservations of whole orders are released,
        newest order first, until the rest fit; those orders (returned in `released_orders`) are back to
        waiting for stock (backordered). Negative counts, unknown SKU or warehouse: an error, nothing changed.
        Locking: see `_set_on_hand`."""
        _require_text("sku", sku)
        _require_text("warehouse", warehouse)
        _require_int("counted quantity", counted, minimum=0)
        note = f"count: {reason}" if reason and reason.strip() else "count"

        def target(_on_hand: int, packed: int) -> int:
            # Units already picked into parcels waiting for the carrier are off the shelf but still ours.
            return counted + packed

        def counted_note(packed: int) -> str:
            return f"{note} (+{packed} in packed parcels)" if packed else note

        async def op(conn: AsyncConnection) -> StockChange:
            await self._require_skus(conn, [sku])
            await self._require_warehouse(conn, warehouse)
            return await self._set_on_hand(conn, sku, warehouse, target, "count", counted_note, ref, reason=note)

        return await self._write(op, f"count {sku} at {warehouse}")

    async def adjust_stock(
        self, sku: str, warehouse: str, delta: int, *, reason: str, ref: str | None = None
    ) -> StockChange:
        """Correct on hand by `delta` (damage, loss, found stock) with a reason: an "adjustment" ledger row.
        Going below what is reserved releases reservations like `count_stock`; below zero is an error.
        Locking: see `_set_on_hand`."""
        _require_text("sku", sku)
        _require_text("warehouse", warehouse)
        _require_text("reason", reason)
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
            await self._require_skus(conn, [sku])
            await self._require_warehouse(conn, warehouse)
            return await self._set_on_hand(
                conn, sku, warehouse, target, "adjustment", lambda _: reason, ref, reason=reason
            )

        return await self._write(op, f"adjust {sku} at {warehouse}")

    async def _set_on_hand(
        self,
        conn: AsyncConnection,
        sku: str,
        warehouse: str,
        target: Callable[[int, int], int],
        kind: str,
        note: Callable[[int], str],
        ref: str | None,
        *,
        reason: str = "",
        release_excess: bool = True,
        skip_unchanged: bool = False,
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
        sl = t.stock_levels
        now = _now()
        # A first count or import at a warehouse creates the row (a concurrent receipt may create it too).
        # A row created here has nothing reserved, so no order lock can be needed after this row's lock.
        await conn.execute(
            self._insert(sl).values(sku=sku, warehouse=warehouse, on_hand=0, reserved=0).on_conflict_do_nothing()
        )
        locked: list[str] = []
        if release_excess:
            level = (
                await conn.execute(
                    select(sl.c.on_hand, sl.c.reserved).where(sl.c.sku == sku, sl.c.warehouse == warehouse)
                )
            ).one()
            wanted = target(level.on_hand, await self._picked_units(conn, sku, warehouse))
            if wanted < level.reserved:
                locked = sorted(await self._orders_to_release(conn, sku, warehouse, level.reserved - wanted))
                for order_id in locked:
                    await self._lock_key(conn, f"order:{order_id}")
        rows = await self._lock_stock_rows(conn, {(sku, warehouse)} | await self._unpicked_keys(conn, locked))
        previous, reserved = rows[(sku, warehouse)]
        packed = await self._picked_units(conn, sku, warehouse)
        new = target(previous, packed)
        released: list[str] = []
        shipments: dict[str, list[int]] = {}
        touched = {(sku, warehouse)}
        if new < reserved:
            if not release_excess:
                raise StoreError(
                    f"{sku} at {warehouse}: {new} on hand would be less than the {reserved} units reserved"
                )
            to_release = await self._orders_to_release(conn, sku, warehouse, reserved - new)
            if not set(to_release) <= set(locked):
                raise _StockMoved  # reservations changed before the locks: again, with the orders locked first
            for order_id in to_release:
                keys, shipments[order_id] = await self._release_order(
                    conn, order_id, sku, warehouse, note(packed), reason, now
                )
                touched |= keys
                released.append(order_id)
            reserved = (
                await conn.execute(select(sl.c.reserved).where(sl.c.sku == sku, sl.c.warehouse == warehouse))
            ).scalar_one()
            if new < reserved:  # what is left is packed in parcels: those units exist, the change cannot be right
                raise StoreError(
                    f"{sku} at {warehouse}: {reserved} units are packed in parcels waiting for the carrier, so on "
                    f"hand cannot be {new}; nothing changed"
                )
        delta = new - previous
        ledger_id = 0
        if delta or not skip_unchanged:
            result = await conn.execute(
                update(sl)
                .where(sl.c.sku == sku, sl.c.warehouse == warehouse, sl.c.on_hand == previous)
                .values(on_hand=new)
            )
            if result.rowcount != 1:
                raise _StockMoved
            ledger_id = await self._ledger_row(conn, sku, warehouse, delta, 0, kind, ref, note(packed), now)
        await self._track_low_stock(conn, touched, now)
        return StockChange(sku, warehouse, previous, new, reserved, delta, released, ledger_id, shipments)

    async def _lock_stock_rows(
        self, conn: AsyncConnection, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Lock these stock rows (FOR UPDATE, in (sku, warehouse) order: the rule of `_set_on_hand`);
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

    async def _picked_units(self, conn: AsyncConnection, sku: str, warehouse: str) -> int:
        """Units of `sku` at `warehouse` held by shipments whose pick is confirmed (packed, not shipped yet)."""
        rv = t.reservations
        picked = _picked()
        total = await conn.execute(
            select(func.coalesce(func.sum(rv.c.quantity), 0)).where(
                rv.c.sku == sku, rv.c.warehouse == warehouse, rv.c.status == "held", picked
            )
        )
        return int(total.scalar_one())

    async def _orders_to_release(self, conn: AsyncConnection, sku: str, warehouse: str, excess: int) -> list[str]:
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

    async def _unpicked_keys(self, conn: AsyncConnection, orders: Sequence[str]) -> set[tuple[str, str]]:
        """(sku, warehouse) of the held reservations of these orders' shipments not picked yet."""
        if not orders:
            return set()
        rv = t.reservations
        rows = await conn.execute(
            select(rv.c.sku, rv.c.warehouse)
            .where(rv.c.order_id.in_(orders), rv.c.status == "held", ~_picked())
            .distinct()
        )
        return {(r.sku, r.warehouse) for r in rows}

    async def _release_order(
        self, conn: AsyncConnection, order_id: str, sku: str, warehouse: str, why: str, reason: str, now: datetime
    ) -> tuple[set[tuple[str, str]], list[int]]:
        """Release the held reservations of the order's shipments not picked yet (a stock change of `sku` at
        `warehouse` took their units), cancel those shipments' open pick tasks (pick task n is shipment n) so
        nobody picks goods that are not there, and tell the order: `reservation_released` in the outbox. The
        order waits for stock again (backorder row). The caller holds the order's lock and the stock rows'.
        Returns every (sku, warehouse) whose reservations changed, and the shipments released."""
        rv, sl, pt = t.reservations, t.stock_levels, t.pick_tasks
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
        await conn.execute(
            update(rv).where(rv.c.id.in_([r.id for r in held])).values(status="released", updated_at=now)
        )
        await self._add_ledger(
            conn,
            [(r.sku, r.warehouse, 0, -r.quantity) for r in held],
            "release",
            order_id,
            f"stock short at {warehouse} after {why}",
            now,
        )
        # It waits for the units the change took; a re-allocation records what else it is short of.
        await self._open_backorder(conn, order_id, {sku: sum(r.quantity for r in held if r.sku == sku)}, now)
        shipments = sorted({r.shipment_no for r in held})
        await conn.execute(
            update(pt)
            .where(pt.c.order_id == order_id, pt.c.attempt.in_(shipments), pt.c.status == "open")
            .values(status="cancelled", released_at=now)
        )
        message = ReservationReleased(sku=sku, warehouse=warehouse, shipments=shipments, reason=reason)
        await self._add_order_signal(
            conn, order_id, "signal", "reservation_released", message.model_dump(mode="json"), now
        )
        return {(r.sku, r.warehouse) for r in held}, shipments

    async def _add_order_signal(
        self, conn: AsyncConnection, order_id: str, kind: str, name: str, payload: Any, now: datetime
    ) -> int:
        """Put a signal or update for the order's workflow in the outbox, in the caller's transaction. The
        caller holds the order's advisory lock, so one workflow's rows are numbered in commit order and the
        relay delivers them in the order they happened."""
        result = await conn.execute(
            t.order_signals.insert().values(
                workflow_id=workflow_id_for(order_id),
                kind=kind,
                name=name,
                payload=payload,
                created_at=now,
                attempts=0,
            )
        )
        return _inserted_id(result)

    async def _shipment_status(self, conn: AsyncConnection, order_id: str, shipment_no: int) -> str:
        """The shipment's reservation status: held if it holds any reservation, else committed if it shipped,
        released if it had reservations and lost them all, none if it never had any."""
        rv = t.reservations
        statuses = set(
            (
                await conn.execute(
                    select(rv.c.status).where(rv.c.order_id == order_id, rv.c.shipment_no == shipment_no).distinct()
                )
            ).scalars()
        )
        return next((s for s in ("held", "committed", "released") if s in statuses), "none")

    async def orders_holding_resources(self, order_ids: Iterable[str] | None = None) -> list[str]:
        """Orders (of `order_ids`, or all) that still hold something a closed order must give back, sorted:
        held reservations, open pick tasks, or an open backorder (which keeps its place in the restock queue).
        For the sweeper of orders whose workflow ended without compensating; a label is only worth undoing
        where its shipment's reservation is still held, so labels are found through those."""
        rv, pt, bo = t.reservations, t.pick_tasks, t.backorders
        holding = union(
            select(rv.c.order_id).where(rv.c.status == "held"),
            select(pt.c.order_id).where(pt.c.status == "open"),
            select(bo.c.order_id).where(bo.c.resolved_at.is_(None)),
        ).subquery()
        stmt = select(holding.c.order_id).order_by(holding.c.order_id)
        if order_ids is not None:
            stmt = stmt.where(holding.c.order_id.in_(list(order_ids)))
        return [r.order_id for r in await self._read(stmt)]

    async def shipment_reservation_status(self, order_id: str, shipment_no: int) -> str:
        """Where the shipment's stock stands: "held" (reserved, or packed and waiting for the carrier),
        "committed" (shipped), "released" (it lost its reservation, e.g. to a stock count, or the order gave it
        back), "none" (nothing was ever reserved for it)."""
        _require_text("order_id", order_id)
        _require_int("shipment_no", shipment_no, minimum=0)
        async with self._engine.connect() as conn:
            return await self._shipment_status(conn, order_id, shipment_no)

    async def _level(self, conn: AsyncConnection, sku: str, warehouse: str) -> StockLevel:
        sl = t.stock_levels
        row = (await conn.execute(select(sl).where(sl.c.sku == sku, sl.c.warehouse == warehouse))).one()
        return _stock(row)

    async def _ledger_row(
        self,
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
        return _inserted_id(result)

    async def _require_warehouse(self, conn: AsyncConnection, code: str) -> None:
        await self._resolve_warehouse(conn, code)

    async def stock_levels(self, sku: str | None = None, warehouse: str | None = None) -> list[StockLevel]:
        stmt = select(t.stock_levels).order_by(t.stock_levels.c.sku, t.stock_levels.c.warehouse)
        if sku is not None:
            stmt = stmt.where(t.stock_levels.c.sku == sku)
        if warehouse is not None:
            stmt = stmt.where(t.stock_levels.c.warehouse == warehouse)
        return [_stock(r) for r in await self._read(stmt)]

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
        async with self._engine.connect() as conn:
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
        return [_ledger(r) for r in await self._read(stmt)]

    async def stock_history(self, sku: str, warehouse: str | None = None, *, limit: int = 50) -> list[LedgerEntry]:
        """The latest `limit` ledger rows of `sku` (at `warehouse`), newest first. Unknown SKU or
        warehouse: an error."""
        _require_text("sku", sku)
        _require_int("limit", limit, minimum=1)
        lg = t.stock_ledger
        stmt = select(lg).where(lg.c.sku == sku).order_by(lg.c.id.desc()).limit(limit)
        if warehouse is not None:
            stmt = stmt.where(lg.c.warehouse == warehouse)
        async with self._engine.connect() as conn:
            await self._require_skus(conn, [sku])
            if warehouse is not None:
                await self._require_warehouse(conn, warehouse)
            return [_ledger(r) for r in (await conn.execute(stmt)).all()]

    async def reservations(self, order_id: str | None = None) -> list[Reservation]:
        stmt = select(t.reservations).order_by(t.reservations.c.id)
        if order_id is not None:
            stmt = stmt.where(t.reservations.c.order_id == order_id)
        return [_reservation(r) for r in await self._read(stmt)]

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
        return [DemandRecord(r.sku, r.warehouse, r.created_at, r.quantity) for r in await self._read(stmt)]

    # -----------------------------------------------------------------------------------------------------
    # Reservations

    async def _sites(self, conn: AsyncConnection) -> list[Site]:
        rows = (
            await conn.execute(
                select(t.warehouses.c.code, t.warehouses.c.country, t.warehouses.c.region).order_by(t.warehouses.c.code)
            )
        ).all()
        return [Site(r.code, r.country, r.region) for r in rows]

    async def _availability(
        self, conn: AsyncConnection, skus: Sequence[str], *, lock: bool, warehouse: str | None = None
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
        _require_text("order_id", order_id)
        items = _normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]

        async def op(conn: AsyncConnection) -> ReservationOutcome:
            await self._lock_key(conn, f"order:{order_id}")
            existing = await self._existing_reservations(conn, order_id, None)
            if existing:
                waiting = await self._pending_low_stock(conn, {(r.sku, r.warehouse) for r in existing})
                return ReservationOutcome(
                    True, existing[0].warehouse, [(r.sku, r.quantity) for r in existing], {}, waiting
                )

            await self._require_skus(conn, skus)
            sites = await self._sites(conn)
            available = await self._availability(conn, skus, lock=True)
            now = _now()
            chosen = choose_warehouse(sites, available, items, prefer_country, prefer_region)
            if chosen is None:
                codes = [s.code for s in sites]

                def total(code: str) -> int:
                    return sum(available.get(code, {}).get(sku, 0) for sku in skus)

                def short_in(code: str) -> dict[str, int]:
                    return missing(available.get(code, {}), items)

                best = min(codes, key=lambda c: (sum(short_in(c).values()), -total(c), c)) if codes else None
                short = short_in(best) if best is not None else dict(items)
                await self._open_backorder(conn, order_id, {sku: dict(items)[sku] for sku in short}, now)
                return ReservationOutcome(False, None, items, short)

            await self._hold(conn, order_id, 1, chosen, items, now)
            await self._resolve_backorder(conn, order_id, now)
            pending: set[str] = set()
            await self._track_low_stock(conn, [(sku, chosen) for sku in skus], now, pending)
            return ReservationOutcome(True, chosen, items, {}, sorted(pending))

        return await self._write(op, f"reserve order {order_id}")

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
        items = _normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]
        async with self._engine.connect() as conn:
            await self._require_skus(conn, skus)
            sites = await self._sites(conn)
            available = await self._availability(conn, skus, lock=False)
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
        _require_text("order_id", order_id)
        _require_int("shipment_no", shipment_no, minimum=1)
        _require_text("warehouse", warehouse)
        items = _normalize_lines(lines, merge=True)
        skus = [sku for sku, _ in items]

        async def op(conn: AsyncConnection) -> ReservationOutcome:
            await self._lock_key(conn, f"order:{order_id}")
            existing = await self._existing_reservations(conn, order_id, shipment_no)
            if existing:
                waiting = await self._pending_low_stock(conn, {(r.sku, r.warehouse) for r in existing})
                return ReservationOutcome(
                    True, existing[0].warehouse, [(r.sku, r.quantity) for r in existing], {}, waiting
                )
            await self._require_skus(conn, skus)
            await self._require_warehouse(conn, warehouse)
            available = await self._availability(conn, skus, lock=True, warehouse=warehouse)
            short = missing(available.get(warehouse, {}), items)
            if short:
                return ReservationOutcome(False, warehouse, items, short)
            now = _now()
            await self._hold(conn, order_id, shipment_no, warehouse, items, now)
            await self._resolve_backorder(conn, order_id, now)
            pending: set[str] = set()
            await self._track_low_stock(conn, [(sku, warehouse) for sku in skus], now, pending)
            return ReservationOutcome(True, warehouse, items, {}, sorted(pending))

        return await self._write(op, f"reserve shipment {shipment_no} of order {order_id}")

    async def allocate(
        self,
        order_id: str,
        lines: Sequence[tuple[str, int]],
        *,
        prefer_country: str | None = None,
        prefer_region: str | None = None,
        allow_partial: bool = False,
        first_shipment: int = 1,
    ) -> Allocation:
        """Reserve `lines` for the order in one transaction, as shipments numbered from `first_shipment`:
        from one warehouse if one covers them all (ship-to region first, like `reserve`), else split over the
        fewest warehouses (`plan_split`). If all warehouses together fall short, nothing is reserved and the
        order waits (backorder row) — unless `allow_partial`, which reserves what is in stock now and leaves
        only the rest waiting. Idempotent: if shipments from `first_shipment` on are already reserved (a
        retried call) they are returned as they are, with what they leave short.

        First come, first served: units that backorders waiting since before this order's own backorder row
        need are not available to it (an order with no backorder row comes after all of them); see
        `_fifo_budget`, which follows the same queue as `backorders_to_wake`.

        Locking: the order's advisory lock, then the stock rows of its SKUs FOR UPDATE in (sku, warehouse)
        order."""
        _require_text("order_id", order_id)
        _require_int("first_shipment", first_shipment, minimum=1)
        items = _normalize_lines(lines, merge=True)
        wanted = dict(items)
        skus = list(wanted)
        rv = t.reservations

        async def op(conn: AsyncConnection) -> Allocation:
            await self._lock_key(conn, f"order:{order_id}")
            done = (
                await conn.execute(
                    select(rv.c.shipment_no, rv.c.warehouse, rv.c.sku, rv.c.quantity)
                    .where(
                        rv.c.order_id == order_id,
                        rv.c.shipment_no >= first_shipment,
                        rv.c.status.in_(("held", "committed")),
                    )
                    .order_by(rv.c.shipment_no, rv.c.sku)
                )
            ).all()
            if done:
                shipments: dict[int, tuple[str, list[tuple[str, int]]]] = {}
                for r in done:
                    shipments.setdefault(r.shipment_no, (r.warehouse, []))[1].append((r.sku, r.quantity))
                got: dict[str, int] = {}
                for r in done:
                    got[r.sku] = got.get(r.sku, 0) + r.quantity
                short = {sku: qty - got.get(sku, 0) for sku, qty in items if got.get(sku, 0) < qty}
                waiting = await self._pending_low_stock(conn, {(r.sku, r.warehouse) for r in done})
                return Allocation([(n, wh, ls) for n, (wh, ls) in sorted(shipments.items())], short, waiting)

            await self._require_skus(conn, skus)
            sites = await self._sites(conn)
            available = await self._availability(conn, skus, lock=True)
            totals = {sku: sum(max(stock.get(sku, 0), 0) for stock in available.values()) for sku in skus}
            # What older backorders wait for is theirs: this order may take only the rest (a plan takes exactly
            # the units it is given, so any plan within `budget` leaves them their units).
            budget = await self._fifo_budget(conn, order_id, totals)
            fits = all(qty <= budget[sku] for sku, qty in items)
            chosen = choose_warehouse(sites, available, items, prefer_country, prefer_region) if fits else None
            plan = [(chosen, items)] if chosen else []
            if not plan and fits:
                plan = plan_split(sites, available, items, prefer_country, prefer_region)
            if not plan and allow_partial:
                coverable = [(sku, min(qty, budget[sku])) for sku, qty in items if budget[sku] > 0]
                plan = plan_split(sites, available, coverable, prefer_country, prefer_region) if coverable else []
            planned: dict[str, int] = {}
            for _, part in plan:
                for sku, qty in part:
                    planned[sku] = planned.get(sku, 0) + qty
            now = _now()
            if not plan:  # nothing reserved: short is what all warehouses together lack (for this order)
                short = {sku: qty - budget[sku] for sku, qty in items if budget[sku] < qty}
                await self._open_backorder(conn, order_id, {sku: wanted[sku] for sku in short}, now)
                return Allocation([], short)
            shipments_out = []
            for n, (warehouse, part) in enumerate(plan, start=first_shipment):
                await self._hold(conn, order_id, n, warehouse, part, now)
                shipments_out.append((n, warehouse, list(part)))
            short = {sku: qty - planned.get(sku, 0) for sku, qty in items if planned.get(sku, 0) < qty}
            if short:
                await self._open_backorder(conn, order_id, short, now)
            else:
                await self._resolve_backorder(conn, order_id, now)
            pending: set[str] = set()
            touched = [(sku, warehouse) for warehouse, part in plan for sku, _ in part]
            await self._track_low_stock(conn, touched, now, pending)
            return Allocation(shipments_out, short, sorted(pending))

        return await self._write(op, f"allocate order {order_id}")

    async def _fifo_budget(self, conn: AsyncConnection, order_id: str, totals: Mapping[str, int]) -> dict[str, int]:
        """Units of each SKU in `totals` (available in all warehouses) the order may reserve: what is left
        once the backorders ahead of it in the queue are served first (`_serve_in_order`). Ahead of it: waiting
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
        ahead = [(r.order_id, _backorder_needs(r.skus)) for r in await conn.execute(stmt)]
        if not ahead:
            return dict(totals)
        # The orders ahead may need other SKUs too: whether they can go ahead decides what they take.
        others = sorted({sku for _, needs in ahead for sku in needs} - set(totals))
        _, left, kept = _serve_in_order(ahead, {**totals, **await self._available_totals(conn, others)})
        return {sku: 0 if sku in kept else max(left[sku], 0) for sku in totals}

    async def _available_totals(self, conn: AsyncConnection, skus: Sequence[str]) -> dict[str, int]:
        """sku -> units available (on hand - reserved) in all warehouses together."""
        sl = t.stock_levels
        totals = dict.fromkeys(skus, 0)
        if skus:
            for r in await conn.execute(
                select(sl.c.sku, (sl.c.on_hand - sl.c.reserved).label("available")).where(sl.c.sku.in_(skus))
            ):
                totals[r.sku] += max(r.available, 0)
        return totals

    async def _existing_reservations(self, conn: AsyncConnection, order_id: str, shipment_no: int | None) -> list[Any]:
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
        self,
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
                raise _StockMoved  # rolls back the lines already reserved in this attempt
        ins = self._insert(rv)
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
        await self._add_ledger(
            conn, [(sku, warehouse, 0, qty) for sku, qty in items], "reservation", order_id, note, now
        )

    async def _open_backorder(
        self, conn: AsyncConnection, order_id: str, needs: Mapping[str, int], now: datetime
    ) -> None:
        """The order waits for stock: `needs` is sku -> units it needs of each SKU it is short of."""
        ins = self._insert(t.backorders).values(
            order_id=order_id, skus=dict(sorted(needs.items())), created_at=now, resolved_at=None
        )
        # A re-opened backorder keeps its created_at: the order keeps its place in the queue.
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[t.backorders.c.order_id],
                set_={"skus": ins.excluded.skus, "resolved_at": None},
            )
        )

    async def close_backorder(self, order_id: str) -> bool:
        """End the order's wait for stock without touching its reservations (it gave up on the rest).
        True if it was waiting. Idempotent."""
        _require_text("order_id", order_id)

        async def op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(t.backorders)
                .where(t.backorders.c.order_id == order_id, t.backorders.c.resolved_at.is_(None))
                .values(resolved_at=_now())
            )
            return bool(result.rowcount)

        return await self._write(op, f"close backorder of order {order_id}")

    async def _resolve_backorder(self, conn: AsyncConnection, order_id: str, now: datetime) -> None:
        await conn.execute(
            update(t.backorders)
            .where(t.backorders.c.order_id == order_id, t.backorders.c.resolved_at.is_(None))
            .values(resolved_at=now)
        )

    async def _settle(
        self, order_id: str, *, to: str, kind: str, note: str, ships: bool, shipment_no: int | None = None
    ) -> int:
        """Move the order's held reservations (of one shipment, if given) to `to`, giving the units back
        (release) or taking them out of on_hand (commit, `ships`). Idempotent: nothing held, nothing done.
        Locking (release and commit): the order's advisory lock, then its stock rows in (sku, warehouse)
        order."""
        _require_text("order_id", order_id)
        if shipment_no is not None:
            _require_int("shipment_no", shipment_no, minimum=1)
        sl, rv = t.stock_levels, t.reservations
        whole_order = shipment_no is None

        async def op(conn: AsyncConnection) -> int:
            await self._lock_key(conn, f"order:{order_id}")
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
                    await self._resolve_backorder(conn, order_id, _now())
                return 0
            now = _now()
            for r in held:
                values: dict[str, ColumnElement[int]] = {"reserved": sl.c.reserved - r.quantity}
                if ships:
                    values["on_hand"] = sl.c.on_hand - r.quantity
                await conn.execute(update(sl).where(sl.c.sku == r.sku, sl.c.warehouse == r.warehouse).values(values))
            await conn.execute(update(rv).where(rv.c.id.in_([r.id for r in held])).values(status=to, updated_at=now))
            await self._add_ledger(
                conn,
                [(r.sku, r.warehouse, -r.quantity if ships else 0, -r.quantity) for r in held],
                kind,
                order_id,
                note,
                now,
            )
            if kind == "release" and whole_order:
                await self._resolve_backorder(conn, order_id, now)
            await self._track_low_stock(conn, {(r.sku, r.warehouse) for r in held}, now)
            return sum(r.quantity for r in held)

        what = f"{kind} order {order_id}" + (f" shipment {shipment_no}" if shipment_no is not None else "")
        return await self._write(op, what)

    async def release(self, order_id: str, *, note: str = "release", shipment_no: int | None = None) -> int:
        """Give back what the order holds (held -> released); also ends its backorder wait. Returns the units
        released, 0 if nothing was held. Idempotent. With `shipment_no`, only that shipment's reservations
        (and the backorder wait is left as it is)."""
        return await self._settle(
            order_id, to="released", kind="release", note=note, ships=False, shipment_no=shipment_no
        )

    async def commit_reservation(self, order_id: str, *, shipment_no: int | None = None) -> int:
        """The goods left the building: held -> committed, on_hand and reserved both drop. Returns the units
        committed, 0 if nothing was held. Idempotent. With `shipment_no`, only that shipment."""
        return await self._settle(
            order_id, to="committed", kind="commit", note="shipped", ships=True, shipment_no=shipment_no
        )

    # -----------------------------------------------------------------------------------------------------
    # Purchase orders (incoming stock)

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
        returns it unchanged; with other details it is an error."""
        _require_text("sku", sku)
        _require_int("quantity expected", qty, minimum=1)
        _require_text("warehouse", warehouse)
        if po is not None:
            _require_text("purchase order id", po)
            if len(po) > 64:
                raise ValueError(f"purchase order id must be at most 64 characters, got {len(po)}")
        if eta is not None and (not isinstance(eta, date) or isinstance(eta, datetime)):
            raise ValueError(f"eta must be a date, got {eta!r}")
        pt = t.purchase_orders

        async def op(conn: AsyncConnection) -> PurchaseOrder:
            await self._require_skus(conn, [sku])
            await self._require_warehouse(conn, warehouse)
            now = _now()
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
                result = await conn.execute(self._insert(pt).values(id=po_id, **values).on_conflict_do_nothing())
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

        return await self._write(op, f"expect {qty} x {sku}")

    async def _open_purchase_order(self, conn: AsyncConnection, po: str) -> PurchaseOrder:
        pt = t.purchase_orders
        row = (await conn.execute(select(pt).where(pt.c.id == po).with_for_update())).first()
        if row is None:
            raise PurchaseOrderNotFound(po)
        order = _purchase_order(row)
        if order.status != "open":
            raise PurchaseOrderClosed(po, order.status)
        return order

    async def cancel_purchase_order(self, po: str) -> PurchaseOrder:
        """open -> cancelled: no longer incoming. Idempotent; a received PO cannot be cancelled."""
        _require_text("purchase order id", po)
        pt = t.purchase_orders

        async def op(conn: AsyncConnection) -> PurchaseOrder:
            row = (await conn.execute(select(pt).where(pt.c.id == po).with_for_update())).first()
            if row is None:
                raise PurchaseOrderNotFound(po)
            if row.status == "received":
                raise PurchaseOrderClosed(po, row.status)
            if row.status == "open":
                await conn.execute(update(pt).where(pt.c.id == po).values(status="cancelled", closed_at=_now()))
            return _purchase_order((await conn.execute(select(pt).where(pt.c.id == po))).one())

        return await self._write(op, f"cancel purchase order {po}")

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
        return [_purchase_order(r) for r in await self._read(stmt)]

    # -----------------------------------------------------------------------------------------------------
    # Reorder points and low-stock crossings

    async def set_reorder_points(self, points: Mapping[tuple[str, str], int | None]) -> list[LowStockCrossing]:
        """Set (or with None clear) the reorder point of each (sku, warehouse), in one transaction. Returns
        the crossings this opens (available already at or below the new point). Locking: the stock rows in
        (sku, warehouse) order (no order lock)."""
        for (sku, warehouse), point in points.items():
            _require_text("sku", sku)
            _require_text("warehouse", warehouse)
            if point is not None:
                _require_int(f"reorder point of {sku} at {warehouse}", point, minimum=0)
        sl = t.stock_levels

        async def op(conn: AsyncConnection) -> list[LowStockCrossing]:
            await self._require_skus(conn, {sku for sku, _ in points})
            for warehouse in sorted({wh for _, wh in points}):
                await self._require_warehouse(conn, warehouse)
            now = _now()
            for (sku, warehouse), point in sorted(points.items()):
                ins = self._insert(sl).values(sku=sku, warehouse=warehouse, on_hand=0, reserved=0, reorder_point=point)
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
            return await self._track_low_stock(conn, points.keys(), now)

        return await self._write(op, "set reorder points")

    async def set_reorder_point(self, sku: str, warehouse: str, point: int | None) -> list[LowStockCrossing]:
        return await self.set_reorder_points({(sku, warehouse): point})

    async def _track_low_stock(
        self,
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
                select(sl.c.sku, sl.c.warehouse, sl.c.on_hand, sl.c.reserved, sl.c.reorder_point).where(
                    sl.c.sku.in_(skus)
                )
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
                crossing_id = _inserted_id(result)
                opened.append(LowStockCrossing(crossing_id, key[0], key[1], available, point, now, None, None))
                if pending is not None:
                    pending.add(key[0])
            elif not low and current is not None:
                await conn.execute(update(lc).where(lc.c.id == current.id).values(rearmed_at=now))
            elif low and current is not None and current.alerted_at is None and pending is not None:
                pending.add(key[0])
        return opened

    async def _pending_low_stock(self, conn: AsyncConnection, keys: Iterable[tuple[str, str]]) -> list[str]:
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
        return [_crossing(r) for r in await self._read(stmt)]

    async def mark_low_stock_alerted(self, crossing_id: int) -> None:
        """Ops were told of this crossing (idempotent; keeps the first time)."""
        lc = t.low_stock_crossings

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(lc).where(lc.c.id == crossing_id, lc.c.alerted_at.is_(None)).values(alerted_at=_now())
            )

        await self._write(op, f"mark low-stock crossing {crossing_id} alerted")

    # -----------------------------------------------------------------------------------------------------
    # Imports: all rows in one transaction, or (InvalidRows listing every bad row) none

    async def import_products(self, rows: Sequence[ProductImport]) -> ImportResult:
        """Create or update products. Columns not given (lead time, dimensions) keep their stored value."""
        problems = []
        seen: dict[str, int] = {}
        for r in rows:
            try:
                _require_text("sku", r.sku)
                _require_text("name", r.name)
                _require_int("price_cents", r.price_cents, minimum=0)
                _require_int("weight_grams", r.weight_grams, minimum=1)
                if r.lead_time_days is not None:
                    _require_int("lead_time_days", r.lead_time_days, minimum=0)
                for d in r.dimensions_mm or ():
                    _require_int("dimensions", d, minimum=1)
            except ValueError as err:
                problems.append(f"row {r.row}: {err}")
            if r.sku in seen:
                problems.append(f"row {r.row}: sku: {r.sku!r} already on row {seen[r.sku]}")
            seen.setdefault(r.sku, r.row)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])
        pr = t.products

        async def op(conn: AsyncConnection) -> ImportResult:
            existing = {
                r.sku: _product(r) for r in await conn.execute(select(pr).where(pr.c.sku.in_([x.sku for x in rows])))
            }
            now = _now()
            created = updated = unchanged = 0
            for r in rows:
                values: dict[str, Any] = {"name": r.name, "price_cents": r.price_cents, "weight_grams": r.weight_grams}
                if r.lead_time_days is not None:
                    values["lead_time_days"] = r.lead_time_days
                if r.dimensions_mm is not None:
                    values["length_mm"], values["width_mm"], values["height_mm"] = r.dimensions_mm
                old = existing.get(r.sku)
                if old is None:
                    await conn.execute(pr.insert().values(sku=r.sku, created_at=now, **values))
                    created += 1
                    continue
                before = {
                    "name": old.name,
                    "price_cents": old.price_cents,
                    "weight_grams": old.weight_grams,
                    "lead_time_days": old.lead_time_days,
                }
                if old.dimensions_mm is not None:
                    before["length_mm"], before["width_mm"], before["height_mm"] = old.dimensions_mm
                if all(before.get(k) == v for k, v in values.items()):
                    unchanged += 1
                    continue
                await conn.execute(update(pr).where(pr.c.sku == r.sku).values(**values))
                updated += 1
            return ImportResult(created, updated, unchanged)

        return await self._write(op, "import products")

    async def import_warehouses(self, rows: Sequence[WarehouseImport]) -> ImportResult:
        problems = []
        seen: dict[str, int] = {}
        for r in rows:
            try:
                _require_text("code", r.code)
                _require_text("name", r.name)
                if not _COUNTRY.match(r.country):
                    raise ValueError(f"country: must be an ISO 3166-1 alpha-2 code like 'GB', got {r.country!r}")
            except ValueError as err:
                problems.append(f"row {r.row}: {err}")
            if r.code in seen:
                problems.append(f"row {r.row}: code: {r.code!r} already on row {seen[r.code]}")
            seen.setdefault(r.code, r.row)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])
        wh = t.warehouses

        async def op(conn: AsyncConnection) -> ImportResult:
            existing = {r.code: _warehouse(r) for r in await conn.execute(select(wh))}
            created = updated = unchanged = 0
            for r in rows:
                new = Warehouse(r.code, r.name, r.country, r.region)
                old = existing.get(r.code)
                if old is None:
                    await conn.execute(wh.insert().values(code=r.code, name=r.name, country=r.country, region=r.region))
                    created += 1
                elif old == new:
                    unchanged += 1
                else:
                    await conn.execute(
                        update(wh).where(wh.c.code == r.code).values(name=r.name, country=r.country, region=r.region)
                    )
                    updated += 1
            return ImportResult(created, updated, unchanged)

        return await self._write(op, "import warehouses")

    async def import_stock(self, rows: Sequence[StockImport], *, ref: str | None = None) -> ImportResult:
        """Set on hand per (sku, warehouse) to the imported figure, each difference an "adjustment" ledger
        row (`ref`, e.g. the file name). Unknown SKUs or warehouses, or on hand below what is already
        reserved, are row errors. Locking: the stock rows in (sku, warehouse) order (it releases nothing,
        so no order lock)."""
        problems = []
        seen: dict[tuple[str, str], int] = {}
        for r in rows:
            try:
                _require_text("sku", r.sku)
                _require_text("warehouse", r.warehouse)
                _require_int("on_hand", r.on_hand, minimum=0)
            except ValueError as err:
                problems.append(f"row {r.row}: {err}")
            key = (r.sku, r.warehouse)
            if key in seen:
                problems.append(f"row {r.row}: {r.sku} at {r.warehouse} already on row {seen[key]}")
            seen.setdefault(key, r.row)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])
        sl = t.stock_levels

        async def op(conn: AsyncConnection) -> ImportResult:
            skus = sorted({r.sku for r in rows})
            known_skus = set((await conn.execute(select(t.products.c.sku).where(t.products.c.sku.in_(skus)))).scalars())
            codes = list((await conn.execute(select(t.warehouses.c.code).order_by(t.warehouses.c.code))).scalars())
            levels = {
                (r.sku, r.warehouse): r
                for r in await conn.execute(
                    select(sl.c.sku, sl.c.warehouse, sl.c.on_hand, sl.c.reserved).where(sl.c.sku.in_(skus))
                )
            }
            bad = []
            for r in rows:
                if r.sku not in known_skus:
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
            created = updated = unchanged = 0
            # Stock rows are locked in (sku, warehouse) order, whatever the file's order (see _set_on_hand).
            for r in sorted(rows, key=lambda r: (r.sku, r.warehouse)):
                level = levels.get((r.sku, r.warehouse))
                note = f"stock import: on hand set to {r.on_hand}"
                change = await self._set_on_hand(
                    conn,
                    r.sku,
                    r.warehouse,
                    lambda _on_hand, _packed, n=r.on_hand: n,  # type: ignore[misc]
                    "adjustment",
                    lambda _packed, note=note: note,  # type: ignore[misc]
                    ref,
                    release_excess=False,
                    skip_unchanged=True,
                )
                if level is None:
                    created += 1
                elif change.delta:
                    updated += 1
                else:
                    unchanged += 1
            return ImportResult(created, updated, unchanged)

        return await self._write(op, "import stock")

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
        return [r.order_id for r in rows if wanted.intersection(_backorder_needs(r.skus))]

    async def backorders_to_wake(self, sku: str) -> list[str]:
        """Backordered orders waiting for `sku` that the stock available now can serve: first come, first
        served, and only as many as the stock covers. The oldest order that needs more of a SKU than is
        available keeps it (younger orders must not take its units); an order still short of another SKU is
        passed over without taking any (`_serve_in_order`, the queue `allocate` follows too)."""
        rows = await self._read(
            select(t.backorders.c.order_id, t.backorders.c.skus)
            .where(t.backorders.c.resolved_at.is_(None))
            .order_by(t.backorders.c.created_at, t.backorders.c.order_id)
        )
        waiting = [(r.order_id, _backorder_needs(r.skus)) for r in rows]
        if not any(sku in needs for _, needs in waiting):
            return []
        async with self._engine.connect() as conn:
            available = await self._available_totals(conn, sorted({s for _, needs in waiting for s in needs}))
        served, _, _ = _serve_in_order(waiting, available)
        needs_of = dict(waiting)
        return [order_id for order_id in served if sku in needs_of[order_id]]

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
        """A new open pick task, or the existing one for (order_id, attempt). ShipmentReleased if shipment
        `attempt` of the order had a reservation and lost it (a stock count released it): nothing to pick.

        Locking: the order's advisory lock first, so a count releasing the shipment comes wholly before or
        after."""
        _require_text("order_id", order_id)
        _require_int("attempt", attempt, minimum=0)
        _require_text("warehouse", warehouse)
        items = _normalize_lines(lines, merge=True)
        pt = t.pick_tasks

        async def existing(conn: AsyncConnection) -> PickTask | None:
            row = (await conn.execute(select(pt).where(pt.c.order_id == order_id, pt.c.attempt == attempt))).first()
            return _pick_task(row) if row is not None else None

        async def op(conn: AsyncConnection) -> PickTask:
            await self._lock_key(conn, f"order:{order_id}")
            task = await existing(conn)
            if task is not None and task.status == "confirmed":
                return task  # picked before anything was released: a retried call gets it back
            if await self._shipment_status(conn, order_id, attempt) == "released":
                raise ShipmentReleased(order_id, attempt)
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
        stmt = select(t.pick_tasks).where(t.pick_tasks.c.order_id == order_id).order_by(t.pick_tasks.c.attempt)
        return [_pick_task(r) for r in await self._read(stmt)]

    async def open_pick_tasks(self, older_than_s: float | None = None) -> list[PickTask]:
        """Open tasks (created at least `older_than_s` seconds ago, if given), oldest first."""
        pt = t.pick_tasks
        stmt = select(pt).where(pt.c.status == "open").order_by(pt.c.created_at, pt.c.id)
        if older_than_s is not None:
            stmt = stmt.where(pt.c.created_at <= _now() - timedelta(seconds=older_than_s))
        return [_pick_task(r) for r in await self._read(stmt)]

    async def _pick_task_for_update(self, conn: AsyncConnection, task_id: str) -> PickTask:
        """The pick task, read under its order's lock and with its row locked: order advisory lock first,
        then the task row (and after it any stock rows), like every operation (see `_set_on_hand`). Read
        before the locks, a concurrent confirmation or cancellation would go unseen."""
        pt = t.pick_tasks
        order_id = (await conn.execute(select(pt.c.order_id).where(pt.c.id == task_id))).scalar_one_or_none()
        if order_id is None:
            raise PickTaskNotFound(task_id)
        await self._lock_key(conn, f"order:{order_id}")
        return _pick_task((await conn.execute(select(pt).where(pt.c.id == task_id).with_for_update())).one())

    async def _confirmable(self, conn: AsyncConnection, task: PickTask) -> None:
        """Refuse to confirm a task that is not open, or whose shipment lost its reservation (a confirmed pick
        always has its reservation, so what ships is always committed)."""
        if task.status == "cancelled" and task.released_at is not None:
            raise ShipmentReleased(task.order_id, task.attempt)  # cancelled by the stock change that released it
        if task.status != "open":
            raise PickTaskClosed(task.id, task.status)
        if await self._shipment_status(conn, task.order_id, task.attempt) == "released":
            raise ShipmentReleased(task.order_id, task.attempt)

    async def _close_pick_task(self, task_id: str, to: str) -> PickTask:
        """open -> `to`; idempotent when it is `to` already. A confirmation goes into the order-signal
        outbox (`pick_confirmed`) in the same transaction. Locking: `_pick_task_for_update`."""
        pt = t.pick_tasks

        async def op(conn: AsyncConnection) -> PickTask:
            task = await self._pick_task_for_update(conn, task_id)
            if task.status == to:
                return task
            if to == "confirmed":
                await self._confirmable(conn, task)
            elif task.status != "open":
                raise PickTaskClosed(task_id, task.status)
            now = _now()
            values: dict[str, Any] = {"status": to}
            if to == "confirmed":
                values["confirmed_at"] = now
            result = await conn.execute(update(pt).where(pt.c.id == task_id, pt.c.status == "open").values(values))
            if result.rowcount != 1:  # never tell a caller it won when the task changed underneath
                raise PickTaskClosed(task_id, "closed")
            if to == "confirmed":
                await self._add_order_signal(conn, task.order_id, "signal", "pick_confirmed", task_id, now)
            return replace(task, status=to, confirmed_at=now if to == "confirmed" else None)

        return await self._write(op, f"{to} pick task {task_id}")

    async def confirm_pick_task(self, task_id: str, short: Mapping[str, int] | None = None) -> PickTask:
        """open -> confirmed (idempotent). PickTaskNotFound; PickTaskClosed if it was cancelled (or, with
        `short`, confirmed otherwise); ShipmentReleased if its shipment's reservation is gone (a stock count
        released it, and cancelled the task). The order is told through the order-signal outbox, in the
        same transaction: signal `pick_confirmed` (the task id), or for a short pick update `pick_short`
        (PickShortage). A repeated confirmation changes nothing and writes nothing.

        With `short` (sku -> units the picker could not find), a short pick: the shelf held fewer units than
        the books said, so on hand is corrected (an "adjustment" ledger row naming the task: the discrepancy)
        and the order's reservation of those units is dropped with it, all in the same transaction as the
        confirmation. The order then re-reserves the missing units elsewhere or waits for them.

        Locking: the order's advisory lock, then the task row, then the stock rows in sku order (one
        warehouse): two confirmations of one task are serial, and only the first changes anything."""
        if not short:
            return await self._close_pick_task(task_id, "confirmed")
        missing_units = {str(sku): qty for sku, qty in short.items()}
        for sku, qty in missing_units.items():
            _require_int(f"units short of {sku}", qty, minimum=1)
        pt, sl, rv = t.pick_tasks, t.stock_levels, t.reservations

        async def op(conn: AsyncConnection) -> PickTask:
            task = await self._pick_task_for_update(conn, task_id)
            if task.status == "confirmed" and task.short == missing_units:
                return task  # the same short confirmation again: already done
            await self._confirmable(conn, task)
            ordered = dict(task.lines)
            for sku, qty in missing_units.items():
                if sku not in ordered:
                    raise StoreError(f"pick task {task_id} has no line for {sku} (it has {', '.join(ordered)})")
                if qty > ordered[sku]:
                    raise StoreError(f"pick task {task_id}: {qty} x {sku} short, but only {ordered[sku]} were to pick")
            now = _now()
            for sku, qty in sorted(missing_units.items()):
                held = (
                    await conn.execute(
                        select(rv.c.id, rv.c.quantity).where(
                            rv.c.order_id == task.order_id,
                            rv.c.shipment_no == task.attempt,
                            rv.c.sku == sku,
                            rv.c.warehouse == task.warehouse,
                            rv.c.status == "held",
                        )
                    )
                ).first()
                dropped = min(qty, held.quantity) if held is not None else 0
                if held is not None:
                    left = held.quantity - dropped
                    # Nothing left of the line: the row is released (keeping the quantity it had held).
                    values = {"quantity": left, "status": "held"} if left else {"status": "released"}
                    await conn.execute(update(rv).where(rv.c.id == held.id).values(**values, updated_at=now))
                # The units are not on the shelf: on hand drops by what was missing, reserved by what the
                # order held of them (available stays right for everyone else).
                result = await conn.execute(
                    update(sl)
                    .where(sl.c.sku == sku, sl.c.warehouse == task.warehouse, sl.c.on_hand >= qty)
                    .values(on_hand=sl.c.on_hand - qty, reserved=sl.c.reserved - dropped)
                )
                if result.rowcount != 1:
                    raise StoreError(f"{sku} at {task.warehouse}: fewer than {qty} on hand in the books")
                await self._ledger_row(
                    conn,
                    sku,
                    task.warehouse,
                    -qty,
                    -dropped,
                    "adjustment",
                    task_id,
                    f"short pick: {qty} x {sku} not found for order {task.order_id}",
                    now,
                )
            lines = [
                {"sku": sku, "quantity": qty, **({"short": missing_units[sku]} if sku in missing_units else {})}
                for sku, qty in task.lines
            ]
            result = await conn.execute(
                update(pt)
                .where(pt.c.id == task_id, pt.c.status == "open")
                .values(status="confirmed", confirmed_at=now, lines=lines)
            )
            if result.rowcount != 1:  # rolls back the stock correction: it must happen once, with the confirmation
                raise PickTaskClosed(task_id, "closed")
            shortage = PickShortage(task_id=task_id, short=missing_units)
            await self._add_order_signal(conn, task.order_id, "update", "pick_short", shortage.model_dump(), now)
            await self._track_low_stock(conn, {(sku, task.warehouse) for sku in missing_units}, now)
            return replace(task, status="confirmed", confirmed_at=now, short=missing_units)

        return await self._write(op, f"confirm pick task {task_id} short")

    async def cancel_pick_task(self, task_id: str) -> PickTask:
        """open -> cancelled (idempotent). PickTaskNotFound, or PickTaskClosed if it was already confirmed.
        Locking: the order's advisory lock, then the task row; against a confirmation, exactly one wins."""
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

    async def record_carrier_shipment(self, key: str, order_id: str, carrier_shipment_id: str) -> ShipmentRecord:
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
        """The label for `key` was bought: status "purchased" with its details (idempotent). StoreError if it
        was voided, even by a void committed while this runs. Locking: the shipment row (its UPDATE)."""
        _require_int("rate_cents", rate_cents, minimum=0)
        sh = t.shipments

        async def op(conn: AsyncConnection) -> ShipmentRecord:
            # One conditional UPDATE: a void committed while this runs is seen (READ COMMITTED re-checks the
            # WHERE on the row it waited for), so a voided label is never overwritten.
            result = await conn.execute(
                update(sh)
                .where(sh.c.key == key, sh.c.status != "voided")
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
            row = (await conn.execute(select(sh).where(sh.c.key == key))).first()
            if row is None:
                raise ShipmentNotFound(key)
            if result.rowcount != 1:
                raise StoreError(f"shipment {key!r} was voided; buy under a new shipment number")
            return _shipment(row)

        return await self._write(op, f"record label {key}")

    async def mark_shipment_voided(self, key: str) -> ShipmentRecord:
        """The label for `key` was refunded/voided (idempotent). Locking: the shipment row (its UPDATE)."""
        sh = t.shipments

        async def op(conn: AsyncConnection) -> ShipmentRecord:
            await conn.execute(
                update(sh).where(sh.c.key == key, sh.c.status != "voided").values(status="voided", updated_at=_now())
            )
            row = (await conn.execute(select(sh).where(sh.c.key == key))).first()
            if row is None:
                raise ShipmentNotFound(key)
            return _shipment(row)

        return await self._write(op, f"void shipment {key}")

    # -----------------------------------------------------------------------------------------------------
    # Order-signal outbox: written by the changes above, delivered by common.order_signals

    async def order_signals(self, workflow_id: str | None = None, *, pending_only: bool = False) -> list[OrderSignal]:
        """Outbox rows (of one workflow), oldest first; `pending_only`: not delivered yet."""
        os_ = t.order_signals
        stmt = select(os_).order_by(os_.c.id)
        if workflow_id is not None:
            stmt = stmt.where(os_.c.workflow_id == workflow_id)
        if pending_only:
            stmt = stmt.where(os_.c.delivered_at.is_(None))
        return [_order_signal(r) for r in await self._read(stmt)]

    async def claim_order_signals(
        self,
        *,
        ids: Sequence[int] | None = None,
        workflow_ids: Sequence[str] | None = None,
        limit: int = 100,
        lease_s: float = 60.0,
    ) -> tuple[str, list[OrderSignal]]:
        """Claim pending rows for delivery, oldest first, for `lease_s` seconds: (claim token, rows). With
        `ids`, those rows and any older pending rows of their workflows (which must go first); with
        `workflow_ids`, only those workflows' rows. A workflow's rows are claimed in order and only up to one
        another caller holds, so each workflow's rows are delivered in order even with several relays; a
        claim whose holder died lapses after the lease.

        Locking: one advisory lock for claimers ("order-signals"), then the rows; nothing else is held."""
        _require_int("limit", limit, minimum=1)
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s!r}")
        os_ = t.order_signals
        token = secrets.token_hex(8)

        async def op(conn: AsyncConnection) -> list[OrderSignal]:
            await self._lock_key(conn, "order-signals")
            stmt = select(os_).where(os_.c.delivered_at.is_(None)).order_by(os_.c.id).limit(limit)
            if ids is not None:
                newest = (
                    await conn.execute(
                        select(os_.c.workflow_id, func.max(os_.c.id).label("top"))
                        .where(os_.c.id.in_(list(ids)))
                        .group_by(os_.c.workflow_id)
                    )
                ).all()
                if not newest:
                    return []
                stmt = stmt.where(or_(*(and_(os_.c.workflow_id == r.workflow_id, os_.c.id <= r.top) for r in newest)))
            if workflow_ids is not None:
                stmt = stmt.where(os_.c.workflow_id.in_(list(workflow_ids)))
            now = _now()
            blocked: set[str] = set()
            mine = []
            for r in await conn.execute(stmt):
                if r.workflow_id in blocked:
                    continue
                if r.claimed_until is not None and r.claimed_until > now:
                    blocked.add(r.workflow_id)  # another relay is delivering it: its later rows must wait
                    continue
                mine.append(_order_signal(r))
            if mine:
                await conn.execute(
                    update(os_)
                    .where(os_.c.id.in_([r.id for r in mine]))
                    .values(claimed_by=token, claimed_until=now + timedelta(seconds=lease_s))
                )
            return mine

        return token, await self._write(op, "claim order signals")

    async def mark_order_signal_delivered(self, signal_id: int, note: str | None = None) -> None:
        """The row was delivered (or there was nobody to deliver it to: `note` says why). Idempotent, and
        whoever holds the claim: it was delivered either way."""
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id == signal_id, os_.c.delivered_at.is_(None))
                .values(
                    delivered_at=_now(),
                    attempts=os_.c.attempts + 1,
                    note=note,
                    claimed_by=None,
                    claimed_until=None,
                )
            )

        await self._write(op, f"mark order signal {signal_id} delivered")

    async def mark_order_signal_failed(self, signal_id: int, claim: str, error: str) -> None:
        """Delivery failed: count the attempt, keep the error, give up the claim; the row stays pending."""
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id == signal_id, os_.c.delivered_at.is_(None), os_.c.claimed_by == claim)
                .values(attempts=os_.c.attempts + 1, last_error=error[:1000], claimed_by=None, claimed_until=None)
            )

        await self._write(op, f"mark order signal {signal_id} failed")

    async def release_order_signal_claims(self, signal_ids: Sequence[int], claim: str) -> None:
        """Give up claimed rows without trying them (an earlier row of their workflow failed this round)."""
        if not signal_ids:
            return
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id.in_(list(signal_ids)), os_.c.delivered_at.is_(None), os_.c.claimed_by == claim)
                .values(claimed_by=None, claimed_until=None)
            )

        await self._write(op, "release order signal claims")

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
        claim = NotificationClaim(key, order_id, event, channel, recipient, subject, body)
        return key in await self.claim_notifications([claim])

    async def claim_notifications(self, claims: Sequence[NotificationClaim]) -> set[str]:
        """`claim_notification` for several messages (e.g. the channels of one notification) in one
        transaction and one statement; returns the keys the caller should send now."""
        if not claims:
            return set()
        for claim in claims:
            _require_text("notification key", claim.key)
        if len({c.key for c in claims}) != len(claims):
            raise ValueError("the same notification key twice in one claim")
        n = t.notifications
        now = _now()
        rows = [
            {
                "key": c.key,
                "order_id": c.order_id,
                "event": c.event,
                "channel": c.channel,
                "recipient": c.recipient,
                "subject": c.subject,
                "body": c.body,
                "status": "sending",
                "attempts": 1,
                "created_at": now,
            }
            for c in claims
        ]
        insert = self._insert(n).values(rows if len(rows) > 1 else rows[0])

        async def all_new(conn: AsyncConnection) -> set[str]:
            # The usual case, every key new: one plain INSERT, and its row count says all were claimed.
            inserted = await conn.execute(insert.on_conflict_do_nothing(index_elements=[n.c.key]))
            if inserted.rowcount != len(claims):
                raise _KnownNotification  # rolls this transaction back; the reclaim transaction follows
            return {c.key for c in claims}

        async def reclaim(conn: AsyncConnection) -> set[str]:
            # A retry: a known key is claimed again unless it was sent, in the same statement (the WHERE is
            # evaluated under the row's lock, so a concurrent "sent" is never claimed again). RETURNING names the
            # rows inserted or updated, i.e. the claimed keys (it costs a fetch, hence not the first try).
            stmt = insert.on_conflict_do_update(
                index_elements=[n.c.key],
                set_={
                    "status": "sending",
                    "attempts": n.c.attempts + 1,
                    "error": None,
                    "recipient": insert.excluded.recipient,
                    "subject": insert.excluded.subject,
                    "body": insert.excluded.body,
                },
                where=n.c.status != "sent",
            ).returning(n.c.key)
            return set((await conn.execute(stmt)).scalars())

        what = claims[0].key if len(claims) == 1 else f"{len(claims)} notifications of order {claims[0].order_id}"
        try:
            return await self._write(all_new, f"claim {what}")
        except _KnownNotification:
            return await self._write(reclaim, f"claim {what} again")

    async def mark_notification_sent(self, key: str, provider_message_id: str) -> None:
        await self.mark_notifications_sent([(key, provider_message_id)])

    async def mark_notifications_sent(self, sent: Sequence[tuple[str, str]]) -> None:
        """Mark claimed notifications sent, each with its provider's message id, in one UPDATE statement. Every
        key that exists is marked; NotificationNotFound (for the first unknown key) is raised after that."""
        if not sent:
            return
        ids = dict(sent)
        if len(ids) != len(sent):
            raise ValueError("the same notification key twice in one mark")
        n = t.notifications

        async def op(conn: AsyncConnection) -> list[str]:
            provider_id = case(ids, value=n.c.key) if len(ids) > 1 else next(iter(ids.values()))
            result = await conn.execute(
                update(n)
                .where(n.c.key.in_(list(ids)))
                .values(status="sent", provider_message_id=provider_id, error=None, sent_at=_now())
            )
            if result.rowcount == len(ids):
                return []
            found = set((await conn.execute(select(n.c.key).where(n.c.key.in_(list(ids))))).scalars())
            return [key for key in ids if key not in found]

        what = f"notification {sent[0][0]}" if len(sent) == 1 else f"{len(sent)} notifications"
        missing = await self._write(op, f"mark {what} sent")
        if missing:
            raise NotificationNotFound(missing[0])

    async def mark_notification_failed(self, key: str, error: str) -> None:
        """Record why sending failed; a later claim may try again. Never downgrades a "sent" message."""
        n = t.notifications

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(n).where(n.c.key == key, n.c.status != "sent").values(status="failed", error=error)
            )
            exists = (await conn.execute(select(func.count()).select_from(n).where(n.c.key == key))).scalar_one()
            if not exists:
                raise NotificationNotFound(key)

        await self._write(op, f"mark notification {key} failed")

    async def notifications(self, order_id: str | None = None) -> list[NotificationRecord]:
        stmt = select(t.notifications).order_by(t.notifications.c.created_at, t.notifications.c.key)
        if order_id is not None:
            stmt = stmt.where(t.notifications.c.order_id == order_id)
        return [_notification(r) for r in await self._read(stmt)]
