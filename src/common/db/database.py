"""The one transaction runner every store is built on: `Database.write` runs an operation in one write
transaction and retries it on transient errors, `Database.read` and `Database.connect` read.

Rules every store keeps:
- Each call is one transaction on its own pooled connection; an operation never leaves partial changes.
- Every stock change writes a `stock_ledger` row in the same transaction as the change.
- Side-effect bookkeeping is idempotent by business key (order id, (order, attempt), label key,
  notification key), so activity retries and replays never double-reserve, double-buy or double-send.
- Write transactions on SQLite start with BEGIN IMMEDIATE (writers queue on the busy timeout instead of
  failing halfway) and run on the Database's writer thread (SqliteFileWriter), so the write lock is held for
  the SQL alone (write transactions await nothing but `conn.execute`); on PostgreSQL they run at READ
  COMMITTED, and every one takes its locks in one fixed order: order advisory locks first (sorted by order
  id), then stock rows in (sku, warehouse) order (a pick task row is only locked or changed under its order's
  lock). What a decision rests on is read under those locks. Lock/deadlock/serialization errors retry the
  whole transaction a few times (`Database.retries` counts them).
- Bad input raises ValueError or a StoreError subclass with a clear message and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Row, Select, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.db.engine import SQLITE_BEGIN_OPTION, SqliteFileWriter, create_engine, run_migrations
from common.db.errors import StoreError

T = TypeVar("T")

MAX_TRANSIENT_ATTEMPTS = 8  # database locked / deadlock / serialization failure
MAX_STOCK_MOVED_ATTEMPTS = 10
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database schema has changed")


class StockMoved(Exception):
    """A conditional stock update found less available than the read before it; `Database.write` retries the
    whole transaction."""


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


def utc_now() -> datetime:
    return datetime.now(UTC)


def inserted_id(result: Any) -> int:
    """The primary key of the row an INSERT wrote."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT with the connection's dialect's ON CONFLICT support."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


async def lock_key(conn: AsyncConnection, key: str) -> None:
    """Serialize transactions on one business key on PostgreSQL (SQLite writers are serial already)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


class Database:
    """Async access to the fulfillment database. One engine (connection pool) per Database; share one per
    process. Create with `await Database.open(url)`, finish with `await db.close()`."""

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
        # different orders, which the locking rules above exist to prevent.
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

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        """The backend: "sqlite" or "postgresql"."""
        return self._dialect

    @property
    def retries(self) -> dict[str, int]:
        """Write transactions retried so far, by reason: a PostgreSQL SQLSTATE ("40P01" deadlock, "40001"
        serialization failure, "55P03" lock not available), "sqlite busy", or "stock moved" (a conditional
        stock update found less than the read before it)."""
        return dict(self._retries)

    async def write(self, op: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        """Run `op` in one write transaction, retrying the whole transaction on transient lock errors and on
        StockMoved. `op` may await nothing but `conn.execute` (see SqliteFileWriter)."""
        transient = moved = 0
        while True:
            try:
                if self._file_writer is not None:
                    return await self._file_writer.run(op)
                lock = self._sqlite_write_lock or contextlib.nullcontext()
                async with lock, self._writer.begin() as conn:
                    return await op(conn)
            except StockMoved as exc:
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

    async def read(self, stmt: Select[Any]) -> Sequence[Row[Any]]:
        """The rows of one query, on a connection of its own."""
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt)).all()

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def connect(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A read connection, for several queries that belong together (`async with db.connect() as conn`)."""
        return self._engine.connect()
