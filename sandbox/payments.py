"""Sandbox payments: the part of Stripe's REST API that refunds use, faithful enough for the unmodified `stripe`
SDK (what the engine's StripePayments adapter calls).

- `POST /v1/refunds` (form-encoded: `payment_intent`, `amount`, `currency`, `reason`, `metadata[...]`),
  `GET /v1/refunds/{id}`, `GET /v1/refunds?payment_intent=pi_...` (newest first, `limit`, `starting_after`).
- `Authorization: Bearer <key>` (or Basic with the key as user), checked against one accepted key; Stripe's
  401 body otherwise.
- `Idempotency-Key` as Stripe honours it: the same key with the same parameters answers the refund made the
  first time again, with `Idempotent-Replayed: true`; with other parameters a 400 `idempotency_error`. Like
  Stripe, only requests that made a refund are saved: one refused by validation can be sent again, corrected.
- Errors are Stripe's `{"error": {"type", "code", "message", "param"}}`. Any `pi_...` PaymentIntent exists
  (the sandbox has no charges), anything else is `resource_missing`. `amount` is required: the sandbox does
  not know the payment's total, which Stripe would refund without it.
- During an outage (outages.py) every `/v1` call answers 503 `api_error`.

Refunds and idempotency keys are kept in the sandbox's SQLite store, across restarts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from sandbox.httputil import basic_auth
from sandbox.outages import Outages
from sandbox.store import SandboxStore

log = logging.getLogger("fulfill.sandbox.payments")

API_VERSION = "2025-09-30.clover"
REASONS = ("duplicate", "fraudulent", "requested_by_customer")
PAYMENT_INTENT = re.compile(r"^pi_[A-Za-z0-9_]+$")
CURRENCY = re.compile(r"^[a-z]{3}$")
METADATA = re.compile(r"^metadata\[(.*)\]$")
CREATE_PARAMS = {"payment_intent", "amount", "currency", "reason"}
LIST_PARAMS = {"payment_intent", "limit", "starting_after"}


def stripe_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    error: dict[str, Any] = {"type": type, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return web.json_response({"error": error}, status=status)


class _Reject(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> _Reject:
    return _Reject(stripe_error(400, message, code=code, param=param))


class PaymentsSandbox:
    def __init__(self, store: SandboxStore, *, api_key: str, outages: Outages | None = None) -> None:
        self._store = store
        self._api_key = api_key
        self._outages = outages if outages is not None else Outages()
        # PaymentIntents whose refunds Stripe declines, with the error code (e.g. a charge disputed meanwhile)
        self.declined: dict[str, str] = {}

    def decline_refunds(self, payment_intent: str, code: str = "charge_disputed") -> None:
        """Refunds of this PaymentIntent are declined (400 `code`) until allow_refunds: ops must step in."""
        self.declined[payment_intent] = code

    def allow_refunds(self, payment_intent: str) -> None:
        self.declined.pop(payment_intent, None)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/refunds", self.create_refund)
        app.router.add_get("/v1/refunds", self.list_refunds)
        app.router.add_get("/v1/refunds/{id}", self.get_refund)
        app.middlewares.append(self._middleware)

    def refunds(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        return self._store.refunds(payment_intent)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            response: web.StreamResponse = await handler(request)
            return response
        try:
            if self._outages.active("payments"):
                return self._headers(
                    request,
                    stripe_error(
                        503,
                        "Stripe is temporarily unavailable (sandbox outage). Please try again later.",
                        type="api_error",
                    ),
                )
            if (denied := self._authenticate(request)) is not None:
                return self._headers(request, denied)
            response = await handler(request)
        except _Reject as reject:
            response = reject.response
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            response = stripe_error(
                404,
                f"Unrecognized request URL ({request.method}: {request.path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            )
        return self._headers(request, response)

    def _headers(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
        response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", API_VERSION)
        if request.method == "POST" and "Idempotency-Key" in request.headers:
            response.headers["Idempotency-Key"] = request.headers["Idempotency-Key"]
        return response

    def _authenticate(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
        else:
            basic = basic_auth(header)
            key = basic[0] if basic is not None else ""
        if not key:
            return stripe_error(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/.",
            )
        if not secrets.compare_digest(key.encode(), self._api_key.encode()):
            return stripe_error(401, f"Invalid API Key provided: {_mask(key)}")
        return None

    # -- refunds ---------------------------------------------------------------------------------------------

    async def create_refund(self, request: web.Request) -> web.Response:
        form = await request.post()
        key = request.headers.get("Idempotency-Key")
        fingerprint = _fingerprint(request, form)
        if key is not None:
            replayed = self._replay_refund(key, fingerprint)
            if replayed is not None:
                return replayed
        params, metadata = _create_params(form)
        payment_intent = _payment_intent(params)
        amount = _amount(params)
        if payment_intent in self.declined:
            raise _invalid(
                f"Charge {_charge_of(payment_intent)} cannot be refunded ({self.declined[payment_intent]}).",
                code=self.declined[payment_intent],
            )
        currency = self._currency(params, payment_intent)
        doc = {
            "id": "re_" + secrets.token_hex(12),
            "object": "refund",
            "amount": amount,
            "balance_transaction": "txn_" + secrets.token_hex(12),
            "charge": _charge_of(payment_intent),
            "created": int(time.time()),
            "currency": currency,
            "destination_details": None,
            "metadata": metadata,
            "payment_intent": payment_intent,
            "reason": _reason(params),
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self._store.insert_refund(doc, idempotency_key=key, fingerprint=fingerprint)
        log.info(
            "refund %s of %d %s on %s (order %s)", doc["id"], amount, currency, payment_intent, metadata.get("order_id")
        )
        return web.json_response(doc)

    def _replay_refund(self, key: str, fingerprint: str) -> web.Response | None:
        """Stripe's answer to a repeated Idempotency-Key: the first response, or an error if the body differs."""
        if len(key) > 255:
            raise _invalid("Idempotency keys must be at most 255 characters long.", param="Idempotency-Key")
        seen = self._store.idempotent_refund(key)
        if seen is None:
            return None
        first_fingerprint, doc = seen
        if first_fingerprint != fingerprint:
            return stripe_error(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first "
                f"used with. Try using a key other than '{key}' if you meant to execute a different "
                "request.",
                type="idempotency_error",
            )
        response = web.json_response(doc)
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def _currency(self, params: dict[str, str], payment_intent: str) -> str:
        """The refund's currency: as asked, else the payment's (its earlier refunds'), else usd."""
        earlier = self._store.refunds(payment_intent)
        currency = params.get("currency", "").lower() or (earlier[0]["currency"] if earlier else "usd")
        if not CURRENCY.match(currency):
            raise _invalid(f"Invalid currency: {params['currency']}.", param="currency", code="invalid_currency")
        if earlier and earlier[0]["currency"] != currency:
            raise _invalid(
                f"The refund's currency ({currency}) must be the payment's currency ({earlier[0]['currency']}).",
                param="currency",
            )
        return currency

    async def get_refund(self, request: web.Request) -> web.Response:
        refund_id = request.match_info["id"]
        doc = self._store.refund(refund_id)
        if doc is None:
            raise _Reject(stripe_error(404, f"No such refund: '{refund_id}'", param="id", code="resource_missing"))
        return web.json_response(doc)

    async def list_refunds(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = sorted(set(query) - LIST_PARAMS)
        if unknown:
            raise _invalid(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
        limit = _positive_int(query.get("limit", "10"), "limit")
        if limit > 100:
            raise _invalid("This value must be less than or equal to 100.", param="limit")
        docs = list(reversed(self._store.refunds(query.get("payment_intent"))))  # newest first, as Stripe lists
        after = query.get("starting_after")
        if after:
            ids = [d["id"] for d in docs]
            if after not in ids:
                raise _Reject(
                    stripe_error(404, f"No such refund: '{after}'", param="starting_after", code="resource_missing")
                )
            docs = docs[ids.index(after) + 1 :]
        return web.json_response(
            {"object": "list", "url": "/v1/refunds", "has_more": len(docs) > limit, "data": docs[:limit]}
        )


def _create_params(form: MultiDictProxy[Any]) -> tuple[dict[str, str], dict[str, str]]:
    params: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(value, str):
            raise _invalid(f"Invalid value for {name}: files are not accepted here.", param=name)
        if match := METADATA.match(name):
            meta_key = match.group(1)
            if not meta_key or len(meta_key) > 40:
                raise _invalid("Metadata keys must be 1 to 40 characters long.", param=name)
            if len(value) > 500:
                raise _invalid("Metadata values can have up to 500 characters.", param=name)
            if value:  # an empty value unsets the key, as on Stripe
                metadata[meta_key] = value
        elif name in CREATE_PARAMS:
            params[name] = value
        else:
            raise _invalid(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
    if len(metadata) > 50:
        raise _invalid("You can have up to 50 metadata keys.", param="metadata")
    return params, metadata


def _positive_int(value: str, param: str) -> int:
    if not re.fullmatch(r"\d+", value):
        raise _invalid(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")
    number = int(value)
    if number <= 0:
        raise _invalid("This value must be greater than or equal to 1.", param=param, code="parameter_invalid_integer")
    return number


def _fingerprint(request: web.Request, form: MultiDictProxy[Any]) -> str:
    """What makes two requests "the same parameters" for an idempotency key."""
    items = sorted((name, str(value)) for name, value in form.items())
    return json.dumps([request.method, request.path, items])


def _mask(key: str) -> str:
    """Stripe's way of showing a wrong key: its prefix and last four characters."""
    prefix = m.group(0) if (m := re.match(r"^[a-z]+_(test_|live_)?", key)) else ""
    if len(key) - len(prefix) <= 4:
        return prefix + "*" * (len(key) - len(prefix))
    return prefix + "*" * (len(key) - len(prefix) - 4) + key[-4:]


def _charge_of(payment_intent: str) -> str:
    # One charge per PaymentIntent, as Stripe's refunds of it show
    return "ch_" + hashlib.sha256(payment_intent.encode()).hexdigest()[:24]


def _payment_intent(params: dict[str, str]) -> str:
    payment_intent = params.get("payment_intent")
    if not payment_intent:
        raise _invalid(
            "One of the following params should be provided for this request: payment_intent or charge.",
            code="parameter_missing",
        )
    if not PAYMENT_INTENT.match(payment_intent):
        raise _invalid(f"No such payment_intent: '{payment_intent}'", param="payment_intent", code="resource_missing")
    return payment_intent


def _amount(params: dict[str, str]) -> int:
    if "amount" not in params:
        raise _invalid(
            "Missing required param: amount (the sandbox does not know the payment's total).",
            param="amount",
            code="parameter_missing",
        )
    return _positive_int(params["amount"], "amount")


def _reason(params: dict[str, str]) -> str | None:
    reason = params.get("reason") or None
    if reason is not None and reason not in REASONS:
        raise _invalid(f"Invalid reason: must be one of {', '.join(REASONS[:-1])}, or {REASONS[-1]}", param="reason")
    return reason
