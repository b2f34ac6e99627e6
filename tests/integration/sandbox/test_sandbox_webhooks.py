"""The sandbox carrier's webhooks: an EasyPost Event per tracker change, POSTed to a receiver in the test and
signed so that `easypost.validate_webhook` accepts it, in order, once each; the test controls (off, drop,
duplicate) and retries when the receiver fails."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import easypost
import pytest
from aiohttp import web
from easypost.errors import SignatureVerificationError

from common.config import Settings
from common.integrations.carrier import CarrierClient, CarrierShipment, parse_tracker
from common.models import TrackingStatus
from sandbox import Progression, SandboxServers, free_port_settings
from tests.integration.local_server import serving
from tests.integration.sandbox.test_sandbox import STEP, create, eventually
from workers.devstack import with_engine_webhooks

SECRET = "s\u00e9cret-\u2167"  # not ASCII, with a compatibility character: NFKD normalisation matters
SIGNATURE = re.compile(r"^hmac-sha256-hex=[0-9a-f]{64}$")
STATUSES = ["pre_transit", "in_transit", "out_for_delivery", "delivered"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """The engine's side of the webhook, as small as can be: keeps what it got; fails the next `fail_next`
    posts, and the next `fail_created` posts of a tracker.created event."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_created: int = 0
    failed: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        created = json.loads(body)["description"] == "tracker.created"
        if self.fail_next > 0 or (created and self.fail_created > 0):
            self.fail_next = max(self.fail_next - 1, 0)
            self.fail_created = max(self.fail_created - 1, 0) if created else self.fail_created
            self.failed += 1
            return web.Response(status=500, text="receiver down")
        # validate_webhook reads headers.get("X-Hmac-Signature"): a plain dict with the names as sent
        self.received.append(Received(dict(request.headers.items()), body))
        return web.Response(status=204)

    def events(self, tracking_code: str | None = None) -> list[dict[str, Any]]:
        events = [r.event for r in self.received]
        return [e for e in events if tracking_code in (None, e["result"]["tracking_code"])]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    path = "/v1/webhooks/easypost"
    async with serving(recv.handle, method="POST", path=path) as base:
        recv.url = base + path
        yield recv


def webhook_sandbox(tmp_path: Path, url: str | None, **settings: Any) -> SandboxServers:
    base = free_port_settings(
        var_dir=tmp_path,
        sandbox_carrier_webhook_url=url,
        carrier_webhook_secret=SECRET,
        **settings,
    )
    return SandboxServers(
        base,
        db_path=tmp_path / "sb.db",
        in_transit_after=STEP,
        out_for_delivery_after=2 * STEP,
        delivered_after=3 * STEP,
    )


@pytest.fixture
async def sb(tmp_path: Path, receiver: Receiver) -> AsyncIterator[SandboxServers]:
    async with webhook_sandbox(tmp_path, receiver.url) as sb:
        sb.carrier_webhooks(retry_delays=[0.05, 0.1, 0.2])
        yield sb


@pytest.fixture
async def carrier(sb: SandboxServers) -> AsyncIterator[CarrierClient]:
    client = CarrierClient(sb.settings_for_clients())
    yield client
    await client.close()


async def bought(carrier: CarrierClient, ref: str = "label:ORD-1:1") -> CarrierShipment:
    shipment = await create(carrier, ref=ref)
    label = await carrier.buy(shipment.id, shipment.rates[0].id)
    assert label.tracking_code is not None
    return label


async def wait_for(receiver: Receiver, code: str, count: int, within: float = 10.0) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len(receiver.events(code)) >= count

    await eventually(enough, within=within)
    return receiver.events(code)


async def test_each_status_change_is_one_signed_event_in_order(
    sb: SandboxServers, carrier: CarrierClient, receiver: Receiver
) -> None:
    label = await bought(carrier)
    code = label.tracking_code or ""
    events = await wait_for(receiver, code, 4)
    await asyncio.sleep(3 * STEP)  # and nothing more once delivered
    assert len(receiver.events(code)) == 4

    for got in receiver.received:
        assert SIGNATURE.match(got.headers["X-Hmac-Signature"])
        assert got.headers["Content-Type"] == "application/json"
        assert easypost.validate_webhook(got.body, got.headers, SECRET) == got.event
    assert [e["description"] for e in events] == ["tracker.created"] + ["tracker.updated"] * 3
    assert [e["result"]["status"] for e in events] == STATUSES
    assert [e["previous_attributes"] for e in events] == [{}] + [{"status": s} for s in STATUSES[:-1]]
    assert len({e["id"] for e in events}) == 4 and all(e["id"].startswith("evt_") for e in events)
    assert label.tracker is not None
    for n, event in enumerate(events, start=1):
        assert (event["object"], event["mode"], event["status"]) == ("Event", "test", "pending")
        assert event["pending_urls"] == [receiver.url] and event["completed_urls"] == []
        result = event["result"]
        assert (result["object"], result["id"], result["shipment_id"]) == ("Tracker", label.tracker.id, label.id)
        assert [d["status"] for d in result["tracking_details"]] == STATUSES[:n]
        assert result["est_delivery_date"] is not None
        # The engine's view of it, as the adapter reads trackers
        tracker = parse_tracker(result)
        assert (tracker.tracking_code, tracker.status) == (code, TrackingStatus(STATUSES[n - 1]))

    listed = sb.carrier_events(code)
    assert [e.event["id"] for e in listed] == [e["id"] for e in events]
    assert {(e.delivery, e.attempts, e.deliveries) for e in listed} == {("delivered", 1, 1)}


async def test_a_tampered_or_wrongly_keyed_event_fails_validation(carrier: CarrierClient, receiver: Receiver) -> None:
    label = await bought(carrier)
    [first] = await wait_for(receiver, label.tracking_code or "", 1)
    got = receiver.received[0]
    assert got.event == first
    tampered = got.body.replace(b'"pre_transit"', b'"delivered"', 1)
    assert tampered != got.body
    with pytest.raises(SignatureVerificationError):
        easypost.validate_webhook(tampered, got.headers, SECRET)
    with pytest.raises(SignatureVerificationError):
        easypost.validate_webhook(got.body, got.headers, "another-secret")
    # NFKD: the secret as written and in its decomposed form sign alike; its ASCII look-alike does not
    assert easypost.validate_webhook(got.body, got.headers, "se\u0301cret-VIII") == first
    with pytest.raises(SignatureVerificationError):
        easypost.validate_webhook(got.body, got.headers, "secret-VIII")
    unsigned = {k: v for k, v in got.headers.items() if k != "X-Hmac-Signature"}
    with pytest.raises(SignatureVerificationError):
        easypost.validate_webhook(got.body, unsigned, SECRET)


async def test_forced_statuses_and_refunds_send_events(
    sb: SandboxServers, carrier: CarrierClient, receiver: Receiver
) -> None:
    sb.carrier.progression = Progression(60, 120, 180)  # nothing moves by itself in this test
    label = await bought(carrier)
    code = label.tracking_code or ""
    await wait_for(receiver, code, 1)
    async with aiohttp.ClientSession() as http:
        url = f"{sb.carrier_api_base}/_sandbox/trackers/{code}"
        async with http.post(url, json={"status": "failure", "message": "Recipient not home"}) as resp:
            assert resp.status == 200
        held = await wait_for(receiver, code, 2)
        async with http.post(url, json={"status": "auto"}) as resp:
            assert resp.status == 200
    events = await wait_for(receiver, code, 3)
    assert [(e["result"]["status"], e["previous_attributes"].get("status")) for e in events] == [
        ("pre_transit", None),
        ("failure", "pre_transit"),
        ("pre_transit", "failure"),
    ]
    assert held[1]["result"]["tracking_details"][-1]["message"] == "Recipient not home"
    assert events[2]["result"]["tracking_details"][-1]["message"].startswith("Resumed")

    # A refunded label: its tracker is cancelled, and says so
    refunded = await bought(carrier, ref="label:ORD-2:1")
    await carrier.refund(refunded.id)
    [created, cancelled] = await wait_for(receiver, refunded.tracking_code or "", 2)
    assert (created["result"]["status"], cancelled["result"]["status"]) == ("pre_transit", "cancelled")
    assert cancelled["previous_attributes"] == {"status": "pre_transit"}
    assert cancelled["result"]["est_delivery_date"] is None
    for got in receiver.received:
        easypost.validate_webhook(got.body, got.headers, SECRET)


async def test_a_failing_receiver_gets_the_events_retried_and_in_order(
    sb: SandboxServers, carrier: CarrierClient, receiver: Receiver
) -> None:
    # The first event fails twice, 0.5 s apart: meanwhile the parcel moves on, and its events wait their turn.
    sb.carrier_webhooks(retry_delays=[0.5, 0.5, 0.5])
    receiver.fail_created = 2
    label = await bought(carrier)
    code = label.tracking_code or ""
    events = await wait_for(receiver, code, 4)
    assert receiver.failed == 2
    assert [e["result"]["status"] for e in events] == STATUSES
    listed = sb.carrier_events(code)
    assert [(e.delivery, e.attempts, e.deliveries, e.last_error) for e in listed] == [
        ("delivered", 3, 1, None),
        *[("delivered", 1, 1, None)] * 3,
    ]
    sb.carrier_webhooks(retry_delays=[0.05, 0.1, 0.2])

    # A receiver that never answers well: the event is given up after the retries, later ones still go
    sb.carrier.progression = Progression(60, 120, 180)
    receiver.fail_next = 10**6
    other = await bought(carrier, ref="label:ORD-2:1")

    async def given_up() -> bool:
        listed = sb.carrier_events(other.tracking_code)
        return bool(listed) and listed[0].delivery == "failed"

    await eventually(given_up)
    failed = sb.carrier_events(other.tracking_code)[0]
    assert (failed.attempts, failed.last_error) == (4, "HTTP 500")
    receiver.fail_next = 0
    sb.force_tracker_status(other.tracking_code or "", "in_transit")
    [later] = await wait_for(receiver, other.tracking_code or "", 1)
    assert (later["result"]["status"], later["previous_attributes"]) == ("in_transit", {"status": "pre_transit"})


async def test_the_controls_turn_webhooks_off_drop_and_duplicate_them(
    sb: SandboxServers, carrier: CarrierClient, receiver: Receiver
) -> None:
    controls = f"{sb.carrier_api_base}/_sandbox/webhooks"
    async with aiohttp.ClientSession() as http:
        async with http.post(controls, json={"enabled": False}) as resp:
            assert resp.status == 200 and (await resp.json())["enabled"] is False
        off = await bought(carrier)

        async def listed_delivered() -> bool:
            return len(sb.carrier_events(off.tracking_code)) == 4

        await eventually(listed_delivered)
        assert receiver.received == []  # listed, never sent
        assert {e.delivery for e in sb.carrier_events(off.tracking_code)} == {"disabled"}

        async with http.post(controls, json={"enabled": True, "drop_next": 1, "duplicate_next": 1}) as resp:
            assert (await resp.json())["drop_next"] == 1
        on = await bought(carrier, ref="label:ORD-2:1")
        code = on.tracking_code or ""
        events = await wait_for(receiver, code, 4)  # created dropped, in_transit twice, then the rest
        assert [e["result"]["status"] for e in events] == STATUSES[1:2] * 2 + STATUSES[2:]
        assert events[0]["id"] == events[1]["id"]
        assert receiver.received[0].body == receiver.received[1].body
        async with http.get(f"{sb.carrier_api_base}/_sandbox/events", params={"tracking_code": code}) as resp:
            listed = (await resp.json())["events"]
        assert [(e["status"], e["delivery"], e["deliveries"]) for e in listed] == [
            ("pre_transit", "dropped", 0),
            ("in_transit", "delivered", 2),
            ("out_for_delivery", "delivered", 1),
            ("delivered", "delivered", 1),
        ]
        async with http.post(controls, json={"drop_next": -1}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "BAD_REQUEST"
        async with http.post(controls, json={"url": "http://carrier-hooks.example.com/hook"}) as resp:
            assert resp.status == 200
        away = await bought(carrier, ref="label:ORD-3:1")

        async def refused() -> bool:
            return [e.delivery for e in sb.carrier_events(away.tracking_code)][:1] == ["refused"]

        await eventually(refused)  # nothing leaves this machine
        async with http.delete(f"{sb.carrier_api_base}/_sandbox/events") as resp:
            assert resp.status == 200
    assert len(receiver.events(away.tracking_code)) == 0


async def test_a_restarted_sandbox_does_not_send_the_same_changes_again(tmp_path: Path, receiver: Receiver) -> None:
    async with webhook_sandbox(tmp_path, receiver.url) as sb:
        carrier = CarrierClient(sb.settings_for_clients())
        label = await bought(carrier)
        await carrier.close()
        code = label.tracking_code or ""
        await wait_for(receiver, code, 4)
    async with webhook_sandbox(tmp_path, receiver.url) as sb:
        await asyncio.sleep(4 * STEP)
        assert len(receiver.events(code)) == 4 and sb.carrier_events() == []
        sb.force_tracker_status(code, "return_to_sender")
        events = await wait_for(receiver, code, 5)
    assert (events[-1]["result"]["status"], events[-1]["previous_attributes"]) == (
        "return_to_sender",
        {"status": "delivered"},
    )


async def test_no_url_means_no_webhooks(tmp_path: Path, receiver: Receiver) -> None:
    async with webhook_sandbox(tmp_path, None) as sb:
        assert sb.carrier_webhooks().url is None
        carrier = CarrierClient(sb.settings_for_clients())
        label = await bought(carrier)
        await carrier.close()

        async def listed() -> bool:
            return len(sb.carrier_events(label.tracking_code)) == 4

        await eventually(listed)
        assert {e.delivery for e in sb.carrier_events()} == {"disabled"}
        # ... until a test points them somewhere
        sb.carrier_webhooks(url=receiver.url)
        sb.force_tracker_status(label.tracking_code or "", "failure")
        [event] = await wait_for(receiver, label.tracking_code or "", 1)
    assert event["result"]["status"] == "failure"


def test_make_run_points_the_webhooks_at_its_own_api() -> None:
    stack = Settings(api_host="0.0.0.0", api_port=9090)
    settings, env = with_engine_webhooks(stack, {"PATH": "/usr/bin"})
    url = "http://127.0.0.1:9090/v1/webhooks/easypost"
    assert settings.sandbox_carrier_webhook_url == url
    assert env["PATH"] == "/usr/bin" and env["FULFILL_SANDBOX_CARRIER_WEBHOOK_URL"] == url
    # A shell that chose (even none: empty) keeps its choice
    for chosen in ({"FULFILL_SANDBOX_CARRIER_WEBHOOK_URL": ""}, {"fulfill_sandbox_carrier_webhook_url": "http://x"}):
        kept, env = with_engine_webhooks(stack, chosen)
        assert kept.sandbox_carrier_webhook_url == stack.sandbox_carrier_webhook_url
        assert "FULFILL_SANDBOX_CARRIER_WEBHOOK_URL" not in env or env == {**env, **chosen}
