"""Parcels on the real stack: a split over two warehouses, the ship-what-is-there policy, restocks that wake
backorders first come first served, a short pick, and a stock count that takes a reservation away.

Each test makes its own SKU so that the stock it checks is its own (the session shares one database)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.shipping import ShippingActivities
from common.api import FulfillmentApi
from common.config import Settings
from common.integrations.carrier import CarrierClient
from common.models import LabelRequest, Order, OrderLine, OrderStatus, OrderView, PartialShipment
from common.store import Store
from sandbox import SandboxServers
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")


async def new_sku(store: Store, stock: dict[str, int]) -> str:
    sku = f"LAMP-{uuid.uuid4().hex[:6].upper()}"
    await store.catalog.upsert_product(sku, "Desk lamp", 3900, 900)
    for warehouse, units in stock.items():
        if units:
            await store.stock.receive_stock(sku, units, warehouse, note="test stock")
    return sku


def new_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:8]}"


async def wait_for(api: FulfillmentApi, order_id: str, check: object, attempts: int = 150) -> OrderView:
    """Poll the order until `check(view)` (a status, or a predicate) holds."""
    view = None
    for _ in range(attempts):
        view = await api.order_status(order_id)
        if check(view) if callable(check) else view.status == check:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id} never got there: {view}")


async def confirm_open_picks(api: FulfillmentApi, store: Store, order_id: str, count: int) -> list[str]:
    """Confirm `count` pick tasks of the order as they appear."""
    confirmed: list[str] = []
    for _ in range(150):
        for task in await store.picks.for_order(order_id):
            if task.status == "open" and task.id not in confirmed:
                await api.confirm_pick(task.id)
                confirmed.append(task.id)
        if len(confirmed) >= count:
            return confirmed
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id}: only {confirmed} of {count} pick tasks appeared")


async def levels(store: Store, sku: str) -> dict[str, tuple[int, int]]:
    return {s.warehouse: (s.on_hand, s.reserved) for s in await store.stock.stock_levels(sku)}


async def run_cli(cli: Cli, *args: str) -> object:
    return await asyncio.to_thread(cli, *args)


async def test_order_no_warehouse_covers_ships_as_two_parcels_each_tracked_and_told(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    sku = await new_sku(store, {"LDN-1": 2, "NYC-1": 2})
    order_id = new_id()
    await api.place_order(order_dict(order_id, {sku: 3}))
    await confirm_open_picks(api, store, order_id, 2)
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)

    # The ship-to region's warehouse gives what it has; the rest comes from the other one.
    assert [(p.shipment_no, p.warehouse, [(li.sku, li.quantity) for li in p.lines]) for p in view.shipments] == [
        (1, "LDN-1", [(sku, 2)]),
        (2, "NYC-1", [(sku, 1)]),
    ]
    assert all(p.status == OrderStatus.DELIVERED for p in view.shipments)
    assert len({p.tracking_number for p in view.shipments}) == 2
    assert any(e.note.startswith("shipment 2: ") for e in view.timeline)
    assert await levels(store, sku) == {"LDN-1": (0, 0), "NYC-1": (1, 0)}

    # One confirmation; a "shipped" and a "delivered" message per parcel, naming the parcel.
    emails = [m.subject or "" for m in sandbox.outbox(order_id) if m.channel == "email"]
    assert emails.count(f"Order {order_id} confirmed") == 1
    # each parcel's emails with a subject of their own
    assert sorted(s for s in emails if s.startswith(f"Order {order_id} has shipped")) == [
        f"Order {order_id} has shipped (parcel 1: {sku} x2)",
        f"Order {order_id} has shipped (parcel 2: {sku} x1)",
    ]
    assert len({s for s in emails if s.startswith(f"Order {order_id} was delivered (parcel ")}) == 2
    shipped = [m.body for m in sandbox.outbox(order_id) if m.channel == "sms" and "on its way" in m.body]
    assert sorted(b.split("(parcel ")[1][:1] for b in shipped) == ["1", "2"]
    assert len({(s.key, s.status) for s in await store.labels.for_order(order_id)}) == 2


async def test_ship_available_policy_sends_what_is_in_stock_and_the_rest_after_a_restock(
    dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store, sandbox: SandboxServers, cli: Cli
) -> None:
    settings: Settings = stack_settings.model_copy(update={"partial_shipment": PartialShipment.SHIP_AVAILABLE})
    api = FulfillmentApi(dev_server.client, store, settings)
    in_stock = await new_sku(store, {"LDN-1": 5})
    missing = await new_sku(store, {})
    order_id = new_id()
    await api.place_order(order_dict(order_id, {in_stock: 2, missing: 1}))

    await confirm_open_picks(api, store, order_id, 1)
    view = await wait_for(api, order_id, lambda v: v.shipments and v.shipments[0].status == OrderStatus.DELIVERED)
    assert view.status == OrderStatus.BACKORDERED  # the rest still waits
    assert [(li.sku, li.quantity) for li in view.backordered] == [(missing, 1)]
    emails = [m.subject or "" for m in sandbox.outbox(order_id) if m.channel == "email"]
    assert emails.count(f"Order {order_id} ships in parts") == 1
    assert f"Order {order_id} is delayed" not in emails  # one delay message, not two

    result = await run_cli(cli, "inventory", "receive", missing, "1", "--warehouse", "NYC-1")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    await confirm_open_picks(api, store, order_id, 1)
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)
    assert [(p.warehouse, p.status) for p in view.shipments] == [
        ("LDN-1", OrderStatus.DELIVERED),
        ("NYC-1", OrderStatus.DELIVERED),
    ]
    assert await levels(store, in_stock) == {"LDN-1": (3, 0)}
    assert await levels(store, missing) == {"NYC-1": (0, 0)}


async def test_restock_wakes_backorders_first_come_and_only_as_many_as_it_covers(
    api: FulfillmentApi, store: Store, cli: Cli
) -> None:
    sku = await new_sku(store, {})
    first, second, third = new_id(), new_id(), new_id()
    for order_id, units in ((first, 2), (second, 2), (third, 1)):
        await api.place_order(order_dict(order_id, {sku: units}))
        await wait_for(api, order_id, OrderStatus.BACKORDERED)

    # 3 units: the first order takes 2; the second needs 2 and only 1 is left, so it keeps its place and the
    # third, younger order does not jump the queue.
    result = await run_cli(cli, "inventory", "receive", sku, "3", "--warehouse", "LDN-1")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    await wait_for(api, first, OrderStatus.PICKING)
    await asyncio.sleep(1.5)
    assert (await api.order_status(second)).status == OrderStatus.BACKORDERED
    assert (await api.order_status(third)).status == OrderStatus.BACKORDERED
    assert await store.backorders.backordered_orders([sku]) == [second, third]
    assert await levels(store, sku) == {"LDN-1": (3, 2)}

    await run_cli(cli, "inventory", "receive", sku, "2", "--warehouse", "LDN-1")
    await wait_for(api, second, OrderStatus.PICKING)
    await wait_for(api, third, OrderStatus.PICKING)
    assert await levels(store, sku) == {"LDN-1": (5, 5)}
    for order_id in (first, second, third):
        await api.cancel_order(order_id, "test cleanup")
    assert await levels(store, sku) == {"LDN-1": (5, 0)}


async def test_short_pick_corrects_stock_and_ships_the_missing_unit_as_a_second_parcel(
    api: FulfillmentApi, store: Store, cli: Cli
) -> None:
    sku = await new_sku(store, {"LDN-1": 3})
    order_id = new_id()
    await api.place_order(order_dict(order_id, {sku: 2}))
    view = await wait_for(api, order_id, OrderStatus.PICKING)
    task = view.pick_task_id or ""

    # Bad input first: nothing changes.
    for bad, message in (
        ("NOPE=1", "has no line for NOPE"),
        (f"{sku}=3", "must be between 1 and the 2 to pick"),
        (f"{sku}=two", "expected SKU=N"),
    ):
        result = await run_cli(cli, "warehouse", "confirm", task, "--short", bad)
        assert result.returncode == 2 and message in result.stderr, result.stderr  # type: ignore[attr-defined]
    assert await levels(store, sku) == {"LDN-1": (3, 2)}

    result = await run_cli(cli, "warehouse", "confirm", task, "--short", f"{sku}=1")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert "confirmed short" in result.stdout  # type: ignore[attr-defined]
    # The shelf had one unit fewer than the books: a recorded discrepancy naming the pick task.
    [entry] = [e for e in await store.stock.stock_history(sku) if e.kind == "adjustment"]
    assert (entry.delta_on_hand, entry.ref) == (-1, task) and "short pick" in entry.note

    await confirm_open_picks(api, store, order_id, 1)  # the missing unit, re-reserved and picked again
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)
    assert [[(li.sku, li.quantity) for li in p.lines] for p in view.shipments] == [[(sku, 1)], [(sku, 1)]]
    assert await levels(store, sku) == {"LDN-1": (0, 0)}


async def test_count_below_reservations_sends_an_unpicked_order_back_to_backordered(
    api: FulfillmentApi, store: Store, cli: Cli
) -> None:
    sku = await new_sku(store, {"LDN-1": 2})
    order_id = new_id()
    await api.place_order(order_dict(order_id, {sku: 2}))
    first = await wait_for(api, order_id, OrderStatus.PICKING)

    result = await run_cli(
        cli, "inventory", "count", sku, "--warehouse", "LDN-1", "--counted", "0", "--reason", "flood"
    )
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    view = await wait_for(api, order_id, OrderStatus.BACKORDERED)
    assert view.shipments[0].outcome and "released by a count" in view.shipments[0].outcome
    [task] = await store.picks.for_order(order_id)
    assert task.status == "cancelled"  # staff are not sent for goods that are not there

    await run_cli(cli, "inventory", "receive", sku, "2", "--warehouse", "LDN-1")
    await confirm_open_picks(api, store, order_id, 1)
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)
    assert view.shipments[-1].pick_task_id != first.pick_task_id
    assert await levels(store, sku) == {"LDN-1": (0, 0)}


async def test_two_attempts_at_one_label_buy_it_once_and_both_get_it(
    stack_settings: Settings, store: Store, sandbox: SandboxServers
) -> None:
    """Two attempts at the same label at once (a retry racing a slow first try): each creates a carrier
    shipment, the first recorded under the business key wins, and only that one is bought; both attempts
    return its label."""
    sku = await new_sku(store, {"LDN-1": 1})
    order_id = new_id()
    order = Order.model_validate(order_dict(order_id, {sku: 1}))
    request = LabelRequest(
        order_id=order_id,
        shipment_no=1,
        warehouse="LDN-1",
        ship_to=order.ship_to,
        lines=order.lines,
        speed=order.shipping_speed,
    )
    carrier = CarrierClient(stack_settings)
    # Both creations are slow, so each attempt finds no shipment recorded yet and creates its own.
    sandbox.inject_fault("create_shipment", fail_next=2, status=None, delay=0.3)
    try:
        shipping = ShippingActivities(store, carrier)
        env = ActivityEnvironment()
        first, second = await asyncio.gather(env.run(shipping.buy_label, request), env.run(shipping.buy_label, request))
    finally:
        await carrier.close()

    # The same label (the note on why that rate is each attempt's own: one may have found it bought)
    assert first.model_dump(exclude={"choice"}) == second.model_dump(exclude={"choice"})
    created = [s for s in sandbox.shipments() if s["reference"] == f"label:{order_id}:1"]
    assert len(created) == 2  # both attempts reached the carrier
    bought = [s for s in created if s["postage_label"]]
    assert [s["tracking_code"] for s in bought] == [first.tracking_number]
    (record,) = await store.labels.for_order(order_id)
    assert (record.status, record.carrier_shipment_id) == ("purchased", bought[0]["id"])


async def test_a_warehouse_added_while_the_worker_runs_gets_its_labels_at_once(
    stack_settings: Settings, store: Store
) -> None:
    """The worker keeps the catalogue a minute; a warehouse (or product) it has not seen yet is read at once."""
    carrier = CarrierClient(stack_settings)
    try:
        shipping = ShippingActivities(store, carrier)
        env = ActivityEnvironment()
        first = await new_sku(store, {"LDN-1": 1})
        order = Order.model_validate(order_dict(new_id(), {first: 1}))
        request = LabelRequest(
            order_id=order.order_id,
            shipment_no=1,
            warehouse="LDN-1",
            ship_to=order.ship_to,
            lines=order.lines,
            speed=order.shipping_speed,
        )
        await env.run(shipping.buy_label, request)  # the catalogue is cached now
        code = f"NEW-{uuid.uuid4().hex[:4].upper()}"
        await store.catalog.upsert_warehouse(code, "Opened today", "GB", "LDN")
        second = await new_sku(store, {code: 1})
        later = request.model_copy(
            update={"order_id": new_id(), "warehouse": code, "lines": [OrderLine(sku=second, quantity=1)]}
        )
        label = await env.run(shipping.buy_label, later)
    finally:
        await carrier.close()
    assert label.tracking_number
