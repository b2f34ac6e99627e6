"""Review finding 5: a stock count (or adjustment) and a pick confirmation cannot both win. A count that releases
a shipment's reservation cancels its open pick task in the same transaction, a confirmation or a new pick task
for a released shipment is refused, and the order is told through the order-signal outbox, written in the same
transaction as the change. Real SQLite and PostgreSQL; the races through separate Stores."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from common.db.errors import StoreError
from common.models import PickShortage, ReservationReleased
from common.store import Store
from common.warehouse.contracts import PickTaskClosed, ShipmentReleased
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.store_checks import assert_books_balance, open_stores

ROUNDS = 25
T = TypeVar("T")


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    async with database_url(request.param, tmp_path) as url, open_stores(url, 3) as opened:
        yield opened


@pytest.fixture
def store(stores: list[Store]) -> Store:
    return stores[0]


async def _picking(store: Store, order_id: str, lines: list[tuple[str, int]], shipment: int = 1) -> str:
    """Reserve `lines` at LDN-1 as the order's shipment `shipment` and open its pick task; the task id."""
    got = await store.reservations.allocate(
        order_id, lines, prefer_country="GB", prefer_region="LDN", first_shipment=shipment
    )
    assert [(n, wh) for n, wh, _ in got.shipments] == [(shipment, "LDN-1")], got
    return (await store.picks.create(order_id, shipment, "LDN-1", lines)).id


async def test_finding_5_a_count_cancels_the_pick_task_of_the_shipment_it_releases(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 6, "LDN-1")
    await store.stock.receive_stock("TEE-M", 2, "LDN-1")
    old = await _picking(store, "OLD", [("MUG-RED", 2)])
    packed = await _picking(store, "NEW", [("MUG-RED", 1)])
    await store.picks.confirm(packed)  # NEW's first parcel is packed: the count does not see its unit
    second = await _picking(store, "NEW", [("MUG-RED", 2), ("TEE-M", 1)], shipment=2)

    # 3 on the shelf (+1 packed) for 4 unpicked: NEW's unpicked parcel goes, with its tee.
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 3, reason="flood")
    assert change.released_orders == ["NEW"]
    assert change.released_shipments == {"NEW": [2]}
    tasks = {task.id: task.status for order in ("OLD", "NEW") for task in await store.picks.for_order(order)}
    assert tasks == {old: "open", packed: "confirmed", second: "cancelled"}
    assert await store.reservations.shipment_reservation_status("NEW", 2) == "released"
    assert await store.reservations.shipment_reservation_status("NEW", 1) == "held"
    assert await store.reservations.shipment_reservation_status("OLD", 1) == "held"
    assert await store.reservations.shipment_reservation_status("OLD", 7) == "none"
    await assert_books_balance(store)


async def test_finding_5_b_a_pick_confirmed_after_the_count_released_it_is_refused(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 4, "LDN-1")
    full = await _picking(store, "A", [("MUG-RED", 2)])
    short = await _picking(store, "B", [("MUG-RED", 2)])
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 0, reason="theft")
    assert sorted(change.released_orders) == ["A", "B"]
    before = (await store.stock.stock_levels(), await store.stock.ledger(), await store.reservations.reservations())

    with pytest.raises(ShipmentReleased) as refused:
        await store.picks.confirm(full)
    assert (refused.value.order_id, refused.value.shipment_no) == ("A", 1)
    assert "do not pick or ship it" in str(refused.value)
    with pytest.raises(ShipmentReleased):
        await store.picks.confirm(short, {"MUG-RED": 1})
    # Refused: nothing changed, no message to any order, and nothing left to ship or commit.
    assert (
        await store.stock.stock_levels(),
        await store.stock.ledger(),
        await store.reservations.reservations(),
    ) == before
    assert [s.name for s in await store.signals.order_signals()] == ["reservation_released", "reservation_released"]
    assert await store.reservations.commit_reservation("A", shipment_no=1) == 0
    await assert_books_balance(store)


async def test_finding_5_c_a_pick_confirmed_before_the_count_keeps_its_reservation(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")
    task = await _picking(store, "A", [("MUG-RED", 2)])
    await store.picks.confirm(task)
    # The shelf is empty because both units are in A's parcel: the count releases nothing.
    change = await store.counts.count_stock("MUG-RED", "LDN-1", 0, reason="cycle count")
    assert (change.released_orders, change.released_shipments, change.on_hand) == ([], {}, 2)
    assert await store.reservations.commit_reservation("A", shipment_no=1) == 2
    assert [(s.on_hand, s.reserved) for s in await store.stock.stock_levels("MUG-RED")] == [(0, 0)]
    await assert_books_balance(store)


async def _jittered(call: Awaitable[T]) -> T:
    """Start `call` up to 5 ms late, so either side of a race gets to go first."""
    await asyncio.sleep(random.uniform(0, 0.005))
    return await call


async def test_finding_5_d_a_count_racing_a_confirmation_has_one_winner(stores: list[Store]) -> None:
    winners = set()
    for n in range(ROUNDS):
        order_id = f"ORD-{n}"
        await stores[0].stock.receive_stock("MUG-RED", 2, "LDN-1")
        task = await _picking(stores[0], order_id, [("MUG-RED", 2)])
        level = (await stores[0].stock.stock_levels("MUG-RED", "LDN-1"))[0]
        # The count finds the order's 2 units gone from the shelf: picked into its parcel if the confirmation
        # came first (nothing to release), missing if the count came first (the order loses them).
        count, confirm = await asyncio.gather(
            _jittered(stores[1].counts.count_stock("MUG-RED", "LDN-1", level.on_hand - level.reserved, reason="race")),
            _jittered(stores[2].picks.confirm(task)),
            return_exceptions=True,
        )
        assert not isinstance(count, BaseException), count
        if isinstance(confirm, BaseException):
            assert isinstance(confirm, ShipmentReleased), confirm  # the count cancelled it: not a plain cancel
            assert count.released_shipments == {order_id: [1]}, (n, count)
            assert await stores[0].reservations.commit_reservation(order_id) == 0
            assert await stores[0].backorders.close_backorder(
                order_id
            )  # it gives up: the next round's units are not its
            winners.add("count")
        else:
            assert confirm.status == "confirmed" and count.released_orders == [], (n, count)
            assert await stores[0].reservations.commit_reservation(order_id) == 2
            winners.add("pick")
        assert (await stores[0].picks.get(task)).status in ("confirmed", "cancelled")  # type: ignore[union-attr]
        await assert_books_balance(stores[0])
    print(f"winners over {ROUNDS} rounds: {sorted(winners)}")


async def test_finding_5_e_no_pick_task_for_a_released_shipment(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")
    got = await store.reservations.allocate("A", [("MUG-RED", 2)])
    assert got.shipments
    await store.counts.count_stock("MUG-RED", "LDN-1", 1, reason="broken")
    with pytest.raises(ShipmentReleased, match="shipment 1 of order A"):
        await store.picks.create("A", 1, "LDN-1", [("MUG-RED", 2)])
    assert await store.picks.for_order("A") == []
    # A shipment with no reservation at all (nothing to lose) still gets its task, as before.
    assert (await store.picks.create("B", 1, "LDN-1", [("MUG-RED", 1)])).status == "open"


async def test_finding_5_f_an_open_task_whose_reservation_is_gone_cannot_be_confirmed(store: Store) -> None:
    """A reservation released some other way (not by a count) while its pick task stayed open."""
    await store.stock.receive_stock("MUG-RED", 2, "LDN-1")
    task = await _picking(store, "A", [("MUG-RED", 2)])
    await store.reservations.release("A", shipment_no=1)
    with pytest.raises(ShipmentReleased):
        await store.picks.confirm(task)
    assert (await store.picks.get(task)).status == "open"  # type: ignore[union-attr]
    await store.picks.cancel(task)
    with pytest.raises(PickTaskClosed, match="cancelled"):  # cancelled by the order itself: not a count's doing
        await store.picks.confirm(task)


async def test_finding_5_g_the_count_writes_one_reservation_released_signal_per_order_with_the_change(
    store: Store,
) -> None:
    await store.stock.receive_stock("MUG-RED", 6, "LDN-1")
    await store.stock.receive_stock("MUG-RED", 1, "MAN-1")
    await _picking(store, "A", [("MUG-RED", 2)])
    await store.reservations.allocate(
        "B", [("MUG-RED", 3)], prefer_country="GB", prefer_region="LDN"
    )  # one parcel, LDN-1
    await store.reservations.allocate("B", [("MUG-RED", 1)], prefer_country="GB", prefer_region="MAN", first_shipment=2)
    assert await store.signals.order_signals() == []

    change = await store.counts.adjust_stock("MUG-RED", "LDN-1", -3, reason="water damage")
    assert change.released_shipments == {"B": [1, 2]}  # all of B's unpicked parcels, MAN-1's too
    [row] = await store.signals.order_signals()
    assert (row.workflow_id, row.kind, row.name, row.delivered_at, row.attempts) == ("order-B", "signal",
        "reservation_released", None, 0)  # fmt: skip
    assert ReservationReleased.model_validate(row.payload) == ReservationReleased(
        sku="MUG-RED", warehouse="LDN-1", shipments=[1, 2], reason="water damage"
    )
    # A change that releases nothing tells nobody; one that is refused writes nothing.
    await store.counts.count_stock("MUG-RED", "LDN-1", 3)
    with pytest.raises(StoreError):
        await store.counts.adjust_stock("MUG-RED", "LDN-1", -30, reason="lost")
    assert len(await store.signals.order_signals()) == 1


async def test_finding_5_h_a_confirmation_writes_its_signal_once(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 4, "LDN-1")
    full = await _picking(store, "A", [("MUG-RED", 2)])
    short = await _picking(store, "B", [("MUG-RED", 2)])
    await store.picks.confirm(full)
    await store.picks.confirm(full)  # idempotent: no second row
    await store.picks.confirm(short, {"MUG-RED": 1})
    await store.picks.confirm(short, {"MUG-RED": 1})
    with pytest.raises(PickTaskClosed):
        await store.picks.confirm(short, {"MUG-RED": 2})  # another shortage: refused, no row
    rows = await store.signals.order_signals()
    assert [(r.workflow_id, r.kind, r.name, r.payload) for r in rows] == [
        ("order-A", "signal", "pick_confirmed", full),
        ("order-B", "update", "pick_short", PickShortage(task_id=short, short={"MUG-RED": 1}).model_dump()),
    ]
    assert await store.signals.order_signals("order-A", pending_only=True) == [rows[0]]


async def test_finding_10_the_sweeper_can_find_orders_that_still_hold_something(store: Store) -> None:
    """For the sweeper (review finding 10): orders holding stock, an open pick task or a place in the restock
    queue. A label alone holds nothing: the sweeper undoes the labels of the shipments whose stock is still
    held (a label whose parcel shipped stays purchased for good)."""
    await store.stock.receive_stock("MUG-RED", 9, "LDN-1")
    await store.reservations.allocate("HELD", [("MUG-RED", 1)])
    await store.picks.create("PICKING", 1, "LDN-1", [("MUG-RED", 1)])  # no reservation: an open task alone
    for order_id, status in (("LABEL-NEW", None), ("LABEL-BOUGHT", "purchased"), ("LABEL-VOID", "voided")):
        key = f"label:{order_id}:1"
        await store.labels.record_carrier_shipment(key, order_id, f"shp_{order_id}")
        if status == "purchased":
            await store.labels.mark_purchased(
                key,
                carrier="USPS",
                service="Priority",
                rate_cents=700,
                tracking_number="TRK",
                label_url="http://label",
                tracking_url="http://track",
            )
        elif status == "voided":
            await store.labels.mark_voided(key)
    await store.reservations.allocate("SHIPPED", [("MUG-RED", 1)])
    await store.reservations.commit_reservation("SHIPPED")
    await store.reservations.allocate("CANCELLED", [("MUG-RED", 1)])
    await store.picks.create("CANCELLED", 1, "LDN-1", [("MUG-RED", 1)])
    await store.reservations.release("CANCELLED")
    for task in await store.picks.for_order("CANCELLED"):
        await store.picks.cancel(task.id)

    await store.reservations.allocate("WAITING", [("MUG-RED", 99)])  # backordered: holds its place in the queue
    assert await store.orders.holding_resources() == ["HELD", "PICKING", "WAITING"]
    assert await store.orders.holding_resources(["HELD", "SHIPPED", "LABEL-BOUGHT"]) == ["HELD"]
    assert [
        await store.reservations.shipment_reservation_status(o, 1) for o in ("HELD", "SHIPPED", "CANCELLED", "PICKING")
    ] == [
        "held",
        "committed",
        "released",
        "none",
    ]
    with pytest.raises(ValueError, match="order_id"):
        await store.reservations.shipment_reservation_status("", 1)


async def test_finding_5_p_outbox_claims_refuse_bad_input_and_change_nothing(store: Store) -> None:
    await store.stock.receive_stock("MUG-RED", 1, "LDN-1")
    await store.picks.confirm(await _picking(store, "A", [("MUG-RED", 1)]))
    with pytest.raises(ValueError, match="limit must be positive"):
        await store.signals.claim_order_signals(limit=0)
    with pytest.raises(ValueError, match="lease_s must be positive"):
        await store.signals.claim_order_signals(lease_s=0)
    assert (await store.signals.claim_order_signals(ids=[]))[1] == []
    assert (await store.signals.claim_order_signals(workflow_ids=["order-NOPE"]))[1] == []
    [row] = await store.signals.order_signals(pending_only=True)
    assert row.attempts == 0 and row.last_error is None
    _, [claimed] = await store.signals.claim_order_signals()
    assert claimed.id == row.id
    assert (await store.signals.claim_order_signals())[1] == []  # held by that claim until it is done or lapses
