"""The codec server as an ops person meets it: `temporal workflow show` on a real order's history, without the
codec endpoint (ciphertext), with it and an ops key (the customer's details), with a lesser key or none (the CLI
says 401); CORS for the Web UI's origin only; the browser's sign-in cookie; a key rotation; a forgotten customer.
The session's dev server, worker and the HTTP app served by uvicorn on a real port (`engine_http`)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from google.protobuf import json_format
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.models import workflow_id_for
from common.store import Store
from tests.conftest import TEMPORAL_CLI
from tests.integration.conftest import Cli
from tests.integration.http.conftest import new_key
from tests.integration.local_server import serving
from tests.integration.privacy.test_customer_erasure import EMAIL, NAME, STREET, closed, customer_order

pytestmark = pytest.mark.usefixtures("worker")

UI_ORIGIN = "http://127.0.0.1:8233"  # the embedded Web UI's, allowed by default
ENCRYPTED_B64 = base64.b64encode(b"binary/encrypted").decode()


async def show(dev_server: WorkflowEnvironment, workflow_id: str, *codec: str) -> subprocess.CompletedProcess[str]:
    """`temporal workflow show --output json`, as an ops person runs it (in a thread: the codec server it calls
    answers in this event loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [
            str(TEMPORAL_CLI),
            "workflow",
            "show",
            "-w",
            workflow_id,
            "--address",
            dev_server.client.service_client.config.target_host,
            "--namespace",
            "default",
            "--output",
            "json",
            *codec,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_codec(engine_http: str, auth: str | None) -> list[str]:
    return ["--codec-endpoint", f"{engine_http}/codec", *(["--codec-auth", auth] if auth else [])]


def started_input(shown: subprocess.CompletedProcess[str]) -> Any:
    """The first event's input as the CLI shows it: the JSON value if decoded, else the raw payload."""
    assert shown.returncode == 0, shown.stderr
    events = json.loads(shown.stdout)["events"]
    payload = events[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    if base64.b64decode(payload["metadata"]["encoding"]) != b"json/plain":
        return payload
    return json.loads(base64.b64decode(payload["data"]))


def everything_shown(shown: subprocess.CompletedProcess[str]) -> str:
    """The output, with every payload's data (base64 in the CLI's JSON) decoded: where a name would be."""
    found: list[str] = [shown.stdout]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and isinstance(node.get("metadata"), dict):
                found.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(shown.stdout))
    return "\n".join(found)


async def placed(api: FulfillmentApi, customer: str | None = None) -> tuple[str, str]:
    customer = customer or f"C-{uuid.uuid4().hex[:6]}"
    order_id = f"ORD-CDC{uuid.uuid4().hex[:6]}"
    await api.place_order(customer_order(order_id, customer))
    return workflow_id_for(order_id), customer


async def test_the_cli_shows_ciphertext_without_the_codec_and_the_customer_with_it(
    api: FulfillmentApi, engine_http: str, ops: dict[str, str], dev_server: WorkflowEnvironment
) -> None:
    workflow_id, customer = await placed(api)

    plain = await show(dev_server, workflow_id)
    assert plain.returncode == 0, plain.stderr
    for detail in (NAME, EMAIL, STREET, "Vexworthy"):
        assert detail not in everything_shown(plain)
    assert ENCRYPTED_B64 in plain.stdout  # what is there instead: the encrypted payloads

    decoded = await show(dev_server, workflow_id, *with_codec(engine_http, ops["Authorization"]))
    order = started_input(decoded)["order"]
    assert order["customer"]["name"] == NAME and order["customer"]["email"] == EMAIL
    assert order["customer"]["id"] == customer and order["ship_to"]["line1"] == STREET
    assert ENCRYPTED_B64 not in decoded.stdout  # every payload decoded, not only the input
    assert NAME in everything_shown(decoded)


@asynccontextmanager
async def recording(target: str) -> AsyncIterator[tuple[str, list[tuple[int, str]]]]:
    """A pass-through proxy to `target` that records each answer's status and content type: what the CLI got."""
    answers: list[tuple[int, str]] = []

    async def forward(request: web.Request) -> web.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(
                request.method, target + request.path, content=await request.read(), headers=dict(request.headers)
            )
        answers.append((answer.status_code, answer.headers.get("content-type", "")))
        return web.Response(status=answer.status_code, body=answer.content)

    async with serving(forward) as url:
        yield url, answers


async def test_without_an_ops_key_the_cli_gets_401_and_no_payload(
    api: FulfillmentApi,
    engine_http: str,
    intake: dict[str, str],
    reader: dict[str, str],
    dev_server: WorkflowEnvironment,
) -> None:
    workflow_id, _ = await placed(api)
    for auth in (None, intake["Authorization"], reader["Authorization"], "Bearer fk_nosuchkey_0000"):
        async with recording(engine_http) as (proxy, answers):
            # The CLI (the Go SDK) retries a codec error until its timeout, then says so: keep that short
            refused = await show(dev_server, workflow_id, *with_codec(proxy, auth), "--command-timeout", "3s")
        assert refused.returncode != 0, f"{auth}: {refused.stdout[:300]}"
        assert "failed getting next history event" in refused.stderr, refused.stderr
        assert refused.stdout == "" and NAME not in refused.stderr
        assert answers and set(answers) == {(401, "application/problem+json")}, answers


async def test_refusals_are_problems_and_name_what_is_wrong(
    api: FulfillmentApi, engine_http: str, ops: dict[str, str], intake: dict[str, str]
) -> None:
    headers = {**ops, "X-Namespace": "default", "Content-Type": "application/json"}
    good = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": "MQ=="}]}
    async with httpx.AsyncClient(base_url=f"{engine_http}/codec", timeout=30) as http:
        cases: list[tuple[dict[str, str], str, int, str]] = [
            ({**headers, **intake}, json.dumps(good), 401, "lacks the ops scope"),
            ({"X-Namespace": "default"}, json.dumps(good), 401, "send an ops API key"),
            (headers, "{not json", 400, "not valid JSON"),
            (headers, json.dumps({"payloads": [{"data": "%%%"}]}), 400, "payloads[0].data is not base64"),
            (headers, json.dumps({"payloads": [{"metadata": {"encoding": "a"}}]}), 400, "metadata.encoding"),
            (headers, json.dumps({"payloads": "x"}), 400, '{"payloads": [{"metadata"'),
            ({**headers, "X-Namespace": "payroll"}, json.dumps(good), 403, "namespace 'default' only"),
        ]
        for sent, body, status, detail in cases:
            for endpoint in ("/decode", "/encode"):
                answer = await http.post(endpoint, content=body, headers=sent)
                assert answer.status_code == status, (endpoint, body, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert detail in answer.json()["detail"]
        assert (await http.post("/decode", content=json.dumps(good), headers=headers)).json() == good


async def test_cors_answers_the_web_ui_origin_and_no_other(engine_http: str, ops: dict[str, str]) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with httpx.AsyncClient(base_url=f"{engine_http}/codec", timeout=30) as http:
        for origin in (UI_ORIGIN, "http://localhost:8233"):
            answer = await http.options("/decode", headers={**preflight, "Origin": origin})
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == origin
            assert answer.headers["access-control-allow-credentials"] == "true"
            allowed = answer.headers["access-control-allow-headers"].lower()
            assert {"content-type", "x-namespace", "authorization"} <= set(allowed.replace(" ", "").split(","))

        for origin in ("http://evil.example", "http://127.0.0.1:9999"):
            refused = await http.options("/decode", headers={**preflight, "Origin": origin})
            assert refused.status_code == 400
            assert "access-control-allow-origin" not in refused.headers

        # The UI reads the refusal of a request without a key (and so shows ciphertext, not a broken page)
        unauthorised = await http.post(
            "/decode", content='{"payloads": []}', headers={"Origin": UI_ORIGIN, "X-Namespace": "default"}
        )
        assert unauthorised.status_code == 401
        assert unauthorised.headers["access-control-allow-origin"] == UI_ORIGIN
        # The rest of the API is no page's to call
        other = await http.options(
            f"{engine_http}/v1/orders", headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_the_browser_signs_in_and_its_cookie_decodes(
    api: FulfillmentApi, engine_http: str, store: Store, intake: dict[str, str], dev_server: WorkflowEnvironment
) -> None:
    workflow_id, _ = await placed(api)
    history = await api.client.get_workflow_handle(workflow_id).fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input
    body = json_format.MessageToJson(payloads)
    ops_key = (await new_key(store, "ops", name=f"ops-browser-{uuid.uuid4().hex[:4]}"))["Authorization"][7:]
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}

    async with httpx.AsyncClient(base_url=f"{engine_http}/codec", timeout=30) as browser:
        page = await browser.get("/")
        assert page.status_code == 200 and "Not signed in" in page.text
        assert f"{engine_http}/codec" in page.text  # the endpoint to give the Web UI

        bad = await browser.post("/login", content=f"key={intake['Authorization'][7:]}", headers=form)
        assert bad.status_code == 401 and "not a valid ops API key" in bad.text
        assert "set-cookie" not in bad.headers

        signed = await browser.post("/login", content=f"key={ops_key}", headers=form)
        assert signed.status_code == 303 and signed.headers["location"] == "/codec/"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/codec" in cookie
        assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
        assert "Signed in with API key" in (await browser.get("/")).text

        decoded = await browser.post("/decode", content=body, headers={"X-Namespace": "default"})
        assert decoded.status_code == 200
        data = base64.b64decode(decoded.json()["payloads"][0]["data"])
        assert NAME in data.decode()

        await browser.post("/logout")
        gone = await browser.post("/decode", content=body, headers={"X-Namespace": "default"})
        assert gone.status_code == 401 and NAME not in gone.text

    # Behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1): the cookie is Secure
    async with httpx.AsyncClient(base_url=f"{engine_http}/codec", timeout=30) as proxied:
        behind = await proxied.post("/login", content=f"key={ops_key}", headers={**form, "X-Forwarded-Proto": "https"})
        assert behind.status_code == 303 and "Secure" in behind.headers["set-cookie"]


async def test_both_keys_decode_after_a_rotation(
    api: FulfillmentApi,
    engine_http: str,
    ops: dict[str, str],
    cli: Cli,
    dev_server: WorkflowEnvironment,
    tmp_path: Path,
) -> None:
    before, _ = await placed(api)
    rotated = cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    # A new order from a new process (a storefront's `fulfill order place`): under the new key
    order = customer_order(f"ORD-CDR{uuid.uuid4().hex[:6]}", f"C-{uuid.uuid4().hex[:6]}")
    (tmp_path / "order.json").write_text(json.dumps(order))
    assert (done := cli("order", "place", str(tmp_path / "order.json"))).returncode == 0, done.stderr
    after = workflow_id_for(str(order["order_id"]))

    key_ids = []
    for workflow_id in (before, after):
        plain = started_input(await show(dev_server, workflow_id))
        key_ids.append(base64.b64decode(plain["metadata"]["encryption-key-id"]))
        decoded = started_input(await show(dev_server, workflow_id, *with_codec(engine_http, ops["Authorization"])))
        assert decoded["order"]["customer"]["name"] == NAME
    assert key_ids[0] != key_ids[1], "the new order was not encrypted with the new key"


async def test_a_forgotten_customer_reads_as_erased(
    api: FulfillmentApi, engine_http: str, ops: dict[str, str], cli: Cli, dev_server: WorkflowEnvironment
) -> None:
    workflow_id, customer = await placed(api)
    assert started_input(await show(dev_server, workflow_id, *with_codec(engine_http, ops["Authorization"])))

    await api.cancel_order(workflow_id.removeprefix("order-"), "customer asked to be forgotten")
    await closed(api.client, workflow_id)
    forgotten = cli("customer", "forget", customer, "--yes")
    assert forgotten.returncode == 0, forgotten.stderr

    # At once: the codec server keeps no data key in memory
    shown = await show(dev_server, workflow_id, *with_codec(engine_http, ops["Authorization"]))
    note = started_input(shown)
    assert list(note) == ["erased"] and note["erased"].startswith(f"customer {customer}'s data was erased on ")
    for detail in (NAME, EMAIL, STREET):
        assert detail not in everything_shown(shown)
