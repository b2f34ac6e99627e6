"""/v1/3pl/parcels: the parcels handed to 3PLs, where each stands and whether the 3PL is late with it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from common.access.contracts import ApiKey
from common.http.auth import READ_ALL, api_of
from common.http.schemas import ThreePLParcelOut
from common.threepl.contracts import ThreePLState

router = APIRouter(tags=["3pl"])


@router.get("/v1/3pl/parcels", response_model=list[ThreePLParcelOut], summary="Parcels at 3PLs, with their SLAs")
async def threepl_parcels(
    request: Request,
    _: Annotated[ApiKey, Depends(READ_ALL)],
    provider: Annotated[str | None, Query(max_length=32, description="Only this 3PL", examples=["shipbob"])] = None,
    state: Annotated[list[ThreePLState] | None, Query(description="Only parcels in these states (repeatable)")] = None,
    late: Annotated[bool, Query(description="Only the parcels the 3PL is late with")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ThreePLParcelOut]:
    """Newest submission first. The SLAs are FULFILL_THREEPL_ACCEPT_SLA and FULFILL_THREEPL_SHIP_SLA."""
    views = await api_of(request).threepl_parcels(provider=provider, states=state, late_only=late, limit=limit)
    return [ThreePLParcelOut.model_validate(v) for v in views]
