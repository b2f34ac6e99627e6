"""The CLI as a user meets it: it follows the running stack's settings (`<var_dir>/stack.json`, written by
`make run`), refuses a database that is not the stack's, and says so when the engine does not answer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from common.cli._base import read_stack, remove_stack_file, stack_file, write_stack_file
from common.config import Settings
from common.store import Store
from tests.conftest import TEMPORAL_CLI
from tests.integration.conftest import FULFILL, settings_env
from tests.orders import order_dict


def shell(settings: Settings | None = None, **variables: str) -> dict[str, str]:
    """A shell's environment: `settings` as FULFILL_* variables (none at all without), and `variables` on top;
    a variable given as "" is not set."""
    env = (
        settings_env(settings)
        if settings is not None
        else {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    )
    env.update(variables)
    return {k: v for k, v in env.items() if v != ""}


def fulfill(env: dict[str, str], *args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FULFILL), *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def stock(done: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], int]:
    assert done.returncode == 0, done.stderr
    return {(row["sku"], row["warehouse"]): row["on_hand"] for row in json.loads(done.stdout)}


def relative_url(sqlite_url: str, start: Path) -> str:
    """The same SQLite URL with its file relative to `start`."""
    prefix, path = sqlite_url.split(":///", 1)
    return f"{prefix}:///{os.path.relpath(path, start)}"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def stack(stack_settings: Settings, store: Store, tmp_path: Path) -> Settings:
    """The session's stack (seeded database, dev server) as `make run` would announce it, in tmp_path/var."""
    settings = stack_settings.model_copy(update={"var_dir": tmp_path / "var"})
    write_stack_file(settings)
    return settings


async def test_with_the_variable_unset_the_cli_uses_the_stacks_database(stack: Settings, tmp_path: Path) -> None:
    env = shell(stack, FULFILL_DATABASE_URL="")
    # Another directory, where the default database would be another file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    followed = stock(await asyncio.to_thread(fulfill, env, "inventory", "show", "--json", cwd=elsewhere))
    assert followed[("MUG-RED", "LDN-1")] > 0  # the demo stock seeded in the stack's database
    # Spelled differently (relative to the directory the CLI runs in), the same file is the same database
    same = shell(stack, FULFILL_DATABASE_URL=relative_url(stack.database_url, elsewhere))
    assert stock(await asyncio.to_thread(fulfill, same, "inventory", "show", "--json", cwd=elsewhere)) == followed


async def test_another_database_is_refused_and_nothing_is_written(
    stack: Settings, store: Store, tmp_path: Path
) -> None:
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    before = {(level.sku, level.warehouse): level.on_hand for level in await store.stock.stock_levels("MUG-RED")}
    for url, shown in [(other, other), ("postgresql+asyncpg://ops:s3cret@db.internal/fulfill", "ops:***@db.internal")]:
        env = shell(stack, FULFILL_DATABASE_URL=url)
        done = await asyncio.to_thread(fulfill, env, "inventory", "receive", "MUG-RED", "5", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        message = " ".join(done.stderr.split())
        assert shown in message and stack.database_url in message
        assert "s3cret" not in message
        assert "unset FULFILL_DATABASE_URL" in message and "make clean" in message
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "other.db").exists()
    assert {
        (level.sku, level.warehouse): level.on_hand for level in await store.stock.stock_levels("MUG-RED")
    } == before


async def test_without_a_running_stack_the_cli_reads_its_own_settings(stack: Settings, tmp_path: Path) -> None:
    env = shell(stack, FULFILL_DATABASE_URL="")  # the default database: var/fulfill.db where the CLI runs
    here = tmp_path / "here"
    here.mkdir()
    assert stock(await asyncio.to_thread(fulfill, env, "inventory", "show", "--json", cwd=here))  # the stack's
    # Left behind by a stack that was killed: ignored
    write_stack_file(stack, pid=dead_pid())
    assert read_stack(stack.var_dir) is None
    assert stock(await asyncio.to_thread(fulfill, env, "inventory", "show", "--json", cwd=here)) == {}
    assert (here / "var" / "fulfill.db").exists()
    # No stack file at all: the same
    stack_file(stack.var_dir).unlink()
    assert stock(await asyncio.to_thread(fulfill, env, "inventory", "show", "--json", cwd=here)) == {}
    other = shell(stack, FULFILL_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    assert stock(await asyncio.to_thread(fulfill, other, "inventory", "show", "--json", cwd=here)) == {}


def test_stack_file_is_private_and_only_its_stack_removes_it(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url="postgresql+asyncpg://ops:s3cret@db/fulfill")
    path = write_stack_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    running = read_stack(settings.var_dir)
    assert running is not None and running.pid == os.getpid()
    assert running.settings["database_url"] == "postgresql+asyncpg://ops:s3cret@db/fulfill"
    remove_stack_file(settings, pid=os.getpid() + 1)  # not that process's file
    assert path.exists()
    remove_stack_file(settings)
    assert not path.exists()


async def test_an_engine_that_does_not_answer_is_one_line_and_exit_1(
    dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store, tmp_path: Path
) -> None:
    """An order on a task queue no worker polls (the catalogue in `store`): its status query times out on the
    server."""
    unattended = stack_settings.model_copy(update={"task_queue": "nobody-polls-this"})
    env = shell(unattended)
    order = json.dumps(order_dict("ORD-NOWORKER-1", {"MUG-RED": 1}))
    done = await asyncio.to_thread(fulfill, env, "order", "place", "-", cwd=tmp_path, stdin=order)
    assert done.returncode == 0, done.stderr
    try:
        done = await asyncio.to_thread(fulfill, env, "order", "status", "ORD-NOWORKER-1", cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.startswith("error: the engine did not answer (is a worker running? `make run`): ")
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        await dev_server.client.get_workflow_handle("order-ORD-NOWORKER-1").terminate("test over")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def until_status(env: dict[str, str], cwd: Path, order_id: str, wanted: set[str], within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while True:
        done = fulfill(env, "order", "status", order_id, "--json", cwd=cwd)
        view = json.loads(done.stdout) if done.returncode == 0 else {}
        if view.get("status") in wanted:
            return view
        assert time.monotonic() < deadline, f"{order_id} never reached {wanted}: {view.get('status')}"
        time.sleep(0.5)


def test_make_run_announces_its_settings_while_it_runs(tmp_path: Path) -> None:
    """The real `make run` (workers/devstack.py) on a database of its own: a shell with no FULFILL_* at all, in
    the same directory, reaches its database and its Temporal; once it stops, the file is gone."""
    ports = {name: free_port() for name in ("temporal", "ui", "smtp", "http", "carrier", "payments", "api")}
    database = f"sqlite+aiosqlite:///{tmp_path / 'stack-own.db'}"
    env = shell(
        FULFILL_DATABASE_URL=database,
        FULFILL_TEMPORAL_ADDRESS=f"127.0.0.1:{ports['temporal']}",
        FULFILL_TEMPORAL_UI_PORT=str(ports["ui"]),
        FULFILL_SANDBOX_SMTP_PORT=str(ports["smtp"]),
        FULFILL_SANDBOX_HTTP_PORT=str(ports["http"]),
        FULFILL_SANDBOX_CARRIER_PORT=str(ports["carrier"]),
        FULFILL_SANDBOX_PAYMENTS_PORT=str(ports["payments"]),
        FULFILL_SMTP_PORT=str(ports["smtp"]),
        FULFILL_TWILIO_BASE_URL=f"http://127.0.0.1:{ports['http']}",
        FULFILL_CARRIER_API_BASE=f"http://127.0.0.1:{ports['carrier']}/v2",
        FULFILL_PICKER_ENABLED="false",
        FULFILL_API_PORT=str(ports["api"]),
        # The sandbox carrier moves parcels at test speed (make run's 3/6/9 s would only make this test wait)
        FULFILL_SANDBOX_IN_TRANSIT_AFTER="1",
        FULFILL_SANDBOX_OUT_FOR_DELIVERY_AFTER="2",
        FULFILL_SANDBOX_DELIVERED_AFTER="3",
    )
    log = (tmp_path / "make-run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.devstack"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    path = tmp_path / "var" / "stack.json"
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert proc.poll() is None, (tmp_path / "make-run.log").read_text()
            assert time.monotonic() < deadline, "make run did not come up"
            time.sleep(0.1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        bare = shell()  # a new shell: no FULFILL_* variables at all
        assert stock(fulfill(bare, "inventory", "show", "--json", cwd=tmp_path))
        order = json.dumps(order_dict("ORD-STACK-1", {"MUG-RED": 1}))
        done = fulfill(bare, "order", "place", "-", cwd=tmp_path, stdin=order)
        assert done.returncode == 0, done.stderr
        done = fulfill(bare, "order", "status", "ORD-STACK-1", "--json", cwd=tmp_path)
        assert done.returncode == 0 and json.loads(done.stdout)["order_id"] == "ORD-STACK-1", done.stderr
        # The HTTP API is up too, on the stack's database: a key made with the CLI places an order over HTTP.
        key = fulfill(bare, "api-key", "create", "--name", "storefront", "--scope", "intake", cwd=tmp_path)
        assert key.returncode == 0, key.stderr
        placed = httpx.post(
            f"http://127.0.0.1:{ports['api']}/v1/orders",
            json=order_dict("ORD-STACK-2", {"MUG-RED": 1}),
            headers={"Authorization": f"Bearer {key.stdout.strip()}"},
            timeout=30,
        )
        assert placed.status_code == 202, placed.text
        # Tracking comes by push: the sandbox carrier's signed webhooks reach make run's own API (the order's
        # safety-net poll is hours away), and so do Twilio's status callbacks.
        view = until_status(bare, tmp_path, "ORD-STACK-2", {"PICKING"})
        confirmed = fulfill(bare, "warehouse", "confirm", view["shipments"][0]["pick_task_id"], cwd=tmp_path)
        assert confirmed.returncode == 0, confirmed.stderr
        until_status(bare, tmp_path, "ORD-STACK-2", {"DELIVERED"})
        log_of = fulfill(bare, "notifications", "--order", "ORD-STACK-2", "--json", cwd=tmp_path)
        assert log_of.returncode == 0, log_of.stderr
        delivered_sms = [n for n in json.loads(log_of.stdout) if n["channel"] == "sms"]
        assert delivered_sms and all(n["delivery_status"] == "delivered" for n in delivered_sms), delivered_sms
        done = fulfill(bare, "dev", "outages", "--json", cwd=tmp_path)
        assert (done.returncode, json.loads(done.stdout or "null")) == (0, []), done.stderr
        assert not (tmp_path / "var" / "fulfill.db").exists()  # the default database was never opened
        # The Web UI is pointed at the API's codec server, which decodes the encrypted history for an ops key
        codec = f"http://127.0.0.1:{ports['api']}/codec"
        ui_settings = httpx.get(f"http://127.0.0.1:{ports['ui']}/api/v1/settings", timeout=30).json()
        assert ui_settings["Codec"]["Endpoint"] == codec
        ops = fulfill(bare, "api-key", "create", "--name", "ops", "--scope", "ops", cwd=tmp_path)
        assert ops.returncode == 0, ops.stderr
        show = [str(TEMPORAL_CLI), "workflow", "show", "-w", "order-ORD-STACK-2", "--output", "json"]
        show += ["--address", f"127.0.0.1:{ports['temporal']}", "--codec-endpoint", codec]
        shown = subprocess.run(
            [*show, "--codec-auth", f"Bearer {ops.stdout.strip()}"], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        started = json.loads(shown.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
        order = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))["order"]
        assert order["customer"]["name"] == "Ada Lovelace"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    banner = (tmp_path / "make-run.log").read_text()
    assert database in banner and "the fulfill CLI follows this stack" in banner
    assert f"--codec-endpoint http://127.0.0.1:{ports['api']}/codec" in banner
    assert f"HTTP API          http://127.0.0.1:{ports['api']}/v1" in banner
    assert not path.exists()
