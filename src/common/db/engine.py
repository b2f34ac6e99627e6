"""Async engine creation for the two supported backends.

SQLite (aiosqlite, the default): WAL so readers never block the single writer, a 30 s busy timeout so
writers queue instead of failing with "database is locked", foreign keys on, and SQLAlchemy (not the
sqlite3 module) emitting BEGIN, so a write transaction can start with BEGIN IMMEDIATE and take the write
lock before it reads what it is about to change. A Database writes a SQLite file through a synchronous engine on
a thread of its own (SqliteFileWriter), each transaction start to end there.

PostgreSQL (asyncpg): a normal pool. A `search_path` query parameter in the URL (not an asyncpg option)
is turned into the session's search_path, which lets tests and multi-tenant setups use one schema each.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.base import Executable

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option read by the "begin" hook: "immediate" makes a SQLite transaction take the write lock
# at BEGIN. Ignored on PostgreSQL.
SQLITE_BEGIN_OPTION = "fulfill_sqlite_begin"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases."""
    u = make_url(url)
    database = u.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):  # URI form (uri=true): file:path?options
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url`, configured for the backend. Extra kwargs go to create_async_engine."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(u, **kwargs)
    if backend == "postgresql":
        return _postgres_engine(u, **kwargs)
    raise ValueError(
        f"unsupported database URL {u.render_as_string(hide_password=True)!r}: "
        "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
    )


def _sqlite_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    if url.drivername != "sqlite+aiosqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, **kwargs.pop("connect_args", {})}
    kwargs.setdefault("pool_timeout", 60)
    engine = create_async_engine(url, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine.sync_engine, path)
    return engine


class SqliteFileWriter:
    """Write transactions on a SQLite file, each run start to end on a thread of its own over a synchronous
    connection (write transactions start with BEGIN IMMEDIATE).

    SQLite has one write lock per database, held from BEGIN IMMEDIATE to COMMIT. Through aiosqlite every
    statement is a hop to its thread and back through the event loop, which on a busy worker waits behind the
    loop's other work, so the lock is held many times longer than the SQL takes (docs/performance.md). Here the
    statements follow one another on the writer thread while the loop goes on, so the lock is held for the SQL
    alone; the thread also queues this process's writers. A transaction may await nothing but
    `conn.execute(...)`, which is answered at once."""

    def __init__(self, path_url: URL) -> None:
        engine = sqlalchemy.create_engine(
            path_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, pool_size=1
        )
        _configure_sqlite(engine, sqlite_path(path_url))
        self._engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "immediate"})
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    @classmethod
    def for_url(cls, url: str | URL) -> SqliteFileWriter | None:
        """A writer for a SQLite file; None for an in-memory database, private to the async engine's one
        connection."""
        u = make_url(url).set(drivername="sqlite+pysqlite")
        return cls(u) if sqlite_path(u) is not None else None

    async def run(self, transaction: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, transaction)

    async def close(self) -> None:
        # The connection belongs to the writer thread: close it there.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown()

    def _run(self, transaction: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with self._engine.begin() as conn:
            steps = transaction(cast(AsyncConnection, _SyncConnection(conn))).__await__()
            try:
                next(steps)
            except StopIteration as done:
                result: T = done.value
                return result
            steps.close()
            raise RuntimeError("a write transaction awaited something other than conn.execute()")


class _SyncConnection:
    """What write transactions use of AsyncConnection, `await conn.execute(...)` and `conn.dialect`, over a
    synchronous connection: the await completes at once."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Any:
        return self._conn.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)


def _configure_sqlite(engine: Engine, path: Path | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module; the "begin" hook below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may briefly hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if path is not None:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable with WAL except on power loss
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_BEGIN_OPTION) == "immediate"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgres_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    if url.drivername != "postgresql+asyncpg":
        url = url.set(drivername="postgresql+asyncpg")
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    search_path = url.query.get("search_path")
    if search_path is not None:
        url = url.difference_update_query(["search_path"])
        value = search_path if isinstance(search_path, str) else ",".join(search_path)
        connect_args["server_settings"] = {**connect_args.get("server_settings", {}), "search_path": value}
    # Survive a PostgreSQL restart or a dropped idle connection without failing the next activity.
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Any:
    """An Alembic Config for the packaged migrations (no ini file needed, so it works from a wheel)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest migration's revision: what a database opened with `migrate` is at."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# Alembic keeps the running migration context in module globals (`alembic.context`), so two migrations
# interleaving on one event loop (e.g. two Database.open awaited together) would corrupt each other.
_migration_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def run_migrations(engine: AsyncEngine, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on `engine`, in one transaction that holds the write lock (SQLite) or
    an advisory lock (PostgreSQL, taken in env.py), so concurrent starts apply each migration once."""
    from alembic import command

    def upgrade(sync_conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    lock = _migration_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.connect() as conn:
        conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "immediate"})
        async with conn.begin():
            await conn.run_sync(upgrade)
