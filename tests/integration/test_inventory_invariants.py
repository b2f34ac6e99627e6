"""No oversell, provably: hypothesis drives random sequences of reserve / reserve_in / release / commit /
receive / return / count / adjust / reorder-point changes (some of them concurrently, through separate
Store instances, i.e. separate connection pools) against real SQLite and PostgreSQL, and after every step
checks, per (sku, warehouse):

- 0 <= reserved <= on_hand, so available = on_hand - reserved >= 0;
- the ledger accounts for every unit: sum(delta_on_hand) == on_hand and sum(delta_reserved) == reserved;
- held reservations add up to reserved;
- a low-stock crossing is open exactly when a reorder point is set and available is at or below it.

The tests are synchronous: hypothesis's state machine runs the async Store through its own event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import delete

from common.db import PickTaskClosed, Store, StoreError
from common.db import tables as t
from tests.integration.db_fixtures import BACKENDS, database_url

SKUS = ("MUG-RED", "TEE-M", "BOOK-ADA")
WAREHOUSES = (("LDN-1", "GB", "LDN"), ("MAN-1", "GB", "MAN"), ("NYC-1", "US", "NY"))
CODES = tuple(code for code, _, _ in WAREHOUSES)
ORDERS = tuple(f"ORD-{i}" for i in range(8))
STORES = 3
# Per database: about 20-40 s on the project machine.
MAX_EXAMPLES = 40
STEPS = 30

sku_st = st.sampled_from(SKUS)
wh_st = st.sampled_from(CODES)
order_st = st.sampled_from(ORDERS)
lines_st = st.lists(st.tuples(sku_st, st.integers(1, 4)), min_size=1, max_size=3, unique_by=lambda x: x[0])
prefer_st = st.sampled_from([(None, None), ("GB", "LDN"), ("GB", "MAN"), ("US", "NY"), ("FR", None)])


def _op(kind: str, args: tuple[Any, ...]) -> Callable[[Store], Coroutine[Any, Any, Any]]:
    """One store operation; errors that are expected for the input are swallowed, anything else fails."""

    async def run(store: Store) -> Any:
        if kind == "reserve":
            order, lines, (country, region) = args
            return await store.reserve(order, lines, prefer_country=country, prefer_region=region)
        if kind == "allocate":
            order, lines, (country, region), allow_partial, first = args
            return await store.allocate(
                order,
                lines,
                prefer_country=country,
                prefer_region=region,
                allow_partial=allow_partial,
                first_shipment=first,
            )
        if kind == "short_pick":
            # Pick one shipment of an order (whatever it holds) and find `missing` units of one line gone.
            order, shipment, missing = args
            held = [r for r in await store.reservations(order) if r.shipment_no == shipment and r.status == "held"]
            if not held:
                return None
            task = await store.create_pick_task(order, shipment, held[0].warehouse, [(r.sku, r.quantity) for r in held])
            line_sku, line_qty = task.lines[0]
            try:
                return await store.confirm_pick_task(task.id, {line_sku: min(missing, line_qty)})
            except StoreError as err:  # picked or cancelled already, or fewer on hand than the books say
                assert isinstance(err, PickTaskClosed) or "fewer than" in str(err), err
                return None
        if kind == "reserve_in":
            order, shipment, warehouse, lines = args
            return await store.reserve_in(order, shipment, warehouse, lines)
        if kind == "release":
            order, shipment = args
            return await store.release(order, shipment_no=shipment)
        if kind == "commit":
            order, shipment = args
            return await store.commit_reservation(order, shipment_no=shipment)
        if kind == "receive":
            sku, warehouse, qty = args
            return await store.receive_stock(sku, qty, warehouse)
        if kind == "return":
            sku, warehouse, qty, ref = args
            return await store.return_stock(sku, qty, warehouse, ref=ref)
        if kind == "count":
            sku, warehouse, counted = args
            return await store.count_stock(sku, warehouse, counted, reason="cycle count")
        if kind == "adjust":
            sku, warehouse, delta = args
            try:
                return await store.adjust_stock(sku, warehouse, delta, reason="damaged")
            except StoreError as err:
                # below zero, or below what packed parcels hold: refused, nothing changed
                assert "would leave" in str(err) or "packed in parcels" in str(err), err
                return None
        if kind == "reorder_point":
            sku, warehouse, point = args
            return await store.set_reorder_point(sku, warehouse, point)
        raise AssertionError(kind)

    return run


op_st = st.one_of(
    st.tuples(st.just("reserve"), st.tuples(order_st, lines_st, prefer_st)),
    st.tuples(st.just("reserve_in"), st.tuples(order_st, st.integers(1, 3), wh_st, lines_st)),
    st.tuples(st.just("allocate"), st.tuples(order_st, lines_st, prefer_st, st.booleans(), st.integers(1, 3))),
    st.tuples(st.just("short_pick"), st.tuples(order_st, st.integers(1, 3), st.integers(1, 3))),
    st.tuples(st.just("release"), st.tuples(order_st, st.sampled_from([None, 1, 2]))),
    st.tuples(st.just("commit"), st.tuples(order_st, st.sampled_from([None, 1, 2]))),
    st.tuples(st.just("receive"), st.tuples(sku_st, wh_st, st.integers(1, 8))),
    st.tuples(st.just("return"), st.tuples(sku_st, wh_st, st.integers(1, 3), st.sampled_from(["RMA-1", "RMA-2"]))),
    st.tuples(st.just("count"), st.tuples(sku_st, wh_st, st.integers(0, 12))),
    st.tuples(st.just("adjust"), st.tuples(sku_st, wh_st, st.integers(-6, 6).filter(bool))),
    st.tuples(st.just("reorder_point"), st.tuples(sku_st, wh_st, st.one_of(st.none(), st.integers(0, 6)))),
)


async def _reset(store: Store) -> None:
    async with store.engine.begin() as conn:
        for table in (
            t.low_stock_crossings,
            t.purchase_orders,
            t.pick_tasks,
            t.reservations,
            t.stock_ledger,
            t.backorders,
            t.stock_levels,
        ):
            await conn.execute(delete(table))


async def _check(store: Store) -> None:
    levels = {(x.sku, x.warehouse): x for x in await store.stock_levels()}
    ledger_on_hand: defaultdict[tuple[str, str], int] = defaultdict(int)
    ledger_reserved: defaultdict[tuple[str, str], int] = defaultdict(int)
    for e in await store.ledger():
        ledger_on_hand[(e.sku, e.warehouse)] += e.delta_on_hand
        ledger_reserved[(e.sku, e.warehouse)] += e.delta_reserved
    held: defaultdict[tuple[str, str], int] = defaultdict(int)
    for r in await store.reservations():
        if r.status == "held":
            held[(r.sku, r.warehouse)] += r.quantity
    points = {(p.sku, p.warehouse): p.reorder_point for p in await store.inventory_positions()}
    open_crossings: defaultdict[tuple[str, str], int] = defaultdict(int)
    for c in await store.low_stock_crossings(open_only=True):
        open_crossings[(c.sku, c.warehouse)] += 1

    for key in set(levels) | set(ledger_on_hand) | set(held) | set(open_crossings):
        level = levels.get(key)
        on_hand = level.on_hand if level else 0
        reserved = level.reserved if level else 0
        assert 0 <= reserved <= on_hand, (key, level)
        assert on_hand - reserved >= 0, (key, level)
        assert ledger_on_hand[key] == on_hand, (key, "ledger on hand", ledger_on_hand[key], level)
        assert ledger_reserved[key] == reserved, (key, "ledger reserved", ledger_reserved[key], level)
        assert held[key] == reserved, (key, "held", held[key], level)
        point = points.get(key)
        low = point is not None and on_hand - reserved <= point
        assert open_crossings[key] == (1 if low else 0), (key, point, level, open_crossings[key])


def _machine(run: Callable[[Coroutine[Any, Any, Any]], Any], stores: list[Store]) -> type[RuleBasedStateMachine]:
    class StockMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            run(_reset(stores[0]))

        @initialize(stock=st.lists(st.tuples(sku_st, wh_st, st.integers(1, 10)), max_size=6))
        def opening_stock(self, stock: list[tuple[str, str, int]]) -> None:
            for sku, warehouse, qty in stock:
                run(stores[0].receive_stock(sku, qty, warehouse, ref="PO-0"))

        @rule(op=op_st)
        def one(self, op: tuple[str, tuple[Any, ...]]) -> None:
            run(_op(*op)(stores[0]))

        @rule(ops=st.lists(op_st, min_size=2, max_size=5))
        def concurrently(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
            async def together() -> None:
                # Wait for every operation even if one fails, so none is left running into the next example.
                results = await asyncio.gather(
                    *(_op(*op)(stores[i % len(stores)]) for i, op in enumerate(ops)), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result

            run(together())

        @invariant()
        def stock_is_consistent(self) -> None:
            run(_check(stores[0]))

    return StockMachine


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_interleavings_never_oversell(backend: str, tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        url_cm = database_url(backend, tmp_path)
        url = runner.run(url_cm.__aenter__())
        stores: list[Store] = []
        try:
            stores.append(runner.run(Store.open(url)))
            for _ in range(STORES - 1):
                stores.append(runner.run(Store.open(url, migrate=False)))
            for code, country, region in WAREHOUSES:
                runner.run(stores[0].upsert_warehouse(code, f"Warehouse {code}", country, region))
            for sku in SKUS:
                runner.run(stores[0].upsert_product(sku, sku.title(), 1000, 100))
            started = time.monotonic()
            run_state_machine_as_test(
                _machine(runner.run, stores),
                settings=settings(
                    max_examples=MAX_EXAMPLES,
                    stateful_step_count=STEPS,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
            print(f"{backend}: {time.monotonic() - started:.1f} s")
        finally:
            for store in stores:
                runner.run(store.close())
            runner.run(url_cm.__aexit__(None, None, None))
