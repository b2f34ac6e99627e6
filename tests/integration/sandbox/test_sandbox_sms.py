"""The sandbox Twilio as the engine meets it: status callbacks signed like Twilio's, posted in Twilio's order
(queued, sent, delivered; undelivered or failed with an ErrorCode for the unreachable numbers) to the message's
StatusCallback, its own outbox following along; and a customer texting STOP, START or HELP through the sandbox
control, posted signed to the inbound webhook, with the blocklist Twilio keeps (21610)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from common.integrations.sms import SmsPermanentError, SmsSender
from sandbox import SandboxRefused, SandboxServers, free_port_settings, text_from
from tests.integration.local_server import serving

TOKEN = "sandbox-token"


class Receiver:
    """A stand-in for the engine's webhooks: records each signed post, answers the inbound one with `reply`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bool]] = []  # (path, form, signature valid)
        self.reply = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = f"{self.url}{request.raw_path}"
        valid = RequestValidator(TOKEN).validate(url, form, request.headers.get("X-Twilio-Signature", ""))
        self.posts.append((request.path, form, valid))
        if request.path.endswith("/inbound"):
            return web.Response(text=self.reply, content_type="text/xml")
        return web.json_response({"outcome": "recorded"})

    def statuses(self, sid: str) -> list[tuple[str, str | None]]:
        return [(f["MessageStatus"], f.get("ErrorCode")) for p, f, _ in self.posts if f.get("MessageSid") == sid]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serving(rec.handle, method="POST") as base:
        rec.url = base
        yield rec


@pytest.fixture
async def sb(tmp_path: Path, receiver: Receiver) -> AsyncIterator[SandboxServers]:
    settings = free_port_settings(
        var_dir=tmp_path,
        sandbox_sms_inbound_url=f"{receiver.url}/v1/webhooks/twilio/inbound",
    )
    async with SandboxServers(settings, db_path=tmp_path / "sb.db", sms_callback_delays=(0.02, 0.05)) as servers:
        yield servers


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("+15555550100", [("queued", None), ("sent", None), ("delivered", None)]),
        ("+15555530003", [("queued", None), ("sent", None), ("undelivered", "30003")]),
        ("+15555530006", [("queued", None), ("sent", None), ("undelivered", "30006")]),
        ("+15555530008", [("queued", None), ("failed", "30008")]),
    ],
)
async def test_status_callbacks_come_signed_in_twilios_order(
    sb: SandboxServers, receiver: Receiver, to: str, expected: list[tuple[str, str | None]]
) -> None:
    sms = SmsSender(sb.settings_for_clients(engine_url=receiver.url))
    callback = sms.status_callback_url("ORD-7", key="notify:ORD-7:shipped:sms")
    assert callback is not None and callback.startswith(f"{receiver.url}/v1/webhooks/twilio/status?")
    try:
        sid = await sms.send(to=to, body="ORD-7 shipped", status_callback=callback)
    finally:
        await sms.close()
    await until(lambda: len(receiver.statuses(sid)) == len(expected))
    assert receiver.statuses(sid) == expected
    assert all(valid for _, f, valid in receiver.posts if f.get("MessageSid") == sid)
    assert all(path == "/v1/webhooks/twilio/status" for path, _, _ in receiver.posts)
    # The sandbox's own record follows: `fulfill outbox` shows where the message stands
    assert [m.status for m in sb.outbox("ORD-7")] == [expected[-1][0]]


async def test_without_a_callback_url_the_outbox_still_follows_the_message(sb: SandboxServers) -> None:
    sms = SmsSender(sb.settings_for_clients())
    try:
        await sms.send(to="+15555530003", body="no callback", status_callback=None)
    finally:
        await sms.close()
    await until(lambda: [m.status for m in sb.outbox()] == ["undelivered"])


async def test_callbacks_to_another_machine_are_never_sent(sb: SandboxServers, receiver: Receiver) -> None:
    sms = SmsSender(sb.settings_for_clients())
    try:
        await sms.send(to="+15555550100", body="x", status_callback="http://example.com/status")
    finally:
        await sms.close()
    await until(lambda: [m.status for m in sb.outbox()] == ["delivered"])
    assert receiver.posts == []


async def test_stop_blocks_the_number_until_start(sb: SandboxServers, receiver: Receiver) -> None:
    receiver.reply = "<Response><Message>You will hear from us</Message></Response>"
    phone = "+15555550177"
    stop = await text_from(sb.http_url, phone, " stop ")
    assert stop["opted_out"] is True
    # Twilio's own confirmation; the webhook's reply is dropped (Twilio refuses a message to an opted-out number)
    assert len(stop["replies"]) == 1 and stop["replies"][0].startswith("You have successfully been unsubscribed")
    assert stop["engine"]["status"] == 200 and "You will hear from us" in stop["engine"]["twiml"]
    [(path, form, valid)] = receiver.posts
    assert valid and path == "/v1/webhooks/twilio/inbound"
    assert (form["From"], form["Body"], form["To"], form["MessageSid"]) == (
        phone,
        " stop ",
        sb.settings.twilio_from_number,
        stop["sid"],
    )

    sms = SmsSender(sb.settings_for_clients())
    try:
        with pytest.raises(SmsPermanentError) as refused:
            await sms.send(to=phone, body="hi", status_callback=None)
        assert refused.value.code == 21610

        start = await text_from(sb.http_url, phone, "START")
        assert start["opted_out"] is False
        assert start["replies"][0].startswith("You have successfully been re-subscribed")
        assert start["replies"][1:] == ["You will hear from us"]
        await sms.send(to=phone, body="hi again", status_callback=None)
    finally:
        await sms.close()
    # What the customer got back, in the outbox too
    assert [m.body for m in sb.outbox() if m.recipient == phone][:3] == [
        stop["replies"][0],
        *start["replies"],
    ]


async def test_help_gets_the_webhooks_answer_only(sb: SandboxServers, receiver: Receiver) -> None:
    receiver.reply = "<Response><Message><Body>Help is on its way</Body></Message></Response>"
    help_ = await text_from(sb.http_url, "+15555550178", "HELP")
    assert (help_["opted_out"], help_["replies"]) == (False, ["Help is on its way"])


async def test_an_unreachable_webhook_is_reported_and_the_opt_out_kept(sb: SandboxServers, receiver: Receiver) -> None:
    sb.point_inbound_at("http://127.0.0.1:9/v1/webhooks/twilio/inbound")  # discard port: nothing answers
    answer = await text_from(sb.http_url, "+15555550179", "STOP")
    assert answer["opted_out"] is True and answer["engine"]["status"] is None
    sb.point_inbound_at(None)
    assert (await text_from(sb.http_url, "+15555550179", "hello"))["engine"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"from": "555-0100", "body": "STOP"},
        {"from": "+15555550100"},
        {"from": "+15555550100", "body": "STOP", "extra": 1},
    ],
)
async def test_bad_inbound_controls_are_refused(sb: SandboxServers, body: dict[str, object]) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{sb.http_url}/sms/_sandbox/inbound", json=body) as resp:
        assert resp.status == 400
    with pytest.raises(SandboxRefused):
        await text_from(sb.http_url, "not a number", "STOP")
