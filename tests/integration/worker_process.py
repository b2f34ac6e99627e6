"""Real engine processes for crash tests: the worker (`python -m workers.worker`), the HTTP API
(`python -m workers.api`) and a Temporal dev server (`temporal server start-dev`) as subprocesses that a test
can SIGKILL, and `TcpGate`, a forwarder that
freezes a conversation at a chosen point (a request sent, not yet received) so the kill lands exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from common.config import Settings, get_settings
from common.privacy import data_converter
from common.temporal import dev_server_search_attribute_args
from tests.conftest import TEMPORAL_CLI
from tests.integration.conftest import settings_env

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(probe: Callable[[], T], what: str, within: float = ..., interval: float = ...) -> T: ...
async def eventually(probe: Callable[[], Any], what: str, within: float = 30.0, interval: float = 0.1) -> Any:
    """Poll `probe` (sync or async) until it returns something truthy, and return that; fail with `what`
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def worker_env(settings: Settings) -> dict[str, str]:
    """`settings_env` without the unset settings whose default is unset too. A setting unset here but set by
    default (carrier_webhook_secret) stays in as an empty value, which reads back as unset: left out, the
    process would take the default, and an HTTP API started so would start orders that expect carrier
    webhooks (tracking polled every 6 h), which the sandbox sends nobody."""
    env = settings_env(settings)
    for name, value in settings.model_dump().items():
        if value is None and Settings.model_fields[name].default is None:
            env.pop(f"FULFILL_{name.upper()}", None)
    return env


class _Process:
    """A child process whose output goes to a log file (shown when something goes wrong)."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {self.name}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no graceful finish of in-flight work, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def terminate(self, grace: float = 20.0) -> None:
        """SIGTERM (a normal stop), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, grace)
        except subprocess.TimeoutExpired:
            self.kill()


class WorkerProcess(_Process):
    """`python -m workers.worker` with FULFILL_* settings from `settings` (a unique task queue per test)."""

    def __init__(self, settings: Settings, log_path: Path, name: str = "worker") -> None:
        super().__init__(name, log_path)
        self.settings = settings

    @property
    def identity_prefix(self) -> str:
        """The start of this process's worker identity (the SDK's default, "<pid>@<host>"), with which
        Temporal records its pollers and the workflow tasks it starts and completes."""
        return f"{self.pid}@"

    async def start(self, client: Client, within: float = 30.0) -> Self:
        """Start the process and return once it polls its task queue for workflow and activity tasks."""
        env = {**worker_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self._spawn([sys.executable, "-m", "workers.worker"], env)
        identity = self.identity_prefix

        async def polling() -> bool:
            self._check_alive()
            for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
                try:
                    described = await client.workflow_service.describe_task_queue(
                        DescribeTaskQueueRequest(
                            namespace=client.namespace,
                            task_queue=TaskQueue(name=self.settings.task_queue),
                            task_queue_type=kind,
                        )
                    )
                except RPCError as err:
                    # A readiness probe: a call dropped on the way (seen once as CANCELLED) means ask again
                    if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE):
                        return False
                    raise
                if not any(p.identity.startswith(identity) for p in described.pollers):
                    return False
            return True

        await eventually(polling, f"{self.name} (pid {self.pid}) to poll {self.settings.task_queue}", within, 0.2)
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


class ApiProcess(_Process):
    """`python -m workers.api` with FULFILL_* settings from `settings`, serving on 127.0.0.1 at `port` (default:
    a free one, not the settings' api_port, which other processes on the machine may hold)."""

    def __init__(self, settings: Settings, log_path: Path, name: str = "api", port: int | None = None) -> None:
        super().__init__(name, log_path)
        self.settings = settings.model_copy(update={"api_host": "127.0.0.1", "api_port": port or free_port()})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    async def start(self, within: float = 30.0) -> Self:
        """Start the process and return once /readyz answers 200 (Temporal and the database answer it)."""
        env = {**worker_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self._spawn([sys.executable, "-m", "workers.api"], env)

        async with httpx.AsyncClient(timeout=5) as client:

            async def ready() -> bool:
                self._check_alive()
                try:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
                except httpx.TransportError:  # not listening yet
                    return False

            await eventually(ready, f"{self.name} (pid {self.pid}) to answer {self.url}/readyz", within, 0.2)
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


class DevServerProcess(_Process):
    """`temporal server start-dev` on a fixed port and SQLite file (WAL), headless, with the search attributes,
    so a test can kill it and start it again on the same file."""

    def __init__(self, db_file: Path, log_path: Path, port: int | None = None) -> None:
        super().__init__("temporal dev server", log_path)
        self.db_file = db_file
        self.port = port or free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(TEMPORAL_CLI),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            "error",
            *dev_server_search_attribute_args(),
        ]

    async def start(self, within: float = 60.0) -> Self:
        """Start the server and return once it answers on its frontend."""
        self._spawn(self.command())

        async def answering() -> bool:
            self._check_alive()
            try:
                client = await Client.connect(self.address, data_converter=data_converter(get_settings()))
                return await client.service_client.check_health()
            except RuntimeError:  # connection refused while it starts
                return False

        await eventually(answering, f"the dev server on {self.address}", within, 0.3)
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


class _Link:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.tasks: list[asyncio.Task[None]] = []


class TcpGate:
    """A TCP forwarder to `host:port` whose client-to-server direction can be held.

    `hold()` keeps whatever clients send from reaching the server (answers still flow back); `release()`
    lets it through. `sever()` drops the held bytes and closes the open connections, which is what a request
    half-way out of a killed process amounts to: the server never sees it. Point a client at `address`.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.held = 0  # bytes read from clients and waiting for release()
        self.port = 0
        self._down = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def hold(self) -> None:
        self._open.clear()

    async def fail(self) -> None:
        """An outage: open connections are cut and new ones refused until recover()."""
        self._down = True
        await self.sever()

    def recover(self) -> None:
        self._down = False

    def release(self) -> None:
        self._open.set()

    async def sever(self) -> None:
        links, self._links = list(self._links), set()
        for link in links:
            for task in link.tasks:
                task.cancel()
            for writer in link.writers:
                writer.close()
        await asyncio.gather(*(t for link in links for t in link.tasks), return_exceptions=True)
        self.held = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        await self.sever()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, gated=True)),
            asyncio.create_task(self._pump(up_reader, writer, gated=False)),
        ]
        self._links.add(link)
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in link.tasks:
                task.cancel()
            for w in link.writers:
                w.close()
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if gated and not self._open.is_set():
                    self.held += len(data)
                    await self._open.wait()
                    self.held -= len(data)
                writer.write(data)
                await writer.drain()
