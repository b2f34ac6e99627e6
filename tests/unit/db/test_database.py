"""The transaction runner on a real SQLite file: migrations, pragmas, the writer, UTC timestamps."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db.engine import head_revision
from common.db.tables import metadata, products
from common.store import Store
from tests.unit.conftest import level_of, sqlite_url

# ---------------------------------------------------------------------------------------------------------
# Migrations and engine


async def test_open_runs_migrations_and_sets_up_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "fulfill.db"
    store = await Store.open(sqlite_url(path))
    await store.close()
    assert path.exists()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert set(metadata.tables) | {"alembic_version"} <= tables

    # Re-opening applies nothing twice; the data survives.
    store = await Store.open(sqlite_url(path))
    try:
        await store.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
        assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1"]
    finally:
        await store.close()
    store = await Store.open(sqlite_url(path))
    try:
        assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1"]
    finally:
        await store.close()


async def test_open_without_migrate_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fulfill.db"
    store = await Store.open(sqlite_url(path), migrate=False)
    await store.close()
    if path.exists():
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []


async def test_migrations_match_the_table_definitions(store: Store) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with store.db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_session_pragmas(store: Store) -> None:
    async with store.db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30_000


async def test_writes_wait_for_another_writer_without_stalling_the_event_loop(shop: Store, tmp_path: Path) -> None:
    """Another process holds SQLite's write lock: a write waits for it (busy timeout) on the store's writer
    thread while the event loop goes on, then goes through; reads are not held up meanwhile."""
    await shop.stock.receive_stock("MUG-RED", 1, "LDN-1", note="first delivery")
    other = sqlite3.connect(tmp_path / "var" / "fulfill.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        write = asyncio.create_task(shop.stock.receive_stock("MUG-RED", 5, "LDN-1", note="second delivery"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done() and ticks == 20  # waiting on the lock, and the loop ran on
        assert level_of(await shop.stock.stock_levels("MUG-RED"), "MUG-RED", "LDN-1").on_hand == 1
    finally:
        other.execute("COMMIT")
        other.close()
    assert (await asyncio.wait_for(write, 10)).on_hand == 6


async def test_closing_a_store_twice_is_harmless(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path / "fulfill.db"))
    await store.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
    await store.close()
    await store.close()
    reopened = await Store.open(sqlite_url(tmp_path / "fulfill.db"))
    try:
        assert [w.code for w in await reopened.catalog.warehouses()] == ["LDN-1"]
    finally:
        await reopened.close()


async def test_a_write_transaction_that_awaits_anything_else_is_refused_and_rolled_back(shop: Store) -> None:
    """Write transactions run start to end on the writer thread: one that would wait on the event loop
    inside the transaction (holding the write lock) is a programming error, and changes nothing."""

    async def op(conn: AsyncConnection) -> None:
        await conn.execute(update(products).values(name="renamed"))
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match=r"awaited something other than conn\.execute"):
        await shop.db.write(op, "rename every product")
    assert {p.name for p in await shop.catalog.products()} == {"Red mug", "T-shirt M", "Poster"}


async def test_timestamps_are_utc(shop: Store) -> None:
    before = datetime.now(UTC)
    await shop.stock.receive_stock("MUG-RED", 1, "LDN-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 1)])
    [reservation] = await shop.reservations.reservations()
    assert reservation.created_at.tzinfo is UTC and before <= reservation.created_at <= datetime.now(UTC)
