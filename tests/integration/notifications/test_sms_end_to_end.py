"""SMS end to end on the session's stack: the worker sends through the sandbox Twilio, whose signed status
callbacks and customers' texts reach the engine's HTTP API over real sockets (`engine_http`), as Twilio's reach
a deployed engine. An order whose SMS cannot be delivered gets the email fallback once; a customer who texts STOP
is texted no more (email goes on) until START; HELP is answered; the log shows it all, masked."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from common.api import FulfillmentApi
from common.config import Settings
from common.models import OrderStatus
from common.store import Store
from sandbox import SandboxServers, text_from
from tests.integration.conftest import Cli
from tests.integration.http.conftest import new_key
from tests.orders import order_dict
from workers.devstack import with_engine_webhooks

pytestmark = pytest.mark.usefixtures("worker", "engine_http")

UNREACHABLE = "+15555530003"  # the sandbox network never delivers to it: 30003


def new_phone() -> str:
    return f"+1666{uuid.uuid4().int % 10**7:07d}"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


async def reach(api: FulfillmentApi, order_id: str, status: OrderStatus) -> None:
    async def there() -> bool:
        try:
            return (await api.order_status(order_id)).status == status
        except Exception:
            return False

    await eventually(there, f"{order_id} {status.value}")


async def pick(api: FulfillmentApi, store: Store, order_id: str) -> None:
    await reach(api, order_id, OrderStatus.PICKING)
    [task] = [t for t in await store.picks.for_order(order_id) if t.status == "open"]
    await api.confirm_pick(task.id)


def sms_of(sandbox: SandboxServers, order_id: str) -> list[Any]:
    return [m for m in sandbox.outbox(order_id) if m.channel == "sms"]


def emails_of(sandbox: SandboxServers, order_id: str) -> list[str]:
    return sorted(m.subject or "" for m in sandbox.outbox(order_id) if m.channel == "email")


async def test_an_order_whose_sms_is_undelivered_gets_each_message_by_email_once(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, engine_http: str, stack_settings: Settings
) -> None:
    order_id = f"ORD-S{uuid.uuid4().hex[:8]}"
    customer = order_dict()["customer"] | {"phone": UNREACHABLE}
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}, customer=customer))
    await pick(api, store, order_id)
    await reach(api, order_id, OrderStatus.COMPLETED)

    async def all_decided() -> bool:
        sms = [n for n in await store.notifications.notifications(order_id) if n.channel == "sms"]
        return len(sms) == 4 and all(n.fallback_status in ("sent", "not-needed") for n in sms)

    await eventually(all_decided, f"the fallbacks of {order_id}'s undelivered SMS")
    log = {n.key: n for n in await store.notifications.notifications(order_id)}
    for event in ("order_confirmed", "shipped", "out_for_delivery", "delivered"):
        sms = log[f"notify:{order_id}:{event}:sms"]
        assert (sms.status, sms.delivery_status) == ("sent", "undelivered"), event
        assert sms.delivery_error == "30003: Unreachable destination handset"
    # Out for delivery goes by SMS alone: that one came by email; the others' emails were sent anyway
    assert log[f"notify:{order_id}:out_for_delivery:sms"].fallback_status == "sent"
    assert {log[f"notify:{order_id}:{e}:sms"].fallback_status for e in ("order_confirmed", "shipped", "delivered")} == {
        "not-needed"
    }
    assert emails_of(sandbox, order_id) == sorted(
        [
            f"Order {order_id} confirmed",
            f"Order {order_id} has shipped",
            f"Order {order_id} is out for delivery",
            f"Order {order_id} was delivered",
        ]
    )

    # Twilio delivering the final callback again, signed, to the engine: acknowledged, nothing more sent
    out = log[f"notify:{order_id}:out_for_delivery:sms"]
    assert out.provider_message_id is not None
    form = {
        "MessageSid": out.provider_message_id,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "To": UNREACHABLE,
        "From": stack_settings.twilio_from_number,
    }
    url = f"{engine_http}/v1/webhooks/twilio/status?key={out.key}"
    signature = RequestValidator(stack_settings.twilio_auth_token).compute_signature(url, form)
    async with httpx.AsyncClient() as http:
        again = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    await asyncio.sleep(0.5)
    assert len(emails_of(sandbox, order_id)) == 4


async def test_stop_by_text_stops_the_orders_sms_and_start_restores_them(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, stack_settings: Settings, cli: Cli
) -> None:
    phone = new_phone()
    customer = order_dict()["customer"] | {"phone": phone}
    order_id = f"ORD-S{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(order_id, {"MUG-RED": 1}, customer=customer))
    await reach(api, order_id, OrderStatus.PICKING)

    async def confirmation_delivered() -> bool:
        return [m.status for m in sms_of(sandbox, order_id)] == ["delivered"]

    await eventually(confirmation_delivered, "the confirmation SMS delivered")

    # The customer texts STOP: the sandbox (Twilio) blocks the number, the engine records it
    stop = await text_from(sandbox.http_url, phone, "STOP")
    assert stop["engine"]["status"] == 200 and stop["engine"]["twiml"].endswith("<Response/>")
    assert stop["opted_out"] is True and stop["replies"][0].startswith("You have successfully been unsubscribed")
    assert await store.sms_opt_outs.is_opted_out(phone)
    help_ = await text_from(sandbox.http_url, phone, "help")
    assert help_["engine"]["messages"] == [stack_settings.sms_help_reply]

    # The order's next events: no SMS (not even tried), the emails go on
    await pick(api, store, order_id)
    await reach(api, order_id, OrderStatus.COMPLETED)
    assert len(sms_of(sandbox, order_id)) == 1
    assert emails_of(sandbox, order_id) == sorted(
        [f"Order {order_id} confirmed", f"Order {order_id} has shipped", f"Order {order_id} was delivered"]
    )
    log = {n.key: n for n in await store.notifications.notifications(order_id)}
    for event in ("shipped", "out_for_delivery", "delivered"):
        sms = log[f"notify:{order_id}:{event}:sms"]
        assert (sms.status, sms.delivery_status, sms.provider_message_id) == ("failed", "opted-out", None), event

    # What ops see: the CLI's table, masked; --json the same
    shown = await asyncio.to_thread(cli, "notifications", "--order", order_id)
    assert shown.returncode == 0, shown.stderr
    assert phone not in shown.stdout and "ada@example.com" not in shown.stdout
    assert f"+1•••••{phone[-4:]}" in shown.stdout and "a•••@example.com" in shown.stdout
    assert "opted-out" in shown.stdout and "delivered" in shown.stdout
    as_json = json.loads((await asyncio.to_thread(cli, "notifications", "--order", order_id, "--json")).stdout)
    assert {(n["event"], n["channel"], n["delivery_status"]) for n in as_json} >= {
        ("order_confirmed", "sms", "delivered"),
        ("shipped", "sms", "opted-out"),
    }
    assert phone not in json.dumps(as_json)

    # START: SMS again on the next order
    start = await text_from(sandbox.http_url, phone, "START")
    assert start["opted_out"] is False and not await store.sms_opt_outs.is_opted_out(phone)
    second = f"ORD-S{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(second, {"MUG-RED": 1}, customer=customer))

    async def texted_again() -> bool:
        return len(sms_of(sandbox, second)) == 1

    await eventually(texted_again, "the second order's confirmation SMS")
    await reach(api, second, OrderStatus.PICKING)
    await api.cancel_order(second, "test over")


async def test_an_orders_messages_over_http(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, engine_http: str
) -> None:
    order_id = f"ORD-S{uuid.uuid4().hex[:8]}"
    intake = await new_key(store, "intake", name=f"shop-{order_id}")
    other_shop = await new_key(store, "intake")
    reader = await new_key(store, "read")
    async with httpx.AsyncClient(base_url=engine_http, timeout=30) as http:
        placed = await http.post("/v1/orders", json=order_dict(order_id, {"MUG-RED": 1}), headers=intake)
        assert placed.status_code == 202, placed.text
        await reach(api, order_id, OrderStatus.PICKING)

        async def delivered() -> bool:
            return [m.status for m in sms_of(sandbox, order_id)] == ["delivered"]

        await eventually(delivered, "the confirmation SMS delivered")

        async def logged() -> bool:
            response = await http.get(f"/v1/orders/{order_id}/notifications", headers=reader)
            return any(n["delivery_status"] == "delivered" for n in response.json())

        await eventually(logged, "the delivery in the log")
        messages = (await http.get(f"/v1/orders/{order_id}/notifications", headers=intake)).json()
        assert [(n["event"], n["channel"]) for n in messages] == [
            ("order_confirmed", "email"),
            ("order_confirmed", "sms"),
        ]
        sms = next(n for n in messages if n["channel"] == "sms")
        assert (sms["status"], sms["delivery_status"], sms["to"]) == ("sent", "delivered", "+1•••••0100")
        assert "+15555550100" not in json.dumps(messages)
        # Another storefront's key, and an order that does not exist: 404
        assert (await http.get(f"/v1/orders/{order_id}/notifications", headers=other_shop)).status_code == 404
        assert (await http.get("/v1/orders/ORD-NOPE-1/notifications", headers=reader)).status_code == 404
        assert (await http.get(f"/v1/orders/{order_id}/notifications")).status_code == 401
    await api.cancel_order(order_id, "test over")


async def test_fulfill_dev_text_is_a_customer_texting(
    cli: Cli, store: Store, stack_settings: Settings, engine_http: str
) -> None:
    phone = new_phone()
    helped = await asyncio.to_thread(cli, "dev", "text", phone, "HELP")
    assert helped.returncode == 0, helped.stderr
    assert "the number gets SMS" in helped.stdout
    assert stack_settings.sms_help_reply and stack_settings.sms_help_reply[:40] in " ".join(helped.stdout.split())
    stopped = await asyncio.to_thread(cli, "dev", "text", phone, "stop")
    assert "opted out of SMS" in stopped.stdout and "successfully been unsubscribed" in stopped.stdout
    assert await store.sms_opt_outs.is_opted_out(phone)
    bad = await asyncio.to_thread(cli, "dev", "text", "555-0100", "STOP")
    assert bad.returncode == 2 and "E.164" in bad.stderr


def test_make_run_points_twilios_webhooks_at_its_own_api() -> None:
    settings = Settings(api_host="0.0.0.0", api_port=9090)
    moved, env = with_engine_webhooks(settings, {})
    assert moved.sms_status_callback_url == "http://127.0.0.1:9090/v1/webhooks/twilio/status"
    assert env["FULFILL_SANDBOX_SMS_INBOUND_URL"] == "http://127.0.0.1:9090/v1/webhooks/twilio/inbound"
    chosen = {"FULFILL_SMS_STATUS_CALLBACK_URL": "https://fulfill.example.com/v1/webhooks/twilio/status"}
    kept, env = with_engine_webhooks(settings, chosen)
    assert kept.sms_status_callback_url == Settings().sms_status_callback_url  # the shell's choice stays
    assert env["FULFILL_SMS_STATUS_CALLBACK_URL"] == chosen["FULFILL_SMS_STATUS_CALLBACK_URL"]
