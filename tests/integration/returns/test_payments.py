"""Refunds through Stripe's own SDK against the sandbox's Stripe-shaped server (real sockets, no mocks), and the
gateway the settings choose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe

from common.config import Settings
from common.integrations.payments import (
    NOT_CONFIGURED,
    PaymentDeclined,
    PaymentUnavailable,
    UnconfiguredPayments,
    payments_gateway,
)
from common.integrations.stripe_payments import StripePayments
from sandbox import SandboxServers, free_port_settings
from workers.devstack import with_sandbox_payments

REFUND: dict[str, Any] = {
    "key": "refund:RMA-ORD-7-1",
    "order_id": "ORD-7",
    "payment_reference": "pi_test_ORD_7",
    "amount_cents": 2500,
    "currency": "USD",
    "reason": "damaged",
}


def sandbox(tmp_path: Path) -> SandboxServers:
    settings = free_port_settings(
        var_dir=tmp_path,
    )
    return SandboxServers(settings, db_path=tmp_path / "sb.db")


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    async with sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
async def gateway(sb: SandboxServers) -> AsyncIterator[StripePayments]:
    gateway = payments_gateway(sb.settings_for_clients())
    assert isinstance(gateway, StripePayments)
    yield gateway
    await gateway.close()


async def test_refund_through_the_sdk(sb: SandboxServers, gateway: StripePayments) -> None:
    receipt = await gateway.refund(**REFUND)
    assert receipt.refund_id.startswith("re_")
    assert (receipt.amount_cents, receipt.currency, receipt.already_refunded) == (2500, "USD", False)
    [refund] = sb.refunds()
    assert refund["id"] == receipt.refund_id and refund["object"] == "refund"
    assert (refund["amount"], refund["currency"], refund["payment_intent"], refund["status"]) == (
        2500,
        "usd",
        "pi_test_ORD_7",
        "succeeded",
    )
    # Stripe's reasons are three; the return's own reason travels as metadata, with ids only
    assert refund["reason"] == "requested_by_customer"
    assert refund["metadata"] == {"order_id": "ORD-7", "refund_key": "refund:RMA-ORD-7-1", "reason": "damaged"}
    assert isinstance(refund["created"], int) and abs(refund["created"] - time.time()) < 60

    # The unmodified SDK reads it back, one by one and listed by PaymentIntent
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        sb.settings.sandbox_payments_api_key,
        base_addresses={"api": sb.payments_url},
        http_client=http,
        max_network_retries=0,
    )
    try:
        fetched = await client.v1.refunds.retrieve_async(receipt.refund_id)
        assert (fetched.id, fetched.amount, fetched.metadata["order_id"]) == (receipt.refund_id, 2500, "ORD-7")
        listed = await client.v1.refunds.list_async({"payment_intent": "pi_test_ORD_7"})
        assert [r.id for r in listed.data] == [receipt.refund_id] and listed.has_more is False
        assert (await client.v1.refunds.list_async({"payment_intent": "pi_other"})).data == []
        with pytest.raises(stripe.InvalidRequestError) as missing:
            await client.v1.refunds.retrieve_async("re_nope")
        assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    finally:
        await http.close_async()


async def test_the_same_key_twice_pays_once(sb: SandboxServers, gateway: StripePayments) -> None:
    first = await gateway.refund(**REFUND)
    again = await gateway.refund(**REFUND)
    assert again.already_refunded is True
    assert (again.refund_id, again.amount_cents) == (first.refund_id, first.amount_cents)
    assert len(sb.refunds()) == 1
    # The same key with another amount is a mistake Stripe refuses (idempotency_error): final, nothing paid
    with pytest.raises(PaymentDeclined, match="idempotency_error"):
        await gateway.refund(**{**REFUND, "amount_cents": 9900})
    assert len(sb.refunds()) == 1
    # Another key is another refund
    other = await gateway.refund(**{**REFUND, "key": "refund:RMA-ORD-7-2", "amount_cents": 100})
    assert not other.already_refunded and len(sb.refunds("pi_test_ORD_7")) == 2


@pytest.mark.parametrize("reference", ["ch_3MmlLrLkdIwHu7ix0snN0B15", "ORD-7", "pi_"])
async def test_no_such_payment_is_declined(sb: SandboxServers, gateway: StripePayments, reference: str) -> None:
    with pytest.raises(PaymentDeclined) as err:
        await gateway.refund(**{**REFUND, "payment_reference": reference})
    assert "resource_missing" in str(err.value) and "payment_intent" in str(err.value)
    assert sb.refunds() == []


async def test_an_order_without_payment_reference_is_declined(sb: SandboxServers, gateway: StripePayments) -> None:
    with pytest.raises(PaymentDeclined) as err:
        await gateway.refund(**{**REFUND, "payment_reference": None})
    assert str(err.value) == "order ORD-7 has no payment reference: refund it by hand"
    assert sb.refunds() == []


async def test_nothing_to_refund_moves_nothing(sb: SandboxServers, gateway: StripePayments) -> None:
    receipt = await gateway.refund(**{**REFUND, "amount_cents": 0})
    assert (receipt.refund_id, receipt.amount_cents) == ("", 0)
    assert sb.refunds() == []


async def test_wrong_api_key_is_refused(sb: SandboxServers) -> None:
    settings = sb.settings_for_clients().model_copy(update={"stripe_api_key": "sk_test_wrongkey123456"})
    gateway = payments_gateway(settings)
    try:
        with pytest.raises(PaymentDeclined) as err:
            await gateway.refund(**REFUND)
    finally:
        await gateway.close()
    assert "401" in str(err.value) and "sk_test_wrongkey123456" not in str(err.value)
    assert sb.refunds() == []


async def test_no_provider_configured_declines_every_refund() -> None:
    gateway = payments_gateway(Settings(payments_provider=None))
    assert isinstance(gateway, UnconfiguredPayments)
    with pytest.raises(PaymentDeclined) as err:
        await gateway.refund(**REFUND)
    assert str(err.value) == NOT_CONFIGURED
    assert "FULFILL_PAYMENTS_PROVIDER=stripe" in NOT_CONFIGURED and "FULFILL_STRIPE_API_KEY" in NOT_CONFIGURED
    with pytest.raises(ValueError, match="FULFILL_STRIPE_API_KEY"):
        payments_gateway(Settings(payments_provider="stripe", stripe_api_key=None))


async def test_make_run_points_the_stripe_adapter_at_the_sandbox(sb: SandboxServers) -> None:
    stack = Settings(sandbox_payments_port=sb.payments_port)
    shell = {"PATH": "/usr/bin", "FULFILL_STRIPE_API_KEY": "sk_live_someone", "FULFILL_STRIPE_API_BASE": "https://x"}
    settings, env = with_sandbox_payments(stack, shell)
    # What the worker process gets: the sandbox's key and address, never the shell's live key
    assert {k: v for k, v in env.items() if k.startswith("FULFILL_")} == {
        "FULFILL_PAYMENTS_PROVIDER": "stripe",
        "FULFILL_STRIPE_API_KEY": "sk_test_sandbox",
        "FULFILL_STRIPE_API_BASE": f"http://127.0.0.1:{sb.payments_port}",
    }
    gateway = payments_gateway(settings)
    try:
        assert (await gateway.refund(**REFUND)).refund_id == sb.refunds()[0]["id"]
    finally:
        await gateway.close()
    # A shell that chose a provider keeps its own settings
    chosen = {"FULFILL_PAYMENTS_PROVIDER": "stripe", "FULFILL_STRIPE_API_KEY": "sk_test_mine"}
    assert with_sandbox_payments(stack, chosen) == (stack, chosen)


async def test_silent_or_closed_server_is_unavailable_after_one_try(tmp_path: Path) -> None:
    """A server that takes the connection and never answers: the request timeout ends the wait, and the SDK
    does not try again (the workflow's retry policy does)."""
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(
        payments_provider="stripe", stripe_api_key="sk_test_x", stripe_api_base=f"http://127.0.0.1:{port}"
    )
    gateway = StripePayments(settings, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(PaymentUnavailable, match="unreachable"):
            await gateway.refund(**REFUND)
        assert time.monotonic() - started < 2
        await asyncio.sleep(0.1)
        assert connections == 1
        server.close()
        await server.wait_closed()
        with pytest.raises(PaymentUnavailable, match="unreachable"):
            await gateway.refund(**REFUND)  # nothing listens any more
    finally:
        await gateway.close()


async def test_refunds_and_their_keys_survive_a_restart(tmp_path: Path) -> None:
    async with sandbox(tmp_path) as sb:
        gateway = payments_gateway(sb.settings_for_clients())
        first = await gateway.refund(**REFUND)
        await gateway.close()
    async with sandbox(tmp_path) as sb:
        gateway = payments_gateway(sb.settings_for_clients())
        try:
            again = await gateway.refund(**REFUND)
        finally:
            await gateway.close()
        assert (again.refund_id, again.already_refunded) == (first.refund_id, True)
        assert [r["id"] for r in sb.refunds()] == [first.refund_id]


# ---------------------------------------------------------------------------------------------------------
# Stripe's wire format, as the SDK and other clients see it


async def post(sb: SandboxServers, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    auth = {"Authorization": f"Bearer {sb.settings.sandbox_payments_api_key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sb.payments_url}/v1/refunds", data=data, headers={**auth, **(headers or {})}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def test_wire_format_of_refunds_and_errors(sb: SandboxServers) -> None:
    form = {"payment_intent": "pi_1", "amount": "700", "metadata[order_id]": "ORD-1"}
    status, headers, created = await post(sb, form, {"Idempotency-Key": "k1"})
    assert status == 200 and "Idempotent-Replayed" not in headers and headers["Request-Id"].startswith("req_")
    status, headers, replayed = await post(sb, form, {"Idempotency-Key": "k1"})
    assert (status, headers["Idempotent-Replayed"], replayed) == (200, "true", created)
    status, _, body = await post(sb, {**form, "amount": "701"}, {"Idempotency-Key": "k1"})
    assert status == 400 and body["error"]["type"] == "idempotency_error"

    for data, param, code in [
        ({"amount": "5"}, None, "parameter_missing"),
        ({"payment_intent": "pi_1"}, "amount", "parameter_missing"),
        ({"payment_intent": "pi_1", "amount": "-5"}, "amount", "parameter_invalid_integer"),
        ({"payment_intent": "pi_1", "amount": "1.5"}, "amount", "parameter_invalid_integer"),
        ({"payment_intent": "pi_1", "amount": "5", "colour": "red"}, "colour", "parameter_unknown"),
        ({"payment_intent": "pi_1", "amount": "5", "reason": "damaged"}, "reason", None),
        ({"payment_intent": "pi_1", "amount": "5", "currency": "eur"}, "currency", None),  # pi_1 is in usd
    ]:
        status, _, body = await post(sb, data, {"Idempotency-Key": f"bad-{data}"})
        error = body["error"]
        assert (status, error["type"], error.get("param"), error.get("code")) == (
            400,
            "invalid_request_error",
            param,
            code,
        ), data
    # A refused request saved nothing under its key: corrected, the same key makes the refund
    status, _, body = await post(
        sb, {"payment_intent": "pi_2", "amount": "5"}, {"Idempotency-Key": "bad-{'amount': '5'}"}
    )
    assert status == 200 and body["payment_intent"] == "pi_2"
    assert [r["amount"] for r in sb.refunds()] == [700, 5]

    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer sk_test_nope1234"}, {"Authorization": "Basic Zm9vOg=="}):
            async with http.post(f"{sb.payments_url}/v1/refunds", data=form, headers=headers) as resp:
                assert resp.status == 401
                error = (await resp.json())["error"]
                assert error["type"] == "invalid_request_error" and "API key" in error["message"].replace("Key", "key")
        async with http.get(
            f"{sb.payments_url}/v1/charges", headers={"Authorization": "Bearer sk_test_sandbox"}
        ) as resp:
            assert resp.status == 404 and "Unrecognized request URL" in (await resp.json())["error"]["message"]
    assert len(sb.refunds()) == 2
