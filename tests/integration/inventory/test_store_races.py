"""Review finding 13: races that only show on PostgreSQL (READ COMMITTED), driven for real: the racing calls go
through separate Store instances (separate pools) with asyncio.gather, many rounds, on SQLite (where writers are
serial, so these must simply hold) and PostgreSQL. Exactly one caller wins each race and the books balance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from common.db import tables as t
from common.db.errors import StoreError
from common.store import Store
from common.warehouse.contracts import PickTaskClosed
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.store_checks import assert_books_balance, open_stores

ROUNDS = 25


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    async with database_url(request.param, tmp_path) as url, open_stores(url, 3) as opened:
        yield opened


async def _picking(store: Store, order_id: str, qty: int = 3) -> str:
    """An order holding `qty` mugs at LDN-1 with its pick task open; returns the task id."""
    await store.stock.receive_stock("MUG-RED", qty, "LDN-1")
    allocation = await store.reservations.allocate(
        order_id, [("MUG-RED", qty)], prefer_country="GB", prefer_region="LDN"
    )
    assert allocation.shipments == [(1, "LDN-1", [("MUG-RED", qty)])]
    return (await store.picks.create(order_id, 1, "LDN-1", [("MUG-RED", qty)])).id


async def test_finding_13_a_two_short_confirmations_at_once_take_the_missing_units_off_once(
    stores: list[Store],
) -> None:
    for n in range(ROUNDS):
        task_id = await _picking(stores[0], f"ORD-{n}")
        before = {(s.sku, s.warehouse): s.on_hand for s in await stores[0].stock.stock_levels()}
        # The same shortage twice at once (a client retry, or the CLI and the Web UI): the second is the
        # idempotent repeat of the first.
        first, second = await asyncio.gather(
            stores[1].picks.confirm(task_id, {"MUG-RED": 1}), stores[2].picks.confirm(task_id, {"MUG-RED": 1})
        )
        assert first == second and first.short == {"MUG-RED": 1}
        after = {(s.sku, s.warehouse): s.on_hand for s in await stores[0].stock.stock_levels()}
        assert after[("MUG-RED", "LDN-1")] == before[("MUG-RED", "LDN-1")] - 1, f"round {n}"
        adjustments = [e for e in await stores[0].stock.ledger(ref=task_id) if e.kind == "adjustment"]
        assert [(e.delta_on_hand, e.delta_reserved) for e in adjustments] == [(-1, -1)], f"round {n}"
    await assert_books_balance(stores[0])


async def test_finding_13_a_two_different_short_confirmations_at_once_one_wins(stores: list[Store]) -> None:
    for n in range(ROUNDS):
        task_id = await _picking(stores[0], f"ORD-{n}")
        results = await asyncio.gather(
            stores[1].picks.confirm(task_id, {"MUG-RED": 1}),
            stores[2].picks.confirm(task_id, {"MUG-RED": 2}),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], PickTaskClosed), (n, results)
        adjustments = [e for e in await stores[0].stock.ledger(ref=task_id) if e.kind == "adjustment"]
        assert [e.delta_on_hand for e in adjustments] == [-sum(won[0].short.values())], f"round {n}"
    await assert_books_balance(stores[0])


async def test_finding_13_b_a_confirmation_racing_a_cancellation_has_one_winner(stores: list[Store]) -> None:
    outcomes = set()
    for n in range(ROUNDS):
        task_id = await _picking(stores[0], f"ORD-{n}")
        confirmed, cancelled = await asyncio.gather(
            stores[1].picks.confirm(task_id), stores[2].picks.cancel(task_id), return_exceptions=True
        )
        final = await stores[0].picks.get(task_id)
        assert final is not None
        if isinstance(confirmed, BaseException):
            assert isinstance(confirmed, PickTaskClosed) and confirmed.status == "cancelled", (n, confirmed)
            assert not isinstance(cancelled, BaseException) and cancelled.status == "cancelled"
        else:
            # Staff were told "confirmed": the task must be confirmed, and the cancel refused.
            assert isinstance(cancelled, PickTaskClosed) and cancelled.status == "confirmed", (n, cancelled)
            assert confirmed.status == "confirmed"
        assert final.status == ("cancelled" if isinstance(confirmed, BaseException) else "confirmed"), n
        outcomes.add(final.status)
    await assert_books_balance(stores[0])


async def test_finding_13_c_a_label_recorded_while_it_is_voided_stays_voided(stores: list[Store]) -> None:
    sh = t.shipments
    for n in range(ROUNDS):
        key = f"label:ORD-{n}:1"
        await stores[0].labels.record_carrier_shipment(key, f"ORD-{n}", f"shp_{n}")
        recorded, voided = await asyncio.gather(
            stores[1].labels.mark_purchased(
                key,
                carrier="USPS",
                service="Priority",
                rate_cents=700,
                tracking_number=f"TRK{n}",
                label_url="http://label",
                tracking_url="http://track",
            ),
            stores[2].labels.mark_voided(key),
            return_exceptions=True,
        )
        assert not isinstance(voided, BaseException), voided
        if isinstance(recorded, BaseException):  # the void came first: the purchase is refused
            assert isinstance(recorded, StoreError) and "voided" in str(recorded), recorded
        async with stores[0].db.engine.connect() as conn:
            status = (await conn.execute(select(sh.c.status).where(sh.c.key == key))).scalar_one()
        assert status == "voided", f"round {n}: a voided label was overwritten with {status}"


async def test_finding_13_d_counts_and_allocations_take_locks_in_one_order_and_never_deadlock(
    stores: list[Store],
) -> None:
    """A count that releases orders races those same orders reserving further shipments, committing and
    releasing theirs. Every operation takes the order locks first, then the stock rows in (sku, warehouse)
    order, so PostgreSQL never has to break a deadlock (which would be retried, eating the retries)."""
    orders = [f"ORD-{i}" for i in range(6)]
    for n in range(ROUNDS // 2):
        for waiting in await stores[0].backorders.backorders():  # orders released last round give up (first come, first
            await stores[0].backorders.close_backorder(
                waiting.order_id
            )  # served would keep this round's units for them)
        await stores[0].stock.receive_stock("MUG-RED", 12, "LDN-1")
        await stores[0].stock.receive_stock("TEE-M", 12, "LDN-1")
        for order_id in orders:
            await stores[0].reservations.release(order_id)
            got = await stores[0].reservations.allocate(
                f"{order_id}-{n}", [("MUG-RED", 1), ("TEE-M", 1)], prefer_country="GB", prefer_region="LDN"
            )
            assert got.shipments, got
        level = {s.sku: s for s in await stores[0].stock.stock_levels(warehouse="LDN-1")}
        work = [
            # Each count finds fewer units than are reserved: it releases the newest orders.
            stores[0].counts.count_stock("MUG-RED", "LDN-1", level["MUG-RED"].reserved - 3, reason="race"),
            stores[0].counts.count_stock("TEE-M", "LDN-1", level["TEE-M"].reserved - 2, reason="race"),
        ]
        for i, order_id in enumerate(orders):
            store = stores[1 + i % 2]
            match i % 3:
                case 0:
                    work.append(
                        store.reservations.allocate(f"{order_id}-{n}", [("TEE-M", 1), ("MUG-RED", 1)], first_shipment=2)
                    )
                case 1:
                    work.append(store.reservations.release(f"{order_id}-{n}"))
                case _:
                    work.append(store.reservations.commit_reservation(f"{order_id}-{n}"))
        results = await asyncio.gather(*work, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, StoreError)]
        assert not errors, errors
    retried = {reason: sum(s.db.retries.get(reason, 0) for s in stores) for reason in ("40P01", "40001", "55P03")}
    assert retried["40P01"] == 0, f"deadlocks broken by PostgreSQL and retried: {retried}"
    await assert_books_balance(stores[0])
