"""Warehouse staff and stock over HTTP: pick tasks, receipts, counts, history, forecast, returned parcels."""

from __future__ import annotations

import httpx

from tests.integration.http.test_http_orders import assert_problem


async def test_stock_levels_receipts_history_and_forecast(
    http: httpx.AsyncClient, warehouse: dict[str, str], intake: dict[str, str]
) -> None:
    before = await http.get("/v1/inventory", params={"sku": "TEE-L", "warehouse": "LDN-1"}, headers=warehouse)
    assert before.status_code == 200, before.text
    on_hand = before.json()[0]["on_hand"] if before.json() else 0
    received = await http.post(
        "/v1/inventory/TEE-L/receive", json={"quantity": 3, "warehouse": "LDN-1"}, headers=warehouse
    )
    assert received.status_code == 200, received.text
    assert received.json()["on_hand"] == on_hand + 3
    history = (await http.get("/v1/inventory/TEE-L/history", params={"limit": 1}, headers=warehouse)).json()
    assert history[0]["kind"] == "receipt" and history[0]["delta_on_hand"] == 3
    forecast = await http.get("/v1/inventory/forecast", params={"sku": "TEE-L"}, headers=warehouse)
    assert forecast.status_code == 200 and forecast.json()[0]["sku"] == "TEE-L"
    assert forecast.json()[0]["demand_model"] == "ewma"  # no order history

    assert_problem(await http.get("/v1/inventory/NO-SUCH/history", headers=warehouse), 404)
    assert_problem(await http.post("/v1/inventory/NO-SUCH/receive", json={"quantity": 1}, headers=warehouse), 404)
    assert_problem(
        await http.post("/v1/inventory/TEE-L/count", json={"warehouse": "NOWHERE", "counted": 1}, headers=warehouse),
        404,
    )
    assert_problem(await http.post("/v1/inventory/TEE-L/receive", json={"quantity": 0}, headers=warehouse), 422)
    zero = await http.post(
        "/v1/inventory/TEE-L/adjust", json={"warehouse": "LDN-1", "delta": 0, "reason": "x"}, headers=warehouse
    )
    assert_problem(zero, 403)  # adjustments are ops' call
    assert_problem(await http.post("/v1/inventory/TEE-L/receive", json={"quantity": 1}, headers=intake), 403)
    after = await http.get("/v1/inventory", params={"sku": "TEE-L", "warehouse": "LDN-1"}, headers=warehouse)
    assert after.json()[0]["on_hand"] == on_hand + 3  # the refused requests changed nothing


async def test_pick_tasks_and_refused_confirmations(
    http: httpx.AsyncClient, warehouse: dict[str, str], ops: dict[str, str]
) -> None:
    picks = await http.get("/v1/picks", headers=warehouse)
    assert picks.status_code == 200 and isinstance(picks.json(), list)
    assert_problem(await http.post("/v1/picks/PICK-NOPE/confirm", json={}, headers=warehouse), 404)
    assert_problem(
        await http.post("/v1/picks/PICK-NOPE/confirm", json={"short": {"MUG-RED": 0}}, headers=warehouse), 422
    )
    assert_problem(await http.post("/v1/picks/PICK-NOPE/confirm", json={}, headers=ops), 403)
    assert_problem(
        await http.post(
            "/v1/returns/RMA-NOPE/receive",
            json={"lines": [{"sku": "MUG-RED", "quantity": 1, "condition": "resellable"}]},
            headers=warehouse,
        ),
        404,
    )
