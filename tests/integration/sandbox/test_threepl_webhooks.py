"""The sandbox 3PL's webhooks, received by a receiver in the test and verified by the engine's adapter
(`ShipBobClient.verify_webhook`): one signed event per change, each topic with its order; refused when
tampered with, signed with another secret, stale or missing headers; at least once (retried while the receiver
fails, duplicated on request), and dropped or reordered by the controls, which reconciliation has to cope with."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.config import Settings
from common.integrations.shipbob import ShipBobClient
from common.integrations.threepl_api import ThreePLDetail, ThreePLStatus, ThreePLWebhookRefused
from sandbox import SandboxServers
from tests.integration.local_server import serving
from tests.integration.sandbox.conftest import threepl_sandbox
from tests.integration.sandbox.test_sandbox import eventually
from tests.integration.sandbox.test_threepl_adapter import INVALID, submit
from workers.devstack import with_engine_webhooks

SECRET = "whsec_" + "dGhlLXRlc3RzLW93bi13ZWJob29rLXNlY3JldC1rZXk="  # "the-tests-own-webhook-secret-key"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """The engine's side, as small as can be: keeps what it got; fails the next `fail_next` posts."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    failed: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        got = Received(dict(request.headers.items()), await request.read())
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed.append(got)
            return web.Response(status=503, text="receiver down")
        self.received.append(got)
        return web.Response(status=204)

    def topics(self, reference_id: str | None = None) -> list[str]:
        return [r.payload["topic"] for r in self.received if reference_id in (None, r.payload["data"]["reference_id"])]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    path = "/v1/webhooks/3pl/sandbox"
    async with serving(recv.handle, method="POST", path=path) as base:
        recv.url = base + path
        yield recv


@pytest.fixture
async def sb(tmp_path: Path, receiver: Receiver) -> AsyncIterator[SandboxServers]:
    settings = {"sandbox_threepl_webhook_url": receiver.url, "threepl_webhook_secret": SECRET}
    async with threepl_sandbox(tmp_path, **settings) as sb:
        sb.threepl_webhooks(retry_delays=[0.05, 0.1, 0.2])
        sb.threepl_stock({"MUG-RED": 10})
        yield sb


@pytest.fixture
async def client(sb: SandboxServers) -> AsyncIterator[ShipBobClient]:
    adapter = ShipBobClient(sb.settings_for_clients())
    yield adapter
    await adapter.close()


async def wait_for(receiver: Receiver, count: int, within: float = 5.0) -> list[Received]:
    async def enough() -> bool:
        return len(receiver.received) >= count

    await eventually(enough, within=within)
    return receiver.received


async def test_each_change_is_one_signed_event_the_adapter_verifies(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    await submit(client)
    got = await wait_for(receiver, 2)
    assert receiver.topics() == ["order.shipped", "order.shipment.delivered"]
    events = [client.verify_webhook(r.body, r.headers) for r in got]  # the real clock: sent just now
    for r, event in zip(got, events, strict=True):
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["x-webhook-topic"] == event.topic == r.payload["topic"]
        assert r.headers["webhook-id"] == event.event_id and event.event_id.startswith("msg_")
        assert r.headers["webhook-signature"].startswith("v1,")
        assert abs(datetime.now(UTC) - event.sent_at) < timedelta(seconds=10)
        assert event.order is not None and event.order.reference_id == "3pl:ORD-1:1"
        assert event.shipment_id == event.order.shipments[0].provider_id
    shipped, delivered = events
    assert shipped.event_id != delivered.event_id
    assert shipped.order is not None and delivered.order is not None
    assert (shipped.order.status, shipped.order.detail) == (ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
    assert shipped.order.shipments[0].tracking_number is not None
    assert (delivered.order.status, delivered.order.detail) == (ThreePLStatus.COMPLETED, ThreePLDetail.DELIVERED)
    assert shipped.occurred_at == shipped.order.updated_at and shipped.occurred_at < delivered.occurred_at
    assert delivered.order == await client.get_order("3pl:ORD-1:1")  # the event shows the order as the API does
    listed = sb.threepl_events("3pl:ORD-1:1")
    assert [e.webhook_id for e in listed] == [e.event_id for e in events]
    assert {(e.delivery, e.attempts, e.deliveries) for e in listed} == {("delivered", 1, 1)}


async def test_exception_hold_and_cancel_each_have_their_topic(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    sb.threepl.configure(ship_after=60)
    await submit(client, "3pl:ORD-1:1", [("MUG-BLUE", 1)])  # a SKU the 3PL does not stock
    await submit(client, "3pl:ORD-2:1", recipient=INVALID)
    await submit(client, "3pl:ORD-3:1")
    await client.request_cancel("3pl:ORD-3:1")
    await client.request_cancel("3pl:ORD-3:1")  # cancelled already: no second event
    got = await wait_for(receiver, 3)
    events = {e.topic: e for e in (client.verify_webhook(r.body, r.headers) for r in got)}
    assert sorted(events) == ["order.shipment.cancelled", "order.shipment.exception", "order.shipment.on_hold"]
    hold, exception, cancel = (
        events[topic].order
        for topic in ("order.shipment.on_hold", "order.shipment.exception", "order.shipment.cancelled")
    )
    assert hold is not None and (hold.reference_id, hold.status, hold.detail) == (
        "3pl:ORD-2:1",
        ThreePLStatus.ON_HOLD,
        ThreePLDetail.INVALID_ADDRESS,
    )
    assert exception is not None and (exception.reference_id, exception.status, exception.detail) == (
        "3pl:ORD-1:1",
        ThreePLStatus.EXCEPTION,
        ThreePLDetail.UNKNOWN_SKU,
    )
    assert cancel is not None and (cancel.reference_id, cancel.status) == ("3pl:ORD-3:1", ThreePLStatus.CANCELLED)
    assert len(sb.threepl_events()) == 3


async def test_tampered_wrongly_keyed_stale_or_headless_webhooks_are_refused(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    await submit(client)
    [got, _] = await wait_for(receiver, 2)
    assert client.verify_webhook(got.body, got.headers).topic == "order.shipped"
    tampered = got.body.replace(b'"InTransit"', b'"Delivered"', 1)
    assert tampered != got.body
    with pytest.raises(ThreePLWebhookRefused, match="no v1 signature matches"):
        client.verify_webhook(tampered, got.headers)
    other = sb.settings_for_clients().model_copy(
        update={"threepl_webhook_secret": "whsec_b3RoZXIta2V5LW9mLWFuLWF0dGFja2Vy"}
    )
    with pytest.raises(ThreePLWebhookRefused, match="no v1 signature matches"):
        ShipBobClient(other).verify_webhook(got.body, got.headers)
    sent = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), UTC)
    with pytest.raises(ThreePLWebhookRefused, match="more than 300 s"):
        client.verify_webhook(got.body, got.headers, now=sent + timedelta(minutes=6))  # replayed later
    assert client.verify_webhook(got.body, got.headers, now=sent + timedelta(minutes=4)).event_id
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headless = {k: v for k, v in got.headers.items() if k.lower() != header}
        with pytest.raises(ThreePLWebhookRefused, match=f"missing header.*{header}"):
            client.verify_webhook(got.body, headless)
    other_id = {**got.headers, "webhook-id": "msg_replayed_under_another_id"}
    with pytest.raises(ThreePLWebhookRefused, match="no v1 signature matches"):
        client.verify_webhook(got.body, other_id)


async def test_a_failing_receiver_gets_each_event_again_until_it_answers(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    await submit(client)
    [first, *_] = await wait_for(receiver, 2)
    assert len(receiver.failed) == 2
    # The same event each time (id and body), each attempt signed anew, and verifiable
    assert {r.headers["webhook-id"] for r in [*receiver.failed, first]} == {first.headers["webhook-id"]}
    assert {r.body for r in [*receiver.failed, first]} == {first.body}
    for r in [*receiver.failed, first]:
        assert client.verify_webhook(r.body, r.headers).event_id == first.headers["webhook-id"]
    assert receiver.topics() == ["order.shipped", "order.shipment.delivered"]  # still in order
    shipped = sb.threepl_events()[0]
    assert (shipped.delivery, shipped.attempts, shipped.deliveries, shipped.last_error) == ("delivered", 3, 1, None)

    receiver.fail_next = 100
    await submit(client, "3pl:ORD-2:1")

    async def given_up() -> bool:
        return [e.delivery for e in sb.threepl_events("3pl:ORD-2:1")] == ["failed", "failed"]

    await eventually(given_up, within=10)
    assert (
        sb.threepl_events("3pl:ORD-2:1")[0].attempts == 4
        and sb.threepl_events("3pl:ORD-2:1")[0].last_error == "HTTP 503"
    )


async def test_duplicates_drops_and_reordering_on_request(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    sb.threepl.configure(ship_after=60, deliver_after=60)
    sb.threepl_webhooks(duplicate_next=1)
    await submit(client, "3pl:ORD-1:1")
    sb.threepl.act("3pl:ORD-1:1", "ship")
    twice = await wait_for(receiver, 2)
    assert twice[0].headers["webhook-id"] == twice[1].headers["webhook-id"] and twice[0].body == twice[1].body
    assert [client.verify_webhook(r.body, r.headers).event_id for r in twice] == [twice[0].headers["webhook-id"]] * 2
    assert sb.threepl_events()[0].deliveries == 2

    sb.threepl_webhooks(drop_next=1)
    sb.threepl.act("3pl:ORD-1:1", "deliver")  # its event is lost: reconciliation must find the change
    dropped = sb.threepl_events("3pl:ORD-1:1")[-1]
    assert (dropped.topic, dropped.delivery, dropped.attempts) == ("order.shipment.delivered", "dropped", 0)
    since = datetime.now(UTC) - timedelta(seconds=5)
    [changed] = await client.changes_since(since)
    assert (changed.reference_id, changed.detail) == ("3pl:ORD-1:1", ThreePLDetail.DELIVERED)

    sb.threepl_webhooks(reorder_next=2)
    await submit(client, "3pl:ORD-2:1")
    sb.threepl.act("3pl:ORD-2:1", "ship")
    assert sb.threepl_events("3pl:ORD-2:1")[-1].delivery == "held"
    await asyncio.sleep(0.01)  # a later millisecond: the 3PL's times are to the millisecond
    sb.threepl.act("3pl:ORD-2:1", "deliver")
    await wait_for(receiver, 4)
    assert receiver.topics("3pl:ORD-2:1") == ["order.shipment.delivered", "order.shipped"]  # newest first
    late = [client.verify_webhook(r.body, r.headers) for r in receiver.received[2:]]
    assert late[0].order is not None and late[1].order is not None
    assert late[0].order.updated_at is not None and late[1].order.updated_at is not None
    assert late[1].order.updated_at < late[0].order.updated_at  # what tells a receiver the older one is stale
    assert len(receiver.received) == 4


async def test_off_nowhere_and_off_the_machine_are_listed_not_sent(
    sb: SandboxServers, client: ShipBobClient, receiver: Receiver
) -> None:
    sb.threepl.configure(ship_after=60)
    sb.threepl_webhooks(enabled=False)
    await submit(client, "3pl:ORD-1:1", [("NOPE", 1)])
    sb.threepl_webhooks(enabled=True, url="http://example.com/hook")
    await submit(client, "3pl:ORD-2:1", [("NOPE", 1)])
    assert [e.delivery for e in sb.threepl_events()] == ["disabled", "refused"]
    async with aiohttp.ClientSession() as http:
        base = f"{sb.threepl_url}/_sandbox/3pl"
        async with http.get(f"{base}/events", params={"reference_id": "3pl:ORD-2:1"}) as resp:
            [listed] = (await resp.json())["events"]
        assert (listed["topic"], listed["delivery"], listed["detail"]) == (
            "order.shipment.exception",
            "refused",
            "UnknownSku",
        )
        async with http.post(f"{base}/webhooks", json={"url": receiver.url, "drop_next": -1}) as bad:
            assert bad.status == 400 and "drop_next" in (await bad.json())["title"]
        async with http.post(f"{base}/webhooks", json={"url": receiver.url}) as ok:
            assert (await ok.json())["url"] == receiver.url
    await submit(client, "3pl:ORD-3:1", [("NOPE", 1)])
    await wait_for(receiver, 1)
    assert receiver.topics() == ["order.shipment.exception"]
    assert [e.delivery for e in sb.threepl_events()] == ["disabled", "refused", "delivered"]


def test_make_run_points_the_3pl_webhooks_at_its_own_api() -> None:
    settings, env = with_engine_webhooks(Settings(api_host="0.0.0.0", api_port=9090), {})
    url = "http://127.0.0.1:9090/v1/webhooks/3pl/shipbob"
    assert settings.sandbox_threepl_webhook_url == url and env["FULFILL_SANDBOX_THREEPL_WEBHOOK_URL"] == url
    # A shell that chose (even none: empty) keeps its choice
    kept, env = with_engine_webhooks(Settings(), {"FULFILL_SANDBOX_THREEPL_WEBHOOK_URL": ""})
    assert (
        env["FULFILL_SANDBOX_THREEPL_WEBHOOK_URL"] == ""
        and kept.sandbox_threepl_webhook_url == Settings().sandbox_threepl_webhook_url
    )
