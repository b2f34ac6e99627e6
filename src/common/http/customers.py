"""/v1/customers/{customer_id}/erasure: the right to erasure, for a storefront or CRM that takes the requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from common.access.contracts import ApiKey
from common.http.auth import OPS, api_of
from common.http.problems import CONFLICT, NOT_FOUND
from common.privacy.erasure import ErasureReport

router = APIRouter(tags=["customers"])


@router.post(
    "/v1/customers/{customer_id}/erasure",
    response_model=ErasureReport,
    summary="Erase a customer's personal data",
    responses=NOT_FOUND | CONFLICT,
)
async def erase_customer(
    request: Request,
    _: Annotated[ApiKey, Depends(OPS)],
    customer_id: Annotated[str, Path(min_length=1, max_length=255)],
) -> ErasureReport:
    """As `fulfill customer forget`: once every order and return of the customer is closed, their data key is
    destroyed (their histories can no longer be read), plaintext histories from before encryption are deleted and
    the engine's copies redacted. 409 while one still runs, 404 for a customer with no order. Sending it again is
    harmless. `kept` says what it cannot erase."""
    return await api_of(request).forget_customer(customer_id)
