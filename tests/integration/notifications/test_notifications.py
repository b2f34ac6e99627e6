"""The notification activities on a real database and the sandbox's SMTP and SMS servers: the channels of a
notification are claimed in one transaction and the ones sent are marked in one more (a hung channel does not
hold back the others' mark), also when the attempt fails half-way or is cancelled, so a retry sends only what is
missing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notifications import MARK_GRACE, NotificationActivities
from common.config import Settings
from common.integrations.email import EmailSender
from common.integrations.sms import SmsSender
from common.models import Channel, Customer, NotificationEvent, NotifyRequest, OpsAlert
from common.notifications.contracts import NotificationClaim, SmsFallbackRequest
from common.store import Store
from sandbox import SandboxServers, free_port_settings

EMAIL_KEY = "notify:ORD-1:order_confirmed:email"
SMS_KEY = "notify:ORD-1:order_confirmed:sms"
OPTED_OUT = "+15005550004"  # the sandbox refuses it for good, as Twilio does an opted-out number


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    settings = free_port_settings(
        var_dir=tmp_path,
    )
    async with SandboxServers(settings, db_path=tmp_path / "sb.db", sms_callback_delays=(0.01, 0.02)) as sb:
        yield sb


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}")
    try:
        yield s
    finally:
        await s.close()


class Senders:
    """The activities with their adapters, pointed at the sandbox (or, for email, at `settings`)."""

    def __init__(self, store: Store, settings: Settings, email_settings: Settings | None = None) -> None:
        self.email = EmailSender(email_settings or settings, timeout=5)
        self.sms = SmsSender(settings)
        self.activities = NotificationActivities(store, self.email, self.sms, settings)

    async def close(self) -> None:
        await self.email.close()
        await self.sms.close()


def request(*channels: Channel, phone: str = "+15555550100") -> NotifyRequest:
    customer = Customer(id="C-1", name="Ada Lovelace", email="ada@example.com", phone=phone, channels=list(channels))
    return NotifyRequest(
        order_id="ORD-1", event=NotificationEvent.ORDER_CONFIRMED, customer=customer, channels=list(channels)
    )


def count_write_transactions(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The description of every write transaction the store runs from now on."""
    seen: list[str] = []
    write = store.db.write

    async def counting(op: Callable[[Any], Awaitable[Any]], what: str) -> Any:
        seen.append(what)
        return await write(op, what)

    monkeypatch.setattr(store.db, "write", counting)
    return seen


async def statuses(store: Store) -> dict[str, tuple[str, str | None]]:
    return {n.key: (n.status, n.provider_message_id) for n in await store.notifications.notifications("ORD-1")}


async def test_channels_are_claimed_and_marked_sent_in_one_transaction_each(
    store: Store, sandbox: SandboxServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        writes = count_write_transactions(store, monkeypatch)
        result = await ActivityEnvironment().run(
            senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS)
        )
        assert sorted(result.sent) == [Channel.EMAIL, Channel.SMS]
        assert writes == ["claim 2 notifications of order ORD-1", "mark 2 notifications sent"]
        [email] = [m for m in sandbox.outbox("ORD-1") if m.channel == "email"]
        [sms] = [m for m in sandbox.outbox("ORD-1") if m.channel == "sms"]
        assert await statuses(store) == {EMAIL_KEY: ("sent", email.provider_id), SMS_KEY: ("sent", sms.provider_id)}

        # Again: nothing is sent, nothing is marked
        again = await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
        assert (again.sent, sorted(again.already_sent)) == ([], [Channel.EMAIL, Channel.SMS])
        assert len(sandbox.outbox("ORD-1")) == 2
    finally:
        await senders.close()


async def test_a_permanent_refusal_is_skipped_and_the_other_channel_marked(
    store: Store, sandbox: SandboxServers
) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        result = await ActivityEnvironment().run(
            senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS, phone=OPTED_OUT)
        )
        assert result.sent == [Channel.EMAIL] and "sms" in result.skipped
        state = await statuses(store)
        assert state[SMS_KEY] == ("failed", None)
        assert state[EMAIL_KEY][0] == "sent"
    finally:
        await senders.close()


async def test_a_transient_failure_is_raised_after_marking_what_was_sent(
    store: Store, sandbox: SandboxServers, unused_tcp_port: int
) -> None:
    settings = sandbox.settings_for_clients()
    down = Senders(store, settings, settings.model_copy(update={"smtp_port": unused_tcp_port}))
    try:
        with pytest.raises(ApplicationError, match="email to order ORD-1 failed"):
            await ActivityEnvironment().run(down.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
    finally:
        await down.close()
    state = await statuses(store)
    assert state[EMAIL_KEY] == ("failed", None)
    assert state[SMS_KEY][0] == "sent"

    # The retry, with the relay back, sends only the email
    up = Senders(store, settings)
    try:
        result = await ActivityEnvironment().run(up.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
    finally:
        await up.close()
    assert (result.sent, result.already_sent) == ([Channel.EMAIL], [Channel.SMS])
    assert sorted(m.channel for m in sandbox.outbox("ORD-1")) == ["email", "sms"]


class HungEmail:
    """Senders whose email goes to a relay that accepts the connection and never greets (the email hangs), with
    an event set when the SMS adapter has its answer."""

    def __init__(self, store: Store, settings: Settings, relay: asyncio.Server) -> None:
        port = relay.sockets[0].getsockname()[1]
        self.senders = Senders(store, settings, settings.model_copy(update={"smtp_port": port}))
        self.sms_sent = asyncio.Event()
        send_sms = self.senders.sms.send

        async def send_and_tell(**kwargs: Any) -> str:
            sid = await send_sms(**kwargs)
            self.sms_sent.set()
            return sid

        self.senders.sms.send = send_and_tell  # type: ignore[method-assign]
        self.env = ActivityEnvironment()
        self.attempt = asyncio.create_task(
            self.env.run(self.senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
        )

    async def cancel(self) -> None:
        self.env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.attempt
        await self.senders.close()


@pytest.fixture
async def silent_relay() -> AsyncIterator[asyncio.Server]:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    yield server
    server.close()


async def test_a_hung_channel_does_not_hold_back_the_others_mark(
    store: Store, sandbox: SandboxServers, silent_relay: asyncio.Server
) -> None:
    hung = HungEmail(store, sandbox.settings_for_clients(), silent_relay)
    await asyncio.wait_for(hung.sms_sent.wait(), 5)
    deadline = time.monotonic() + MARK_GRACE + 2
    while (await statuses(store))[SMS_KEY][0] != "sent":
        assert time.monotonic() < deadline, "the SMS was not marked while the email hung"
        await asyncio.sleep(0.02)
    assert not hung.attempt.done()
    await hung.cancel()
    assert (await statuses(store))[EMAIL_KEY] == ("sending", None)  # claimed, never sent: the retry sends it


async def test_what_was_sent_is_marked_when_the_attempt_is_cancelled(
    store: Store, sandbox: SandboxServers, silent_relay: asyncio.Server
) -> None:
    hung = HungEmail(store, sandbox.settings_for_clients(), silent_relay)
    await asyncio.wait_for(hung.sms_sent.wait(), 5)
    await hung.cancel()  # within MARK_GRACE: the SMS was waiting for the email to be marked with it
    state = await statuses(store)
    assert state[SMS_KEY][0] == "sent"
    assert state[EMAIL_KEY] == ("sending", None)


async def die_before_marking(senders: Senders, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt whose worker dies after the providers accepted both messages, before the log marks them: the
    mark never happens, the claims stay "sending"."""

    async def killed(sent: object) -> None:
        await asyncio.sleep(1)  # the other channel's request finishes meanwhile: both providers accepted theirs
        raise RuntimeError("the worker was killed")

    with monkeypatch.context() as patch:
        patch.setattr(store.notifications, "mark_notifications_sent", killed)
        with pytest.raises(RuntimeError, match="killed"):
            await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
    assert {status for status, _ in (await statuses(store)).values()} == {"sending"}


async def test_an_sms_twilio_accepted_before_a_crash_is_not_sent_again(
    store: Store, sandbox: SandboxServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        await die_before_marking(senders, store, monkeypatch)
        [first_sms] = [m for m in sandbox.outbox("ORD-1") if m.channel == "sms"]

        retry = await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
    finally:
        await senders.close()
    # Twilio's list names the SMS the dead attempt got accepted: marked with its sid, not sent again
    assert (retry.sent, retry.already_sent) == ([Channel.EMAIL], [Channel.SMS])
    assert [m.provider_id for m in sandbox.outbox("ORD-1") if m.channel == "sms"] == [first_sms.provider_id]
    assert (await statuses(store))[SMS_KEY] == ("sent", first_sms.provider_id)
    # SMTP cannot be asked: the email goes again, under the same Message-ID, by which mailboxes drop the copy
    emails = [m for m in sandbox.outbox("ORD-1") if m.channel == "email"]
    assert len(emails) == 2 and len({m.provider_id for m in emails}) == 1


async def test_an_sms_claimed_but_never_sent_is_sent_on_the_retry(store: Store, sandbox: SandboxServers) -> None:
    """The earlier attempt died before its request reached Twilio: nothing of it in Twilio's list, and an SMS the
    number got for another order (same recipient, other text) is not taken for it."""
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        other = request(Channel.SMS).model_copy(update={"order_id": "ORD-2"})
        await ActivityEnvironment().run(senders.activities.notify_customer, other)
        claim = NotificationClaim(SMS_KEY, "ORD-1", "order_confirmed", "sms", "+15555550100", None, "lost on the way")
        assert await store.notifications.claim_notifications([claim]) == {SMS_KEY}

        retry = await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.SMS))
    finally:
        await senders.close()
    assert retry.sent == [Channel.SMS]
    [sms] = [m for m in sandbox.outbox("ORD-1") if m.channel == "sms"]
    assert (await statuses(store))[SMS_KEY] == ("sent", sms.provider_id)


async def test_twilio_down_when_asked_about_an_earlier_attempt_sends_nothing_blindly(
    store: Store, sandbox: SandboxServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        await die_before_marking(senders, store, monkeypatch)
        sandbox.start_outage("sms")
        with pytest.raises(ApplicationError, match="sms to order ORD-1 failed") as raised:
            await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
        assert (raised.value.type, list(raised.value.details)) == ("SmsUnavailable", [["sms"]])
        assert (await statuses(store))[SMS_KEY][0] == "failed"
        sandbox.end_outage("sms")

        retry = await ActivityEnvironment().run(senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS))
    finally:
        await senders.close()
    assert retry.already_sent == [Channel.EMAIL, Channel.SMS]
    assert len([m for m in sandbox.outbox("ORD-1") if m.channel == "sms"]) == 1


async def test_ops_alerts_are_sent_once(store: Store, sandbox: SandboxServers) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    alert = OpsAlert(order_id="ORD-1", kind="pick_overdue", subject="Pick overdue", body="Pick task 7 is late")
    try:
        assert await ActivityEnvironment().run(senders.activities.alert_ops, alert) is True
        assert await ActivityEnvironment().run(senders.activities.alert_ops, alert) is False
    finally:
        await senders.close()
    [record] = await store.notifications.notifications("ORD-1")
    [email] = sandbox.outbox("ORD-1")
    assert (record.key, record.status, record.provider_message_id) == (
        "ops:ORD-1:pick_overdue",
        "sent",
        email.provider_id,
    )
    assert email.subject == "[ops] Pick overdue"


# ---------------------------------------------------------------------------------------------------------
# Opt-outs, Twilio's 21610, email bounces, and the email fallback of an undelivered SMS


async def test_an_opted_out_number_gets_no_sms_and_the_email_goes_on(store: Store, sandbox: SandboxServers) -> None:
    await store.sms_opt_outs.record("+15555550100", opted_out=True, keyword="STOP")
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        result = await ActivityEnvironment().run(
            senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS)
        )
    finally:
        await senders.close()
    assert result.sent == [Channel.EMAIL]
    assert "opted out of SMS" in result.skipped["sms"]
    assert [m.channel for m in sandbox.outbox("ORD-1")] == ["email"]
    assert sandbox.twilio.attempts["+15555550100"] == 0  # Twilio was not even asked
    sms = await store.notifications.get(SMS_KEY)
    assert sms is not None and (sms.status, sms.delivery_status) == ("failed", "opted-out")
    assert sms.error is not None and "opted out" in sms.error


async def test_twilio_21610_is_not_retried_and_records_the_opt_out(store: Store, sandbox: SandboxServers) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        # Returns (no error for Temporal to retry), the SMS skipped for good
        result = await ActivityEnvironment().run(
            senders.activities.notify_customer, request(Channel.EMAIL, Channel.SMS, phone=OPTED_OUT)
        )
        assert result.sent == [Channel.EMAIL] and "21610" in result.skipped["sms"]
        assert sandbox.twilio.attempts[OPTED_OUT] == 1
        assert await store.sms_opt_outs.is_opted_out(OPTED_OUT)
        sms = await store.notifications.get(SMS_KEY)
        assert sms is not None and (sms.status, sms.attempts, sms.delivery_status) == ("failed", 1, "opted-out")
        assert sms.delivery_error is not None and sms.delivery_error.startswith("21610")

        # The order's next notice: the engine knows now, and does not ask Twilio again
        later = request(Channel.EMAIL, Channel.SMS, phone=OPTED_OUT).model_copy(
            update={"event": NotificationEvent.SHIPPED}
        )
        again = await ActivityEnvironment().run(senders.activities.notify_customer, later)
        assert again.sent == [Channel.EMAIL] and "opted out" in again.skipped["sms"]
        assert sandbox.twilio.attempts[OPTED_OUT] == 1
    finally:
        await senders.close()


async def test_an_email_the_relay_refuses_for_good_is_logged_bounced(store: Store, sandbox: SandboxServers) -> None:
    # .invalid (RFC 2606) is refused by the sandbox relay with 550; a customer can't be built with it, hence construct
    customer = Customer.model_construct(id="C-1", name="Ada", email="ada@mail.invalid", phone=None, channels=[])
    bouncing = NotifyRequest.model_construct(
        order_id="ORD-1",
        event=NotificationEvent.ORDER_CONFIRMED,
        customer=customer,
        channels=[Channel.EMAIL],
        context={},
        occurrence=None,
        key=None,
    )
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        result = await ActivityEnvironment().run(senders.activities.notify_customer, bouncing)
    finally:
        await senders.close()
    assert result.sent == [] and "550" in result.skipped["email"]
    email = await store.notifications.get(EMAIL_KEY)
    assert email is not None and (email.status, email.delivery_status) == ("failed", "bounced")
    assert email.delivery_error is not None and "550" in email.delivery_error


async def undelivered(store: Store, senders: Senders, *channels: Channel) -> None:
    """The notice sent on `channels` (always SMS among them), then Twilio reporting the SMS undelivered."""
    result = await ActivityEnvironment().run(senders.activities.notify_customer, request(*channels))
    assert Channel.SMS in result.sent
    sms = await store.notifications.get(SMS_KEY)
    assert sms is not None and sms.provider_message_id is not None
    update = await store.notifications.record_delivery(sms.provider_message_id, "undelivered", "30003: Unreachable")
    assert update.fallback_pending


async def test_the_fallback_of_an_sms_only_notice_is_one_email(store: Store, sandbox: SandboxServers) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        await undelivered(store, senders, Channel.SMS)
        fallback = SmsFallbackRequest(sms_key=SMS_KEY, order_id="ORD-1")
        first = await ActivityEnvironment().run(senders.activities.send_sms_fallback, fallback)
        second = await ActivityEnvironment().run(senders.activities.send_sms_fallback, fallback)
    finally:
        await senders.close()
    assert (first.outcome, first.email_key) == ("sent", SMS_KEY + ":email-fallback")
    assert second.outcome == "sent"
    [email] = [m for m in sandbox.outbox("ORD-1") if m.channel == "email"]
    assert email.recipient == "ada@example.com"
    assert email.subject == "Order ORD-1 confirmed"  # the notice's own email subject, kept with the SMS
    sms_text = (await store.notifications.get(SMS_KEY)).body  # type: ignore[union-attr]
    assert sms_text in email.body and "could not deliver this text message" in email.body
    logged = await store.notifications.get(SMS_KEY + ":email-fallback")
    assert logged is not None and (logged.channel, logged.status) == ("email", "sent")
    assert (await store.notifications.get(SMS_KEY)).fallback_status == "sent"  # type: ignore[union-attr]


async def test_no_fallback_when_the_notices_email_went_out(store: Store, sandbox: SandboxServers) -> None:
    senders = Senders(store, sandbox.settings_for_clients())
    try:
        await undelivered(store, senders, Channel.EMAIL, Channel.SMS)
        result = await ActivityEnvironment().run(
            senders.activities.send_sms_fallback, SmsFallbackRequest(sms_key=SMS_KEY, order_id="ORD-1")
        )
    finally:
        await senders.close()
    assert result.outcome == "not-needed" and EMAIL_KEY in result.detail
    assert len([m for m in sandbox.outbox("ORD-1") if m.channel == "email"]) == 1  # the notice's own
    assert await store.notifications.get(SMS_KEY + ":email-fallback") is None
    assert (await store.notifications.get(SMS_KEY)).fallback_status == "not-needed"  # type: ignore[union-attr]
