"""FulfillmentApi's helpers: placement rules, visibility queries, request models, Temporal's answers read."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError, FailureError

from common.api.results import OrderSummary
from common.errors import InvalidOrder, InvalidRequest
from common.intake import describe_error
from common.models import Order, OrderStatus, OrderView, workflow_id_for
from common.temporal import CUSTOMER_ID, ORDER_STATUS, SKUS

WORKFLOW_TYPE = "OrderWorkflow"

# How an order's last run ended for it to be placed again under its id
_PLACEABLE_AGAIN = frozenset(
    {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT}
)

# What may stand in a visibility query's string literal (customer ids and SKUs we filter on)
_QUERY_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,99}$")


async def failed_view(handle: WorkflowHandle[Any, OrderView]) -> OrderView | None:
    """The final view a FAILED order closed with (the details of its failure), readable without a worker."""
    try:
        await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.details:
            detail = cause.details[0]
            try:
                return OrderView.model_validate(detail)
            except ValidationError:
                return None
    return None


def promise_for(order: Order, now: datetime) -> date:
    """The delivery date the order promises: the storefront's own, else what its shipping speed promises from
    now. InvalidOrder for a promise already past (a day's grace for the storefront's time zone)."""
    if order.promised_delivery is None:
        return order.shipping_speed.promised_by(now)
    if order.promised_delivery < (now - timedelta(days=1)).date():
        raise InvalidOrder([f"promised_delivery: {order.promised_delivery} is in the past"])
    return order.promised_delivery


def with_prices(order: Order, catalogue_cents: dict[str, int]) -> Order:
    """The order with a unit_price on every line: the price paid when the storefront gave one, else the catalogue
    price now, at placement (kept with the order, so a later price change does not change its refunds)."""
    if all(line.unit_price is not None for line in order.lines):
        return order
    lines = [
        line
        if line.unit_price is not None
        else line.model_copy(update={"unit_price": Decimal(catalogue_cents[line.sku]) / 100})
        for line in order.lines
    ]
    return order.model_copy(update={"lines": lines})


def innermost_message(err: BaseException) -> str:
    """The innermost message, e.g. the text a workflow's Update validator raised."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err.message if isinstance(err, FailureError) else str(err)


async def next_placement(last_run: WorkflowExecutionDescription | None) -> int | None:
    """The placement number for placing the order again, if its last run ended for good without being
    fulfilled; None if it runs or ended otherwise (completed, cancelled): then it cannot be."""
    if last_run is None or last_run.status not in _PLACEABLE_AGAIN:
        return None
    return int(await last_run.memo_value("placement", default=1)) + 1


def already_placed(order_id: str, last_run: WorkflowExecutionDescription | None) -> str:
    message = f"order {order_id} already exists (workflow {workflow_id_for(order_id)}); nothing was started"
    status = last_run.typed_search_attributes.get(ORDER_STATUS) if last_run is not None else None
    if status == OrderStatus.FAILED.value:
        message += f". It is FAILED and waits for ops: `fulfill order retry {order_id}`, or cancel it"
    return message


def order_digest(order: Order) -> str:
    """The order's content, as a digest: placed twice with the same digest, it is the same order."""
    return hashlib.sha256(order.model_dump_json().encode()).hexdigest()


def request_model(model: type[Any], **fields: Any) -> Any:
    """An Update's request model from its fields; InvalidRequest names the field that is wrong."""
    try:
        return model(**fields)
    except ValidationError as err:
        raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None


def orders_query(status: OrderStatus | None, customer_id: str | None, sku: str | None) -> str:
    query = f'WorkflowType = "{WORKFLOW_TYPE}"'
    for what, attribute, value in (("customer", CUSTOMER_ID.name, customer_id), ("sku", SKUS.name, sku)):
        if value is None:
            continue
        if not _QUERY_VALUE.match(value):
            raise InvalidRequest(f"{what}: {value!r} is no {what} id (letters, digits and . _ : @ + -)")
        query += f' AND {attribute} = "{value}"'
    if status is not None:
        query += f' AND {ORDER_STATUS.name} = "{status.value}"'
    return query


def order_summary(wf: Any) -> OrderSummary:
    attrs = wf.typed_search_attributes
    return OrderSummary(
        order_id=wf.id.removeprefix("order-"),
        status=attrs.get(ORDER_STATUS) or "?",
        customer_id=attrs.get(CUSTOMER_ID) or "?",
        started_at=wf.start_time,
        closed_at=wf.close_time,
    )
