"""The FastAPI application: routers, API-key auth, problem+json errors, the body limit, the OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from common import tracing
from common.api import FulfillmentApi
from common.config import Settings
from common.http import (
    carrier_webhooks,
    codec,
    customers,
    dashboard,
    health,
    inventory,
    kpi,
    orders,
    problems,
    sms_webhooks,
    threepl_parcels,
    threepl_webhooks,
    warehouse,
)
from common.http.limits import BodyLimit
from common.http.metrics import ApiMetrics, RequestMetrics
from common.http.metrics import router as metrics_router
from common.http.tracing import RequestSpans
from common.privacy import connect

DESCRIPTION = """\
Place orders, follow them, act on them, and run the warehouse and the stock, over HTTP.

Every endpoint but `/healthz`, `/readyz` and the providers' webhooks (`/v1/webhooks/...`, signed by the provider
instead) needs an API key (`Authorization: Bearer <key>`) from
`fulfill api-key create --name NAME --scope SCOPE`. Scopes: `intake` (place orders, read them), `ops` (act on
orders, returns and stock; read everything), `warehouse` (pick tasks, returned parcels, receipts and counts),
`read` (read everything). Errors are `application/problem+json` (RFC 9457); a refused request changed nothing.
"""


def create_app(settings: Settings, api: FulfillmentApi | None = None) -> FastAPI:
    """The app; with `api`, it uses that one (tests), else it connects at startup and closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if api is not None:
            app.state.api = api
            yield
            return
        # A lazy client: the process starts while Temporal is away, and /readyz says so until it is back.
        client = await connect(settings, lazy=True)
        async with await FulfillmentApi.connect(
            settings, client=client, update_wait=settings.api_update_wait
        ) as connected:
            app.state.api = connected
            yield
        # uvicorn ends the process with the SIGTERM it caught (no exit hooks run): export queued spans now
        tracing.force_flush()

    # /docs and /redoc from bundled assets: the reference works on a machine without internet access
    app = FastAPIOffline(
        title="Fulfillment engine",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=problems.COMMON_PROBLEMS,
        # FastAPI's own OpenTelemetry spans and logs (on once a TracerProvider is installed) carry the URL as sent,
        # query values included, and exception messages: a customer's email or address. Ours instead
        # (common.http.tracing): route templates only, and the parent of the request's Temporal spans.
        telemetry={"tracing": False, "logs": False},
    )
    if api is not None:
        app.state.api = api  # also without the lifespan (an ASGI transport in tests runs none)
    app.state.settings = settings
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    # Outside the body limit, so its refusals carry CORS headers too and the Web UI can read them
    app.add_middleware(codec.CodecCors, origins=codec.cors_origins(settings))
    # Tracing (off unless configured): outermost, so that refused requests get their span too
    if (request_tracer := tracing.tracer()) is not None:
        app.add_middleware(RequestSpans, tracer=request_tracer)
    app.include_router(health.router)
    routers = (
        orders,
        warehouse,
        inventory,
        threepl_parcels,
        kpi,
        dashboard,
        customers,
        carrier_webhooks,
        threepl_webhooks,
        sms_webhooks,
        codec,
    )
    for module in routers:
        app.include_router(module.router)
    install_metrics(app, settings)
    return app


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """/metrics and the request timing (outermost, so refusals by the other middleware are timed too)."""
    if not settings.api_metrics_enabled:
        return
    app.state.metrics = ApiMetrics()
    app.add_middleware(RequestMetrics, recorder=app.state.metrics)
    app.include_router(metrics_router)
