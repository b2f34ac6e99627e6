"""The right to erasure: `fulfill customer forget C-ID`.

Only once every workflow of the customer is closed (an order still running needs its customer's data). Then:
1. the customer's data keys are destroyed: every encrypted history of theirs (orders, returns, message
   fallbacks) can no longer be read, by the worker, the CLI or the codec server (crypto-shredding);
2. histories that hold the customer's data in plaintext (orders placed before payloads were encrypted) are
   deleted from Temporal;
3. our database's copies are redacted: the messages' recipients and bodies, the order signals' arguments (an
   address change), the RMAs' notes, the label links.
Run again, it finishes what a crash interrupted and changes nothing more. What it cannot erase is said in
`ErasureReport.kept`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import or_, select, update
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from common.crypto.codec import ENCRYPTED
from common.db import tables as t
from common.db.database import Database, utc_now
from common.errors import Conflict, NotFound
from common.models import PLACEMENT_MARK
from common.privacy.data_keys import CustomerKeyStore
from common.temporal import CUSTOMER_ID

ERASED = "[erased]"


class CustomerStillActive(Conflict):
    """The customer has workflows still running: nothing was erased."""

    def __init__(self, customer_id: str, running: list[str]) -> None:
        shown = ", ".join(running[:10]) + (f" and {len(running) - 10} more" if len(running) > 10 else "")
        super().__init__(
            f"customer {customer_id} still has running workflows ({shown}): forget them once these are closed "
            "(cancel an order with `fulfill order cancel`); nothing was erased"
        )
        self.running = running


class UnknownCustomer(NotFound):
    """No workflow of the customer is known here: nothing to erase."""


class ErasureReport(BaseModel):
    customer_id: str
    erased_at: datetime
    workflows: list[str] = Field(default_factory=list, description="whose histories can no longer be read")
    keys_destroyed: int = 0
    histories_deleted: list[str] = Field(default_factory=list, description="plaintext ones, from before encryption")
    messages_redacted: int = 0
    signals_redacted: int = 0
    returns_redacted: int = 0
    labels_unlinked: int = 0
    kept: list[str] = Field(default_factory=list, description="what this could not erase, and who holds it")


async def forget_customer(client: Client, db: Database, keys: CustomerKeyStore, customer_id: str) -> ErasureReport:
    known = set(await keys.workflows_of(customer_id))
    listed = {w.id async for w in client.list_workflows(f'{CUSTOMER_ID.name} = "{_quoted(customer_id)}"')}
    workflows = sorted(known | listed)
    if not workflows:
        raise UnknownCustomer(f"no order or return of customer {customer_id} is known: nothing was erased")
    running, closed = [], []
    for workflow_id in workflows:
        status = await _status(client, workflow_id)
        if status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
            running.append(workflow_id)
        elif status is not None:
            closed.append(workflow_id)
    if running:
        raise CustomerStillActive(customer_id, running)

    now = utc_now()
    report = ErasureReport(customer_id=customer_id, erased_at=now, workflows=workflows)
    report.keys_destroyed = await keys.destroy_all(customer_id, now)
    for workflow_id in closed:
        if not await _encrypted_for_customer(client, workflow_id):
            await client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
                )
            )
            report.histories_deleted.append(workflow_id)
    await _redact(db, workflows, report)
    report.kept = _what_stays(report)
    return report


async def _status(client: Client, workflow_id: str) -> WorkflowExecutionStatus.ValueType | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).raw_description.workflow_execution_info.status
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # past retention, or deleted by an earlier run
            return None
        raise


async def _encrypted_for_customer(client: Client, workflow_id: str) -> bool:
    """Whether the workflow's input was encrypted (then the destroyed key shreds it); raw, not decoded."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            return bool(payloads) and all(p.metadata.get("encoding") == ENCRYPTED for p in payloads)
    return False


def _order_ids(workflows: list[str]) -> list[str]:
    return [w.removeprefix("order-") for w in workflows if w.startswith("order-")]


async def _redact(db: Database, workflows: list[str], report: ErasureReport) -> None:
    orders = _order_ids(workflows)
    n, s, r, sh = t.notifications, t.order_signals, t.rmas, t.shipments

    def of_orders(column: Any) -> Any:
        return or_(column.in_(orders), *(column.like(f"{o}{PLACEMENT_MARK}%") for o in orders))

    async def op(conn: Any) -> None:
        if orders:
            rma_orders = select(r.c.order_id).where(of_orders(r.c.order_id))
            messages = update(n).where(or_(of_orders(n.c.order_id), n.c.order_id.in_(rma_orders)))
            report.messages_redacted = (
                await conn.execute(
                    messages.where(n.c.body != ERASED).values(
                        recipient=ERASED,
                        subject=None,
                        body=ERASED,
                        error=None,
                        delivery_error=None,
                        fallback_recipient=None,
                    )
                )
            ).rowcount
            report.returns_redacted = (
                await conn.execute(update(r).where(of_orders(r.c.order_id), r.c.note != ERASED).values(note=ERASED))
            ).rowcount
            report.labels_unlinked = (
                await conn.execute(
                    update(sh).where(of_orders(sh.c.order_id), sh.c.label_url.is_not(None)).values(label_url=None)
                )
            ).rowcount
        report.signals_redacted = (
            await conn.execute(
                update(s)
                .where(s.c.workflow_id.in_(workflows), s.c.note.is_distinct_from(ERASED))
                .values(payload={"erased": True}, note=ERASED)
            )
        ).rowcount

    await db.write(op, "erase customer data")


def _what_stays(report: ErasureReport) -> list[str]:
    return [
        f"Temporal keeps the encrypted histories of {len(report.workflows) - len(report.histories_deleted)} "
        "workflow(s) until the namespace's retention ends: their data key is destroyed, so they can no longer be "
        f"read. Their search attributes keep the customer id {report.customer_id} (an id, no personal data).",
        "The carrier (EasyPost) keeps the addresses of the labels it made, a 3PL the orders it was given, the "
        "email relay and Twilio their message logs: ask them under their own erasure processes.",
        "An SMS opt-out (STOP) of the customer's number stays in sms_opt_outs, so that number is never texted again.",
        "Database backups taken before now still hold the redacted rows (and, if the data keys live in the same "
        "database, the keys): they are gone when those backups expire. FULFILL_CODEC_KEYSTORE_URL puts the keys "
        "in a database of their own with short-lived backups.",
    ]


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
