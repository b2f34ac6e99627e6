"""The HTTP API's /metrics without a stack: requests are labelled by route template (an order id in the path
never becomes a label value), refused webhooks are counted, and the setting removes the route."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.config import Settings
from common.http.app import create_app


def client(**settings: object) -> httpx.AsyncClient:
    app = create_app(Settings(**settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://engine.test")


async def test_requests_are_labelled_by_route_template_and_refused_webhooks_counted() -> None:
    async with client() as http:
        assert (await http.get("/v1/orders/ORD-SECRET-77")).status_code == 401  # no API key
        assert (await http.get("/no/such/path/ORD-SECRET-77")).status_code == 404
        assert (await http.post("/v1/webhooks/twilio/status", data={"MessageSid": "SM1"})).status_code == 401
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "ORD-SECRET-77" not in response.text
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in samples
        if s.name == "fulfill_http_request_seconds_count"
    }
    assert counts[("GET", "/v1/orders/{order_id}", "401")] == 1
    assert counts[("GET", "unmatched", "404")] == 1
    webhooks = {
        (s.labels["provider"], s.labels["outcome"]): s.value
        for s in samples
        if s.name == "fulfill_webhook_events_total"
    }
    assert webhooks == {("twilio", "refused"): 1}


async def test_the_setting_removes_the_route() -> None:
    async with client(api_metrics_enabled=False) as http:
        assert (await http.get("/metrics")).status_code == 404
