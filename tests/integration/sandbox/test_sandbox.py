"""The sandbox servers driven through the engine's real adapters (aiosmtplib, the twilio SDK, the carrier
client): real sockets on ephemeral ports, no mocks."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from common.config import Settings
from common.integrations.carrier import (
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierClient,
    CarrierError,
    CarrierShipment,
    CarrierTransientError,
)
from common.integrations.email import EmailPermanentError, EmailSender, EmailTransientError
from common.integrations.sms import SmsPermanentError, SmsSender, SmsTransientError
from common.models import Address, ShippingSpeed, TrackingStatus
from sandbox import SandboxServers, fetch_outbox, free_port_settings
from sandbox.smtp import OutboxHandler
from sandbox.store import SandboxStore
from tests.unit.integrations.test_integrations_adapters import choose_rate

STEP = 0.3  # seconds between tracker statuses in these tests
SHIP_TO = Address(
    name="Ada Lovelace",
    line1="1 Analytical Way",
    city="London",
    region="LDN",
    postal_code="N1 9GU",
    country="GB",
)
FROM = {"name": "Main warehouse", "street1": "5 Depot Rd", "city": "Leeds", "zip": "LS1 1AA", "country": "GB"}
PARCEL = {"weight": 16.0}


def sandbox_settings(tmp_path: Path) -> Settings:
    return free_port_settings(var_dir=tmp_path)  # no webhook receiver here: they go nowhere


def start_sandbox(tmp_path: Path) -> SandboxServers:
    return SandboxServers(
        sandbox_settings(tmp_path),
        db_path=tmp_path / "sb.db",
        in_transit_after=STEP,
        out_for_delivery_after=2 * STEP,
        delivered_after=3 * STEP,
        sms_callback_delays=(0.02, 0.05),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def create(carrier: CarrierClient, ref: str = "label:ORD-1:1", is_return: bool = False) -> CarrierShipment:
    return await carrier.create_shipment(
        reference=ref, to_address=SHIP_TO, from_address=FROM, parcel=PARCEL, is_return=is_return
    )


# ---------------------------------------------------------------------------------------------------------
# Email


async def test_email_lands_in_outbox(sb: SandboxServers) -> None:
    sender = EmailSender(sb.settings_for_clients())
    mid = await sender.send(
        to="ada@example.com",
        subject="Your order ORD-1 has shipped",
        text="Tracking: SBX1",
        html="<p>Tracking: <b>SBX1</b></p>",
        message_id="<notify.ORD-1.shipped.email@fulfill>",
        headers={"X-Order-Id": "ORD-1"},
    )
    assert mid == "<notify.ORD-1.shipped.email@fulfill>"
    [msg] = sb.outbox(order_id="ORD-1")
    assert msg.channel == "email"
    assert msg.recipient == "ada@example.com"
    assert msg.sender == sb.settings.email_from
    assert msg.subject == "Your order ORD-1 has shipped"
    assert msg.body.strip() == "Tracking: SBX1"
    assert msg.html is True
    assert msg.provider_id == mid
    assert sb.outbox(order_id="ORD-other") == []
    # Same thing over HTTP, as `fulfill outbox` reads it
    assert await fetch_outbox(sb.http_url, "ORD-1") == [msg]
    assert await fetch_outbox(sb.http_url, None) == [msg]


async def test_email_non_ascii_lands_in_outbox_as_given(sb: SandboxServers) -> None:
    """Display name, subject and bodies beyond ASCII (RFC 2047 headers, quoted-printable long lines) are
    stored as given."""
    settings = sb.settings_for_clients().model_copy(update={"email_from": "Zo\xeb's Shop <orders@fulfill.example>"})
    subject = "Bestellung ORD-2 \u2013 versandt \u2713 " + "\u6ce8\u6587" * 20
    text = "Gr\xfc\xdfe, Zo\xeb\n\n" + "Ihre Bestellung ist unterwegs \u2013 " * 10 + "\nFrom here\n.\n"
    await EmailSender(settings).send(
        to="ada@example.com",
        subject=subject,
        text=text,
        html="<p>" + "\xe9" * 200 + "</p>",
        message_id="<notify.ORD-2.shipped.email@fulfill>",
        headers={"X-Order-Id": "ORD-2"},
    )
    [msg] = sb.outbox(order_id="ORD-2")
    assert msg.sender == "Zo\xeb's Shop <orders@fulfill.example>"
    assert msg.subject == subject
    assert msg.body.replace("\r\n", "\n") == text
    assert msg.html is True
    assert msg.provider_id == "<notify.ORD-2.shipped.email@fulfill>"


async def test_email_refused_recipient_is_permanent(sb: SandboxServers) -> None:
    sender = EmailSender(sb.settings_for_clients())
    with pytest.raises(EmailPermanentError) as err:
        await sender.send(
            to="nobody@example.invalid",
            subject="s",
            text="t",
            html="<p>t</p>",
            message_id="<x@fulfill>",
            headers={},
        )
    assert err.value.code == 550
    assert sb.outbox() == []


async def test_email_unreachable_relay_is_transient(sb: SandboxServers) -> None:
    settings = sb.settings_for_clients().model_copy(update={"smtp_port": free_port()})
    with pytest.raises(EmailTransientError):
        await EmailSender(settings, timeout=2).send(
            to="ada@example.com", subject="s", text="t", html="t", message_id="<y@fulfill>", headers={}
        )


class ScriptedOutbox(OutboxHandler):
    """The sandbox's outbox handler, with canned answers to the next MAIL or DATA commands."""

    def __init__(self, store: SandboxStore) -> None:
        super().__init__(store)
        self.mail_replies: list[str] = []
        self.data_replies: list[str] = []

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        return await super().handle_DATA(server, session, envelope)


class _WireSMTP(SMTP):
    """aiosmtpd's SMTP, keeping every byte that arrived before any TLS (what an eavesdropper would read)."""

    wire: bytearray

    def data_received(self, data: bytes) -> None:
        if self.transport is not None and self.transport.get_extra_info("sslcontext") is None:
            self.wire += data
        super().data_received(data)


class Relay:
    """An SMTP relay (aiosmtpd with the sandbox's handler) that counts the connections it accepted and can drop
    them, as a relay's idle timeout does; with `password`, AUTH is required (user "fulfill"); with `tls`, STARTTLS
    is offered and required before anything else (AUTH included). `wire` holds what clients sent in the clear."""

    def __init__(self, store: SandboxStore, password: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.handler = ScriptedOutbox(store)
        self.password = password
        self.tls = tls
        self.connections: list[SMTP] = []
        self.logins = 0
        self.tls_logins = 0  # logins that came over TLS
        self.wire = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        options: dict[str, Any] = {}
        if self.password is not None:
            options = {"authenticator": self._authenticate, "auth_require_tls": False, "auth_required": True}
        if self.tls is not None:
            options.update(tls_context=self.tls, require_starttls=True, auth_require_tls=True)
        proto = _WireSMTP(self.handler, hostname="relay.test", loop=asyncio.get_running_loop(), **options)
        proto.wire = self.wire
        self.connections.append(proto)
        return proto

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins += 1
        self.tls_logins += session.ssl is not None
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"fulfill",
            (self.password or "").encode(),
        )
        return AuthResult(success=ok)

    def settings(self, **update: Any) -> Settings:
        return Settings(smtp_host="127.0.0.1", smtp_port=self.port, **update)

    def open_connections(self) -> int:
        return sum(1 for proto in self.connections if proto.transport is not None)

    async def all_closed(self) -> bool:
        return self.open_connections() == 0

    def drop_connections(self) -> None:
        for proto in self.connections:
            if proto.transport is not None:
                proto.transport.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.get_running_loop().create_server(self._protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    store = SandboxStore(tmp_path / "relay.db")
    try:
        async with Relay(store) as r:
            yield r
    finally:
        store.close()


async def email(sender: EmailSender, n: int, to: str = "ada@example.com") -> str:
    return await sender.send(
        to=to,
        subject=f"Message {n}",
        text=f"Body {n}",
        html=f"<p>Body {n}</p>",
        message_id=f"<m{n}@fulfill>",
        headers={"X-Order-Id": f"ORD-{n}"},
    )


def subjects(relay: Relay) -> list[str]:
    return [m.subject or "" for m in relay.store.messages()]


async def test_email_connections_are_kept_and_reused(relay: Relay) -> None:
    sender = EmailSender(relay.settings(), pool_size=2)
    for n in range(3):
        await email(sender, n)
    assert len(relay.connections) == 1
    # Six at once on a pool of two: the kept connection and one more
    await asyncio.gather(*(email(sender, n) for n in range(3, 9)))
    assert len(relay.connections) == 2
    assert sorted(subjects(relay)) == [f"Message {n}" for n in range(9)]
    await sender.close()  # QUIT: the relay sees both connections end
    await eventually(relay.all_closed)
    # Still usable after close(), on a new connection
    await email(sender, 9)
    assert len(relay.connections) == 3
    await sender.close()


async def test_email_reconnects_when_the_relay_dropped_the_connection(relay: Relay) -> None:
    sender = EmailSender(relay.settings())
    await email(sender, 1)
    # The relay closed the idle connection and the sender has seen it: a new connection
    relay.drop_connections()
    await eventually(relay.all_closed)
    await asyncio.sleep(0.05)
    await email(sender, 2)
    assert len(relay.connections) == 2
    # Dropped just now, not noticed yet (no loop iteration in between): MAIL fails on the dead connection and the
    # message goes out once on a fresh one
    relay.drop_connections()
    await email(sender, 3)
    assert len(relay.connections) == 3
    # A relay going away answers 421 on the pooled connection: same
    relay.handler.mail_replies.append("421 4.3.2 Service shutting down")
    await email(sender, 4)
    assert len(relay.connections) == 4
    assert subjects(relay) == ["Message 1", "Message 2", "Message 3", "Message 4"]
    await sender.close()


async def test_email_refusals_on_a_reused_connection_are_not_retried(relay: Relay) -> None:
    sender = EmailSender(relay.settings())
    await email(sender, 1)
    with pytest.raises(EmailPermanentError) as err:
        await email(sender, 2, to="nobody@example.invalid")
    assert err.value.code == 550
    relay.handler.data_replies.append("554 5.6.0 Message rejected by policy")
    with pytest.raises(EmailPermanentError) as err:
        await email(sender, 3)
    assert err.value.code == 554
    relay.handler.mail_replies.append("451 4.3.0 Try again later")
    with pytest.raises(EmailTransientError) as transient:
        await email(sender, 4)
    assert transient.value.code == 451
    # Each refusal was the relay's answer: no second try, and the connection (RSET) carries the next message
    await email(sender, 5)
    assert subjects(relay) == ["Message 1", "Message 5"]
    assert len(relay.connections) == 1
    await sender.close()


async def test_email_relay_gone_for_good_is_transient(relay: Relay) -> None:
    sender = EmailSender(relay.settings(), timeout=2)
    await email(sender, 1)
    await relay.stop()  # the pooled connection is dead, and a fresh one is refused
    with pytest.raises(EmailTransientError, match="unavailable"):
        await email(sender, 2)


# ---------------------------------------------------------------------------------------------------------
# SMS through the real twilio SDK


async def test_sms_lands_in_outbox_with_order_from_status_callback(sb: SandboxServers) -> None:
    sms = SmsSender(sb.settings_for_clients())
    callback = sms.status_callback_url("ORD-2", key="notify:ORD-2:shipped:sms")
    assert callback is not None and "order_id=ORD-2" in callback
    sid = await sms.send(to="+15555550100", body="ORD-2 shipped", status_callback=callback)
    assert sid.startswith("SM") and len(sid) == 34
    [msg] = sb.outbox("ORD-2")
    assert (msg.channel, msg.recipient, msg.body, msg.provider_id) == (
        "sms",
        "+15555550100",
        "ORD-2 shipped",
        sid,
    )
    assert msg.sender == sb.settings.twilio_from_number
    assert msg.subject is None and msg.html is False

    # The sandbox posts signed status callbacks (sent, delivered) to the sink, like Twilio
    async def delivered() -> bool:
        return sb.outbox("ORD-2")[0].status == "delivered"

    await eventually(delivered)
    async with aiohttp.ClientSession() as http:
        forged = {"MessageSid": sid, "MessageStatus": "failed"}
        headers = {"X-Twilio-Signature": "forged"}
        async with http.post(f"{sb.http_url}/sms/status", data=forged, headers=headers) as resp:
            assert resp.status == 403
    assert sb.outbox("ORD-2")[0].status == "delivered"
    await sms.close()


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", 21211), ("555-0100", 21211), ("+15005550009", 21614), ("+15005550004", 21610)],
)
async def test_sms_permanent_errors_carry_twilio_code(sb: SandboxServers, to: str, code: int) -> None:
    sms = SmsSender(sb.settings_for_clients())
    with pytest.raises(SmsPermanentError) as err:
        await sms.send(to=to, body="hi", status_callback=None)
    assert err.value.code == code
    assert sb.outbox() == []


async def test_sms_wrong_auth_token_is_refused(sb: SandboxServers) -> None:
    settings = sb.settings_for_clients().model_copy(update={"twilio_auth_token": "wrong"})
    with pytest.raises(SmsPermanentError) as err:
        await SmsSender(settings).send(to="+15555550100", body="hi", status_callback=None)
    assert err.value.code == 20003
    assert sb.outbox() == []


async def test_sms_unreachable_is_transient(sb: SandboxServers) -> None:
    settings = sb.settings_for_clients().model_copy(update={"twilio_base_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(SmsTransientError):
        await SmsSender(settings, timeout=2).send(to="+15555550100", body="hi", status_callback=None)


# ---------------------------------------------------------------------------------------------------------
# Carrier


async def test_carrier_label_and_tracking_progression(sb: SandboxServers, carrier: CarrierClient) -> None:
    shipment = await create(carrier)
    assert shipment.id.startswith("shp_") and shipment.reference == "label:ORD-1:1"
    assert shipment.tracking_code is None and shipment.selected_rate is None
    chosen = {speed: choose_rate(shipment.rates, speed.max_delivery_days) for speed in ShippingSpeed}
    assert {s: (r.carrier, r.service, r.rate_cents) for s, r in chosen.items()} == {
        ShippingSpeed.STANDARD: ("SandboxPost", "Ground", 510),
        ShippingSpeed.EXPRESS: ("QuickShip", "Saver", 790),
        ShippingSpeed.OVERNIGHT: ("QuickShip", "Overnight", 2450),
    }

    bought = await carrier.buy(shipment.id, chosen[ShippingSpeed.EXPRESS].id)
    assert bought.status == "purchased"
    assert bought.selected_rate == chosen[ShippingSpeed.EXPRESS]
    assert bought.tracking_code is not None and bought.tracking_code.startswith("SBX")
    assert len(bought.tracking_code) == 19
    assert bought.tracker is not None and bought.tracker.status == TrackingStatus.PRE_TRANSIT
    assert bought.tracker.est_delivery_date is not None
    assert bought.label_url == f"{sb.carrier_url}/labels/{shipment.id}.png"
    assert bought.tracking_url == f"{sb.carrier_url}/track/{bought.tracking_code}"
    async with aiohttp.ClientSession() as http:
        async with http.get(bought.label_url) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
        async with http.get(bought.tracking_url) as resp:
            assert resp.status == 200 and bought.tracking_code in await resp.text()

    seen: list[TrackingStatus] = []

    async def delivered() -> bool:
        tracker = await carrier.get_tracker(bought.tracking_code or "")
        if not seen or seen[-1] != tracker.status:
            seen.append(tracker.status)
        return tracker.status == TrackingStatus.DELIVERED

    await eventually(delivered)
    assert seen == [
        TrackingStatus.PRE_TRANSIT,
        TrackingStatus.IN_TRANSIT,
        TrackingStatus.OUT_FOR_DELIVERY,
        TrackingStatus.DELIVERED,
    ]
    tracker = await carrier.get_tracker(bought.tracking_code)
    assert [d.status for d in tracker.tracking_details] == seen
    assert tracker.message == "Delivered"
    assert tracker.tracking_details[-1].city == "London"


async def test_buying_twice_is_refused_and_one_label_exists(sb: SandboxServers, carrier: CarrierClient) -> None:
    shipment = await create(carrier)
    rate = choose_rate(shipment.rates, 7)
    first = await carrier.buy(shipment.id, rate.id)
    with pytest.raises(CarrierAlreadyPurchasedError):
        await carrier.buy(shipment.id, rate.id)
    again = await carrier.get_shipment(shipment.id)
    assert again.tracking_code == first.tracking_code
    labels = [s for s in sb.shipments() if s["postage_label"] is not None]
    assert len(labels) == 1
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sb.carrier_api_base}/_sandbox/shipments") as resp,
    ):
        listed = (await resp.json())["shipments"]
    assert [s["tracking_code"] for s in listed] == [first.tracking_code]
    with pytest.raises(CarrierError) as err:
        await carrier.buy((await create(carrier)).id, "rate_unknown")
    assert err.value.status == 422 and not err.value.retryable


@pytest.mark.parametrize(
    ("line1", "postal_code", "field"),
    [("12 Invalid Street", "N1 9GU", "line1"), ("1 Analytical Way", " ", "postal_code")],
)
async def test_invalid_address_is_an_address_error(
    carrier: CarrierClient, line1: str, postal_code: str, field: str
) -> None:
    bad = SHIP_TO.model_copy(update={"line1": line1, "postal_code": postal_code})
    with pytest.raises(CarrierAddressError) as err:
        await carrier.create_shipment(reference="r", to_address=bad, from_address=FROM, parcel=PARCEL)
    assert err.value.field == field
    assert err.value.code == "ADDRESS.VERIFY.FAILURE" and not err.value.retryable


async def test_fault_injection_is_transient_then_succeeds(sb: SandboxServers, carrier: CarrierClient) -> None:
    async with aiohttp.ClientSession() as http:
        fault = {"operation": "create_shipment", "fail_next": 2, "status": 503, "message": "carrier down"}
        async with http.post(f"{sb.carrier_api_base}/_sandbox/faults", json=fault) as resp:
            assert resp.status == 200
    for _ in range(2):
        with pytest.raises(CarrierTransientError) as err:
            await create(carrier)
        assert err.value.status == 503 and err.value.retryable and "carrier down" in str(err.value)
    shipment = await create(carrier)

    sb.inject_fault("buy", fail_next=1, status=429)
    with pytest.raises(CarrierTransientError):
        await carrier.buy(shipment.id, shipment.rates[0].id)
    bought = await carrier.buy(shipment.id, shipment.rates[0].id)

    sb.inject_fault("tracker", fail_next=5, status=500)
    async with aiohttp.ClientSession() as http, http.delete(f"{sb.carrier_api_base}/_sandbox/faults"):
        pass
    assert (await carrier.get_tracker(bought.tracking_code or "")).status == TrackingStatus.PRE_TRANSIT

    # A slow carrier: the client's timeout turns it into a transient error
    sb.inject_fault("get_shipment", fail_next=1, status=None, delay=0.4)
    slow = CarrierClient(sb.settings_for_clients(), timeout=0.1)
    try:
        with pytest.raises(CarrierTransientError):
            await slow.get_shipment(shipment.id)
    finally:
        await slow.close()


async def test_refund_then_rejected_once_moving(sb: SandboxServers, carrier: CarrierClient) -> None:
    fresh = await create(carrier)
    bought = await carrier.buy(fresh.id, fresh.rates[0].id)
    refunded = await carrier.refund(bought.id)
    assert refunded.refund_status == "submitted"
    assert refunded.tracker is not None and refunded.tracker.status == TrackingStatus.CANCELLED
    assert (await carrier.get_shipment(bought.id)).refund_status == "refunded"
    assert (await carrier.refund(bought.id)).refund_status == "refunded"  # idempotent
    assert (await carrier.get_tracker(bought.tracking_code or "")).status == TrackingStatus.CANCELLED

    moving = await create(carrier, ref="label:ORD-3:1")
    moving_bought = await carrier.buy(moving.id, moving.rates[0].id)
    await asyncio.sleep(STEP + 0.05)
    assert (await carrier.refund(moving_bought.id)).refund_status == "rejected"

    unbought = await create(carrier, ref="label:ORD-4:1")
    assert (await carrier.refund(unbought.id)).refund_status == "not_applicable"


async def test_forced_tracker_status_holds_then_resumes(sb: SandboxServers, carrier: CarrierClient) -> None:
    shipment = await create(carrier)
    bought = await carrier.buy(shipment.id, shipment.rates[0].id)
    code = bought.tracking_code or ""
    async with aiohttp.ClientSession() as http:
        url = f"{sb.carrier_api_base}/_sandbox/trackers/{code}"
        async with http.post(url, json={"status": "failure", "message": "Recipient not home"}) as resp:
            assert resp.status == 200
        await asyncio.sleep(3 * STEP + 0.1)  # the progression is paused while held
        tracker = await carrier.get_tracker(code)
        assert tracker.status == TrackingStatus.FAILURE and tracker.message == "Recipient not home"
        async with http.post(url, json={"status": "auto"}) as resp:
            assert resp.status == 200
    # Resumes where the progression paused (the hold began right after purchase), not at delivered
    resumed = await carrier.get_tracker(code)
    assert resumed.status in (TrackingStatus.PRE_TRANSIT, TrackingStatus.IN_TRANSIT)
    assert resumed.message is not None and resumed.message.startswith("Resumed")

    async def delivered() -> bool:
        return (await carrier.get_tracker(code)).status == TrackingStatus.DELIVERED

    await eventually(delivered)


async def test_wrong_api_key_is_refused(sb: SandboxServers) -> None:
    client = CarrierClient(sb.settings_for_clients().model_copy(update={"carrier_api_key": "nope"}))
    try:
        with pytest.raises(CarrierError) as err:
            await create(client)
        assert err.value.status == 401 and not err.value.retryable
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------------------
# Persistence


async def test_restart_keeps_outbox_and_shipments(tmp_path: Path) -> None:
    async with start_sandbox(tmp_path) as sb:
        settings = sb.settings_for_clients()
        await EmailSender(settings).send(
            to="ada@example.com",
            subject="Confirmed",
            text="t",
            html="<p>t</p>",
            message_id="<a@fulfill>",
            headers={"X-Order-Id": "ORD-9"},
        )
        sms = SmsSender(settings)
        await sms.send(to="+15555550100", body="b", status_callback=sms.status_callback_url("ORD-9"))
        carrier = CarrierClient(settings)
        shipment = await create(carrier)
        bought = await carrier.buy(shipment.id, shipment.rates[0].id)
        await carrier.close()
        before = sb.outbox("ORD-9")
        assert [m.channel for m in before] == ["email", "sms"]

    async with start_sandbox(tmp_path) as sb:
        assert [(m.id, m.channel, m.provider_id) for m in sb.outbox("ORD-9")] == [
            (m.id, m.channel, m.provider_id) for m in before
        ]
        carrier = CarrierClient(sb.settings_for_clients())
        try:
            again = await carrier.get_shipment(shipment.id)
            assert again.tracking_code == bought.tracking_code
            with pytest.raises(CarrierAlreadyPurchasedError):
                await carrier.buy(shipment.id, shipment.rates[0].id)
            tracker = await carrier.get_tracker(bought.tracking_code or "")
            assert tracker.tracking_details[0].status == TrackingStatus.PRE_TRANSIT
        finally:
            await carrier.close()


async def test_memory_db_and_health(tmp_path: Path) -> None:
    async with SandboxServers(sandbox_settings(tmp_path), db_path=":memory:") as sb:
        async with aiohttp.ClientSession() as http:
            for url in (f"{sb.http_url}/healthz", f"{sb.carrier_url}/healthz", f"{sb.payments_url}/healthz"):
                async with http.get(url) as resp:
                    assert resp.status == 200
        assert sb.outbox() == []
        assert not (tmp_path / "sb.db").exists()
