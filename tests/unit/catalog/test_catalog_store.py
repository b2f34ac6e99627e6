"""The catalogue store on a real SQLite file: products, warehouses, the demo seed."""

from __future__ import annotations

from datetime import UTC

import pytest

from common.demo import seed_demo
from common.store import Store
from tests.unit.conftest import level_of

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
    assert level_of(levels, "MUG-RED", "LDN-1").on_hand == 50
    assert level_of(levels, "MUG-RED", "NYC-1").on_hand == 20
    assert sum(x.on_hand for x in levels if x.sku == "POSTER-A2") == 0
    # Opening stock is in the ledger like any receipt.
    ledger = await store.stock.ledger(sku="MUG-RED")
    assert sum(e.delta_on_hand for e in ledger) == 70
    assert {e.kind for e in ledger} == {"receipt"}
    outcome = await store.reservations.reserve("ORD-1", [("POSTER-A2", 1)])
    assert (outcome.reserved, outcome.short) == (False, {"POSTER-A2": 1})
