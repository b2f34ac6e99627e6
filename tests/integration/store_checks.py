"""Checks and set-up shared by the Store tests that race operations against each other: several Store instances
(separate engines, so separate connection pools) on one fresh database, and the bookkeeping every race must
leave balanced."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from common.store import Store


@asynccontextmanager
async def open_stores(url: str, count: int) -> AsyncIterator[list[Store]]:
    """`count` Stores on one database; the first one ran the migrations. A catalogue of three warehouses and
    three products, no stock."""
    async with AsyncExitStack() as stack:
        first = await Store.open(url)
        stack.push_async_callback(first.close)
        stores = [first]
        for _ in range(count - 1):
            store = await Store.open(url, migrate=False)
            stack.push_async_callback(store.close)
            stores.append(store)
        await first.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
        await first.catalog.upsert_warehouse("MAN-1", "Manchester", "GB", "MAN")
        await first.catalog.upsert_warehouse("NYC-1", "New York", "US", "NY")
        for sku in ("MUG-RED", "TEE-M", "BOOK-ADA"):
            await first.catalog.upsert_product(sku, sku.title(), 1000, 100)
        yield stores


async def assert_books_balance(store: Store) -> None:
    """Per (sku, warehouse): 0 <= reserved <= on hand; the ledger sums to on hand and to reserved; held
    reservations add up to reserved."""
    levels = {(x.sku, x.warehouse): x for x in await store.stock.stock_levels()}
    on_hand: defaultdict[tuple[str, str], int] = defaultdict(int)
    reserved: defaultdict[tuple[str, str], int] = defaultdict(int)
    for e in await store.stock.ledger():
        on_hand[(e.sku, e.warehouse)] += e.delta_on_hand
        reserved[(e.sku, e.warehouse)] += e.delta_reserved
    held: defaultdict[tuple[str, str], int] = defaultdict(int)
    for r in await store.reservations.reservations():
        if r.status == "held":
            held[(r.sku, r.warehouse)] += r.quantity
    for key in set(levels) | set(on_hand) | set(held):
        level = levels.get(key)
        actual = (level.on_hand, level.reserved) if level else (0, 0)
        assert 0 <= actual[1] <= actual[0], (key, level)
        assert (on_hand[key], reserved[key]) == actual, (key, "ledger", on_hand[key], reserved[key], level)
        assert held[key] == actual[1], (key, "held", held[key], level)
