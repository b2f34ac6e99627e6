"""The 3PL reconciler (workers/reconciler.py): with every webhook lost it alone brings a parcel's shipped and
delivered news to threepl_parcels and the outbox; with webhooks lost, reordered or duplicated the parcels end the
same; several reconcilers at once tell each order once; a 3PL outage is one log line and the next round catches
up. And the sweeper cancels at the 3PL what a terminated order has there. Real sandbox 3PL, ShipBob adapter,
engine HTTP app, Temporal dev server; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from common.integrations.carrier import CarrierClient
from common.integrations.threepl_providers import threepl_providers
from common.models import workflow_id_for
from common.store import Store
from common.threepl.contracts import ThreePLState
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.threepl_helpers import (
    Engine,
    engine_and_3pl,
    eventually,
    hand_over,
    new_order_key,
    threepl_signals,
)
from workers.reconciler import ClosedOrderSweeper, ThreePLReconciler


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Store]:
    store = await Store.open(db_url)
    yield store
    await store.close()


@pytest.fixture
async def engine(tmp_path: Path, db: Store, dev_server: WorkflowEnvironment) -> AsyncIterator[Engine]:
    async with engine_and_3pl(tmp_path, db, dev_server) as e:
        yield e


@pytest.fixture
async def reconciler(engine: Engine) -> AsyncIterator[ThreePLReconciler]:
    providers = threepl_providers(engine.settings)
    yield ThreePLReconciler(engine.api.client, engine.db, providers)
    for provider in providers.values():
        await provider.close()


async def order_time(engine: Engine, ref: str) -> datetime | None:
    """The 3PL's time of its last change to the order, as its adapter reads it."""
    order = await engine.shipbob.get_order(ref)
    assert order is not None
    return order.updated_at


async def test_with_every_webhook_lost_the_reconciler_alone_brings_the_news(
    engine: Engine, reconciler: ThreePLReconciler
) -> None:
    engine.sb.threepl_webhooks(enabled=False)
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    assert await reconciler.round() == []  # accepted already: no news
    shipped = engine.sb.threepl.act(parcel.reference_id, "ship")
    [signal_id] = await reconciler.round()
    after = await engine.db.threepl.get(parcel.reference_id)
    assert after is not None and after.state == ThreePLState.SHIPPED
    assert after.tracking_number == shipped["shipments"][0]["tracking"]["tracking_number"]
    engine.sb.threepl.act(parcel.reference_id, "deliver")
    assert len(await reconciler.round()) == 1
    done = await engine.db.threepl.get(parcel.reference_id)
    assert done is not None and done.state == ThreePLState.DELIVERED
    assert done.delivered_at == await order_time(engine, parcel.reference_id)
    signals = await threepl_signals(engine.db, key)
    assert [(s["state"], s["source"]) for s in signals] == [("shipped", "reconcile"), ("delivered", "reconcile")]
    rows = await engine.db.signals.order_signals(workflow_id_for(key))
    assert rows[0].id == signal_id and all(r.delivered_at is not None for r in rows)  # delivered at once
    # The cursor is the newest change seen; nothing open any more: the 3PL is not asked again
    assert await engine.db.threepl.orders_since("shipbob") == await order_time(engine, parcel.reference_id)
    assert await engine.db.threepl.oldest_open_submission("shipbob") is None
    assert await reconciler.round() == []
    assert all(e.delivery == "disabled" for e in engine.sb.threepl_events(parcel.reference_id))


async def test_lost_reordered_and_duplicated_webhooks_end_the_same(
    engine: Engine, reconciler: ThreePLReconciler
) -> None:
    keys = {"lost": new_order_key(), "reordered": new_order_key(), "duplicated": new_order_key()}
    parcels = {how: await hand_over(engine.db, engine.shipbob, key) for how, key in keys.items()}
    controls = {"lost": {"drop_next": 2}, "reordered": {"reorder_next": 2}, "duplicated": {"duplicate_next": 2}}
    for how, parcel in parcels.items():
        engine.sb.threepl_webhooks(**controls[how])
        engine.sb.threepl.act(parcel.reference_id, "ship")
        engine.sb.threepl.act(parcel.reference_id, "deliver")

    async def sent() -> bool:
        events = engine.sb.threepl_events()
        return len(events) == 6 and all(e.delivery in ("delivered", "dropped") for e in events)

    await eventually(sent)
    await reconciler.round()
    for how, parcel in parcels.items():
        ref = parcel.reference_id
        end = await engine.db.threepl.get(ref)
        assert end is not None and end.state == ThreePLState.DELIVERED, how
        order = engine.sb.threepl.order(ref)
        assert order is not None
        assert end.tracking_number == order["shipments"][0]["tracking"]["tracking_number"], how
        assert end.delivered_at == end.provider_updated_at == await order_time(engine, ref), how
        signals = await threepl_signals(engine.db, keys[how])
        assert [s["state"] for s in signals][-1] == "delivered", how
        assert [s["state"] for s in signals].count("delivered") == 1, how
    # What each way brought: the lost ones by reconciliation, the others by webhook only once each
    lost = await threepl_signals(engine.db, keys["lost"])
    assert [(s["state"], s["source"]) for s in lost] == [("delivered", "reconcile")]
    assert [s["state"] for s in await threepl_signals(engine.db, keys["reordered"])] == ["delivered"]
    assert [s["state"] for s in await threepl_signals(engine.db, keys["duplicated"])] == ["shipped", "delivered"]


async def test_several_reconcilers_at_once_tell_each_order_once(engine: Engine, db_url: str) -> None:
    engine.sb.threepl_webhooks(enabled=False)
    keys = [new_order_key() for _ in range(3)]
    for key in keys:
        parcel = await hand_over(engine.db, engine.shipbob, key)
        engine.sb.threepl.act(parcel.reference_id, "ship")
    others = [await Store.open(db_url, migrate=False) for _ in range(2)]
    providers = [threepl_providers(engine.settings) for _ in others]
    try:
        reconcilers = [ThreePLReconciler(engine.api.client, s, p) for s, p in zip(others, providers, strict=True)]
        written = await asyncio.gather(*(r.round() for r in reconcilers))
    finally:
        for store, opened in zip(others, providers, strict=True):
            await store.close()
            for provider in opened.values():
                await provider.close()
    assert sorted(len(w) for w in written) in ([0, 3], [1, 2])  # each parcel's news once, whoever got it
    for key in keys:
        assert [s["state"] for s in await threepl_signals(engine.db, key)] == ["shipped"]


async def test_a_3pl_outage_is_one_log_line_and_the_next_round_catches_up(
    engine: Engine, reconciler: ThreePLReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    engine.sb.threepl_webhooks(enabled=False)
    key = new_order_key()
    parcel = await hand_over(engine.db, engine.shipbob, key)
    engine.sb.threepl.act(parcel.reference_id, "ship")
    engine.sb.start_outage("3pl")
    with caplog.at_level(logging.WARNING, logger="fulfill.reconciler"):
        assert await reconciler.round() == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "fulfill.reconciler"]
    assert "3pl shipbob: reconciliation left for the next round" in line
    assert "Zebedee" not in line and "Xylophone" not in line  # never the customer's data
    assert await engine.db.threepl.orders_since("shipbob") is None
    engine.sb.end_outage("3pl")
    assert len(await reconciler.round()) == 1
    after = await engine.db.threepl.get(parcel.reference_id)
    assert after is not None and after.state == ThreePLState.SHIPPED


async def test_the_sweeper_cancels_at_the_3pl_what_a_terminated_order_has_there(
    engine: Engine, dev_server: WorkflowEnvironment
) -> None:
    """A terminated order runs no code: its parcel the 3PL has not shipped is cancelled there; one that shipped
    while its webhook was lost is recorded shipped (the 3PL refuses the cancel)."""
    engine.sb.threepl_webhooks(enabled=False)
    key = new_order_key()
    waiting = await hand_over(engine.db, engine.shipbob, key, 1)
    gone = await hand_over(engine.db, engine.shipbob, key, 2)
    engine.sb.threepl.act(gone.reference_id, "ship")  # our row still says accepted
    client = dev_server.client
    handle = await client.start_workflow("OrderWorkflow", id=workflow_id_for(key), task_queue=f"none-{key}")
    await handle.terminate("ops terminated it")
    threepls = threepl_providers(engine.settings)
    carrier = CarrierClient(engine.settings)
    sweeper = ClosedOrderSweeper(client, engine.db, carrier, lookback_s=600, threepls=threepls)
    try:
        swept: list[str] = []

        async def swept_it() -> bool:  # visibility lists the closed workflow a moment later
            swept.extend(await sweeper.round())
            return key in swept

        await eventually(swept_it)
    finally:
        await carrier.close()
        for provider in threepls.values():
            await provider.close()
    cancelled = await engine.db.threepl.get(waiting.reference_id)
    assert cancelled is not None and cancelled.state == ThreePLState.CANCELLED
    at_3pl = await engine.shipbob.get_order(waiting.reference_id)
    assert at_3pl is not None and at_3pl.status.value == "cancelled"
    shipped = await engine.db.threepl.get(gone.reference_id)
    assert shipped is not None and shipped.state == ThreePLState.SHIPPED and shipped.tracking_number
    assert await sweeper.round() == []  # nothing is left to give back
