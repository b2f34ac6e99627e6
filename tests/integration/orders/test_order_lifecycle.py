"""An order placed through the CLI travels the real stack to COMPLETED: Temporal dev server, real worker,
SQLite, sandbox SMTP/SMS (through aiosmtplib and the twilio SDK) and the sandbox carrier."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from common.api import FulfillmentApi
from common.store import Store
from sandbox import SandboxServers
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")


async def wait_for(cli: Cli, order_id: str, status: str, attempts: int = 120) -> dict:
    view: dict = {}
    for _ in range(attempts):
        result = await asyncio.to_thread(cli, "order", "status", order_id, "--json")
        assert result.returncode == 0, result.stderr
        view = json.loads(result.stdout)
        if view["status"] == status:
            return view
        await asyncio.sleep(0.5)
    raise AssertionError(f"{order_id} stuck in {view.get('status')}: {view.get('timeline')}")


async def confirm_pick_via_cli(cli: Cli, order_id: str) -> str:
    view = await wait_for(cli, order_id, "PICKING")
    picks = json.loads((await asyncio.to_thread(cli, "warehouse", "picks", "--json")).stdout)
    task_id = next(p["id"] for p in picks if p["order_id"] == order_id)
    assert task_id == view["shipments"][0]["pick_task_id"]  # every parcel under "shipments", with its own
    result = await asyncio.to_thread(cli, "warehouse", "confirm", task_id)
    assert result.returncode == 0, result.stderr
    return task_id


async def test_order_placed_through_cli_completes_with_each_message_once(
    cli: Cli, store: Store, sandbox: SandboxServers, api: FulfillmentApi, tmp_path: Path
) -> None:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    before = {(s.sku, s.warehouse): s for s in await store.stock.stock_levels("MUG-RED")}
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(order_dict(order_id, {"MUG-RED": 2})))

    placed = await asyncio.to_thread(cli, "order", "place", str(order_file))
    assert placed.returncode == 0, placed.stderr
    assert order_id in placed.stdout

    reserved = await wait_for(cli, order_id, "PICKING")
    warehouse = reserved["shipments"][0]["warehouse"]
    mid = {(s.sku, s.warehouse): s for s in await store.stock.stock_levels("MUG-RED")}
    assert mid["MUG-RED", warehouse].reserved == before["MUG-RED", warehouse].reserved + 2

    await confirm_pick_via_cli(cli, order_id)
    view = await wait_for(cli, order_id, "COMPLETED")

    assert [e["status"] for e in view["timeline"]] == [
        "RECEIVED",
        "RESERVED",
        "PICKING",
        "PACKED",
        "LABELED",
        "IN_TRANSIT",
        "OUT_FOR_DELIVERY",
        "DELIVERED",
        "COMPLETED",
    ]
    parcel = view["shipments"][0]
    assert parcel["tracking_number"] and parcel["carrier"]

    # The customer's inboxes: each message exactly once, with the tracking number where it matters.
    outbox = json.loads((await asyncio.to_thread(cli, "outbox", "--order", order_id, "--json")).stdout)
    got = sorted((m["channel"], m["recipient"], (m["subject"] or m["body"])[:40]) for m in outbox)
    assert len(outbox) == 7, got
    emails = [m for m in outbox if m["channel"] == "email"]
    sms = [m for m in outbox if m["channel"] == "sms"]
    assert sorted(m["subject"] for m in emails) == sorted(
        [
            f"Order {order_id} confirmed",
            f"Order {order_id} has shipped",
            f"Order {order_id} was delivered",
        ]
    )
    assert all(m["recipient"] == "ada@example.com" and m["html"] for m in emails)
    assert all(m["recipient"] == "+15555550100" for m in sms) and len(sms) == 4
    shipped = next(m for m in emails if "shipped" in m["subject"])
    assert parcel["tracking_number"] in shipped["body"] and parcel["tracking_url"] in shipped["body"]

    # Stock: the two mugs left the warehouse; nothing stays reserved for this order.
    after = {(s.sku, s.warehouse): s for s in await store.stock.stock_levels("MUG-RED")}
    assert after["MUG-RED", warehouse].on_hand == before["MUG-RED", warehouse].on_hand - 2
    assert after["MUG-RED", warehouse].reserved == before["MUG-RED", warehouse].reserved
    # One label bought.
    shipments = await store.labels.for_order(order_id)
    assert [s.status for s in shipments] == ["purchased"]

    # History stays small (issue 6 budget): every event costs the server throughput.
    history = await api.client.get_workflow_handle(f"order-{order_id}").fetch_history()
    counts = Counter(event.WhichOneof("attributes") for event in history.events)
    print(f"history events: {len(history.events)} {dict(counts)}")
    assert len(history.events) <= 60, counts


async def test_placing_the_same_order_twice_starts_nothing_new(cli: Cli, api: FulfillmentApi, tmp_path: Path) -> None:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(order_dict(order_id, {"MUG-BLUE": 1})))
    assert (await asyncio.to_thread(cli, "order", "place", str(order_file))).returncode == 0
    again = await asyncio.to_thread(cli, "order", "place", str(order_file))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    runs = [wf async for wf in api.client.list_workflows(f'WorkflowId = "order-{order_id}"')]
    assert len(runs) == 1


async def test_backordered_order_ships_after_restock_through_cli(cli: Cli, store: Store, api: FulfillmentApi) -> None:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(order_id, {"POSTER-A2": 1}))
    view = await wait_for(cli, order_id, "BACKORDERED")
    assert "POSTER-A2" in view["timeline"][-1]["note"]
    restock = await asyncio.to_thread(cli, "inventory", "receive", "POSTER-A2", "1")
    assert restock.returncode == 0, restock.stderr
    await confirm_pick_via_cli(cli, order_id)
    await wait_for(cli, order_id, "COMPLETED")
    outbox = json.loads((await asyncio.to_thread(cli, "outbox", "--order", order_id, "--json")).stdout)
    delayed = [m for m in outbox if m["channel"] == "email" and "delayed" in (m["subject"] or "")]
    assert len(delayed) == 1
