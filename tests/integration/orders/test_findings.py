"""The failure-handling review's findings on the real stack: the dev server, the real worker, the sandbox
servers put into outages (as `fulfill dev outage` does), the database, and the sweeper. The workflow-level
scenarios of each finding are in tests/workflows/orders/test_findings.py; these are the ones a user meets end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.shipping import label_key, undo_label
from common.api import FulfillmentApi
from common.config import Settings
from common.demo import seed_demo
from common.integrations.carrier import CarrierClient
from common.models import Address, OrderStatus, OrderView, workflow_id_for
from common.shipping.contracts import LabelUndo
from common.store import Store
from common.temporal import PICK_OVERDUE
from sandbox import SandboxServers
from sandbox.carrier import Progression
from tests.integration.conftest import Cli
from tests.integration.db_fixtures import postgres_schema
from tests.integration.worker_process import TcpGate
from tests.orders import order_dict
from workers import reconciler
from workers.reconciler import ClosedOrderSweeper
from workers.worker import running_worker

pytestmark = pytest.mark.usefixtures("worker")


def new_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:8]}"


async def wait_for(
    api: FulfillmentApi, order_id: str, check: OrderStatus | Callable[[OrderView], bool], within: float = 60
) -> OrderView:
    deadline = time.monotonic() + within
    view = None
    while time.monotonic() < deadline:
        view = await api.order_status(order_id)
        if check(view) if callable(check) else view.status == check:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id} never got there: {view}")


async def picked(api: FulfillmentApi, order_id: str) -> OrderView:
    view = await wait_for(api, order_id, OrderStatus.PICKING)
    assert view.pick_task_id
    await api.confirm_pick(view.pick_task_id)
    return view


def held(levels: list[Any], warehouse: str) -> tuple[int, int]:
    [level] = [x for x in levels if x.warehouse == warehouse]
    return level.on_hand, level.reserved


async def new_sku(store: Store, units: int = 5) -> str:
    sku = f"KETTLE-{uuid.uuid4().hex[:6].upper()}"
    await store.catalog.upsert_product(sku, "Kettle", 2900, 1200)
    await store.stock.receive_stock(sku, units, "LDN-1", note="test stock")
    return sku


@pytest.fixture
def slow_parcels(sandbox: SandboxServers) -> Iterator[None]:
    """Parcels bought meanwhile stay pre-transit for an hour, unless a test moves them."""
    normal = sandbox.carrier.progression
    sandbox.carrier.progression = Progression(3600, 7200, 10800)
    yield
    sandbox.carrier.progression = normal


# ------------------------------------------------------------------------- 1: outages never fail an order


async def test_finding_1_an_smtp_outage_holds_no_order_up_and_every_email_goes_out_once_when_it_is_back(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    order_id = new_id()
    sandbox.start_outage("smtp")
    try:
        await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
        await picked(api, order_id)  # the order goes on although its confirmation email cannot go out
        delivered = await wait_for(api, order_id, lambda v: v.status in (OrderStatus.DELIVERED, OrderStatus.COMPLETED))
        emails_meanwhile = [m for m in sandbox.outbox(order_id) if m.channel == "email"]
        sms_meanwhile = [m for m in sandbox.outbox(order_id) if m.channel == "sms"]
    finally:
        sandbox.end_outage("smtp")
    handle = api.client.get_workflow_handle(workflow_id_for(order_id))
    await asyncio.wait_for(handle.result(), 120)  # closes once its queued emails went out

    assert delivered.messages_waiting >= 1 and emails_meanwhile == []
    assert len(sms_meanwhile) >= 3  # the SMS channel was fine all along
    emails = Counter(m.subject for m in sandbox.outbox(order_id) if m.channel == "email")
    assert emails == Counter(
        {
            f"Order {order_id} confirmed": 1,
            f"Order {order_id} has shipped": 1,
            f"Order {order_id} was delivered": 1,
        }
    )


async def test_finding_1_a_carrier_outage_shows_what_the_order_waits_for_and_it_ships_when_the_carrier_is_back(
    api: FulfillmentApi, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    await wait_for(api, order_id, OrderStatus.PICKING)
    sandbox.start_outage("carrier")
    try:
        await picked(api, order_id)
        waiting = await wait_for(api, order_id, lambda v: bool(v.provider_waits), within=90)
        shown = await asyncio.to_thread(cli, "order", "status", order_id)
    finally:
        sandbox.end_outage("carrier")
    view = await wait_for(api, order_id, OrderStatus.COMPLETED, within=120)

    assert waiting.status == OrderStatus.PACKED and waiting.provider_waits[0].provider == "carrier"
    assert shown.returncode == 0 and "the carrier is not answering" in shown.stdout
    assert view.provider_waits == [] and view.tracking_number


@pytest.mark.postgres
async def test_finding_1_a_database_outage_leaves_the_order_waiting_and_it_carries_on_when_the_database_is_back(
    dev_server: WorkflowEnvironment, stack_settings: Settings, sandbox: SandboxServers
) -> None:
    """PostgreSQL fails over under the worker: its connections are cut and new ones refused for a while."""
    async with postgres_schema() as url, TcpGate("127.0.0.1", make_url(url).port or 5432) as gate:
        direct = await Store.open(url)  # ops' tools, on the database itself
        await seed_demo(direct)
        gated = await Store.open(make_url(url).set(port=gate.port).render_as_string(hide_password=False))
        settings = stack_settings.model_copy(
            update={"database_url": url, "task_queue": f"db-outage-{uuid.uuid4().hex[:6]}", "sweep_interval": 0}
        )
        api = FulfillmentApi(dev_server.client, direct, settings)
        try:
            async with running_worker(dev_server.client, settings, gated):
                order_id = new_id()
                await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
                await wait_for(api, order_id, OrderStatus.PICKING)
                await gate.fail()  # the worker loses the database as the pick is confirmed
                await picked(api, order_id)
                waiting = await wait_for(api, order_id, lambda v: bool(v.provider_waits), within=90)
                await asyncio.sleep(3)
                still = await api.order_status(order_id)
                gate.recover()
                done = await wait_for(api, order_id, OrderStatus.COMPLETED, within=120)
            labels = await direct.labels.for_order(order_id)
            commits = [e for e in await direct.stock.ledger("MUG-RED") if e.kind == "commit" and e.ref == order_id]
        finally:
            await gated.close()
            await direct.close()

    assert waiting.provider_waits[0].provider == "database" and "the database" in (waiting.waiting_for or "")
    assert still.status == OrderStatus.PACKED  # waiting, not failed, not undone
    assert done.provider_waits == [] and [r.status for r in labels] == ["purchased"]
    assert [e.delta_on_hand for e in commits] == [-1]  # committed once


async def test_finding_1_a_failed_order_closed_failed_can_be_placed_again_under_its_id(
    dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings, sandbox: SandboxServers, cli: Cli
) -> None:
    # Ops have a minute to retry; the carrier refuses the label for good (not an outage, not the address).
    quick = FulfillmentApi(dev_server.client, store, stack_settings.model_copy(update={"failed_wait": 3.0}))
    order_id = new_id()
    sku = await new_sku(store)
    sandbox.inject_fault("create_shipment", fail_next=1, status=422, code="SHIPMENT.INVALID", message="bad parcel")
    await quick.place_order(order_dict(order_id, {sku: 1}))
    await picked(quick, order_id)
    handle = quick.client.get_workflow_handle(workflow_id_for(order_id))
    await asyncio.wait_for(_closed(handle), 60)
    failed = await quick.order_status(order_id)  # the final view, from the failure's details
    levels = await store.stock.stock_levels(sku)

    again = await asyncio.to_thread(cli, "order", "place", "-", input=json.dumps(order_dict(order_id, {sku: 1})))
    await picked(quick, order_id)
    done = await wait_for(quick, order_id, OrderStatus.COMPLETED)

    assert failed.status == OrderStatus.FAILED and "bad parcel" in " ".join(e.note for e in failed.timeline)
    assert held(levels, "LDN-1") == (5, 0)  # given back
    assert again.returncode == 0, again.stderr
    assert done.status == OrderStatus.COMPLETED


async def test_finding_1_retry_from_the_cli_resumes_a_failed_order(
    api: FulfillmentApi, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    sandbox.inject_fault("create_shipment", fail_next=1, status=422, code="SHIPMENT.INVALID", message="bad parcel")
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    await picked(api, order_id)
    failed = await wait_for(api, order_id, OrderStatus.FAILED)
    listed = await asyncio.to_thread(cli, "order", "list", "--status", "FAILED", "--json")
    retried = await asyncio.to_thread(cli, "order", "retry", order_id, "--note", "parcel data fixed")
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)

    assert failed.waiting_for and "fulfill order retry" in failed.waiting_for
    assert order_id in listed.stdout
    assert retried.returncode == 0, retried.stderr
    assert "retried by ops: parcel data fixed" in " ".join(e.note for e in view.timeline)
    refused = await asyncio.to_thread(cli, "order", "retry", order_id)
    assert refused.returncode == 2 and "closed" in refused.stderr


# ---------------------------------------------------------- 2, 8: the carrier is asked before undoing a label


@pytest.mark.usefixtures("slow_parcels")
async def test_finding_2_a_label_the_carrier_has_is_not_voided_and_stays_purchased(
    store: Store, sandbox: SandboxServers, stack_settings: Settings, api: FulfillmentApi
) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    await picked(api, order_id)
    view = await wait_for(api, order_id, OrderStatus.LABELED)
    sandbox.force_tracker_status(view.tracking_number or "", "in_transit")  # scanned; the order has not polled yet
    carrier = CarrierClient(stack_settings)
    try:
        undo = await undo_label(store, carrier, label_key(order_id, 1))
    finally:
        await carrier.close()
    [record] = await store.labels.for_order(order_id)

    assert undo.outcome == LabelUndo.IN_USE
    assert record.status == "purchased"
    [shipment] = [s for s in sandbox.shipments() if s["reference"] == label_key(order_id, 1)]
    assert shipment["refund_status"] is None  # not even asked for a refund


async def test_finding_8_a_label_bought_by_an_interrupted_purchase_is_found_and_refunded(
    store: Store, sandbox: SandboxServers, stack_settings: Settings
) -> None:
    """The worker died after the carrier sold the label and before it was recorded: the record says
    "created", and undoing it must still find the label and get the money back."""
    order_id = new_id()
    key = label_key(order_id, 1)
    carrier = CarrierClient(stack_settings)
    try:
        address = Address.model_validate(order_dict(order_id)["ship_to"])
        created = await carrier.create_shipment(
            reference=key,
            to_address=address,
            from_address={"street1": "1 Dock", "city": "London", "zip": "E1", "country": "GB", "name": "LDN-1"},
            parcel={"weight": 10.0},
        )
        await store.labels.record_carrier_shipment(key, order_id, created.id)
        await carrier.buy(created.id, created.rates[0].id)  # ... and then the worker died
        undo = await undo_label(store, carrier, key)
    finally:
        await carrier.close()
    [record] = await store.labels.for_order(order_id)

    assert undo.outcome == LabelUndo.VOIDED and record.status == "voided"
    [shipment] = [s for s in sandbox.shipments() if s["reference"] == key]
    assert shipment["refund_status"] in ("submitted", "refunded")


# ------------------------------------------------------------------------ 3: refunds move money for real


async def test_finding_3_resolve_refund_pays_the_parcel_back_through_the_payments_gateway(
    api: FulfillmentApi, sandbox: SandboxServers, cli: Cli
) -> None:
    order_id = new_id()
    order = order_dict(order_id, {"MUG-BLUE": 2})
    await api.place_order(order)
    await picked(api, order_id)
    labelled = await wait_for(api, order_id, OrderStatus.LABELED)
    sandbox.force_tracker_status(labelled.tracking_number or "", "in_transit")
    await wait_for(api, order_id, OrderStatus.IN_TRANSIT)
    sandbox.force_tracker_status(labelled.tracking_number or "", "return_to_sender", message="address unreachable")
    await wait_for(api, order_id, OrderStatus.DELIVERY_EXCEPTION)

    result = await asyncio.to_thread(cli, "order", "resolve", order_id, "--action", "refund", "--note", "lost")
    assert result.returncode == 0, (result.stdout, result.stderr)
    view = await wait_for(api, order_id, OrderStatus.COMPLETED)

    [refund] = sandbox.refunds(order["payment"]["reference"])
    assert refund["amount"] == 2 * 1250 and refund["status"] == "succeeded"  # the price paid, 2 x 12.50
    assert any(refund["id"] in e.note for e in view.timeline)
    [email] = [m for m in sandbox.outbox(order_id) if m.channel == "email" and "refund issued" in (m.subject or "")]
    assert "25.00 USD" in email.body and "MUG-BLUE x2" in email.body


# ------------------------------------------------------------------------------ 10: terminate is swept up


@pytest.mark.usefixtures("slow_parcels")
async def test_finding_10_what_terminated_orders_hold_is_given_back_by_the_sweeper(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, stack_settings: Settings
) -> None:
    sku = await new_sku(store, units=6)
    picking, labelled, shipped, waiting = new_id(), new_id(), new_id(), new_id()
    await api.place_order(order_dict(picking, {sku: 1}))
    for order_id in (labelled, shipped):
        await api.place_order(order_dict(order_id, {sku: 1}))
        await picked(api, order_id)
    await api.place_order(order_dict(waiting, {sku: 9}))  # backordered: it would keep its place in the queue
    await wait_for(api, picking, OrderStatus.PICKING)
    await wait_for(api, waiting, OrderStatus.BACKORDERED)
    views = {o: await wait_for(api, o, OrderStatus.LABELED) for o in (labelled, shipped)}
    sandbox.force_tracker_status(views[shipped].tracking_number or "", "in_transit")  # it left before the end
    for order_id in (picking, labelled, shipped, waiting):
        await api.client.get_workflow_handle(workflow_id_for(order_id)).terminate("ops terminated it")

    carrier = CarrierClient(stack_settings)
    try:
        sweeper = ClosedOrderSweeper(api.client, store, carrier, lookback_s=3600)
        for _ in range(50):  # visibility lists the closed runs a moment later
            await sweeper.round()
            if not await store.orders.holding_resources([picking, labelled, shipped, waiting]):
                break
            await asyncio.sleep(0.2)
    finally:
        await carrier.close()

    assert held(await store.stock.stock_levels(sku), "LDN-1") == (5, 0)  # one left the building; none stays reserved
    assert [t.status for t in await store.picks.for_order(picking)] == ["cancelled"]
    assert [r.status for r in await store.labels.for_order(labelled)] == ["voided"]
    assert [r.status for r in await store.labels.for_order(shipped)] == ["purchased"]
    assert waiting not in await store.backorders.backordered_orders()
    assert await store.orders.holding_resources([picking, labelled, shipped, waiting]) == []


async def test_finding_10_an_order_the_sweeper_cannot_give_back_now_does_not_hold_up_the_others(
    api: FulfillmentApi, store: Store, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sku = await new_sku(store, units=4)
    stuck, other = sorted([new_id(), new_id()])  # the stuck one comes first in the sweeper's order
    for order_id in (stuck, other):
        await api.place_order(order_dict(order_id, {sku: 1}))
        await wait_for(api, order_id, OrderStatus.PICKING)
        await api.client.get_workflow_handle(workflow_id_for(order_id)).terminate("ops terminated it")

    real_sweep = reconciler.sweep_order
    fault = {"on": True}

    async def sweep_order(store: Store, carrier: CarrierClient, key: str) -> None:
        if key == stuck and fault["on"]:
            raise ConnectionResetError("database connection lost")  # this order's sweep fails, for now
        await real_sweep(store, carrier, key)

    monkeypatch.setattr(reconciler, "sweep_order", sweep_order)
    carrier = CarrierClient(stack_settings)
    try:
        sweeper = ClosedOrderSweeper(api.client, store, carrier, lookback_s=3600)
        for _ in range(50):  # visibility lists the closed runs a moment later
            await sweeper.round()
            if not await store.orders.holding_resources([other]):
                break
            await asyncio.sleep(0.2)
        assert await store.orders.holding_resources([stuck, other]) == [stuck]  # the other went on
        fault["on"] = False
        assert await sweeper.round() == [stuck]  # and the stuck one is given back once it can be
    finally:
        await carrier.close()
    assert held(await store.stock.stock_levels(sku), "LDN-1") == (4, 0)


# ---------------------------------------------------------------------------------- new-user finding 9


async def test_new_user_9_pick_overdue_false_lists_orders_that_were_never_overdue(api: FulfillmentApi) -> None:
    order_id = new_id()
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    handle = api.client.get_workflow_handle(workflow_id_for(order_id))
    attrs = (await handle.describe()).typed_search_attributes
    found: list[str] = []
    for _ in range(50):
        found = [wf.id async for wf in api.client.list_workflows(f'PickOverdue = false AND WorkflowId = "{handle.id}"')]
        if found:
            break
        await asyncio.sleep(0.2)

    assert attrs.get(PICK_OVERDUE) is False
    assert found == [handle.id]
    await api.cancel_order(order_id, "test cleanup")


async def _closed(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(300):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{handle.id} is still running")
