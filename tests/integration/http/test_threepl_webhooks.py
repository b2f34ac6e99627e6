"""The 3PL's webhooks at POST /v1/webhooks/3pl/{provider}: the sandbox 3PL posts its signed events to the engine's
real HTTP app; each one moves the parcel once, forward only, with the order's `threepl_update` signal in the
outbox (delivered at once). Forged, tampered, unsigned and stale webhooks are 401 and change nothing; repeats,
late events, orders not ours and other topics are acknowledged and change nothing; an unknown provider is 404.
On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from common.models import workflow_id_for
from common.store import Store
from common.threepl.contracts import ThreePLState, reference_id
from sandbox.threepl_webhooks import sign
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.sandbox.test_threepl_adapter import submit
from tests.integration.threepl_helpers import (
    SECRET,
    WEBHOOK_PATH,
    Engine,
    engine_and_3pl,
    eventually,
    hand_over,
    new_order_key,
    parcel_reaches,
    threepl_signals,
)

OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-entirely-signs-it").decode()
PATH = WEBHOOK_PATH


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_url(request.param, tmp_path) as url:
        store = await Store.open(url)
        yield store
        await store.close()


@pytest.fixture
async def engine(tmp_path: Path, db: Store, dev_server: WorkflowEnvironment) -> AsyncIterator[Engine]:
    async with engine_and_3pl(tmp_path, db, dev_server) as e:
        yield e


def signed(body: bytes, webhook_id: str, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = int(at if at is not None else time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, stamp, body),
    }


async def delivered_events(e: Engine, ref: str, count: int) -> list[Any]:
    """The sandbox's events of `ref` once `count` of them got a 2xx from the engine."""

    async def done() -> bool:
        return sum(ev.delivery == "delivered" for ev in e.sb.threepl_events(ref)) >= count

    await eventually(done)
    return e.sb.threepl_events(ref)


async def test_shipped_then_delivered_by_webhook_move_the_parcel_and_tell_its_order(engine: Engine) -> None:
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    assert parcel.state == ThreePLState.ACCEPTED and parcel.accepted_at is not None
    shipped = engine.sb.threepl.act(parcel.reference_id, "ship")
    moved = await parcel_reaches(engine.db, parcel.reference_id, ThreePLState.SHIPPED)
    assert moved.tracking_number == shipped["shipments"][0]["tracking"]["tracking_number"]
    assert moved.carrier and moved.shipped_at is not None
    engine.sb.threepl.act(parcel.reference_id, "deliver")
    done = await parcel_reaches(engine.db, parcel.reference_id, ThreePLState.DELIVERED)
    assert done.delivered_at is not None and done.tracking_number == moved.tracking_number
    events = await delivered_events(engine, parcel.reference_id, 2)
    assert [ev.topic for ev in events] == ["order.shipped", "order.shipment.delivered"]
    assert all(ev.deliveries == 1 for ev in events)  # each acknowledged the first time
    signals = await threepl_signals(engine.db, key)
    assert [(s["state"], s["source"], s["shipment_no"]) for s in signals] == [
        ("shipped", "webhook", 1),
        ("delivered", "webhook", 1),
    ]
    assert signals[0]["tracking_number"] == moved.tracking_number
    # Delivered at once: no order workflow runs here, so each row is settled with a note saying so
    rows = await engine.db.signals.order_signals(workflow_id_for(key))
    assert all(r.delivered_at is not None and "closed or unknown" in (r.note or "") for r in rows)


async def test_forged_tampered_unsigned_and_stale_webhooks_are_401_and_change_nothing(engine: Engine) -> None:
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    engine.sb.threepl_webhooks(enabled=False)  # the event is made, not sent: the test posts it
    engine.sb.threepl.act(parcel.reference_id, "ship")
    [event] = engine.sb.threepl_events(parcel.reference_id)
    body, wid = event.body, event.webhook_id
    tampered = body.replace(b'"Completed"', b'"Cancelled"')
    assert tampered != body
    attempts = {
        "forged": (body, signed(body, wid, secret=OTHER_SECRET)),
        "tampered": (tampered, signed(body, wid)),  # the signature of the body as the 3PL sent it
        "unsigned": (body, {"Content-Type": "application/json", "webhook-id": wid}),
        "stale": (body, signed(body, wid, at=time.time() - 600)),
        "from the future": (body, signed(body, wid, at=time.time() + 600)),
    }
    for what, (content, headers) in attempts.items():
        response = await engine.http.post(PATH, content=content, headers=headers)
        assert response.status_code == 401, (what, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == "/problems/webhook-refused"
    after = await engine.db.threepl.get(parcel.reference_id)
    assert after is not None and after.state == ThreePLState.ACCEPTED
    assert await threepl_signals(engine.db, key) == []
    # Nothing was recorded of it: the genuine webhook (same id) is applied
    response = await engine.http.post(PATH, content=body, headers=signed(body, wid))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    assert response.json()["order_id"] == key and response.json()["state"] == "shipped"


async def test_a_repeated_event_is_acknowledged_and_applied_once(engine: Engine) -> None:
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    engine.sb.threepl_webhooks(duplicate_next=1)
    engine.sb.threepl.act(parcel.reference_id, "ship")
    [event] = await delivered_events(engine, parcel.reference_id, 1)

    async def both_copies() -> bool:
        return event.deliveries >= 2

    await eventually(both_copies)  # each copy got a 2xx: nothing for the 3PL to retry
    assert event.attempts == event.deliveries and event.last_error is None
    await parcel_reaches(engine.db, parcel.reference_id, ThreePLState.SHIPPED)
    again = await engine.http.post(PATH, content=event.body, headers=signed(event.body, event.webhook_id))
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert [s["state"] for s in await threepl_signals(engine.db, key)] == ["shipped"]


async def test_reordered_events_end_where_the_3pl_is(engine: Engine) -> None:
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    engine.sb.threepl_webhooks(reorder_next=2)  # delivered goes out first, then shipped
    engine.sb.threepl.act(parcel.reference_id, "ship")
    engine.sb.threepl.act(parcel.reference_id, "deliver")
    events = await delivered_events(engine, parcel.reference_id, 2)
    assert [ev.topic for ev in events] == ["order.shipped", "order.shipment.delivered"]
    done = await parcel_reaches(engine.db, parcel.reference_id, ThreePLState.DELIVERED)
    assert done.tracking_number is not None and done.shipped_at is not None
    # The late order.shipped is no news: one signal, the delivery
    assert [s["state"] for s in await threepl_signals(engine.db, key)] == ["delivered"]
    shipped = events[0]
    late = await engine.http.post(PATH, content=shipped.body, headers=signed(shipped.body, "msg_late-copy"))
    assert late.status_code == 200 and late.json()["outcome"] == "stale"
    after = await engine.db.threepl.get(parcel.reference_id)
    assert after is not None and after.state == ThreePLState.DELIVERED
    assert len(await threepl_signals(engine.db, key)) == 1


async def test_lost_webhooks_leave_the_parcel_where_it_was(engine: Engine) -> None:
    """What reconciliation is for (tests/integration/orders/test_threepl_reconcile.py)."""
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    engine.sb.threepl_webhooks(drop_next=1)
    engine.sb.threepl.act(parcel.reference_id, "ship")
    [event] = engine.sb.threepl_events(parcel.reference_id)
    assert event.delivery == "dropped"
    after = await engine.db.threepl.get(parcel.reference_id)
    assert after is not None and after.state == ThreePLState.ACCEPTED


async def test_orders_not_ours_and_other_topics_are_acknowledged_and_ignored(engine: Engine) -> None:
    engine.sb.threepl_webhooks(enabled=False)
    by_hand = "manual-order-17"  # placed at the 3PL by hand: not a reference of ours
    await submit(engine.shipbob, by_hand)
    ours_unrecorded = reference_id(new_order_key(), 1)  # our shape, but no parcel row
    await submit(engine.shipbob, ours_unrecorded)
    for ref in (by_hand, ours_unrecorded):
        engine.sb.threepl.act(ref, "ship")
        [event] = engine.sb.threepl_events(ref)
        response = await engine.http.post(PATH, content=event.body, headers=signed(event.body, event.webhook_id))
        assert response.status_code == 200 and response.json()["outcome"] == "not-ours", response.text
        assert response.json()["reference_id"] == ref and response.json()["order_id"] is None
    inventory = json.dumps({"topic": "inventory.updated", "event_time": "2026-03-01T12:00:00Z", "data": {}}).encode()
    response = await engine.http.post(PATH, content=inventory, headers=signed(inventory, "msg_inventory-1"))
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert await engine.db.threepl.parcels() == []


async def test_an_unknown_provider_is_404_and_a_malformed_name_422(engine: Engine) -> None:
    body = b'{"topic": "order.shipped"}'
    response = await engine.http.post("/v1/webhooks/3pl/shiphero", content=body, headers=signed(body, "msg_1"))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "shiphero" in response.json()["detail"]
    bad = await engine.http.post("/v1/webhooks/3pl/Not%20Ours", content=body, headers=signed(body, "msg_1"))
    assert bad.status_code == 422
