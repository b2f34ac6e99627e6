"""POST /v1/customers/{id}/erasure: the right to erasure over HTTP."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from common.api import FulfillmentApi
from common.models import workflow_id_for
from tests.integration.privacy.test_customer_erasure import closed, customer_order


async def test_erasure_is_refused_while_an_order_runs_then_done_once(
    http: httpx.AsyncClient, api: FulfillmentApi, ops: dict[str, str], intake: dict[str, str]
) -> None:
    customer, order_id = f"C-{uuid.uuid4().hex[:6]}", f"ORD-{uuid.uuid4().hex[:8]}"
    url = f"/v1/customers/{customer}/erasure"
    assert (await http.post(url, headers=ops)).status_code == 404  # no order of theirs yet
    await api.place_order(customer_order(order_id, customer))

    running = await http.post(url, headers=ops)
    assert running.status_code == 409 and running.headers["content-type"] == "application/problem+json"
    assert workflow_id_for(order_id) in running.json()["detail"]
    assert (await http.post(url, headers=intake)).status_code == 403  # a storefront's key may not erase

    await api.cancel_order(order_id, "erasure request")
    await closed(api.client, workflow_id_for(order_id))
    erased = await http.post(url, headers=ops)
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["customer_id"] == customer and report["keys_destroyed"] == 1
    assert report["workflows"] == [workflow_id_for(order_id)] and report["kept"]

    await asyncio.sleep(1.1)  # this process's copy of the data key expires (FULFILL_CODEC_KEY_CACHE_TTL=1 here)
    gone = await http.get(f"/v1/orders/{order_id}", headers=ops)
    assert gone.status_code == 410, gone.text
    assert f"customer {customer}'s data was erased" in gone.json()["detail"]
    again = await http.post(url, headers=ops)
    assert again.status_code == 200 and again.json()["keys_destroyed"] == 0
