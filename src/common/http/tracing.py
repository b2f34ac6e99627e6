"""A server span around each HTTP request, installed only while tracing is on (common.tracing).

It is the parent of what the request does with Temporal (StartWorkflow, an Update...), so one order's trace
starts at `POST /v1/orders`; a caller's W3C `traceparent` header makes it the child of the caller's span.

Its attributes are the method, the route template (`/v1/orders/{order_id}`) and the status: never the URL as
sent, its query string or the client's headers, which can hold a customer's id, email or phone.
"""

from __future__ import annotations

from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestSpans:
    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        with self.tracer.start_as_current_span(
            method, context=extract(carrier), kind=SpanKind.SERVER, attributes={"http.request.method": method}
        ) as span:

            async def status_noting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, status_noting_send)
            finally:
                # The router put the matched route on the scope: name the span after its template
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")
