"""A burst of orders over HTTP to two API processes in front of three worker processes, and in the middle of it
one worker and one API SIGKILLed: every order the client got accepted still completes once, with one label,
one message per event and channel, and the stock moved once; nothing the client was not told of exists.

Everything that can die is a real process: the Temporal dev server (`DevServerProcess`, its own SQLite file),
the workers (`python -m workers.worker`, one task queue) and the APIs (`python -m workers.api`). The engine's
database is a fresh PostgreSQL schema. The sandbox servers (SMTP, Twilio, the carrier) and the simulated
picker run in the test's loop: they stand for the outside world and the warehouse, which a crash of ours
does not take down.

The client is a storefront: one Idempotency-Key per order, round-robin over the two APIs, and a POST that fails
(its API died under it, or refuses connections) is sent again to the other API under the same key, until one
answers 2xx: then the order counts as accepted. The kill comes once some orders are accepted, confirmations
have gone out and labels are being bought, while orders are still being placed.

How the workflows find out: a workflow task the dead worker held times out after 10 s (the workflow task
timeout) and goes to a surviving worker, which runs its local activities (confirmations, reservations, labels)
again, each finding what was done by its business key; an activity attempt it held (a tracking poll) times out
after its start_to_close timeout (30 s) and is retried. A POST the dead API held either never reached Temporal
(the retry starts the order) or started it (the retry gets that same run back: `Idempotent-Replayed`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from common.api import FulfillmentApi
from common.config import Settings
from common.demo import seed_demo
from common.inventory.contracts import StockLevel
from common.models import OrderStatus, OrderView
from common.privacy import data_converter
from common.store import Store
from common.temporal import ORDER_STATUS
from sandbox import SandboxServers, free_port_settings
from tests.integration.db_fixtures import postgres_schema
from tests.integration.worker_process import ApiProcess, DevServerProcess, WorkerProcess, eventually
from tests.orders import order_dict
from workers.picker import run_picker

pytestmark = pytest.mark.postgres

# The burst: orders PACE apart, then SLOW_PACE apart (the first labels come seconds after the first orders, later
# on a busy machine: the burst must still be on when they do); it ends once ORDERS_AFTER_KILL orders were placed
# after the kill and at least MIN_ORDERS in all, or at MAX_ORDERS, where the kill must have come.
MIN_ORDERS, MAX_ORDERS, ORDERS_AFTER_KILL = 40, 60, 8
PACE, SLOW_PACE, FAST_ORDERS = 0.2, 0.5, 24
# What the orders ask for, in turn; all of it fits in LDN-1 (the demo stock), so nothing waits for stock
BASKETS: list[dict[str, int]] = [{"MUG-RED": 1}, {"TEE-M": 1}, {"MUG-RED": 1, "TEE-M": 1}, {"TEE-L": 1}]
# Every order, whichever tracking steps its polls see, tells the customer these (event, channel) pairs
REQUIRED = {("order_confirmed", "email"), ("order_confirmed", "sms"), ("delivered", "email"), ("delivered", "sms")}
COMPLETION_TIMEOUT = 150.0


@dataclass
class Placement:
    """What the storefront knows of one order: every POST it sent and the answer that accepted it."""

    order_id: str
    key: str
    lines: dict[str, int]
    attempts: list[str] = field(default_factory=list)  # per POST: "<api>: <outcome>"
    accepted: dict[str, Any] | None = None  # the 2xx body
    replayed: bool = False  # the accepting answer said Idempotent-Replayed: a POST before had started it
    refused: str | None = None  # a 4xx: not a crash, a bug of the test or the API


@dataclass
class Stack:
    client: Client
    store: Store
    settings: Settings
    sandbox: SandboxServers
    workers: list[WorkerProcess]
    apis: list[ApiProcess]
    intake_key: str


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Parcels move a step a second and are polled twice a second (the integration settings): orders complete
    # seconds after their label. A poll may miss a step (e.g. see delivered right after pre_transit): the
    # messages checked are then those of the steps seen.
    sandbox_settings = free_port_settings(
        sandbox_in_transit_after=1.0, sandbox_out_for_delivery_after=2.0, sandbox_delivered_after=3.0
    )
    async with (
        postgres_schema() as database_url,
        SandboxServers(sandbox_settings, db_path=tmp_path / "sandbox.db") as sandbox,
        DevServerProcess(tmp_path / "temporal.db", tmp_path / "temporal.log") as server,
    ):
        base = Settings(
            temporal_address=server.address,
            task_queue=f"burst-{uuid.uuid4().hex[:8]}",
            var_dir=tmp_path,
            database_url=database_url,
            tracking_poll_interval=0.5,
            picker_enabled=False,  # the picker runs here (run_picker), not in a process that dies
            return_window=0,  # orders close at delivery
            # Tracking is polled: the sandbox sends no carrier webhooks (see worker_env)
            carrier_webhook_secret=None,
        )
        # SMS status callbacks go to the sandbox's own sink: the APIs under test are killed
        settings = sandbox.settings_for_clients(base)
        store = await Store.open(settings.database_url)  # migrates the fresh schema before any process opens it
        await seed_demo(store)
        intake_key = (await store.api_keys.create("storefront", ["intake"])).secret
        start_server = asyncio.create_task(server.start())
        workers = [WorkerProcess(settings, tmp_path / f"worker-{n}.log", name=f"worker #{n}") for n in (1, 2, 3)]
        apis = [ApiProcess(settings, tmp_path / f"api-{n}.log", name=f"api #{n}") for n in (1, 2)]
        try:
            await start_server
            client = await Client.connect(server.address, data_converter=data_converter(settings))
            # Five Python processes starting at once on a busy 2-core machine: seconds each, up to a minute seen
            await asyncio.gather(*(w.start(client, within=120) for w in workers), *(a.start(120) for a in apis))
            yield Stack(client, store, settings, sandbox, workers, apis, intake_key)
        finally:
            for process in [*workers, *apis]:
                process.kill()
                print(f"--- {process.name}, {process.log_path}:\n{process.log(3000)}")  # shown on failure
            await store.close()


# ---------------------------------------------------------------------------------------------- the client


async def place(http: httpx.AsyncClient, stack: Stack, p: Placement, first: int, pending: Counter[str]) -> None:
    """POST the order to API `first`, and on a failure of transport or a 5xx to the other one, under the
    same Idempotency-Key, until one answers. `pending`: POSTs under way, by API."""
    body = order_dict(p.order_id, p.lines)
    headers = {"Authorization": f"Bearer {stack.intake_key}", "Idempotency-Key": p.key}
    for attempt in range(8):
        api = stack.apis[(first + attempt) % len(stack.apis)]
        pending[api.name] += 1
        try:
            answer = await http.post(f"{api.url}/v1/orders", json=body, headers=headers)
        except httpx.TransportError as err:
            p.attempts.append(f"{api.name}: {type(err).__name__}")
            await asyncio.sleep(0.1)
            continue
        finally:
            pending[api.name] -= 1
        p.attempts.append(f"{api.name}: {answer.status_code}")
        if answer.is_success:
            p.accepted = answer.json()
            p.replayed = answer.headers.get("Idempotent-Replayed") == "true"
            return
        if answer.status_code < 500:
            p.refused = f"{answer.status_code} {answer.text[:300]}"
            return
        await asyncio.sleep(0.2)


def bought_labels(sandbox: SandboxServers) -> Counter[str]:
    """Labels bought at the carrier, by order (references are label:<order>:<shipment>)."""
    return Counter(s["reference"].split(":")[1] for s in sandbox.shipments() if s.get("postage_label"))


def labels_started(sandbox: SandboxServers) -> int:
    """Shipments created at the carrier (the first step of buying a label), bought or not yet."""
    return len(sandbox.shipments())


def confirmations(sandbox: SandboxServers) -> int:
    return sum(1 for m in sandbox.outbox() if m.order_id is not None)


# ---------------------------------------------------------------------------------------------- checks


async def messages_by_event(stack: Stack, order_id: str) -> Counter[tuple[str, str]]:
    """(event, channel) of every message the customer got for the order, matched to the engine's notification
    log by the rendered text: each SMS the sandbox received, and each email by its Message-ID. An email whose
    sender died after the relay accepted it and before the log marked it goes again (SMTP cannot be asked what
    it accepted), under the same Message-ID, and the customer's mailbox keeps one; an SMS in that window is
    found at Twilio by the retry and must not go twice."""
    records = await stack.store.notifications.notifications(order_id)
    event_of = {(r.channel, r.subject if r.channel == "email" else r.body): r.event for r in records}
    received: Counter[tuple[str, str]] = Counter()
    mailbox: set[str | None] = set()
    for message in stack.sandbox.outbox(order_id):
        if message.channel == "email":
            if message.provider_id in mailbox:
                continue
            mailbox.add(message.provider_id)
        text = message.subject if message.channel == "email" else message.body
        received[(event_of.get((message.channel, text), f"unknown: {text!r}"), message.channel)] += 1
    return received


async def what_was_sent(stack: Stack, order_id: str, pairs: set[tuple[str, str]]) -> str:
    """For a report: the provider ids (SMS sid, email Message-ID) the sandbox received for these (event, channel)
    pairs of the order, and what the engine logged (status, attempts, the provider id it kept)."""
    records = [r for r in await stack.store.notifications.notifications(order_id) if (r.event, r.channel) in pairs]
    texts = {(r.channel, r.subject if r.channel == "email" else r.body): r for r in records}
    received = [
        f"{m.channel} {m.provider_id} at {m.received_at:%H:%M:%S.%f}"
        for m in stack.sandbox.outbox(order_id)
        if (m.channel, m.subject if m.channel == "email" else m.body) in texts
    ]
    logged = [f"{r.event}/{r.channel} {r.status} after {r.attempts} attempts, {r.provider_message_id}" for r in records]
    return f"received {received}; logged {logged}"


async def final_view(stack: Stack, p: Placement) -> tuple[OrderView | None, str]:
    """The order's result within the timeout, or (None, where it stands)."""
    handle = stack.client.get_workflow_handle(p.accepted["workflow_id"], result_type=OrderView)  # type: ignore[index]
    try:
        return await asyncio.wait_for(handle.result(), COMPLETION_TIMEOUT), ""
    except TimeoutError:
        description = await handle.describe()
        status = description.typed_search_attributes.get(ORDER_STATUS)
        return None, f"{description.status.name if description.status else '?'}, order status {status}"
    except Exception as err:  # a failed workflow: what it failed with
        return None, f"{type(err).__name__}: {err}"


def report(problems: dict[str, list[str]]) -> str:
    lines = []
    for what, offenders in problems.items():
        if offenders:
            lines.append(f"{what} ({len(offenders)}):")
            lines.extend(f"  {o}" for o in offenders)
    return "\n".join(lines)


async def burst_with_kills(stack: Stack, placements: list[Placement], started: float) -> dict[str, Any]:
    """Place orders (the burst: see MIN_ORDERS), each POST on its own; SIGKILL worker #1 and API #1 once orders
    are accepted, confirmations sent and labels being bought, while API #1 holds a POST. Returns what stood at
    the kill; `placements` is cut to the orders placed."""
    sandbox = stack.sandbox
    victim_worker, victim_api = stack.workers[0], stack.apis[0]
    at_kill: dict[str, Any] = {}
    posts: list[asyncio.Task[None]] = []
    pending: Counter[str] = Counter()

    def ripe() -> bool:
        return (
            sum(p.accepted is not None for p in placements) >= MIN_ORDERS // 4
            and confirmations(sandbox) > 0
            and labels_started(sandbox) > 0
            and pending[victim_api.name] > 0  # the API dies holding a POST
        )

    async def kill_mid_burst() -> None:
        what = "orders accepted, confirmations sent, labels being bought, API #1 holding a POST"
        await eventually(ripe, what, within=MAX_ORDERS * SLOW_PACE, interval=0.02)
        held = pending[victim_api.name]
        victim_worker.kill()
        victim_api.kill()
        at_kill.update(
            seconds=round(time.monotonic() - started, 1),
            posted=len(posts),
            accepted=sum(p.accepted is not None for p in placements),
            posts_held_by_killed_api=held,
            labels_started=labels_started(sandbox),
            labels_bought=len(bought_labels(sandbox)),
            messages_sent=confirmations(sandbox),
        )

    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as http:
        killer = asyncio.create_task(kill_mid_burst())
        for i, p in enumerate(placements):
            posts.append(asyncio.create_task(place(http, stack, p, i % 2, pending)))
            if at_kill and len(posts) >= max(MIN_ORDERS, at_kill["posted"] + ORDERS_AFTER_KILL):
                break
            await asyncio.sleep(PACE if i < FAST_ORDERS else SLOW_PACE)
        del placements[len(posts) :]
        await killer
        await asyncio.gather(*posts)
    assert not victim_worker.running and not victim_api.running
    return at_kill


async def settle(stack: Stack, accepted: list[Placement]) -> tuple[dict[str, OrderView], list[str]]:
    """The final views of the orders that completed, and where the others stand."""
    views: dict[str, OrderView] = {}
    stuck = []
    outcomes = await asyncio.gather(*(final_view(stack, p) for p in accepted))
    for p, (view, where) in zip(accepted, outcomes, strict=True):
        if view is None:
            stuck.append(f"{p.order_id}: {where}")
        elif view.status != OrderStatus.COMPLETED:
            stuck.append(f"{p.order_id}: ended {view.status.value}: {view.timeline[-1:]}")
        else:
            views[p.order_id] = view
    return views, stuck


async def run_problems(stack: Stack, accepted: list[Placement]) -> tuple[list[str], list[str]]:
    """(accepted orders with other runs than the one answered, workflows of orders nobody was answered for)."""
    answered = {p.accepted["workflow_id"]: p.accepted["run_id"] for p in accepted if p.accepted}

    async def listed() -> dict[str, list[str]] | None:
        runs: dict[str, list[str]] = defaultdict(list)
        async for wf in stack.client.list_workflows("WorkflowType = 'OrderWorkflow'"):
            runs[wf.id].append(wf.run_id)
        return runs if set(answered) <= set(runs) else None

    runs = await eventually(listed, "visibility to list every accepted order", within=30, interval=0.5)
    others = [f"{w}: runs {r}, answered {answered[w]}" for w, r in runs.items() if w in answered and r != [answered[w]]]
    unknown = [f"{w}: runs {r}" for w, r in runs.items() if w not in answered]
    return others, unknown


def label_problems(stack: Stack, accepted: list[Placement], views: dict[str, OrderView]) -> list[str]:
    """One label bought per accepted order, the one it shipped with; none for anything else."""
    labels = bought_labels(stack.sandbox)
    by_reference = {s["reference"]: s for s in stack.sandbox.shipments() if s.get("postage_label")}
    problems = []
    for p in accepted:
        if labels[p.order_id] != 1:
            problems.append(f"{p.order_id}: {labels[p.order_id]} labels bought")
        elif p.order_id in views:
            tracking = by_reference[f"label:{p.order_id}:1"]["tracking_code"]
            if tracking != views[p.order_id].tracking_number:
                problems.append(f"{p.order_id}: bought {tracking}, shipped {views[p.order_id].tracking_number}")
    ids = {p.order_id for p in accepted}
    return problems + [f"{o}: {n} labels, not an accepted order" for o, n in labels.items() if o not in ids]


async def message_problems(stack: Stack, accepted: list[Placement]) -> tuple[list[str], list[str]]:
    """(orders with an (event, channel) received other than once, orders missing a message): every message the
    engine logged, and the REQUIRED ones, arrived once at the sandbox; nothing else arrived."""
    duplicates, missing = [], []
    pairs: Counter[tuple[str, str]] = Counter()
    for p in accepted:
        got = await messages_by_event(stack, p.order_id)
        logged = {(r.event, r.channel) for r in await stack.store.notifications.notifications(p.order_id)}
        twice = {pair: n for pair, n in got.items() if n != 1}
        if twice:
            duplicates.append(f"{p.order_id}: {twice}; {await what_was_sent(stack, p.order_id, set(twice))}")
            pairs.update(twice.keys())
        lacking = sorted((REQUIRED | logged) - set(got))
        if lacking:
            missing.append(f"{p.order_id}: no {lacking} (received {dict(got)})")
    if pairs:
        print(f"(event, channel) received more than once, number of orders: {dict(pairs)}")
    return duplicates, missing


async def stock_problems(
    stack: Stack, before: dict[tuple[str, str], StockLevel], views: dict[str, OrderView]
) -> tuple[list[str], list[str]]:
    """(stock levels off, reservations still held): on hand down by what the completed orders shipped, from where
    they shipped it; reserved back to what it was."""
    shipped: Counter[tuple[str, str]] = Counter()
    for view in views.values():
        for parcel in view.shipments:
            for line in parcel.lines:
                shipped[line.sku, parcel.warehouse] += line.quantity
    off = []
    for s in await stack.store.stock.stock_levels():
        was, out = before[s.sku, s.warehouse], shipped[s.sku, s.warehouse]
        if (s.on_hand, s.reserved) != (was.on_hand - out, was.reserved):
            off.append(
                f"{s.sku}@{s.warehouse}: on hand/reserved {s.on_hand}/{s.reserved}, expected "
                f"{was.on_hand - out}/{was.reserved} ({was.on_hand} before, {out} shipped)"
            )
    held = [
        f"{r.order_id}: {r.sku}@{r.warehouse} x{r.quantity}"
        for r in await stack.store.reservations.reservations()
        if r.status == "held"
    ]
    return off, held


# ---------------------------------------------------------------------------------------------- the test


async def test_one_worker_and_one_api_killed_mid_burst_lose_and_duplicate_nothing(stack: Stack) -> None:
    started = time.monotonic()
    stock_before = {(s.sku, s.warehouse): s for s in await stack.store.stock.stock_levels()}
    run = uuid.uuid4().hex[:6]
    placements = [
        Placement(f"ORD-B{run}{i:03d}", f"storefront-{run}-{i}", BASKETS[i % len(BASKETS)]) for i in range(MAX_ORDERS)
    ]
    stop_picker = asyncio.Event()
    picker_api = FulfillmentApi(stack.client, stack.store, stack.settings)
    picker = asyncio.create_task(run_picker(picker_api, 0, stop_picker, poll_s=0.2))
    try:
        at_kill = await burst_with_kills(stack, placements, started)
        print(f"at the kill: {at_kill}")
        assert at_kill["posted"] < len(placements), f"the kill came after the burst: {at_kill}"

        refused = [f"{p.order_id}: {p.refused} after {p.attempts}" for p in placements if p.refused]
        unanswered = [f"{p.order_id}: {p.attempts}" for p in placements if p.accepted is None and p.refused is None]
        assert not refused and not unanswered, report({"refused": refused, "never accepted": unanswered})
        accepted = [p for p in placements if p.accepted is not None]
        retried = [p for p in accepted if len(p.attempts) > 1]
        print(
            f"{len(accepted)} accepted; {len(retried)} after a failed POST, {sum(p.replayed for p in retried)} of "
            "them replayed (the dead API had started them): "
            + "; ".join(f"{p.order_id} {p.attempts}{' replayed' if p.replayed else ''}" for p in retried)
        )
        views, stuck = await settle(stack, accepted)
        print(f"every order settled {time.monotonic() - started:.1f}s after the burst began")
    finally:
        stop_picker.set()
        await picker

    other_runs, unknown = await run_problems(stack, accepted)
    duplicates, missing = await message_problems(stack, accepted)
    stock_off, held = await stock_problems(stack, stock_before, views)
    problems = {
        "not COMPLETED": stuck,
        "runs other than the one answered": other_runs,
        "orders the client was never told of": unknown,
        "labels": label_problems(stack, accepted, views),
        "(event, channel) messages received other than once": duplicates,
        "messages missing": missing,
        "stock": stock_off,
        "reservations still held": held,
    }
    print(f"runtime {time.monotonic() - started:.1f}s")
    assert not any(problems.values()), f"after the kill at {at_kill}:\n{report(problems)}"
