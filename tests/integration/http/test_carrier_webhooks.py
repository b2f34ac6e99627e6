"""Tracking by push: EasyPost tracker.updated webhooks at POST /v1/webhooks/easypost move an order whose
polling is only an hourly safety net, and forged, tampered, replayed, stale and out-of-order events change
nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import unicodedata
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from common.api import FulfillmentApi
from common.config import Settings
from common.http.app import create_app
from common.models import OrderView
from common.store import Store
from sandbox import SandboxServers
from tests.integration.http.conftest import new_key
from tests.orders import order_dict

SECRET = "whsec-test-\u00e9"  # non-ASCII: EasyPost NFKD-normalises the secret before signing


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    key = unicodedata.normalize("NFKD", secret).encode()
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {"X-Hmac-Signature": f"hmac-sha256-hex={digest}", "Content-Type": "application/json"}


def tracker_event(
    tracking_code: str,
    status: str,
    *,
    at: datetime,
    event_id: str | None = None,
    estimate: datetime | None = None,
    message: str | None = None,
    description: str = "tracker.updated",
) -> bytes:
    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    tracker = {
        "id": "trk_" + secrets.token_hex(8),
        "object": "Tracker",
        "mode": "test",
        "tracking_code": tracking_code,
        "carrier": "SandboxPost",
        "status": status,
        "est_delivery_date": iso(estimate) if estimate else None,
        "created_at": iso(at - timedelta(hours=1)),
        "updated_at": iso(at),
        "tracking_details": [
            {"object": "TrackingDetail", "status": status, "message": message or status, "datetime": iso(at)}
        ],
    }
    event = {
        "object": "Event",
        "id": event_id or "evt_" + secrets.token_hex(12),
        "description": description,
        "mode": "test",
        "created_at": iso(at),
        "updated_at": iso(at),
        "previous_attributes": {},
        "result": tracker,
        "pending_urls": [],
        "completed_urls": [],
        "status": "pending",
    }
    return json.dumps(event).encode()


@pytest.fixture(scope="module")
def push_settings(stack_settings: Settings) -> Settings:
    # The carrier pushes; polling every hour is only the safety net (no poll answers within a test)
    return stack_settings.model_copy(update={"carrier_webhook_secret": SECRET, "tracking_safety_poll_interval": 3600.0})


@pytest.fixture(scope="module")
async def push_api(api: FulfillmentApi, push_settings: Settings, worker: None) -> FulfillmentApi:
    return FulfillmentApi(api.client, api.store, push_settings)


@pytest.fixture(scope="module")
async def engine(push_api: FulfillmentApi, push_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(push_settings, push_api))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine.test", timeout=60) as client:
        yield client


async def status_of(api: FulfillmentApi, order_id: str) -> OrderView:
    return await api.order_status(order_id)


async def wait_for(api: FulfillmentApi, order_id: str, *wanted: str, within: float = 60) -> OrderView:
    view = await status_of(api, order_id)
    for _ in range(int(within / 0.25)):
        view = await status_of(api, order_id)
        if view.status.value in wanted:
            return view
        await asyncio.sleep(0.25)
    raise AssertionError(f"{order_id} never reached {wanted}: {view.status.value}")


async def labelled_order(api: FulfillmentApi, sandbox: SandboxServers) -> tuple[str, str]:
    """A labelled order whose sandbox tracker is held at pre_transit: the only news it gets is what a test
    pushes (a safety-net poll sees nothing new)."""
    order_id = f"ORD-W{uuid.uuid4().hex[:8]}"
    await api.place_order(order_dict(order_id))
    picking = await wait_for(api, order_id, "PICKING")
    assert picking.pick_task_id
    await api.confirm_pick(picking.pick_task_id)
    view = await wait_for(api, order_id, "LABELED")
    assert view.tracking_number
    sandbox.carrier.force_tracker_status(view.tracking_number, "pre_transit")
    return order_id, view.tracking_number


async def post(engine: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await engine.post("/v1/webhooks/easypost", content=body, headers=sign(body) if headers is None else headers)


async def test_an_order_whose_tracking_arrives_only_by_webhook_is_delivered(
    push_api: FulfillmentApi, engine: httpx.AsyncClient, store: Store, sandbox: SandboxServers
) -> None:
    order_id, code = await labelled_order(push_api, sandbox)
    now = datetime.now(UTC)
    estimate = (now + timedelta(days=2)).replace(microsecond=0)
    steps = [("in_transit", "Arrived at carrier facility"), ("out_for_delivery", "Out for delivery")]
    for i, (status, message) in enumerate(steps):
        response = await post(
            engine, tracker_event(code, status, at=now + timedelta(seconds=i), estimate=estimate, message=message)
        )
        assert response.status_code == 200, response.text
        assert response.json()["applied"] is True and response.json()["order_id"] == order_id
    view = await wait_for(push_api, order_id, "OUT_FOR_DELIVERY")
    assert view.estimated_delivery == estimate
    response = await post(engine, tracker_event(code, "delivered", at=now + timedelta(seconds=5), message="Delivered"))
    assert response.status_code == 200
    view = await wait_for(push_api, order_id, "DELIVERED", "COMPLETED")
    notes = [entry.note for entry in view.timeline]
    assert any("Out for delivery" in note for note in notes), notes
    # Each event told the order once, through the outbox, and was delivered
    rows = [r for r in await store.signals.order_signals(f"order-{order_id}") if r.name == "carrier_tracking"]
    assert len(rows) == 3 and all(r.delivered_at is not None for r in rows)
    # The customer heard "shipped" (first scan), "out for delivery" and "delivered" once each
    sent = [n for n in await store.notifications.notifications(order_id) if n.status == "sent"]
    events = sorted(n.event for n in sent if n.channel == "email")
    assert events == ["delivered", "order_confirmed", "shipped"], events


async def test_forged_tampered_and_unsigned_events_are_refused_and_change_nothing(
    push_api: FulfillmentApi, engine: httpx.AsyncClient, store: Store, sandbox: SandboxServers
) -> None:
    order_id, code = await labelled_order(push_api, sandbox)
    body = tracker_event(code, "delivered", at=datetime.now(UTC))
    forged = sign(body, secret="not-the-secret")
    tampered = body.replace(b'"delivered"', b'"in_transit"')
    for response in [
        await post(engine, body, forged),
        await post(engine, tampered, sign(body)),
        await post(engine, body, {"Content-Type": "application/json"}),
    ]:
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(1.0)
    assert (await status_of(push_api, order_id)).status.value == "LABELED"
    assert not [r for r in await store.signals.order_signals(f"order-{order_id}") if r.name == "carrier_tracking"]


async def test_a_replayed_event_is_refused_and_acts_once(
    push_api: FulfillmentApi, engine: httpx.AsyncClient, store: Store, sandbox: SandboxServers
) -> None:
    order_id, code = await labelled_order(push_api, sandbox)
    body = tracker_event(code, "in_transit", at=datetime.now(UTC))
    first, again = await asyncio.gather(post(engine, body), post(engine, body))
    codes = sorted([first.status_code, again.status_code])
    assert codes == [200, 401], (first.text, again.text)
    await wait_for(push_api, order_id, "IN_TRANSIT")
    rows = [r for r in await store.signals.order_signals(f"order-{order_id}") if r.name == "carrier_tracking"]
    assert len(rows) == 1
    # A signed event from long ago (captured and replayed) is refused too
    old = tracker_event(code, "delivered", at=datetime.now(UTC) - timedelta(days=30))
    response = await post(engine, old)
    assert response.status_code == 401 and "replay" in response.json()["detail"]


async def test_out_of_order_events_never_move_a_parcel_back(
    push_api: FulfillmentApi, engine: httpx.AsyncClient, sandbox: SandboxServers
) -> None:
    order_id, code = await labelled_order(push_api, sandbox)
    now = datetime.now(UTC)
    late = (now + timedelta(days=3)).replace(microsecond=0)
    early = (now + timedelta(days=1)).replace(microsecond=0)
    newer = tracker_event(code, "out_for_delivery", at=now + timedelta(minutes=5), estimate=early)
    older = tracker_event(code, "in_transit", at=now, estimate=late)
    assert (await post(engine, newer)).status_code == 200
    view = await wait_for(push_api, order_id, "OUT_FOR_DELIVERY")
    assert (await post(engine, older)).status_code == 200  # accepted (it is genuine), but stale
    await asyncio.sleep(1.5)
    view = await status_of(push_api, order_id)
    assert view.status.value == "OUT_FOR_DELIVERY"
    # The older event's estimate did not overwrite the newer one (the sandbox's own, from a poll, may have)
    assert view.estimated_delivery != late
    assert not any(e.note == "in_transit" for e in view.timeline), [e.note for e in view.timeline]


async def test_events_that_are_not_ours_are_acknowledged_and_ignored(engine: httpx.AsyncClient) -> None:
    unknown = await post(engine, tracker_event("EZ-NOT-OURS-" + uuid.uuid4().hex, "in_transit", at=datetime.now(UTC)))
    assert unknown.status_code == 200 and unknown.json()["applied"] is False
    other = await post(engine, tracker_event("X", "in_transit", at=datetime.now(UTC), description="batch.created"))
    assert other.status_code == 200 and other.json() == {
        "event_id": other.json()["event_id"],
        "applied": False,
        "order_id": None,
        "note": "ignored: batch.created",
    }
    not_json = b"not json at all"
    response = await post(engine, not_json)
    assert response.status_code == 422


async def test_the_webhook_needs_no_api_key_but_is_off_without_a_secret(http: httpx.AsyncClient, store: Store) -> None:
    """The shared stack has no webhook secret: the endpoint says it is not enabled (and an API key does not
    change that)."""
    body = tracker_event("X", "in_transit", at=datetime.now(UTC))
    response = await http.post(
        "/v1/webhooks/easypost", content=body, headers={**sign(body), **await new_key(store, "ops")}
    )
    assert response.status_code == 404 and "not enabled" in response.json()["detail"]


@pytest.fixture
async def served(push_api: FulfillmentApi, push_settings: Settings, sandbox: SandboxServers) -> AsyncIterator[str]:
    """The engine's HTTP API on a real port, and the sandbox carrier posting its signed webhooks to it (as
    EasyPost does to a configured webhook URL); back to no webhooks afterwards."""
    config = uvicorn.Config(create_app(push_settings, push_api), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # uvicorn sets `started` once it listens; it has no event to wait on
        if server.started:
            break
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/webhooks/easypost"
    sandbox.carrier_webhooks(enabled=True, url=url, secret=SECRET)
    try:
        yield url
    finally:
        sandbox.carrier_webhooks(enabled=False, url=None)
        server.should_exit = True
        await task


async def test_the_sandbox_carriers_own_webhooks_deliver_an_order_that_polls_hourly(
    served: str, push_api: FulfillmentApi, sandbox: SandboxServers, store: Store
) -> None:
    """End to end: the carrier moves the parcel (1, 2, 3 s after the label) and tells the engine by webhook
    only; the order's one poll is an hour away."""
    order_id = f"ORD-W{uuid.uuid4().hex[:8]}"
    await push_api.place_order(order_dict(order_id))
    picking = await wait_for(push_api, order_id, "PICKING")
    assert picking.pick_task_id
    sandbox.carrier_webhooks(duplicate_next=1)  # EasyPost delivers at least once: the engine acts once
    await push_api.confirm_pick(picking.pick_task_id)
    view = await wait_for(push_api, order_id, "DELIVERED", "COMPLETED", within=30)
    code = view.tracking_number or ""
    events = sandbox.carrier_events(code)
    assert [e.event["result"]["status"] for e in events][-3:] == ["in_transit", "out_for_delivery", "delivered"]
    assert all(e.deliveries >= 1 for e in events), [(e.delivery, e.attempts, e.last_error) for e in events]
    rows = [r for r in await store.signals.order_signals(f"order-{order_id}") if r.name == "carrier_tracking"]
    told = [r.payload["event_id"] for r in rows]
    # Each event told the order once, the duplicate refused; every move among them (tracker.created, sent as the
    # label is bought, may come before the label is recorded: then it is not a parcel of ours yet)
    assert len(told) == len(set(told)) and set(told) <= {e.event["id"] for e in events}
    moves = {e.event["id"] for e in events if e.event["result"]["status"] != "pre_transit"}
    assert moves <= set(told)
    statuses = [e.status.value for e in view.timeline]
    assert statuses.count("IN_TRANSIT") == statuses.count("OUT_FOR_DELIVERY") == 1
