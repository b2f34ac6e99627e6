"""Reservations under concurrency on real SQLite and PostgreSQL: never oversell, never double-reserve.

Each test gets an empty database (a SQLite file, or a fresh PostgreSQL schema). Concurrent calls go
through several Store instances, i.e. separate engines and connection pools, so the database's own locking
is what keeps stock consistent, not anything inside one Store.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from common.db.engine import head_revision
from common.db.tables import metadata
from common.inventory.contracts import ReservationOutcome, StockLevel
from common.notifications.contracts import NotificationClaim, NotificationNotFound
from common.store import Store
from tests.integration.db_fixtures import BACKENDS, database_url

T = TypeVar("T")
STORES = 4  # separate engines issuing the concurrent calls


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[list[Store]]:
    """STORES stores on one database; the first one ran the migrations."""
    async with AsyncExitStack() as stack:
        first = await Store.open(db_url)
        stack.push_async_callback(first.close)
        result = [first]
        for _ in range(STORES - 1):
            store = await Store.open(db_url, migrate=False)
            stack.push_async_callback(store.close)
            result.append(store)
        yield result


async def _with_watcher(store: Store, work: Awaitable[T]) -> tuple[T, int]:
    """Run `work` while another connection keeps reading stock and checking it is never oversold.
    Returns the result and how many snapshots were checked."""
    stop = asyncio.Event()
    snapshots = 0

    async def watch() -> None:
        nonlocal snapshots
        while not stop.is_set():
            for level in await store.stock.stock_levels():
                assert 0 <= level.reserved <= level.on_hand, level
                assert level.available >= 0, level
            snapshots += 1
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        result = await work
    finally:
        stop.set()
        await watcher  # re-raises a failed invariant
    return result, snapshots


async def _catalogue(store: Store, stock: dict[tuple[str, str], int]) -> None:
    for code in sorted({wh for _, wh in stock}):
        await store.catalog.upsert_warehouse(code, f"Warehouse {code}", "GB", None)
    for sku in sorted({sku for sku, _ in stock}):
        await store.catalog.upsert_product(sku, sku.title(), 1000, 100)
    for (sku, wh), qty in stock.items():
        await store.stock.receive_stock(sku, qty, wh, ref="PO-1")


async def _assert_ledger_explains_stock(store: Store) -> None:
    ledger = await store.stock.ledger()
    for level in await store.stock.stock_levels():
        rows = [e for e in ledger if (e.sku, e.warehouse) == (level.sku, level.warehouse)]
        assert sum(e.delta_on_hand for e in rows) == level.on_hand, level
        assert sum(e.delta_reserved for e in rows) == level.reserved, level
        held = [
            r
            for r in await store.reservations.reservations()
            if (r.sku, r.warehouse, r.status) == (level.sku, level.warehouse, "held")
        ]
        assert sum(r.quantity for r in held) == level.reserved, level


async def test_migrated_schema_matches_table_definitions(stores: list[Store]) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with stores[0].db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert version == [head_revision()]


async def test_concurrent_opens_migrate_once(db_url: str) -> None:
    opened = await asyncio.gather(*(Store.open(db_url) for _ in range(4)))
    try:
        await opened[0].catalog.upsert_warehouse("LDN-1", "London", "GB", None)
        assert [w.code for w in await opened[3].catalog.warehouses()] == ["LDN-1"]
    finally:
        for store in opened:
            await store.close()


async def test_hundred_single_unit_orders_against_thirty_units(stores: list[Store]) -> None:
    await _catalogue(stores[0], {("MUG-RED", "LDN-1"): 30})
    calls = [stores[i % STORES].reservations.reserve(f"ORD-{i:03d}", [("MUG-RED", 1)]) for i in range(100)]
    outcomes, snapshots = await _with_watcher(stores[0], asyncio.gather(*calls))

    reserved = [f"ORD-{i:03d}" for i, o in enumerate(outcomes) if o.reserved]
    short = [f"ORD-{i:03d}" for i, o in enumerate(outcomes) if not o.reserved]
    assert len(reserved) == 30 and len(short) == 70
    assert all(o.warehouse == "LDN-1" for o in outcomes if o.reserved)
    assert all(o.short == {"MUG-RED": 1} and o.warehouse is None for o in outcomes if not o.reserved)
    assert snapshots > 0
    assert await stores[0].stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 30, 30, 0)]
    ledger = [e for e in await stores[0].stock.ledger() if e.kind == "reservation"]
    assert sorted(e.ref or "" for e in ledger) == reserved
    assert sum(e.delta_reserved for e in ledger) == 30
    assert sorted(await stores[0].backorders.backordered_orders(["MUG-RED"])) == short
    await _assert_ledger_explains_stock(stores[0])

    # Releasing the winners concurrently frees exactly what they held.
    released = await asyncio.gather(*(stores[i % STORES].reservations.release(o) for i, o in enumerate(reserved)))
    assert released == [1] * 30
    assert await stores[0].stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 30, 0, 30)]
    await _assert_ledger_explains_stock(stores[0])


async def test_mixed_quantities_never_oversell(stores: list[Store]) -> None:
    await _catalogue(stores[0], {("MUG-RED", "LDN-1"): 30})
    rng = random.Random(1234)
    wanted = {f"ORD-{i:03d}": rng.randint(1, 3) for i in range(100)}
    calls = [
        stores[i % STORES].reservations.reserve(order, [("MUG-RED", qty)])
        for i, (order, qty) in enumerate(wanted.items())
    ]
    outcomes: list[ReservationOutcome]
    outcomes, _ = await _with_watcher(stores[0], asyncio.gather(*calls))
    results = dict(zip(wanted, outcomes, strict=True))

    [level] = await stores[0].stock.stock_levels()
    reserved_units = sum(wanted[o] for o, r in results.items() if r.reserved)
    assert level == StockLevel("MUG-RED", "LDN-1", 30, reserved_units, 30 - reserved_units)
    assert reserved_units <= 30
    # Availability only went down, so every refused order asked for more than what is left now, and was
    # told a shortfall between 1 and what it asked for.
    for order, outcome in results.items():
        if not outcome.reserved:
            assert wanted[order] > level.available
            assert 1 <= outcome.short["MUG-RED"] <= wanted[order]
    assert sum(e.delta_reserved for e in await stores[0].stock.ledger()) == level.reserved
    await _assert_ledger_explains_stock(stores[0])


async def test_multi_line_orders_across_warehouses(stores: list[Store]) -> None:
    """Orders touching two skus in either line order, two warehouses: no deadlock surfaces, no order is
    split, no warehouse oversold."""
    stock = {(sku, wh): 12 for sku in ("MUG-RED", "TEE-M") for wh in ("LDN-1", "NYC-1")}
    await _catalogue(stores[0], stock)
    rng = random.Random(99)
    orders: dict[str, list[tuple[str, int]]] = {}
    for i in range(80):
        lines = [("MUG-RED", rng.randint(1, 2)), ("TEE-M", rng.randint(1, 2))]
        rng.shuffle(lines)
        orders[f"ORD-{i:03d}"] = lines
    calls = [stores[i % STORES].reservations.reserve(order, lines) for i, (order, lines) in enumerate(orders.items())]
    outcomes, _ = await _with_watcher(stores[0], asyncio.gather(*calls))

    expected: Counter[tuple[str, str]] = Counter()
    for (order, lines), outcome in zip(orders.items(), outcomes, strict=True):
        if outcome.reserved:
            assert outcome.warehouse is not None
            for sku, qty in lines:
                expected[(sku, outcome.warehouse)] += qty
            held = {(r.sku, r.warehouse) for r in await stores[0].reservations.reservations(order)}
            assert held == {(sku, outcome.warehouse) for sku, _ in lines}  # one warehouse per order
    levels = {(x.sku, x.warehouse): x for x in await stores[0].stock.stock_levels()}
    assert {key: x.reserved for key, x in levels.items() if x.reserved} == dict(expected)
    assert all(x.on_hand == 12 and x.available >= 0 for x in levels.values())
    assert sum(o.reserved for o in outcomes) >= 10  # plenty of stock was there to be had
    await _assert_ledger_explains_stock(stores[0])


async def test_same_order_concurrently_is_reserved_once(stores: list[Store]) -> None:
    await _catalogue(stores[0], {("MUG-RED", "LDN-1"): 10})
    outcomes = await asyncio.gather(
        *(stores[i % STORES].reservations.reserve("ORD-1", [("MUG-RED", 2)]) for i in range(20))
    )
    assert {(o.reserved, o.warehouse, tuple(o.lines)) for o in outcomes} == {(True, "LDN-1", (("MUG-RED", 2),))}
    assert await stores[0].stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 10, 2, 8)]
    assert len(await stores[0].stock.ledger(ref="ORD-1")) == 1

    released = await asyncio.gather(*(stores[i % STORES].reservations.release("ORD-1") for i in range(10)))
    assert sorted(released) == [0] * 9 + [2]
    assert await stores[0].stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 10, 0, 10)]

    await stores[0].reservations.reserve("ORD-2", [("MUG-RED", 3)])
    committed = await asyncio.gather(*(stores[i % STORES].reservations.commit_reservation("ORD-2") for i in range(10)))
    assert sorted(committed) == [0] * 9 + [3]
    assert await stores[0].stock.stock_levels() == [StockLevel("MUG-RED", "LDN-1", 7, 0, 7)]
    await _assert_ledger_explains_stock(stores[0])


async def test_idempotency_keys_hold_under_concurrency(stores: list[Store]) -> None:
    await _catalogue(stores[0], {("MUG-RED", "LDN-1"): 1})
    tasks = await asyncio.gather(
        *(stores[i % STORES].picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 1)]) for i in range(10))
    )
    assert len({task.id for task in tasks}) == 1

    shipments = await asyncio.gather(
        *(stores[i % STORES].labels.record_carrier_shipment("label:ORD-1:1", "ORD-1", f"shp_{i}") for i in range(10))
    )
    assert len({s.carrier_shipment_id for s in shipments}) == 1

    claims = await asyncio.gather(
        *(
            stores[i % STORES].notifications.claim_notification(
                "notify:ORD-1:shipped:email",
                order_id="ORD-1",
                event="shipped",
                channel="email",
                recipient="ada@example.com",
                subject="Shipped",
                body="On its way",
            )
            for i in range(10)
        )
    )
    assert any(claims)
    [record] = await stores[0].notifications.notifications("ORD-1")
    assert record.status == "sending" and record.attempts == sum(claims)
    await stores[0].notifications.mark_notification_sent(record.key, "msg-1")
    assert not any(
        await asyncio.gather(
            *(
                stores[i % STORES].notifications.claim_notification(
                    record.key,
                    order_id="ORD-1",
                    event="shipped",
                    channel="email",
                    recipient="ada@example.com",
                    subject="Shipped",
                    body="On its way",
                )
                for i in range(10)
            )
        )
    )


async def test_notifications_marked_sent_in_one_batch(stores: list[Store]) -> None:
    """The channels of one notification are marked sent together, each with its own provider id."""
    keys = ["notify:ORD-1:shipped:email", "notify:ORD-1:shipped:sms", "notify:ORD-1:delivered:email"]
    claims = [NotificationClaim(k, "ORD-1", k.split(":")[2], k.split(":")[3], "ada", None, "b") for k in keys]
    assert await stores[0].notifications.claim_notifications(claims) == set(keys)
    await stores[0].notifications.mark_notifications_sent([])  # nothing to do
    await asyncio.gather(
        stores[1].notifications.mark_notifications_sent([(keys[0], "<m1@fulfill>"), (keys[1], "SM1")]),
        stores[2].notifications.mark_notification_failed(keys[2], "SMTP 451 try later"),
    )
    records = {r.key: r for r in await stores[0].notifications.notifications("ORD-1")}
    assert [(records[k].status, records[k].provider_message_id, records[k].error) for k in keys] == [
        ("sent", "<m1@fulfill>", None),
        ("sent", "SM1", None),
        ("failed", None, "SMTP 451 try later"),
    ]
    assert records[keys[0]].sent_at is not None and records[keys[2]].sent_at is None
    await stores[3].notifications.mark_notification_failed(keys[0], "late report")  # never downgrades a sent message
    assert await stores[0].notifications.claim_notifications(claims) == {keys[2]}

    # An unknown key: the known ones are still marked, then it is reported
    with pytest.raises(NotificationNotFound) as err:
        await stores[0].notifications.mark_notifications_sent([(keys[2], "P1"), ("notify:nope:x:email", "x")])
    assert err.value.key == "notify:nope:x:email"
    assert {r.key: r.status for r in await stores[0].notifications.notifications("ORD-1")}[keys[2]] == "sent"
    with pytest.raises(ValueError, match="twice"):
        await stores[0].notifications.mark_notifications_sent([(keys[0], "a"), (keys[0], "b")])


async def test_backorder_queue_is_in_placement_order(stores: list[Store]) -> None:
    await _catalogue(stores[0], {("POSTER-A2", "LDN-1"): 1})
    await stores[0].reservations.reserve("ORD-0", [("POSTER-A2", 1)])
    for i in range(1, 6):
        await stores[i % STORES].reservations.reserve(f"ORD-{i}", [("POSTER-A2", 1)])
    assert await stores[0].backorders.backordered_orders(["POSTER-A2"]) == [f"ORD-{i}" for i in range(1, 6)]
    waiting: defaultdict[str, int] = defaultdict(int)
    for order in await stores[0].backorders.backordered_orders():
        waiting[order] += 1
    assert set(waiting.values()) == {1}
