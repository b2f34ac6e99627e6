"""GET /dashboard: the ops dashboard, server-rendered HTML with inline SVG charts (works offline).

A browser cannot send a bearer header on navigation, so the page has its own sign-in: POST /dashboard/login with
an ops key sets an HttpOnly, SameSite=Strict cookie for Path=/dashboard only (the codec server's cookie stays
on /codec: widening it would send the key with every API call and to the Web UI's cross-origin requests)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from common.access.contracts import ApiKey
from common.api.kpi import Dashboard
from common.config import Settings
from common.http.auth import api_of, bearer, ops_key
from common.kpi import charts

PREFIX = "/dashboard"
COOKIE = "fulfill_dashboard"
router = APIRouter(prefix=PREFIX, tags=["dashboard"])
signed_in = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="DashboardCookie",
    description=f"An ops API key, set as an HttpOnly cookie by `POST {PREFIX}/login` (the browser's way in).",
)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)

# The dashboard answers HTML, its refusals too (the sign-in form): a person reads them.
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}
            }
        },
    }
}


async def ops_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    cookie: Annotated[str | None, Depends(signed_in)],
) -> ApiKey | None:
    """The ops key of the bearer header (programs) or of the sign-in cookie (browsers); None otherwise."""
    return await ops_key(request, credentials.credentials if credentials else cookie)


def _sign_in(error: str | None, status: int) -> HTMLResponse:
    return HTMLResponse(templates.get_template("dashboard_login.html").render(error=error), status_code=status)


def ui_link(settings: Settings, status: str) -> str:
    """The Temporal Web UI's list of the orders in `status`."""
    host = settings.temporal_address.rsplit(":", 1)[0] or "127.0.0.1"
    query = quote(f'OrderStatus="{status}"', safe="")
    return f"http://{host}:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}/workflows?query={query}"


def render(data: Dashboard, settings: Settings) -> str:
    r = data.report
    labels = [(r.start + timedelta(days=i)).strftime("%m-%d") for i in range(len(r.orders_per_day))]
    statuses = list(data.open_by_status)
    on_time = [None if v is None else round(v * 100, 1) for v in data.on_time_by_day]
    forecast = data.forecasts[:20]
    svg = {
        "orders": charts.bar_chart("Orders per day", labels, r.orders_per_day),
        "on_time": charts.line_chart("On-time delivery % per day", labels, on_time, top=100),
        "status": charts.bar_chart(
            "Open orders by status",
            statuses,
            list(data.open_by_status.values()),
            [ui_link(settings, s) for s in statuses],
        ),
        "forecast": charts.bar_chart(
            "Forecast units per day",
            [f"{f.sku}@{f.warehouse}" for f in forecast],
            [round(f.plan.mean_daily, 2) for f in forecast],
        ),
    }
    page = templates.get_template("dashboard.html")
    return page.render(
        r=r, data=data, svg={k: Markup(v) for k, v in svg.items()}, ui_link=lambda s: ui_link(settings, s)
    )


@router.get(
    "",
    summary="The ops dashboard (HTML): KPIs, open and stuck orders, low stock, forecast",
    response_class=HTMLResponse,
    responses={401: {"description": "No ops key: the sign-in form", **_HTML}},
)
async def dashboard(request: Request, key: Annotated[ApiKey | None, Depends(ops_caller)]) -> Response:
    if key is None:
        return _sign_in(None, 401)
    data = await api_of(request).dashboard()
    return HTMLResponse(render(data, request.app.state.settings), headers={"Cache-Control": "no-store"})


@router.post(
    "/login",
    summary="Sign in with an ops API key (form field `key`): sets the dashboard's cookie",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        200: {"description": "The dashboard it leads to", **_HTML},
        401: {"description": "Not an ops key: the sign-in form again", **_HTML},
    },
    openapi_extra=_FORM,
)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    secret = (form.get("key") or [""])[0].strip()
    if await ops_key(request, secret) is None:
        return _sign_in("that is not a valid ops API key (unknown, revoked, or without the ops scope)", 401)
    answer = RedirectResponse(PREFIX, status_code=303)
    settings: Settings = request.app.state.settings
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    answer.set_cookie(
        COOKIE,
        secret,
        max_age=settings.codec_cookie_max_age,
        path=PREFIX,  # the dashboard's pages only, not the API
        httponly=True,
        samesite="strict",  # never sent on another site's request: no cross-site reads of the page
        secure=secure,
    )
    return answer


@router.post(
    "/logout",
    summary="Sign out of the dashboard",
    status_code=303,
    response_class=RedirectResponse,
    responses={200: {"description": "The sign-in form it leads to", **_HTML}, 401: {"description": "ditto", **_HTML}},
)
async def logout() -> Response:
    answer = RedirectResponse(PREFIX, status_code=303)
    answer.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return answer
