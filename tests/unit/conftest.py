"""Fixtures of the unit tests of the stores: a Store on a fresh SQLite file, and a small shop in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.inventory.contracts import StockLevel
from common.store import Store


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # A missing parent directory on purpose: the engine creates it.
    s = await Store.open(sqlite_url(tmp_path / "var" / "fulfill.db"))
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


def level_of(levels: list[StockLevel], sku: str, warehouse: str) -> StockLevel:
    [level] = [x for x in levels if x.sku == sku and x.warehouse == warehouse]
    return level
