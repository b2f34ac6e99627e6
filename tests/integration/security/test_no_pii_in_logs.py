"""No customer data in the engine's logs: orders with distinctive names, addresses, emails and phone numbers
go through the real worker and HTTP API processes (and a Temporal dev server of their own), with every failure
the sandboxes can make of that data: the relay refusing the address and being down, Twilio refusing the number,
a number that texted STOP, a handset the network cannot reach (the email fallback), the carrier refusing the
address (its message quoting the street), an address change, a cancellation. Then every line the processes
wrote is searched for the customer's data.

One worker runs as deployed (`python -m workers.worker`, INFO); a second on the same task queue has the engine's
and the Temporal SDK's loggers at DEBUG (tracebacks kept), so both configurations see the failures."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from google.protobuf import json_format
from temporalio.client import Client

from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.demo import seed_demo
from common.models import OrderStatus
from common.privacy import data_converter
from common.store import Store
from sandbox import SandboxServers, free_port_settings
from sandbox.app import SMS_INBOUND_PATH
from tests.integration.conftest import settings_env
from tests.integration.worker_process import DevServerProcess, WorkerProcess, eventually, free_port, worker_env
from tests.orders import order_dict
from workers.picker import run_picker

NAME = "Zebulon Quixotic-Pii"
EMAIL = "zebulon.quixotic.pii@example.org"
REFUSED_EMAIL = "zebulon.quixotic.pii+bounce@example.org"  # the sandbox relay refuses +bounce with 550
PHONE = "+15555550199"
INVALID_PHONE = "+15005550001"  # Twilio's magic number: 21211 "The 'To' number ... is not a valid phone number"
UNREACHABLE_PHONE = "+15555530003"  # accepted, then undelivered (30003): the email fallback
STREET = "742 Quixotic Pii Terrace"
CITY = "Piiville"
POSTAL_CODE = "Q1X 0P1"
FIXED_STREET = "9 Pii Fixed Mews"

# Case-insensitive; the local part and bare digits too, as providers and formatters write them
FORBIDDEN = [
    NAME,
    "Quixotic",
    "zebulon",
    EMAIL,
    REFUSED_EMAIL,
    EMAIL.split("@")[0],
    PHONE,
    PHONE.lstrip("+"),
    PHONE[2:],
    INVALID_PHONE.lstrip("+"),
    INVALID_PHONE[2:],
    UNREACHABLE_PHONE.lstrip("+"),
    UNREACHABLE_PHONE[2:],
    STREET,
    CITY,
    POSTAL_CODE,
    POSTAL_CODE.replace(" ", ""),
    FIXED_STREET,
]

# The DEBUG worker: the deployed entry point, with the engine's and the SDK's loggers turned up after its set-up
DEBUG_WORKER = """
import logging, runpy
import common.logs as logs
configure = logs.configure_logging
def debug(level=logging.INFO):
    configure(level)
    for name in ("fulfill", "temporalio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
logs.configure_logging = debug
runpy.run_module("workers.worker", run_name="__main__")
"""


class DebugWorkerProcess(WorkerProcess):
    async def start(self, client: Client, within: float = 30.0) -> Self:
        """Ready once it says it polls (run through `-c`, the server lists its pollers under another identity)."""
        env = {**worker_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self._spawn([sys.executable, "-c", DEBUG_WORKER], env)

        def polling() -> bool:
            self._check_alive()
            return "worker polling task queue" in self.log()

        await eventually(polling, f"{self.name} to poll {self.settings.task_queue}", within, 0.2)
        return self


class VerboseDevServer(DevServerProcess):
    """The dev server at INFO (the crash tests keep it at ERROR): whatever it says goes into the search too."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--log-level") + 1] = "info"
        return cmd


@dataclass
class Stack:
    client: Client
    api: FulfillmentApi
    sandbox: SandboxServers
    http: httpx.AsyncClient
    logs: list[Path]
    stop: Any  # async () -> None: stops the processes, so that their logs are complete


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    sandbox_settings = free_port_settings(
        sandbox_in_transit_after=0.3,
        sandbox_out_for_delivery_after=0.6,
        sandbox_delivered_after=0.9,
        sandbox_sms_inbound_url=f"{api_url}{SMS_INBOUND_PATH}",
    )
    async with (
        SandboxServers(sandbox_settings, db_path=tmp_path / "sandbox.db") as sandbox,
        VerboseDevServer(tmp_path / "temporal.db", tmp_path / "temporal.log") as dev,
    ):
        await dev.start()
        base = Settings(
            temporal_address=dev.address,
            task_queue=f"fulfillment-pii-{uuid.uuid4().hex[:6]}",
            var_dir=tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}",
            tracking_poll_interval=0.3,
            return_window=0,
            carrier_webhook_secret=None,
            api_host="127.0.0.1",
            api_port=api_port,
        )
        settings = sandbox.settings_for_clients(base, engine_url=api_url)
        store = await Store.open(settings.database_url)
        await seed_demo(store)
        key = (await store.api_keys.create("pii-test", ["intake", "ops", "warehouse", "read"])).secret
        client = await Client.connect(dev.address, data_converter=data_converter(get_settings()))
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        debug_worker = DebugWorkerProcess(settings, tmp_path / "worker-debug.log", name="debug worker")
        api_log = tmp_path / "api.log"
        with api_log.open("ab") as out:
            api_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers.api", env=settings_env(settings), stdout=out, stderr=out
            )
        stop_picker = asyncio.Event()
        api = FulfillmentApi(client, store, settings)
        picker = asyncio.create_task(run_picker(api, 0, stop_picker, poll_s=0.2))

        async def stop() -> None:
            stop_picker.set()
            await picker
            if api_proc.returncode is None:
                api_proc.terminate()
                await asyncio.wait_for(api_proc.wait(), 30)
            await worker.terminate()
            await debug_worker.terminate()

        try:
            await worker.start(client)
            await debug_worker.start(client)
            async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:

                async def ready() -> bool:
                    assert api_proc.returncode is None, api_log.read_text()[-3000:]
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(ready, "the API process to be ready", 30, 0.2)
                logs = [worker.log_path, debug_worker.log_path, api_log, dev.log_path]
                yield Stack(client, api, sandbox, http, logs, stop)
        finally:
            await stop()
            await store.close()


def customer_order(order_id: str, lines: dict[str, int] | None = None, **customer: Any) -> dict[str, Any]:
    data = order_dict(order_id, lines or {"MUG-RED": 1})
    data["customer"] = {
        "id": "C-7001",
        "name": NAME,
        "email": EMAIL,
        "phone": PHONE,
        "channels": ["email", "sms"],
        **customer,
    }
    data["ship_to"] = {
        "name": NAME,
        "line1": STREET,
        "line2": "Flat Quixotic 3",
        "city": CITY,
        "region": "PV",
        "postal_code": POSTAL_CODE,
        "country": "GB",
    }
    return data


PATTERN = re.compile("|".join(re.escape(s) for s in FORBIDDEN), re.IGNORECASE)


def leaks(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PATTERN.search(line):
                found.append(f"{path.name}:{number}: {line}")
    return found


async def failure_leaks(client: Client, workflow_id: str) -> list[str]:
    """Error messages in the workflow's history (failed activities, updates, the workflow), causes included:
    what the Web UI and `fulfill order status` show ops. (Payloads are the order's data and may hold it.)"""
    found = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        attributes = getattr(event, event.WhichOneof("attributes") or "", None)
        failure = getattr(attributes, "failure", None) if attributes is not None else None
        while failure is not None and failure.ByteSize():
            if PATTERN.search(failure.message):
                found.append(f"{workflow_id} event {event.event_id}: {failure.message}")
            failure = failure.cause if failure.HasField("cause") else None
    return found


async def decode_through_the_codec_server(stack: Stack, order_ids: list[str]) -> None:
    """The codec server in the API process decodes each order's input for ops (as the Web UI asks it), encodes it
    again, and refuses a request without a key: none of that may reach the API's log either."""
    codec = {"X-Namespace": stack.api.settings.temporal_namespace}
    for order_id in order_ids:
        history = await stack.client.get_workflow_handle(f"order-{order_id}").fetch_history()
        body = json_format.MessageToJson(history.events[0].workflow_execution_started_event_attributes.input)
        decoded = await stack.http.post("/codec/decode", content=body, headers=codec)
        assert decoded.status_code == 200, decoded.text
        assert (await stack.http.post("/codec/encode", content=decoded.content, headers=codec)).status_code == 200
        refused = await stack.http.post("/codec/decode", content=body, headers={**codec, "Authorization": ""})
        assert refused.status_code == 401


async def test_customer_data_stays_out_of_every_log(stack: Stack) -> None:
    api, sandbox, http = stack.api, stack.sandbox, stack.http
    run = uuid.uuid4().hex[:6].upper()
    ids = {name: f"ORD-P{run}-{name}" for name in ("http", "optout", "bounce", "badsms", "fallback", "outage", "addr")}
    ids["cancel"] = f"ORD-P{run}-cancel"

    async def status(order_id: str) -> OrderStatus:
        return (await api.order_status(order_id)).status

    async def reaches(order_id: str, wanted: OrderStatus) -> None:
        async def there() -> bool:
            return await status(order_id) == wanted

        try:
            await eventually(there, f"{order_id} to be {wanted.value}", 60, 0.3)
        except AssertionError:
            view = await api.order_status(order_id)
            where = f"{order_id} is {view.status.value}, not {wanted.value}"
            raise AssertionError(f"{where}: {view.timeline[-3:]}") from None

    async def place_http(data: dict[str, Any]) -> None:
        answer = await http.post("/v1/orders", json=data)
        assert answer.status_code == 202, answer.text

    # Over HTTP: a plain order, one whose email the relay refuses, one whose address the carrier refuses
    await place_http(customer_order(ids["http"]))
    await place_http(customer_order(ids["bounce"], email=REFUSED_EMAIL))
    bad_address = customer_order(ids["addr"])
    bad_address["ship_to"]["line1"] = f"{STREET} Invalid"  # the sandbox carrier cannot verify it
    await place_http(bad_address)
    # Through the Python API: Twilio refusing the number; a handset the network cannot reach (SMS only: its
    # email fallback goes out); an order that waits for stock and is cancelled
    await api.place_order(customer_order(ids["badsms"], phone=INVALID_PHONE))
    await api.place_order(customer_order(ids["fallback"], phone=UNREACHABLE_PHONE, channels=["sms"]))
    await api.place_order(customer_order(ids["cancel"], {"POSTER-A2": 1}))
    # The relay down for a few seconds while an order's first messages go out
    sandbox.start_outage("smtp", 3)
    await api.place_order(customer_order(ids["outage"]))

    await reaches(ids["addr"], OrderStatus.ADDRESS_INVALID)
    fixed = dict(bad_address["ship_to"], line1=FIXED_STREET)
    answer = await http.put(f"/v1/orders/{ids['addr']}/address", json=fixed)
    assert answer.status_code in (200, 202), answer.text
    await reaches(ids["cancel"], OrderStatus.BACKORDERED)
    cancelled = await http.post(f"/v1/orders/{ids['cancel']}/cancel", json={"reason": "changed their mind"})
    assert cancelled.status_code in (200, 202), cancelled.text

    # The customer texts STOP (Twilio's inbound webhook, to the API process); their next order gets no SMS
    await reaches(ids["http"], OrderStatus.COMPLETED)
    texted = await http.post(f"{sandbox.http_url}/sms/_sandbox/inbound", json={"from": PHONE, "body": "STOP"})
    assert texted.status_code == 200, texted.text
    await eventually(lambda: api.store.sms_opt_outs.is_opted_out(PHONE), "the STOP to be recorded")
    await api.place_order(customer_order(ids["optout"]))

    for name in ("optout", "bounce", "badsms", "fallback", "outage", "addr"):
        await reaches(ids[name], OrderStatus.COMPLETED)
    await reaches(ids["cancel"], OrderStatus.CANCELLED)

    # The failures happened (else the test proves nothing): the refusals are in the delivery log, the fallback
    # email and the corrected label went out
    bounced = await api.store.notifications.notifications(ids["bounce"])
    assert any(n.channel == "email" and n.delivery_status == "bounced" for n in bounced)
    refused = await api.store.notifications.notifications(ids["badsms"])
    assert any(n.channel == "sms" and n.status == "failed" for n in refused)
    opted_out = await api.store.notifications.notifications(ids["optout"])
    assert any(n.channel == "sms" and n.delivery_status == "opted-out" for n in opted_out)
    await eventually(
        lambda: any(m.channel == "email" for m in sandbox.outbox(ids["fallback"])), "the fallback email", 60
    )
    addr_view = await api.order_status(ids["addr"])
    assert OrderStatus.ADDRESS_INVALID in [e.status for e in addr_view.timeline]
    streets = [s["to_address"]["street1"] for s in sandbox.shipments() if ids["addr"] in s["reference"]]
    assert streets[-1] == FIXED_STREET

    await decode_through_the_codec_server(stack, list(ids.values()))

    await stack.stop()
    found = leaks(stack.logs)
    for order_id in ids.values():
        found += await failure_leaks(stack.client, f"order-{order_id}")
    assert not found, "customer data in the logs:\n" + "\n".join(found[:80])
