"""Finding 10: messages that read well, to customers and to ops."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from common.api import FulfillmentApi
from common.config import get_settings
from common.messages import render
from common.models import Channel, NotificationEvent, NotifyRequest, OrderStatus, ReturnSummary
from common.temporal import ORDER_STATUS
from tests.cli.conftest import AT, StandInApi, fulfill, line, ok
from tests.orders import sample_order


def request(event: NotificationEvent, **context: str) -> NotifyRequest:
    order = sample_order()
    customer = order.customer
    return NotifyRequest(
        order_id=order.order_id, event=event, customer=customer, channels=list(customer.channels), context=context
    )


def test_a_cancellation_says_cancelled_once() -> None:
    for channel in (Channel.EMAIL, Channel.SMS):
        text = render(request(NotificationEvent.CANCELLED, reason="cancelled: customer changed mind"), channel).text
        assert "was cancelled (customer changed mind)." in text


def test_each_parcel_of_a_split_order_has_its_own_subject() -> None:
    subjects = [
        render(request(event, parcel=f" (parcel {n}: TEE-M x1)"), Channel.EMAIL).subject
        for event in (NotificationEvent.SHIPPED, NotificationEvent.OUT_FOR_DELIVERY, NotificationEvent.DELIVERED)
        for n in (1, 2)
    ]
    assert len(set(subjects)) == 6
    assert "Order ORD-1001 has shipped (parcel 2: TEE-M x1)" in subjects
    # one parcel: as before, no parcel in the subject
    assert render(request(NotificationEvent.SHIPPED), Channel.EMAIL).subject == "Order ORD-1001 has shipped"


def test_a_backorder_of_the_whole_order_does_not_speak_of_a_part() -> None:
    sms = render(request(NotificationEvent.BACKORDERED, short="POSTER-A2 x1"), Channel.SMS).text
    assert "part" not in sms.lower() and "waiting for stock (POSTER-A2 x1)" in sms


class _ClosedOrder:
    """A cancelled order's workflow: closed (Temporal says COMPLETED), its OrderStatus CANCELLED."""

    def get_workflow_handle(self, *args: Any, **kwargs: Any) -> _ClosedOrder:
        return self

    async def execute_update(self, *args: Any, **kwargs: Any) -> None:
        raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")

    async def describe(self) -> Any:
        attributes = TypedSearchAttributes([SearchAttributePair(ORDER_STATUS, OrderStatus.CANCELLED.value)])
        return SimpleNamespace(status=WorkflowExecutionStatus.COMPLETED, typed_search_attributes=attributes)


def test_a_cancelled_order_is_closed_as_cancelled_not_completed(shop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(cls: type, settings: Any, **kwargs: Any) -> FulfillmentApi:
        from common.store import Store

        return FulfillmentApi(_ClosedOrder(), await Store.open(shop), get_settings())  # type: ignore[arg-type]

    monkeypatch.setattr(FulfillmentApi, "connect", classmethod(connect))
    result = fulfill("order", "hold", "ORD-CXL-1", "--reason", "fraud check")
    assert result.exit_code == 2
    assert "order ORD-CXL-1 is closed (CANCELLED); nothing can change it now" in result.stderr


def test_an_exchange_says_how_the_return_ended(engine: StandInApi) -> None:
    exchanged = ReturnSummary(
        rma_id="RMA-ORD-RET-7-1",
        status="EXCHANGED",
        reason="wrong_item",
        lines=[line("POSTER-A2")],
        requested_at=AT,
        exchange=True,
        replacement_order_id="ORD-RET-7-R1",
    )
    engine.view = engine.view.model_copy(update={"status": OrderStatus.RETURN_RECEIVED, "returns": [exchanged]})
    first = ok(fulfill("order", "status", "ORD-RET-7")).splitlines()[0]
    assert first == "ORD-RET-7  RETURN_RECEIVED (exchanged: replacement order ORD-RET-7-R1)"
