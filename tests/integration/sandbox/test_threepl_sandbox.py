"""The sandbox 3PL over plain HTTP: ShipBob's auth, channel header, validation and duplicate answers, API
versions, paging, and the test controls under /_sandbox/3pl (what a developer drives with curl)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sandbox import SandboxServers

TOKEN = {"Authorization": "Bearer sandbox-3pl-token", "shipbob_channel_id": "100100"}
ORDER: dict[str, Any] = {
    "reference_id": "3pl:ORD-1:1",
    "order_number": "ORD-1",
    "shipping_method": "Standard",
    "recipient": {"name": "A B", "address": {"address1": "1 Way", "city": "Leeds", "country": "GB", "zip_code": "LS1"}},
    "products": [{"reference_id": "MUG-RED", "quantity": 1}],
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    async with http.request(method, url, json=body, headers=TOKEN if headers is None else headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def order(ref: str) -> dict[str, Any]:
    return {**ORDER, "reference_id": ref}


async def test_shipbobs_auth_channel_validation_and_duplicates(
    threepl_sb: SandboxServers, http: aiohttp.ClientSession
) -> None:
    api = threepl_sb.threepl_api_base
    threepl_sb.threepl_stock({"MUG-RED": 5})
    for headers, title in [({}, "no bearer token"), ({"Authorization": "Bearer nope"}, "not valid")]:
        status, body, resp_headers = await call(http, "GET", f"{api}/order", headers=headers)
        assert (status, body["status"]) == (401, 401) and title in body["title"]
        assert resp_headers["Content-Type"].startswith("application/problem+json") and body["traceId"]
    status, body, _ = await call(http, "POST", f"{api}/order", ORDER, {"Authorization": TOKEN["Authorization"]})
    assert (status, list(body["errors"])) == (400, ["shipbob_channel_id"])
    status, _, _ = await call(http, "POST", f"{api}/order", ORDER, {**TOKEN, "shipbob_channel_id": "7"})
    assert status == 403
    status, body, _ = await call(http, "POST", f"{api}/order", {"products": [{"reference_id": "X", "quantity": 0}]})
    assert status == 400 and sorted(body["errors"]) == [
        "Products[0].Quantity",
        "Recipient.Address.Address1",
        "Recipient.Address.City",
        "Recipient.Address.Country",
        "Recipient.Name",
        "ReferenceId",
        "ShippingMethod",
    ]
    status, created, _ = await call(http, "POST", f"{api}/order", ORDER)
    assert status == 201 and created["id"] == 100001 and created["shipments"][0]["id"] == 900001
    assert (created["status"], created["shipments"][0]["status"], created["channel"]["id"]) == (
        "Processing",
        "Processing",
        100100,
    )
    status, body, _ = await call(http, "POST", f"{api}/order", ORDER)
    assert (status, body["errors"]) == (422, {"ReferenceId": ["An order with this reference_id already exists"]})
    # Any API version; the same orders
    for version in ("1.0", "2025-07"):
        status, got, _ = await call(http, "GET", f"{threepl_sb.threepl_url}/{version}/order/100001")
        assert (status, got) == (200, created)
    async with http.get(f"{threepl_sb.threepl_url}/v9/order/100001", headers=TOKEN) as unknown:
        assert unknown.status == 404
    assert (await call(http, "GET", f"{api}/order/999"))[0] == 404


async def test_listings_are_paged_filtered_and_sorted(threepl_sb: SandboxServers, http: aiohttp.ClientSession) -> None:
    api = threepl_sb.threepl_api_base
    threepl_sb.threepl_stock({"MUG-RED": 5})
    threepl_sb.threepl.configure(ship_after=60)
    for n in (1, 2, 3):
        assert (await call(http, "POST", f"{api}/order", order(f"R{n}")))[0] == 201
    status, rows, headers = await call(http, "GET", f"{api}/order?Limit=2")
    assert [r["reference_id"] for r in rows] == ["R3", "R2"]  # newest first by default
    assert (headers["total-count"], headers["total-pages"], headers["page-number"]) == ("3", "2", "1")
    assert "Page=2" in headers["next-page"]
    _, rows, headers = await call(http, "GET", f"{api}/order?Limit=2&Page=2")
    assert [r["reference_id"] for r in rows] == ["R1"] and "next-page" not in headers
    _, rows, _ = await call(http, "GET", f"{api}/order?SortOrder=Oldest&ReferenceIds=R3,R1")
    assert [r["reference_id"] for r in rows] == ["R1", "R3"]
    _, rows, _ = await call(http, "GET", f"{api}/order?IDs=100002")
    assert [r["reference_id"] for r in rows] == ["R2"]
    status, body, _ = await call(http, "GET", f"{api}/order?LastUpdateStartDate=yesterday")
    assert status == 400 and "LastUpdateStartDate" in body["errors"]
    status, levels, headers = await call(http, "GET", f"{api}/inventory-level")
    assert status == 200 and headers["total-count"] == "1"
    assert (levels[0]["sku"], levels[0]["total_on_hand_quantity"], levels[0]["total_committed_quantity"]) == (
        "MUG-RED",
        5,
        3,
    )


async def test_the_controls_over_http(threepl_sb: SandboxServers, http: aiohttp.ClientSession) -> None:
    api, control = threepl_sb.threepl_api_base, f"{threepl_sb.threepl_url}/_sandbox/3pl"
    status, body, _ = await call(http, "POST", f"{control}/inventory", {"MUG-RED": 4}, {})
    assert status == 200 and body["inventory"][0]["total_fulfillable_quantity"] == 4
    assert (await call(http, "POST", f"{control}/inventory", {"MUG-RED": -1}, {}))[0] == 400
    assert (await call(http, "POST", f"{control}/config", {"ship_after": 60, "refuse_at_submit": "yes"}, {}))[0] == 400
    status, config, _ = await call(http, "POST", f"{control}/config", {"ship_after": 60}, {})
    assert (status, config["ship_after"], config["refuse_at_submit"]) == (200, 60, False)

    _, faults, _ = await call(http, "POST", f"{control}/faults", {"operation": "create_order", "status": 429}, {})
    assert faults["faults"] == {"create_order": {"remaining": 1, "status": 429, "delay": 0.0}}
    assert (await call(http, "POST", f"{api}/order", order("R1")))[0] == 429
    assert (await call(http, "POST", f"{control}/faults", {"operation": "nope"}, {}))[0] == 400
    await call(http, "POST", f"{control}/faults", {"operation": "create_order", "fail_next": 3}, {})
    assert (await call(http, "DELETE", f"{control}/faults", None, {}))[1]["faults"] == {}

    await call(http, "POST", f"{control}/refuse", {"count": 1, "reason": "Account on credit hold"}, {})
    status, body, _ = await call(http, "POST", f"{api}/order", order("R1"))
    assert (status, body["errors"]) == (422, {"Order": ["Account on credit hold"]})
    await call(http, "POST", f"{control}/hold", {"count": 1, "reason": "Fraud review"}, {})
    _, held, _ = await call(http, "POST", f"{api}/order", order("R1"))
    assert held["shipments"][0]["status_details"][0] == {"id": 406, "name": "ManualHold", "description": "Fraud review"}

    acts = f"{control}/orders/R1"
    assert (await call(http, "POST", f"{acts}/ship", None, {}))[0] == 409  # on hold: release it first
    assert (await call(http, "POST", f"{acts}/release", None, {}))[1]["shipments"][0]["status"] == "Processing"
    assert (await call(http, "POST", f"{acts}/deliver", None, {}))[0] == 409  # not shipped yet
    _, shipped, _ = await call(http, "POST", f"{acts}/ship", None, {})
    assert shipped["shipments"][0]["status_details"][0]["name"] == "InTransit"
    _, delivered, _ = await call(http, "POST", f"{acts}/deliver", None, {})
    assert delivered["shipments"][0]["delivery_date"] is not None
    assert (await call(http, "POST", f"{acts}/deliver", None, {}))[0] == 409
    assert (await call(http, "POST", f"{acts}/fly", None, {}))[0] == 400
    assert (await call(http, "POST", f"{control}/orders/NOPE/ship", None, {}))[0] == 404
    _, listing, _ = await call(http, "GET", f"{control}/orders", None, {})
    assert [o["reference_id"] for o in listing["orders"]] == ["R1"]
    _, inventory, _ = await call(http, "GET", f"{control}/inventory", None, {})
    assert inventory["inventory"][0]["total_on_hand_quantity"] == 3


async def test_an_outage_of_the_3pl_over_http(threepl_sb: SandboxServers, http: aiohttp.ClientSession) -> None:
    outages = f"{threepl_sb.http_url}/_sandbox/outages"
    async with http.post(outages, json={"service": "3pl", "seconds": 60}) as resp:
        assert resp.status == 201
    status, body, _ = await call(http, "GET", f"{threepl_sb.threepl_api_base}/inventory-level")
    assert status == 503 and "temporarily" in body["title"]
    assert (await call(http, "GET", f"{threepl_sb.threepl_url}/_sandbox/3pl/orders", None, {}))[0] == 200
    async with http.delete(f"{outages}/3pl") as resp:
        assert (await resp.json())["ended"] is True
    assert (await call(http, "GET", f"{threepl_sb.threepl_api_base}/inventory-level"))[0] == 200
