"""Returns on the real stack: dev server, worker, sandbox carrier/SMTP/SMS/payments, the database and the `fulfill`
CLI. From the request to the refund, with the stock, the ledger and the refund the payments sandbox made (through
Stripe's SDK) checked, one unit damaged."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.models import OrderStatus, OrderView
from common.returns import RmaStatus, RmaView
from common.store import Store
from sandbox import SandboxServers
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")


def payment_of(order_id: str) -> str:
    return str(order_dict(order_id, {})["payment"]["reference"])


@pytest.fixture
def returns_api(dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings) -> FulfillmentApi:
    """Orders placed through this API stay open for returns for ten minutes after delivery."""
    return FulfillmentApi(dev_server.client, store, stack_settings.model_copy(update={"return_window": 600.0}))


async def wait_order(api: FulfillmentApi, order_id: str, status: OrderStatus) -> OrderView:
    view = None
    for _ in range(200):
        view = await api.order_status(order_id)
        if view.status == status:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id} never reached {status}: {view}")


async def wait_rma(api: FulfillmentApi, rma_id: str, status: RmaStatus) -> RmaView:
    view = None
    for _ in range(200):
        view = await api.rma_status(rma_id)
        if view.status == status:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{rma_id} never reached {status}: {view}")


async def delivered(api: FulfillmentApi, lines: dict[str, int]) -> str:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(order_id, lines))
    view = await wait_order(api, order_id, OrderStatus.PICKING)
    assert view.pick_task_id
    await api.confirm_pick(view.pick_task_id)
    await wait_order(api, order_id, OrderStatus.DELIVERED)
    return order_id


async def run(cli: Cli, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(cli, *args)
    return done.returncode, done.stdout, done.stderr


async def on_hand(store: Store, sku: str, warehouse: str) -> int:
    [level] = await store.stock.stock_levels(sku, warehouse)
    return level.on_hand


async def test_return_from_request_to_refund_with_one_unit_damaged(
    returns_api: FulfillmentApi, cli: Cli, store: Store, sandbox: SandboxServers
) -> None:
    order_id = await delivered(returns_api, {"BOOK-ADA": 2, "TEE-L": 1})
    warehouse = (await returns_api.order_status(order_id)).warehouse or ""
    books, tees = await on_hand(store, "BOOK-ADA", warehouse), await on_hand(store, "TEE-L", warehouse)

    # Refused requests change nothing and exit 2 with the reason.
    code, _, err = await run(cli, "order", "return", order_id, "--line", "BOOK-ADA=1", "--reason", "broken")
    assert code == 2 and "reason" in err and "no_longer_needed" in err
    code, _, err = await run(cli, "order", "return", order_id, "--line", "BOOK-ADA=3", "--reason", "other")
    assert code == 2 and "at most 2" in err
    assert (await returns_api.order_status(order_id)).returns == []

    code, out, err = await run(
        cli, "order", "return", order_id, "--line", "BOOK-ADA=2", "--line", "TEE-L=1", "--reason", "not_as_described"
    )
    assert code == 0, err
    match = re.search(r"(RMA-\S+)", out)
    assert match
    rma_id = match.group(1)
    assert (await returns_api.order_status(order_id)).status in (
        OrderStatus.RETURN_REQUESTED,
        OrderStatus.RETURN_IN_TRANSIT,
    )
    in_transit = await wait_rma(returns_api, rma_id, RmaStatus.IN_TRANSIT)
    assert in_transit.tracking_number and in_transit.label_url
    labels = [s for s in sandbox.carrier.shipments() if s.get("reference") == f"return-label:{rma_id}"]
    assert len(labels) == 1 and labels[0]["is_return"] is True

    # The warehouse cannot receive what the RMA did not authorise.
    code, _, err = await run(cli, "warehouse", "receive-return", rma_id, "--line", "MUG-RED=1:resellable")
    assert code == 2 and "not on RMA" in err
    code, out, err = await run(
        cli, "warehouse", "receive-return", rma_id, "--line", "BOOK-ADA=2:resellable", "--line", "TEE-L=1:damaged"
    )
    assert code == 0, err
    refunded = await wait_rma(returns_api, rma_id, RmaStatus.REFUNDED)
    view = await wait_order(returns_api, order_id, OrderStatus.REFUNDED)

    # not_as_described: only the resellable units are refunded, at the price paid (12.50, not the catalogue's 25.00).
    assert refunded.refund_cents == 2 * 1250
    returns = store.returns
    # The money moved: one refund on the order's PaymentIntent, made with the RMA's idempotency key
    [refund] = sandbox.refunds(payment_of(order_id))
    assert (refund["amount"], refund["currency"], refund["status"]) == (2500, "usd", "succeeded")
    assert refund["metadata"]["refund_key"] == f"refund:{rma_id}" and refund["metadata"]["order_id"] == order_id
    assert refunded.refund_id == refund["id"]
    # ...and the engine's refunds ledger holds the gateway's receipt
    [booked] = await returns.refunds(order_id)
    assert (booked.key, booked.refund_id, booked.amount_cents) == (f"refund:{rma_id}", refund["id"], 2500)
    # Stock: the resellable books are back on hand; the damaged T-shirt is written off (no stock change).
    assert await on_hand(store, "BOOK-ADA", warehouse) == books + 2
    assert await on_hand(store, "TEE-L", warehouse) == tees
    ledger = {(e.sku, e.kind, e.delta_on_hand) for e in await store.stock.ledger() if e.ref == rma_id}
    assert ledger == {("BOOK-ADA", "return", 2), ("TEE-L", "writeoff", 0)}
    [rma] = await returns.rmas_for_order(order_id)
    assert rma.status == "REFUNDED"
    assert {(li.sku, li.resellable, li.damaged) for li in rma.lines} == {("BOOK-ADA", 2, 0), ("TEE-L", 0, 1)}

    # The order shows the return; the customer got the label, the receipt and the refund, by email and SMS.
    statuses = [e.status.value for e in view.timeline]
    assert {"RETURN_REQUESTED", "RETURN_IN_TRANSIT", "RETURN_RECEIVED", "REFUNDED"} <= set(statuses)
    messages = sandbox.outbox(order_id)
    label_emails = [m for m in messages if m.channel == "email" and "return label" in (m.subject or "")]
    assert len(label_emails) == 1 and refunded.label_url in label_emails[0].body
    subjects = [m.subject for m in messages if m.channel == "email"]
    assert sum("refund issued for return" in (s or "") for s in subjects) == 1
    assert sum("we received your return" in (s or "") for s in subjects) == 1
    assert sum("return" in m.body.lower() for m in messages if m.channel == "sms") == 3

    code, out, _ = await run(cli, "order", "returns", order_id, "--json")
    assert code == 0
    assert [(r["rma_id"], r["status"], r["refund_cents"]) for r in json.loads(out)] == [(rma_id, "REFUNDED", 2500)]


async def test_declined_refund_waits_for_ops_and_retry_refund_pays_once(
    returns_api: FulfillmentApi, cli: Cli, sandbox: SandboxServers
) -> None:
    order_id = await delivered(returns_api, {"MUG-BLUE": 1})
    view = await returns_api.request_return(order_id, {"MUG-BLUE": 1}, "no_longer_needed")
    rma_id = view.returns[0].rma_id
    sandbox.payments.decline_refunds(payment_of(order_id))  # e.g. the charge is disputed: retrying cannot help
    try:
        await returns_api.receive_return(rma_id, [("MUG-BLUE", 1, "resellable")])
        failed = await wait_rma(returns_api, rma_id, RmaStatus.REFUND_FAILED)
    finally:
        sandbox.payments.allow_refunds(payment_of(order_id))
    assert failed.waiting_for and "retry_refund" in failed.waiting_for
    order_view = await returns_api.order_status(order_id)
    assert order_view.waiting_for and "retry_refund" in order_view.waiting_for
    assert sandbox.refunds(payment_of(order_id)) == []

    code, out, err = await run(cli, "order", "retry-refund", rma_id, "--description", "gateway back up")
    assert code == 0 and "REFUNDED" in out, err
    [refund] = sandbox.refunds(payment_of(order_id))
    assert refund["amount"] == 1250  # the price paid
    code, _, err = await run(cli, "order", "retry-refund", rma_id, "--description", "again")
    assert code == 2 and "closed" in err  # refunded: nothing left to retry
