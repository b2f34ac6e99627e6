"""Every error as `application/problem+json` (RFC 9457): type, title, status, detail, and for bad input the
fields that are wrong. One table maps the engine's refusals to statuses; nothing else decides them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from common.catalog.contracts import UnknownSkuError, UnknownWarehouseError
from common.crypto.codec import CustomerDataErased
from common.db.errors import StoreError
from common.errors import Conflict, Erased, FulfillmentError, InvalidOrder, NotFound, StillUnderWay, WebhookRefused
from common.intake import describe_error
from common.logs import describe_error as describe_exception

log = logging.getLogger("fulfill.http")

PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    field: str = Field(description="Where: a dotted path into the body (`lines.0.sku`), or the parameter's name")
    location: str = Field(description="body, query, path or header")
    message: str


class Problem(BaseModel):
    """An error (RFC 9457). Nothing was changed by the request that got it."""

    type: str = Field(description="A URI reference naming the kind of problem", examples=["/problems/invalid-input"])
    title: str = Field(examples=["Invalid input"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["customer.email: value is not a valid email address"])
    instance: str | None = Field(default=None, description="The request path", examples=["/v1/orders"])
    errors: list[FieldProblem] = Field(default_factory=list, description="The fields that are wrong, if any")


class ProblemError(Exception):
    """Raise to answer with a problem."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.headers = status, slug, title, detail, headers


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "Malformed request (e.g. the body is not JSON)",
        401: "No API key, or not a valid one (a webhook: not signed by the provider, or replayed)",
        403: "The API key lacks the scope this needs",
        404: "No such order, RMA, pick task or SKU",
        409: "The state of what the request names refuses it; the detail says why",
        410: "The order's customer was erased: its history can no longer be read",
        413: "The request body is too large",
        422: "Invalid input: `errors` names each field that is wrong",
        503: "The engine (Temporal or the database) is not answering; retry later",
    }
    return {c: {"model": Problem, "description": what[c], "content": {PROBLEM_JSON: {}}} for c in codes}


# The problems any authenticated endpoint may answer with, for the OpenAPI schema.
COMMON_PROBLEMS = responses(400, 401, 403, 413, 422, 503)
NOT_FOUND = responses(404)
CONFLICT = responses(409)
ERASED = responses(410)


def problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"/problems/{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors or [],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_problems(errors: list[Any]) -> list[FieldProblem]:
    problems = []
    for error in errors:
        location, *where = error.get("loc", ()) or ("body",)
        described = describe_error({**error, "loc": tuple(where)}, prefix="")
        name, _, message = described.partition(": ")
        problems.append(FieldProblem(field=name if where else str(location), location=str(location), message=message))
    return problems


async def _validation_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        detail = f"the body is not valid JSON: {where.get('ctx', {}).get('error', 'malformed')}"
        return problem(request, 400, "malformed-json", "Malformed JSON", detail)
    fields = _field_problems(errors)
    detail = "; ".join(f"{f.field}: {f.message}" for f in fields)
    return problem(request, 422, "invalid-input", "Invalid input", detail, errors=fields)


async def _http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}.get(exc.status_code, "http-error")
    title = {404: "Not found", 405: "Method not allowed", 413: "Body too large"}.get(exc.status_code, "HTTP error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_methods_of(request))
    return problem(request, exc.status_code, slug, title, str(exc.detail), headers=headers)


def _methods_of(request: Request) -> list[str]:
    """Every method the request's path answers to (Starlette names only those of the first route it matched)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and isinstance(route, APIRoute | Route):
            methods |= route.methods or set()
    return sorted(methods)


async def _raised_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem(request, exc.status, exc.slug, exc.title, exc.detail, headers=exc.headers)


async def _refusal(request: Request, exc: Exception) -> JSONResponse:
    """The engine refused: nothing changed. NotFound 404, Conflict 409, WebhookRefused 401, the rest 422 (the
    stores refuse bad input with StoreError or ValueError)."""
    if isinstance(exc, WebhookRefused):
        return problem(request, 401, "webhook-refused", "Webhook refused", str(exc))
    if isinstance(exc, Erased | CustomerDataErased):
        return problem(request, 410, "erased", "Customer data erased", str(exc))
    if isinstance(exc, NotFound | UnknownSkuError | UnknownWarehouseError):
        return problem(request, 404, "not-found", "Not found", str(exc))
    if isinstance(exc, Conflict):
        return problem(request, 409, "conflict", "Refused by the order's state", str(exc))
    if isinstance(exc, InvalidOrder):
        fields = []
        for text in exc.problems:
            name, _, message = text.partition(": ")
            fields.append(FieldProblem(field=name, location="body", message=message or text))
        return problem(request, 422, "invalid-order", "Invalid order", str(exc), errors=fields)
    return problem(request, 422, "invalid-request", "Invalid request", str(exc))


async def _under_way(request: Request, exc: Exception) -> JSONResponse:
    """Accepted, not finished within FULFILL_API_UPDATE_WAIT: 202 with the order as it stands now."""
    assert isinstance(exc, StillUnderWay)
    view = await request.app.state.api.order_status(exc.order_id)
    location = {"Location": f"/v1/orders/{exc.order_id}"}
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=location)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Temporal or the database did not answer: the request may not have been carried out; retry it (every write
    here is idempotent or refused the second time)."""
    if isinstance(exc, RuntimeError) and not str(exc).startswith(_CONNECT_FAILED):
        return await _internal(request, exc)
    if isinstance(exc, RPCError) and exc.status not in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    ):
        return await _internal(request, exc)
    log.warning("%s %s: engine unavailable: %s", request.method, request.url.path, describe_exception(exc, limit=300))
    detail = "the engine did not answer in time; retry later"
    return problem(request, 503, "unavailable", "Engine unavailable", detail, headers={"Retry-After": "5"})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed: %s", request.method, request.url.path, describe_exception(exc, limit=500))
    return problem(request, 500, "internal", "Internal error", "the request failed inside the engine; see its log")


# What a lazy Temporal client raises while it cannot connect
_CONNECT_FAILED = "Failed client connect"


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    app.add_exception_handler(ProblemError, _raised_problem)
    app.add_exception_handler(FulfillmentError, _refusal)
    app.add_exception_handler(StoreError, _refusal)
    app.add_exception_handler(ValueError, _refusal)
    app.add_exception_handler(StillUnderWay, _under_way)
    unavailable_errors = (
        RPCError,
        RPCTimeoutOrCancelledError,
        WorkflowQueryFailedError,
        DBAPIError,
        OSError,
        RuntimeError,
    )
    for unavailable in unavailable_errors:
        app.add_exception_handler(unavailable, _unavailable)
    app.add_exception_handler(Exception, _internal)
