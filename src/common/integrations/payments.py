"""Payments gateway: refunds for returns.

`PaymentsGateway` is the interface an adapter for a real provider (Stripe, Adyen...) implements: one refund per
idempotency key (`refund:<rma_id>`), so a retried or replayed refund never pays twice. `SandboxPayments` is
the embedded implementation: it keeps a refunds ledger table in the engine's database.

Errors say whether retrying helps: `PaymentUnavailable` (try again later) and `PaymentDeclined` (retrying
cannot fix it: ops must look).

Failure injection for demos and tests: `FULFILL_SANDBOX_PAYMENTS_FAIL=true` makes every sandbox refund fail as
"unavailable" from the start; `SANDBOX_FAULTS` (a per-process switch) lets a test turn failures on and off
while a worker runs in the same process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from common.config import Settings
from common.db.returns import ReturnsStore


class PaymentError(Exception):
    """The gateway did not refund."""


class PaymentUnavailable(PaymentError):
    """Temporary: the gateway is down or timed out. Retrying later may work."""


class PaymentDeclined(PaymentError):
    """Final: the gateway refused the refund (e.g. the original charge cannot be refunded)."""


@dataclass(frozen=True)
class RefundReceipt:
    refund_id: str
    amount_cents: int
    currency: str
    already_refunded: bool  # a repeated call with the same key: nothing was paid again


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


@dataclass
class SandboxFaults:
    """Test switch: while `unavailable` is true every sandbox refund fails as PaymentUnavailable; `decline`
    fails them as PaymentDeclined."""

    unavailable: bool = False
    decline: bool = False
    attempts: int = 0  # refund calls seen (for tests)

    def reset(self) -> None:
        self.unavailable = self.decline = False
        self.attempts = 0


SANDBOX_FAULTS = SandboxFaults()


class SandboxPayments:
    """Refunds written to the `refunds` table, once per key."""

    def __init__(self, returns: ReturnsStore, settings: Settings, faults: SandboxFaults = SANDBOX_FAULTS) -> None:
        self._returns = returns
        self._always_fail = settings.sandbox_payments_fail
        self._faults = faults

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
        self._faults.attempts += 1
        existing = await self._returns.get_refund(key)
        if existing is not None:
            return RefundReceipt(existing.refund_id, existing.amount_cents, existing.currency, already_refunded=True)
        if self._faults.decline:
            raise PaymentDeclined(f"refund {key} declined by the sandbox gateway (injected)")
        if self._always_fail or self._faults.unavailable:
            raise PaymentUnavailable(f"sandbox payments gateway unavailable (injected) for {key}")
        return RefundReceipt("re_" + secrets.token_hex(12), amount_cents, currency, already_refunded=False)
