"""/healthz (the process is up) and /readyz (Temporal and the database answer): for load balancers, no key."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common.http.auth import api_of
from common.http.schemas import Health
from common.logs import describe_error

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 3.0


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Temporal or the database does not answer"}},
    summary="Temporal and the database answer",
)
async def readyz(request: Request) -> JSONResponse:
    api = api_of(request)
    checks: dict[str, str] = {}
    for name, probe in (("temporal", api.client.service_client.check_health), ("database", api.store.ping)):
        try:
            await asyncio.wait_for(probe(), timeout=_CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as err:  # any failure means not ready; the detail says which and why
            checks[name] = f"failing: {describe_error(err, limit=200)}"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
