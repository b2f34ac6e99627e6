"""The embedded stack behind `make run`: Temporal dev server (with Web UI), sandbox SMTP/SMS/carrier/payments/3PL,
one worker, the HTTP API and the simulated picker, all on 127.0.0.1 with their data under var/. Ctrl-C stops everything.

While it runs, `<var_dir>/stack.json` holds the settings it runs with, and the `fulfill` CLI follows them
(common/cli/_base.py): a shell without FULFILL_DATABASE_URL still reads the stack's database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.api import FulfillmentApi
from common.cli._base import hide_password, remove_stack_file, stack_file, write_stack_file
from common.config import Settings, get_settings
from common.demo import seed_demo
from common.logs import configure_logging
from common.privacy import connect
from common.store import Store
from common.temporal import dev_server_search_attribute_args, register_search_attributes
from sandbox.app import (
    CARRIER_WEBHOOK_PATH,
    SMS_INBOUND_PATH,
    SMS_STATUS_PATH,
    THREEPL_API_VERSION,
    THREEPL_WEBHOOK_PATH,
)
from workers.picker import run_picker

log = logging.getLogger("fulfill.dev")
BIN = Path(sys.executable).parent


def temporal_command(settings: Settings, db_file: Path) -> list[str]:
    host, _, port = settings.temporal_address.rpartition(":")
    return [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        port,
        "--ui-port",
        str(settings.temporal_ui_port),
        # The Web UI decodes through the HTTP API's codec server; without an ops key it shows ciphertext
        "--ui-codec-endpoint",
        codec_endpoint(settings),
        "--namespace",
        settings.temporal_namespace,
        "--db-filename",
        str(db_file),
        # WAL + normal sync: far fewer fsyncs than SQLite's default file mode (docs/performance.md).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        # error, not warn: every shutdown of the dev server logs a dozen WARN lines that ask nothing of anyone
        "--log-level",
        "error",
        *dev_server_search_attribute_args(),
    ]


def codec_endpoint(settings: Settings) -> str:
    """The codec server of this stack's HTTP API (common.http.codec), as the Web UI and the CLI reach it."""
    base = settings.api_public_url or f"http://{_client_host(settings.api_host)}:{settings.api_port}"
    return base.rstrip("/") + "/codec"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, what: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(host, port):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")
        time.sleep(0.2)


async def _prepare_data(settings: Settings) -> None:
    store = await Store.open(settings.database_url)
    try:
        if await seed_demo(store):
            log.info("seeded the demo catalogue and stock")
    finally:
        await store.close()


async def _register_search_attributes(settings: Settings) -> list[str]:
    return await register_search_attributes(await connect(settings), settings.temporal_namespace)


async def _run_picker(settings: Settings, stop: asyncio.Event) -> None:
    async with await FulfillmentApi.connect(settings) as api:
        await run_picker(api, settings.picker_delay, stop)


def with_sandbox_payments(settings: Settings, environ: dict[str, str]) -> tuple[Settings, dict[str, str]]:
    """Refunds through the real Stripe adapter, pointed at the sandbox's Stripe-shaped server, unless the
    environment chose a payments provider itself."""
    if any(k.upper() == "FULFILL_PAYMENTS_PROVIDER" for k in environ):
        return settings, environ
    payments = {
        "payments_provider": "stripe",
        "stripe_api_key": settings.sandbox_payments_api_key,
        "stripe_api_base": f"http://{_client_host(settings.sandbox_host)}:{settings.sandbox_payments_port}",
    }
    # A FULFILL_STRIPE_* of the shell (say, a live key) must not reach the sandbox: these replace them
    env = {k: v for k, v in environ.items() if not k.upper().startswith("FULFILL_STRIPE_")}
    env.update({f"FULFILL_{k.upper()}": v for k, v in payments.items()})
    return settings.model_copy(update=payments), env


def with_engine_webhooks(settings: Settings, environ: dict[str, str]) -> tuple[Settings, dict[str, str]]:
    """The providers' webhooks, as the sandbox posts them (the carrier's tracker events, Twilio's status callbacks
    and customers' texts, the 3PL's order events), to this stack's HTTP API on whatever host and port it listens,
    unless the environment chose other URLs (empty: none)."""
    api = f"http://{_client_host(settings.api_host)}:{settings.api_port}"
    chosen = {k.upper() for k in environ}
    urls = {
        "sandbox_carrier_webhook_url": api + CARRIER_WEBHOOK_PATH,
        "sms_status_callback_url": api + SMS_STATUS_PATH,
        "sandbox_sms_inbound_url": api + SMS_INBOUND_PATH,
        "sandbox_threepl_webhook_url": api + THREEPL_WEBHOOK_PATH,
    }
    update = {name: url for name, url in urls.items() if f"FULFILL_{name.upper()}" not in chosen}
    env = {**environ, **{f"FULFILL_{name.upper()}": url for name, url in update.items()}}
    return settings.model_copy(update=update), env


# The embedded worker's metrics endpoint (the OpenTelemetry/Prometheus exporter's conventional port)
DEV_WORKER_METRICS_PORT = 9464


def with_worker_metrics(settings: Settings, environ: dict[str, str]) -> tuple[Settings, dict[str, str]]:
    """The worker's Prometheus endpoint on, at DEV_WORKER_METRICS_PORT, unless the environment chose a port (0: off)."""
    if "FULFILL_WORKER_METRICS_PORT" in {k.upper() for k in environ}:
        return settings, environ
    env = {**environ, "FULFILL_WORKER_METRICS_PORT": str(DEV_WORKER_METRICS_PORT)}
    return settings.model_copy(update={"worker_metrics_port": DEV_WORKER_METRICS_PORT}), env


def _metrics_lines(settings: Settings, api: str) -> str:
    worker = settings.worker_metrics_port
    worker_url = f"http://{_client_host(settings.worker_metrics_host)}:{worker}/metrics" if worker else "off"
    api_url = f"{api}/metrics" if settings.api_metrics_enabled else "off"
    return f"""    Worker metrics    {worker_url} (Temporal SDK and order metrics, Prometheus format)
    API metrics       {api_url} (request latencies, webhooks; deploy/prometheus has alerts and scrape config)
    Ops dashboard     {api}/dashboard (KPIs, orders by status, stuck orders, low stock; sign in with an ops key)
                      fulfill kpi --from YYYY-MM-DD --to YYYY-MM-DD   # the same KPIs in the shell"""


def _client_host(host: str) -> str:
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"[{host}]" if ":" in host else host


def _banner(settings: Settings) -> str:
    codec = codec_endpoint(settings)
    # The UI under the codec server's host name: the browser sends the codec's cookie within one site only
    ui = f"http://{_client_host(settings.api_host)}:{settings.temporal_ui_port}"
    picker = f"confirms picks after {settings.picker_delay:g}s" if settings.picker_enabled else "off"
    host = _client_host(settings.sandbox_host)
    api = f"http://{_client_host(settings.api_host)}:{settings.api_port}"
    hooks = settings.sandbox_carrier_webhook_url or "nowhere"
    threepl = f"http://{host}:{settings.sandbox_threepl_port}/{THREEPL_API_VERSION}"
    threepl_hooks = settings.sandbox_threepl_webhook_url or "nowhere"
    return f"""
  Fulfillment engine is up.
    Temporal Web UI   {ui}/namespaces/{settings.temporal_namespace}/workflows
    Temporal gRPC     {settings.temporal_address}
    HTTP API          {api}/v1  (reference: {api}/docs, schema: {api}/openapi.json)
    Codec server      {codec}  (the Web UI's; decodes payloads for an ops API key, sign in at {codec}/)
    Twilio webhooks   {settings.sms_status_callback_url or "off"} (the sandbox's callbacks)
{_metrics_lines(settings, api)}
    Sandbox SMTP      {host}:{settings.sandbox_smtp_port}
    Sandbox SMS/outbox http://{host}:{settings.sandbox_http_port}/outbox
    Sandbox carrier   {settings.carrier_api_base} (EasyPost's API; tracker webhooks to {hooks})
    Sandbox payments  {settings.stripe_api_base or "real Stripe"} (refunds via Stripe's SDK)
    Sandbox 3PL       {threepl} (ShipBob's API; webhooks to {threepl_hooks}; controls under /_sandbox/3pl)
    Database          {hide_password(settings.database_url)}
                      the fulfill CLI follows this stack ({stack_file(settings.var_dir)}): it uses this database
                      in a shell without FULFILL_DATABASE_URL, and refuses one that names another
    Picker            {picker}

  Try, in another shell (source .venv/bin/activate first):
    fulfill order place examples/order.json
    fulfill order status ORD-1001
    KEY=$(fulfill api-key create --name storefront --scope intake)
    curl -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
         -d @examples/order.json {api}/v1/orders
    fulfill outbox --order ORD-1001
    fulfill notifications --order ORD-1001  # each message's delivery, as Twilio reported it
    fulfill dev text +15555550100 STOP      # the customer texts STOP: no more SMS, email goes on
    fulfill dev outage carrier --for 60     # watch orders wait in the Web UI, then recover
  Read an order's history decoded (payloads are encrypted; without an ops key you see ciphertext):
    OPS=$(fulfill api-key create --name ops --scope ops)
    temporal workflow show -w order-ORD-1001 --codec-endpoint {codec} --codec-auth "Bearer $OPS"
    In the browser: sign in at {codec}/ with $OPS; in the Web UI open Codec Server (top bar), choose
    "Use my browser setting", endpoint {codec}, turn on "Include cross-origin credentials", Apply.
  Ctrl-C stops everything; data stays in {settings.var_dir}/ for the next `make run`
  (switching databases: stop the stack and `make clean` first).
"""


def main() -> None:
    configure_logging()
    # make run is the embedded stack, for itself and every process it starts (they inherit the environment)
    os.environ["FULFILL_ENVIRONMENT"] = "embedded"
    get_settings.cache_clear()
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    host, _, port = settings.temporal_address.rpartition(":")
    for what, p in [
        ("Temporal", int(port)),
        ("Temporal UI", settings.temporal_ui_port),
        ("sandbox SMTP", settings.sandbox_smtp_port),
        ("sandbox HTTP", settings.sandbox_http_port),
        ("sandbox carrier", settings.sandbox_carrier_port),
        ("sandbox payments", settings.sandbox_payments_port),
        ("sandbox 3PL", settings.sandbox_threepl_port),
        ("HTTP API", settings.api_port),
        *([("worker metrics", DEV_WORKER_METRICS_PORT)] if "FULFILL_WORKER_METRICS_PORT" not in os.environ else []),
    ]:
        if _port_open(host or "127.0.0.1", p):
            raise SystemExit(f"port {p} ({what}) is already in use: is another `make run` up?")

    asyncio.run(_prepare_data(settings))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    # Children ignore the terminal's Ctrl-C (own session); we stop them in order: worker first.
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "FULFILL_ENVIRONMENT": "embedded"}
    settings, env = with_sandbox_payments(settings, environ)
    settings, env = with_engine_webhooks(settings, env)
    settings, env = with_worker_metrics(settings, env)

    def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        procs.append((name, proc))
        return proc

    try:
        temporal = start("temporal", temporal_command(settings, settings.var_dir / "temporal.db"))
        wait_for_port(host, int(port), "Temporal dev server", temporal)
        wait_for_port(host, settings.temporal_ui_port, "Temporal Web UI", temporal)
        added = asyncio.run(_register_search_attributes(settings))
        if added:
            log.info("registered search attributes %s", ", ".join(added))
        sandbox = start("sandbox", [sys.executable, "-m", "workers.sandbox"])
        wait_for_port(settings.sandbox_host, settings.sandbox_threepl_port, "sandbox servers", sandbox)
        start("worker", [sys.executable, "-m", "workers.worker"])
        api = start("api", [sys.executable, "-m", "workers.api"])
        wait_for_port(_client_host(settings.api_host).strip("[]"), settings.api_port, "HTTP API", api)
        write_stack_file(settings)
        print(_banner(settings), flush=True)
        asyncio.run(_supervise(settings, procs))
    except KeyboardInterrupt:
        pass
    finally:
        remove_stack_file(settings)  # first: a CLI must not follow a stack that is going away
        _stop_all(procs)


async def _supervise(settings: Settings, procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Run the picker until Ctrl-C/SIGTERM or until a child dies (then say which and stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    picker = asyncio.create_task(_run_picker(settings, stop)) if settings.picker_enabled else None
    while not stop.is_set():
        for name, proc in procs:
            if proc.poll() is not None:
                log.error("%s exited with code %s; stopping the stack", name, proc.returncode)
                stop.set()
        try:
            await asyncio.wait_for(stop.wait(), timeout=1)
        except TimeoutError:
            pass
    if picker:
        await picker


def _stop_all(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    log.info("stopping...")
    for name, proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                proc.kill()
                proc.wait()
    log.info("stopped")


if __name__ == "__main__":
    main()
