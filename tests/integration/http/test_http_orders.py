"""Order intake and ops over HTTP, as a storefront and an ops tool use it: place, replay, conflict, bad input,
keys and scopes, every ops action, with the order's own state checked after each."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import httpx
import pytest

from common.api import FulfillmentApi
from common.store import Store
from tests.integration.http.conftest import new_key
from tests.orders import order_dict


def new_id() -> str:
    return f"ORD-H{uuid.uuid4().hex[:8]}"


async def runs_of(api: FulfillmentApi, order_id: str) -> int:
    return len([wf async for wf in api.client.list_workflows(f'WorkflowId = "order-{order_id}"')])


async def started(api: FulfillmentApi, order_id: str) -> bool:
    """Whether any workflow exists for this order (describe is consistent; visibility is not)."""
    try:
        await api.client.get_workflow_handle(f"order-{order_id}").describe()
    except Exception:
        return False
    return True


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("/problems/")
    return body


async def wait_for_status(http: httpx.AsyncClient, headers: dict[str, str], order_id: str, *wanted: str) -> dict:
    body: dict = {}
    for _ in range(240):
        response = await http.get(f"/v1/orders/{order_id}", headers=headers)
        if response.status_code == 200:
            body = response.json()
            if body["status"] in wanted:
                return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{order_id} never reached {wanted}: {body.get('status')}")


async def test_place_answers_202_with_the_orders_url_and_the_order_runs(
    http: httpx.AsyncClient, intake: dict[str, str]
) -> None:
    order_id = new_id()
    response = await http.post("/v1/orders", json=order_dict(order_id), headers=intake)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/orders/{order_id}"
    body = response.json()
    assert body["order_id"] == order_id and body["workflow_id"] == f"order-{order_id}" and body["run_id"]
    view = await wait_for_status(http, intake, order_id, "PICKING", "LABELED", "SHIPPED", "IN_TRANSIT", "DELIVERED")
    assert view["lines"][0]["sku"] == "MUG-RED"


async def test_the_same_order_twice_replays_the_first_answer_and_starts_nothing(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id = new_id()
    first = await http.post("/v1/orders", json=order_dict(order_id), headers=intake)
    again = await http.post("/v1/orders", json=order_dict(order_id), headers=intake)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await runs_of(api, order_id) == 1


async def test_other_content_under_a_placed_order_id_is_409_and_changes_nothing(
    http: httpx.AsyncClient, intake: dict[str, str]
) -> None:
    order_id = new_id()
    assert (await http.post("/v1/orders", json=order_dict(order_id), headers=intake)).status_code == 202
    other = await http.post("/v1/orders", json=order_dict(order_id, {"MUG-BLUE": 5}), headers=intake)
    assert "already exists" in assert_problem(other, 409)["detail"]
    view = (await http.get(f"/v1/orders/{order_id}", headers=intake)).json()
    assert [(line["sku"], line["quantity"]) for line in view["lines"]] == [("MUG-RED", 2)]


async def test_an_idempotency_key_replays_and_refuses_another_body(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id, other_id = new_id(), new_id()
    headers = {**intake, "Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    first = await http.post("/v1/orders", json=order_dict(order_id), headers=headers)
    again = await http.post("/v1/orders", json=order_dict(order_id), headers=headers)
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    reused = await http.post("/v1/orders", json=order_dict(other_id), headers=headers)
    assert "Idempotency-Key" in assert_problem(reused, 409)["detail"]
    assert not await started(api, other_id)
    assert await runs_of(api, order_id) == 1


async def test_a_refused_body_does_not_use_up_its_idempotency_key(
    http: httpx.AsyncClient, intake: dict[str, str]
) -> None:
    order_id = new_id()
    headers = {**intake, "Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    refused = await http.post("/v1/orders", json=order_dict(order_id, {"NO-SUCH-SKU": 1}), headers=headers)
    assert_problem(refused, 422)
    fixed = await http.post("/v1/orders", json=order_dict(order_id), headers=headers)
    assert fixed.status_code == 202, fixed.text


async def test_racing_placements_of_one_order_start_it_once(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id = new_id()
    responses = await asyncio.gather(
        *(http.post("/v1/orders", json=order_dict(order_id), headers=intake) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [202] * 8
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    for _ in range(40):  # visibility lags a moment behind
        if await runs_of(api, order_id) == 1:
            break
        await asyncio.sleep(0.25)
    assert await runs_of(api, order_id) == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"order_id": "ORD-1", "lines": [', 400, None),
        (b"[]", 422, "body"),
        (
            json.dumps({**order_dict("ORD-X"), "customer": {"id": "C", "name": "A", "email": "nope"}}),
            422,
            "customer.email",
        ),
        (
            json.dumps({**order_dict("ORD-X"), "lines": [{"sku": "MUG-RED", "quantity": "two"}]}),
            422,
            "lines.0.quantity",
        ),
        (json.dumps({**order_dict("ORD-X"), "lines": []}), 422, "lines"),
        (json.dumps({**order_dict("ORD-X"), "surprise": 1}), 422, "surprise"),
        (json.dumps(order_dict("ORD-X", {"NO-SUCH-SKU": 1})), 422, "lines"),
        (json.dumps({**order_dict("ORD-X"), "order_id": "bad id!"}), 422, "order_id"),
    ],
    ids=["malformed", "not-an-object", "bad-email", "wrong-type", "no-lines", "unknown-field", "unknown-sku", "bad-id"],
)
async def test_bad_orders_get_a_problem_naming_the_field_and_start_nothing(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi, body: Any, status: int, field: str | None
) -> None:
    order_id = new_id()
    content = body.replace("ORD-X", order_id) if isinstance(body, str) else body
    response = await http.post("/v1/orders", content=content, headers={**intake, "Content-Type": "application/json"})
    problem = assert_problem(response, status)
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert not await started(api, order_id)


async def test_an_oversized_body_is_413_and_starts_nothing(
    http: httpx.AsyncClient, intake: dict[str, str], api: FulfillmentApi
) -> None:
    order_id = new_id()
    huge = {**order_dict(order_id), "padding": "x" * 100_000}
    assert_problem(await http.post("/v1/orders", json=huge, headers=intake), 413)

    async def chunks() -> Any:  # no Content-Length: the limit counts the bytes read
        yield json.dumps(huge).encode()

    streamed = await http.post("/v1/orders", content=chunks(), headers={**intake, "Content-Type": "application/json"})
    assert_problem(streamed, 413)
    assert not await started(api, order_id)


async def test_keys_and_scopes(
    http: httpx.AsyncClient, store: Store, warehouse: dict[str, str], intake: dict[str, str]
) -> None:
    order_id = new_id()
    missing = await http.post("/v1/orders", json=order_dict(order_id))
    assert assert_problem(missing, 401) and missing.headers["www-authenticate"].startswith("Bearer")
    forged = {"Authorization": "Bearer fk_aaaaaaaaaaaa_" + "A" * 43}
    assert_problem(await http.post("/v1/orders", json=order_dict(order_id), headers=forged), 401)
    assert_problem(await http.post("/v1/orders", json=order_dict(order_id), headers={"Authorization": "x"}), 401)
    assert_problem(await http.post("/v1/orders", json=order_dict(order_id), headers=warehouse), 403)
    assert_problem(await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "x"}, headers=warehouse), 403)

    # A storefront reads the orders it placed, not another's; ops and read keys read them all.
    mine = await http.post("/v1/orders", json=order_dict(new_id()), headers=intake)
    assert mine.status_code == 202
    other_storefront = await new_key(store, "intake", name=f"marketplace-{uuid.uuid4().hex[:6]}")
    assert_problem(await http.get(mine.json()["url"], headers=other_storefront), 404)
    assert_problem(await http.get(mine.json()["url"] + "/returns", headers=other_storefront), 404)
    assert (await http.get(mine.json()["url"], headers=intake)).status_code == 200
    assert (await http.get(mine.json()["url"], headers=await new_key(store, "read"))).status_code == 200

    name = f"short-lived-{uuid.uuid4().hex[:6]}"
    headers = await new_key(store, "intake", name=name)
    assert (await http.post("/v1/orders", json=order_dict(order_id), headers=headers)).status_code == 202
    await store.api_keys.revoke(name)
    assert_problem(await http.get(f"/v1/orders/{order_id}", headers=headers), 401)


async def test_ops_actions_are_recorded_with_who_asked(
    http: httpx.AsyncClient, intake: dict[str, str], ops: dict[str, str], store: Store
) -> None:
    order_id = new_id()
    # Nothing in stock: the order waits (BACKORDERED), so every action below finds it open.
    assert (
        await http.post("/v1/orders", json=order_dict(order_id, {"POSTER-A2": 999}), headers=intake)
    ).status_code == 202
    await wait_for_status(http, ops, order_id, "BACKORDERED")

    held = await http.post(f"/v1/orders/{order_id}/hold", json={"reason": "fraud check"}, headers=ops)
    assert held.status_code == 200, held.text
    assert held.json()["status"] == "ON_HOLD"
    assert_problem(await http.post(f"/v1/orders/{order_id}/hold", json={"reason": "again"}, headers=ops), 409)
    released = await http.post(f"/v1/orders/{order_id}/release", headers=ops)
    assert released.status_code == 200 and released.json()["status"] != "ON_HOLD"
    assert_problem(await http.post(f"/v1/orders/{order_id}/release", headers=ops), 409)
    assert_problem(await http.post(f"/v1/orders/{order_id}/retry", json={}, headers=ops), 409)

    address = {**order_dict(order_id)["ship_to"], "line1": "2 Difference Engine Rd"}
    moved = await http.put(f"/v1/orders/{order_id}/address", json=address, headers=ops)
    assert moved.status_code == 200, moved.text
    bad_address = await http.put(f"/v1/orders/{order_id}/address", json={**address, "country": "UK!"}, headers=ops)
    assert "country" in [e["field"] for e in assert_problem(bad_address, 422)["errors"]]

    cancelled = await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "customer asked"}, headers=ops)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    notes = [entry["note"] for entry in cancelled.json()["timeline"]]
    for action in ("hold requested: fraud check", "release requested", "cancel requested: customer asked"):
        assert f"{action} (by ops-console-test)" in notes, notes
    assert "ship-to address updated by ops-console-test" in notes
    again = await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "again"}, headers=ops)
    assert "closed" in assert_problem(again, 409)["detail"]
    returns = await http.get(f"/v1/orders/{order_id}/returns", headers=ops)
    assert returns.status_code == 200 and returns.json() == []


async def test_actions_on_unknown_orders_are_404(http: httpx.AsyncClient, ops: dict[str, str]) -> None:
    order_id = new_id()
    assert_problem(await http.get(f"/v1/orders/{order_id}", headers=ops), 404)
    assert_problem(await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "x"}, headers=ops), 404)
    assert_problem(await http.post(f"/v1/orders/{order_id}/release", headers=ops), 404)
    assert_problem(await http.get(f"/v1/orders/{order_id}/returns", headers=ops), 404)
    assert_problem(await http.post("/v1/orders/ORD-1/cancel", json={"reason": ""}, headers=ops), 422)
    assert_problem(await http.get("/v1/returns/RMA-NOPE", headers=ops), 404)


async def test_listing_filters_by_customer_and_pages_with_a_cursor(
    http: httpx.AsyncClient, intake: dict[str, str], reader: dict[str, str]
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8]}"
    placed = set()
    for _ in range(3):
        order_id = new_id()
        body = order_dict(order_id)
        body["customer"] = {**body["customer"], "id": customer}
        assert (await http.post("/v1/orders", json=body, headers=intake)).status_code == 202
        placed.add(order_id)
    seen: set[str] = set()
    for _ in range(40):  # visibility lags a moment behind
        first = (await http.get("/v1/orders", params={"customer": customer, "limit": 2}, headers=reader)).json()
        if len(first["orders"]) == 2 and first["next_cursor"]:
            break
        await asyncio.sleep(0.25)
    seen = {o["order_id"] for o in first["orders"]}
    following = (await http.get(first["next"], headers=reader)).json()
    seen |= {o["order_id"] for o in following["orders"]}
    assert seen == placed
    assert following["next_cursor"] is None
    assert all(o["customer_id"] == customer for o in first["orders"] + following["orders"])
    by_sku = (await http.get("/v1/orders", params={"customer": customer, "sku": "MUG-BLUE"}, headers=reader)).json()
    assert by_sku["orders"] == []
    assert_problem(await http.get("/v1/orders", params={"customer": 'x" OR 1=1'}, headers=reader), 422)
    assert_problem(await http.get("/v1/orders", params={"cursor": "!!!"}, headers=reader), 422)
    assert_problem(await http.get("/v1/orders", params={"status": "SOMEWHERE"}, headers=reader), 422)
    assert_problem(await http.get("/v1/orders", headers=intake), 403)


async def test_the_schema_documents_every_endpoint_its_key_and_its_problems(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 24
    for path, method, op in operations:
        problems = {code for code, r in op["responses"].items() if "application/problem+json" in r.get("content", {})}
        if path in ("/healthz", "/readyz"):
            assert "security" not in op
            continue
        if path.startswith("/v1/webhooks/twilio/"):  # signed by the provider, not an API key
            assert op.get("security") == [{"TwilioSignature": []}], (method, path)
            assert {"401", "403", "415"} <= problems, (method, path, problems)
            continue
        if path.startswith("/v1/webhooks/3pl/"):  # Standard Webhooks, checked by the 3PL's adapter
            assert op.get("security") == [{"StandardWebhooksSignature": []}], (method, path)
            assert {"401", "404", "422"} <= problems, (method, path, problems)
            continue
        if path.startswith("/v1/webhooks/"):
            assert op.get("security") == [{"EasyPostSignature": []}], (method, path)
            assert {"401", "422"} <= problems, (method, path, problems)
            continue
        if path.startswith("/codec/"):  # an ops key as a header or the browser's cookie; the sign-in pages: none
            if path in ("/codec/decode", "/codec/encode"):
                assert op.get("security") == [{"ApiKey": []}, {"CodecCookie": []}], (method, path)
                assert {"400", "401", "403", "422"} <= problems, (method, path, problems)
            else:
                assert "security" not in op, (method, path)
            continue
        if path.startswith("/dashboard"):  # HTML for a person: refusals are the sign-in form, not problem+json
            html = {code for code, r in op["responses"].items() if "text/html" in r.get("content", {})}
            assert "401" in html, (method, path, html)
            if path == "/dashboard":
                assert op.get("security") == [{"ApiKey": []}, {"DashboardCookie": []}], (method, path)
            continue
        assert op.get("security") == [{"ApiKey": []}], (method, path)
        assert {"401", "403", "422"} <= problems, (method, path, problems)
    assert "examples" in schema["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"temporal": "ok", "database": "ok"}


async def test_the_reference_pages_need_no_internet(http: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await http.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets and all(a.startswith("/") for a in assets), (page, assets)
        for asset in assets:
            assert (await http.get(asset)).status_code == 200, asset
