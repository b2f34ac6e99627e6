"""Flash sale benchmark (`make bench-flash-sale`): a merchant's burst of orders over HTTP, with 1 and 3 workers.

    python bench/flash_sale.py                                  # 1,000 orders in 10 s, 1 then 3 workers
    python bench/flash_sale.py --orders 200 --seconds 4         # a quick check
    python bench/flash_sale.py --workers 3 --api-processes 2

A flash sale: --orders orders (1,000) POSTed to /v1/orders over --seconds (10), at a steady rate on a fixed
schedule (100/s; each POST sent without waiting for the ones before), against the whole stack. Once per
--workers count (1,3), each run on a dev server of its own (unless --address):

  floor   the same number of FloorWorkflow starts (bench/floor_workflow.py, its own worker process and task
          queue) at the same rate: the first workflow task's p95 (queue + run, from the histories), what bare
          Temporal gives a new workflow on this machine at this rate.
  sale    sandbox servers, a fresh SQLite database with the demo catalogue and stock for every order, that many
          engine worker processes (`python -m workers.worker`), --api-processes API processes
          (`python -m workers.api`, round-robin), pick tasks confirmed as they appear (as bench/orders.py does),
          then the POSTs, and a wait until every order has COMPLETED.

Per run: confirmation latency p50/p95/p99, from the POST being sent to the sandbox SMTP server receiving the
"Order X confirmed" e-mail (bench/orders.py's definition, from place_order there); the drain time from the
first POST to the last confirmation, and to the last order's close; orders/s accepted (202s over the first
send -> last answer) and confirmed (orders over first POST -> last confirmation); POST latency p50/p95/p99 and
the status codes; confirmation p95 / floor first-task p95. Any answer but 2xx fails the run (exit code 1).

The table is printed and written to bench/results/flash-sale-<UTC time>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from common.temporal import ORDER_STATUS
from http_intake import idempotency_key, phase_summary, post_order, start_api
from orders import (
    bench_run,
    confirmation_emails,
    count_of,
    cpu_delta,
    cpu_snapshot,
    engine_settings,
    engine_stack,
    first_task_ratio,
    first_tasks,
    list_executions,
    percentile,
    save,
    wait_until,
)

from floor_workflow import DEFAULT_STEPS
from history import fetch_stats, spread_sample, summarise
from stack import BENCH_DIR, LOCALHOST, Process, StackError, free_port, start_floor_worker

console = Console(stderr=True)


@dataclass(frozen=True)
class Options:
    orders: int
    seconds: float
    workers: tuple[int, ...]
    api_processes: int
    connections: int
    floor: bool
    history_sample: int
    request_timeout: float
    address: str | None
    namespace: str
    save: bool
    keep: bool

    @property
    def rate(self) -> float:
        return self.orders / self.seconds


# ------------------------------------------------------------------------------------------------ helpers


async def paced(n: int, rate: float, start: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """start(i) for i in 0..n-1, one every 1/rate seconds on a fixed schedule, none waiting for the others."""
    began = time.monotonic()
    tasks = []
    for i in range(n):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(start(i)))
    return list(await asyncio.gather(*tasks))


def seconds(values: Sequence[float]) -> dict[str, float | int | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values) if values else None),
    }


def first_task_p95(history: dict) -> float | None:
    """The first workflow task's p95, as the rounds in docs/performance.md take it: queue p95 + run p95."""
    first = history.get("first_steps_s", {}) if history else {}
    queue, run = first.get("first_workflow_task_queue", {}), first.get("first_workflow_task_run", {})
    if "p95" not in queue or "p95" not in run:
        return None
    return round(queue["p95"] + run["p95"], 3)


def _last_close(executions: Sequence[WorkflowExecution]) -> float | None:
    closes = [wf.close_time.timestamp() for wf in executions if wf.close_time is not None]
    return max(closes) if closes else None


# ------------------------------------------------------------------------------------------------ floor


async def floor_phase(client: Client, opts: Options, work_dir: Path, run_id: str, server: Process | None) -> dict:
    """opts.orders FloorWorkflows started at opts.rate per second, to the last close."""
    task_queue = f"bench-flash-floor-{run_id}"
    n = opts.orders
    console.log(f"floor: {n} workflows at {opts.rate:g}/s on {task_queue}")
    worker = await start_floor_worker(client, task_queue, work_dir)
    try:
        cpu_before = cpu_snapshot({"worker": worker, "temporal": server})
        t0 = time.time()
        called: dict[str, float] = {}

        async def start(i: int) -> None:
            workflow_id = f"floor-{run_id}-{i}"
            called[workflow_id] = time.time()
            await client.start_workflow("FloorWorkflow", DEFAULT_STEPS, id=workflow_id, task_queue=task_queue)

        await paced(n, opts.rate, start)
        started_s = time.time() - t0
        closed = f'TaskQueue="{task_queue}" AND ExecutionStatus!="Running"'
        await wait_until("floor closed", lambda: count_of(client, closed), n, [worker])
        cpu = cpu_delta(cpu_before, cpu_snapshot({"worker": worker, "temporal": server}))
    finally:
        worker.stop()
    executions = await list_executions(client, task_queue)
    wall = (_last_close(executions) or time.time()) - t0
    ids = sorted(wf.id for wf in executions)
    history = summarise(await fetch_stats(client, spread_sample(ids, opts.history_sample)))
    firsts = await first_tasks(client, ids)
    return {
        "task_queue": task_queue,
        "workflows": n,
        "offered_rate_per_s": opts.rate,
        "started_in_s": round(started_s, 3),
        "completed": sum(wf.status == WorkflowExecutionStatus.COMPLETED for wf in executions),
        "wall_s": round(wall, 3),
        "per_s": round(n / wall, 2),
        "first_workflow_task_p95_s": first_task_p95(history),
        # As bench/orders.py: the first workflow task done, from the start_workflow call and from the server's start
        "first_task_s": {
            "from_call": seconds([done - called[wid] for wid, (_, done) in firsts.items()]),
            "from_start": seconds([done - started for started, done in firsts.values()]),
        },
        "cpu_s": cpu,
        "history": history,
    }


# ------------------------------------------------------------------------------------------------ the sale


@contextlib.asynccontextmanager
async def api_processes(settings: Any, work_dir: Path, count: int) -> AsyncIterator[list[tuple[Process, str]]]:
    """`count` API processes, each on a free loopback port; stopped first (letting requests in flight finish)."""
    started: list[tuple[Process, str]] = []
    try:
        for i in range(count):
            port_settings = settings if i == 0 else settings.model_copy(update={"api_port": free_port()})
            proc, base_url = await start_api(port_settings, work_dir, name="api" if i == 0 else f"api-{i + 1}")
            started.append((proc, base_url))
        yield started
    finally:
        for proc, _ in started:
            proc.stop()


async def sale_phase(
    client: Client, opts: Options, workers: int, work_dir: Path, run_id: str, server: Process | None
) -> dict:
    task_queue = f"bench-flash-{run_id}"
    n = opts.orders
    data_dir = work_dir / "engine"
    base = engine_settings(client, task_queue, data_dir, poll_interval=0.2, progression=(0.0, 0.0, 0.0))
    settings = base.model_copy(update={"api_host": LOCALHOST, "api_port": free_port()})
    order_ids = [f"F{run_id}-{i:05d}" for i in range(n)]
    console.log(
        f"flash sale: {n} orders at {opts.rate:g}/s, {workers} worker(s), {opts.api_processes} API process(es)"
        f" on {task_queue}, data in {data_dir}"
    )
    closed = f'TaskQueue="{task_queue}" AND ExecutionStatus!="Running"'
    limits = httpx.Limits(
        max_connections=opts.connections, max_keepalive_connections=opts.connections, keepalive_expiry=2.0
    )
    async with (
        engine_stack(client, settings, work_dir, n, "workers.worker", workers) as es,
        api_processes(settings, work_dir, opts.api_processes) as apis,
        contextlib.AsyncExitStack() as clients,
    ):
        created = await es.api.store.api_keys.create("bench-flash-sale", ["intake", "read"])
        headers = {"Authorization": f"Bearer {created.secret}"}
        https = [
            await clients.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=opts.request_timeout)
            )
            for _, url in apis
        ]
        procs: dict[str, Process | None] = {w.name: w for w in es.workers}
        procs |= {proc.name: proc for proc, _ in apis}
        procs |= {"temporal": server, "sandbox": es.sandbox}
        watch = [*es.workers, es.sandbox, *(proc for proc, _ in apis)]

        cpu_before = cpu_snapshot(procs)
        # perf_counter (what post_order stamps) to wall-clock time, which the sandbox's receive times are in
        wall_offset = time.time() - time.perf_counter()
        t0 = time.time()
        sends = await paced(
            n,
            opts.rate,
            lambda i: post_order(https[i % len(https)], order_ids[i], i, "order", idempotency_key(order_ids[i]), None),
        )
        console.log(f"posted: {sum(s.status.startswith('2') for s in sends)}/{n} answered 2xx")
        accepted = {s.order_id for s in sends if s.status.startswith("2")}
        await wait_until("orders closed", lambda: count_of(client, closed), len(accepted), watch)
        cpu = cpu_delta(cpu_before, cpu_snapshot(procs))
        cpu["all_workers"] = round(sum(cpu[w.name] for w in es.workers), 2)
        cpu["all_apis"] = round(sum(cpu[proc.name] for proc, _ in apis), 2)
        emails = await confirmation_emails(settings)
        workers_memory = {w.name: w.memory_mb() for w in es.workers}

    executions = [wf for wf in await list_executions(client, task_queue) if wf.id.removeprefix("order-") in accepted]
    completed = [
        wf.id
        for wf in executions
        if wf.status == WorkflowExecutionStatus.COMPLETED
        and wf.typed_search_attributes.get(ORDER_STATUS) == "COMPLETED"
    ]
    first_sent = wall_offset + min(s.sent_at for s in sends)
    sent_wall = {s.order_id: wall_offset + s.sent_at for s in sends}
    confirmed = {o: emails[o].timestamp() for o in accepted if o in emails}
    answered_wall = {s.order_id: wall_offset + s.answered_at for s in sends}
    latencies = [confirmed[o] - sent_wall[o] for o in confirmed]
    to_confirmed = max(confirmed.values()) - first_sent if confirmed else None
    last_close = _last_close(executions)
    to_completed = last_close - first_sent if last_close is not None else None
    history = summarise(await fetch_stats(client, spread_sample(sorted(completed), opts.history_sample)))
    intake = phase_summary(sends, {}, opts.rate)
    del intake["cpu_s"]
    non_2xx = [s for s in sends if not s.status.startswith("2")]
    return {
        "task_queue": task_queue,
        "worker_processes": workers,
        "api_processes": opts.api_processes,
        "orders": n,
        "offered_rate_per_s": opts.rate,
        "posting_started_at": t0,
        "intake": intake,
        "non_2xx": len(non_2xx),
        "confirmed": len(confirmed),
        "completed": len(completed),
        "confirmation_email_s": seconds(latencies),
        # the same, from the 202 (without the wait for the API): what the engine took once the order was in
        "confirmation_email_after_202_s": seconds([confirmed[o] - answered_wall[o] for o in confirmed]),
        "drain_to_last_confirmation_s": None if to_confirmed is None else round(to_confirmed, 3),
        "drain_to_last_completed_s": None if to_completed is None else round(to_completed, 3),
        "confirmed_per_s": round(len(confirmed) / to_confirmed, 2) if to_confirmed else None,
        "completed_per_s": round(len(completed) / to_completed, 2) if to_completed else None,
        "workers_memory_mb": workers_memory,
        "cpu_s": cpu,
        "history": history,
        "settings": {
            "worker_max_concurrent_workflow_tasks": settings.worker_max_concurrent_workflow_tasks,
            "worker_sticky_task_slots": settings.worker_sticky_task_slots,
            "worker_max_cached_workflows": settings.worker_max_cached_workflows,
            "http_connections_per_api": opts.connections,
            "pick_confirmation": "bench confirms open pick tasks every 0.1 s, 8 at a time, no delay",
            "tracking": "poll 0.2 s, sandbox parcel delivered at once (progression 0,0,0)",
        },
    }


# ------------------------------------------------------------------------------------------------ report


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _three(d: dict, unit: str = " s", digits: int = 2) -> str:
    return " / ".join(_fmt(d.get(q), "", digits) for q in ("p50", "p95", "p99")) + unit


def results_table(results: dict) -> Table:
    config, runs = results["config"], results["runs"]
    machine = runs[0]["machine"]
    table = Table(
        title=f"Flash sale: {config['orders']} orders POSTed over {config['seconds']:g} s ({machine['nproc']} CPUs)"
    )
    table.add_column("metric")
    for run in runs:
        load = "/".join(f"{v:.1f}" for v in run["machine"]["loadavg_before"])
        table.add_column(f"{run['sale']['worker_processes']} worker(s) (load before {load})", justify="right")
    version = runs[0]["engine_version"]
    table.caption = (
        f"engine at {version['commit']} + {len(version['changed_files'])} changed files (code {version['code_sha1']})"
    )

    def row(metric: str, get: Callable[[dict], str]) -> None:
        table.add_row(metric, *(get(run) for run in runs))

    def sale(get: Callable[[dict], str]) -> Callable[[dict], str]:
        return lambda run: get(run["sale"])

    row("accepted (2xx) / non-2xx", sale(lambda s: f"{s['intake']['accepted']}/{s['orders']} / {s['non_2xx']}"))
    row("status codes", sale(lambda s: ", ".join(f"{k}: {v}" for k, v in s["intake"]["status_counts"].items())))
    row("accepted/s (offered)", sale(lambda s: f"{_fmt(s['intake']['accepted_per_s'])} ({s['offered_rate_per_s']:g})"))
    row("POST latency p50 / p95 / p99", sale(lambda s: _three(s["intake"]["latency_ms"], " ms", 0)))
    row("confirmation e-mail p50 / p95 / p99", sale(lambda s: _three(s["confirmation_email_s"])))
    row("confirmation e-mail max", sale(lambda s: _fmt(s["confirmation_email_s"]["max"], " s")))
    row("  from the 202 instead: p50 / p95 / p99", sale(lambda s: _three(s["confirmation_email_after_202_s"])))
    row("drain: first POST -> last confirmation", sale(lambda s: _fmt(s["drain_to_last_confirmation_s"], " s", 1)))
    row("confirmed/s", sale(lambda s: _fmt(s["confirmed_per_s"])))
    row("drain: first POST -> last order COMPLETED", sale(lambda s: _fmt(s["drain_to_last_completed_s"], " s", 1)))
    row("completed / completed/s", sale(lambda s: f"{s['completed']} / {_fmt(s['completed_per_s'])}"))

    def engine_first(run: dict) -> str:
        first = run["sale"]["history"].get("first_steps_s", {}) if run["sale"]["history"] else {}
        queue = first.get("first_workflow_task_queue", {})
        return f"{_fmt(queue.get('p50'), ' s')} / {_fmt(queue.get('p95'), ' s')}"

    row("  order's 1st workflow task queue p50 / p95", engine_first)
    if any("floor" in run for run in runs):
        row("floor: workflows/s (same rate, own worker)", lambda run: _fmt(run.get("floor", {}).get("per_s")))
        row(
            "floor: 1st workflow task done p95, from the start_workflow call",
            lambda run: _fmt(run.get("floor", {}).get("first_task_s", {}).get("from_call", {}).get("p95"), " s"),
        )
        row("confirmation p95 / floor 1st task p95", lambda run: _fmt(run.get("ratio_confirmation_p95_to_floor"), "x"))
    row("worker CPU (all workers)", sale(lambda s: f"{s['cpu_s']['all_workers']:.1f} s"))
    row("API CPU (all APIs)", sale(lambda s: f"{s['cpu_s']['all_apis']:.1f} s"))
    row("Temporal server CPU", sale(lambda s: f"{s['cpu_s']['temporal']:.1f} s"))
    return table


# ------------------------------------------------------------------------------------------------ main


async def run(opts: Options) -> dict:
    results: dict[str, Any] = {"config": {}, "runs": []}
    for workers in opts.workers:
        async with bench_run(opts, f"fulfill-bench-flash-{workers}w-") as b:
            run_results = b.results
            if opts.floor:
                run_results["floor"] = await floor_phase(b.client, opts, b.work_dir, b.run_id, b.server)
            run_results["sale"] = await sale_phase(b.client, opts, workers, b.work_dir, b.run_id, b.server)
            if "floor" in run_results:
                # Like with like: the confirmation from the POST being sent, the floor's first task from its call
                ratio = first_task_ratio(
                    run_results["sale"]["confirmation_email_s"], run_results["floor"]["first_task_s"]["from_call"]
                )
                run_results["ratio_confirmation_p95_to_floor"] = None if ratio is None else round(ratio, 2)
            b.ok = run_results["sale"]["non_2xx"] == 0
        results["runs"].append(run_results)
    first = results["runs"][0]
    results["started_at"] = first["started_at"]
    results["config"] = {**first["config"], "workers": list(opts.workers), "rate_per_s": opts.rate}
    return results


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000, help="orders of the sale (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds they are POSTed over (default 10)")
    parser.add_argument(
        "--workers", default="1,3", help="engine worker processes, one run per count, comma-separated (default 1,3)"
    )
    parser.add_argument("--api-processes", type=int, default=1, help="API processes, round-robin (default 1)")
    parser.add_argument(
        "--connections", type=int, default=100, help="HTTP connections per API process at most (default 100)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-Temporal floor")
    parser.add_argument("--history-sample", type=int, default=300, help="histories fetched per phase (default 300)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--address", help="an existing Temporal server (default: a dev server per run)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")
    args = parser.parse_args(argv)
    try:
        workers = tuple(int(w) for w in args.workers.split(","))
    except ValueError:
        parser.error("--workers takes comma-separated counts, e.g. 1,3")
    if args.orders < 1 or args.seconds <= 0 or min(workers) < 1 or args.api_processes < 1 or args.connections < 1:
        parser.error("--orders, --workers, --api-processes and --connections must be at least 1, --seconds > 0")
    return Options(
        orders=args.orders,
        seconds=args.seconds,
        workers=workers,
        api_processes=args.api_processes,
        connections=args.connections,
        floor=not args.no_floor,
        history_sample=max(2, args.history_sample),
        request_timeout=args.request_timeout,
        address=args.address,
        namespace=args.namespace,
        save=not args.no_save,
        keep=args.keep,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C: unwinds run(), whose cleanup stops the dev server, workers, sandbox and API processes it started.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        results = asyncio.run(run(opts))
    except StackError as err:
        console.print(f"[red]benchmark failed: {err}")
        sys.exit(1)
    out = Console(width=None if sys.stdout.isatty() else 140)
    out.print(results_table(results))
    if opts.save:
        path = save(results, "flash-sale")
        out.print(f"results: {path.relative_to(BENCH_DIR.parent)}")
    failed = [run["sale"] for run in results["runs"] if run["sale"]["non_2xx"]]
    for sale in failed:
        out.print(
            f"[red]FAILED: {sale['non_2xx']} of {sale['orders']} POSTs not answered 2xx with"
            f" {sale['worker_processes']} worker(s): {sale['intake']['status_counts']};"
            f" first: {sale['intake']['not_accepted'][:3]}"
        )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
