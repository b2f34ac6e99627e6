"""Store on a real SQLite file: migrations, stock, reservations, pick tasks, shipments, notification log."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.contracts import UnknownSkuError, UnknownWarehouseError
from common.db.errors import StoreError
from common.db.tables import metadata, products
from common.demo import seed_demo
from common.inventory.contracts import StockLevel
from common.shipping.contracts import LabelNotFound
from common.store import Store
from common.warehouse.contracts import PickTaskClosed, PickTaskNotFound


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # A missing parent directory on purpose: the engine creates it.
    s = await Store.open(_url(tmp_path / "var" / "fulfill.db"))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def shop(store: Store) -> Store:
    """Two warehouses, three products, no stock yet."""
    await store.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
    await store.catalog.upsert_warehouse("NYC-1", "New York", "US", "NY")
    await store.catalog.upsert_product("MUG-RED", "Red mug", 1200, 350)
    await store.catalog.upsert_product("TEE-M", "T-shirt M", 1800, 180)
    await store.catalog.upsert_product("POSTER-A2", "Poster", 900, 120)
    return store


def _level(levels: list[StockLevel], sku: str, warehouse: str) -> StockLevel:
    [level] = [x for x in levels if x.sku == sku and x.warehouse == warehouse]
    return level


# ---------------------------------------------------------------------------------------------------------
# Migrations and engine


async def test_open_runs_migrations_and_sets_up_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "fulfill.db"
    store = await Store.open(_url(path))
    await store.close()
    assert path.exists()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert set(metadata.tables) | {"alembic_version"} <= tables

    # Re-opening applies nothing twice; the data survives.
    store = await Store.open(_url(path))
    try:
        await store.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
        assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1"]
    finally:
        await store.close()
    store = await Store.open(_url(path))
    try:
        assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1"]
    finally:
        await store.close()


async def test_open_without_migrate_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fulfill.db"
    store = await Store.open(_url(path), migrate=False)
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
        assert _level(await shop.stock.stock_levels("MUG-RED"), "MUG-RED", "LDN-1").on_hand == 1
    finally:
        other.execute("COMMIT")
        other.close()
    assert (await asyncio.wait_for(write, 10)).on_hand == 6


async def test_closing_a_store_twice_is_harmless(tmp_path: Path) -> None:
    store = await Store.open(_url(tmp_path / "fulfill.db"))
    await store.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
    await store.close()
    await store.close()
    reopened = await Store.open(_url(tmp_path / "fulfill.db"))
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


# ---------------------------------------------------------------------------------------------------------
# Catalogue


async def test_catalogue_upserts_and_unknown_skus(shop: Store) -> None:
    await shop.catalog.upsert_product("MUG-RED", "Red mug (large)", 1500, 400)
    products = {p.sku: p for p in await shop.catalog.products()}
    assert sorted(products) == ["MUG-RED", "POSTER-A2", "TEE-M"]
    assert (products["MUG-RED"].name, products["MUG-RED"].price_cents) == ("Red mug (large)", 1500)
    assert products["MUG-RED"].created_at.tzinfo is UTC
    assert await shop.catalog.unknown_skus(["TEE-M", "NOPE-2", "NOPE-1", "NOPE-1"]) == ["NOPE-1", "NOPE-2"]
    assert await shop.catalog.unknown_skus([]) == []
    await shop.catalog.upsert_warehouse("nyc-1".upper(), "New York City", "us", None)
    assert [(w.code, w.name, w.country, w.region) for w in await shop.catalog.warehouses()] == [
        ("LDN-1", "London", "GB", "LDN"),
        ("NYC-1", "New York City", "US", None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("X", "x", -1, 10), "price_cents"),
        (("X", "x", 10, 0), "weight_grams"),
        (("", "x", 10, 10), "sku"),
        (("X", "x", 1.5, 10), "integer"),
    ],
)
async def test_bad_products_are_rejected(shop: Store, args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await shop.catalog.upsert_product(*args)
    assert "X" not in {p.sku for p in await shop.catalog.products()}


async def test_bad_warehouse_country_is_rejected(shop: Store) -> None:
    with pytest.raises(ValueError, match="ISO"):
        await shop.catalog.upsert_warehouse("PAR-1", "Paris", "France", None)
    assert [w.code for w in await shop.catalog.warehouses()] == ["LDN-1", "NYC-1"]


async def test_seed_demo_seeds_once(store: Store) -> None:
    assert await seed_demo(store) is True
    assert await seed_demo(store) is False
    assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1", "NYC-1"]
    products = {p.sku: p for p in await store.catalog.products()}
    assert {"MUG-RED", "MUG-BLUE", "TEE-M", "TEE-L", "POSTER-A2", "BOOK-ADA"} <= set(products)
    assert (products["MUG-RED"].name, products["MUG-RED"].price_cents, products["MUG-RED"].weight_grams) == (
        "Red mug",
        1200,
        350,
    )
    levels = await store.stock.stock_levels()
    assert _level(levels, "MUG-RED", "LDN-1").on_hand == 50
    assert _level(levels, "MUG-RED", "NYC-1").on_hand == 20
    assert sum(x.on_hand for x in levels if x.sku == "POSTER-A2") == 0
    # Opening stock is in the ledger like any receipt.
    ledger = await store.stock.ledger(sku="MUG-RED")
    assert sum(e.delta_on_hand for e in ledger) == 70
    assert {e.kind for e in ledger} == {"receipt"}
    outcome = await store.reservations.reserve("ORD-1", [("POSTER-A2", 1)])
    assert (outcome.reserved, outcome.short) == (False, {"POSTER-A2": 1})


# ---------------------------------------------------------------------------------------------------------
# Stock


async def test_receive_and_show_stock(shop: Store) -> None:
    level = await shop.stock.receive_stock("MUG-RED", 10)  # no warehouse: the first by code
    assert level == StockLevel("MUG-RED", "LDN-1", 10, 0, 10)
    level = await shop.stock.receive_stock("MUG-RED", 5, "LDN-1", ref="PO-7", note="supplier delivery")
    assert level == StockLevel("MUG-RED", "LDN-1", 15, 0, 15)
    await shop.stock.receive_stock("MUG-RED", 3, "NYC-1")
    await shop.stock.receive_stock("TEE-M", 2, "NYC-1")

    assert await shop.stock.stock_levels() == [
        StockLevel("MUG-RED", "LDN-1", 15, 0, 15),
        StockLevel("MUG-RED", "NYC-1", 3, 0, 3),
        StockLevel("TEE-M", "NYC-1", 2, 0, 2),
    ]
    assert await shop.stock.stock_levels(sku="MUG-RED", warehouse="NYC-1") == [StockLevel("MUG-RED", "NYC-1", 3, 0, 3)]
    assert [x.sku for x in await shop.stock.stock_levels(warehouse="NYC-1")] == ["MUG-RED", "TEE-M"]

    ledger = await shop.stock.ledger(sku="MUG-RED")
    assert [(e.warehouse, e.delta_on_hand, e.delta_reserved, e.kind, e.ref, e.note) for e in ledger] == [
        ("LDN-1", 10, 0, "receipt", None, "receipt"),
        ("LDN-1", 5, 0, "receipt", "PO-7", "supplier delivery"),
        ("NYC-1", 3, 0, "receipt", None, "receipt"),
    ]
    assert all(e.at.tzinfo is UTC for e in ledger)


@pytest.mark.parametrize("qty", [0, -3, True, 2.0])
async def test_receive_rejects_non_positive_quantities(shop: Store, qty: object) -> None:
    await shop.stock.receive_stock("MUG-RED", 4, "LDN-1")
    with pytest.raises(ValueError, match="quantity"):
        await shop.stock.receive_stock("MUG-RED", qty, "LDN-1")  # type: ignore[arg-type]
    assert await shop.stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 4, 0, 4)]
    assert len(await shop.stock.ledger()) == 1


async def test_unknown_sku_and_warehouse_are_clear_errors(shop: Store) -> None:
    with pytest.raises(UnknownSkuError, match="unknown SKU 'NOPE'") as sku_err:
        await shop.stock.receive_stock("NOPE", 1, "LDN-1")
    assert sku_err.value.skus == ["NOPE"]
    with pytest.raises(UnknownWarehouseError, match=r"unknown warehouse 'PAR-1' \(known: LDN-1, NYC-1\)"):
        await shop.stock.receive_stock("MUG-RED", 1, "PAR-1")
    with pytest.raises(UnknownSkuError, match="'NOPE-A', 'NOPE-B'"):
        await shop.reservations.reserve("ORD-1", [("MUG-RED", 1), ("NOPE-B", 1), ("NOPE-A", 2)])
    with pytest.raises(UnknownWarehouseError):
        await shop.picks.create("ORD-1", 1, "PAR-1", [("MUG-RED", 1)])
    assert isinstance(sku_err.value, StoreError)
    # Nothing changed anywhere.
    assert await shop.stock.stock_levels() == []
    assert await shop.stock.ledger() == []
    assert await shop.reservations.reservations() == []
    assert await shop.backorders.backordered_orders() == []


async def test_receive_without_any_warehouse(store: Store) -> None:
    await store.catalog.upsert_product("MUG-RED", "Red mug", 1200, 350)
    with pytest.raises(UnknownWarehouseError, match="no warehouses"):
        await store.stock.receive_stock("MUG-RED", 1)


# ---------------------------------------------------------------------------------------------------------
# Reservations


async def test_reserve_happy_path(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 10, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 5, "LDN-1")
    outcome = await shop.reservations.reserve("ORD-1", [("TEE-M", 2), ("MUG-RED", 3)])
    assert outcome.reserved and outcome.warehouse == "LDN-1" and outcome.short == {}
    assert sorted(outcome.lines) == [("MUG-RED", 3), ("TEE-M", 2)]

    levels = await shop.stock.stock_levels()
    assert _level(levels, "MUG-RED", "LDN-1") == StockLevel("MUG-RED", "LDN-1", 10, 3, 7)
    assert _level(levels, "TEE-M", "LDN-1") == StockLevel("TEE-M", "LDN-1", 5, 2, 3)
    ledger = await shop.stock.ledger(ref="ORD-1")
    assert sorted((e.sku, e.delta_on_hand, e.delta_reserved, e.kind) for e in ledger) == [
        ("MUG-RED", 0, 3, "reservation"),
        ("TEE-M", 0, 2, "reservation"),
    ]
    assert sorted(
        (r.sku, r.warehouse, r.quantity, r.status) for r in await shop.reservations.reservations("ORD-1")
    ) == [
        ("MUG-RED", "LDN-1", 3, "held"),
        ("TEE-M", "LDN-1", 2, "held"),
    ]


async def test_reserve_is_idempotent_by_order(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 10, "LDN-1")
    first = await shop.reservations.reserve("ORD-1", [("MUG-RED", 3)])
    before = (await shop.stock.stock_levels(), await shop.stock.ledger(), await shop.reservations.reservations())
    # Same order again, even with other lines: the existing reservation comes back, nothing moves.
    again = await shop.reservations.reserve("ORD-1", [("MUG-RED", 3)])
    other = await shop.reservations.reserve("ORD-1", [("MUG-RED", 5)])
    assert first == again == other
    assert (
        await shop.stock.stock_levels(),
        await shop.stock.ledger(),
        await shop.reservations.reservations(),
    ) == before


async def test_reserve_picks_one_warehouse_that_covers_everything(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 5, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 1, "LDN-1")
    await shop.stock.receive_stock("MUG-RED", 2, "NYC-1")
    await shop.stock.receive_stock("TEE-M", 4, "NYC-1")
    # LDN-1 has more in total but cannot cover TEE-M x2; the order is never split.
    outcome = await shop.reservations.reserve("ORD-1", [("MUG-RED", 2), ("TEE-M", 2)])
    assert (outcome.reserved, outcome.warehouse) == (True, "NYC-1")
    # Both cover one T-shirt: the one with most available wins (NYC-1 has 2, LDN-1 has 1) ...
    assert (await shop.reservations.reserve("ORD-2", [("TEE-M", 1)])).warehouse == "NYC-1"
    # ... and on a tie (1 each) the first by code.
    assert (await shop.reservations.reserve("ORD-3", [("TEE-M", 1)])).warehouse == "LDN-1"


async def test_short_order_is_backordered_then_reserved_after_receipt(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 2, "LDN-1")
    await shop.stock.receive_stock("MUG-RED", 1, "NYC-1")
    await shop.stock.receive_stock("TEE-M", 1, "NYC-1")

    outcome = await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1), ("POSTER-A2", 2)])
    assert not outcome.reserved and outcome.warehouse is None
    # Best warehouse: both miss 4 units (NYC-1: 2 mugs + 2 posters; LDN-1: 1 mug, 1 tee, 2 posters) and
    # have 2 available in total, so the code decides: LDN-1 is the reference.
    assert outcome.short == {"MUG-RED": 1, "TEE-M": 1, "POSTER-A2": 2}
    assert sum(x.reserved for x in await shop.stock.stock_levels()) == 0
    assert await shop.reservations.reservations() == []
    assert await shop.stock.ledger(ref="ORD-1") == []

    await shop.reservations.reserve("ORD-2", [("POSTER-A2", 1)])
    assert await shop.backorders.backordered_orders() == ["ORD-1", "ORD-2"]
    assert await shop.backorders.backordered_orders(["POSTER-A2"]) == ["ORD-1", "ORD-2"]
    assert await shop.backorders.backordered_orders(["MUG-RED", "NOPE"]) == ["ORD-1"]
    assert await shop.backorders.backordered_orders([]) == []
    # Retrying while still short keeps one backorder row and its place in the queue.
    assert not (await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1), ("POSTER-A2", 2)])).reserved
    assert await shop.backorders.backordered_orders() == ["ORD-1", "ORD-2"]

    await shop.stock.receive_stock("MUG-RED", 1, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 1, "LDN-1")
    await shop.stock.receive_stock("POSTER-A2", 2, "LDN-1")
    outcome = await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1), ("POSTER-A2", 2)])
    assert (outcome.reserved, outcome.warehouse, outcome.short) == (True, "LDN-1", {})
    assert await shop.backorders.backordered_orders() == ["ORD-2"]
    [resolved] = [b for b in await shop.backorders.backorders(include_resolved=True) if b.order_id == "ORD-1"]
    assert resolved.resolved_at is not None and resolved.skus == ["MUG-RED", "POSTER-A2", "TEE-M"]
    assert _level(await shop.stock.stock_levels(), "POSTER-A2", "LDN-1") == StockLevel("POSTER-A2", "LDN-1", 2, 2, 0)


async def test_reserve_with_no_warehouses_reports_everything_short(store: Store) -> None:
    await store.catalog.upsert_product("MUG-RED", "Red mug", 1200, 350)
    outcome = await store.reservations.reserve("ORD-1", [("MUG-RED", 2)])
    assert (outcome.reserved, outcome.short) == (False, {"MUG-RED": 2})


@pytest.mark.parametrize("lines", [[], [("MUG-RED", 0)], [("MUG-RED", -1)], [("MUG-RED", 1), ("TEE-M", 0)]])
async def test_reserve_rejects_bad_lines(shop: Store, lines: list[tuple[str, int]]) -> None:
    await shop.stock.receive_stock("MUG-RED", 5, "LDN-1")
    with pytest.raises(ValueError):
        await shop.reservations.reserve("ORD-1", lines)
    assert await shop.stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 5, 0, 5)]
    assert await shop.reservations.reservations() == [] and await shop.backorders.backordered_orders() == []


async def test_release_is_idempotent(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 10, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 10, "LDN-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1)])
    assert await shop.reservations.release("ORD-1", note="cancelled by customer") == 4
    assert await shop.reservations.release("ORD-1") == 0
    assert await shop.reservations.release("ORD-NEVER") == 0
    levels = await shop.stock.stock_levels()
    assert _level(levels, "MUG-RED", "LDN-1") == StockLevel("MUG-RED", "LDN-1", 10, 0, 10)
    assert _level(levels, "TEE-M", "LDN-1") == StockLevel("TEE-M", "LDN-1", 10, 0, 10)
    releases = [e for e in await shop.stock.ledger(ref="ORD-1") if e.kind == "release"]
    assert sorted((e.sku, e.delta_on_hand, e.delta_reserved, e.note) for e in releases) == [
        ("MUG-RED", 0, -3, "cancelled by customer"),
        ("TEE-M", 0, -1, "cancelled by customer"),
    ]
    assert {r.status for r in await shop.reservations.reservations("ORD-1")} == {"released"}
    # After a release the order may reserve again (its rows are reused, not duplicated).
    again = await shop.reservations.reserve("ORD-1", [("MUG-RED", 2)])
    assert again.reserved and again.lines == [("MUG-RED", 2)]
    assert sorted((r.sku, r.quantity, r.status) for r in await shop.reservations.reservations("ORD-1")) == [
        ("MUG-RED", 2, "held"),
        ("TEE-M", 1, "released"),
    ]


async def test_release_ends_a_backorder_wait(shop: Store) -> None:
    await shop.reservations.reserve("ORD-1", [("POSTER-A2", 1)])
    assert await shop.backorders.backordered_orders() == ["ORD-1"]
    assert await shop.reservations.release("ORD-1") == 0
    assert await shop.backorders.backordered_orders() == []


async def test_commit_is_idempotent(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 10, "NYC-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 4)])
    assert await shop.reservations.commit_reservation("ORD-1") == 4
    assert await shop.reservations.commit_reservation("ORD-1") == 0
    assert await shop.reservations.release("ORD-1") == 0  # committed goods are gone, not released
    assert await shop.stock.stock_levels() == [StockLevel("MUG-RED", "NYC-1", 6, 0, 6)]
    [commit] = [e for e in await shop.stock.ledger(ref="ORD-1") if e.kind == "commit"]
    assert (commit.delta_on_hand, commit.delta_reserved) == (-4, -4)
    # A late retry of reserve does not take stock again for a shipped order.
    assert (await shop.reservations.reserve("ORD-1", [("MUG-RED", 4)])).reserved
    assert await shop.stock.stock_levels() == [StockLevel("MUG-RED", "NYC-1", 6, 0, 6)]


async def test_ledger_always_explains_stock(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 10, "LDN-1")
    await shop.reservations.reserve("A", [("MUG-RED", 3)])
    await shop.reservations.reserve("B", [("MUG-RED", 5)])
    await shop.reservations.reserve("C", [("MUG-RED", 5)])  # short
    await shop.reservations.release("A")
    await shop.reservations.commit_reservation("B")
    [level] = await shop.stock.stock_levels()
    ledger = await shop.stock.ledger()
    assert level.on_hand == sum(e.delta_on_hand for e in ledger) == 5
    assert level.reserved == sum(e.delta_reserved for e in ledger) == 0


# ---------------------------------------------------------------------------------------------------------
# Pick tasks


async def test_pick_task_create_is_idempotent_and_confirm(shop: Store) -> None:
    task = await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 2), ("TEE-M", 1)])
    assert task.id.startswith("PICK-") and len(task.id) == 13 and task.id[5:] == task.id[5:].upper()
    assert (task.status, task.confirmed_at, task.lines) == ("open", None, [("MUG-RED", 2), ("TEE-M", 1)])
    assert await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 2), ("TEE-M", 1)]) == task
    retry = await shop.picks.create("ORD-1", 2, "LDN-1", [("MUG-RED", 2)])
    assert retry.id != task.id
    assert await shop.picks.get(task.id) == task
    assert await shop.picks.get("PICK-NOPE") is None
    assert [x.id for x in await shop.picks.open_tasks()] == [task.id, retry.id]
    assert await shop.picks.open_tasks(older_than_s=3600) == []
    assert len(await shop.picks.open_tasks(older_than_s=0)) == 2

    confirmed = await shop.picks.confirm(task.id)
    assert confirmed.status == "confirmed" and confirmed.confirmed_at is not None
    assert confirmed.confirmed_at.tzinfo is UTC
    assert await shop.picks.confirm(task.id) == confirmed  # idempotent
    assert await shop.picks.get(task.id) == confirmed
    assert [x.id for x in await shop.picks.open_tasks()] == [retry.id]

    cancelled = await shop.picks.cancel(retry.id)
    assert cancelled.status == "cancelled" and await shop.picks.cancel(retry.id) == cancelled
    with pytest.raises(PickTaskClosed, match="cancelled"):
        await shop.picks.confirm(retry.id)
    with pytest.raises(PickTaskClosed, match="confirmed"):
        await shop.picks.cancel(task.id)
    with pytest.raises(PickTaskNotFound, match="PICK-NOPE"):
        await shop.picks.confirm("PICK-NOPE")
    assert [x.parcel_no for x in await shop.picks.for_order("ORD-1")] == [1, 2]
    assert await shop.picks.open_tasks() == []


async def test_pick_task_rejects_bad_input(shop: Store) -> None:
    with pytest.raises(ValueError):
        await shop.picks.create("ORD-1", 1, "LDN-1", [])
    with pytest.raises(ValueError):
        await shop.picks.create("ORD-1", -1, "LDN-1", [("MUG-RED", 1)])
    with pytest.raises(UnknownSkuError):
        await shop.picks.create("ORD-1", 1, "LDN-1", [("NOPE", 1)])
    assert await shop.picks.for_order("ORD-1") == []


# ---------------------------------------------------------------------------------------------------------
# Shipments


async def test_shipment_records(shop: Store) -> None:
    key = "label:ORD-1:1"
    assert await shop.labels.get(key) is None
    created = await shop.labels.record_carrier_shipment(key, "ORD-1", "shp_1")
    assert (created.status, created.carrier_shipment_id, created.tracking_number) == (
        "created",
        "shp_1",
        None,
    )
    # A concurrent/retried attempt that created another carrier shipment gets the first one back.
    assert await shop.labels.record_carrier_shipment(key, "ORD-1", "shp_2") == created

    label = await shop.labels.mark_purchased(
        key,
        carrier="SandboxPost",
        service="Ground",
        rate_cents=795,
        tracking_number="SP123",
        label_url="http://labels/1.pdf",
        tracking_url="http://track/SP123",
    )
    assert (label.status, label.carrier, label.service, label.rate_cents, label.tracking_number) == (
        "purchased",
        "SandboxPost",
        "Ground",
        795,
        "SP123",
    )
    assert label.carrier_shipment_id == "shp_1" and label.created_at == created.created_at
    assert await shop.labels.get(key) == label
    await shop.labels.record_carrier_shipment("label:ORD-1:2", "ORD-1", "shp_3")
    await shop.labels.record_carrier_shipment("label:ORD-2:1", "ORD-2", "shp_4")
    assert [s.key for s in await shop.labels.for_order("ORD-1")] == [key, "label:ORD-1:2"]

    voided = await shop.labels.mark_voided(key)
    assert voided.status == "voided" and (await shop.labels.mark_voided(key)).status == "voided"
    with pytest.raises(StoreError, match="voided"):
        await shop.labels.mark_purchased(
            key, carrier="c", service="s", rate_cents=1, tracking_number="t", label_url="l", tracking_url="u"
        )
    with pytest.raises(LabelNotFound):
        await shop.labels.mark_purchased(
            "label:X:1",
            carrier="c",
            service="s",
            rate_cents=1,
            tracking_number="t",
            label_url="l",
            tracking_url="u",
        )
    with pytest.raises(LabelNotFound):
        await shop.labels.mark_voided("label:X:1")


# ---------------------------------------------------------------------------------------------------------
# Notification log


async def test_claim_notification_semantics(store: Store) -> None:
    key = "notify:ORD-1:shipped:email"
    kwargs = {
        "order_id": "ORD-1",
        "event": "shipped",
        "channel": "email",
        "recipient": "ada@example.com",
        "subject": "Your order shipped",
        "body": "Tracking: SP123",
    }
    assert await store.notifications.claim_notification(key, **kwargs) is True
    # The sender crashed before marking: the key is still "sending", so a retry claims it again.
    assert await store.notifications.claim_notification(key, **kwargs) is True
    await store.notifications.mark_notification_failed(key, "SMTP 451 try later")
    [record] = await store.notifications.notifications("ORD-1")
    assert (record.status, record.error, record.attempts) == ("failed", "SMTP 451 try later", 2)
    assert await store.notifications.claim_notification(key, **kwargs) is True
    await store.notifications.mark_notification_sent(key, "msg-42")
    assert await store.notifications.claim_notification(key, **kwargs) is False
    assert await store.notifications.claim_notification(key, **kwargs) is False
    await store.notifications.mark_notification_failed(key, "late failure report")  # never downgrades a sent message
    [record] = await store.notifications.notifications()
    assert (record.status, record.provider_message_id, record.error, record.attempts) == (
        "sent",
        "msg-42",
        None,
        3,
    )
    assert record.sent_at is not None and record.sent_at.tzinfo is UTC
    assert (record.recipient, record.subject, record.body) == (
        "ada@example.com",
        "Your order shipped",
        "Tracking: SP123",
    )

    sms_key = "notify:ORD-1:shipped:sms"
    sms = {**kwargs, "channel": "sms", "subject": None}
    assert await store.notifications.claim_notification(sms_key, **sms) is True  # type: ignore[arg-type]
    assert [n.key for n in await store.notifications.notifications("ORD-1")] == [key, sms_key]
    assert await store.notifications.notifications("ORD-2") == []
    with pytest.raises(StoreError):
        await store.notifications.mark_notification_sent("notify:nope:x:email", "id")
    with pytest.raises(StoreError):
        await store.notifications.mark_notification_failed("notify:nope:x:email", "err")


async def test_timestamps_are_utc(shop: Store) -> None:
    before = datetime.now(UTC)
    await shop.stock.receive_stock("MUG-RED", 1, "LDN-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 1)])
    [reservation] = await shop.reservations.reservations()
    assert reservation.created_at.tzinfo is UTC and before <= reservation.created_at <= datetime.now(UTC)


async def test_short_pick_corrects_on_hand_and_the_order_reservation_once(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 5, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 5, "LDN-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1)], prefer_country="GB", prefer_region="LDN")
    task = await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 3), ("TEE-M", 1)])
    before = _level(await shop.stock.stock_levels(), "MUG-RED", "LDN-1")

    with pytest.raises(StoreError, match="has no line for POSTER-A2"):
        await shop.picks.confirm(task.id, {"POSTER-A2": 1})
    with pytest.raises(StoreError, match="must be between 1 and the 3 to pick"):
        await shop.picks.confirm(task.id, {"MUG-RED": 4})
    assert (await shop.picks.get(task.id)).status == "open"  # type: ignore[union-attr]

    short = await shop.picks.confirm(task.id, {"MUG-RED": 2})
    assert (short.status, short.short) == ("confirmed", {"MUG-RED": 2})
    assert await shop.picks.confirm(task.id, {"MUG-RED": 2}) == short  # the same confirmation again: no-op
    after = _level(await shop.stock.stock_levels(), "MUG-RED", "LDN-1")
    # Two units were never on the shelf: on hand and the order's reservation drop by 2, available is unchanged.
    assert (after.on_hand, after.reserved, after.available) == (
        before.on_hand - 2,
        before.reserved - 2,
        before.available,
    )
    held = {r.sku: r.quantity for r in await shop.reservations.reservations("ORD-1") if r.status == "held"}
    assert held == {"MUG-RED": 1, "TEE-M": 1}
    [entry] = [e for e in await shop.stock.stock_history("MUG-RED") if e.kind == "adjustment" and e.ref == task.id]
    assert (entry.delta_on_hand, entry.delta_reserved) == (-2, -2)


async def test_restock_wakes_backorders_in_order_and_only_what_it_covers(shop: Store) -> None:
    for order_id, qty in (("ORD-1", 3), ("ORD-2", 1), ("ORD-3", 1)):
        assert not (await shop.reservations.reserve(order_id, [("POSTER-A2", qty)])).reserved
    await shop.reservations.reserve("ORD-4", [("POSTER-A2", 1), ("TEE-M", 99)])  # also short of shirts

    await shop.stock.receive_stock("POSTER-A2", 2, "LDN-1")
    assert await shop.backorders.backorders_to_wake("POSTER-A2") == []  # the oldest needs 3: nobody jumps the queue
    await shop.stock.receive_stock("POSTER-A2", 2, "LDN-1")
    assert await shop.backorders.backorders_to_wake("POSTER-A2") == [
        "ORD-1",
        "ORD-2",
    ]  # 4 units: 3 + 1; ORD-4 lacks shirts
    [waiting] = [b for b in await shop.backorders.backorders() if b.order_id == "ORD-4"]
    assert waiting.needs == {"POSTER-A2": 1, "TEE-M": 99}


async def test_allocate_splits_or_ships_what_is_there(shop: Store) -> None:
    await shop.stock.receive_stock("TEE-M", 25, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 5, "NYC-1")
    split = await shop.reservations.allocate("ORD-1", [("TEE-M", 27)], prefer_country="GB", prefer_region="LDN")
    assert (split.shipments, split.short) == ([(1, "LDN-1", [("TEE-M", 25)]), (2, "NYC-1", [("TEE-M", 2)])], {})
    assert await shop.reservations.allocate("ORD-1", [("TEE-M", 27)]) == split  # a retry returns what was reserved

    nothing = await shop.reservations.allocate("ORD-2", [("TEE-M", 5), ("POSTER-A2", 1)])
    assert (nothing.shipments, nothing.short) == ([], {"TEE-M": 2, "POSTER-A2": 1})
    assert await shop.backorders.backordered_orders() == ["ORD-2"]
    some = await shop.reservations.allocate("ORD-2", [("TEE-M", 5), ("POSTER-A2", 1)], allow_partial=True)
    assert (some.shipments, some.short) == ([(1, "NYC-1", [("TEE-M", 3)])], {"POSTER-A2": 1, "TEE-M": 2})
    [waiting] = await shop.backorders.backorders()
    assert waiting.needs == {"POSTER-A2": 1, "TEE-M": 2}
