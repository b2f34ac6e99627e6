"""Refunds through Stripe's own SDK (`stripe`), on its async API over aiohttp (the SDK's `AIOHTTPClient`).

The SDK does not retry (`max_network_retries=0`): the workflow's retry policy does, visibly, with its own
backoff and attempt limit. Each request has a total timeout. The idempotency key is the caller's business key,
so a retried activity gets the refund Stripe made the first time (`Idempotent-Replayed: true`) instead of a
second one.
"""

from __future__ import annotations

import aiohttp
import stripe
from stripe.params import RefundCreateParams

from common.config import Settings
from common.integrations.payments import PaymentDeclined, PaymentUnavailable, RefundReceipt

# The SDK's telemetry writes an id under ~/.config/stripe and sends it, with platform details, on every
# request: not something a worker should do on a machine's home directory.
stripe.enable_telemetry = False

STRIPE_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


class StripePayments:
    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        if not settings.stripe_api_key:
            raise ValueError("FULFILL_PAYMENTS_PROVIDER=stripe needs FULFILL_STRIPE_API_KEY")
        # Its session is opened on the first request, in the loop that makes it
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None,
            http_client=self._http,
            max_network_retries=0,
        )

    async def refund(
        self,
        *,
        key: str,
        order_id: str,
        payment_reference: str | None,
        amount_cents: int,
        currency: str,
        reason: str,
    ) -> RefundReceipt:
        if not payment_reference:
            raise PaymentDeclined(f"order {order_id} has no payment reference: refund it by hand")
        if amount_cents < 0:
            raise PaymentDeclined(f"refund {key} of order {order_id}: negative amount {amount_cents}")
        if amount_cents == 0:
            # Stripe refuses a zero amount; nothing is owed, so nothing moves and no provider id exists
            return RefundReceipt(refund_id="", amount_cents=0, currency=currency.upper(), already_refunded=False)
        params: RefundCreateParams = {
            "payment_intent": payment_reference,
            "amount": amount_cents,
            "currency": currency.lower(),
            # Stripe knows three reasons; a return's own reason (damaged, ...) goes along as metadata
            "reason": reason if reason in STRIPE_REASONS else "requested_by_customer",
            "metadata": {"order_id": order_id, "refund_key": key, "reason": reason},
        }
        what = f"Stripe refund {key} of order {order_id}"
        try:
            refund = await self._client.v1.refunds.create_async(params=params, options={"idempotency_key": key})
        except stripe.StripeError as err:
            raise _error(what, err) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:  # reading the body is outside the SDK's net
            raise PaymentUnavailable(f"{what}: Stripe unreachable ({type(err).__name__})") from err
        if refund.status in ("failed", "canceled", "requires_action"):
            raise PaymentDeclined(f"{what}: refund {refund.id} is {refund.status}")
        response = refund.last_response
        replayed = response is not None and response.headers.get("Idempotent-Replayed") == "true"
        return RefundReceipt(
            refund_id=refund.id,
            amount_cents=refund.amount,
            currency=refund.currency.upper(),
            already_refunded=replayed,
        )

    async def close(self) -> None:
        await self._http.close_async()


def _error(what: str, err: stripe.StripeError) -> PaymentUnavailable | PaymentDeclined:
    status = err.http_status
    if isinstance(err, stripe.APIConnectionError) or status is None:
        return PaymentUnavailable(f"{what}: Stripe unreachable")
    detail = f"HTTP {status}"
    error = err.error
    if error is not None:
        detail += "".join(f" {part}" for part in (error.type, error.code) if part)
        if error.param:
            detail += f" (param {error.param})"
    message = err.user_message or ""
    # 409: the same key is being used by a concurrent request right now, which a retry resolves
    if status in (409, 429) or status >= 500:
        return PaymentUnavailable(f"{what}: {detail}: {message}")
    return PaymentDeclined(f"{what}: {detail}: {message}")
