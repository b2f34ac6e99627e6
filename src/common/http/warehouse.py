"""/v1/picks and /v1/returns: warehouse work (pick confirmations, returned parcels) and RMAs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from common.access.contracts import ApiKey
from common.http.auth import OPS, READ_WAREHOUSE, WAREHOUSE, api_of
from common.http.problems import CONFLICT, ERASED, NOT_FOUND
from common.http.schemas import PickConfirmBody, PickOut, ReceiveReturnBody, RetryRefundBody
from common.returns import RmaView

router = APIRouter(tags=["warehouse"])

TaskId = Annotated[str, Path(max_length=100, examples=["PICK-1A2B3C"])]
RmaId = Annotated[str, Path(max_length=100, examples=["RMA-ORD-1001-1"])]


@router.get("/v1/picks", response_model=list[PickOut], summary="Open pick tasks, oldest first")
async def open_picks(request: Request, _: Annotated[ApiKey, Depends(READ_WAREHOUSE)]) -> list[PickOut]:
    return [PickOut.model_validate(task) for task in await api_of(request).open_picks()]


@router.post(
    "/v1/picks/{task_id}/confirm",
    response_model=PickOut,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Confirm a pick (with shorts)",
)
async def confirm_pick(
    request: Request, task_id: TaskId, _: Annotated[ApiKey, Depends(WAREHOUSE)], body: PickConfirmBody | None = None
) -> PickOut:
    """All lines picked and packed; with `short`, the units not found: on hand is corrected with a recorded
    discrepancy and the order re-reserves them elsewhere or waits. Confirming twice the same way is harmless."""
    short = dict(body.short) if body else {}
    return PickOut.model_validate(await api_of(request).confirm_pick(task_id, short or None))


@router.get("/v1/returns/{rma_id}", response_model=RmaView, responses=NOT_FOUND | ERASED, summary="An RMA's status")
async def rma_status(request: Request, rma_id: RmaId, _: Annotated[ApiKey, Depends(READ_WAREHOUSE)]) -> RmaView:
    return await api_of(request).rma_status(rma_id)


@router.post(
    "/v1/returns/{rma_id}/receive",
    response_model=RmaView,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Receive a returned parcel",
)
async def receive_return(
    request: Request, rma_id: RmaId, body: ReceiveReturnBody, _: Annotated[ApiKey, Depends(WAREHOUSE)]
) -> RmaView:
    lines = [(line.sku, line.quantity, line.condition.value) for line in body.lines]
    return await api_of(request).receive_return(rma_id, lines, body.note)


@router.post(
    "/v1/returns/{rma_id}/retry-refund",
    response_model=RmaView,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Retry a refund that failed",
)
async def retry_refund(
    request: Request, rma_id: RmaId, body: RetryRefundBody, _: Annotated[ApiKey, Depends(OPS)]
) -> RmaView:
    return await api_of(request).retry_refund(rma_id, body.description)
