"""The engine's 3PL adapter (ShipBobClient) against the sandbox 3PL: an order accepted, shipped and delivered by
itself with tracking; a repeat returns the order the 3PL has; refusals at submit and after acceptance; cancels
before and after shipping; inventory levels, drift and stock coming back; changes for reconciliation; every
answer the right error, the timeout held, and nothing it says or logs names the customer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.integrations import shipbob as shipbob_module
from common.integrations.shipbob import ShipBobClient
from common.integrations.threepl_api import (
    ThreePLDetail,
    ThreePLError,
    ThreePLNotFound,
    ThreePLOrder,
    ThreePLRecipient,
    ThreePLRefused,
    ThreePLStatus,
    ThreePLTransientError,
)
from common.models import Address
from sandbox import SandboxServers
from tests.integration.local_server import serving
from tests.integration.sandbox.conftest import THREEPL_STEP, threepl_sandbox
from tests.integration.sandbox.test_sandbox import eventually, free_port

RECIPIENT = ThreePLRecipient(
    address=Address(
        name="Zebedee Quartermaine",
        line1="77 Xylophone Crescent",
        city="Wolverhampton",
        region="WMD",
        postal_code="WV1 1AA",
        country="GB",
    ),
    email="zebedee.q@example.com",
    phone="+447700900123",
)
PRIVATE = ("Zebedee", "Quartermaine", "Xylophone", "Wolverhampton", "WV1 1AA", "zebedee.q@", "7700900123")
INVALID = RECIPIENT.model_copy(
    update={"address": RECIPIENT.address.model_copy(update={"line1": "1 Invalid Xylophone Rd"})}
)


async def submit(
    client: ShipBobClient,
    ref: str = "3pl:ORD-1:1",
    lines: Sequence[tuple[str, int]] = (("MUG-RED", 2),),
    recipient: ThreePLRecipient = RECIPIENT,
    key: str | None = None,
) -> ThreePLOrder:
    return await client.submit_order(
        reference_id=ref,
        order_number=ref.split(":")[1] if ":" in ref else ref,
        lines=list(lines),
        recipient=recipient,
        shipping_method="Standard",
        idempotency_key=key or f"{ref}#1",
    )


async def reaches(
    client: ShipBobClient, ref: str, status: ThreePLStatus, detail: ThreePLDetail | None, within: float = 5.0
) -> ThreePLOrder:
    seen: list[ThreePLOrder] = []

    async def there() -> bool:
        order = await client.get_order(ref)
        assert order is not None
        seen.append(order)
        return (order.status, order.detail) == (status, detail)

    await eventually(there, within=within)
    return seen[-1]


def stock(sb: SandboxServers, sku: str) -> tuple[int, int, int]:
    """(on hand, committed, fulfillable) of a SKU, as the sandbox counts them."""
    [item] = [i for i in sb.threepl_stock() if i["sku"] == sku]
    return item["total_on_hand_quantity"], item["total_committed_quantity"], item["total_fulfillable_quantity"]


# ---------------------------------------------------------------------------------------------------------
# The happy path, and repeats


async def test_an_accepted_order_ships_by_itself_then_is_delivered(
    threepl_sb: SandboxServers, shipbob: ShipBobClient
) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 5})
    order = await submit(shipbob)
    assert (order.reference_id, order.order_number, order.lines) == ("3pl:ORD-1:1", "ORD-1", [("MUG-RED", 2)])
    assert (order.status, order.detail, order.reason, order.shipments[0].tracking_number) == (
        ThreePLStatus.PROCESSING,
        None,
        None,
        None,
    )
    assert await shipbob.get_order("3pl:ORD-1:1") == order
    assert stock(threepl_sb, "MUG-RED") == (5, 2, 3)  # committed, still on the shelf

    shipped = await reaches(shipbob, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
    assert stock(threepl_sb, "MUG-RED") == (3, 0, 3)  # gone with the parcel
    [parcel] = shipped.shipments
    assert (parcel.carrier, parcel.service, parcel.fulfillment_center) == (
        "SandboxPost",
        "Ground",
        "Sandbox FC (Cicero, IL)",
    )
    assert parcel.tracking_number is not None and parcel.tracking_number.startswith("SBX3PL")
    assert parcel.tracking_url == f"{threepl_sb.threepl_url}/track/{parcel.tracking_number}"
    assert parcel.shipped_at is not None and order.created_at is not None
    assert parcel.shipped_at - order.created_at >= timedelta(seconds=THREEPL_STEP)
    assert parcel.delivered_at is None
    async with aiohttp.ClientSession() as http, http.get(parcel.tracking_url) as page:
        assert page.status == 200 and parcel.tracking_number in await page.text()

    delivered = await reaches(shipbob, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.DELIVERED)
    assert delivered.shipments[0].tracking_number == parcel.tracking_number
    assert delivered.shipments[0].delivered_at is not None
    assert order.updated_at is not None and shipped.updated_at is not None and delivered.updated_at is not None
    assert order.updated_at < shipped.updated_at < delivered.updated_at
    await asyncio.sleep(2 * THREEPL_STEP)
    assert await shipbob.get_order("3pl:ORD-1:1") == delivered  # nothing after delivery


async def test_submitting_a_reference_again_returns_the_order_the_3pl_has(
    threepl_sb: SandboxServers, shipbob: ShipBobClient
) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 5, "TEE-L": 5})
    threepl_sb.threepl.configure(ship_after=60)
    first = await submit(shipbob, key="k1")
    again = await submit(shipbob, lines=[("TEE-L", 1)], key="k2")  # a repeat is the order as first submitted
    assert again == first
    assert len(threepl_sb.threepl.orders()) == 1
    assert threepl_sb.threepl.orders()[0]["tags"] == [{"name": "idempotency_key", "value": "k1"}]
    assert stock(threepl_sb, "MUG-RED")[1] == 2 and stock(threepl_sb, "TEE-L")[1] == 0
    assert await shipbob.get_order("3pl:ORD-404:1") is None


async def test_a_submit_whose_answer_was_lost_is_found_on_the_retry(tmp_path: Path) -> None:
    """The 3PL took the order but answered after the client gave up: the retry gets the order it made."""
    async with threepl_sandbox(tmp_path) as sb:
        sb.threepl_stock({"MUG-RED": 5})
        client = ShipBobClient(sb.settings_for_clients(), timeout=0.3)
        try:
            sb.threepl.inject_fault("create_order", status=None, delay=0.6)
            with pytest.raises(ThreePLTransientError) as lost:
                await submit(client)
            assert lost.value.code == "TIMEOUT"

            async def taken() -> bool:
                return sb.threepl.order("3pl:ORD-1:1") is not None

            await eventually(taken)
            order = await submit(client)
            assert order.provider_id == str(sb.threepl.orders()[0]["id"])
            assert len(sb.threepl.orders()) == 1
        finally:
            await client.close()


async def test_orders_and_stock_survive_a_restart_and_go_on(tmp_path: Path) -> None:
    async with threepl_sandbox(tmp_path) as sb:
        sb.threepl_stock({"MUG-RED": 5})
        sb.threepl.configure(ship_after=1.0)
        async with _client(sb) as client:
            await submit(client)
    async with threepl_sandbox(tmp_path, sandbox_threepl_stock="MUG-RED=99,NEW-SKU=3") as sb, _client(sb) as client:
        assert stock(sb, "MUG-RED") == (5, 2, 3) and stock(sb, "NEW-SKU") == (3, 0, 3)  # seeds only new SKUs
        shipped = await reaches(client, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
        assert shipped.shipments[0].tracking_number


# ---------------------------------------------------------------------------------------------------------
# Refusals


async def test_refused_at_submit_with_the_3pls_reason(threepl_sb: SandboxServers, shipbob: ShipBobClient) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 1})
    threepl_sb.threepl.configure(refuse_at_submit=True)
    cases = [
        ("3pl:ORD-1:1", [("MUG-BLUE", 1)], RECIPIENT, ThreePLDetail.UNKNOWN_SKU, "MUG-BLUE is not a product"),
        ("3pl:ORD-2:1", [("MUG-RED", 2)], RECIPIENT, ThreePLDetail.OUT_OF_STOCK, "MUG-RED: 2 asked, 1 fulfillable"),
        ("3pl:ORD-3:1", [("MUG-RED", 1)], INVALID, ThreePLDetail.INVALID_ADDRESS, "Invalid Address"),
    ]
    for ref, lines, recipient, detail, words in cases:
        with pytest.raises(ThreePLRefused) as refused:
            await submit(shipbob, ref, lines, recipient)
        assert (refused.value.detail, refused.value.status, refused.value.retryable) == (detail, 422, False)
        assert words in refused.value.reason and ref in str(refused.value)
        assert await shipbob.get_order(ref) is None
    threepl_sb.threepl.refuse_next(1, "Merchant account suspended")
    with pytest.raises(ThreePLRefused) as told:
        await submit(shipbob, "3pl:ORD-4:1", [("MUG-RED", 1)])
    assert (told.value.reason, told.value.detail) == ("Order: Merchant account suspended", None)
    assert (await submit(shipbob, "3pl:ORD-4:1", [("MUG-RED", 1)])).status == ThreePLStatus.PROCESSING


async def test_accepted_then_in_exception_or_on_hold_as_shipbob_does(
    threepl_sb: SandboxServers, shipbob: ShipBobClient
) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 1})
    unknown = await submit(shipbob, "3pl:ORD-1:1", [("MUG-BLUE", 1)])
    short = await submit(shipbob, "3pl:ORD-2:1", [("MUG-RED", 3)])
    address = await submit(shipbob, "3pl:ORD-3:1", [("MUG-RED", 1)], INVALID)
    assert (unknown.status, unknown.detail, unknown.reason) == (
        ThreePLStatus.EXCEPTION,
        ThreePLDetail.UNKNOWN_SKU,
        "No Sku History",
    )
    assert (short.status, short.detail, short.reason) == (
        ThreePLStatus.EXCEPTION,
        ThreePLDetail.OUT_OF_STOCK,
        "No Stock On Hand For Sku",
    )
    assert (address.status, address.detail, address.reason) == (
        ThreePLStatus.ON_HOLD,
        ThreePLDetail.INVALID_ADDRESS,
        "Invalid Address",
    )
    await asyncio.sleep(2 * THREEPL_STEP)
    for ref, was in [("3pl:ORD-1:1", unknown), ("3pl:ORD-2:1", short), ("3pl:ORD-3:1", address)]:
        assert await shipbob.get_order(ref) == was  # none of them moves by itself
    # Stock arriving releases the exceptions it covers; they ship as any order
    threepl_sb.threepl_stock({"MUG-BLUE": 1, "MUG-RED": 4})
    assert (await shipbob.get_order("3pl:ORD-1:1") or unknown).status == ThreePLStatus.PROCESSING
    await reaches(shipbob, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
    await reaches(shipbob, "3pl:ORD-2:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
    assert (await shipbob.get_order("3pl:ORD-3:1") or address).status == ThreePLStatus.ON_HOLD


async def test_holds_wait_until_released(threepl_sb: SandboxServers, shipbob: ShipBobClient) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 5})
    threepl_sb.threepl.hold_next(1, "Fraud review")
    held = await submit(shipbob)
    assert (held.status, held.detail, held.reason) == (ThreePLStatus.ON_HOLD, ThreePLDetail.MANUAL_HOLD, "Fraud review")
    assert stock(threepl_sb, "MUG-RED") == (5, 2, 3)  # a hold keeps its units
    await asyncio.sleep(2 * THREEPL_STEP)
    assert (await shipbob.get_order("3pl:ORD-1:1") or held).status == ThreePLStatus.ON_HOLD
    threepl_sb.threepl.act("3pl:ORD-1:1", "release")
    await reaches(shipbob, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)


# ---------------------------------------------------------------------------------------------------------
# Cancels


async def test_cancel_is_accepted_before_shipping_and_refused_after(
    threepl_sb: SandboxServers, shipbob: ShipBobClient
) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 5})
    threepl_sb.threepl.configure(ship_after=60)
    await submit(shipbob, "3pl:ORD-1:1")
    answer = await shipbob.request_cancel("3pl:ORD-1:1")
    assert (answer.accepted, answer.status, answer.reason) == (True, ThreePLStatus.CANCELLED, None)
    assert answer.order is not None and answer.order.status == ThreePLStatus.CANCELLED
    assert stock(threepl_sb, "MUG-RED") == (5, 0, 5)  # its units are free again
    again = await shipbob.request_cancel("3pl:ORD-1:1")  # a retried cancel changes nothing and is accepted
    assert (again.accepted, again.status) == (True, ThreePLStatus.CANCELLED)

    held = await submit(shipbob, "3pl:ORD-2:1", recipient=INVALID)
    assert held.status == ThreePLStatus.ON_HOLD
    assert (await shipbob.request_cancel("3pl:ORD-2:1")).accepted

    await submit(shipbob, "3pl:ORD-3:1")
    threepl_sb.threepl.act("3pl:ORD-3:1", "ship")
    late = await shipbob.request_cancel("3pl:ORD-3:1")
    assert (late.accepted, late.status) == (False, ThreePLStatus.COMPLETED)
    assert late.reason == "Shipment has already shipped and cannot be cancelled"
    assert stock(threepl_sb, "MUG-RED") == (3, 0, 3)

    with pytest.raises(ThreePLNotFound):
        await shipbob.request_cancel("3pl:ORD-404:1")


# ---------------------------------------------------------------------------------------------------------
# Inventory and reconciliation


async def test_inventory_levels_follow_orders_and_drift(threepl_sb: SandboxServers, shipbob: ShipBobClient) -> None:
    assert await shipbob.inventory_levels() == []
    threepl_sb.threepl_stock({"MUG-RED": 10, "TEE-L": 4})
    threepl_sb.threepl.configure(ship_after=60)
    await submit(shipbob, "3pl:ORD-1:1", [("MUG-RED", 3), ("TEE-L", 1)])
    levels = {s.sku: s for s in await shipbob.inventory_levels()}
    assert sorted(levels) == ["MUG-RED", "TEE-L"]
    red = levels["MUG-RED"]
    assert (red.on_hand, red.committed, red.fulfillable) == (10, 3, 7)
    [center] = red.fulfillment_centers
    assert (center.fulfillment_center, center.on_hand, center.committed, center.fulfillable) == (
        "Sandbox FC (Cicero, IL)",
        10,
        3,
        7,
    )
    # Drift: the 3PL recounts the shelf below what the order needs; the order cannot ship when its time comes
    threepl_sb.threepl_stock({"MUG-RED": 2})
    red = {s.sku: s for s in await shipbob.inventory_levels()}["MUG-RED"]
    assert (red.on_hand, red.committed, red.fulfillable) == (2, 3, 0)
    threepl_sb.threepl.act("3pl:ORD-1:1", "ship")
    short = await shipbob.get_order("3pl:ORD-1:1")
    assert short is not None
    assert (short.status, short.detail, short.reason) == (
        ThreePLStatus.EXCEPTION,
        ThreePLDetail.OUT_OF_STOCK,
        "No Stock On Hand For Sku MUG-RED",
    )
    assert stock(threepl_sb, "TEE-L") == (4, 0, 4)  # nothing left the shelf
    threepl_sb.threepl.configure(ship_after=THREEPL_STEP)
    threepl_sb.threepl_stock({"MUG-RED": 3})
    await reaches(shipbob, "3pl:ORD-1:1", ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT)
    assert stock(threepl_sb, "MUG-RED") == (0, 0, 0) and stock(threepl_sb, "TEE-L") == (3, 0, 3)


async def test_changes_since_finds_what_changed(
    threepl_sb: SandboxServers, shipbob: ShipBobClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    threepl_sb.threepl_stock({"MUG-RED": 10})
    threepl_sb.threepl.configure(ship_after=60)
    for n in range(1, 6):
        await submit(shipbob, f"3pl:ORD-{n}:1", [("MUG-RED", 1)])
    await asyncio.sleep(0.01)
    since = datetime.now(UTC)
    assert await shipbob.changes_since(since) == []
    for ref in ("3pl:ORD-4:1", "3pl:ORD-2:1"):
        threepl_sb.threepl.act(ref, "ship")
        await asyncio.sleep(0.01)  # the 3PL's times are to the millisecond: one change per millisecond here
    await shipbob.request_cancel("3pl:ORD-5:1")
    monkeypatch.setattr(shipbob_module, "PAGE_SIZE", 2)  # several pages, read to the end
    changed = await shipbob.changes_since(since)
    assert [o.reference_id for o in changed] == ["3pl:ORD-4:1", "3pl:ORD-2:1", "3pl:ORD-5:1"]  # oldest change first
    assert [o.status for o in changed] == [ThreePLStatus.COMPLETED] * 2 + [ThreePLStatus.CANCELLED]
    last = changed[-1].updated_at
    assert last is not None
    assert [o.reference_id for o in await shipbob.changes_since(last)] == ["3pl:ORD-5:1"]  # at or after
    assert await shipbob.changes_since(last + timedelta(milliseconds=1)) == []
    everything = await shipbob.changes_since(datetime(2000, 1, 1, tzinfo=UTC))
    assert len(everything) == 5
    with pytest.raises(ValueError):
        await shipbob.changes_since(datetime(2000, 1, 1))


# ---------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ThreePLError),
        (401, ThreePLError),
        (403, ThreePLError),
        (404, ThreePLNotFound),
        (408, ThreePLTransientError),
        (429, ThreePLTransientError),
        (500, ThreePLTransientError),
        (502, ThreePLTransientError),
        (503, ThreePLTransientError),
        (504, ThreePLTransientError),
    ],
)
async def test_each_answer_of_the_3pl_is_the_right_error(
    threepl_sb: SandboxServers, shipbob: ShipBobClient, status: int, expected: type[ThreePLError]
) -> None:
    threepl_sb.threepl.inject_fault("inventory", status=status, message="injected")
    with pytest.raises(ThreePLError) as err:
        await shipbob.inventory_levels()
    assert type(err.value) is expected
    assert err.value.retryable is (expected is ThreePLTransientError)
    assert err.value.status == status
    assert str(err.value) == f"3pl inventory levels: {status}: injected"
    assert await shipbob.inventory_levels() == []  # the fault was for one call


async def test_a_bad_token_or_channel_is_not_retryable(threepl_sb: SandboxServers) -> None:
    good = threepl_sb.settings_for_clients()
    for changes, status in [({"threepl_api_token": "stolen"}, 401), ({"threepl_channel_id": "999"}, 403)]:
        async with _client(threepl_sb, **changes) as client:
            with pytest.raises(ThreePLError) as err:
                await submit(client)
        assert (type(err.value), err.value.status, err.value.retryable) == (ThreePLError, status, False)
    assert good.threepl_api_token == "sandbox-3pl-token"


async def test_a_slow_3pl_is_a_timeout_within_the_timeout(threepl_sb: SandboxServers) -> None:
    threepl_sb.threepl.inject_fault("list_orders", status=None, delay=2.0)
    async with _client(threepl_sb, within=0.3) as client:
        started = time.monotonic()
        with pytest.raises(ThreePLTransientError) as err:
            await client.get_order("3pl:ORD-1:1")
        took = time.monotonic() - started
    assert err.value.code == "TIMEOUT" and "no answer within 0.3 s" in str(err.value)
    assert 0.25 <= took < 1.0


async def test_unreachable_outage_and_a_proxys_page_are_transient(threepl_sb: SandboxServers, tmp_path: Path) -> None:
    settings = threepl_sb.settings_for_clients()
    async with _client(threepl_sb, threepl_api_base=f"http://127.0.0.1:{free_port()}/2.0") as nowhere:
        with pytest.raises(ThreePLTransientError) as refused:
            await nowhere.inventory_levels()
    assert refused.value.code == "CONNECTION"

    threepl_sb.start_outage("3pl")
    async with _client(threepl_sb) as client:
        with pytest.raises(ThreePLTransientError) as down:
            await client.inventory_levels()
        assert down.value.status == 503
        threepl_sb.end_outage("3pl")
        assert await client.inventory_levels() == []

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>captive portal</html>", content_type="text/html")

    async with serving(page) as base:
        client = ShipBobClient(settings.model_copy(update={"threepl_api_base": f"{base}/2.0"}))
        with pytest.raises(ThreePLTransientError) as odd:
            await client.get_order("3pl:ORD-1:1")
        await client.close()
        assert odd.value.code == "BAD_ANSWER"


async def test_nothing_the_adapter_says_or_logs_names_the_customer(
    threepl_sb: SandboxServers, shipbob: ShipBobClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    threepl_sb.threepl_stock({"MUG-RED": 5})
    await submit(shipbob, "3pl:ORD-1:1")
    await submit(shipbob, "3pl:ORD-1:1")
    await submit(shipbob, "3pl:ORD-2:1", recipient=INVALID)
    await shipbob.request_cancel("3pl:ORD-1:1")
    threepl_sb.threepl.configure(refuse_at_submit=True)
    messages = []
    for ref, lines, recipient in [
        ("3pl:ORD-3:1", [("MUG-RED", 1)], INVALID),
        ("3pl:ORD-4:1", [("NOPE", 1)], RECIPIENT),
    ]:
        with pytest.raises(ThreePLRefused) as refused:
            await submit(shipbob, ref, lines, recipient)
        messages += [str(refused.value), refused.value.reason]
    threepl_sb.threepl.inject_fault("create_order", status=500, message="Zebedee Quartermaine, 77 Xylophone Crescent")
    with pytest.raises(ThreePLTransientError) as echoed:
        await submit(shipbob, "3pl:ORD-5:1")
    messages.append(str(echoed.value))
    assert "3pl:ORD-1:1" in caplog.text and "3pl:ORD-3:1" in messages[0]  # orders are named by reference
    for private in PRIVATE:
        assert private not in caplog.text
        assert all(private not in m for m in messages), private


@contextlib.asynccontextmanager
async def _client(sb: SandboxServers, *, within: float | None = None, **changes: str) -> AsyncIterator[ShipBobClient]:
    """The adapter pointed at `sb`, with settings `changes` (another token, base...)."""
    client = ShipBobClient(sb.settings_for_clients().model_copy(update=changes), timeout=within)
    try:
        yield client
    finally:
        await client.close()
