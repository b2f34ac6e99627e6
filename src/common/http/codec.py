"""The codec server: Temporal's remote codec protocol (`POST /codec/decode`, `POST /codec/encode`) on the HTTP API,
so an ops person reads an order's history decoded in the Web UI and with `temporal --codec-endpoint`; everyone else
sees the ciphertext Temporal stores.

Who may: an API key with the `ops` scope, as `Authorization: Bearer <key>` (what `temporal --codec-auth` sends) or,
in a browser, as the HttpOnly cookie `GET /codec/` sets once the ops person pastes their key there. The Web UI
sends that cookie only when its per-browser "Codec Server" setting names this endpoint with "Include cross-origin
credentials" on (the dev server's `--ui-codec-endpoint` cannot turn credentials on); README, "Reading encrypted
histories", has the steps. CORS answers only the Web UI's origins (`FULFILL_CODEC_CORS_ORIGINS`).

Decoding uses the engine's codec without a cache of customers' data keys, so a customer forgotten by another
process reads as a note saying so, at once. Payload contents are never logged.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials
from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from common.access.contracts import ApiKey
from common.config import Settings
from common.crypto.codec import EncryptionCodec, PayloadUndecodable
from common.http.auth import bearer, ops_key
from common.http.problems import ProblemError, responses
from common.privacy import payload_codec

PREFIX = "/codec"
COOKIE = "fulfill_codec_key"

router = APIRouter(prefix=PREFIX, tags=["codec server"])

signed_in = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="CodecCookie",
    description=f"An ops API key, set as an HttpOnly cookie by `POST {PREFIX}/login` (the browser's way in).",
)


def cors_origins(settings: Settings) -> list[str]:
    if settings.codec_cors_origins:
        return [o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip()]
    port = settings.temporal_ui_port
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


class CodecCors:
    """CORS for the codec server's paths only: the rest of the API is for programs, not for pages of other origins."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            # The Web UI's "Include cross-origin credentials": the cookie of /codec/login
            allow_credentials=True,
            allow_methods=["POST"],
            # What the Web UI sends (services/data-encoder.ts), and the token some UIs pass
            allow_headers=["Content-Type", "X-Namespace", "Authorization", "Authorization-Extras"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _codec(request: Request) -> EncryptionCodec:
    codec: EncryptionCodec | None = getattr(request.app.state, "codec", None)
    if codec is None:
        settings: Settings = request.app.state.settings
        # No cache: a customer forgotten by another process is unreadable here from that moment
        codec = request.app.state.codec = payload_codec(settings, cache=False, erased_placeholder=True)
    return codec


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def codec_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    cookie: Annotated[str | None, Depends(signed_in)],
) -> ApiKey:
    """The caller's ops key, from the Authorization header or the browser's cookie. Anything else is 401 (a key
    without ops is no key here), so the Web UI shows ciphertext and the CLI says why."""
    from_header = credentials.credentials if credentials is not None else None
    secret = from_header or cookie
    challenge = {"WWW-Authenticate": 'Bearer realm="fulfill codec"'}
    if not secret:
        detail = f"send an ops API key: Authorization: Bearer <key>, or sign in at {PREFIX}/ in the browser"
        raise ProblemError(401, "unauthenticated", "No API key", detail, headers=challenge)
    key = await ops_key(request, secret)
    if key is None:
        detail = "the API key is not valid, was revoked, or lacks the ops scope the codec server needs"
        raise ProblemError(401, "unauthenticated", "Not an ops API key", detail, headers=challenge)
    return key


def _namespace(request: Request) -> None:
    namespace = request.headers.get("X-Namespace")
    expected = _settings(request).temporal_namespace
    if not namespace:
        raise ProblemError(400, "missing-namespace", "No namespace", "send the namespace: X-Namespace: " + expected)
    if namespace != expected:
        detail = f"this codec server decodes namespace {expected!r} only, not {namespace!r}"
        raise ProblemError(403, "forbidden-namespace", "Other namespace", detail)


OpsKey = Annotated[ApiKey, Depends(codec_caller)]

# The JSON form of temporal.api.common.v1.Payloads, for the OpenAPI schema (the body is read by protobuf)
_BYTES = {"type": "string", "format": "byte"}
PAYLOADS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "payloads": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"metadata": {"type": "object", "additionalProperties": _BYTES}, "data": _BYTES},
            },
        }
    },
}
_CODEC_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "X-Namespace", "in": "header", "required": True, "schema": {"type": "string"}},
    ],
    "requestBody": {"required": True, "content": {"application/json": {"schema": PAYLOADS_SCHEMA}}},
}
CODEC_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The payloads, decoded or encoded",
        "content": {"application/json": {"schema": PAYLOADS_SCHEMA}},
    },
    **responses(400, 401, 403, 413, 422, 503),
}


def _malformed(detail: str) -> ProblemError:
    return ProblemError(400, "malformed-payloads", "Malformed payloads", detail)


async def _payloads(request: Request) -> Payloads:
    """The body as Payloads, checked strictly (protobuf's JSON reader would take '!!' for empty bytes)."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as err:
        raise _malformed(f"the body is not valid JSON: {err}") from err
    if not isinstance(body, dict) or not isinstance(body.get("payloads", []), list):
        raise _malformed('the body is not {"payloads": [{"metadata": {...}, "data": "<base64>"}]}')
    for i, payload in enumerate(body.get("payloads", [])):
        if not isinstance(payload, dict) or not isinstance(payload.get("metadata", {}), dict):
            raise _malformed(f'payloads[{i}] is not {{"metadata": {{...}}, "data": "<base64>"}}')
        fields = [(f"metadata.{k}", v) for k, v in payload.get("metadata", {}).items()]
        for where, value in [*fields, ("data", payload.get("data", ""))]:
            if not _is_base64(value):
                raise _malformed(f"payloads[{i}].{where} is not base64")
    try:
        return json_format.ParseDict(body, Payloads())
    except json_format.ParseError as err:
        raise _malformed(str(err)) from err


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _answer(payloads: list[Any]) -> JSONResponse:
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=payloads)) or {"payloads": []})


@router.post(
    "/decode",
    summary="Decode payloads (Temporal's remote codec protocol)",
    responses=CODEC_RESPONSES,
    openapi_extra=_CODEC_OPENAPI,
    dependencies=[Depends(_namespace)],
)
async def decode(request: Request, key: OpsKey) -> JSONResponse:
    """`{"payloads": [...]}` as Temporal stores them, answered decoded. A forgotten customer's payload decodes to
    `{"erased": "customer C-1's data was erased on ..."}`."""
    payloads = await _payloads(request)
    try:
        decoded = await _codec(request).decode(list(payloads.payloads))
    except PayloadUndecodable as err:  # names key ids, never contents
        raise ProblemError(422, "undecodable", "Payload cannot be decoded", str(err)) from err
    return _answer(decoded)


@router.post(
    "/encode",
    summary="Encode payloads (Temporal's remote codec protocol)",
    responses=CODEC_RESPONSES,
    openapi_extra=_CODEC_OPENAPI,
    dependencies=[Depends(_namespace)],
)
async def encode(request: Request, key: OpsKey) -> JSONResponse:
    """What the Web UI sends when an ops person signals or updates an order with input. Encrypted with the newest
    master key; not with the customer's data key (the request does not say which workflow it is for)."""
    payloads = await _payloads(request)
    return _answer(await _codec(request).encode(list(payloads.payloads)))


# The browser's door: a page to paste the key into, and a cookie that carries it to /decode.


def _endpoint(request: Request) -> str:
    public = _settings(request).api_public_url
    base = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return base + PREFIX


def _secure(request: Request) -> bool:
    """Over https (also as a TLS proxy forwarded it, X-Forwarded-Proto): the cookie is then never sent in clear."""
    public = _settings(request).api_public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _page(request: Request, key: ApiKey | None, error: str | None = None, status: int = 200) -> HTMLResponse:
    endpoint = html.escape(_endpoint(request))
    if key is not None:
        state = (
            f'<p class="ok">Signed in with API key <b>{html.escape(key.name)}</b> (ops): the Web UI decodes '
            f"payloads in this browser.</p>"
            f'<form method="post" action="{PREFIX}/logout"><button type="submit">Sign out</button></form>'
        )
    else:
        state = (
            "<p>Not signed in: the Web UI shows payloads encrypted.</p>"
            f'<form method="post" action="{PREFIX}/login"><label for="key">Ops API key</label> '
            '<input id="key" name="key" type="password" autocomplete="off" required size="60" '
            'placeholder="fk_..."> <button type="submit">Sign in</button></form>'
            "<p><small>Get one with <code>fulfill api-key create --name YOUR-NAME --scope ops</code>.</small></p>"
        )
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Codec server: fulfillment engine</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.4}}
.error{{color:#a00}}.ok{{color:#060}}code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>Codec server</h1>
<p>Decodes the engine's encrypted payloads for the Temporal Web UI and the <code>temporal</code> CLI, for
holders of an ops API key.</p>
{problem}{state}
<h2>In the Web UI</h2>
<ol>
<li>Sign in above, in the browser you use the Web UI in. Open the Web UI under the same host name as this page
(both <code>127.0.0.1</code> or both <code>localhost</code>): the browser sends the cookie only within one site.</li>
<li>In the Web UI, open <b>Codec Server</b> (the settings of the data encoder, in the navigation bar), choose
<b>Use my browser setting and ignore Cluster-level setting</b>, enter <code>{endpoint}</code>, turn on
<b>Include cross-origin credentials</b>, and <b>Apply</b>.</li>
<li>Reload the workflow's page: inputs and results show decoded.</li>
</ol>
<h2>With the CLI</h2>
<pre>temporal workflow show -w order-ORD-1001 --codec-endpoint {endpoint} \\
    --codec-auth "Bearer $KEY"</pre>
</body></html>"""
    headers = {"Cache-Control": "no-store"}
    return HTMLResponse(body, status_code=status, headers=headers)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


@router.get("/", summary="The codec server's page: sign in for the Web UI", response_class=HTMLResponse)
async def page(request: Request) -> HTMLResponse:
    return _page(request, await ops_key(request, request.cookies.get(COOKIE)))


@router.post(
    "/login",
    summary="Sign in with an ops API key (a form field `key`): sets the cookie the Web UI's requests carry",
    status_code=303,
    response_class=RedirectResponse,
    responses=responses(401),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}
                }
            },
        }
    },
)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    secret = (form.get("key") or [""])[0].strip()
    key = await ops_key(request, secret)
    if key is None:
        detail = "that is not a valid ops API key (unknown, revoked, or without the ops scope)"
        if _wants_html(request):
            return _page(request, None, error=detail, status=401)
        raise ProblemError(401, "unauthenticated", "Not an ops API key", detail)
    answer = RedirectResponse(PREFIX + "/", status_code=303)
    answer.set_cookie(
        COOKIE,
        secret,
        max_age=_settings(request).codec_cookie_max_age,
        path=PREFIX,  # sent to the codec server only, not to the rest of the API or other ports of this host
        httponly=True,  # no script reads it, the Web UI's included
        samesite="lax",  # not sent on other sites' requests
        secure=_secure(request),
    )
    return answer


@router.post("/logout", summary="Sign out: the cookie is removed", status_code=303, response_class=RedirectResponse)
async def logout(request: Request) -> Response:
    answer = RedirectResponse(PREFIX + "/", status_code=303)
    answer.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="lax", secure=_secure(request))
    return answer
