"""The inventory activities on a real database and a real SMTP server (the sandbox's): allocation with the
ship-to preference, split-shipment activities, and one low-stock email per crossing of the reorder point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.inventory import InventoryActivities
from common.config import Settings
from common.integrations.email import EmailSender
from common.inventory.contracts import ParcelRef
from common.models import OrderLine, ReserveRequest
from common.store import Store
from sandbox.smtp import SandboxSmtpServer
from sandbox.store import SandboxStore
from tests.integration.db_fixtures import BACKENDS, database_url

OPS = "ops@fulfill.example"


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[tuple[SandboxStore, SandboxSmtpServer]]:
    box = SandboxStore(tmp_path / "sandbox.db")
    server = SandboxSmtpServer(box, "127.0.0.1", 0)
    await server.start()
    try:
        yield box, server
    finally:
        await server.stop()
        box.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_url(request.param, tmp_path) as url:
        s = await Store.open(url)
        try:
            await s.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
            await s.catalog.upsert_warehouse("NYC-1", "New York", "US", "NY")
            await s.catalog.upsert_product("MUG-RED", "Red mug", 1200, 350)
            await s.catalog.upsert_product("TEE-M", "T-shirt", 1800, 180)
            await s.stock.receive_stock("MUG-RED", 10, "LDN-1")
            await s.stock.receive_stock("MUG-RED", 30, "NYC-1")
            await s.stock.receive_stock("TEE-M", 2, "LDN-1")
            yield s
        finally:
            await s.close()


def _activities(store: Store, port: int, ops: str = OPS) -> InventoryActivities:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=port, ops_email=ops)
    return InventoryActivities(store, EmailSender(settings, timeout=5), settings)


def _lines(*lines: tuple[str, int]) -> list[OrderLine]:
    return [OrderLine(sku=sku, quantity=qty) for sku, qty in lines]


async def test_reserve_stock_prefers_the_ship_to_region(
    store: Store, outbox: tuple[SandboxStore, SandboxSmtpServer]
) -> None:
    acts = _activities(store, outbox[1].port)
    env = ActivityEnvironment()
    near = await env.run(
        acts.reserve_stock,
        ReserveRequest(order_id="A", lines=_lines(("MUG-RED", 2)), ship_to_country="GB", ship_to_region="LDN"),
    )
    assert (near.reserved, near.warehouse) == (True, "LDN-1")
    anywhere = await env.run(acts.reserve_stock, ReserveRequest(order_id="B", lines=_lines(("MUG-RED", 2))))
    assert anywhere.warehouse == "NYC-1"  # most available
    short = await env.run(acts.reserve_stock, ReserveRequest(order_id="C", lines=_lines(("MUG-RED", 99))))
    assert (short.reserved, short.short) == (False, {"MUG-RED": 63})  # all warehouses together have 8 + 28
    await store.backorders.close_backorder("C")  # C gives up: waiting, it would keep every mug for itself (first come)
    split = await env.run(acts.reserve_stock, ReserveRequest(order_id="D", lines=_lines(("MUG-RED", 30))))
    assert [(p.shipment_no, p.warehouse, p.lines[0].quantity) for p in split.shipments] == [
        (1, "NYC-1", 28),
        (2, "LDN-1", 2),
    ]
    partial = ReserveRequest(order_id="E", lines=_lines(("MUG-RED", 9), ("TEE-M", 1)), allow_partial=True)
    some = await env.run(acts.reserve_stock, partial)
    assert not some.reserved and some.short == {"MUG-RED": 3}  # 6 left in London: those go now
    assert [(x.sku, x.quantity) for x in some.shipments[0].lines] == [("MUG-RED", 6), ("TEE-M", 1)]


async def test_a_split_reserved_by_reserve_stock_commits_parcel_by_parcel(
    store: Store, outbox: tuple[SandboxStore, SandboxSmtpServer]
) -> None:
    acts = _activities(store, outbox[1].port)
    env = ActivityEnvironment()
    request = ReserveRequest(
        order_id="A", lines=_lines(("MUG-RED", 12), ("TEE-M", 1)), ship_to_country="GB", ship_to_region="LDN"
    )
    result = await env.run(acts.reserve_stock, request)
    assert [(p.shipment_no, p.warehouse, [(x.sku, x.quantity) for x in p.lines]) for p in result.shipments] == [
        (1, "LDN-1", [("MUG-RED", 10), ("TEE-M", 1)]),
        (2, "NYC-1", [("MUG-RED", 2)]),
    ]
    assert await env.run(acts.commit_shipment, ParcelRef(order_id="A", shipment_no=2)) == 2
    assert await env.run(acts.commit_shipment, ParcelRef(order_id="A", shipment_no=2)) == 0  # idempotent
    assert await env.run(acts.release_stock, "A") == 11  # what parcel 1 held goes back
    assert {(x.warehouse, x.sku): (x.on_hand, x.reserved) for x in await store.stock.stock_levels()} == {
        ("LDN-1", "MUG-RED"): (10, 0),
        ("LDN-1", "TEE-M"): (2, 0),
        ("NYC-1", "MUG-RED"): (28, 0),
    }


async def test_one_low_stock_email_per_crossing(store: Store, outbox: tuple[SandboxStore, SandboxSmtpServer]) -> None:
    box, server = outbox
    acts = _activities(store, server.port)
    env = ActivityEnvironment()
    await store.stock.set_reorder_point("MUG-RED", "LDN-1", 4)
    outcome = await store.reservations.reserve("A", [("MUG-RED", 6)], prefer_country="GB", prefer_region="LDN")
    assert outcome.low_stock == ["MUG-RED"]

    assert await env.run(acts.alert_low_stock, ["MUG-RED"]) == 1
    [message] = box.messages()
    assert message.recipient == OPS
    assert message.subject == "[ops] Low stock: MUG-RED at LDN-1 (4 available)"
    assert "reorder point of 4" in message.body and "fulfill inventory expect MUG-RED" in message.body
    [crossing] = await store.stock.low_stock_crossings()
    assert message.provider_id == f"<lowstock.MUG-RED.LDN-1.{crossing.id}@fulfill>"
    assert crossing.alerted_at is not None
    [logged] = [n for n in await store.notifications.notifications("inventory")]
    assert (logged.key, logged.status, logged.event) == (f"lowstock:MUG-RED:LDN-1:{crossing.id}", "sent", "low_stock")

    # Retries, further sales below the point, other SKUs: no second email for the same crossing.
    assert await env.run(acts.alert_low_stock, ["MUG-RED"]) == 0
    await store.reservations.reserve("B", [("MUG-RED", 1)], prefer_country="GB", prefer_region="LDN")
    assert await env.run(acts.alert_low_stock, []) == 0
    assert len(box.messages()) == 1

    # Back above the reorder point (re-armed), then down again: a new crossing, a new email.
    await store.reservations.release("A")
    assert await store.stock.low_stock_crossings(open_only=True) == []
    again = await store.reservations.reserve("C", [("MUG-RED", 5)], prefer_country="GB", prefer_region="LDN")
    assert again.low_stock == ["MUG-RED"]
    assert await env.run(acts.alert_low_stock, again.low_stock) == 1
    assert [m.subject for m in box.messages()] == [
        "[ops] Low stock: MUG-RED at LDN-1 (4 available)",
        "[ops] Low stock: MUG-RED at LDN-1 (4 available)",
    ]
    assert len({m.provider_id for m in box.messages()}) == 2


async def test_low_stock_email_failures(store: Store, outbox: tuple[SandboxStore, SandboxSmtpServer]) -> None:
    box, server = outbox
    await store.stock.set_reorder_point("TEE-M", "LDN-1", 2)  # 2 available: crossed at once
    env = ActivityEnvironment()

    # The relay is down: a retryable failure, the crossing stays pending.
    down = _activities(store, 1)
    with pytest.raises(ApplicationError, match="low-stock alert failed") as info:
        await env.run(down.alert_low_stock, ["TEE-M"])
    assert not info.value.non_retryable
    assert len(await store.stock.low_stock_crossings(pending_only=True)) == 1

    # The ops mailbox is refused for good: logged as failed, not retried in a loop, still pending.
    refused = _activities(store, server.port, ops="ops@mailbox.invalid")
    assert await env.run(refused.alert_low_stock, ["TEE-M"]) == 0
    assert [n.status for n in await store.notifications.notifications("inventory")] == ["failed"]
    assert box.messages() == []

    # Fixed: the next run sends it, once.
    fixed = _activities(store, server.port)
    assert await env.run(fixed.alert_low_stock, ["TEE-M"]) == 1
    assert await env.run(fixed.alert_low_stock, ["TEE-M"]) == 0
    assert len(box.messages()) == 1
