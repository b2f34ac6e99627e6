"""Order throughput benchmark (`make bench`): the engine against a bare-Temporal floor, on one dev server.

    python bench/orders.py                      # floor + engine, 300 each, own dev server
    python bench/orders.py --orders 100 --engine-only
    python bench/orders.py --address 127.0.0.1:7233   # an existing server (search attributes registered)
    python bench/orders.py --scale 10000        # many orders parked IN_TRANSIT: worker memory, list latency

One run, side by side on the same Temporal server:
  floor   N FloorWorkflows (6 trivial activities each, bench/floor_workflow.py) started together, own worker
          process and task queue: workflows/s from the first start to the last close.
  engine  N happy-path orders through FulfillmentApi.place_order, all placed at once, to COMPLETED: the real
          worker (`python -m workers.worker`), sandbox SMTP/SMS/carrier (`python -m workers.sandbox`), a fresh
          SQLite database with the demo catalogue and enough stock; picks are confirmed by this process as
          they appear. Orders/s from the first placement to the last close.
  then    a latency probe: a few orders placed one at a time on the idle engine (confirmation e-mail latency
          without a backlog).

Every process is separate (as in `make run`), so the load generator does not share a thread with the worker
it measures. Throughput ends at the server's close time of the last workflow; the e-mail latency is the
sandbox's receive time minus the moment place_order was called (one machine, one clock). The table is
printed and written to bench/results/<kind>-<UTC time>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from common.api import FulfillmentApi
from common.config import Settings
from common.demo import seed_demo
from common.errors import FulfillmentError
from common.store import Store
from common.temporal import ORDER_STATUS
from sandbox import fetch_outbox
from workflows.order import OrderWorkflow

from floor_workflow import DEFAULT_STEPS
from history import fetch_stats, spread_sample, summarise
from stack import (
    BENCH_DIR,
    BIN,
    Process,
    StackError,
    connect_when_up,
    start_engine_worker,
    start_floor_worker,
    start_sandbox,
    start_temporal,
    with_sandbox_ports,
)

console = Console(stderr=True)
RESULTS_DIR = BENCH_DIR / "results"
SKUS = ("MUG-RED", "MUG-BLUE", "TEE-M", "BOOK-ADA")  # one line per order, rotating: spreads row contention
STOCK_WAREHOUSE = "LDN-1"
DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class Options:
    orders: int
    floor: bool
    engine: bool
    address: str | None
    namespace: str
    poll_interval: float
    progression: tuple[float, float, float]
    rate: float
    probe: int
    probe_interval: float
    history_sample: int
    scale: int | None
    scale_poll_interval: float
    scale_concurrency: int
    worker_module: str
    engine_workers: int
    save: bool
    keep: bool


@dataclass
class Placement:
    order_id: str
    called_at: float  # time.time() just before place_order
    accepted_at: float  # ... and when it returned (the workflow was started)


# ------------------------------------------------------------------------------------------------ helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


def cpu_snapshot(procs: dict[str, Process | None]) -> dict[str, float]:
    snap = {name: p.cpu_seconds() for name, p in procs.items() if p is not None}
    snap["bench"] = time.process_time()
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in before if name in after}


async def wait_until(
    what: str,
    count: Callable[[], Awaitable[int]],
    target: int,
    watch: Sequence[Process],
    stall_s: float = 120.0,
    report_every: float = 10.0,
) -> None:
    """Poll `count()` until it reaches `target`. Fails fast if a watched process dies, or if the count stops
    moving for `stall_s` (e.g. an activity retrying on a bug), with the first watched process's log.
    Polling visibility every 0.25 s costs the server far less than N clients long-polling for results."""
    started = last_report = last_progress = time.monotonic()
    last_n = -1
    while True:
        n = await count()
        if n >= target:
            return
        for proc in watch:
            proc.check_alive()
        now = time.monotonic()
        if n != last_n:
            last_n, last_progress = n, now
        elif now - last_progress > stall_s:
            log = f"; {watch[0].name} log:\n{watch[0].log_tail()}" if watch else ""
            raise StackError(f"{what}: stuck at {n}/{target} for {stall_s:.0f}s{log}")
        if now - last_report >= report_every:
            console.log(f"{what}: {n}/{target} after {now - started:.0f}s")
            last_report = now
        await asyncio.sleep(0.25)


async def count_of(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def list_executions(client: Client, task_queue: str) -> list[WorkflowExecution]:
    return [wf async for wf in client.list_workflows(f'TaskQueue="{task_queue}"')]


def machine_info() -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total_mb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1]) // 1024
    temporal_cli = subprocess.run(
        [str(BIN / "temporal"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_mb": mem_total_mb,
        "python": platform.python_version(),
        "temporalio": importlib.metadata.version("temporalio"),
        "temporal_cli": temporal_cli,
        "platform": platform.platform(),
        # The machine may be shared: the load before the run says how much of it the run had.
        "loadavg_before": os.getloadavg(),
    }


ENGINE_DIRS = ("workflows", "activities", "workers", "src/common")


def engine_version() -> dict[str, Any]:
    """Which engine was measured: the commit, the files that differ from it, and a hash of the engine's code
    as it is on disk (others may be editing the working tree while a run goes)."""
    repo = BENCH_DIR.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False).stdout.rstrip()

    digest = hashlib.sha1()
    for path in sorted(p for d in ENGINE_DIRS for p in (repo / d).rglob("*.py")):
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed_files": git("status", "--porcelain", "--", *ENGINE_DIRS).splitlines(),
        "code_sha1": digest.hexdigest()[:12],
    }


# ------------------------------------------------------------------------------------------------ floor


async def floor_phase(client: Client, opts: Options, work_dir: Path, run_id: str, server: Process | None) -> dict:
    task_queue = f"bench-floor-{run_id}"
    n = opts.orders
    console.log(f"floor: {n} workflows x {DEFAULT_STEPS} activities on {task_queue}")
    worker = await start_floor_worker(client, task_queue, work_dir)
    try:
        cpu_before = cpu_snapshot({"worker": worker, "temporal": server})
        t0 = time.time()
        called: dict[str, float] = {}

        async def start(workflow_id: str) -> None:
            called[workflow_id] = time.time()
            await client.start_workflow("FloorWorkflow", DEFAULT_STEPS, id=workflow_id, task_queue=task_queue)

        await asyncio.gather(*(start(f"floor-{run_id}-{i}") for i in range(n)))
        closed = f'TaskQueue="{task_queue}" AND ExecutionStatus!="Running"'
        await wait_until("floor closed", lambda: count_of(client, closed), n, [worker])
        cpu = cpu_delta(cpu_before, cpu_snapshot({"worker": worker, "temporal": server}))
        memory = worker.memory_mb()
    finally:
        worker.stop()
    executions = await list_executions(client, task_queue)
    wall = _last_close(executions) - t0
    ids = sorted(wf.id for wf in executions)
    history = summarise(await fetch_stats(client, spread_sample(ids, opts.history_sample)))
    firsts = await first_tasks(client, ids)
    return {
        "task_queue": task_queue,
        "workflows": n,
        # The first workflow task's completion, timed from the start_workflow call (as the engine's confirmation
        # is from the place_order call) and from the server's start of the workflow (the history alone)
        "first_task_s": {
            "from_call": distribution([done - called[wid] for wid, (_, done) in firsts.items()]),
            "from_start": distribution([done - started for started, done in firsts.values()]),
        },
        "completed": sum(wf.status == WorkflowExecutionStatus.COMPLETED for wf in executions),
        "wall_s": round(wall, 3),
        "per_s": round(n / wall, 2),
        "worker_memory_mb": memory,
        "cpu_s": cpu,
        "history": history,
    }


async def first_tasks(
    client: Client, workflow_ids: Sequence[str], concurrency: int = 16
) -> dict[str, tuple[float, float]]:
    """workflow id -> (the server's start of it, its first workflow task's completion), epoch seconds."""
    limit = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> tuple[float, float] | None:
        started = None
        async with limit:
            handle = client.get_workflow_handle(workflow_id)
            async for e in handle.fetch_history_events(page_size=8):
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                    started = e.event_time.ToDatetime(UTC).timestamp()
                elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and started is not None:
                    return started, e.event_time.ToDatetime(UTC).timestamp()
        return None

    found = await asyncio.gather(*(one(wid) for wid in workflow_ids))
    return {wid: times for wid, times in zip(workflow_ids, found, strict=True) if times is not None}


def _last_close(executions: Sequence[WorkflowExecution]) -> float:
    return max(wf.close_time.timestamp() for wf in executions if wf.close_time is not None)


# ------------------------------------------------------------------------------------------------ engine


def bench_order(order_id: str, i: int) -> dict[str, Any]:
    """A valid order like examples/order.json: e-mail and SMS, one line, standard shipping."""
    return {
        "order_id": order_id,
        "customer": {
            "id": f"C-{i % 50}",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+15555550100",
            "channels": ["email", "sms"],
        },
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Analytical Way",
            "line2": None,
            "city": "London",
            "region": "LDN",
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        "lines": [{"sku": SKUS[i % len(SKUS)], "quantity": 1}],
        "shipping_speed": "standard",
    }


def engine_settings(
    client: Client,
    task_queue: str,
    data_dir: Path,
    poll_interval: float,
    progression: tuple[float, float, float],
) -> Settings:
    """Settings shared by this process (placing orders: the OrderPolicy comes from here), the worker and the
    sandbox (through FULFILL_* variables)."""
    in_transit, out_for_delivery, delivered = progression
    base = Settings(
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue=task_queue,
        var_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'fulfill.db'}",
        tracking_poll_interval=poll_interval,
        sandbox_in_transit_after=in_transit,
        sandbox_out_for_delivery_after=out_for_delivery,
        sandbox_delivered_after=delivered,
        picker_enabled=False,
        worker_graceful_shutdown=2.0,
        return_window=0,  # the happy path ends at delivery: no 30-day wait for returns
        # Tracking is polled at poll_interval: the benchmark's sandbox posts no webhooks to an API
        carrier_webhook_secret=None,
    )
    return with_sandbox_ports(base)


async def open_store(settings: Settings, orders: int) -> Store:
    """A fresh database: the demo catalogue plus enough stock of every benchmark SKU for `orders` orders."""
    store = await Store.open(settings.database_url)
    await seed_demo(store)
    for sku in SKUS:
        await store.stock.receive_stock(sku, orders, STOCK_WAREHOUSE, note="benchmark stock")
    return store


async def confirm_picks(api: FulfillmentApi, stop: asyncio.Event, poll_s: float = 0.1, concurrency: int = 8) -> int:
    """Warehouse staff with no delay: confirm every open pick task as soon as it appears, a few at a time
    (the demo picker confirms one by one every 0.5 s, which would throttle the engine)."""
    limit = asyncio.Semaphore(concurrency)
    seen: set[str] = set()
    confirmed = 0

    async def confirm(task_id: str) -> None:
        nonlocal confirmed
        async with limit:
            try:
                await api.confirm_pick(task_id)
                confirmed += 1
            except FulfillmentError as err:
                console.log(f"[yellow]pick {task_id}: {err}")
                seen.discard(task_id)  # try again on the next round

    while not stop.is_set():
        fresh = [task.id for task in await api.store.picks.open_tasks() if task.id not in seen]
        seen.update(fresh)
        await asyncio.gather(*(confirm(task_id) for task_id in fresh))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
    return confirmed


async def place_all(api: FulfillmentApi, order_ids: Sequence[str], rate: float) -> list[Placement]:
    """All at once (rate 0), or one every 1/rate seconds on a fixed schedule (not waiting for each other)."""
    if rate <= 0:
        return list(await asyncio.gather(*(place(api, order_id, i) for i, order_id in enumerate(order_ids))))
    start = time.monotonic()
    tasks = []
    for i, order_id in enumerate(order_ids):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(place(api, order_id, i)))
    return list(await asyncio.gather(*tasks))


async def place(api: FulfillmentApi, order_id: str, i: int, limit: asyncio.Semaphore | None = None) -> Placement:
    async with limit or contextlib.nullcontext():
        called = time.time()
        await api.place_order(bench_order(order_id, i))
        return Placement(order_id, called, time.time())


def confirmation_latencies(placements: Sequence[Placement], received: dict[str, datetime]) -> list[float]:
    return [received[p.order_id].timestamp() - p.called_at for p in placements if p.order_id in received]


async def confirmation_emails(settings: Settings) -> dict[str, datetime]:
    """order id -> when the sandbox SMTP server received its "Order X confirmed" e-mail."""
    messages = await fetch_outbox(f"http://{settings.sandbox_host}:{settings.sandbox_http_port}", timeout_s=60)
    return {
        m.order_id: m.received_at
        for m in messages
        if m.channel == "email" and m.order_id is not None and m.subject == f"Order {m.order_id} confirmed"
    }


@dataclass
class EngineStack:
    settings: Settings
    api: FulfillmentApi
    workers: list[Process]
    sandbox: Process

    @property
    def worker(self) -> Process:
        return self.workers[0]


@contextlib.asynccontextmanager
async def engine_stack(
    client: Client, settings: Settings, work_dir: Path, stock: int, worker_module: str, workers: int = 1
) -> AsyncIterator[EngineStack]:
    """Sandbox, database, worker and pick confirmer for one phase; torn down in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await start_sandbox(settings, work_dir)
        stack.callback(sandbox.stop)
        store = await open_store(settings, stock)
        stack.push_async_callback(store.close)
        procs = []
        for i in range(workers):
            name = "worker" if i == 0 else f"worker-{i + 1}"
            procs.append(await start_engine_worker(client, settings, work_dir, worker_module, name))
            stack.callback(procs[-1].stop)
        api = FulfillmentApi(client, store, settings)
        stop = asyncio.Event()
        picker = asyncio.create_task(confirm_picks(api, stop))

        async def stop_picker() -> None:
            stop.set()
            await picker

        stack.push_async_callback(stop_picker)
        yield EngineStack(settings, api, procs, sandbox)


async def engine_phase(client: Client, opts: Options, work_dir: Path, run_id: str, server: Process | None) -> dict:
    task_queue = f"bench-orders-{run_id}"
    n, k = opts.orders, opts.probe
    data_dir = work_dir / "engine"
    settings = engine_settings(client, task_queue, data_dir, opts.poll_interval, opts.progression)
    console.log(f"engine: {n} orders on {task_queue} (+{k} probe orders), data in {data_dir}")
    closed = f'TaskQueue="{task_queue}" AND ExecutionStatus!="Running"'
    async with engine_stack(client, settings, work_dir, n + k, opts.worker_module, opts.engine_workers) as es:
        procs: dict[str, Process | None] = {w.name: w for w in es.workers}
        procs |= {"temporal": server, "sandbox": es.sandbox}
        watch = [*es.workers, es.sandbox]

        # The burst: every order placed at once (or at --rate per second).
        cpu_before = cpu_snapshot(procs)
        t0 = time.time()
        burst = await place_all(es.api, [f"B{run_id}-{i:05d}" for i in range(n)], opts.rate)
        await wait_until("orders closed", lambda: count_of(client, closed), n, watch)
        cpu = cpu_delta(cpu_before, cpu_snapshot(procs))
        if len(es.workers) > 1:
            cpu["all_workers"] = round(sum(cpu[w.name] for w in es.workers), 2)
        memory = es.worker.memory_mb()
        workers_memory = {w.name: w.memory_mb() for w in es.workers}

        # The probe: one order at a time on an idle engine.
        probe: list[Placement] = []
        for i in range(k):
            probe.append(await place(es.api, f"P{run_id}-{i:03d}", i))
            await asyncio.sleep(opts.probe_interval)
        await wait_until("probe closed", lambda: count_of(client, closed), n + k, watch)
        emails = await confirmation_emails(settings)
        picks = await es.api.store.picks.open_tasks()

    executions = await list_executions(client, task_queue)
    burst_ids = {p.order_id for p in burst}
    burst_runs = [wf for wf in executions if wf.id.removeprefix("order-") in burst_ids]
    wall = _last_close(burst_runs) - t0
    completed = [
        wf.id
        for wf in burst_runs
        if wf.status == WorkflowExecutionStatus.COMPLETED
        and wf.typed_search_attributes.get(ORDER_STATUS) == "COMPLETED"
    ]
    history = summarise(await fetch_stats(client, spread_sample(sorted(completed), opts.history_sample)))
    return {
        "task_queue": task_queue,
        "orders": n,
        "completed": len(completed),
        "open_pick_tasks_left": len(picks),
        "wall_s": round(wall, 3),
        "per_s": round(n / wall, 2),
        "offered_rate_per_s": opts.rate or None,
        "place_order_call_s": distribution([p.accepted_at - p.called_at for p in burst]),
        "confirmation_email_s": distribution(confirmation_latencies(burst, emails)),
        # The same, timed from the server's start of the order's workflow (as the floor's `from_start`)
        "confirmation_email_from_start_s": distribution(
            [
                emails[wf.id.removeprefix("order-")].timestamp() - wf.start_time.timestamp()
                for wf in burst_runs
                if wf.id.removeprefix("order-") in emails
            ]
        ),
        "probe": {
            "orders": k,
            "interval_s": opts.probe_interval,
            "confirmation_email_s": distribution(confirmation_latencies(probe, emails)),
        },
        "worker_memory_mb": memory,
        "workers_memory_mb": workers_memory,
        "cpu_s": cpu,
        "history": history,
        "settings": {
            "worker_processes": opts.engine_workers,
            "tracking_poll_interval_s": opts.poll_interval,
            "sandbox_progression_s": list(opts.progression),
            "worker_max_cached_workflows": settings.worker_max_cached_workflows,
            "pick_confirmation": "bench confirms open pick tasks every 0.1 s, 8 at a time, no delay",
            "sandbox": "own process (python -m workers.sandbox)",
            "worker": f"own process (python -m {opts.worker_module})",
        },
    }


# ------------------------------------------------------------------------------------------------ scale


async def scale_phase(client: Client, opts: Options, work_dir: Path, run_id: str, server: Process | None) -> dict:
    """M orders parked IN_TRANSIT (the carrier holds the parcel for a month, polls are minutes apart): the
    worker's memory with more orders than its sticky cache holds, and what ops' queries cost then."""
    m = opts.scale or 0
    task_queue = f"bench-scale-{run_id}"
    data_dir = work_dir / "scale"
    progression = (0.0, 30 * DAY_S, 31 * DAY_S)
    settings = engine_settings(client, task_queue, data_dir, opts.scale_poll_interval, progression)
    console.log(f"scale: {m} orders to IN_TRANSIT on {task_queue}, data in {data_dir}")
    in_transit = f'TaskQueue="{task_queue}" AND OrderStatus="IN_TRANSIT"'
    rss_samples: list[dict[str, float]] = []
    async with engine_stack(client, settings, work_dir, m, opts.worker_module) as es:
        procs = {"worker": es.worker, "temporal": server, "sandbox": es.sandbox}
        cpu_before = cpu_snapshot(procs)
        t0 = time.time()

        async def count_and_sample() -> int:
            n = await count_of(client, in_transit)
            if not rss_samples or time.time() - t0 - rss_samples[-1]["t_s"] >= 5:
                rss_samples.append({"t_s": round(time.time() - t0, 1), "in_transit": n, **es.worker.memory_mb()})
            return n

        limit = asyncio.Semaphore(opts.scale_concurrency)  # placing 10,000 at once would only queue
        placing = asyncio.gather(*(place(es.api, f"S{run_id}-{i:06d}", i, limit) for i in range(m)))
        try:
            await wait_until("orders IN_TRANSIT", count_and_sample, m, [es.worker, es.sandbox])
        finally:
            placements = await placing
        wall = time.time() - t0
        cpu = cpu_delta(cpu_before, cpu_snapshot(procs))
        memory = es.worker.memory_mb()
        ids = [f"order-{p.order_id}" for p in placements]
        queries = await ops_query_latencies(client, ids)
        memory_after_queries = es.worker.memory_mb()
    history = summarise(await fetch_stats(client, spread_sample(ids, min(opts.history_sample, 50))))
    return {
        "task_queue": task_queue,
        "orders": m,
        "to_in_transit_s": round(wall, 1),
        "per_s": round(m / wall, 2),
        "worker_memory_mb": memory,
        "worker_memory_after_queries_mb": memory_after_queries,
        "rss_samples": rss_samples,
        "cpu_s": cpu,
        "queries": queries,
        "history_at_in_transit": history,
        "settings": {
            "tracking_poll_interval_s": opts.scale_poll_interval,
            "sandbox_progression_s": list(progression),
            "worker_max_cached_workflows": settings.worker_max_cached_workflows,
            "placement_concurrency": opts.scale_concurrency,
        },
        "note": (
            "orders are left running on the server; on an external server terminate them with "
            f"temporal workflow terminate --query 'TaskQueue=\"{task_queue}\"'"
        ),
    }


async def ops_query_latencies(client: Client, workflow_ids: Sequence[str], repeats: int = 5, sample: int = 20) -> dict:
    """Seconds for what ops do against a big population: list (first page), count, describe, query (the query
    replays orders the worker's cache has evicted)."""
    rng = random.Random(0)
    picked = rng.sample(list(workflow_ids), min(sample, len(workflow_ids)))
    list_s: list[float] = []
    first_page = 0
    for _ in range(repeats):
        iterator = client.list_workflows('OrderStatus="IN_TRANSIT"')
        started = time.perf_counter()
        await iterator.fetch_next_page()
        list_s.append(time.perf_counter() - started)
        first_page = len(iterator.current_page or [])
    count_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        await client.count_workflows('OrderStatus="IN_TRANSIT"')
        count_s.append(time.perf_counter() - started)
    describe_s, query_s = [], []
    for workflow_id in picked:
        handle = client.get_workflow_handle(workflow_id)
        started = time.perf_counter()
        await handle.describe()
        describe_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        await handle.query(OrderWorkflow.status)
        query_s.append(time.perf_counter() - started)
    return {
        "list_first_page_s": distribution(list_s),
        "list_first_page_size": first_page,
        "count_s": distribution(count_s),
        "describe_s": distribution(describe_s),
        "query_status_s": distribution(query_s),
    }


# ------------------------------------------------------------------------------------------------ report


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _mb(phase: dict | None) -> str:
    if not phase:
        return "-"
    mem = phase["worker_memory_mb"]
    return f"{mem.get('VmHWM', 0):.0f} MB peak ({mem.get('VmRSS', 0):.0f} now)"


def _events(phase: dict | None) -> str:
    if not phase or not phase["history"]:
        return "-"
    e = phase["history"]["events"]
    return f"{e['min']} / {e['median']:g} / {e['max']}"


def _cpu_s(phase: dict, name: str) -> float:
    """CPU seconds of one process kind; the worker's counts every engine worker process."""
    cpu = phase["cpu_s"]
    return float(cpu.get("all_workers" if name == "worker" else name, cpu[name]))


def _cpu_per(phase: dict | None, name: str, count_key: str) -> str:
    if not phase or name not in phase["cpu_s"]:
        return "-"
    total = _cpu_s(phase, name)
    return f"{total:.1f} s ({1000 * total / phase[count_key]:.0f} ms each)"


def _cpu_budget(phase: dict | None, count_key: str, nproc: int) -> str:
    """CPU of every process per workflow, and the throughput that CPU allows on this machine's cores: the
    bound no tuning of waits and queues gets past."""
    if not phase:
        return "-"
    total = sum(_cpu_s(phase, n) for n in ("worker", "temporal", "sandbox", "bench") if n in phase["cpu_s"])
    each_ms = 1000 * total / phase[count_key]
    return f"{each_ms:.0f} ms each (<= {nproc * 1000 / each_ms:.1f}/s on {nproc} CPUs)"


def first_task_ratio(confirmation: dict, floor_first_task: dict) -> float | None:
    """The confirmation email's p95 over the floor's first-task p95 (docs/performance.md, Flash sale)."""
    if confirmation.get("p95") is None or not floor_first_task.get("p95"):
        return None
    return float(confirmation["p95"]) / float(floor_first_task["p95"])


def results_table(results: dict) -> Table:
    floor, engine = results.get("floor"), results.get("engine")
    machine = results["machine"]
    load = "/".join(f"{v:.1f}" for v in machine["loadavg_before"])
    table = Table(
        title=f"Order throughput, N={results['config']['orders']} ({machine['nproc']} CPUs, load before {load})"
    )
    table.add_column("metric")
    table.add_column("floor (6 trivial activities)", justify="right")
    table.add_column("engine (happy-path order)", justify="right")
    ratio = engine["per_s"] / floor["per_s"] if floor and engine else None
    version = results["engine_version"]
    table.caption = (
        f"engine at {version['commit']} + {len(version['changed_files'])} changed files (code {version['code_sha1']})"
    )

    def row(metric: str, f: str, e: str) -> None:
        table.add_row(metric, f, e)

    row(
        "completed",
        f"{floor['completed']}/{floor['workflows']}" if floor else "-",
        f"{engine['completed']}/{engine['orders']}" if engine else "-",
    )
    row(
        "wall (first start -> last close)",
        _fmt(floor and floor["wall_s"], " s"),
        _fmt(engine and engine["wall_s"], " s"),
    )
    offered = f" (offered {engine['offered_rate_per_s']:g}/s)" if engine and engine.get("offered_rate_per_s") else ""
    row(
        "throughput",
        _fmt(floor and floor["per_s"], " wf/s"),
        _fmt(engine and engine["per_s"], " orders/s") + offered,
    )
    row("ratio engine/floor", "", _fmt(ratio, "x"))
    row("history events min/median/max", _events(floor), _events(engine))
    if floor and floor["history"] and engine and engine["history"]:
        fh, eh = floor["history"], engine["history"]
        row(
            "workflow tasks / activities (median)",
            f"{fh['workflow_tasks_median']:g} / {fh['activities_median']:g}",
            f"{eh['workflow_tasks_median']:g} / {eh['activities_median']:g}",
        )
    if engine:
        burst, probe = engine["confirmation_email_s"], engine["probe"]["confirmation_email_s"]
        mode = "paced" if offered else "burst"
        row(
            f"confirmation e-mail p50 / p95 ({mode})",
            "",
            f"{_fmt(burst['p50'], ' s')} / {_fmt(burst['p95'], ' s')}",
        )
        row(
            f"confirmation e-mail p50 / p95 (idle, {probe['n']} orders)",
            "",
            f"{_fmt(probe['p50'], ' s')} / {_fmt(probe['p95'], ' s')}",
        )
        first = engine["history"].get("first_steps_s", {}) if engine["history"] else {}
        if first:
            queue, run = first["first_workflow_task_queue"], first["first_workflow_task_run"]
            row(
                "  1st workflow task: queue p50 / p95, run p50 / p95",
                "",
                f"{_fmt(queue.get('p50'), ' s')} / {_fmt(queue.get('p95'), ' s')}, "
                f"{_fmt(run.get('p50'), ' s')} / {_fmt(run.get('p95'), ' s')}",
            )
        if floor and "first_task_s" in floor and "confirmation_email_from_start_s" in engine:
            fc, fs = floor["first_task_s"]["from_call"], floor["first_task_s"]["from_start"]
            es = engine["confirmation_email_from_start_s"]
            row(
                "1st task done (floor) / confirmation (engine) p95: from the call, from the server's start",
                f"{_fmt(fc['p95'], ' s')}, {_fmt(fs['p95'], ' s')}",
                f"{_fmt(burst['p95'], ' s')}, {_fmt(es['p95'], ' s')}",
            )
            row(
                "  confirmation p95 / floor 1st-task p95: from the call, from the start",
                "",
                f"{_fmt(first_task_ratio(burst, fc), 'x')}, {_fmt(first_task_ratio(es, fs), 'x')}",
            )
        call = engine["place_order_call_s"]
        row(f"place_order call p50 / p95 ({mode})", "", f"{_fmt(call['p50'], ' s')} / {_fmt(call['p95'], ' s')}")
    row("worker RSS", _mb(floor), _mb(engine))
    if engine and engine["settings"].get("worker_processes", 1) > 1:
        row("engine worker processes (RSS of the 1st, CPU of all)", "1", str(engine["settings"]["worker_processes"]))
    row("worker CPU", _cpu_per(floor, "worker", "workflows"), _cpu_per(engine, "worker", "orders"))
    row("temporal server CPU", _cpu_per(floor, "temporal", "workflows"), _cpu_per(engine, "temporal", "orders"))
    row("sandbox CPU", "", _cpu_per(engine, "sandbox", "orders"))
    row("bench (load generator) CPU", _cpu_per(floor, "bench", "workflows"), _cpu_per(engine, "bench", "orders"))
    nproc = machine["nproc"]
    row("CPU of all processes", _cpu_budget(floor, "workflows", nproc), _cpu_budget(engine, "orders", nproc))
    if engine:
        s = engine["settings"]
        prog = "/".join(f"{v:g}" for v in s["sandbox_progression_s"])
        row("engine settings", "", f"poll {s['tracking_poll_interval_s']:g} s, progression {prog} s")
    return table


def time_table(phase: dict, title: str) -> Table:
    """Mean seconds per workflow by kind (from the histories): where a workflow's wall time goes."""
    mean = phase["history"]["mean_seconds_per_workflow"]
    table = Table(title=title)
    table.add_column("where")
    table.add_column("mean s / workflow", justify="right")
    table.add_row("total (first event -> last)", f"{mean['total']:.3f}")
    table.add_row("workflow tasks: scheduled -> started (queue)", f"{mean['workflow_task_queue']:.3f}")
    table.add_row("workflow tasks: started -> completed (worker)", f"{mean['workflow_task_run']:.3f}")
    rows = [(f"activity {name}: scheduled -> started", v) for name, v in mean["activity_queue"].items()]
    rows += [(f"activity {name}: started -> closed", v) for name, v in mean["activity_run"].items()]
    for label, value in sorted(rows, key=lambda r: -r[1]):
        table.add_row(label, f"{value:.3f}")
    table.add_row("waiting for a signal or timer (e.g. the pick)", f"{mean['waiting_for_signal_or_timer']:.3f}")
    table.caption = (
        "Local activities run inside their workflow task (counted as its run). An activity the worker takes"
        " eagerly (in its workflow task's reply) starts at once; one waiting for a free slot shows as"
        " scheduled -> started. Retried activities count their retry intervals there."
    )
    return table


def events_table(phase: dict) -> Table:
    typical = phase["history"]["typical"]
    table = Table(title=f"Events of a typical order ({typical['workflow_id']}: {typical['events']} events)")
    table.add_column("event type")
    table.add_column("count", justify="right")
    for name, count in typical["by_type"].items():
        table.add_row(name, str(count))
    acts = ", ".join(f"{a} x{c}" for a, c in typical["activities"].items())
    table.caption = f"activities: {acts}"
    return table


def scale_table(scale: dict) -> Table:
    q = scale["queries"]
    table = Table(title=f"Scale: {scale['orders']} orders parked IN_TRANSIT")
    table.add_column("metric")
    table.add_column("value", justify="right")
    mem = scale["worker_memory_mb"]
    table.add_row("time to all IN_TRANSIT", f"{scale['to_in_transit_s']:.0f} s ({scale['per_s']:.1f} orders/s)")
    table.add_row("worker VmRSS now / VmHWM peak", f"{mem.get('VmRSS', 0):.0f} / {mem.get('VmHWM', 0):.0f} MB")
    table.add_row("max_cached_workflows", str(scale["settings"]["worker_max_cached_workflows"]))
    for key, label in [
        ("list_first_page_s", f'list OrderStatus="IN_TRANSIT", first page ({q["list_first_page_size"]} rows)'),
        ("count_s", 'count OrderStatus="IN_TRANSIT"'),
        ("describe_s", "describe()"),
        ("query_status_s", "query status (replays evicted orders)"),
    ]:
        d = q[key]
        table.add_row(f"{label} p50 / max", f"{_fmt(d['p50'], ' s', 3)} / {_fmt(d['max'], ' s', 3)}")
    table.add_row("history events at IN_TRANSIT (median)", f"{scale['history_at_in_transit']['events']['median']:g}")
    return table


def save(results: dict, kind: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{results['started_at']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ main


@dataclass
class BenchRun:
    """One run on one Temporal server: the phases write into `results`; `ok` lets the temporary data go."""

    client: Client
    work_dir: Path
    run_id: str
    server: Process | None
    results: dict[str, Any]
    ok: bool = False


@contextlib.asynccontextmanager
async def bench_run(opts: Any, prefix: str) -> AsyncIterator[BenchRun]:
    """The results' header (time, machine, engine, options), the dev server (unless `opts.address` names one), and
    at the end the server stopped and the data deleted, or kept (and said where) if the run did not end ok or
    `opts.keep`."""
    started = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix=prefix))
    results: dict[str, Any] = {
        "started_at": started.strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine_info(),
        "engine_version": engine_version(),
        "config": {k: v for k, v in vars(opts).items() if k not in ("save", "keep")},
    }
    server: Process | None = None
    bench: BenchRun | None = None
    try:
        if opts.address is None:
            server, address = start_temporal(work_dir)
        else:
            address = opts.address
        client = await connect_when_up(address, opts.namespace, server)
        results["temporal"] = {"address": address, "own_dev_server": server is not None}
        run_id = started.strftime("%H%M%S") + f"{random.randrange(16**3):03x}"
        bench = BenchRun(client, work_dir, run_id, server, results)
        yield bench
        results["machine"]["loadavg_after"] = os.getloadavg()
    finally:
        if server is not None:
            server.stop()
        if bench is not None and bench.ok and not opts.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            console.log(f"logs and data kept in {work_dir}")


async def run(opts: Options) -> dict:
    async with bench_run(opts, "fulfill-bench-") as b:
        if opts.scale:
            b.results["scale"] = await scale_phase(b.client, opts, b.work_dir, b.run_id, b.server)
        else:
            if opts.floor:
                b.results["floor"] = await floor_phase(b.client, opts, b.work_dir, b.run_id, b.server)
            if opts.engine:
                b.results["engine"] = await engine_phase(b.client, opts, b.work_dir, b.run_id, b.server)
        b.ok = True
    return b.results


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=300, help="N, for the floor and the engine (default 300)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--floor-only", action="store_true")
    only.add_argument("--engine-only", action="store_true")
    parser.add_argument("--address", help="an existing Temporal server (default: start a dev server)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--poll-interval", type=float, default=0.2, help="tracking poll interval of the orders, s (default 0.2)"
    )
    parser.add_argument(
        "--progression",
        default="0,0,0",
        help="sandbox seconds after label purchase to in_transit,out_for_delivery,delivered (default 0,0,0: the "
        "first poll sees the parcel delivered; e.g. 0.3,0.6,0.9 to walk every tracking status)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="place the engine's orders at this many per second instead of all at once (latency under a "
        "sustained load; throughput is then capped by the rate)",
    )
    parser.add_argument("--probe", type=int, default=20, help="idle-latency probe orders after the burst (0: none)")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probe orders")
    parser.add_argument("--history-sample", type=int, default=300, help="histories fetched per phase (default 300)")
    parser.add_argument("--scale", type=int, metavar="M", help="only the scale run: M orders parked IN_TRANSIT")
    parser.add_argument("--scale-poll-interval", type=float, default=300.0, help="poll interval in --scale, s")
    parser.add_argument("--scale-concurrency", type=int, default=50, help="placements in flight in --scale")
    parser.add_argument(
        "--worker-module", default="workers.worker", help="the engine worker to run as python -m MODULE"
    )
    parser.add_argument(
        "--engine-workers", type=int, default=1, help="engine worker processes in the throughput run (default 1)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")
    args = parser.parse_args(argv)
    progression = tuple(float(v) for v in args.progression.split(","))
    if len(progression) != 3:
        parser.error("--progression needs three numbers")
    if args.orders < 1 or (args.scale is not None and args.scale < 1):
        parser.error("--orders and --scale must be at least 1")
    return Options(
        orders=args.orders,
        floor=not args.engine_only,
        engine=not args.floor_only,
        address=args.address,
        namespace=args.namespace,
        poll_interval=args.poll_interval,
        progression=(progression[0], progression[1], progression[2]),
        rate=args.rate,
        probe=args.probe,
        probe_interval=args.probe_interval,
        history_sample=max(2, args.history_sample),
        scale=args.scale,
        scale_poll_interval=args.scale_poll_interval,
        scale_concurrency=args.scale_concurrency,
        worker_module=args.worker_module,
        engine_workers=max(1, args.engine_workers),
        save=not args.no_save,
        keep=args.keep,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C: unwinds run(), whose cleanup stops the dev server, worker and sandbox it started.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        results = asyncio.run(run(opts))
    except StackError as err:
        console.print(f"[red]benchmark failed: {err}")
        sys.exit(1)
    out = Console(width=None if sys.stdout.isatty() else 120)
    if "scale" in results:
        out.print(scale_table(results["scale"]))
    else:
        out.print(results_table(results))
        for name in ("engine", "floor"):
            phase = results.get(name)
            if phase and phase["history"]:
                out.print(
                    time_table(phase, f"Where a {name} workflow's time goes (mean over {phase['history']['sampled']})")
                )
        if results.get("engine", {}).get("history"):
            out.print(events_table(results["engine"]))
    if opts.save:
        path = save(results, "scale" if opts.scale else "orders")
        out.print(f"results: {path.relative_to(BENCH_DIR.parent)}")


if __name__ == "__main__":
    main()
