"""Payments gateway: refunds for returns, through the provider the settings name.

`PaymentsGateway` is what the returns activity calls: one refund per idempotency key (`refund:<rma_id>`), so a
retried or replayed refund never pays twice. `payments_gateway(settings)` builds it:

- `FULFILL_PAYMENTS_PROVIDER=stripe`: `StripePayments` (stripe_payments.py), Stripe's own SDK; with
  `FULFILL_STRIPE_API_BASE` unset it talks to the real Stripe (the embedded stack points it at the sandbox's
  Stripe-shaped server).
- unset: `UnconfiguredPayments`, which declines every refund, so a return waits for ops instead of the
  customer being told about money that never moved.

Errors say whether retrying helps: `PaymentUnavailable` (try again later) and `PaymentDeclined` (retrying
cannot fix it: ops must look). Their messages carry ids and amounts, never customer data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from common.config import Settings


class PaymentError(Exception):
    """The gateway did not refund."""


class PaymentUnavailable(PaymentError):
    """Temporary: the gateway is down, overloaded or timed out. Retrying later may work."""


class PaymentDeclined(PaymentError):
    """Final: the gateway refused the refund (e.g. no such payment, a bad key); ops must look."""


@dataclass(frozen=True)
class RefundReceipt:
    refund_id: str  # the provider's id (re_...)
    amount_cents: int
    currency: str
    already_refunded: bool  # the provider answered a repeated idempotency key with the refund it made before


class PaymentsGateway(Protocol):
    async def refund(
        self,
        *,
        key: str,
        order_id: str,
        payment_reference: str | None,
        amount_cents: int,
        currency: str,
        reason: str,
    ) -> RefundReceipt: ...


NOT_CONFIGURED = "no payments gateway is configured: set FULFILL_PAYMENTS_PROVIDER=stripe and FULFILL_STRIPE_API_KEY"


class UnconfiguredPayments:
    """No provider configured: every refund is declined (and so waits for ops), none is pretended."""

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
        raise PaymentDeclined(NOT_CONFIGURED)

    async def close(self) -> None:
        pass


class ClosablePaymentsGateway(PaymentsGateway, Protocol):
    async def close(self) -> None: ...


def payments_gateway(settings: Settings) -> ClosablePaymentsGateway:
    """The gateway the settings choose. ValueError if the chosen one lacks a setting it needs."""
    if settings.payments_provider == "stripe":
        from common.integrations.stripe_payments import StripePayments  # the SDK only where it is used

        return StripePayments(settings)
    return UnconfiguredPayments()
