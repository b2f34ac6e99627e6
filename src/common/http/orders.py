"""/v1/orders: intake (POST, idempotent), status, listing, ops actions, returns and the messages sent."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from common.access.contracts import ApiKey
from common.http.auth import INTAKE, OPS, READ_ALL, READ_ORDERS, api_of, own_orders_only
from common.http.problems import CONFLICT, ERASED, NOT_FOUND, ProblemError
from common.http.schemas import (
    AddressBody,
    CancelBody,
    HoldBody,
    OrderPageOut,
    OrderSummaryOut,
    PlacedOrderOut,
    ResolveBody,
    RetryBody,
    ReturnBody,
)
from common.models import ORDER_ID_PATTERN, Order, OrderStatus, OrderView, ReturnSummary
from common.notifications.delivery import NotificationView

# Any order read may find its customer erased (410)
router = APIRouter(prefix="/v1/orders", tags=["orders"], responses=ERASED)

OrderIdPath = Annotated[str, Path(pattern=ORDER_ID_PATTERN, examples=["ORD-1001"])]
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

ORDER_EXAMPLE = {
    "order_id": "ORD-1001",
    "customer": {"id": "C-42", "name": "Ada Lovelace", "email": "ada@example.com", "channels": ["email"]},
    "ship_to": {
        "name": "Ada Lovelace",
        "line1": "1 Main St",
        "city": "London",
        "postal_code": "N1 9GU",
        "country": "GB",
    },
    "lines": [{"sku": "MUG-RED", "quantity": 2}],
    "shipping_speed": "standard",
}


def _url(order_id: str) -> str:
    return f"/v1/orders/{order_id}"


@router.post(
    "",
    status_code=202,
    response_model=PlacedOrderOut,
    responses=CONFLICT,
    summary="Place an order",
    description="Validates the order and starts its workflow; the order is then followed at `url`. Placing the same "
    "order again (same content, or the same `Idempotency-Key`) starts nothing and answers as the first time; other "
    "content under a placed order id, or under a used key, is 409.",
)
async def place_order(
    request: Request,
    response: Response,
    order: Annotated[Order, Body(openapi_examples={"an order": {"value": ORDER_EXAMPLE}})],
    key: Annotated[ApiKey, Depends(INTAKE)],
    idempotency_key: Annotated[
        str | None,
        Header(description="Any printable string up to 255 characters, new for each new order", max_length=255),
    ] = None,
) -> PlacedOrderOut:
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ProblemError(
            400, "invalid-header", "Invalid Idempotency-Key", "Idempotency-Key: 1-255 printable ASCII characters"
        )
    placed = await api_of(request).place_order(order, idempotency_key=idempotency_key, client=key.name)
    response.headers["Location"] = _url(placed.order_id)
    if not placed.created:
        response.headers["Idempotent-Replayed"] = "true"
    return PlacedOrderOut(
        order_id=placed.order_id, workflow_id=placed.workflow_id, run_id=placed.run_id, url=_url(placed.order_id)
    )


@router.get("", response_model=OrderPageOut, summary="List orders, newest first")
async def list_orders(
    request: Request,
    _: Annotated[ApiKey, Depends(READ_ALL)],
    status: OrderStatus | None = None,
    customer: Annotated[str | None, Query(max_length=100, description="A customer id")] = None,
    sku: Annotated[str | None, Query(max_length=64, description="Orders with a line of this SKU")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=4000, description="`next_cursor` of the page before")] = None,
) -> OrderPageOut:
    page = await api_of(request).orders_page(
        status=status, customer_id=customer, sku=sku, page_size=limit, cursor=cursor
    )
    following = None
    if page.next_cursor is not None:
        url = request.url.include_query_params(cursor=page.next_cursor)  # the same filters, the next page
        following = f"{url.path}?{url.query}"
    return OrderPageOut(
        orders=[OrderSummaryOut.model_validate(o) for o in page.orders], next_cursor=page.next_cursor, next=following
    )


@router.get("/{order_id}", response_model=OrderView, responses=NOT_FOUND, summary="An order's status")
async def order_status(
    request: Request, order_id: OrderIdPath, key: Annotated[ApiKey, Depends(READ_ORDERS)]
) -> OrderView:
    """With an intake key, only the orders that key's client placed (others are 404)."""
    return await api_of(request).order_status(order_id, placed_by=own_orders_only(key))


_ACTION: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    **CONFLICT,
    202: {"model": OrderView, "description": "Accepted and still under way (the order as it stands); follow it"},
}


@router.post("/{order_id}/cancel", response_model=OrderView, responses=_ACTION, summary="Cancel an order")
async def cancel(
    request: Request, order_id: OrderIdPath, body: CancelBody, key: Annotated[ApiKey, Depends(OPS)]
) -> OrderView:
    """Releases stock, cancels pick tasks, voids labels; answers once the order is CANCELLED. 409 once a parcel is
    with the carrier (the carrier is asked)."""
    return await api_of(request).cancel_order(order_id, body.reason, by=key.name)


@router.post("/{order_id}/hold", response_model=OrderView, responses=_ACTION, summary="Hold an order")
async def hold(
    request: Request, order_id: OrderIdPath, body: HoldBody, key: Annotated[ApiKey, Depends(OPS)]
) -> OrderView:
    return await api_of(request).hold_order(order_id, body.reason, by=key.name)


@router.post("/{order_id}/release", response_model=OrderView, responses=_ACTION, summary="Release a held order")
async def release(request: Request, order_id: OrderIdPath, key: Annotated[ApiKey, Depends(OPS)]) -> OrderView:
    return await api_of(request).release_order(order_id, by=key.name)


@router.post("/{order_id}/retry", response_model=OrderView, responses=_ACTION, summary="Retry what failed")
async def retry(
    request: Request, order_id: OrderIdPath, key: Annotated[ApiKey, Depends(OPS)], body: RetryBody | None = None
) -> OrderView:
    return await api_of(request).retry_order(order_id, body.note if body else None, by=key.name)


@router.post("/{order_id}/resolve", response_model=OrderView, responses=_ACTION, summary="Decide a delivery exception")
async def resolve(
    request: Request, order_id: OrderIdPath, body: ResolveBody, key: Annotated[ApiKey, Depends(OPS)]
) -> OrderView:
    return await api_of(request).resolve_delivery_exception(
        order_id, body.action.value, body.note, shipment=body.shipment, by=key.name
    )


@router.put("/{order_id}/address", response_model=OrderView, responses=_ACTION, summary="Correct the ship-to address")
async def update_address(
    request: Request, order_id: OrderIdPath, body: AddressBody, key: Annotated[ApiKey, Depends(OPS)]
) -> OrderView:
    return await api_of(request).update_address(order_id, body.model_dump(), by=key.name)


@router.post(
    "/{order_id}/returns",
    status_code=201,
    response_model=OrderView,
    responses=_ACTION,
    summary="Request a return (RMA)",
)
async def request_return(
    request: Request, response: Response, order_id: OrderIdPath, body: ReturnBody, key: Annotated[ApiKey, Depends(OPS)]
) -> OrderView:
    """Creates an RMA, buys a return label and sends it to the customer. 409 outside the return window or for units
    not delivered or already returned."""
    view = await api_of(request).request_return(
        order_id,
        [(line.sku, line.quantity) for line in body.lines],
        body.reason.value,
        exchange=body.exchange,
        note=body.note,
        by=key.name,
    )
    if view.returns:
        response.headers["Location"] = f"/v1/returns/{view.returns[-1].rma_id}"
    return view


@router.get(
    "/{order_id}/returns", response_model=list[ReturnSummary], responses=NOT_FOUND, summary="An order's returns"
)
async def order_returns(
    request: Request, order_id: OrderIdPath, key: Annotated[ApiKey, Depends(READ_ORDERS)]
) -> list[ReturnSummary]:
    return (await api_of(request).order_status(order_id, placed_by=own_orders_only(key))).returns


@router.get(
    "/{order_id}/notifications",
    response_model=list[NotificationView],
    responses=NOT_FOUND,
    summary="An order's messages and their delivery",
)
async def order_notifications(
    request: Request, order_id: OrderIdPath, key: Annotated[ApiKey, Depends(READ_ORDERS)]
) -> list[NotificationView]:
    """Every email and SMS about the order, oldest first: when, which event, the channel, the recipient (masked),
    our status (sent, failed) and the provider's delivery status with its error (delivered, undelivered `30003:
    Unreachable destination handset`, bounced, opted-out), and what became of an undelivered SMS's email
    fallback. With an intake key, only the customer's messages of the orders that key's client placed."""
    return await api_of(request).notifications(order_id, placed_by=own_orders_only(key))
