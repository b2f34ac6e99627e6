"""Encrypted histories and the right to erasure, end to end: the dev server, the real worker, the database,
and `fulfill customer forget` as a user runs it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.crypto.codec import CustomerDataErased
from common.crypto.keys import read_key_file
from common.db import tables as t
from common.models import OrderStatus, workflow_id_for
from common.store import Store
from common.temporal import CUSTOMER_ID, PayloadConverter
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")

NAME = "Ottoline Vexworthy"
EMAIL = "ottoline.vexworthy@example.net"
STREET = "88 Marrowbone Crescent"


def customer_order(order_id: str, customer_id: str) -> dict[str, object]:
    data = order_dict(order_id)
    data["customer"] = {**data["customer"], "id": customer_id, "name": NAME, "email": EMAIL}  # type: ignore[dict-item]
    data["ship_to"] = {**data["ship_to"], "name": NAME, "line1": STREET}  # type: ignore[dict-item]
    return data


async def closed(client: Client, workflow_id: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = (await client.get_workflow_handle(workflow_id).describe()).status
        if status != WorkflowExecutionStatus.RUNNING:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} still runs")


async def raw_history(client: Client, workflow_id: str) -> bytes:
    """The history as Temporal stores it (and the Web UI without a codec shows it): not decoded."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


async def test_histories_hold_no_customer_data_in_plaintext(api: FulfillmentApi) -> None:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(customer_order(order_id, f"C-{uuid.uuid4().hex[:6]}"))
    await api.cancel_order(order_id, "changed my mind")
    view = await api.order_status(order_id)  # decoded with the engine's codec: all there
    assert view.status == OrderStatus.CANCELLED

    stored = await raw_history(api.client, workflow_id_for(order_id))
    for detail in (NAME, EMAIL, STREET, "Vexworthy", "ottoline"):
        assert detail.encode() not in stored
    assert b"binary/encrypted" in stored


async def test_forget_refuses_while_an_order_runs_then_erases_it(
    api: FulfillmentApi, store: Store, cli: Cli, dev_server: WorkflowEnvironment
) -> None:
    customer = f"C-{uuid.uuid4().hex[:6]}"
    order_id, old_order = f"ORD-{uuid.uuid4().hex[:8]}", f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(customer_order(order_id, customer))
    await api.order_status(order_id)

    refused = cli("customer", "forget", customer, "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "still has running workflows" in refused.stderr and workflow_id_for(order_id) in refused.stderr
    assert (await api.order_status(order_id)).order_id == order_id  # nothing was erased

    # An order of the same customer from before encryption: its history is plaintext, so it is deleted
    plain = await Client.connect(
        dev_server.client.service_client.config.target_host,
        data_converter=DataConverter(payload_converter_class=PayloadConverter),
    )
    old = await plain.start_workflow(
        "NoSuchWorkflowType",
        customer_order(old_order, customer),
        id=workflow_id_for(old_order),
        task_queue="nobody-polls-this",
        # Visibility finds the customer's older orders by the search attribute every order carries
        search_attributes=TypedSearchAttributes([SearchAttributePair(CUSTOMER_ID, customer)]),
    )
    await old.terminate("stands for an order closed before encryption")

    await api.cancel_order(order_id, "customer asked to be forgotten")
    await closed(api.client, workflow_id_for(order_id))

    done = cli("customer", "forget", customer, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"customer {customer} forgotten" in done.stdout
    assert "data key(s) destroyed" in done.stdout and "not erased here:" in done.stdout
    assert workflow_id_for(old_order) in done.stdout  # the plaintext history, deleted

    # The encrypted history is still at Temporal, and can no longer be read by anyone: here, once this process's
    # copy of the key expires (FULFILL_CODEC_KEY_CACHE_TTL, 1 s in the tests)
    history = await api.client.get_workflow_handle(workflow_id_for(order_id)).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    await asyncio.sleep(1.1)
    with pytest.raises(CustomerDataErased, match=f"customer {customer}'s data was erased"):
        await api.client.data_converter.decode(started)
    # Our own copies: the messages' recipients and bodies are gone
    n = t.notifications
    rows = await store.db.read(select(n.c.recipient, n.c.body).where(n.c.order_id == order_id))
    assert rows and all(r.recipient == "[erased]" and r.body == "[erased]" for r in rows)

    again = cli("customer", "forget", customer, "--yes")  # a second run changes nothing, and says so
    assert again.returncode == 0, again.stderr
    assert "0 data key(s) destroyed" in again.stdout


def test_keys_rotate_adds_a_newest_key_and_list_never_shows_secrets(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "codec-keys.json"
    first = cli("keys", "rotate", "--file", str(path))
    second = cli("keys", "rotate", "--file", str(path))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    keys = read_key_file(path)
    assert len(keys) == 2 and keys[0].id in second.stdout and keys[1].id in first.stdout
    assert path.stat().st_mode & 0o777 == 0o600

    listed = cli("keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    shared = json.loads(listed.stdout)  # the stack's own key file (another test may have rotated it)
    assert shared[0]["newest"] and not any(k["newest"] for k in shared[1:])
    assert sum(k["data_keys_wrapped"] for k in shared) >= 1
    assert base64.b64encode(read_key_file(Path(os.environ["FULFILL_CODEC_KEY_FILE"]))[0].secret).decode() not in (
        listed.stdout
    )
