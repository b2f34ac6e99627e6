"""GET /metrics of the HTTP API (Prometheus text format): request latency by route template, webhook events.

Names and help texts are common.metrics'. Each app has its own registry (tests build several apps in one
process). No API key: Prometheus scrapes without one and nothing here names a customer; FULFILL_API_METRICS_ENABLED
turns the route off.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import metrics

router = APIRouter(tags=["health"])
WEBHOOKS_PREFIX = "/v1/webhooks/"
# A signature missing (401) or wrong (403): the provider's event was refused.
_REFUSED = (401, 403)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        spec = metrics.HTTP_REQUEST_SECONDS
        self.requests = Histogram(spec.name, spec.help, list(spec.labels), registry=self.registry, buckets=spec.buckets)
        spec = metrics.WEBHOOK_EVENTS
        self.webhooks = Counter(spec.name, spec.help, list(spec.labels), registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).observe(seconds)
        if route.startswith(WEBHOOKS_PREFIX):
            provider = route.removeprefix(WEBHOOKS_PREFIX).split("/", 1)[0]
            if status in _REFUSED:
                self.webhooks.labels(provider=provider, outcome="refused").inc()
            elif status < 400:
                self.webhooks.labels(provider=provider, outcome="verified").inc()


class RequestMetrics:
    """ASGI middleware timing every HTTP request; labelled by the matched route's template (`/v1/orders/{order_id}`),
    never the raw path (an order id, a phone number in a path would be a label value of its own)."""

    def __init__(self, app: ASGIApp, recorder: ApiMetrics) -> None:
        self.app, self.recorder = app, recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router writes the matched route into the scope it was handed (this same dict).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.recorder.observe(scope["method"], route, status, time.perf_counter() - started)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    recorder: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(recorder.registry), media_type=CONTENT_TYPE_LATEST)
