"""Stock, reservations, backorders and the ledger on a real SQLite file."""

from __future__ import annotations

from datetime import UTC

import pytest

from common.catalog.contracts import UnknownSkuError, UnknownWarehouseError
from common.db.errors import StoreError
from common.inventory.contracts import StockLevel
from common.store import Store
from tests.unit.conftest import level_of

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
    assert level_of(levels, "MUG-RED", "LDN-1") == StockLevel("MUG-RED", "LDN-1", 10, 3, 7)
    assert level_of(levels, "TEE-M", "LDN-1") == StockLevel("TEE-M", "LDN-1", 5, 2, 3)
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
    assert level_of(await shop.stock.stock_levels(), "POSTER-A2", "LDN-1") == StockLevel("POSTER-A2", "LDN-1", 2, 2, 0)


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
    assert level_of(levels, "MUG-RED", "LDN-1") == StockLevel("MUG-RED", "LDN-1", 10, 0, 10)
    assert level_of(levels, "TEE-M", "LDN-1") == StockLevel("TEE-M", "LDN-1", 10, 0, 10)
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
