"""The processes of a benchmark run: Temporal dev server, sandbox servers, workers.

Each runs as its own OS process (as in `make run`), so the load generator's client-side work does not share
a Python thread with the worker it measures; /proc tells their CPU time and memory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from common.config import Settings, get_settings
from common.privacy import data_converter
from common.temporal import dev_server_search_attribute_args

BIN = Path(sys.executable).parent
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOCALHOST = "127.0.0.1"

# A benchmark is the embedded stack, and every process of it (this one, its workers, its API) shares one codec
# key file and one store of customers' data keys: the load generator reads what the workers encrypted.
_KEYS_DIR = Path(tempfile.mkdtemp(prefix="fulfill-bench-keys-"))
os.environ.setdefault("FULFILL_ENVIRONMENT", "embedded")
os.environ.setdefault("FULFILL_CODEC_KEY_FILE", str(_KEYS_DIR / "codec-keys.json"))
os.environ.setdefault("FULFILL_CODEC_KEYSTORE_URL", f"sqlite+aiosqlite:///{_KEYS_DIR / 'keys.db'}")


class StackError(RuntimeError):
    """A process of the stack died or did not come up."""


def free_port() -> int:
    """An ephemeral port that is free now (the child binds it a moment later; fine on a quiet loopback)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((LOCALHOST, port)) == 0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise StackError(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (fields 14 and 15 of /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may contain spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak resident set) from /proc/<pid>/status, in MB."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, within_s: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def spawn(name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Process(name, popen, log_path)


def settings_env(settings: Settings) -> dict[str, str]:
    """The FULFILL_* environment that gives a child process exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.model_dump().items():
        # None as an empty value ("not set"): left out, the child would take the default instead (e.g. the
        # carrier's webhooks to :8080, where a `make run` on this machine would receive them)
        env[f"FULFILL_{name.upper()}"] = "" if value is None else str(value)
    env["FULFILL_ENVIRONMENT"] = "embedded"  # the bench runs the engine on its own sandbox servers
    return env


# ------------------------------------------------------------------------------------------------ Temporal


def start_temporal(work_dir: Path) -> tuple[Process, str]:
    """`temporal server start-dev` as `make run` starts it (SQLite file, WAL, search attributes), headless,
    on ephemeral ports. Returns the process and its gRPC address."""
    port = free_port()
    cmd = [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--ip",
        LOCALHOST,
        "--port",
        str(port),
        "--headless",
        "--db-filename",
        str(work_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
        *dev_server_search_attribute_args(),
    ]
    return spawn("temporal", cmd, work_dir), f"{LOCALHOST}:{port}"


async def connect_when_up(address: str, namespace: str, server: Process | None, within_s: float = 60) -> Client:
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await Client.connect(address, namespace=namespace, data_converter=data_converter(get_settings()))
        except RuntimeError:
            if server is not None:
                server.check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"no Temporal server at {address} after {within_s:.0f}s") from None
            await asyncio.sleep(0.3)


async def wait_for_pollers(client: Client, task_queue: str, worker: Process, within_s: float = 60) -> None:
    """Until the worker polls both the workflow and the activity queue: starting work before that would
    charge the worker's start-up to the throughput."""
    deadline = time.monotonic() + within_s
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        while True:
            worker.check_alive()
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
                )
            )
            if response.pollers:
                break
            if time.monotonic() > deadline:
                raise StackError(f"{worker.name} is not polling {task_queue!r} after {within_s:.0f}s")
            await asyncio.sleep(0.2)


# ------------------------------------------------------------------------------------------------ processes


def with_sandbox_ports(settings: Settings) -> Settings:
    """`settings` with ephemeral sandbox ports and the engine's adapters pointed at them."""
    smtp, http, carrier, payments, threepl = free_port(), free_port(), free_port(), free_port(), free_port()
    return settings.model_copy(
        update={
            "sandbox_host": LOCALHOST,
            "sandbox_smtp_port": smtp,
            "sandbox_http_port": http,
            "sandbox_carrier_port": carrier,
            "sandbox_payments_port": payments,
            "sandbox_threepl_port": threepl,
            "threepl_api_base": f"http://{LOCALHOST}:{threepl}/2.0",
            "payments_provider": "stripe",
            "stripe_api_key": settings.sandbox_payments_api_key,
            "stripe_api_base": f"http://{LOCALHOST}:{payments}",
            "smtp_host": LOCALHOST,
            "smtp_port": smtp,
            "smtp_starttls": False,
            "smtp_use_tls": False,
            "twilio_base_url": f"http://{LOCALHOST}:{http}",
            "sms_status_callback_url": f"http://{LOCALHOST}:{http}/sms/status",
            "carrier_api_base": f"http://{LOCALHOST}:{carrier}/v2",
            # No engine HTTP API receives them in a benchmark: the carrier's and the 3PL's webhooks go nowhere.
            "sandbox_carrier_webhook_url": None,
            "sandbox_threepl_webhook_url": None,
        }
    )


async def start_sandbox(settings: Settings, log_dir: Path, within_s: float = 30) -> Process:
    """The sandbox SMTP/SMS/carrier servers in their own process (`python -m workers.sandbox`): they stand in
    for services on other machines, so they should not share the load generator's or the worker's loop."""
    proc = spawn("sandbox", [sys.executable, "-m", "workers.sandbox"], log_dir, settings_env(settings))
    deadline = time.monotonic() + within_s
    ports = (
        settings.sandbox_smtp_port,
        settings.sandbox_http_port,
        settings.sandbox_carrier_port,
        settings.sandbox_payments_port,
        settings.sandbox_threepl_port,
    )
    while not all(port_open(p) for p in ports):
        proc.check_alive()
        if time.monotonic() > deadline:
            raise StackError(f"sandbox not listening on {ports} after {within_s:.0f}s:\n{proc.log_tail()}")
        await asyncio.sleep(0.2)
    return proc


async def start_engine_worker(
    client: Client, settings: Settings, log_dir: Path, module: str = "workers.worker", name: str = "worker"
) -> Process:
    """The real worker, `python -m workers.worker` (running_worker inside), configured by FULFILL_* vars.
    `module` runs another entry point instead (e.g. a what-if variant of the worker)."""
    proc = spawn(name, [sys.executable, "-m", module], log_dir, settings_env(settings))
    await wait_for_pollers(client, settings.task_queue, proc)
    return proc


async def start_floor_worker(client: Client, task_queue: str, log_dir: Path) -> Process:
    address = client.service_client.config.target_host
    cmd = [
        sys.executable,
        str(BENCH_DIR / "floor_worker.py"),
        "--address",
        address,
        "--namespace",
        client.namespace,
        "--task-queue",
        task_queue,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = spawn("floor-worker", cmd, log_dir, env)
    await wait_for_pollers(client, task_queue, proc)
    return proc
