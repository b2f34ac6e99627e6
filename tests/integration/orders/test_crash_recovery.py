"""Crashes lose and duplicate nothing: the real worker runs as a separate process and is SIGKILLed in the
middle of a reservation, a label purchase and a customer notification; the Temporal dev server is killed
with an order in flight. Each order still reaches COMPLETED with one label bought at the carrier, each
(event, channel) message sent once, and stock moved once.

Every kill lands at a chosen point, not after a guessed sleep: the worker talks to Twilio and to Temporal
through `TcpGate`s that can hold its requests, it blocks on a SQLite write lock the test holds, or the
sandbox carrier answers its `buy` slowly. Local activities do not show in Temporal while they run, so the
tests follow them by what they do: bytes held at a gate, the notification log, reservations and pick tasks in
the database, the sandbox outbox; and afterwards by the workflow history (which worker took and completed
which workflow task, and the markers of the local activities it ran).

How the server finds out about the crash: every step these tests kill the worker in (the DB steps
reserve_stock and create_pick_task, buy_label, the notifications after the confirmation) is a local activity.
They run inside the worker's workflow task, one after the other with no call to Temporal in between, and reach
Temporal only as markers when that workflow task completes. A worker killed in one leaves the workflow task
started and nothing of it in the history. The server retries the task when its start_to_close timeout (the
workflow task timeout: orders are started with the default, 10 s) expires, on the shared task queue (timing
out a task also drops the dead worker's sticky queue), and the next worker replays the history and runs the
task's local activities again from the first one; each finds what the dead worker did by its business key.
Nothing can tell the server sooner (a workflow task is failed with its task token, which died with the
worker): these kills cost ~10 s.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.db.engine import sqlite_path
from common.demo import seed_demo
from common.inventory.contracts import StockLevel
from common.models import OrderStatus, OrderView
from common.privacy import data_converter
from common.store import Store
from common.temporal import ORDER_STATUS
from sandbox import SandboxServers
from sandbox.carrier import Progression
from tests.integration.worker_process import DevServerProcess, TcpGate, WorkerProcess, eventually
from tests.orders import order_dict

HAPPY_TIMELINE = [
    OrderStatus.RECEIVED,
    OrderStatus.RESERVED,
    OrderStatus.PICKING,
    OrderStatus.PACKED,
    OrderStatus.LABELED,
    OrderStatus.IN_TRANSIT,
    OrderStatus.OUT_FOR_DELIVERY,
    OrderStatus.DELIVERED,
    OrderStatus.COMPLETED,
]
# What an email+SMS customer gets on the happy path: each (event, channel) exactly once.
EXPECTED_MESSAGES = Counter(
    {
        ("order_confirmed", "email"): 1,
        ("order_confirmed", "sms"): 1,
        ("shipped", "email"): 1,
        ("shipped", "sms"): 1,
        ("out_for_delivery", "sms"): 1,
        ("delivered", "email"): 1,
        ("delivered", "sms"): 1,
    }
)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def crash_store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Store]:
    """A database of its own, so that the write locks these tests take block nobody else."""
    path = tmp_path_factory.mktemp("crash") / "fulfill.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    await seed_demo(store)
    yield store
    await store.close()


@pytest.fixture(autouse=True)
def parcels_wait_for_deliver(sandbox: SandboxServers) -> Iterator[None]:
    """Sandbox parcels stay pre_transit until `deliver` moves them. By themselves they would move a step a
    second (the integration settings), faster than the tracking poll sees every step (the server retries it
    about once a second): an order could skip OUT_FOR_DELIVERY. And they would move on while a worker is
    down, which a real parcel, taking days, does not do in seconds."""
    automatic = sandbox.carrier.progression
    sandbox.carrier.progression = Progression(in_transit_after=3600, out_for_delivery_after=7200, delivered_after=10800)
    yield
    sandbox.carrier.progression = automatic


@dataclass
class Order:
    order_id: str
    lines: dict[str, int]
    handle: WorkflowHandle[object, OrderView]
    stock_before: dict[tuple[str, str], StockLevel]


@dataclass
class Rig:
    """One test's stack: the shared dev server and sandbox, a unique task queue, and gates in front of the
    worker's connections to Temporal and to Twilio."""

    client: Client
    api: FulfillmentApi
    worker_settings: Settings
    sandbox: SandboxServers
    logs: Path
    temporal_gate: TcpGate | None = None
    sms_gate: TcpGate | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.api.store

    def gates(self) -> tuple[TcpGate, TcpGate]:
        """(Temporal, Twilio) gates of the worker's connections."""
        assert self.temporal_gate is not None and self.sms_gate is not None
        return self.temporal_gate, self.sms_gate

    async def start_worker(self) -> WorkerProcess:
        n = len(self.workers) + 1
        worker = WorkerProcess(self.worker_settings, self.logs / f"worker-{n}.log", name=f"worker #{n}")
        self.workers.append(worker)
        return await worker.start(self.client)

    async def place(self, lines: dict[str, int]) -> Order:
        order_id = f"ORD-{uuid.uuid4().hex[:8]}"
        before = await stock_by_place(self.store, lines)
        placed = await self.api.place_order(order_dict(order_id, lines))
        handle = self.client.get_workflow_handle(placed.workflow_id, result_type=OrderView)
        return Order(order_id, lines, handle, before)


@pytest.fixture
async def rig(
    dev_server: WorkflowEnvironment,
    sandbox: SandboxServers,
    stack_settings: Settings,
    crash_store: Store,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    settings = stack_settings.model_copy(
        update={
            "task_queue": f"crash-{uuid.uuid4().hex[:8]}",
            "database_url": str(crash_store.db.engine.url),
            "picker_enabled": False,
        }
    )
    host, _, port = settings.temporal_address.rpartition(":")
    async with TcpGate(host, int(port)) as temporal_gate, TcpGate(sandbox.client_host, sandbox.http_port) as sms_gate:
        worker_settings = settings.model_copy(
            update={"temporal_address": temporal_gate.address, "twilio_base_url": sms_gate.url}
        )
        rig = Rig(
            client=dev_server.client,
            api=FulfillmentApi(dev_server.client, crash_store, settings),
            worker_settings=worker_settings,
            sandbox=sandbox,
            temporal_gate=temporal_gate,
            sms_gate=sms_gate,
            logs=tmp_path,
        )
        try:
            yield rig
        finally:
            for worker in rig.workers:
                worker.kill()
                print(f"--- {worker.name} (pid {worker.pid}), {worker.log_path}:\n{worker.log()}")  # shown on failure
            sandbox.clear_faults()


# ---------------------------------------------------------------------------------------------- helpers


async def stock_by_place(store: Store, lines: dict[str, int]) -> dict[tuple[str, str], StockLevel]:
    return {(s.sku, s.warehouse): s for sku in lines for s in await store.stock.stock_levels(sku)}


async def status_is(handle: WorkflowHandle[object, OrderView], status: OrderStatus) -> bool:
    """Read from the workflow's mutable state (describe), so it works while no worker is running."""
    description = await handle.describe()
    return description.typed_search_attributes.get(ORDER_STATUS) == status.value


async def history(order: Order) -> list[HistoryEvent]:
    return [event async for event in order.handle.fetch_history_events()]


def local_activities(events: list[HistoryEvent]) -> list[str]:
    """The local activities recorded in `events` (markers, in order), by activity type."""
    return [
        json.loads(e.marker_recorded_event_attributes.details["data"].payloads[0].data)["activity_type"]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]


def _by(worker: WorkerProcess, identity: str) -> bool:
    return identity.startswith(worker.identity_prefix)


async def lost_workflow_task(order: Order, dead: WorkerProcess) -> HistoryEvent:
    """The workflow task `dead` was killed in: the history ends with it started by `dead`, never completed,
    so the local activities it ran left no marker and Temporal knows nothing of them. Returns the task's
    WorkflowTaskStarted event."""
    events = await history(order)
    last = events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED, last
    assert _by(dead, last.workflow_task_started_event_attributes.identity), last
    return last


def activities(events: list[HistoryEvent]) -> list[str]:
    """The regular activities scheduled in `events`, in order, by activity type."""
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def reservation_task_started(order: Order, worker: WorkerProcess) -> HistoryEvent | None:
    """The workflow task `worker` started after the confirmation activity completed (the one that runs
    reserve_stock), if that is where the history ends."""
    events = await history(order)
    last = events[-1]
    kinds = [e.event_type for e in events]
    if (
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED in kinds
        and last.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        and last.event_id
        > max(e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        and _by(worker, last.workflow_task_started_event_attributes.identity)
    ):
        return last
    return None


async def workflow_task_heartbeated(order: Order, worker: WorkerProcess, first: HistoryEvent) -> HistoryEvent | None:
    """The workflow task `worker` took after heartbeating the task `first` (recording no local activity and
    nothing else), if it did and is still at it."""
    events = [e for e in await history(order) if e.event_id > first.event_id]
    if not events:
        return None
    last = events[-1]
    completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    if (
        len(completed) == 1
        and _by(worker, completed[0].workflow_task_completed_event_attributes.identity)
        and local_activities(events) == []
        and last.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        and _by(worker, last.workflow_task_started_event_attributes.identity)
    ):
        return last
    return None


async def workflow_task_retried(order: Order, lost: HistoryEvent, successor: WorkerProcess) -> float:
    """After a kill inside local activities: wait until the server timed out the workflow task the dead
    worker had started (`lost`, see `lost_workflow_task`) and `successor` replayed the history and completed
    the task's retry, i.e. ran those local activities again. Returns the seconds that took.

    The timeout is the real one, 10 s after the task started. The retry goes to the shared task queue, not
    to the dead worker's sticky queue."""
    started = time.monotonic()

    async def completed_by_successor() -> bool:
        later = [e for e in await history(order) if e.event_id > lost.event_id]
        completed = [
            e
            for e in later
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            and _by(successor, e.workflow_task_completed_event_attributes.identity)
        ]
        if not completed:
            return False
        timed_out = [e for e in later if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT]
        assert [e.workflow_task_timed_out_event_attributes.started_event_id for e in timed_out] == [lost.event_id]
        # The retry is the first task after the lost one (later ones: the order went on, e.g. a tracking poll)
        retry = next(e for e in later if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
        assert retry.workflow_task_scheduled_event_attributes.task_queue.kind == TaskQueueKind.TASK_QUEUE_KIND_NORMAL
        return True

    await eventually(completed_by_successor, f"{successor.name} to complete the retried workflow task", within=40)
    return time.monotonic() - started


async def confirm_pick(rig: Rig, order: Order) -> None:
    await eventually(lambda: status_is(order.handle, OrderStatus.PICKING), f"{order.order_id} to be PICKING")
    (task,) = [t for t in await rig.store.picks.for_order(order.order_id) if t.status == "open"]
    await rig.api.confirm_pick(task.id)


async def notification_status(rig: Rig, order: Order, event: str, channel: str) -> str | None:
    for record in await rig.store.notifications.notifications(order.order_id):
        if record.event == event and record.channel == channel:
            return record.status
    return None


async def customer_messages(rig: Rig, order: Order) -> Counter[tuple[str, str]]:
    """(event, channel) of every email and SMS the sandbox received for the order, matched to the engine's
    notification log by the rendered text."""
    records = await rig.store.notifications.notifications(order.order_id)
    event_of = {(r.channel, r.subject if r.channel == "email" else r.body): r.event for r in records}
    received: Counter[tuple[str, str]] = Counter()
    for message in rig.sandbox.outbox(order.order_id):
        text = message.subject if message.channel == "email" else message.body
        received[(event_of.get((message.channel, text), f"unknown: {text!r}"), message.channel)] += 1
    return received


async def deliver(rig: Rig, order: Order) -> None:
    """Once the order is LABELED, move its parcel in transit, out for delivery and delivered at the carrier,
    each step once the order has taken the one before (see `parcels_wait_for_deliver`)."""

    async def reached(status: OrderStatus) -> None:
        await eventually(lambda: status_is(order.handle, status), f"{order.order_id} to be {status.value}")

    await reached(OrderStatus.LABELED)
    (label,) = await rig.store.labels.for_order(order.order_id)
    assert label.tracking_number is not None
    for step in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY):
        rig.sandbox.force_tracker_status(label.tracking_number, step.value.lower())
        await reached(step)
    rig.sandbox.force_tracker_status(label.tracking_number, "delivered")


async def assert_fulfilled_exactly_once(rig: Rig, order: Order) -> OrderView:
    view = await asyncio.wait_for(order.handle.result(), timeout=60)
    assert view.status == OrderStatus.COMPLETED
    assert [e.status for e in view.timeline] == HAPPY_TIMELINE, view.timeline

    # One label bought at the carrier for the order's business key, and it is the one the order ships with.
    reference = f"label:{order.order_id}:1"
    bought = [s for s in rig.sandbox.shipments() if s["reference"] == reference and s["postage_label"]]
    assert len(bought) == 1, bought
    assert bought[0]["tracking_code"] == view.tracking_number
    assert [s.status for s in await rig.store.labels.for_order(order.order_id)] == ["purchased"]

    # Each message once, and the engine's log agrees that each was sent.
    assert await customer_messages(rig, order) == EXPECTED_MESSAGES
    assert {r.status for r in await rig.store.notifications.notifications(order.order_id)} == {"sent"}

    # Stock moved once: on hand down by the order in the warehouse that shipped it, reserved back to before.
    after = await stock_by_place(rig.store, order.lines)
    for (sku, warehouse), level in after.items():
        shipped = order.lines[sku] if warehouse == view.warehouse else 0
        before = order.stock_before[sku, warehouse]
        assert (level.on_hand, level.reserved) == (before.on_hand - shipped, before.reserved), (sku, warehouse)
    kinds = Counter(entry.kind for entry in await rig.store.stock.ledger(ref=order.order_id))
    assert kinds == Counter({"reservation": len(order.lines), "commit": len(order.lines)})
    return view


class WriteLock:
    """A second SQLite connection holding the database's write lock (BEGIN IMMEDIATE), as a long
    transaction of another process would: the worker's write transactions wait on their busy timeout."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)

    async def acquire_once(self, sql: str, params: tuple[object, ...], within: float = 30.0) -> None:
        """Take the write lock as soon as the read `sql` finds a row: for a worker write that follows another
        one within milliseconds, with nothing outside the worker process in between where it could be held.

        The test races the worker here, so this is as quick as it can be: a thread polls every 0.2 ms (WAL
        readers neither wait for the worker's writes nor hold them up) and gets the GIL every 0.1 ms (by
        default the sandbox servers and gates running on this process's event loop could keep it waiting
        5 ms). It has the lock 1-2 ms after the worker started its first write; the worker, which goes
        through Temporal's SDK in between, starts the next one 5-10 ms after. Check the outcome under the
        lock: a lost race must fail the test, not pass it for the wrong reason."""

        def spin() -> None:
            deadline = time.monotonic() + within
            while self._conn.execute(sql, params).fetchone() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {within:.0f}s waiting for {sql} {params}")
                time.sleep(0.0002)
            self._conn.execute("BEGIN IMMEDIATE")

        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0001)
        try:
            await asyncio.to_thread(spin)
        finally:
            sys.setswitchinterval(switch_interval)

    def count(self, sql: str, params: tuple[object, ...]) -> int:
        """A SELECT count(*) on this connection (inside the lock while it is held)."""
        (n,) = self._conn.execute(sql, params).fetchone()
        return int(n)

    def release(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self._conn.close()


# ---------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kill_point", ["blocked in its transaction", "committed, not yet reported"])
async def test_worker_killed_during_reservation(rig: Rig, kill_point: str) -> None:
    """Killed while reserve_stock waits for the write lock (its transaction never commits), or after its
    transaction committed but before Temporal heard of it (the retry must find that reservation, not make a
    second one).

    The confirmation (notify_customer) goes first, as a regular activity on the customer task queue; its
    completion starts the workflow task whose local activities are reserve_stock and create_pick_task:
    Temporal hears of them only when the worker completes, or heartbeats, that task. The test holds the
    database's write lock from the moment the confirmation is logged, so reserve_stock waits in that task.
    Blocked: the kill comes once the worker has heartbeated the task because reserve_stock outlasted 80% of
    its timeout (~8 s), which recorded nothing; the next worker runs reserve_stock and create_pick_task
    again. Committed: the lock is let go with the task's completion held at the Temporal gate, so the
    reservation and the pick task are in the database when the kill comes; the next worker runs both again,
    and must not reserve twice or open a second pick task. The confirmation is never sent again."""
    temporal_gate, sms_gate = rig.gates()
    path = sqlite_path(rig.worker_settings.database_url)
    assert path is not None
    lock = WriteLock(path)
    try:
        worker = await rig.start_worker()
        # Stop the order inside its confirmation (the SMS held on its way to Twilio): the email is sent and
        # logged, the SMS claimed, and the worker writes nothing until Twilio answers.
        sms_gate.hold()
        order = await rig.place({"MUG-RED": 2, "TEE-M": 1})
        await eventually(lambda: sms_gate.held > 0, "the confirmation SMS to reach the gate")

        # After logging the SMS as sent, the confirmation activity completes (nothing more to write) and the
        # worker's next write is reserve_stock's BEGIN IMMEDIATE, in the next workflow task: take the write
        # lock in between, and check that the reservation did not get there first.
        sent = f"notify:{order.order_id}:order_confirmed:sms"
        grab = asyncio.create_task(
            lock.acquire_once("SELECT 1 FROM notifications WHERE key = ? AND status = 'sent'", (sent,))
        )
        sms_gate.release()
        await grab
        reserved = lock.count("SELECT count(*) FROM reservations WHERE order_id = ?", (order.order_id,))
        assert reserved == 0, "reserve_stock committed before the test could take the lock"
        waiting = await eventually(
            lambda: reservation_task_started(order, worker), "the workflow task after the confirmation to start"
        )

        if kill_point == "blocked in its transaction":
            # reserve_stock waits for the lock. It shows when the workflow task reaches 80% of its timeout (8 s)
            # with a local activity still running: the SDK heartbeats the task, i.e. completes it with the
            # markers of what is done (nothing) and goes on in a new one, which is lost.
            lost = await eventually(
                lambda: workflow_task_heartbeated(order, worker, waiting),
                "the worker to heartbeat its workflow task while reserve_stock waits",
                within=15,
            )
            worker.kill()
            assert await lost_workflow_task(order, worker) == lost
            lock.release()
            assert await rig.store.reservations.reservations(order.order_id) == []
        else:
            temporal_gate.hold()  # the workflow task's completion, with the reservation's result, stays here
            lock.release()
            held = await eventually(
                lambda: rig.store.reservations.reservations(order.order_id), "the reservation to commit"
            )
            # create_pick_task is the workflow task's last local activity: then the worker reports the task.
            await eventually(lambda: rig.store.picks.for_order(order.order_id), "the pick task")
            worker.kill()
            await temporal_gate.sever()  # the completion dies with the process
            temporal_gate.release()
            assert await lost_workflow_task(order, worker) == waiting
            lost = waiting
            assert local_activities(await history(order)) == []
            assert {r.status for r in held} == {"held"}

        await workflow_task_retried(order, lost, await rig.start_worker())
        assert local_activities(await history(order)) == ["reserve_stock", "create_pick_task"]
        assert activities(await history(order)) == ["notify_customer"]  # the confirmation, once
        await confirm_pick(rig, order)
        await deliver(rig, order)
        view = await assert_fulfilled_exactly_once(rig, order)
        assert {r.warehouse for r in await rig.store.reservations.reservations(order.order_id)} == {view.warehouse}
    finally:
        lock.close()


async def test_worker_killed_while_buying_the_label(rig: Rig) -> None:
    """Killed while the carrier is still processing `buy`: the carrier completes the purchase for a worker
    that is gone; the retry finds that label by its business key instead of buying a second one.

    buy_label is a local activity in the workflow task the pick confirmation starts: that task is lost with
    the worker, and the next worker replays it and buys the label again, by the same key."""
    worker = await rig.start_worker()
    order = await rig.place({"MUG-BLUE": 1})
    reference = f"label:{order.order_id}:1"
    await eventually(lambda: status_is(order.handle, OrderStatus.PICKING), "PICKING")
    rig.sandbox.inject_fault("buy", fail_next=1, status=None, delay=2.0)  # slow, then a normal answer
    await confirm_pick(rig, order)
    await eventually(lambda: "buy" not in rig.sandbox.carrier.faults, "the buy request to reach the carrier")

    worker.kill()
    bought = await eventually(
        lambda: [s for s in rig.sandbox.shipments() if s["reference"] == reference and s["postage_label"]],
        "the carrier to complete the purchase",
    )
    (record,) = await rig.store.labels.for_order(order.order_id)
    assert record.status == "created"  # the engine never heard back
    lost = await lost_workflow_task(order, worker)
    assert local_activities(await history(order)) == ["reserve_stock", "create_pick_task"]

    await workflow_task_retried(order, lost, await rig.start_worker())
    await deliver(rig, order)
    view = await assert_fulfilled_exactly_once(rig, order)
    assert view.tracking_number == bought[0]["tracking_code"]


async def test_worker_killed_while_notifying_the_customer(rig: Rig) -> None:
    """Killed in the "shipped" notification after the email went out and was logged, while the SMS request
    is on its way to Twilio: the retry skips the email and sends the SMS once.

    notify_customer is a local activity, in the workflow task that takes the carrier's first scan (with the
    stock commit): that task is lost with the worker, and the next worker replays it, so the commit (by its
    key) and the notification run again as a whole.

    The kill lands before Twilio saw the SMS. (A kill after Twilio accepted it, before the log was marked, is
    tests/integration/notifications/test_notifications.py's: the retry finds it at Twilio.)"""
    _, sms_gate = rig.gates()
    worker = await rig.start_worker()
    order = await rig.place({"BOOK-ADA": 1})
    await eventually(lambda: status_is(order.handle, OrderStatus.PICKING), "PICKING")
    await confirm_pick(rig, order)
    await eventually(lambda: status_is(order.handle, OrderStatus.LABELED), "LABELED")
    (label,) = await rig.store.labels.for_order(order.order_id)
    assert label.tracking_number is not None
    sms_gate.hold()
    rig.sandbox.force_tracker_status(label.tracking_number, "in_transit")  # the first scan: "shipped"
    await eventually(lambda: sms_gate.held > 0, "the shipped SMS to reach the gate")

    async def shipped_email_logged() -> bool:  # the channels go out concurrently: the email may finish later
        return await notification_status(rig, order, "shipped", "email") == "sent"

    await eventually(shipped_email_logged, "the shipped email to be logged as sent")
    assert await notification_status(rig, order, "shipped", "sms") == "sending"
    assert (await customer_messages(rig, order))["shipped", "email"] == 1

    worker.kill()
    await sms_gate.sever()  # the request dies with the process: Twilio never sees it
    sms_gate.release()
    lost = await lost_workflow_task(order, worker)
    assert (await customer_messages(rig, order))["shipped", "sms"] == 0

    await workflow_task_retried(order, lost, await rig.start_worker())

    async def shipped_sms_sent() -> bool:
        return await notification_status(rig, order, "shipped", "sms") == "sent"

    await eventually(shipped_sms_sent, "the shipped SMS to be sent")
    await eventually(lambda: status_is(order.handle, OrderStatus.IN_TRANSIT), "IN_TRANSIT")
    rig.sandbox.force_tracker_status(label.tracking_number, "out_for_delivery")
    await eventually(lambda: status_is(order.handle, OrderStatus.OUT_FOR_DELIVERY), "OUT_FOR_DELIVERY")
    rig.sandbox.force_tracker_status(label.tracking_number, "delivered")
    await assert_fulfilled_exactly_once(rig, order)
    (shipped_sms,) = [
        r for r in await rig.store.notifications.notifications(order.order_id) if r.key.endswith(":shipped:sms")
    ]
    assert shipped_sms.attempts == 2


async def test_dev_server_restart_on_the_same_file_resumes_in_flight_orders(
    sandbox: SandboxServers, stack_settings: Settings, crash_store: Store, tmp_path: Path
) -> None:
    """`temporal server start-dev` killed (SIGKILL) with an order waiting in PICKING and started again on the
    same SQLite file: the order, its timers and its worker carry on."""
    async with DevServerProcess(tmp_path / "temporal.db", tmp_path / "temporal.log") as server:
        await server.start()
        client = await Client.connect(server.address, data_converter=data_converter(get_settings()))
        settings = stack_settings.model_copy(
            update={
                "temporal_address": server.address,
                "task_queue": f"restart-{uuid.uuid4().hex[:8]}",
                "database_url": str(crash_store.db.engine.url),
            }
        )
        rig = Rig(
            client=client,
            api=FulfillmentApi(client, crash_store, settings),
            worker_settings=settings,
            sandbox=sandbox,
            logs=tmp_path,
        )
        try:
            worker = await rig.start_worker()
            order = await rig.place({"TEE-L": 1})
            await eventually(lambda: status_is(order.handle, OrderStatus.PICKING), "PICKING")

            server.kill()
            await server.start()
            assert worker.running, "the worker did not survive the server restart:\n" + worker.log()
            await confirm_pick(rig, order)
            await deliver(rig, order)
            await assert_fulfilled_exactly_once(rig, order)
            assert worker.running
        finally:
            for w in rig.workers:
                w.kill()
