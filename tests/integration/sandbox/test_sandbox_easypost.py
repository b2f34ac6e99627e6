"""The unmodified `easypost` SDK against the sandbox carrier: what it sends (Bearer auth, JSON wrapped by
resource) is understood, and what comes back makes its classes (Shipment with `lowest_rate()`, Tracker,
Event) and its errors (UnauthorizedError, InvalidRequestError with EasyPost's codes and fields, ...).

The SDK is synchronous and the sandbox runs on the test's loop: every SDK call goes through a thread."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import easypost
import pytest
from easypost import errors as ep
from easypost.models import Event, Rate, Shipment, Tracker

from sandbox import SandboxServers
from tests.integration.sandbox.test_sandbox import FROM, PARCEL, STEP, eventually, start_sandbox

T = TypeVar("T")
TO = {
    "name": "Ada Lovelace",
    "street1": "1 Analytical Way",
    "city": "London",
    "state": "LDN",
    "zip": "N1 9GU",
    "country": "GB",
}


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    async with start_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
def client(sb: SandboxServers) -> easypost.EasyPostClient:
    return easypost.EasyPostClient(sb.settings.carrier_api_key, api_base=sb.carrier_api_base, timeout=10)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking SDK call, off the loop the sandbox serves on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def shipment(client: easypost.EasyPostClient, **extra: Any) -> Shipment:
    return await call(
        client.shipment.create, to_address=TO, from_address=FROM, parcel=PARCEL, reference="label:ORD-1:1", **extra
    )


async def test_the_sdk_rates_buys_retrieves_and_refunds_a_label(client: easypost.EasyPostClient) -> None:
    created = await shipment(client)
    assert isinstance(created, Shipment) and created.id.startswith("shp_") and created.mode == "test"
    assert created.reference == "label:ORD-1:1" and created.is_return is False
    assert all(isinstance(r, Rate) for r in created.rates) and len(created.rates) == 4
    # The SDK's own rate helpers work on what the sandbox answered
    assert (created.lowest_rate().carrier, created.lowest_rate().service, created.lowest_rate().rate) == (
        "SandboxPost",
        "Ground",
        "5.10",
    )
    assert created.lowest_rate(carriers=["quickship"]).service == "Saver"
    overnight = easypost.get_lowest_object_rate(created, services=["Overnight"])
    assert (overnight.delivery_days, overnight.delivery_date_guaranteed) == (1, True)
    for rate in created.rates:
        promised = datetime.fromisoformat(rate.delivery_date.replace("Z", "+00:00"))
        created_at = datetime.fromisoformat(created.created_at.replace("Z", "+00:00"))
        assert round((promised - created_at).total_seconds() / 86400) == rate.delivery_days
    with pytest.raises(ep.FilteringError):
        created.lowest_rate(carriers=["NoSuchCarrier"])

    # Buy with the Rate object itself (the SDK sends its id) and insurance
    bought = await call(client.shipment.buy, created.id, rate=overnight, insurance="100.00")
    assert bought.selected_rate.id == overnight.id and bought.insurance == "100.00"
    assert bought.tracking_code.startswith("SBX") and bought.status == "purchased"
    assert bought.postage_label.label_url.endswith(f"/labels/{created.id}.png")
    assert isinstance(bought.tracker, Tracker) and bought.tracker.status == "pre_transit"
    with pytest.raises(ep.InvalidRequestError) as twice:
        await call(client.shipment.buy, created.id, rate=overnight)
    assert (twice.value.http_status, twice.value.code) == (422, "SHIPMENT.POSTAGE.EXISTS")

    again = await call(client.shipment.retrieve, created.id)
    assert isinstance(again, Shipment) and again.tracking_code == bought.tracking_code
    refunded = await call(client.shipment.refund, created.id)
    assert refunded.refund_status == "submitted" and refunded.tracker.status == "cancelled"
    assert (await call(client.shipment.retrieve, created.id)).refund_status == "refunded"


async def test_a_return_shipment_is_rated_and_bought(client: easypost.EasyPostClient) -> None:
    created = await shipment(client, is_return=True)
    assert created.is_return is True
    bought = await call(client.shipment.buy, created.id, rate=created.lowest_rate())
    # The parcel starts at the customer's (to_address) and goes back to the warehouse
    assert bought.tracker.tracking_details[0].tracking_location.city == "London"


async def test_the_sdk_creates_retrieves_and_lists_trackers(client: easypost.EasyPostClient) -> None:
    created = await shipment(client)
    bought = await call(client.shipment.buy, created.id, rate=created.lowest_rate())

    # A sandbox label's code: its own tracker, not a second one
    tracker = await call(client.tracker.create, tracking_code=bought.tracking_code, carrier="SandboxPost")
    assert isinstance(tracker, Tracker) and tracker.id == bought.tracker.id and tracker.shipment_id == created.id
    assert (await call(client.tracker.retrieve, tracker.id)).tracking_code == bought.tracking_code

    # A code the sandbox never sold: a standalone tracker that progresses by time
    other = await call(client.tracker.create, tracking_code="1Z999AA10123456784", carrier="UPS")
    assert other.id.startswith("trk_") and other.id != tracker.id
    assert (other.carrier, other.status, other.shipment_id) == ("UPS", "pre_transit", None)
    same = await call(client.tracker.create, tracking_code="1Z999AA10123456784", carrier="UPS")
    assert same.id == other.id

    async def delivered() -> bool:
        return (await call(client.tracker.retrieve, other.id)).status == "delivered"

    await eventually(delivered, within=10 * STEP + 5)
    done = await call(client.tracker.retrieve, other.id)
    assert [d.status for d in done.tracking_details] == ["pre_transit", "in_transit", "out_for_delivery", "delivered"]

    # Lists: by code(s), newest first, a page at a time
    both = await call(client.tracker.all, tracking_codes=[bought.tracking_code, "1Z999AA10123456784"])
    assert [t.id for t in both["trackers"]] == [other.id, tracker.id] and both["has_more"] is False
    one = await call(client.tracker.all, tracking_code=bought.tracking_code)
    assert [t.id for t in one["trackers"]] == [tracker.id]
    assert (await call(client.tracker.all, carrier="UPS"))["trackers"][0].id == other.id
    first = await call(client.tracker.all, page_size=1)
    assert [t.id for t in first["trackers"]] == [other.id] and first["has_more"] is True
    rest = await call(client.tracker.get_next_page, first, page_size=1)
    assert [t.id for t in rest["trackers"]] == [tracker.id] and rest["has_more"] is False
    assert (await call(client.tracker.all, tracking_code="NOPE"))["trackers"] == []
    with pytest.raises(ep.NotFoundError) as missing:
        await call(client.tracker.retrieve, "trk_nope")
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(ep.InvalidRequestError) as blank:
        await call(client.tracker.create, tracking_code=" ")
    assert blank.value.code == "PARAMETER.REQUIRED"


async def test_the_sdk_lists_the_events_of_tracker_changes(client: easypost.EasyPostClient) -> None:
    created = await shipment(client)
    bought = await call(client.shipment.buy, created.id, rate=created.lowest_rate())

    async def listed() -> bool:
        return len((await call(client.event.all, page_size=100))["events"]) >= 2

    await eventually(listed, within=10 * STEP + 5)
    events = (await call(client.event.all, page_size=100))["events"]
    assert all(isinstance(e, Event) for e in events)
    oldest = events[-1]  # newest first
    assert (oldest.description, oldest.result.tracking_code, oldest.result.status) == (
        "tracker.created",
        bought.tracking_code,
        "pre_transit",
    )
    assert events[-2].description == "tracker.updated" and events[-2].previous_attributes.status == "pre_transit"
    assert (await call(client.event.retrieve, oldest.id)).id == oldest.id
    with pytest.raises(ep.NotFoundError):
        await call(client.event.retrieve, "evt_nope")


async def test_the_sdk_gets_easyposts_errors(sb: SandboxServers, client: easypost.EasyPostClient) -> None:
    wrong = easypost.EasyPostClient("not-the-key", api_base=sb.carrier_api_base, timeout=10)
    with pytest.raises(ep.UnauthorizedError) as denied:
        await shipment(wrong)
    assert (denied.value.http_status, denied.value.code) == (401, "APIKEY.INACTIVE")

    bad = {**TO, "street1": "12 Invalid Street", "zip": ""}
    with pytest.raises(ep.InvalidRequestError) as address:
        await call(client.shipment.create, to_address=bad, from_address=FROM, parcel=PARCEL)
    assert (address.value.http_status, address.value.code) == (422, "ADDRESS.VERIFY.FAILURE")
    assert address.value.errors is not None
    assert {e["field"] for e in address.value.errors} == {"zip", "street1"}
    assert address.value.message == "Unable to verify address."

    with pytest.raises(ep.NotFoundError) as missing:
        await call(client.shipment.retrieve, "shp_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "NOT_FOUND")

    sb.start_outage("carrier")
    try:
        with pytest.raises(ep.ServiceUnavailableError) as down:
            await call(client.tracker.create, tracking_code="X1", carrier="UPS")
        assert down.value.code == "SERVICE.UNAVAILABLE"
    finally:
        sb.end_outage("carrier")
    sb.inject_fault("get_shipment", status=429)
    with pytest.raises(ep.RateLimitError):
        await call(client.shipment.retrieve, "shp_nope")


async def test_bearer_and_basic_auth_are_accepted(sb: SandboxServers, client: easypost.EasyPostClient) -> None:
    sent: list[str] = []
    client.subscribe_to_request_hook(lambda **kw: sent.append(kw["headers"]["Authorization"]))
    await shipment(client)
    assert sent == [f"Bearer {sb.settings.carrier_api_key}"]

    key = sb.settings.carrier_api_key
    basic = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    url = f"{sb.carrier_api_base}/trackers"
    async with aiohttp.ClientSession() as http:
        for header, status, code in [
            (f"Bearer {key}", 200, None),
            (basic, 200, None),
            ("Bearer wrong", 401, "APIKEY.INACTIVE"),
            (None, 401, "APIKEY.REQUIRED"),
            ("Bearer ", 401, "APIKEY.REQUIRED"),
        ]:
            headers = {"Authorization": header} if header is not None else {}
            async with http.get(url, headers=headers) as resp:
                body = await resp.json()
            assert resp.status == status, header
            assert (body.get("error") or {}).get("code") == code, header
