"""Twilio's webhooks at the engine, posted as Twilio posts them (a signed form) through the real app: a status
callback updates the delivery log, forged or unsigned ones are refused and change nothing, a replay is
acknowledged once, statuses out of order never move a message back, an undelivered SMS falls back to email once;
inbound STOP, START and HELP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from common.api import FulfillmentApi
from common.api.sms import start_sms_fallback
from common.config import Settings
from common.http.app import create_app
from common.notifications.contracts import NotificationClaim, SmsFallbackResult
from common.store import Store
from sandbox import SandboxServers
from tests.integration.http.test_http_orders import assert_problem
from workers.reconciler import FallbackRelay

BASE = "http://engine.test"
STATUS = "/v1/webhooks/twilio/status"
INBOUND = "/v1/webhooks/twilio/inbound"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def sign(token: str, url: str, form: dict[str, str]) -> str:
    return RequestValidator(token).compute_signature(url, form)


async def post_signed(
    http: httpx.AsyncClient,
    path: str,
    form: dict[str, str],
    *,
    token: str,
    signed_as: str = BASE,
    signature: str | None = None,
) -> httpx.Response:
    """POST the form as Twilio does: urlencoded, signed over the URL (`signed_as` + `path`) and the form."""
    headers = {**FORM, "X-Twilio-Signature": signature or sign(token, signed_as + path, form)}
    return await http.post(path, content=urlencode(form), headers=headers)


class Sms:
    """A customer SMS in the delivery log, as the notify activity leaves it once Twilio accepted it."""

    def __init__(self, order_id: str, event: str = "out_for_delivery") -> None:
        self.order_id = order_id
        self.key = f"notify:{order_id}:{event}:sms"
        self.sid = "SM" + uuid.uuid4().hex
        self.callback = f"{STATUS}?{urlencode({'order_id': order_id, 'key': self.key})}"

    async def sent(self, store: Store) -> Sms:
        claim = NotificationClaim(
            self.key,
            self.order_id,
            "out_for_delivery",
            "sms",
            "+15555550100",
            f"Order {self.order_id} is out for delivery",
            f"Order {self.order_id} is out for delivery today.",
            fallback_recipient="ada@example.com",
        )
        await store.notifications.claim_notifications([claim])
        await store.notifications.mark_notification_sent(self.key, self.sid)
        return self

    def form(self, status: str, error_code: str | None = None) -> dict[str, str]:
        form = {
            "MessageSid": self.sid,
            "SmsSid": self.sid,
            "AccountSid": "ACsandbox00000000000000000000000000",
            "From": "+15555550000",
            "To": "+15555550100",
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": "2010-04-01",
        }
        return form | ({"ErrorCode": error_code} if error_code else {})


@pytest.fixture
def token(stack_settings: Settings) -> str:
    return stack_settings.twilio_auth_token


async def delivery(store: Store, key: str) -> tuple[str | None, str | None, str | None]:
    record = await store.notifications.get(key)
    assert record is not None
    return record.delivery_status, record.delivery_error, record.fallback_status


async def test_a_signed_callback_updates_the_log(http: httpx.AsyncClient, store: Store, token: str) -> None:
    sms = await Sms(f"ORD-W{uuid.uuid4().hex[:8]}").sent(store)
    response = await post_signed(http, sms.callback, sms.form("delivered"), token=token)
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "recorded", "key": sms.key, "status": "delivered", "fallback": None}
    assert await delivery(store, sms.key) == ("delivered", None, None)


async def test_forged_and_unsigned_callbacks_are_refused_and_change_nothing(
    http: httpx.AsyncClient, store: Store, token: str
) -> None:
    sms = await Sms(f"ORD-W{uuid.uuid4().hex[:8]}").sent(store)
    form = sms.form("undelivered", "30003")
    forged = await post_signed(http, sms.callback, form, token="not-the-auth-token")
    assert assert_problem(forged, 403)["type"] == "/problems/invalid-signature"
    # Signed for another form: the status was changed on the way
    tampered = await post_signed(
        http, sms.callback, form, token=token, signature=sign(token, BASE + sms.callback, sms.form("delivered"))
    )
    assert_problem(tampered, 403)
    unsigned = await http.post(sms.callback, content=urlencode(form), headers=FORM)
    assert assert_problem(unsigned, 401)["type"] == "/problems/unsigned"
    not_a_form = await http.post(sms.callback, json=form, headers={"X-Twilio-Signature": "x"})
    assert_problem(not_a_form, 415)
    assert await delivery(store, sms.key) == (None, None, None)
    # Nothing was recorded as seen either: the genuine callback is acted on
    genuine = await post_signed(http, sms.callback, form, token=token)
    assert genuine.json()["outcome"] == "recorded"


async def test_a_replayed_callback_is_acknowledged_once(http: httpx.AsyncClient, store: Store, token: str) -> None:
    sms = await Sms(f"ORD-W{uuid.uuid4().hex[:8]}").sent(store)
    first = await post_signed(http, sms.callback, sms.form("sent"), token=token)
    assert first.json()["outcome"] == "recorded"
    seen = await store.notifications.get(sms.key)
    again = await post_signed(http, sms.callback, sms.form("sent"), token=token)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert await store.notifications.get(sms.key) == seen  # not even the time it was updated moved


async def test_statuses_out_of_order_stay_delivered(http: httpx.AsyncClient, store: Store, token: str) -> None:
    sms = await Sms(f"ORD-W{uuid.uuid4().hex[:8]}").sent(store)
    assert (await post_signed(http, sms.callback, sms.form("delivered"), token=token)).json()["outcome"] == "recorded"
    late = await post_signed(http, sms.callback, sms.form("sent"), token=token)
    assert late.json() == {"outcome": "unchanged", "key": sms.key, "status": "delivered", "fallback": None}
    queued = await post_signed(http, sms.callback, sms.form("queued"), token=token)
    assert queued.json()["outcome"] == "unchanged"
    assert await delivery(store, sms.key) == ("delivered", None, None)


async def test_a_callback_for_no_message_of_ours_is_acknowledged(http: httpx.AsyncClient, token: str) -> None:
    stranger = Sms(f"ORD-W{uuid.uuid4().hex[:8]}")  # never sent
    response = await post_signed(http, STATUS, stranger.form("delivered"), token=token)
    assert response.status_code == 200 and response.json()["outcome"] == "unknown-message"
    missing = await post_signed(http, STATUS, {"MessageSid": stranger.sid}, token=token)
    assert_problem(missing, 422)


async def fallback_emails(sandbox: SandboxServers, order_id: str) -> list[str]:
    return [m.subject or "" for m in sandbox.outbox(order_id) if m.channel == "email"]


async def test_an_undelivered_sms_falls_back_to_email_once_even_when_the_callback_comes_twice(
    http: httpx.AsyncClient, store: Store, api: FulfillmentApi, sandbox: SandboxServers, token: str
) -> None:
    order_id = f"ORD-W{uuid.uuid4().hex[:8]}"
    sms = await Sms(order_id).sent(store)
    answers = await asyncio.gather(
        *(post_signed(http, sms.callback, sms.form("undelivered", "30003"), token=token) for _ in range(2))
    )
    assert sorted(a.json()["outcome"] for a in answers) == ["duplicate", "recorded"]
    # A late "failed" for the same message moves nothing (undelivered is final) and starts nothing
    assert (await post_signed(http, sms.callback, sms.form("failed", "30008"), token=token)).json()[
        "outcome"
    ] == "unchanged"

    handle = api.client.get_workflow_handle(f"sms-fallback:{sms.key}", result_type=SmsFallbackResult)
    result = await asyncio.wait_for(handle.result(), 30)
    assert (result.outcome, result.email_key) == ("sent", f"{sms.key}:email-fallback")
    assert await delivery(store, sms.key) == ("undelivered", "30003: Unreachable destination handset", "sent")
    assert await fallback_emails(sandbox, order_id) == [f"Order {order_id} is out for delivery"]
    [email] = [m for m in sandbox.outbox(order_id) if m.channel == "email"]
    assert email.recipient == "ada@example.com" and "out for delivery today" in email.body

    # Twilio retrying much later: acknowledged, nothing new
    again = await post_signed(http, sms.callback, sms.form("undelivered", "30003"), token=token)
    assert again.json()["outcome"] == "duplicate"
    # and should its fallback be started again (the relay, say), Temporal refuses the id
    record = await store.notifications.get(sms.key)
    assert record is not None
    assert await start_sms_fallback(api.client, store, api.settings, record) is False
    assert len(await fallback_emails(sandbox, order_id)) == 1


# ---------------------------------------------------------------------------------------------------------
# Inbound messages


def inbound(phone: str, body: str, sid: str | None = None) -> dict[str, str]:
    sid = sid or "SM" + uuid.uuid4().hex
    return {"MessageSid": sid, "SmsMessageSid": sid, "From": phone, "To": "+15555550000", "Body": body}


async def test_stop_start_and_help(http: httpx.AsyncClient, store: Store, token: str, stack_settings: Settings) -> None:
    phone = f"+1666{uuid.uuid4().int % 10**7:07d}"
    stop = inbound(phone, "Stop")
    response = await post_signed(http, INBOUND, stop, token=token)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert await store.sms_opt_outs.is_opted_out(phone)

    assert (await post_signed(http, INBOUND, inbound(phone, "start"), token=token)).status_code == 200
    assert not await store.sms_opt_outs.is_opted_out(phone)
    # The STOP delivered again by Twilio after the START changes nothing
    assert (await post_signed(http, INBOUND, stop, token=token)).status_code == 200
    assert not await store.sms_opt_outs.is_opted_out(phone)

    help_ = await post_signed(http, INBOUND, inbound(phone, "HELP"), token=token)
    assert help_.status_code == 200 and help_.headers["content-type"].startswith("text/xml")
    assert (
        stack_settings.sms_help_reply
        and f"<Message>{stack_settings.sms_help_reply.replace('&', '&amp;')}" in help_.text
    )
    chat = await post_signed(http, INBOUND, inbound(phone, "where is my parcel?"), token=token)
    assert chat.text.endswith("<Response/>")
    assert not await store.sms_opt_outs.is_opted_out(phone)


async def test_a_forged_stop_opts_no_one_out(http: httpx.AsyncClient, store: Store) -> None:
    phone = f"+1666{uuid.uuid4().int % 10**7:07d}"
    assert_problem(await post_signed(http, INBOUND, inbound(phone, "STOP"), token="guess"), 403)
    assert not await store.sms_opt_outs.is_opted_out(phone)


@pytest.fixture
async def behind_a_proxy(api: FulfillmentApi, stack_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with FULFILL_API_PUBLIC_URL set, as behind a TLS proxy: Twilio signs the public URL."""
    settings = stack_settings.model_copy(update={"api_public_url": "https://fulfill.example.com"})
    public = FulfillmentApi(api.client, api.store, settings)
    transport = httpx.ASGITransport(app=create_app(settings, public))
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8080") as client:
        yield client


async def test_behind_a_proxy_the_public_url_is_what_is_signed(
    behind_a_proxy: httpx.AsyncClient, store: Store, token: str
) -> None:
    phone = f"+1666{uuid.uuid4().int % 10**7:07d}"
    as_arrived = await post_signed(
        behind_a_proxy, INBOUND, inbound(phone, "STOP"), token=token, signed_as="http://10.0.0.7:8080"
    )
    assert_problem(as_arrived, 403)
    public = await post_signed(
        behind_a_proxy, INBOUND, inbound(phone, "STOP"), token=token, signed_as="https://fulfill.example.com"
    )
    assert public.status_code == 200
    assert await store.sms_opt_outs.is_opted_out(phone)


async def test_a_fallback_the_api_could_not_start_is_started_by_the_relay(
    store: Store, api: FulfillmentApi, sandbox: SandboxServers, worker: None
) -> None:
    order_id = f"ORD-W{uuid.uuid4().hex[:8]}"
    sms = await Sms(order_id).sent(store)
    # The callback was recorded, then the API died (or Temporal was away) before the workflow started
    assert (await store.notifications.record_delivery(sms.sid, "failed", "30008: Unknown error")).fallback_pending
    await FallbackRelay(api.client, store, api.settings).round()  # (the worker's own relay may be first: as well)
    assert sms.key not in {r.key for r in await store.notifications.pending_fallbacks()}
    handle = api.client.get_workflow_handle(f"sms-fallback:{sms.key}", result_type=SmsFallbackResult)
    assert (await asyncio.wait_for(handle.result(), 30)).outcome == "sent"
    assert await delivery(store, sms.key) == ("failed", "30008: Unknown error", "sent")
    assert len(await fallback_emails(sandbox, order_id)) == 1
