"""/v1/webhooks/twilio: Twilio's status callbacks and inbound messages (STOP, START, HELP).

No API key: Twilio signs each request (X-Twilio-Signature: HMAC-SHA1, keyed with the account's auth token
FULFILL_TWILIO_AUTH_TOKEN, of the URL Twilio called followed by the form's fields) and the signature is the
authentication. It is checked over the URL as Twilio called it: FULFILL_API_PUBLIC_URL's scheme and host when set
(behind a proxy the request arrives with another), with the path and the query exactly as they came. No
signature: 401; a wrong one: 403; either way nothing changes. The routes parse, check and hand the form to
FulfillmentApi (common/api/sms.py), which acts on it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import APIKeyHeader
from twilio.request_validator import RequestValidator

from common.api.sms import InboundSmsResult, StatusCallbackResult
from common.http.auth import api_of
from common.http.problems import PROBLEM_JSON, Problem, ProblemError

router = APIRouter(prefix="/v1/webhooks/twilio", tags=["webhooks"])

FORM = "application/x-www-form-urlencoded"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Documents the signature as the webhooks' security scheme (the check itself is `signed_form`'s)
twilio_signature = APIKeyHeader(
    name=SIGNATURE_HEADER,
    scheme_name="TwilioSignature",
    auto_error=False,
    description="Twilio's request signature: HMAC-SHA1 of the URL Twilio called and the form's fields, keyed with the "
    "account's auth token (FULFILL_TWILIO_AUTH_TOKEN), base64.",
)
Signature = Annotated[str | None, Depends(twilio_signature)]


class _Form(dict[str, str]):
    """The form's first value of each field, and every value of a field through `getlist` (what Twilio's
    RequestValidator reads, so a repeated field is signed as Twilio signs it)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for name, value in pairs:
            self._all.setdefault(name, []).append(value)
            self.setdefault(name, value)

    def getlist(self, name: str) -> list[str]:
        return self._all.get(name, [])


def signed_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio called: the request's own, or with `public_url`'s scheme and host instead (a proxy in
    between); path and query as they arrived, byte for byte."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    tail = path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    if public_url:
        return public_url.rstrip("/") + tail
    return f"{request.url.scheme}://{request.url.netloc}{tail}"


async def signed_form(request: Request, signature: str | None) -> _Form:
    """The form Twilio posted, once its `signature` is checked."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise ProblemError(
            415, "unsupported-media-type", "Unsupported media type", f"Twilio posts {FORM}, not {content_type or '-'}"
        )
    try:
        form = _Form(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise ProblemError(400, "malformed-form", "Malformed form", "the form is not UTF-8") from None
    if not signature:
        raise ProblemError(
            401, "unsigned", "No signature", f"a Twilio webhook is signed: the {SIGNATURE_HEADER} header is missing"
        )
    settings = api_of(request).settings
    if not RequestValidator(settings.twilio_auth_token).validate(
        signed_url(request, settings.api_public_url), form, signature
    ):
        raise ProblemError(
            403,
            "invalid-signature",
            "Invalid signature",
            f"{SIGNATURE_HEADER} does not match this URL and form for the account's auth token",
        )
    return form


def _form_body(fields: dict[str, str], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {name: {"type": "string", "description": what} for name, what in fields.items()},
        "required": required,
    }
    problems = {
        code: {"model": Problem, "description": what, "content": {PROBLEM_JSON: {}}}
        for code, what in (
            (401, "No X-Twilio-Signature"),
            (403, "A signature that does not match"),
            (415, "Not a form"),
        )
    }
    return {
        "openapi_extra": {"requestBody": {"required": True, "content": {FORM: {"schema": schema}}}},
        "responses": problems,
    }


_STATUS = _form_body(
    {
        "MessageSid": "The message (SM...)",
        "MessageStatus": "queued, sent, delivered, undelivered, failed, ...",
        "ErrorCode": "With undelivered and failed: Twilio's error code (e.g. 30003)",
        "To": "The customer's number",
        "From": "Our number",
        "AccountSid": "The account",
    },
    ["MessageSid", "MessageStatus"],
)


@router.post(
    "/status",
    summary="Twilio status callback",
    description="Twilio reports what became of an SMS (`StatusCallback`: FULFILL_SMS_STATUS_CALLBACK_URL, with the "
    "message's `key` in the query). The message's delivery status moves forward only (a late `sent` after "
    "`delivered` changes nothing); each (MessageSid, MessageStatus) is acted on once (a repeat answers `duplicate`); "
    "a customer SMS reported `undelivered` or `failed` is sent by email once, unless the notice's email went out. "
    "Answers 200 with what it did.",
    **_STATUS,
)
async def status_callback(request: Request, signature: Signature) -> dict[str, Any]:
    form = await signed_form(request, signature)
    result: StatusCallbackResult = await api_of(request).sms_status_callback(form, key=request.query_params.get("key"))
    return {"outcome": result.outcome, "key": result.key, "status": result.status, "fallback": result.fallback}


_INBOUND = _form_body(
    {
        "MessageSid": "The inbound message (SM...)",
        "From": "The customer's number",
        "To": "Our number",
        "Body": "What they texted",
        "OptOutType": "With Advanced Opt-Out: STOP, START or HELP",
    },
    ["MessageSid", "From"],
)


@router.post(
    "/inbound",
    summary="Twilio inbound message",
    description="A customer texted our number (the number's or Messaging Service's incoming message webhook). "
    "STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT: no more SMS to that number (email goes on); START, YES, "
    "UNSTOP: SMS again. Both are answered with an empty `<Response/>`: Twilio's opt-out handling sends its own "
    "confirmation. HELP, INFO: answered with FULFILL_SMS_HELP_REPLY in a `<Message>`. Anything else: an empty "
    "`<Response/>`. The answer is TwiML (text/xml).",
    response_class=Response,
    responses={200: {"content": {"text/xml": {}}, "description": "TwiML"}, **_INBOUND["responses"]},
    openapi_extra=_INBOUND["openapi_extra"],
)
async def inbound(request: Request, signature: Signature) -> Response:
    form = await signed_form(request, signature)
    result: InboundSmsResult = await api_of(request).sms_inbound(form)
    return Response(result.twiml, media_type="text/xml")
