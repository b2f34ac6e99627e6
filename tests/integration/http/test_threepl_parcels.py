"""GET /v1/3pl/parcels and `fulfill 3pl parcels`: the parcels at 3PLs with their SLAs and the late ones, over the
real HTTP app and the real CLI, on SQLite and PostgreSQL. The parcels are handed to the sandbox 3PL through the
ShipBob adapter and move by its webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.http.app import create_app
from common.models import Address, OrderLine, ShippingSpeed
from common.store import Store
from common.threepl.contracts import ThreePLState, ThreePLSubmission, ThreePLUpdate, reference_id
from tests.integration.conftest import Cli
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.http.conftest import new_key
from tests.integration.sandbox.test_threepl_adapter import RECIPIENT
from tests.integration.threepl_helpers import Engine, engine_and_3pl, hand_over, new_order_key, parcel_reaches

ACCEPT_SLA = 1.0  # seconds: a parcel the 3PL never answered is late at once in this test
SHIP_SLA = 3600.0


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


async def never_answered(store: Store, key: str) -> str:
    """A parcel recorded as submitted whose 3PL never said it accepted it."""
    submission = ThreePLSubmission(
        order_id=key,
        order_number=key.split("~")[0],
        shipment_no=1,
        warehouse="SHIPBOB-1",
        provider="shipbob",
        lines=[OrderLine(sku="MUG-RED", quantity=1)],
        ship_to=Address(**RECIPIENT.address.model_dump()),
        speed=ShippingSpeed.STANDARD,
    )
    ref = reference_id(key, 1)
    await store.threepl.record_submission(
        submission, None, ThreePLUpdate(reference_id=ref, shipment_no=1, state="submitted")
    )
    return ref


async def four_parcels(engine: Engine) -> dict[str, str]:
    """Reference per state: submitted (late), accepted, shipped, rejected (unknown SKU)."""
    late_key = new_order_key() + "~2"  # a re-placement: its rows are keyed ORDER~2
    refs = {"submitted": await never_answered(engine.db, late_key)}
    refs["accepted"] = (await hand_over(engine.db, engine.shipbob, new_order_key())).reference_id
    refs["shipped"] = (await hand_over(engine.db, engine.shipbob, new_order_key())).reference_id
    engine.sb.threepl.act(refs["shipped"], "ship")
    await parcel_reaches(engine.db, refs["shipped"], ThreePLState.SHIPPED)
    rejected = await hand_over(engine.db, engine.shipbob, new_order_key(), sku="NOT-STOCKED")
    assert rejected.state == ThreePLState.REJECTED
    refs["rejected"] = rejected.reference_id
    await asyncio.sleep(ACCEPT_SLA + 0.2)
    return refs


async def test_the_listing_over_http_shows_each_parcel_its_sla_and_the_late_ones(engine: Engine) -> None:
    refs = await four_parcels(engine)
    settings = engine.settings.model_copy(update={"threepl_accept_sla": ACCEPT_SLA, "threepl_ship_sla": SHIP_SLA})
    api = FulfillmentApi(engine.api.client, engine.db, settings)
    transport = httpx.ASGITransport(app=create_app(settings, api))
    reader, intake = await new_key(engine.db, "read"), await new_key(engine.db, "intake")
    async with httpx.AsyncClient(transport=transport, base_url="http://engine.test") as http:
        listed = (await http.get("/v1/3pl/parcels", headers=reader)).json()
        assert {p["reference_id"] for p in listed} == set(refs.values())
        by_state = {p["state"]: p for p in listed}
        assert set(by_state) == set(refs)
        late = by_state["submitted"]
        assert late["late"] is True and late["order_id"] == late["order_key"].split("~")[0]
        assert late["order_key"].endswith("~2") and late["accepted_at"] is None
        submitted_at = datetime.fromisoformat(late["submitted_at"])
        assert datetime.fromisoformat(late["accept_due_at"]) - submitted_at == timedelta(seconds=ACCEPT_SLA)
        accepted = by_state["accepted"]
        assert accepted["late"] is False and accepted["accepted_at"] is not None
        ship_due = datetime.fromisoformat(accepted["ship_due_at"])
        assert ship_due - datetime.fromisoformat(accepted["accepted_at"]) == timedelta(seconds=SHIP_SLA)
        shipped = by_state["shipped"]
        assert shipped["tracking_number"] and shipped["carrier"] and shipped["shipped_at"] and not shipped["late"]
        assert by_state["rejected"]["reason"] and not by_state["rejected"]["late"]

        only_late = (await http.get("/v1/3pl/parcels", params={"late": "true"}, headers=reader)).json()
        assert [p["reference_id"] for p in only_late] == [refs["submitted"]]
        some = await http.get("/v1/3pl/parcels", params=[("state", "shipped"), ("state", "rejected")], headers=reader)
        assert {p["state"] for p in some.json()} == {"shipped", "rejected"}
        assert (await http.get("/v1/3pl/parcels", params={"provider": "shiphero"}, headers=reader)).json() == []
        assert len((await http.get("/v1/3pl/parcels", params={"limit": 1}, headers=reader)).json()) == 1

        bad = await http.get("/v1/3pl/parcels", params={"state": "lost"}, headers=reader)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("state")
        assert (await http.get("/v1/3pl/parcels", headers=intake)).status_code == 403
        assert (await http.get("/v1/3pl/parcels")).status_code == 401


async def test_the_listing_in_the_cli_with_late_parcels(engine: Engine, db_url: str, tmp_path: Path) -> None:
    refs = await four_parcels(engine)
    settings = engine.settings.model_copy(
        update={"database_url": db_url, "threepl_accept_sla": ACCEPT_SLA, "threepl_ship_sla": SHIP_SLA}
    )
    cli = Cli(settings)
    narrow = await asyncio.to_thread(cli, "3pl", "parcels")  # 80 columns: each state and reference whole
    assert "submitted LATE" in narrow.stdout and all(ref in narrow.stdout for ref in refs.values()), narrow.stdout
    cli.env["COLUMNS"] = "200"  # one row per parcel, to read it back
    shown = await asyncio.to_thread(cli, "3pl", "parcels", "--late", "--json")
    assert shown.returncode == 0, shown.stderr
    [late] = json.loads(shown.stdout)
    assert (late["reference_id"], late["state"], late["late"]) == (refs["submitted"], "submitted", True)
    table = await asyncio.to_thread(cli, "3pl", "parcels")
    assert table.returncode == 0, table.stderr
    assert "submitted LATE" in table.stdout and table.stdout.count("LATE") == 1
    for ref in refs.values():
        assert ref in table.stdout
    some = await asyncio.to_thread(cli, "3pl", "parcels", "--state", "shipped", "--provider", "shipbob", "--json")
    assert [p["reference_id"] for p in json.loads(some.stdout)] == [refs["shipped"]]
    bad = await asyncio.to_thread(cli, "3pl", "parcels", "--state", "lost")
    assert bad.returncode == 2
    assert "--state 'lost': not a 3PL parcel state" in bad.stderr and "submitted" in bad.stderr
    assert "Zebedee" not in table.stdout + table.stderr  # no customer data in the listing
