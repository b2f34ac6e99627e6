"""The HTTP API as its own process (`python -m workers.api`), as a storefront and a property-based tester meet
it: curl places the README's first order, and schemathesis throws what it can think of at every endpoint of
the OpenAPI schema (no 5xx, every answer as documented). Its own database and task queue (and a worker for
them), so that the fuzzer's counts and cancellations never touch the other tests' orders and stock."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from common.config import Settings
from common.demo import seed_demo
from common.privacy import data_converter
from common.store import Store
from common.temporal import SEARCH_ATTRIBUTES
from tests.conftest import TEMPORAL_CLI
from tests.integration.conftest import settings_env
from workers.worker import running_worker

ROOT = Path(__file__).resolve().parents[3]
SCHEMATHESIS = Path(sys.executable).parent / "st"


@dataclass
class ApiProcess:
    url: str
    key: str  # every scope
    settings: Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def api_process(stack_settings: Settings, var_dir: Path) -> AsyncIterator[ApiProcess]:
    # A Temporal of its own: the fuzzer lists orders and follows them, and other tests' orders (with workers of
    # their own, stopped since) are not its to read. And a store of data keys of its own: the fuzzer erases
    # customers (POST /v1/customers/C-42/erasure), whose keys the other tests' orders use.
    keys = stack_settings.model_copy(update={"codec_keystore_url": f"sqlite+aiosqlite:///{var_dir / 'http-keys.db'}"})
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=data_converter(keys),
        dev_server_log_level="error",
    ) as own:
        async for process in _api_process(own, keys, var_dir):
            yield process


async def _api_process(
    dev_server: WorkflowEnvironment, stack_settings: Settings, var_dir: Path
) -> AsyncIterator[ApiProcess]:
    settings = stack_settings.model_copy(
        update={
            "temporal_address": dev_server.client.service_client.config.target_host,
            "database_url": f"sqlite+aiosqlite:///{var_dir / 'http-process.db'}",
            "task_queue": f"fulfillment-http-{uuid.uuid4().hex[:6]}",
            "api_host": "127.0.0.1",
            "api_port": _free_port(),
            "api_max_body_bytes": 64 * 1024,
        }
    )
    store = await Store.open(settings.database_url)
    await seed_demo(store)
    key = (await store.api_keys.create("fuzzer", ["intake", "ops", "warehouse", "read"])).secret
    url = f"http://127.0.0.1:{settings.api_port}"
    async with running_worker(dev_server.client, settings, store):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.api", cwd=ROOT, env=settings_env(settings), stderr=asyncio.subprocess.PIPE
        )
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    try:
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, "the API process exited"
                    await asyncio.sleep(0.2)
            yield ApiProcess(url, key, settings)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
            assert proc.returncode in (0, -signal.SIGTERM), stderr.decode()[-3000:]  # uvicorn re-raises the signal
            assert b"Traceback" not in stderr, stderr.decode()[-3000:]
    await store.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_places_the_readmes_first_order(api_process: ApiProcess, tmp_path: Path) -> None:
    order = json.loads((ROOT / "examples" / "order.json").read_text())
    order["order_id"] = f"ORD-C{uuid.uuid4().hex[:6]}"
    body = tmp_path / "order.json"
    body.write_text(json.dumps(order))
    auth = f"Authorization: Bearer {api_process.key}"
    curl = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H", auth, "-H", "Content-Type: application/json"]
    placed = await asyncio.create_subprocess_exec(
        *curl, "-d", f"@{body}", f"{api_process.url}/v1/orders", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await placed.communicate()
    text, code = out.decode().rsplit("\n", 1)
    assert code == "202", text
    assert json.loads(text)["url"] == f"/v1/orders/{order['order_id']}"
    status = await asyncio.create_subprocess_exec(
        *curl, f"{api_process.url}{json.loads(text)['url']}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await status.communicate()
    text, code = out.decode().rsplit("\n", 1)
    assert code == "200" and json.loads(text)["order_id"] == order["order_id"]


async def test_schemathesis_finds_no_5xx_and_no_answer_off_the_schema(api_process: ApiProcess) -> None:
    """Property-based, from the OpenAPI schema: the examples it documents, the boundaries of every field
    and random input, valid and invalid (fuzzing). Checks: no 5xx, status codes, content types, headers and bodies as
    documented, invalid input refused, auth enforced where the schema says it is."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{api_process.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {api_process.key}",
        "--checks",
        "all",
        "--exclude-checks",
        # Valid input may still be refused by state (an unknown order is 404, a shipped one 409); resources it
        # creates are not fetched back (the stateful checks need links the schema does not declare).
        "positive_data_acceptance,use_after_free,ensure_resource_availability,object_level_authorization",
        # Not the coverage phase: schemathesis 4.32 fails inside itself on Python 3.11 generating it for some
        # patterns (SystemError: AST constructor recursion depth mismatch), and it alone takes minutes.
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        os.environ.get("FULFILL_TEST_SCHEMATHESIS_EXAMPLES", "25"),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--seed",
        "1",
        "--no-color",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    report = out.decode()
    print(report[-6000:])
    assert proc.returncode == 0, report[-12000:]
