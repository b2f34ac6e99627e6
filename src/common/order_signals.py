"""Delivery of the order-signal outbox: signals and updates the database recorded for order workflows in the
transaction of the change they report (a stock count releasing a parcel's reservation, a pick confirmation),
handed to Temporal afterwards. The API delivers the rows it just wrote at once; the worker's relay
(workers/reconciler.py) delivers whatever is left, e.g. rows written while the engine was unreachable.

A row is delivered at least once: a relay that dies between delivering and marking a row delivers it again
after its claim lapses. That is harmless for what the outbox carries: `pick_confirmed` adds a task id to a
set, `pick_short`'s validator refuses a second shortage for one task (and the update has a fixed id, so the
server itself drops a repeat), and `reservation_released` names the shipments it released.

`wake_backordered_orders` signals `stock_received` straight to the orders, not through the outbox: the API calls
it after a restock, the returns activity after resellable units came back on hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from common.logs import describe_error
from common.models import workflow_id_for
from common.outbox.contracts import OrderSignal
from common.store import Store
from common.temporal import execute_update

# The order workflow's signal for a restocked SKU (OrderWorkflow.stock_received). A name, not a typed reference:
# this module sits under the workflows (activities send it), so it cannot import them; a test ties the two.
STOCK_RECEIVED = "stock_received"

# Long enough for a round's rows of one workflow (each call is bounded by RPC_TIMEOUT_S), so two live relays do
# not deliver the same row; should it lapse all the same, a row is delivered twice, which is harmless (above).
CLAIM_LEASE_S = 60.0
# One call to Temporal; an update waits for the workflow to run its handler, which needs a worker.
RPC_TIMEOUT_S = 10.0
# How much of a delivery error a row and the relay's log keep: enough for a connection error's cause.
OUTBOX_ERROR_CHARS = 300
# Workflows delivered to at once (each workflow's rows go one after another, in order).
CONCURRENT_WORKFLOWS = 8


@dataclass
class DeliveryReport:
    """What one delivery round did, by outbox row id."""

    delivered: list[int] = field(default_factory=list)
    # Not delivered (the engine unreachable, a timeout): still pending, tried again by the relay.
    failed: list[int] = field(default_factory=list)
    # The first failure, briefly (no payloads): for a log line or a CLI warning.
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Everything claimed was delivered (nothing is left pending by this round)."""
        return not self.failed and self.error is None


async def deliver_order_signals(
    client: Client,
    store: Store,
    *,
    ids: Sequence[int] | None = None,
    workflow_ids: Sequence[str] | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Deliver pending outbox rows, oldest first, through `client` (and so its data converter): all of them,
    or those `ids` (with any older pending rows of their workflows, which go first), or those of
    `workflow_ids`; at most `limit`. Each workflow's rows go in order, and a row that fails stops that
    workflow's later rows this round. A closed or unknown order (NOT_FOUND), or an update its workflow refused,
    counts as delivered, with a note; anything else leaves the row pending with the attempt and error recorded.
    Never raises for a delivery failure."""
    claim, rows = await store.signals.claim_order_signals(
        ids=ids, workflow_ids=workflow_ids, limit=limit, lease_s=CLAIM_LEASE_S
    )
    report = DeliveryReport()
    by_workflow: dict[str, list[OrderSignal]] = {}
    for row in rows:
        by_workflow.setdefault(row.workflow_id, []).append(row)
    slots = asyncio.Semaphore(CONCURRENT_WORKFLOWS)

    async def one_workflow(group: list[OrderSignal]) -> None:
        async with slots:
            for i, row in enumerate(group):
                try:
                    note = await _deliver(client, row)
                except Exception as err:  # the engine unreachable, a timeout, ...: the relay tries again
                    error = describe_error(err, limit=OUTBOX_ERROR_CHARS)
                    report.failed.append(row.id)
                    report.error = report.error or error
                    await store.signals.mark_order_signal_failed(row.id, claim, error)
                    await store.signals.release_order_signal_claims([r.id for r in group[i + 1 :]], claim)
                    return
                await store.signals.mark_order_signal_delivered(row.id, note)
                report.delivered.append(row.id)

    # Every workflow's round finishes before a database error (marking a row) is raised.
    for outcome in await asyncio.gather(*(one_workflow(g) for g in by_workflow.values()), return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
    return report


async def _deliver(client: Client, row: OrderSignal) -> str | None:
    """Send one row; None when the workflow got it, else a note saying why nobody will."""
    handle = client.get_workflow_handle(row.workflow_id)
    try:
        if row.kind == "update":
            # A fixed update id: a repeat of a delivered row is one update to the server.
            await asyncio.wait_for(
                execute_update(handle, row.name, [row.payload], id=f"order-signal-{row.id}"), RPC_TIMEOUT_S
            )
        else:
            await asyncio.wait_for(handle.signal(row.name, row.payload), RPC_TIMEOUT_S)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return f"not delivered: workflow {row.workflow_id} is closed or unknown"
        raise
    except WorkflowUpdateFailedError as err:
        return f"refused by the workflow: {_cause(err)}"[:1000]
    return None


async def wake_backordered_orders(client: Client, store: Store, skus: list[str]) -> list[str]:
    """Signal `stock_received` to the orders waiting for these SKUs (after a restock or a returned unit back
    on hand): first come, first served, and only as many as the available stock covers (see
    Store.backorders_to_wake). Returns the orders signalled."""
    woken = []
    for sku in skus:
        for order_id in await store.backorders.backorders_to_wake(sku):
            try:
                await client.get_workflow_handle(workflow_id_for(order_id)).signal(STOCK_RECEIVED, sku)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    continue  # closed meanwhile; its backorder row is stale
                raise
            woken.append(order_id)
    return woken


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return err.message if isinstance(err, FailureError) else str(err)
