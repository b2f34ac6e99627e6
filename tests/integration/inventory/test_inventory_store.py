"""Inventory in the Store on real SQLite and PostgreSQL: allocation (preferred region, split plans,
shipments), counts and adjustments (newest-first release), returns, purchase orders and the real-time view,
low-stock crossings, demand history, the ledger and imports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from common.catalog.contracts import InvalidRows, ProductImport, UnknownSkuError, UnknownWarehouseError, WarehouseImport
from common.db import tables as t
from common.db.engine import create_engine, run_migrations
from common.db.errors import StoreError
from common.inventory.contracts import (
    InventoryPosition,
    PurchaseOrderClosed,
    PurchaseOrderNotFound,
    StockImport,
    StockLevel,
)
from common.store import Store
from tests.integration.db_fixtures import BACKENDS, database_url


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        await s.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
        await s.catalog.upsert_warehouse("MAN-1", "Manchester", "GB", "MAN")
        await s.catalog.upsert_warehouse("NYC-1", "New York", "US", "NY")
        for sku in ("MUG-RED", "TEE-M", "BOOK-ADA"):
            await s.catalog.upsert_product(sku, sku.title(), 1000, 100)
        yield s
    finally:
        await s.close()


async def _stock(store: Store, stock: dict[tuple[str, str], int]) -> None:
    for (sku, wh), qty in stock.items():
        await store.stock.receive_stock(sku, qty, wh, ref="PO-0")


async def _assert_ledger_explains_stock(store: Store) -> None:
    ledger = await store.stock.ledger()
    for level in await store.stock.stock_levels():
        rows = [e for e in ledger if (e.sku, e.warehouse) == (level.sku, level.warehouse)]
        assert sum(e.delta_on_hand for e in rows) == level.on_hand, level
        assert sum(e.delta_reserved for e in rows) == level.reserved, level


def _levels(levels: list[StockLevel]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(x.sku, x.warehouse): (x.on_hand, x.reserved) for x in levels}


# ---------------------------------------------------------------------------------------------------------
# Allocation


async def test_reserve_prefers_region_then_country_then_most_available(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 5, ("MUG-RED", "MAN-1"): 8, ("MUG-RED", "NYC-1"): 20})
    assert (await store.reservations.reserve("A", [("MUG-RED", 1)])).warehouse == "NYC-1"  # most available
    assert (
        await store.reservations.reserve("B", [("MUG-RED", 1)], prefer_country="GB", prefer_region="LDN")
    ).warehouse == "LDN-1"
    assert (
        await store.reservations.reserve("C", [("MUG-RED", 1)], prefer_country="GB", prefer_region="MAN")
    ).warehouse == "MAN-1"
    # Country only (or a region with no warehouse): the country's warehouse with most available.
    assert (await store.reservations.reserve("D", [("MUG-RED", 1)], prefer_country="GB")).warehouse == "MAN-1"
    assert (
        await store.reservations.reserve("E", [("MUG-RED", 1)], prefer_country="GB", prefer_region="Kent")
    ).warehouse == "MAN-1"
    assert (
        await store.reservations.reserve("F", [("MUG-RED", 1)], prefer_country="US", prefer_region="NY")
    ).warehouse == "NYC-1"
    # The preferred warehouse cannot ship the whole order: another one that can does.
    # (LDN-1 has 4 left, MAN-1 5, NYC-1 18.)
    outcome = await store.reservations.reserve("G", [("MUG-RED", 5)], prefer_country="GB", prefer_region="LDN")
    assert outcome.warehouse == "MAN-1"
    # Idempotent by order, whatever the preference says the second time.
    again = await store.reservations.reserve("B", [("MUG-RED", 1)], prefer_country="US", prefer_region="NY")
    assert (again.reserved, again.warehouse) == (True, "LDN-1")
    assert len(await store.stock.ledger(ref="B")) == 1
    await _assert_ledger_explains_stock(store)


async def test_reserve_keeps_backorder_behaviour(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 2, ("MUG-RED", "NYC-1"): 3})
    outcome = await store.reservations.reserve("A", [("MUG-RED", 4)], prefer_country="GB", prefer_region="LDN")
    assert (outcome.reserved, outcome.warehouse, outcome.short) == (False, None, {"MUG-RED": 1})
    assert await store.backorders.backordered_orders(["MUG-RED"]) == ["A"]
    assert await store.reservations.reservations("A") == []


async def test_plan_allocation(store: Store) -> None:
    await _stock(
        store,
        {
            ("MUG-RED", "LDN-1"): 3,
            ("MUG-RED", "MAN-1"): 3,
            ("TEE-M", "MAN-1"): 2,
            ("MUG-RED", "NYC-1"): 10,
            ("TEE-M", "NYC-1"): 1,
        },
    )
    # One warehouse covers: the one reserve would pick.
    assert await store.reservations.plan_allocation([("MUG-RED", 2)], "GB", "LDN") == [("LDN-1", [("MUG-RED", 2)])]
    assert await store.reservations.plan_allocation([("MUG-RED", 2), ("TEE-M", 1)], "GB", "LDN") == [
        ("MAN-1", [("MUG-RED", 2), ("TEE-M", 1)])
    ]
    # No single warehouse has 3 tees: fewest warehouses, the ship-to country's first.
    assert await store.reservations.plan_allocation([("MUG-RED", 2), ("TEE-M", 3)], "GB", "LDN") == [
        ("MAN-1", [("MUG-RED", 2), ("TEE-M", 2)]),
        ("NYC-1", [("TEE-M", 1)]),
    ]
    assert await store.reservations.plan_allocation([("MUG-RED", 5), ("TEE-M", 3)], "US", "NY") == [
        ("NYC-1", [("MUG-RED", 5), ("TEE-M", 1)]),
        ("MAN-1", [("TEE-M", 2)]),
    ]
    # Held stock is not available to a plan.
    await store.reservations.reserve("A", [("TEE-M", 1)], prefer_country="US")
    assert await store.reservations.plan_allocation([("TEE-M", 3)], "GB", None) == []
    with pytest.raises(UnknownSkuError):
        await store.reservations.plan_allocation([("NOPE", 1)])
    assert await store.reservations.reservations("PLAN") == []  # planning reserves nothing


async def test_reserve_in_shipments(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 3, ("MUG-RED", "NYC-1"): 10, ("TEE-M", "NYC-1"): 2})
    await store.reservations.reserve("A", [("MUG-RED", 20)])  # short: backordered
    plan = await store.reservations.plan_allocation([("MUG-RED", 12), ("TEE-M", 1)], "GB", "LDN")
    assert plan == [("LDN-1", [("MUG-RED", 3)]), ("NYC-1", [("MUG-RED", 9), ("TEE-M", 1)])]
    outcomes = [await store.reservations.reserve_in("A", n, wh, lines) for n, (wh, lines) in enumerate(plan, start=1)]
    assert [(o.reserved, o.warehouse) for o in outcomes] == [(True, "LDN-1"), (True, "NYC-1")]
    assert await store.backorders.backordered_orders() == []  # the order no longer waits
    # Idempotent by (order, shipment): a retry changes nothing, even with other lines.
    again = await store.reservations.reserve_in("A", 2, "NYC-1", [("MUG-RED", 9)])
    assert (again.reserved, again.warehouse, again.lines) == (True, "NYC-1", [("MUG-RED", 9), ("TEE-M", 1)])
    assert len(await store.stock.ledger(ref="A")) == 3
    assert _levels(await store.stock.stock_levels()) == {
        ("MUG-RED", "LDN-1"): (3, 3),
        ("MUG-RED", "NYC-1"): (10, 9),
        ("TEE-M", "NYC-1"): (2, 1),
    }
    assert {(r.shipment_no, r.warehouse, r.sku, r.quantity) for r in await store.reservations.reservations("A")} == {
        (1, "LDN-1", "MUG-RED", 3),
        (2, "NYC-1", "MUG-RED", 9),
        (2, "NYC-1", "TEE-M", 1),
    }
    # The whole-order reserve sees the order as reserved.
    assert (await store.reservations.reserve("A", [("MUG-RED", 12), ("TEE-M", 1)])).reserved

    # A part the warehouse cannot cover: nothing written.
    short = await store.reservations.reserve_in("B", 1, "LDN-1", [("MUG-RED", 1)])
    assert (short.reserved, short.warehouse, short.short) == (False, "LDN-1", {"MUG-RED": 1})
    assert await store.reservations.reservations("B") == []
    with pytest.raises(UnknownWarehouseError):
        await store.reservations.reserve_in("B", 1, "PAR-1", [("MUG-RED", 1)])
    with pytest.raises(ValueError, match="shipment_no"):
        await store.reservations.reserve_in("B", 0, "LDN-1", [("MUG-RED", 1)])

    # Shipments settle one by one.
    assert await store.reservations.commit_reservation("A", shipment_no=1) == 3
    assert await store.reservations.commit_reservation("A", shipment_no=1) == 0
    assert await store.reservations.release("A", shipment_no=2) == 10
    assert _levels(await store.stock.stock_levels()) == {
        ("MUG-RED", "LDN-1"): (0, 0),
        ("MUG-RED", "NYC-1"): (10, 0),
        ("TEE-M", "NYC-1"): (2, 0),
    }
    # Released shipment 2 can be held again.
    assert (await store.reservations.reserve_in("A", 2, "NYC-1", [("MUG-RED", 2)])).reserved
    assert await store.reservations.release("A") == 2
    await _assert_ledger_explains_stock(store)


# ---------------------------------------------------------------------------------------------------------
# First come, first served on restock (review finding 15)


async def test_finding_15_a_restock_goes_to_the_oldest_backorder_not_to_new_orders_or_younger_rechecks(
    store: Store,
) -> None:
    assert (await store.reservations.allocate("OLD", [("MUG-RED", 3)])).short == {"MUG-RED": 3}
    assert (await store.reservations.allocate("YOUNG", [("MUG-RED", 1)])).short == {"MUG-RED": 1}
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")
    await store.stock.receive_stock("MUG-RED", 1, "MAN-1")  # 3 in all: exactly what OLD waits for

    # A brand-new order, and YOUNG's periodic recheck (wait for all, or ship what is there): nothing of it.
    for order_id, partial in (("NEW", False), ("YOUNG", False), ("YOUNG", True), ("NEW-2", True)):
        got = await store.reservations.allocate(order_id, [("MUG-RED", 1)], allow_partial=partial)
        assert (got.shipments, got.short) == ([], {"MUG-RED": 1}), (order_id, got)
    assert await store.backorders.backorders_to_wake("MUG-RED") == ["OLD"]
    old = await store.reservations.allocate("OLD", [("MUG-RED", 3)], prefer_country="GB", prefer_region="LDN")
    assert (old.shipments, old.short) == ([(1, "LDN-1", [("MUG-RED", 2)]), (2, "MAN-1", [("MUG-RED", 1)])], {})

    # The next unit is YOUNG's (it waited before NEW and NEW-2 did).
    await store.stock.receive_stock("MUG-RED", 1, "NYC-1")
    assert (await store.reservations.allocate("NEW", [("MUG-RED", 1)])).shipments == []
    assert (await store.reservations.allocate("YOUNG", [("MUG-RED", 1)])).shipments == [(1, "NYC-1", [("MUG-RED", 1)])]
    assert await store.backorders.backordered_orders() == ["NEW", "NEW-2"]
    await _assert_ledger_explains_stock(store)


async def test_finding_15_b_the_oldest_keeps_what_it_needs_but_one_short_of_another_sku_is_passed_over(
    store: Store,
) -> None:
    # BLOCKED waits for a tee nobody has; OLD for 3 mugs; YOUNG for 1 mug.
    assert (await store.reservations.allocate("BLOCKED", [("MUG-RED", 1), ("TEE-M", 1)])).shipments == []
    assert (await store.reservations.allocate("OLD", [("MUG-RED", 3)])).shipments == []
    assert (await store.reservations.allocate("YOUNG", [("MUG-RED", 1)])).shipments == []
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")
    # OLD needs more than is there: it keeps the 2 for itself; BLOCKED cannot go ahead and takes none.
    assert (await store.reservations.allocate("YOUNG", [("MUG-RED", 1)])).shipments == []
    assert await store.backorders.backorders_to_wake("MUG-RED") == []
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")  # 4: OLD's 3, and 1 for YOUNG (BLOCKED still lacks tees)
    assert await store.backorders.backorders_to_wake("MUG-RED") == ["OLD", "YOUNG"]
    assert (await store.reservations.allocate("YOUNG", [("MUG-RED", 1)])).shipments == [(1, "LDN-1", [("MUG-RED", 1)])]
    assert (await store.reservations.allocate("OLD", [("MUG-RED", 3)])).shipments == [(1, "LDN-1", [("MUG-RED", 3)])]
    # A tee arrives, but no mug is left for BLOCKED: still short, it is passed over and a new order gets the tee.
    await store.stock.receive_stock("TEE-M", 1, "LDN-1")
    assert await store.backorders.backorders_to_wake("TEE-M") == []
    assert (await store.reservations.allocate("NEW", [("TEE-M", 1)])).shipments == [(1, "LDN-1", [("TEE-M", 1)])]
    assert await store.backorders.backordered_orders() == ["BLOCKED"]
    await _assert_ledger_explains_stock(store)


# ---------------------------------------------------------------------------------------------------------
# Counts, adjustments, returns


async def test_count_records_the_difference_with_its_reason(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10})
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 7, reason="3 broken")
    assert (change.previous_on_hand, change.on_hand, change.delta, change.released_orders) == (10, 7, -3, [])
    entry = (await store.stock.ledger(sku="MUG-RED"))[-1]
    assert (entry.id, entry.kind, entry.delta_on_hand, entry.delta_reserved) == (change.ledger_id, "count", -3, 0)
    assert entry.note == "count: 3 broken" and entry.at.tzinfo is UTC
    # A count that finds what was expected is recorded too (with no difference).
    same = await store.counts.count_stock("MUG-RED", "LDN-1", 7)
    assert same.delta == 0 and (await store.stock.ledger())[-1].kind == "count"
    # First count at a warehouse without stock yet.
    first = await store.counts.count_stock("TEE-M", "NYC-1", 4, reason="found")
    assert (first.previous_on_hand, first.on_hand) == (0, 4)
    await _assert_ledger_explains_stock(store)


async def test_count_below_reserved_releases_newest_orders_first(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10, ("TEE-M", "LDN-1"): 5})
    await store.reservations.reserve("OLD", [("MUG-RED", 3)])
    await store.reservations.reserve("MID", [("MUG-RED", 2), ("TEE-M", 1)])
    await store.reservations.reserve("NEW", [("MUG-RED", 2)])
    await store.reservations.commit_reservation("OLD")  # shipped: on hand 7, reserved 4 (MID 2, NEW 2)

    # 3 counted < 4 reserved: NEW (newest) is released; 2 reserved now fit.
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 3, reason="shelf count")
    assert change.released_orders == ["NEW"]
    assert (change.on_hand, change.reserved, change.available) == (3, 2, 1)
    # 1 counted < 2 reserved: MID goes, with all its lines (its tee too).
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 1, reason="shelf count")
    assert change.released_orders == ["MID"]
    assert _levels(await store.stock.stock_levels()) == {("MUG-RED", "LDN-1"): (1, 0), ("TEE-M", "LDN-1"): (5, 0)}
    assert {r.order_id: r.status for r in await store.reservations.reservations()} == {
        "OLD": "committed",
        "MID": "released",
        "NEW": "released",
    }
    # Released orders wait for stock again (oldest in the queue first) and re-reserve normally.
    assert sorted(await store.backorders.backordered_orders(["MUG-RED"])) == ["MID", "NEW"]
    releases = [e for e in await store.stock.ledger() if e.kind == "release"]
    assert {e.ref for e in releases} == {"MID", "NEW"}
    assert all(e.note.startswith("stock short at LDN-1") for e in releases)
    await store.stock.receive_stock("MUG-RED", 5, "LDN-1")
    assert (await store.reservations.reserve("MID", [("MUG-RED", 2), ("TEE-M", 1)])).reserved
    assert await store.backorders.backordered_orders() == ["NEW"]
    await _assert_ledger_explains_stock(store)


async def test_count_releases_as_many_orders_as_needed(store: Store) -> None:
    await _stock(store, {("MUG-RED", "NYC-1"): 10})
    for i in range(5):
        await store.reservations.reserve(f"ORD-{i}", [("MUG-RED", 2)])
    change = await store.counts.count_stock("MUG-RED", "NYC-1", 5)
    assert change.released_orders == ["ORD-4", "ORD-3", "ORD-2"]
    assert (change.on_hand, change.reserved) == (5, 4)
    change = await store.counts.count_stock("MUG-RED", "NYC-1", 0)
    assert change.released_orders == ["ORD-1", "ORD-0"]
    await _assert_ledger_explains_stock(store)


async def test_bad_counts_change_nothing(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10})
    await store.reservations.reserve("A", [("MUG-RED", 4)])
    before = (await store.stock.stock_levels(), await store.stock.ledger(), await store.reservations.reservations())
    with pytest.raises(ValueError, match="counted quantity must be >= 0"):
        await store.counts.count_stock("MUG-RED", "LDN-1", -1)
    with pytest.raises(UnknownSkuError, match="NOPE"):
        await store.counts.count_stock("NOPE", "LDN-1", 1)
    with pytest.raises(UnknownWarehouseError, match="PAR-1"):
        await store.counts.count_stock("MUG-RED", "PAR-1", 1)
    with pytest.raises(StoreError, match="would leave -1 on hand"):
        await store.counts.adjust_stock("MUG-RED", "LDN-1", -11, reason="lost")
    with pytest.raises(ValueError, match="non-zero"):
        await store.counts.adjust_stock("MUG-RED", "LDN-1", 0, reason="nothing")
    with pytest.raises(ValueError, match="reason"):
        await store.counts.adjust_stock("MUG-RED", "LDN-1", 1, reason="")
    assert (
        await store.stock.stock_levels(),
        await store.stock.ledger(),
        await store.reservations.reservations(),
    ) == before


async def test_adjust(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10})
    await store.reservations.reserve("A", [("MUG-RED", 8)])
    change = await store.counts.adjust_stock("MUG-RED", "LDN-1", -3, reason="water damage", ref="INC-7")
    assert (change.delta, change.on_hand, change.released_orders) == (-3, 7, ["A"])
    entry = (await store.stock.ledger(sku="MUG-RED"))[-1]
    assert (entry.kind, entry.delta_on_hand, entry.ref, entry.note) == ("adjustment", -3, "INC-7", "water damage")
    assert (await store.counts.adjust_stock("MUG-RED", "LDN-1", 2, reason="found")).on_hand == 9
    await _assert_ledger_explains_stock(store)


async def test_returns_are_idempotent_by_reference(store: Store) -> None:
    level = await store.stock.return_stock("MUG-RED", 2, "NYC-1", ref="RMA-1")
    assert level == StockLevel("MUG-RED", "NYC-1", 2, 0, 2)
    assert await store.stock.return_stock("MUG-RED", 2, "NYC-1", ref="RMA-1") == level
    [entry] = await store.stock.ledger(ref="RMA-1")
    assert (entry.kind, entry.delta_on_hand, entry.note) == ("return", 2, "customer return")
    assert (await store.stock.return_stock("MUG-RED", 1, "NYC-1", ref="RMA-2")).on_hand == 3


# ---------------------------------------------------------------------------------------------------------
# Purchase orders and the real-time view


async def test_expected_receipts_are_incoming_until_received(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 4})
    await store.reservations.reserve("A", [("MUG-RED", 1)])
    po = await store.purchase_orders.expect_receipt(
        "MUG-RED", 20, "LDN-1", eta=date(2030, 1, 5), po="PO-7", note="Acme"
    )
    assert (po.id, po.status, po.eta, po.note) == ("PO-7", "open", date(2030, 1, 5), "Acme")
    auto = await store.purchase_orders.expect_receipt("MUG-RED", 5, "LDN-1")
    assert auto.id.startswith("PO-") and auto.eta is None
    await store.purchase_orders.expect_receipt("TEE-M", 6, "NYC-1", eta=date(2030, 2, 1))
    # The same PO again: unchanged; different details: refused.
    assert await store.purchase_orders.expect_receipt("MUG-RED", 20, "LDN-1", eta=date(2030, 1, 5), po="PO-7") == po
    with pytest.raises(StoreError, match="already exists"):
        await store.purchase_orders.expect_receipt("MUG-RED", 21, "LDN-1", po="PO-7")

    assert await store.stock.inventory_positions() == [
        InventoryPosition("MUG-RED", "LDN-1", 4, 1, 3, 25, date(2030, 1, 5), None),
        InventoryPosition("TEE-M", "NYC-1", 0, 0, 0, 6, date(2030, 2, 1), None),
    ]
    assert [p.id for p in await store.purchase_orders.purchase_orders("MUG-RED")] == ["PO-7", auto.id]

    with pytest.raises(StoreError, match="is for MUG-RED, not TEE-M"):
        await store.stock.receive_stock("TEE-M", 20, po="PO-7")
    with pytest.raises(StoreError, match="due at LDN-1, not NYC-1"):
        await store.stock.receive_stock("MUG-RED", 20, "NYC-1", po="PO-7")
    with pytest.raises(PurchaseOrderNotFound):
        await store.stock.receive_stock("MUG-RED", 20, po="PO-NOPE")
    level = await store.stock.receive_stock("MUG-RED", 18, po="PO-7")  # the PO's warehouse; short delivery
    assert level == StockLevel("MUG-RED", "LDN-1", 22, 1, 21)
    [entry] = await store.stock.ledger(ref="PO-7")
    assert (entry.kind, entry.delta_on_hand) == ("receipt", 18)
    [closed] = [p for p in await store.purchase_orders.purchase_orders(open_only=False) if p.id == "PO-7"]
    assert (closed.status, closed.received_quantity) == ("received", 18) and closed.closed_at is not None
    with pytest.raises(PurchaseOrderClosed, match="already received"):
        await store.stock.receive_stock("MUG-RED", 18, po="PO-7")
    assert (await store.stock.inventory_positions("MUG-RED"))[0].incoming == 5

    assert (await store.purchase_orders.cancel_purchase_order(auto.id)).status == "cancelled"
    assert (await store.purchase_orders.cancel_purchase_order(auto.id)).status == "cancelled"
    with pytest.raises(PurchaseOrderClosed):
        await store.purchase_orders.cancel_purchase_order("PO-7")
    assert (await store.stock.inventory_positions("MUG-RED"))[0].incoming == 0
    await _assert_ledger_explains_stock(store)


# ---------------------------------------------------------------------------------------------------------
# Low stock


async def test_low_stock_crossings_once_per_crossing(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10, ("TEE-M", "LDN-1"): 10})
    assert await store.stock.set_reorder_point("MUG-RED", "LDN-1", 5) == []
    first = await store.reservations.reserve("A", [("MUG-RED", 4), ("TEE-M", 1)])
    assert first.low_stock == []  # 6 available > 5
    second = await store.reservations.reserve("B", [("MUG-RED", 1)])
    assert second.low_stock == ["MUG-RED"]  # 5 available: crossed
    [crossing] = await store.stock.low_stock_crossings(open_only=True)
    assert (crossing.sku, crossing.warehouse, crossing.available, crossing.reorder_point) == ("MUG-RED", "LDN-1", 5, 5)
    # Further down: still the same crossing, no new one.
    assert (await store.reservations.reserve("C", [("MUG-RED", 2)])).low_stock == ["MUG-RED"]
    assert len(await store.stock.low_stock_crossings()) == 1
    # A retried reserve still reports the pending alert.
    assert (await store.reservations.reserve("C", [("MUG-RED", 2)])).low_stock == ["MUG-RED"]
    await store.stock.mark_low_stock_alerted(crossing.id)
    assert (await store.reservations.reserve("D", [("MUG-RED", 1)])).low_stock == []  # alerted already
    # Back above: re-armed; down again: a new crossing.
    await store.stock.receive_stock("MUG-RED", 10, "LDN-1")
    [rearmed] = await store.stock.low_stock_crossings()
    assert rearmed.rearmed_at is not None and rearmed.alerted_at is not None
    assert await store.stock.low_stock_crossings(open_only=True) == []
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 8, reason="count")
    assert change.available == 8 - 8  # A 4, B 1, C 2, D 1 reserved
    [again] = await store.stock.low_stock_crossings(pending_only=True)
    assert again.id != crossing.id and again.available == 0
    # Releasing raises available again; clearing the reorder point closes a crossing too.
    await store.reservations.release("A")
    assert await store.stock.low_stock_crossings(open_only=True) != []  # 4 available, still <= 5
    await store.stock.set_reorder_point("MUG-RED", "LDN-1", None)
    assert await store.stock.low_stock_crossings(open_only=True) == []
    # Setting a reorder point above what is available opens a crossing straight away.
    opened = await store.stock.set_reorder_points({("TEE-M", "LDN-1"): 10, ("BOOK-ADA", "NYC-1"): 0})
    assert [(c.sku, c.warehouse, c.available) for c in opened] == [("BOOK-ADA", "NYC-1", 0), ("TEE-M", "LDN-1", 10)]
    assert (await store.stock.inventory_positions("BOOK-ADA"))[0].reorder_point == 0
    with pytest.raises(ValueError, match="reorder point"):
        await store.stock.set_reorder_point("TEE-M", "LDN-1", -1)
    await _assert_ledger_explains_stock(store)


# ---------------------------------------------------------------------------------------------------------
# History, demand


async def test_stock_history_newest_first(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10, ("MUG-RED", "NYC-1"): 3, ("TEE-M", "LDN-1"): 1})
    await store.reservations.reserve("A", [("MUG-RED", 2)], prefer_country="GB")
    await store.reservations.commit_reservation("A")
    await store.counts.count_stock("MUG-RED", "LDN-1", 7, reason="broken")
    history = await store.stock.stock_history("MUG-RED")
    assert [(e.kind, e.warehouse, e.delta_on_hand, e.delta_reserved, e.ref) for e in history] == [
        ("count", "LDN-1", -1, 0, None),
        ("commit", "LDN-1", -2, -2, "A"),
        ("reservation", "LDN-1", 0, 2, "A"),
        ("receipt", "NYC-1", 3, 0, "PO-0"),
        ("receipt", "LDN-1", 10, 0, "PO-0"),
    ]
    assert [e.kind for e in await store.stock.stock_history("MUG-RED", "LDN-1", limit=2)] == ["count", "commit"]
    with pytest.raises(UnknownSkuError):
        await store.stock.stock_history("NOPE")
    with pytest.raises(UnknownWarehouseError):
        await store.stock.stock_history("MUG-RED", "PAR-1")


async def test_demand_history_counts_held_and_committed(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 20})
    for order, qty in (("A", 1), ("B", 2), ("C", 4)):
        await store.reservations.reserve(order, [("MUG-RED", qty)])
    await store.reservations.commit_reservation("A")
    await store.reservations.release("C")  # cancelled: not demand
    # Backdate B by a day, as if it was placed yesterday.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    async with store.db.engine.begin() as conn:
        await conn.execute(update(t.reservations).where(t.reservations.c.order_id == "B").values(created_at=yesterday))
    demand = await store.reservations.demand_history(datetime.now(UTC) - timedelta(days=2))
    assert [(d.sku, d.warehouse, d.quantity) for d in demand] == [("MUG-RED", "LDN-1", 2), ("MUG-RED", "LDN-1", 1)]
    assert demand[0].at == yesterday
    assert [d.quantity for d in await store.reservations.demand_history(datetime.now(UTC) - timedelta(hours=1))] == [1]
    assert await store.reservations.demand_history(datetime.now(UTC) - timedelta(days=2), sku="TEE-M") == []


async def test_ledger_kinds_cover_every_stock_change(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 10, "LDN-1", ref="PO-1", note="supplier delivery")
    await store.reservations.reserve("A", [("MUG-RED", 3)])
    await store.reservations.reserve("B", [("MUG-RED", 1)])
    await store.reservations.release("B", note="cancelled by customer")
    await store.reservations.commit_reservation("A")
    await store.stock.return_stock("MUG-RED", 1, "LDN-1", ref="RMA-A")
    await store.counts.adjust_stock("MUG-RED", "LDN-1", -1, reason="damaged")
    await store.counts.count_stock("MUG-RED", "LDN-1", 6, reason="annual count")
    rows = [(e.kind, e.ref, e.note) for e in await store.stock.ledger()]
    assert rows == [
        ("receipt", "PO-1", "supplier delivery"),
        ("reservation", "A", "reserve"),
        ("reservation", "B", "reserve"),
        ("release", "B", "cancelled by customer"),
        ("commit", "A", "shipped"),
        ("return", "RMA-A", "customer return"),
        ("adjustment", None, "damaged"),
        ("count", None, "count: annual count"),
    ]
    # "writeoff" rows come from inspecting a returned parcel (tests/integration/returns/test_returns.py checks them).
    assert set(t.LEDGER_KINDS) - {"writeoff"} == {kind for kind, _, _ in rows}
    await _assert_ledger_explains_stock(store)


# ---------------------------------------------------------------------------------------------------------
# Imports


async def test_import_products_and_warehouses(store: Store) -> None:
    result = await store.catalog.import_products(
        [
            ProductImport(2, "MUG-RED", "Mug, red", 1250, 360, (100, 80, 120), 10),
            ProductImport(3, "POSTER-A2", "Poster", 900, 120),
            ProductImport(4, "TEE-M", "Tee-M", 1000, 100),
        ]
    )
    assert (result.created, result.updated, result.unchanged) == (1, 1, 1)
    products = {p.sku: p for p in await store.catalog.products()}
    assert (products["MUG-RED"].name, products["MUG-RED"].price_cents, products["MUG-RED"].weight_grams) == (
        "Mug, red",
        1250,
        360,
    )
    assert (products["MUG-RED"].dimensions_mm, products["MUG-RED"].lead_time_days) == ((100, 80, 120), 10)
    assert products["POSTER-A2"].dimensions_mm is None
    # Not given: kept.
    await store.catalog.import_products([ProductImport(2, "MUG-RED", "Mug, red", 1250, 360)])
    assert (await store.catalog.products())[1].dimensions_mm == (100, 80, 120)
    with pytest.raises(InvalidRows, match="row 3: sku: 'A' already on row 2"):
        await store.catalog.import_products([ProductImport(2, "A", "a", 1, 1), ProductImport(3, "A", "a", 1, 1)])

    result = await store.catalog.import_warehouses(
        [WarehouseImport(2, "PAR-1", "Paris", "FR", None), WarehouseImport(3, "LDN-1", "London", "GB", "LDN")]
    )
    assert (result.created, result.updated, result.unchanged) == (1, 0, 1)
    assert [w.code for w in await store.catalog.warehouses()] == ["LDN-1", "MAN-1", "NYC-1", "PAR-1"]


async def test_import_stock_sets_on_hand_through_adjustments(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10})
    await store.reservations.reserve("A", [("MUG-RED", 3)])
    result = await store.stock.import_stock(
        [
            StockImport(2, "MUG-RED", "LDN-1", 12),
            StockImport(3, "MUG-RED", "NYC-1", 4),
            StockImport(4, "TEE-M", "NYC-1", 0),
        ],
        ref="import:stock.csv",
    )
    assert (result.created, result.updated, result.unchanged) == (2, 1, 0)
    assert _levels(await store.stock.stock_levels()) == {
        ("MUG-RED", "LDN-1"): (12, 3),
        ("MUG-RED", "NYC-1"): (4, 0),
        ("TEE-M", "NYC-1"): (0, 0),
    }
    rows = [(e.sku, e.warehouse, e.delta_on_hand, e.kind) for e in await store.stock.ledger(ref="import:stock.csv")]
    assert rows == [("MUG-RED", "LDN-1", 2, "adjustment"), ("MUG-RED", "NYC-1", 4, "adjustment")]
    again = await store.stock.import_stock([StockImport(2, "MUG-RED", "LDN-1", 12)])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    await _assert_ledger_explains_stock(store)


async def test_bad_stock_import_writes_nothing(store: Store) -> None:
    await _stock(store, {("MUG-RED", "LDN-1"): 10})
    await store.reservations.reserve("A", [("MUG-RED", 3)])
    before = (await store.stock.stock_levels(), await store.stock.ledger())
    with pytest.raises(InvalidRows) as info:
        await store.stock.import_stock(
            [
                StockImport(2, "MUG-RED", "NYC-1", 5),  # fine on its own
                StockImport(3, "NOPE", "LDN-1", 1),
                StockImport(4, "TEE-M", "MARS-1", 1),
                StockImport(5, "MUG-RED", "LDN-1", 2),
            ]
        )
    assert info.value.problems == [
        "row 3: sku: unknown SKU 'NOPE' (not in the product catalogue)",
        "row 4: warehouse: unknown warehouse 'MARS-1' (known: LDN-1, MAN-1, NYC-1)",
        "row 5: on_hand: 2 is less than the 3 units reserved for orders; use `fulfill inventory count` to "
        "release reservations",
    ]
    assert (await store.stock.stock_levels(), await store.stock.ledger()) == before


# ---------------------------------------------------------------------------------------------------------
# Migration 0001 -> 0002 with data


async def test_upgrade_from_0001_keeps_data(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await run_migrations(engine, "0001")
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.execute(t.warehouses.insert().values(code="LDN-1", name="London", country="GB", region=None))
            await conn.execute(
                text(
                    "INSERT INTO products (sku, name, price_cents, weight_grams, created_at) "
                    "VALUES ('MUG-RED', 'Mug', 100, 10, :now)"
                ),
                {"now": now if engine.dialect.name == "postgresql" else now.replace(tzinfo=None).isoformat(" ")},
            )
            await conn.execute(text("INSERT INTO stock_levels VALUES ('MUG-RED', 'LDN-1', 5, 2)"))
        await engine.dispose()
        store = await Store.open(db_url)  # migrates to head
        try:
            async with store.db.engine.begin() as conn:
                for kind, qty in (("receipt", 5), ("reservation", 0)):
                    await conn.execute(
                        t.stock_ledger.insert().values(
                            sku="MUG-RED",
                            warehouse="LDN-1",
                            delta_on_hand=qty,
                            delta_reserved=2 if kind == "reservation" else 0,
                            kind=kind,
                            ref="X",
                            note="",
                            at=now,
                        )
                    )
            assert await store.stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 5, 2, 3)]
            [product] = await store.catalog.products()
            assert (product.lead_time_days, product.dimensions_mm) == (None, None)
            change = await store.counts.count_stock("MUG-RED", "LDN-1", 5, reason="after upgrade")
            assert change.delta == 0
            assert (await store.stock.inventory_positions())[0].reorder_point is None
        finally:
            await store.close()
    finally:
        await engine.dispose()
