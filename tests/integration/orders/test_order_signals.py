"""Review finding 5, delivery: the order-signal outbox on the real Temporal dev server. Rows written with a
stock change or a pick confirmation reach the order's workflow (here a small stand-in that records what it
gets), in order; a closed or unknown order, or an update its workflow refuses, counts as delivered with a
note; with the engine unreachable the rows wait, and the worker's relay delivers them on its next round.
The database is real SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from common.api import FulfillmentApi
from common.cli.inventory import inventory_app
from common.config import Settings, get_settings
from common.errors import PickNotAllowed
from common.models import PickShortage, ReservationReleased
from common.order_signals import deliver_order_signals
from common.privacy import data_converter
from common.store import Store
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.store_checks import assert_books_balance, open_stores
from workers.reconciler import OrderSignalRelay, running_relay


@workflow.defn(sandboxed=False)
class OrderStandIn:
    """Receives what the outbox sends an order, in the order it arrives; refuses a second shortage of a task."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.stop)

    @workflow.signal
    def pick_confirmed(self, task_id: str) -> None:
        self.seen.append(["pick_confirmed", task_id])

    @workflow.signal
    def reservation_released(self, released: ReservationReleased) -> None:
        self.seen.append(["reservation_released", released.sku, released.shipments, released.reason])

    @workflow.update
    def pick_short(self, shortage: PickShortage) -> None:
        self.seen.append(["pick_short", shortage.task_id, shortage.short])

    @pick_short.validator
    def _one_shortage_per_task(self, shortage: PickShortage) -> None:
        if any(s[0] == "pick_short" and s[1] == shortage.task_id for s in self.seen):
            raise ValueError(f"{shortage.task_id} is already confirmed short")

    @workflow.signal
    def finish(self) -> None:
        self.stop = True

    @workflow.query
    def received(self) -> list[Any]:
        return self.seen


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh database (named apart from the stack's `store`, which the session's worker uses)."""
    async with database_url(request.param, tmp_path) as url, open_stores(url, 1) as (opened,):
        await opened.stock.receive_stock("MUG-RED", 10, "LDN-1")
        yield opened


@pytest.fixture
async def orders(dev_server: WorkflowEnvironment) -> AsyncIterator[Any]:
    """start(order_id) runs a stand-in for order `order_id` (workflow order-<order_id>) on a worker of its own."""
    client = dev_server.client
    queue = f"outbox-{uuid.uuid4().hex[:8]}"
    handles: list[WorkflowHandle[Any, Any]] = []

    async def start(order_id: str) -> WorkflowHandle[Any, Any]:
        handle = await client.start_workflow(OrderStandIn.run, id=f"order-{order_id}", task_queue=queue)
        handles.append(handle)
        return handle

    async with Worker(client, task_queue=queue, workflows=[OrderStandIn]):
        yield start
        for handle in handles:
            await handle.signal(OrderStandIn.finish)


def _order_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:8]}"


async def _picking(store: Store, order_id: str, qty: int = 2, shipment: int = 1) -> str:
    got = await store.reservations.allocate(order_id, [("MUG-RED", qty)], prefer_country="GB", first_shipment=shipment)
    assert got.shipments, got
    return (await store.picks.create(order_id, shipment, "LDN-1", [("MUG-RED", qty)])).id


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _unreachable_engine() -> Client:
    """A client of an engine that is down: nothing listens on its port."""
    return await Client.connect(f"127.0.0.1:{_closed_port()}", data_converter=data_converter(get_settings()), lazy=True)


async def test_finding_5_i_outbox_rows_reach_the_order_in_the_order_they_were_written(
    db: Store, dev_server: WorkflowEnvironment, orders: Any
) -> None:
    a, b = _order_id(), _order_id()
    handle_a, handle_b = await orders(a), await orders(b)
    first = await _picking(db, a)
    await _picking(db, a, qty=3, shipment=2)
    short = await _picking(db, b)
    await db.picks.confirm(first)  # A: parcel 1 packed
    await db.picks.confirm(short, {"MUG-RED": 1})  # B: short of one
    change = await db.counts.count_stock("MUG-RED", "LDN-1", 2, reason="flood")  # A's parcel 2 loses its mugs
    assert change.released_shipments == {a: [2]}
    pending = await db.signals.order_signals(pending_only=True)
    assert [(r.workflow_id, r.name) for r in pending] == [
        (f"order-{a}", "pick_confirmed"),
        (f"order-{b}", "pick_short"),
        (f"order-{a}", "reservation_released"),
    ]

    report = await deliver_order_signals(dev_server.client, db)
    assert report.ok and sorted(report.delivered) == sorted(r.id for r in pending)
    assert await handle_a.query(OrderStandIn.received) == [
        ["pick_confirmed", first],
        ["reservation_released", "MUG-RED", [2], "count: flood"],
    ]
    assert await handle_b.query(OrderStandIn.received) == [["pick_short", short, {"MUG-RED": 1}]]
    rows = await db.signals.order_signals()
    assert all(r.delivered_at is not None and r.attempts == 1 and r.note is None for r in rows), rows
    # Delivered rows are not delivered again.
    assert (await deliver_order_signals(dev_server.client, db)).delivered == []
    await assert_books_balance(db)


async def test_finding_5_j_a_closed_order_or_a_refused_update_counts_as_delivered_with_a_note(
    db: Store, dev_server: WorkflowEnvironment, orders: Any
) -> None:
    gone, refusing = _order_id(), _order_id()
    handle = await orders(refusing)
    await db.picks.confirm(await _picking(db, gone))  # nobody runs order `gone`
    short = await _picking(db, refusing)
    await db.picks.confirm(short, {"MUG-RED": 2})
    # The shortage already reached the workflow another way (the Web UI): the outbox's copy is refused.
    await handle.execute_update(OrderStandIn.pick_short, PickShortage(task_id=short, short={"MUG-RED": 2}))

    report = await deliver_order_signals(dev_server.client, db)
    assert report.ok and len(report.delivered) == 2
    notes = {r.workflow_id: r.note for r in await db.signals.order_signals()}
    assert notes[f"order-{gone}"] == f"not delivered: workflow order-{gone} is closed or unknown"
    assert f"{short} is already confirmed short" in (notes[f"order-{refusing}"] or "")
    assert await handle.query(OrderStandIn.received) == [["pick_short", short, {"MUG-RED": 2}]]


async def test_finding_5_k_with_the_engine_down_the_rows_wait_and_the_relay_delivers_them_later(
    db: Store, dev_server: WorkflowEnvironment, orders: Any
) -> None:
    a, b = _order_id(), _order_id()
    handle_a, handle_b = await orders(a), await orders(b)
    first = await _picking(db, a)
    await _picking(db, b)
    await db.picks.confirm(first)
    await db.counts.count_stock("MUG-RED", "LDN-1", 0, reason="cycle count")  # B's mugs are gone; A's are packed
    await db.stock.receive_stock("MUG-RED", 3, "LDN-1")  # 2 for B, which waits for them now, and 1 for A
    again = await _picking(db, a, qty=1, shipment=2)
    await db.picks.confirm(again)  # a second row for A
    rows = await db.signals.order_signals(pending_only=True)
    assert [r.workflow_id for r in rows] == [f"order-{a}", f"order-{b}", f"order-{a}"]

    down = await deliver_order_signals(await _unreachable_engine(), db)
    assert not down.ok and down.delivered == [] and "Connection refused" in (down.error or "")
    after = {r.id: r for r in await db.signals.order_signals(pending_only=True)}
    assert len(after) == 3
    assert [after[r.id].attempts for r in rows] == [1, 1, 0]  # A's second row waits behind its first
    assert all("Connection refused" in (after[r.id].last_error or "") for r in rows[:2])

    # The engine is back: the next round of a relay (every worker runs one) delivers them, in order.
    async with running_relay(dev_server.client, db, Settings(order_signal_relay_interval=0.2)) as relay:
        assert isinstance(relay, OrderSignalRelay)
        for _ in range(100):
            if not await db.signals.order_signals(pending_only=True):
                break
            await asyncio.sleep(0.1)
    assert await db.signals.order_signals(pending_only=True) == []
    assert await handle_a.query(OrderStandIn.received) == [["pick_confirmed", first], ["pick_confirmed", again]]
    assert await handle_b.query(OrderStandIn.received) == [
        ["reservation_released", "MUG-RED", [1], "count: cycle count"]
    ]


async def test_finding_5_l_rows_another_relay_is_delivering_are_left_to_it_and_keep_their_order(
    db: Store, dev_server: WorkflowEnvironment, orders: Any
) -> None:
    a, b = _order_id(), _order_id()
    handle_a = await orders(a)
    await orders(b)
    for order_id in (a, b, a):
        shipment = len(await db.picks.for_order(order_id)) + 1
        await db.picks.confirm(await _picking(db, order_id, qty=1, shipment=shipment))
    first_a, row_b, second_a = await db.signals.order_signals()
    # Another relay has claimed A's first row: this round delivers B's only; A's second must wait behind it.
    _, taken = await db.signals.claim_order_signals(ids=[first_a.id])
    assert [r.id for r in taken] == [first_a.id]
    report = await deliver_order_signals(dev_server.client, db)
    assert report.delivered == [row_b.id] and report.ok
    assert await handle_a.query(OrderStandIn.received) == []
    # Asked for A's second row by id (the API does that), its older pending row would go first: still claimed.
    assert (await deliver_order_signals(dev_server.client, db, ids=[second_a.id])).delivered == []
    assert [r.id for r in await db.signals.order_signals(pending_only=True)] == [first_a.id, second_a.id]


async def test_finding_5_m_the_api_tells_the_order_at_once_or_leaves_it_to_the_relay(
    db: Store, dev_server: WorkflowEnvironment, orders: Any
) -> None:
    a, b = _order_id(), _order_id()
    handle_a = await orders(a)
    await orders(b)
    up = FulfillmentApi(dev_server.client, db, Settings())
    down = FulfillmentApi(await _unreachable_engine(), db, Settings())

    task = await _picking(db, a)
    assert (await up.confirm_pick(task)).status == "confirmed"
    assert await db.signals.order_signals(pending_only=True) == []
    assert await handle_a.query(OrderStandIn.received) == [["pick_confirmed", task]]

    # Engine down: the confirmation stands, the API does not raise, the message waits; confirming again
    # (idempotent, no second message) once the engine is back delivers it.
    task_b = await _picking(db, b)
    assert (await down.confirm_pick(task_b, {"MUG-RED": 1})).short == {"MUG-RED": 1}
    [waiting] = await db.signals.order_signals(pending_only=True)
    assert (waiting.workflow_id, waiting.attempts) == (f"order-{b}", 1)
    await up.confirm_pick(task_b, {"MUG-RED": 1})
    assert await db.signals.order_signals(pending_only=True) == []

    # A count through the API: the released order is told at once, and the report says so.
    c = _order_id()
    handle_c = await orders(c)
    released = await _picking(db, c, qty=1)
    counted = await up.count_stock("MUG-RED", "LDN-1", 0, reason="flood")  # only the packed parcels are left
    assert counted.change.released_shipments == {c: [1]}
    assert counted.orders_told.ok
    assert await handle_c.query(OrderStandIn.received) == [["reservation_released", "MUG-RED", [1], "count: flood"]]
    # Staff confirming the released parcel are told not to ship it.
    with pytest.raises(PickNotAllowed, match="its stock was released by a count: do not ship it"):
        await up.confirm_pick(released)
    await assert_books_balance(db)


def test_finding_5_n_the_cli_count_with_the_engine_down_says_the_orders_will_be_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}"

    async def prepare() -> None:
        async with open_stores(url, 1) as (s,):
            await s.stock.receive_stock("MUG-RED", 2, "LDN-1")
            await _picking(s, "ORD-CLI")

    asyncio.run(prepare())
    monkeypatch.setenv("FULFILL_DATABASE_URL", url)
    monkeypatch.setenv("FULFILL_TEMPORAL_ADDRESS", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("FULFILL_SMTP_PORT", "1")
    get_settings.cache_clear()
    app = typer.Typer()
    app.add_typer(inventory_app, name="inventory")
    try:
        result = CliRunner().invoke(app, ["inventory", "count", "MUG-RED", "--warehouse", "LDN-1", "--counted", "0"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "released the reservations of 1 order(s)" in " ".join(result.stdout.split())
    warning = " ".join(result.stderr.split())
    assert (
        "recorded, but the engine is unreachable" in warning
        and "orders ORD-CLI will be told when it is back" in warning
    )

    async def pending() -> list[str]:
        async with await Store.open(url) as s:
            return [r.name for r in await s.signals.order_signals(pending_only=True)]

    assert asyncio.run(pending()) == ["reservation_released"]


async def test_finding_5_o_the_worker_runs_the_relay(worker: None, store: Store) -> None:
    """The stack's worker (running_worker) delivers what is pending by itself, within a relay interval: here
    a count recorded without telling anyone, for an order no workflow runs (delivered with a note)."""
    sku = f"LAMP-{uuid.uuid4().hex[:6].upper()}"
    order_id = _order_id()
    await store.catalog.upsert_product(sku, "Desk lamp", 3900, 900)
    await store.stock.receive_stock(sku, 1, "LDN-1")
    assert (await store.reservations.allocate(order_id, [(sku, 1)])).shipments
    await store.counts.count_stock(sku, "LDN-1", 0, reason="relay test")
    [row] = await store.signals.order_signals(f"order-{order_id}")
    for _ in range(int(RELAY_WAIT_S / 0.2)):
        [row] = await store.signals.order_signals(f"order-{order_id}")
        if row.delivered_at is not None:
            break
        await asyncio.sleep(0.2)
    assert row.delivered_at is not None, row
    assert row.note == f"not delivered: workflow order-{order_id} is closed or unknown"


RELAY_WAIT_S = 3 * Settings().order_signal_relay_interval
