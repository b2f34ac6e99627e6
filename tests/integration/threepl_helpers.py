"""What the 3PL webhook, reconciliation and listing tests share: a parcel handed over (recorded as the order
workflow records it, and submitted to the sandbox 3PL through the ShipBob adapter under the same reference),
the engine's HTTP app served on a real port (where the sandbox 3PL posts its webhooks), and outbox reads."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.http.app import create_app
from common.integrations.shipbob import ShipBobClient
from common.models import Address, OrderLine, ShippingSpeed, workflow_id_for
from common.store import Store
from common.threepl.contracts import (
    THREEPL_UPDATE,
    ThreePLParcel,
    ThreePLState,
    ThreePLSubmission,
    ThreePLUpdate,
    reference_id,
)
from common.threepl.news import news_of
from sandbox import SandboxServers
from tests.integration.sandbox.conftest import threepl_sandbox
from tests.integration.sandbox.test_threepl_adapter import RECIPIENT

THREEPL_WAREHOUSE = "SHIPBOB-1"
SECRET = "whsec_" + base64.b64encode(b"the-3pl-webhook-tests-own-secret").decode()
WEBHOOK_PATH = "/v1/webhooks/3pl/shipbob"


@dataclass
class Engine:
    sb: SandboxServers
    db: Store
    api: FulfillmentApi
    settings: Settings
    shipbob: ShipBobClient
    http: httpx.AsyncClient


@asynccontextmanager
async def engine_and_3pl(tmp_path: Path, db: Store, dev_server: WorkflowEnvironment) -> AsyncIterator[Engine]:
    """The engine's HTTP app on a real port over `db`, and a sandbox 3PL posting its webhooks to it (signed with
    SECRET, retried quickly). Its orders move only when a test says (act), with 50 MUG-RED in stock."""
    sock = reserve_port()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{WEBHOOK_PATH}"
    async with threepl_sandbox(tmp_path, sandbox_threepl_webhook_url=url, threepl_webhook_secret=SECRET) as sb:
        sb.threepl.configure(ship_after=3600, deliver_after=3600)
        sb.threepl_webhooks(retry_delays=[0.05, 0.1])
        sb.threepl_stock({"MUG-RED": 50})
        base = Settings(
            var_dir=tmp_path,
            database_url="sqlite+aiosqlite:///unused",  # the tests hand `db` over; nothing opens this
            temporal_address=dev_server.client.service_client.config.target_host,
            threepl_webhook_secret=SECRET,
        )
        settings = sb.settings_for_clients(base)
        api = FulfillmentApi(dev_server.client, db, settings)
        shipbob = ShipBobClient(settings)
        try:
            async with serving_engine(sock, api, settings) as engine_url:
                async with httpx.AsyncClient(base_url=engine_url, timeout=30) as http:
                    yield Engine(sb, db, api, settings, shipbob, http)
        finally:
            await shipbob.close()
            sock.close()


def new_order_key() -> str:
    return f"ORD-T{uuid.uuid4().hex[:8]}"


async def hand_over(
    store: Store, shipbob: ShipBobClient, order_key: str, shipment_no: int = 1, *, sku: str = "MUG-RED"
) -> ThreePLParcel:
    """The parcel recorded as submitted, then submitted to the 3PL and its answer applied (as the order's
    activity does; recorded first so that no webhook can come before the row)."""
    ref = reference_id(order_key, shipment_no)
    submission = ThreePLSubmission(
        order_id=order_key,
        order_number=order_key.split("~")[0],
        shipment_no=shipment_no,
        warehouse=THREEPL_WAREHOUSE,
        provider="shipbob",
        lines=[OrderLine(sku=sku, quantity=1)],
        ship_to=Address(**RECIPIENT.address.model_dump()),
        speed=ShippingSpeed.STANDARD,
    )
    submitted = ThreePLUpdate(reference_id=ref, shipment_no=shipment_no, state=ThreePLState.SUBMITTED)
    await store.threepl.record_submission(submission, None, submitted)
    order = await shipbob.submit_order(
        reference_id=ref,
        order_number=submission.order_number,
        lines=[(sku, 1)],
        recipient=RECIPIENT,
        shipping_method="Standard",
        idempotency_key=ref,
    )
    answer = news_of(order, source="submit")
    assert answer is not None
    return await store.threepl.record_submission(submission, order.provider_id, answer)


async def threepl_signals(store: Store, order_key: str) -> list[dict[str, Any]]:
    """The payloads of the order's threepl_update rows in the outbox, oldest first."""
    rows = await store.signals.order_signals(workflow_id_for(order_key))
    return [r.payload for r in rows if r.name == THREEPL_UPDATE]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def parcel_reaches(store: Store, ref: str, state: ThreePLState, within: float = 10.0) -> ThreePLParcel:
    async def there() -> bool:
        parcel = await store.threepl.get(ref)
        return parcel is not None and parcel.state == state

    await eventually(there, within)
    parcel = await store.threepl.get(ref)
    assert parcel is not None
    return parcel


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def reserve_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving_engine(sock: socket.socket, api: FulfillmentApi, settings: Settings) -> AsyncIterator[str]:
    """The engine's HTTP app on `sock` in this loop; yields its base URL."""
    config = uvicorn.Config(create_app(settings, api), log_config=None, access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the engine's HTTP API did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
