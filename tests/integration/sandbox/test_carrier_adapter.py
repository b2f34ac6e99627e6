"""The engine's carrier adapter (CarrierClient over the easypost SDK) against the sandbox carrier: every
answer of the carrier becomes the right error (retry or not, which field), its timeout holds against a slow
carrier, it survives an outage, and nothing it says names a customer."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from common.integrations.carrier import (
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierClient,
    CarrierError,
    CarrierNotFoundError,
    CarrierTransientError,
)
from common.models import TrackingStatus
from sandbox import SandboxServers
from tests.integration.local_server import serving
from tests.integration.sandbox.test_sandbox import SHIP_TO, STEP, create, eventually, free_port
from tests.unit.integrations.test_integrations_adapters import choose_rate


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, CarrierError),
        (401, CarrierError),
        (402, CarrierError),
        (403, CarrierError),
        (404, CarrierNotFoundError),
        (405, CarrierError),
        (408, CarrierTransientError),
        (422, CarrierError),
        (429, CarrierTransientError),
        (500, CarrierTransientError),
        (502, CarrierTransientError),
        (503, CarrierTransientError),
        (504, CarrierTransientError),
    ],
)
async def test_each_answer_of_the_carrier_is_the_right_error(
    sb: SandboxServers, carrier: CarrierClient, status: int, expected: type[CarrierError]
) -> None:
    shipment = await create(carrier)
    sb.inject_fault("get_shipment", status=status, code=f"SANDBOX.E{status}", message="injected")
    with pytest.raises(CarrierError) as err:
        await carrier.get_shipment(shipment.id)
    assert type(err.value) is expected
    assert err.value.retryable is (expected is CarrierTransientError)
    assert (err.value.status, err.value.code) == (status, f"SANDBOX.E{status}")
    assert str(err.value).startswith(f"carrier get shipment {shipment.id}: {status} SANDBOX.E{status}: injected")
    assert (await carrier.get_shipment(shipment.id)).id == shipment.id  # the fault was for one call


async def test_refusals_that_mean_something_are_their_own_errors(sb: SandboxServers, carrier: CarrierClient) -> None:
    bad = SHIP_TO.model_copy(update={"line1": "12 Invalid Street"})
    with pytest.raises(CarrierAddressError) as address:
        await carrier.create_shipment(reference="label:ORD-9:1", to_address=bad, from_address={}, parcel={})
    assert (address.value.field, address.value.code, address.value.status) == ("line1", "ADDRESS.VERIFY.FAILURE", 422)
    # The carrier's words and the field, the reference, never the customer's name or address
    message = str(address.value)
    assert "label:ORD-9:1" in message and "street1: Address not found" in message
    for private in (SHIP_TO.name, "Invalid Street", SHIP_TO.city, SHIP_TO.postal_code):
        assert private not in message

    shipment = await create(carrier)
    await carrier.buy(shipment.id, shipment.rates[0].id)
    with pytest.raises(CarrierAlreadyPurchasedError):
        await carrier.buy(shipment.id, shipment.rates[0].id)
    with pytest.raises(CarrierNotFoundError):
        await carrier.get_shipment("shp_nope")
    with pytest.raises(CarrierNotFoundError):
        await carrier.get_tracker("SBX-NO-SUCH-CODE")
    with pytest.raises(CarrierNotFoundError):
        await carrier.get_tracker_by_id("trk_nope")


async def test_the_timeout_holds_against_a_slow_carrier(sb: SandboxServers) -> None:
    slow = CarrierClient(sb.settings_for_clients(), timeout=0.3)
    try:
        shipment = await create(slow)
        sb.inject_fault("get_shipment", fail_next=2, status=None, delay=3.0)
        started = time.monotonic()
        with pytest.raises(CarrierTransientError) as err:
            await slow.get_shipment(shipment.id)
        assert time.monotonic() - started < 2.0, "the call waited for the carrier, not for its timeout"
        assert err.value.retryable and err.value.status is None
        # The pool is not stuck behind the slow call: others go on, and the carrier's next answer comes through
        other = await asyncio.gather(*(slow.get_shipment(shipment.id) for _ in range(3)), return_exceptions=True)
        assert sum(isinstance(o, CarrierTransientError) for o in other) == 1  # the second delayed call
        assert (await slow.get_shipment(shipment.id)).id == shipment.id
    finally:
        await slow.close()


async def test_unreachable_and_garbled_carriers_are_transient(sb: SandboxServers) -> None:
    gone = CarrierClient(
        sb.settings_for_clients().model_copy(update={"carrier_api_base": f"http://127.0.0.1:{free_port()}/v2"})
    )
    try:
        with pytest.raises(CarrierTransientError) as refused:
            await gone.get_shipment("shp_x")
        assert refused.value.status is None
    finally:
        await gone.close()

    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html")

    async with serving(proxy_page) as base:
        garbled = CarrierClient(sb.settings_for_clients().model_copy(update={"carrier_api_base": f"{base}/v2"}))
        try:
            with pytest.raises(CarrierTransientError):
                await garbled.get_tracker("SBX1")
        finally:
            await garbled.close()


async def test_an_outage_is_waited_out(sb: SandboxServers, carrier: CarrierClient) -> None:
    shipment = await create(carrier)
    bought = await carrier.buy(shipment.id, shipment.rates[0].id)
    assert bought.tracker is not None
    sb.start_outage("carrier")
    calls = [
        carrier.get_shipment(shipment.id),
        carrier.get_tracker_by_id(bought.tracker.id),
        carrier.create_tracker("1Z999AA10123456784", "UPS"),
        carrier.buy(shipment.id, shipment.rates[0].id),
    ]
    for call in calls:
        with pytest.raises(CarrierTransientError) as err:
            await call
        assert (err.value.status, err.value.code) == (503, "SERVICE.UNAVAILABLE")
    sb.end_outage("carrier")
    assert (await carrier.get_tracker_by_id(bought.tracker.id)).tracking_code == bought.tracking_code


async def test_trackers_rates_and_returns_through_the_adapter(sb: SandboxServers, carrier: CarrierClient) -> None:
    shipment = await create(carrier, is_return=True)
    assert shipment.is_return
    assert all(r.delivery_date is not None and r.delivery_days is not None for r in shipment.rates)
    ground = shipment.rates[0].delivery_date
    assert ground is not None
    days = {r.service: (r.delivery_date - ground).days for r in shipment.rates if r.delivery_date is not None}
    assert days == {"Ground": 0, "Priority": -3, "Saver": -2, "Overnight": -4}
    assert [r.delivery_date_guaranteed for r in shipment.rates] == [False, False, False, True]
    bought = await carrier.buy(shipment.id, choose_rate(shipment.rates, 7).id)
    assert bought.tracker is not None and bought.tracking_code is not None
    assert bought.tracker.tracking_details[0].city == SHIP_TO.city  # a return starts at the customer's

    # Known code: the label's own tracker; unknown: a new one that moves on by itself
    assert (await carrier.create_tracker(bought.tracking_code, "SandboxPost")).id == bought.tracker.id
    standalone = await carrier.create_tracker("1Z999AA10123456784", "UPS")
    assert standalone.id != bought.tracker.id and standalone.shipment_id is None
    assert (await carrier.get_tracker("1Z999AA10123456784")).id == standalone.id

    async def delivered() -> bool:
        return (await carrier.get_tracker_by_id(standalone.id)).status == TrackingStatus.DELIVERED

    await eventually(delivered, within=10 * STEP + 5)


async def test_nothing_logged_names_the_customer(
    sb: SandboxServers, carrier: CarrierClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        shipment = await create(carrier)
        bought = await carrier.buy(shipment.id, shipment.rates[0].id)
        await carrier.get_tracker(bought.tracking_code or "")
        with pytest.raises(CarrierAddressError):
            await carrier.create_shipment(
                reference="r", to_address=SHIP_TO.model_copy(update={"postal_code": " "}), from_address={}, parcel={}
            )
    logged = caplog.text
    assert shipment.id in logged  # the sandbox and the HTTP layers did log, by id
    for private in (SHIP_TO.name, SHIP_TO.line1, SHIP_TO.city, SHIP_TO.postal_code):
        assert private not in logged
