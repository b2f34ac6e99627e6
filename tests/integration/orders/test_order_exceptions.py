"""When things go wrong, on the real stack: cancellation at each stage, hold/release, an address the
carrier rejects, and ops requests that must be refused without changing the order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from common.api import FulfillmentApi
from common.cli._base import cli_actor
from common.models import OrderStatus, OrderView
from common.store import Store
from sandbox import SandboxServers
from sandbox.carrier import Progression
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def slow_parcels(sandbox: SandboxServers) -> Iterator[None]:
    """Parcels bought during the test stay pre-transit for an hour (long enough to cancel or hold)."""
    normal = sandbox.carrier.progression
    sandbox.carrier.progression = Progression(3600, 7200, 10800)
    yield
    sandbox.carrier.progression = normal


def new_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:8]}"


async def wait_status(api: FulfillmentApi, order_id: str, status: OrderStatus, attempts: int = 150) -> OrderView:
    view = None
    for _ in range(attempts):
        view = await api.order_status(order_id)
        if view.status == status:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id} never reached {status}: {view}")


async def confirm_pick(api: FulfillmentApi, order_id: str) -> str:
    view = await wait_status(api, order_id, OrderStatus.PICKING)
    assert view.pick_task_id
    await api.confirm_pick(view.pick_task_id)
    return view.pick_task_id


def stock(levels: list[Any]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(s.sku, s.warehouse): (s.on_hand, s.reserved) for s in levels}


def events(sandbox: SandboxServers, order_id: str) -> list[tuple[str, str]]:
    return sorted((m.channel, (m.subject or m.body)[:60]) for m in sandbox.outbox(order_id))


async def run_cli(cli: Cli, *args: str, input: str | None = None) -> Any:
    return await asyncio.to_thread(cli, *args, input=input)


async def test_cancel_while_backordered_closes_the_backorder_and_tells_the_customer_once(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"POSTER-A2": 5}))
    await wait_status(api, order_id, OrderStatus.BACKORDERED)
    assert order_id in await store.backorders.backordered_orders(["POSTER-A2"])

    result = await run_cli(cli, "order", "cancel", order_id, "--reason", "customer changed their mind")
    assert result.returncode == 0, result.stderr
    assert "CANCELLED" in result.stdout

    view = await api.order_status(order_id)
    assert view.status == OrderStatus.CANCELLED
    assert order_id not in await store.backorders.backordered_orders(["POSTER-A2"])
    cancelled = [m for m in sandbox.outbox(order_id) if "cancelled" in (m.subject or m.body)]
    assert sorted(m.channel for m in cancelled) == ["email", "sms"]


async def test_cancel_during_picking_cancels_the_task_and_releases_stock(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    before = stock(await store.stock.stock_levels("TEE-M"))
    await api.place_order(order_dict(order_id, {"TEE-M": 3}))
    view = await wait_status(api, order_id, OrderStatus.PICKING)
    assert stock(await store.stock.stock_levels("TEE-M")) != before  # reserved

    await api.cancel_order(order_id, "duplicate order")

    assert stock(await store.stock.stock_levels("TEE-M")) == before
    task = await store.picks.get(view.pick_task_id or "")
    assert task is not None and task.status == "cancelled"
    # Staff can no longer confirm it: the picker is told not to ship.
    refused = await run_cli(cli, "warehouse", "confirm", task.id)
    assert refused.returncode == 2 and "cancelled" in refused.stderr


@pytest.mark.usefixtures("slow_parcels")
async def test_cancel_after_label_voids_it_with_the_carrier_and_releases_stock(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    order_id = new_id()
    before = stock(await store.stock.stock_levels("MUG-BLUE"))
    await api.place_order(order_dict(order_id, {"MUG-BLUE": 1}))
    await confirm_pick(api, order_id)
    await wait_status(api, order_id, OrderStatus.LABELED)

    view = await api.cancel_order(order_id, "customer called")

    assert view.status == OrderStatus.CANCELLED
    assert any("label voided" in e.note for e in view.timeline)
    [shipment] = [s for s in sandbox.shipments() if s["reference"] == f"label:{order_id}:1"]
    assert shipment["refund_status"] in ("submitted", "refunded")
    assert [s.status for s in await store.labels.for_order(order_id)] == ["voided"]
    assert stock(await store.stock.stock_levels("MUG-BLUE")) == before
    subjects = [m.subject for m in sandbox.outbox(order_id) if m.channel == "email"]
    assert subjects.count(f"Order {order_id} was cancelled") == 1


async def test_cancel_once_shipped_is_refused_and_changes_nothing(
    api: FulfillmentApi, sandbox: SandboxServers, cli: Cli
) -> None:
    sandbox.carrier.progression = Progression(0.2, 3600, 7200)
    try:
        order_id = new_id()
        await api.place_order(order_dict(order_id, {"MUG-BLUE": 1}))
        await confirm_pick(api, order_id)
        before = await wait_status(api, order_id, OrderStatus.IN_TRANSIT)
    finally:
        sandbox.carrier.progression = Progression(1.0, 2.0, 3.0)

    result = await run_cli(cli, "order", "cancel", order_id, "--reason", "too late")
    assert result.returncode == 2
    assert "already shipped: request a return" in result.stderr
    hold = await run_cli(cli, "order", "hold", order_id, "--reason", "too late")
    assert hold.returncode == 2 and "already shipped" in hold.stderr
    after = await api.order_status(order_id)
    assert after.status == OrderStatus.IN_TRANSIT and len(after.timeline) == len(before.timeline)


async def test_hold_stops_the_order_and_release_resumes_it(api: FulfillmentApi, cli: Cli) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"BOOK-ADA": 1}))
    await wait_status(api, order_id, OrderStatus.PICKING)

    held = await run_cli(cli, "order", "hold", order_id, "--reason", "fraud check")
    assert held.returncode == 0, held.stderr
    view = await api.order_status(order_id)
    assert view.status == OrderStatus.ON_HOLD and "fraud check" in view.timeline[-1].note
    assert (await run_cli(cli, "order", "hold", order_id, "--reason", "again")).returncode == 2

    # The pick is confirmed while on hold: the order still does not move.
    assert view.pick_task_id
    await api.confirm_pick(view.pick_task_id)
    await asyncio.sleep(1)
    assert (await api.order_status(order_id)).status == OrderStatus.ON_HOLD

    released = await run_cli(cli, "order", "release", order_id)
    assert released.returncode == 0, released.stderr
    view = await wait_status(api, order_id, OrderStatus.COMPLETED)
    entries = [e.status.value for e in view.timeline]
    statuses = [s for i, s in enumerate(entries) if i == 0 or s != entries[i - 1]]  # its changes of status
    assert statuses[:6] == ["RECEIVED", "RESERVED", "PICKING", "ON_HOLD", "PICKING", "PACKED"]
    notes = [e.note for e in view.timeline]
    assert f"hold requested: fraud check (by {cli_actor()})" in notes  # who asked: the CLI's user
    assert f"release requested (by {cli_actor()})" in notes

    not_held = await run_cli(cli, "order", "release", order_id)
    assert not_held.returncode == 2 and "is closed (COMPLETED)" in not_held.stderr


async def test_release_of_an_order_not_on_hold_is_refused(api: FulfillmentApi, cli: Cli) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"BOOK-ADA": 1}))
    before = await wait_status(api, order_id, OrderStatus.PICKING)
    result = await run_cli(cli, "order", "release", order_id)
    assert result.returncode == 2
    assert "is not on hold" in result.stderr
    assert len((await api.order_status(order_id)).timeline) == len(before.timeline)
    await api.cancel_order(order_id, "test cleanup")


async def test_rejected_address_waits_for_ops_and_a_valid_update_continues(
    api: FulfillmentApi, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    data = order_dict(order_id, {"MUG-RED": 1})
    data["ship_to"]["line1"] = "1 INVALID Road"
    await api.place_order(data)
    await confirm_pick(api, order_id)
    view = await wait_status(api, order_id, OrderStatus.ADDRESS_INVALID)
    assert view.waiting_for == "ops to send update_address"

    bad = dict(data["ship_to"], line1="2 Good Road", country="Britain")
    refused = await run_cli(cli, "order", "update-address", order_id, "-", input=json.dumps(bad))
    assert refused.returncode == 2
    assert "ship_to.country" in refused.stderr
    assert (await api.order_status(order_id)).status == OrderStatus.ADDRESS_INVALID

    good = dict(data["ship_to"], line1="2 Good Road")
    fixed = await run_cli(cli, "order", "update-address", order_id, "-", input=json.dumps(good))
    assert fixed.returncode == 0, fixed.stderr
    view = await wait_status(api, order_id, OrderStatus.COMPLETED)
    assert "ADDRESS_INVALID" in [e.status.value for e in view.timeline]
    problems = [m for m in sandbox.outbox(order_id) if m.channel == "email" and "address" in (m.subject or "")]
    assert len(problems) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["order", "cancel", "ORD-NEVER-PLACED", "--reason", "x"], "no order"),
        (["order", "hold", "ORD-NEVER-PLACED", "--reason", "x"], "no order"),
        (["order", "release", "ORD-NEVER-PLACED"], "no order"),
    ],
)
async def test_requests_for_unknown_orders_are_refused(cli: Cli, args: list[str], expected: str) -> None:
    result = await run_cli(cli, *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


async def test_cancel_of_a_completed_order_is_refused(api: FulfillmentApi, cli: Cli) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"TEE-L": 1}))
    await confirm_pick(api, order_id)
    await wait_status(api, order_id, OrderStatus.COMPLETED)
    result = await run_cli(cli, "order", "cancel", order_id, "--reason", "late")
    assert result.returncode == 2
    assert "closed" in result.stderr
    assert (await api.order_status(order_id)).status == OrderStatus.COMPLETED


async def test_blank_reason_is_refused(api: FulfillmentApi, cli: Cli) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"TEE-L": 1}))
    await wait_status(api, order_id, OrderStatus.PICKING)
    result = await run_cli(cli, "order", "hold", order_id, "--reason", "   ")
    assert result.returncode == 2
    assert "reason" in result.stderr
    assert (await api.order_status(order_id)).status == OrderStatus.PICKING
    await api.cancel_order(order_id, "test cleanup")


@pytest.mark.usefixtures("slow_parcels")
async def test_carrier_failure_parks_the_order_for_ops_and_refund_closes_it(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    before = stock(await store.stock.stock_levels("MUG-RED"))
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    await confirm_pick(api, order_id)
    view = await wait_status(api, order_id, OrderStatus.LABELED)
    sandbox.force_tracker_status(view.tracking_number or "", "in_transit")
    await wait_status(api, order_id, OrderStatus.IN_TRANSIT)
    sandbox.force_tracker_status(view.tracking_number or "", "failure", message="parcel damaged in depot")
    view = await wait_status(api, order_id, OrderStatus.DELIVERY_EXCEPTION)
    assert "parcel damaged in depot" in view.timeline[-1].note

    # Customer and ops both hear about it, once.
    problem = [m for m in sandbox.outbox(order_id) if "delivery problem" in (m.subject or "")]
    ops = [m for m in sandbox.outbox(order_id) if m.recipient == "ops@fulfill.example"]
    assert len(problem) == 1 and len(ops) == 1

    bogus = await run_cli(cli, "order", "resolve", order_id, "--action", "shrug")
    assert bogus.returncode == 2

    refund = await run_cli(cli, "order", "resolve", order_id, "--action", "refund", "--note", "lost")
    assert refund.returncode == 0, refund.stderr
    view = await wait_status(api, order_id, OrderStatus.COMPLETED)
    assert [e.status.value for e in view.timeline][-2:] == ["REFUNDED", "COMPLETED"]
    # The parcel is gone: stock is committed, nothing left reserved.
    after = stock(await store.stock.stock_levels("MUG-RED"))
    warehouse = view.warehouse or ""
    assert after["MUG-RED", warehouse] == (before["MUG-RED", warehouse][0] - 1, before["MUG-RED", warehouse][1])


@pytest.mark.usefixtures("slow_parcels")
async def test_lost_parcel_is_reshipped_as_a_new_parcel_with_its_own_label(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    before = stock(await store.stock.stock_levels("MUG-RED"))
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    first_task = await confirm_pick(api, order_id)
    lost = await wait_status(api, order_id, OrderStatus.LABELED)
    sandbox.force_tracker_status(lost.tracking_number or "", "in_transit")
    await wait_status(api, order_id, OrderStatus.IN_TRANSIT)
    sandbox.force_tracker_status(lost.tracking_number or "", "return_to_sender", message="address unreachable")
    await wait_status(api, order_id, OrderStatus.DELIVERY_EXCEPTION)

    reship = await run_cli(cli, "order", "resolve", order_id, "--action", "reship", "--note", "lost in depot")
    assert reship.returncode == 0, reship.stderr
    second_task = await confirm_pick(api, order_id)  # the goods are reserved and picked again
    assert second_task != first_task
    view = await wait_status(api, order_id, OrderStatus.LABELED)
    assert [(p.shipment_no, p.outcome) for p in view.shipments] == [(1, "reshipped"), (2, None)]
    assert view.tracking_number and view.tracking_number != lost.tracking_number
    sandbox.force_tracker_status(view.tracking_number, "in_transit")  # its first scan: "shipped", with tracking
    await wait_status(api, order_id, OrderStatus.IN_TRANSIT)
    sandbox.force_tracker_status(view.tracking_number, "delivered")
    view = await wait_status(api, order_id, OrderStatus.COMPLETED)
    assert view.shipments[1].status == OrderStatus.DELIVERED

    # Two units left the building (the lost one and its replacement); nothing stays reserved.
    after = stock(await store.stock.stock_levels("MUG-RED"))
    warehouse = view.warehouse or ""
    assert after["MUG-RED", warehouse] == (before["MUG-RED", warehouse][0] - 2, before["MUG-RED", warehouse][1])
    labels = [s for s in await store.labels.for_order(order_id) if s.status != "voided"]
    assert len(labels) == 2
    subjects = [m.subject for m in sandbox.outbox(order_id) if m.channel == "email"]
    assert subjects.count(f"Order {order_id}: we are sending it again") == 1
    # one per parcel, each with its tracking; the replacement's names its parcel (the lost one's went alone)
    assert sorted(s or "" for s in subjects if (s or "").startswith(f"Order {order_id} has shipped")) == [
        f"Order {order_id} has shipped",
        f"Order {order_id} has shipped (parcel 2: MUG-RED x1)",
    ]


async def test_resolve_without_an_exception_is_refused(api: FulfillmentApi, cli: Cli) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"TEE-L": 1}))
    await wait_status(api, order_id, OrderStatus.PICKING)
    result = await run_cli(cli, "order", "resolve", order_id, "--action", "refund")
    assert result.returncode == 2
    assert "no delivery exception to resolve" in result.stderr
    assert (await api.order_status(order_id)).status == OrderStatus.PICKING
    await api.cancel_order(order_id, "test cleanup")
