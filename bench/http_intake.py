"""HTTP intake benchmark (`make bench-http`): POST /v1/orders against the API process, and exactly-once.

    python bench/http_intake.py                         # 200 orders at 20/s, then a burst of 300
    python bench/http_intake.py --steady 20 --burst 50  # a quick check
    python bench/http_intake.py --rate 50 --concurrency 200

One run, on its own Temporal dev server, as `make bench` starts it: sandbox servers (`python -m workers.sandbox`),
the worker (`python -m workers.worker`), a fresh SQLite database with the demo catalogue and enough stock, and
one API process (`python -m workers.api`) on a free loopback port, all with the same FULFILL_* settings. An API
key with the intake and read scopes is created through the store. Then, with one httpx client (one pool):

  steady  --steady orders POSTed at --rate per second on a fixed schedule (not waiting for each other)
  burst   --burst orders sent at once, at most --concurrency in flight; while it runs, --duplicates of them
          (a fraction) are sent again once their first send was answered, the same body, half with the same
          Idempotency-Key (every first send carries one): they must answer 202, Idempotent-Replayed: true, with
          the first send's run

Per phase: accepted/s (202s of the phase's orders over first send -> last answer), the latency of POST
/v1/orders (p50/p95/p99/max, ms; from the send, so not counting the wait for a free concurrency slot), and the
status codes. Then exactly-once, from Temporal visibility: every accepted order has exactly one workflow
execution (`order-<id>`) on the run's task queue, and nothing else is there. Visibility is eventually
consistent, so the per-id counts are polled until they hold still. Orders keep running (waiting for their
picks) when the stack is stopped; nothing waits for them to complete. The exit code is 1 if the check fails.

The table is printed and written to bench/results/http-intake-<UTC time>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from common.config import Settings
from common.store import Store
from orders import (
    bench_order,
    bench_run,
    cpu_delta,
    cpu_snapshot,
    engine_settings,
    open_store,
    percentile,
    save,
)

from stack import (
    BENCH_DIR,
    LOCALHOST,
    Process,
    StackError,
    free_port,
    settings_env,
    spawn,
    start_engine_worker,
    start_sandbox,
)

console = Console(stderr=True)
ORDERS_PATH = "/v1/orders"
ACCEPTED = "202"


@dataclass(frozen=True)
class Options:
    steady: int
    rate: float
    burst: int
    concurrency: int
    duplicates: float
    request_timeout: float
    visibility_timeout: float
    address: str | None
    namespace: str
    save: bool
    keep: bool


@dataclass
class Sent:
    """One POST /v1/orders and its answer."""

    order_id: str
    kind: str  # "order" (a first send), "dup-key" (sent again, same Idempotency-Key), "dup-body" (no header)
    sent_at: float  # time.perf_counter()
    answered_at: float
    status: str  # the HTTP status, or "error:<exception>" when no answer came
    replayed: bool  # Idempotent-Replayed: true
    run_id: str | None
    problem: str | None  # what a 202 body got wrong, or a refusal's detail

    @property
    def latency_ms(self) -> float:
        return 1000 * (self.answered_at - self.sent_at)


# ------------------------------------------------------------------------------------------------ the stack


@dataclass
class HttpStack:
    settings: Settings
    store: Store
    procs: dict[str, Process]  # sandbox, worker, api
    base_url: str
    token: str


async def start_api(settings: Settings, log_dir: Path, within_s: float = 60, name: str = "api") -> tuple[Process, str]:
    """`python -m workers.api` on settings.api_host:api_port, once GET /readyz answers 200; `name` names the
    process and its log (<log_dir>/<name>.log)."""
    proc = spawn(name, [sys.executable, "-m", "workers.api"], log_dir, settings_env(settings))
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    deadline = time.monotonic() + within_s
    last = "no answer"
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        while True:
            proc.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get("/readyz")
                if response.status_code == 200:
                    return proc, base_url
                last = f"{response.status_code} {response.text[:300]}"
            if time.monotonic() > deadline:
                proc.stop()
                raise StackError(f"api not ready after {within_s:.0f}s (last /readyz: {last}):\n{proc.log_tail()}")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def http_stack(client: Client, settings: Settings, work_dir: Path, stock: int) -> AsyncIterator[HttpStack]:
    """Sandbox, database, worker and API process; torn down in reverse order (the API first, letting requests in
    flight finish). No pick confirmer: the orders wait for their picks, which stops cleanly."""
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await start_sandbox(settings, work_dir)
        stack.callback(sandbox.stop)
        store = await open_store(settings, stock)
        stack.push_async_callback(store.close)
        worker = await start_engine_worker(client, settings, work_dir)
        stack.callback(worker.stop)
        api, base_url = await start_api(settings, work_dir)
        stack.callback(api.stop)
        created = await store.api_keys.create("bench", ["intake", "read"])
        procs = {"sandbox": sandbox, "worker": worker, "api": api}
        yield HttpStack(settings, store, procs, base_url, created.secret)


# ------------------------------------------------------------------------------------------------ requests


def idempotency_key(order_id: str) -> str:
    return f"bench-{order_id}"


async def post_order(
    http: httpx.AsyncClient, order_id: str, i: int, kind: str, key: str | None, limit: asyncio.Semaphore | None
) -> Sent:
    body = bench_order(order_id, i)
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with limit or contextlib.nullcontext():
        sent_at = time.perf_counter()
        try:
            response = await http.post(ORDERS_PATH, json=body, headers=headers)
        except httpx.HTTPError as err:
            return Sent(order_id, kind, sent_at, time.perf_counter(), f"error:{type(err).__name__}", False, None, None)
        answered_at = time.perf_counter()
    status = str(response.status_code)
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    if status != ACCEPTED:
        problem = response.text[:500]
        return Sent(order_id, kind, sent_at, answered_at, status, replayed, None, problem)
    return Sent(order_id, kind, sent_at, answered_at, status, replayed, *_check_accepted(order_id, response))


def _check_accepted(order_id: str, response: httpx.Response) -> tuple[str | None, str | None]:
    """The run id of a 202, and what its body or Location header got wrong (None: nothing)."""
    url = f"{ORDERS_PATH}/{order_id}"
    try:
        placed = response.json()
    except ValueError:
        return None, f"202 body is not JSON: {response.text[:200]}"
    wrong = []
    expected = {"order_id": order_id, "workflow_id": f"order-{order_id}", "url": url}
    for field, value in expected.items():
        if placed.get(field) != value:
            wrong.append(f"{field}={placed.get(field)!r} (expected {value!r})")
    if not placed.get("run_id"):
        wrong.append("no run_id")
    if response.headers.get("Location") != url:
        wrong.append(f"Location={response.headers.get('Location')!r}")
    return placed.get("run_id"), "; ".join(wrong) or None


async def steady_phase(http: httpx.AsyncClient, order_ids: Sequence[str], rate: float) -> list[Sent]:
    """One order every 1/rate seconds on a fixed schedule, each sent without waiting for the ones before."""
    start = time.monotonic()
    tasks = []
    for i, order_id in enumerate(order_ids):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(post_order(http, order_id, i, "order", idempotency_key(order_id), None)))
    return list(await asyncio.gather(*tasks))


def duplicate_plan(n: int, fraction: float) -> dict[int, str]:
    """Which burst orders are sent again (spread over the first half of the burst, so that the resends go out
    while the burst still runs), alternating: with the first send's Idempotency-Key, and without any."""
    count = min(n, round(n * fraction)) if fraction > 0 else 0
    if count == 0:
        return {}
    span = max(count, n // 2)
    picked = sorted({int(j * span / count) for j in range(count)})
    return {index: ("dup-key" if j % 2 == 0 else "dup-body") for j, index in enumerate(picked)}


async def burst_phase(
    http: httpx.AsyncClient, order_ids: Sequence[str], concurrency: int, fraction: float
) -> list[Sent]:
    """Every order at once, at most `concurrency` in flight; the planned duplicates each once its first send
    was answered (a resend before would race the first, and be a new placement or a replay by luck)."""
    limit = asyncio.Semaphore(concurrency)
    plan = duplicate_plan(len(order_ids), fraction)
    firsts = {
        i: asyncio.create_task(post_order(http, order_id, i, "order", idempotency_key(order_id), limit))
        for i, order_id in enumerate(order_ids)
    }

    async def resend(i: int, kind: str) -> Sent:
        await asyncio.wait({firsts[i]})
        order_id = order_ids[i]
        key = idempotency_key(order_id) if kind == "dup-key" else None
        return await post_order(http, order_id, i, kind, key, limit)

    dups = [asyncio.create_task(resend(i, kind)) for i, kind in plan.items()]
    return [*await asyncio.gather(*firsts.values()), *await asyncio.gather(*dups)]


# ------------------------------------------------------------------------------------------------ report


def latency(values: Sequence[float]) -> dict[str, float | int | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "n": len(values),
        "p50": ms(percentile(values, 50)),
        "p95": ms(percentile(values, 95)),
        "p99": ms(percentile(values, 99)),
        "max": ms(max(values) if values else None),
    }


def phase_summary(sends: Sequence[Sent], cpu: dict[str, float], offered_rate: float | None) -> dict[str, Any]:
    orders = [s for s in sends if s.kind == "order"]
    accepted = [s for s in orders if s.status == ACCEPTED]
    wall = max(s.answered_at for s in sends) - min(s.sent_at for s in sends) if sends else 0.0
    refused = [s for s in sends if s.status != ACCEPTED]
    result: dict[str, Any] = {
        "orders": len(orders),
        "accepted": len(accepted),
        "wall_s": round(wall, 3),
        "accepted_per_s": round(len(accepted) / wall, 2) if wall > 0 else None,
        "offered_rate_per_s": offered_rate,
        "latency_ms": latency([s.latency_ms for s in orders]),
        "status_counts": dict(sorted(Counter(s.status for s in orders).items())),
        "bad_202_bodies": [{"order_id": s.order_id, "problem": s.problem} for s in accepted if s.problem][:20],
        "not_accepted": [
            {"order_id": s.order_id, "kind": s.kind, "status": s.status, "problem": s.problem} for s in refused
        ][:20],
        "cpu_s": cpu,
    }
    dups = [s for s in sends if s.kind != "order"]
    if dups:
        first_run = {s.order_id: s.run_id for s in orders}
        result["duplicates"] = {
            "sent": len(dups),
            "with_idempotency_key": sum(s.kind == "dup-key" for s in dups),
            "status_counts": dict(sorted(Counter(s.status for s in dups).items())),
            "replayed": sum(s.status == ACCEPTED and s.replayed for s in dups),
            "same_run_as_first": sum(s.run_id is not None and s.run_id == first_run.get(s.order_id) for s in dups),
            "latency_ms": latency([s.latency_ms for s in dups]),
        }
    return result


async def visibility_counts(client: Client, task_queue: str, expected: int, timeout_s: float) -> tuple[Counter, dict]:
    """Executions per workflow id on the task queue: polled until the counts hold still for two polls with at
    least `expected` in all, or `timeout_s` passed (then the last counts, marked not settled)."""
    started = time.monotonic()
    last: Counter | None = None
    still = 0
    polls = 0
    while True:
        counts = Counter([wf.id async for wf in client.list_workflows(f'TaskQueue="{task_queue}"')])
        polls += 1
        still = still + 1 if counts == last else 0
        last = counts
        waited = time.monotonic() - started
        settled = still >= 2 and sum(counts.values()) >= expected
        if settled or waited > timeout_s:
            return counts, {"settled": settled, "waited_s": round(waited, 1), "polls": polls}
        await asyncio.sleep(0.5)


def exactly_once(sends: Sequence[Sent], counts: Counter, poll: dict) -> dict[str, Any]:
    accepted = {s.order_id for s in sends if s.status == ACCEPTED}
    answered_no = {s.order_id for s in sends if s.kind == "order" and s.status != ACCEPTED and s.status[0].isdigit()}
    unanswered = {s.order_id for s in sends if s.kind == "order" and s.status.startswith("error:")}
    by_order = {wf_id.removeprefix("order-"): n for wf_id, n in counts.items()}
    missing = sorted(o for o in accepted if by_order.get(o, 0) == 0)
    doubled = sorted(f"{o} x{by_order[o]}" for o in accepted if by_order.get(o, 0) > 1)
    refused_but_started = sorted(o for o in answered_no - accepted if o in by_order)
    unanswered_started = sorted(o for o in unanswered - accepted if o in by_order)  # timed out, started anyway
    strangers = sorted(o for o in by_order if o not in accepted | answered_no | unanswered)
    dups = [s for s in sends if s.kind != "order"]
    first_run = {s.order_id: s.run_id for s in sends if s.kind == "order"}
    dup_wrong = sorted(
        f"{s.order_id} ({s.kind}: {s.status}, replayed={s.replayed})"
        for s in dups
        if s.status != ACCEPTED or not s.replayed or s.run_id != first_run.get(s.order_id)
    )
    ok = not (missing or doubled or refused_but_started or strangers or dup_wrong)
    return {
        "ok": ok,
        "accepted_orders": len(accepted),
        "executions": sum(counts.values()),
        "workflow_ids": len(counts),
        "missing": missing,
        "doubled": doubled,
        "refused_but_started": refused_but_started,
        "unanswered_but_started": unanswered_started,
        "unknown_workflows": strangers,
        "duplicates_not_replayed": dup_wrong,
        "visibility": poll,
    }


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in counts.items()) or "-"


def _cpu(phase: dict, name: str) -> str:
    cpu = phase["cpu_s"].get(name)
    if cpu is None:
        return "-"
    return f"{cpu:.1f} s ({1000 * cpu / max(1, phase['orders']):.0f} ms/order)"


def results_table(results: dict) -> Table:
    machine, config, version = results["machine"], results["config"], results["engine_version"]
    steady, burst, check = results["steady"], results["burst"], results["exactly_once"]
    load = "/".join(f"{v:.1f}" for v in machine["loadavg_before"])
    table = Table(title=f"HTTP intake: POST /v1/orders ({machine['nproc']} CPUs, load before {load})")
    table.add_column("metric")
    table.add_column(f"steady ({steady['orders']} at {config['rate']:g}/s)", justify="right")
    table.add_column(f"burst ({burst['orders']}, {config['concurrency']} in flight)", justify="right")
    table.caption = (
        f"engine at {version['commit']} + {len(version['changed_files'])} changed files (code {version['code_sha1']})"
    )

    def row(metric: str, get: Any) -> None:
        table.add_row(metric, get(steady), get(burst))

    row("accepted (202)", lambda p: f"{p['accepted']}/{p['orders']}")
    row("wall (first send -> last answer)", lambda p: _fmt(p["wall_s"], " s", 2))
    row("accepted/s", lambda p: _fmt(p["accepted_per_s"], "/s", 2))
    for q in ("p50", "p95", "p99", "max"):
        row(f"latency {q}", lambda p, q=q: _fmt(p["latency_ms"][q], " ms"))
    row("status codes", lambda p: _statuses(p["status_counts"]))
    dups = burst.get("duplicates")
    if dups:
        table.add_row(
            f"duplicates ({dups['with_idempotency_key']} with the same Idempotency-Key)",
            "",
            f"{dups['sent']} sent: {_statuses(dups['status_counts'])}",
        )
        table.add_row(
            "  Idempotent-Replayed / same run as first", "", f"{dups['replayed']} / {dups['same_run_as_first']}"
        )
        lat = dups["latency_ms"]
        table.add_row("  latency p50 / max", "", f"{_fmt(lat['p50'], ' ms')} / {_fmt(lat['max'], ' ms')}")
    for name in ("api", "worker", "temporal", "bench"):
        row(f"{name} CPU", lambda p, name=name: _cpu(p, name))
    verdict = "[green]OK[/green]" if check["ok"] else "[red]FAILED[/red]"
    vis = check["visibility"]
    table.add_row(
        "exactly-once (visibility)",
        "",
        f"{verdict}: {check['executions']} executions for {check['accepted_orders']} accepted orders"
        f" ({'settled' if vis['settled'] else 'NOT settled'} after {vis['waited_s']:g} s)",
    )
    for key in ("missing", "doubled", "refused_but_started", "unknown_workflows", "duplicates_not_replayed"):
        if check[key]:
            table.add_row(f"  {key.replace('_', ' ')}", "", f"{len(check[key])}: {', '.join(check[key][:5])}")
    if check["unanswered_but_started"]:
        table.add_row("  no answer, started anyway", "", str(len(check["unanswered_but_started"])))
    return table


# ------------------------------------------------------------------------------------------------ main


async def http_phases(client: Client, opts: Options, work_dir: Path, run_id: str, server: Process | None) -> dict:
    task_queue = f"bench-http-{run_id}"
    data_dir = work_dir / "engine"
    base = engine_settings(client, task_queue, data_dir, poll_interval=0.2, progression=(0.0, 0.0, 0.0))
    settings = base.model_copy(update={"api_host": LOCALHOST, "api_port": free_port()})
    steady_ids = [f"H{run_id}-S{i:05d}" for i in range(opts.steady)]
    burst_ids = [f"H{run_id}-B{i:05d}" for i in range(opts.burst)]
    console.log(f"http intake: {opts.steady} steady + {opts.burst} burst orders on {task_queue}, data in {data_dir}")
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them: reusing one the server
    # is closing just then fails the request (httpx.ReadError), which would be the client's fault, not the API's.
    limits = httpx.Limits(
        max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency, keepalive_expiry=2.0
    )
    async with http_stack(client, settings, work_dir, opts.steady + opts.burst) as hs:
        procs: dict[str, Process | None] = {**hs.procs, "temporal": server}
        headers = {"Authorization": f"Bearer {hs.token}"}
        console.log(f"api at {hs.base_url}")
        async with httpx.AsyncClient(
            base_url=hs.base_url, headers=headers, limits=limits, timeout=opts.request_timeout
        ) as http:
            before = cpu_snapshot(procs)
            steady = await steady_phase(http, steady_ids, opts.rate) if steady_ids else []
            middle = cpu_snapshot(procs)
            console.log(f"steady: {sum(s.status == ACCEPTED for s in steady)}/{len(steady)} accepted")
            burst = await burst_phase(http, burst_ids, opts.concurrency, opts.duplicates) if burst_ids else []
            after = cpu_snapshot(procs)
            console.log(
                f"burst: {sum(s.status == ACCEPTED for s in burst if s.kind == 'order')}/{len(burst_ids)} accepted"
            )
        for proc in hs.procs.values():
            proc.check_alive()
        sends = [*steady, *burst]
        expected = len({s.order_id for s in sends if s.status == ACCEPTED})
        counts, poll = await visibility_counts(client, task_queue, expected, opts.visibility_timeout)
        api_memory = hs.procs["api"].memory_mb()
        errors = _api_log_errors(hs.procs["api"])
    return {
        "task_queue": task_queue,
        "api": {"base_url": hs.base_url, "memory_mb": api_memory, "log_errors": errors},
        "steady": phase_summary(steady, cpu_delta(before, middle), opts.rate),
        "burst": phase_summary(burst, cpu_delta(middle, after), None),
        "exactly_once": exactly_once(sends, counts, poll),
        "requests": [_request_row(s) for s in sends],
    }


def _api_log_errors(api: Process, limit: int = 40) -> list[str]:
    """The API log's error lines (tracebacks included), for the report."""
    try:
        lines = api.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if "Traceback" in line or " ERROR " in line or " CRITICAL " in line][:limit]


def _request_row(s: Sent) -> dict[str, Any]:
    row = asdict(s)
    row["latency_ms"] = round(s.latency_ms, 2)
    del row["sent_at"], row["answered_at"]
    return row


async def run(opts: Options) -> dict:
    async with bench_run(opts, "fulfill-bench-http-") as b:
        b.results |= await http_phases(b.client, opts, b.work_dir, b.run_id, b.server)
        b.ok = b.results["exactly_once"]["ok"] and not b.results["api"]["log_errors"]
    return b.results


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steady", type=int, default=200, help="orders of the steady phase (default 200)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second of the steady phase (default 20)")
    parser.add_argument("--burst", type=int, default=300, help="orders of the burst (default 300)")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight in the burst (default 100)")
    parser.add_argument(
        "--duplicates",
        type=float,
        default=0.05,
        help="fraction of the burst's orders sent again, half with the same Idempotency-Key (default 0.05)",
    )
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument(
        "--visibility-timeout", type=float, default=60.0, help="seconds to wait for visibility to settle (default 60)"
    )
    parser.add_argument("--address", help="an existing Temporal server (default: start a dev server)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")
    args = parser.parse_args(argv)
    if args.steady < 0 or args.burst < 0 or args.steady + args.burst < 1:
        parser.error("--steady and --burst must not be negative, and not both 0")
    if args.rate <= 0 or args.concurrency < 1 or not 0 <= args.duplicates <= 1:
        parser.error("--rate must be > 0, --concurrency >= 1, --duplicates in 0..1")
    return Options(
        steady=args.steady,
        rate=args.rate,
        burst=args.burst,
        concurrency=args.concurrency,
        duplicates=args.duplicates,
        request_timeout=args.request_timeout,
        visibility_timeout=args.visibility_timeout,
        address=args.address,
        namespace=args.namespace,
        save=not args.no_save,
        keep=args.keep,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C: unwinds run(), whose cleanup stops the dev server, worker, sandbox and API it started.
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
    out.print(results_table(results))
    if results["api"]["log_errors"]:
        out.print("[yellow]errors in the API log:[/yellow]\n" + "\n".join(results["api"]["log_errors"]))
    if opts.save:
        path = save(results, "http-intake")
        out.print(f"results: {path.relative_to(BENCH_DIR.parent)}")
    if not results["exactly_once"]["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
