"""`SandboxServers`: the SMTP server, the Twilio-shaped HTTP server, the carrier, payments and the 3PL, in the
current loop."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from common.config import Settings, parse_stock_levels
from sandbox.carrier import CarrierSandbox, Progression
from sandbox.carrier_webhooks import SentEvent, WebhookConfig
from sandbox.outages import OutageControl, Outages
from sandbox.payments import PaymentsSandbox
from sandbox.sms import DEFAULT_OPTED_OUT, TwilioSandbox
from sandbox.smtp import SandboxSmtpServer
from sandbox.store import OutboxMessage, SandboxStore
from sandbox.threepl import ThreePLSandbox
from sandbox.threepl_orders import Pace
from sandbox.threepl_webhooks import SentEvent as ThreePLSentEvent
from sandbox.threepl_webhooks import WebhookConfig as ThreePLWebhookConfig
from sandbox.webhook_delivery import LOCAL_HOSTS

log = logging.getLogger("fulfill.sandbox")

WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
# The engine's Twilio webhooks (common/http/sms_webhooks.py), the sandbox speaking to it as Twilio would
SMS_STATUS_PATH = "/v1/webhooks/twilio/status"
SMS_INBOUND_PATH = "/v1/webhooks/twilio/inbound"
CARRIER_WEBHOOK_PATH = "/v1/webhooks/easypost"
# The engine's 3PL webhooks (common/http/threepl_webhooks.py), the sandbox 3PL speaking to it as ShipBob would
THREEPL_WEBHOOK_PATH = "/v1/webhooks/3pl/shipbob"
# The ShipBob API version the sandbox 3PL is addressed with (it answers any)
THREEPL_API_VERSION = "2.0"


def free_port_settings(**changes: Any) -> Settings:
    """Settings for sandbox servers on ports the system picks, posting no webhooks unless `changes` say where:
    for sandboxes that run beside others (tests, benchmarks, recording histories)."""
    quiet: dict[str, Any] = {
        "sandbox_smtp_port": 0,
        "sandbox_http_port": 0,
        "sandbox_carrier_port": 0,
        "sandbox_payments_port": 0,
        "sandbox_threepl_port": 0,
        "sandbox_carrier_webhook_url": None,
        "sandbox_sms_inbound_url": None,
        "sandbox_threepl_webhook_url": None,
    }
    return Settings(**{**quiet, **changes})


class SandboxServers:
    """Local stand-ins for the SMTP relay, Twilio, the carrier, Stripe and a 3PL, sharing one SQLite file.

    Ports of 0 in the settings bind ephemeral ports; the bound ones are `smtp_port`, `http_port`,
    `carrier_port`, `payments_port` and `threepl_port` once started, and `settings_for_clients()` points the
    engine's adapters at them. Each service can be put into an outage and back (`start_outage`, also over HTTP:
    outages.py).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db_path: str | Path | None = None,
        opted_out: Iterable[str] = DEFAULT_OPTED_OUT,
        in_transit_after: float | None = None,
        out_for_delivery_after: float | None = None,
        delivered_after: float | None = None,
        sms_callback_delays: tuple[float, float] = (0.1, 0.3),
        carrier_webhooks: bool = True,
    ) -> None:
        self.settings = settings
        self.db_path = db_path if db_path is not None else settings.var_dir / "sandbox.db"
        self.host = settings.sandbox_host
        # Where clients connect: a wildcard bind is reached through loopback
        self.client_host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        self._url_host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host  # IPv6
        self.smtp_port = settings.sandbox_smtp_port
        self.http_port = settings.sandbox_http_port
        self.carrier_port = settings.sandbox_carrier_port
        self.payments_port = settings.sandbox_payments_port
        self.threepl_port = settings.sandbox_threepl_port
        self._outages = Outages()
        self._opted_out = opted_out
        self._sms_callback_delays = sms_callback_delays
        # Tracker webhooks go to settings.sandbox_carrier_webhook_url (unset: nowhere); False: listed, not sent
        self._carrier_webhooks = carrier_webhooks
        self.progression = Progression(
            in_transit_after=_pick(in_transit_after, settings.sandbox_in_transit_after),
            out_for_delivery_after=_pick(out_for_delivery_after, settings.sandbox_out_for_delivery_after),
            delivered_after=_pick(delivered_after, settings.sandbox_delivered_after),
        )
        self._store: SandboxStore | None = None
        self._smtp: SandboxSmtpServer | None = None
        self._twilio: TwilioSandbox | None = None
        self._carrier: CarrierSandbox | None = None
        self._payments: PaymentsSandbox | None = None
        self._threepl: ThreePLSandbox | None = None
        self._runners: list[web.AppRunner] = []

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        self._store = store = SandboxStore(self.db_path)

        self._smtp = SandboxSmtpServer(
            store,
            self.host,
            self.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            outages=self._outages,
        )
        await self._smtp.start()
        self.smtp_port = self._smtp.port

        http_app = web.Application()
        self._twilio = TwilioSandbox(
            store,
            account_sid=s.twilio_account_sid,
            auth_token=s.twilio_auth_token,
            host=self.client_host,
            opted_out=self._opted_out,
            callback_delays=self._sms_callback_delays,
            outages=self._outages,
            number=s.twilio_from_number,
            inbound_url=s.sandbox_sms_inbound_url,
        )
        self._twilio.add_routes(http_app)
        OutageControl(self._outages).add_routes(http_app)
        http_app.router.add_get("/outbox", self._outbox_handler)
        http_app.router.add_get("/healthz", _healthz)
        self.http_port = await self._serve(http_app, self.http_port)

        carrier_app = web.Application()
        self._carrier = CarrierSandbox(
            store,
            api_key=s.carrier_api_key,
            progression=self.progression,
            outages=self._outages,
            webhook_url=s.sandbox_carrier_webhook_url,
            webhook_secret=s.carrier_webhook_secret,
            webhooks_enabled=self._carrier_webhooks,
            local_hosts=LOCAL_HOSTS | {self.host, self.client_host},
        )
        self._carrier.add_routes(carrier_app)
        carrier_app.router.add_get("/healthz", _healthz)
        self.carrier_port = await self._serve(carrier_app, self.carrier_port)
        self._carrier.public_base = self.carrier_url

        payments_app = web.Application()
        self._payments = PaymentsSandbox(store, api_key=s.sandbox_payments_api_key, outages=self._outages)
        self._payments.add_routes(payments_app)
        payments_app.router.add_get("/healthz", _healthz)
        self.payments_port = await self._serve(payments_app, self.payments_port)
        await self._start_threepl(store)

    async def _start_threepl(self, store: SandboxStore) -> None:
        s = self.settings
        threepl_app = web.Application()
        self._threepl = ThreePLSandbox(
            store,
            token=s.threepl_api_token,
            channel_id=s.threepl_channel_id,
            pace=Pace(ship_after=s.sandbox_threepl_ship_after, deliver_after=s.sandbox_threepl_deliver_after),
            outages=self._outages,
            webhook_url=s.sandbox_threepl_webhook_url,
            webhook_secret=s.threepl_webhook_secret,
            stock=parse_stock_levels(s.sandbox_threepl_stock),
            local_hosts=LOCAL_HOSTS | {self.host, self.client_host},
        )
        self._threepl.add_routes(threepl_app)
        threepl_app.router.add_get("/healthz", _healthz)
        self.threepl_port = await self._serve(threepl_app, self.threepl_port)
        self._threepl.public_base = self.threepl_url

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.host, port).start()
        bound: int = runner.addresses[0][1]
        return bound

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._smtp is not None:
            await self._smtp.stop()
            self._smtp = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """Base URL of the Twilio-shaped server (also serves /outbox and /sms/status)."""
        return f"http://{self._url_host}:{self.http_port}"

    @property
    def carrier_url(self) -> str:
        return f"http://{self._url_host}:{self.carrier_port}"

    @property
    def carrier_api_base(self) -> str:
        return f"{self.carrier_url}/v2"

    @property
    def payments_url(self) -> str:
        """Base URL of the Stripe-shaped server (the SDK's api base: it adds /v1/...)."""
        return f"http://{self._url_host}:{self.payments_port}"

    @property
    def threepl_url(self) -> str:
        return f"http://{self._url_host}:{self.threepl_port}"

    @property
    def threepl_api_base(self) -> str:
        """What the ShipBob adapter is pointed at (`threepl_api_base`: the URL with the API version)."""
        return f"{self.threepl_url}/{THREEPL_API_VERSION}"

    def settings_for_clients(self, base: Settings | None = None, *, engine_url: str | None = None) -> Settings:
        """A copy of `base` (default: the sandbox's settings) whose adapters talk to this running sandbox. SMS
        status callbacks go to the engine's HTTP API at `engine_url` (e.g. http://127.0.0.1:8080) when one runs
        there, else to the sandbox's own sink (/sms/status), never to a default address where some other
        engine may listen."""
        base = base if base is not None else self.settings
        callbacks = f"{engine_url.rstrip('/')}{SMS_STATUS_PATH}" if engine_url else f"{self.http_url}/sms/status"
        return base.model_copy(
            update={
                "smtp_host": self.client_host,
                "smtp_port": self.smtp_port,
                "smtp_starttls": False,
                "smtp_use_tls": False,
                "twilio_base_url": self.http_url,
                "sms_status_callback_url": callbacks,
                "carrier_api_base": self.carrier_api_base,
                "threepl_api_base": self.threepl_api_base,
                # The real Stripe adapter, pointed at this sandbox
                "payments_provider": "stripe",
                "stripe_api_key": self.settings.sandbox_payments_api_key,
                "stripe_api_base": self.payments_url,
                # So that `fulfill outbox` (which reads sandbox_host/sandbox_http_port) finds this sandbox.
                "sandbox_host": self.client_host,
                "sandbox_smtp_port": self.smtp_port,
                "sandbox_http_port": self.http_port,
                "sandbox_carrier_port": self.carrier_port,
                "sandbox_payments_port": self.payments_port,
                "sandbox_threepl_port": self.threepl_port,
            }
        )

    def describe(self) -> str:
        return (
            f"smtp={self.client_host}:{self.smtp_port} twilio={self.http_url} "
            f"outbox={self.http_url}/outbox carrier={self.carrier_api_base} payments={self.payments_url} "
            f"3pl={self.threepl_api_base} "
            f"outages={self.http_url}/_sandbox/outages db={self.db_path}"
        )

    # -- in-process inspection and test controls ------------------------------------------------------------

    @property
    def store(self) -> SandboxStore:
        if self._store is None:
            raise RuntimeError("sandbox not started")
        return self._store

    @property
    def carrier(self) -> CarrierSandbox:
        if self._carrier is None:
            raise RuntimeError("sandbox not started")
        return self._carrier

    @property
    def payments(self) -> PaymentsSandbox:
        if self._payments is None:
            raise RuntimeError("sandbox not started")
        return self._payments

    @property
    def threepl(self) -> ThreePLSandbox:
        """The sandbox 3PL and its test controls (inject_fault, set_stock, refuse_next, hold_next, act, configure,
        orders, webhooks)."""
        if self._threepl is None:
            raise RuntimeError("sandbox not started")
        return self._threepl

    def threepl_stock(self, levels: dict[str, int] | None = None) -> list[dict[str, Any]]:
        """The 3PL's inventory levels (as its API shows them), after setting `levels` (SKU -> units on hand) if
        given: stock in, a recount, drift; no order involved."""
        if levels is None:
            return self.threepl.warehouse.inventory()
        return self.threepl.set_stock(levels)

    def threepl_webhooks(self, **changes: Any) -> ThreePLWebhookConfig:
        """The 3PL's webhook settings, after `changes`: enabled, url, secret, drop_next, duplicate_next,
        reorder_next (counts of the next events to drop, send twice, hold and send in reverse), retry_delays."""
        return self.threepl.webhooks.configure(**changes)

    def threepl_events(self, reference_id: str | None = None) -> list[ThreePLSentEvent]:
        """Every webhook event the 3PL made (optionally of one order), oldest first, with its delivery."""
        return self.threepl.webhooks.events(reference_id)

    def refunds(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        """Every refund the payments sandbox made (optionally for one PaymentIntent), as Stripe shows it,
        oldest first."""
        return self.payments.refunds(payment_intent)

    def start_outage(self, service: str, seconds: float | None = None) -> None:
        """Put `service` (smtp, sms, carrier, payments, 3pl) into an outage for `seconds` (None: until ended).
        ValueError for an unknown service or a duration that is not a positive number."""
        self._outages.start(service, seconds)

    def end_outage(self, service: str) -> bool:
        """End the outage of `service`; False if it had none. ValueError for an unknown service."""
        return self._outages.end(service)

    def outages(self) -> dict[str, float | None]:
        """The active outages: service -> wall-clock end (time.time() scale; None: until ended)."""
        return self._outages.snapshot()

    @property
    def twilio(self) -> TwilioSandbox:
        if self._twilio is None:
            raise RuntimeError("sandbox not started")
        return self._twilio

    def point_inbound_at(self, url: str | None) -> None:
        """Where customers' texts are posted from now on (the engine's inbound webhook); None: nowhere."""
        self.twilio.inbound_url = url

    def outbox(self, order_id: str | None = None) -> list[OutboxMessage]:
        """Every email and SMS received (optionally for one order), oldest first."""
        return self.store.messages(order_id)

    def shipments(self) -> list[dict[str, Any]]:
        """Every carrier shipment as the API shows it (refund_status, tracker, postage_label...)."""
        return self.carrier.shipments()

    def inject_fault(
        self,
        operation: str,
        fail_next: int = 1,
        status: int | None = 503,
        code: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `fail_next` calls of a carrier operation (create_shipment, get_shipment, buy, refund,
        tracker, create_tracker) wait `delay` seconds, then fail with `status` (status None: answer normally
        after it)."""
        self.carrier.inject_fault(operation, fail_next, status, code, message, delay)

    def clear_faults(self) -> None:
        self.carrier.clear_faults()

    def force_tracker_status(
        self, tracking_code: str, status: str | None, message: str | None = None
    ) -> dict[str, Any]:
        """Hold a tracker at `status` (e.g. "failure"); None or "auto" resumes the automatic progression."""
        return self.carrier.force_tracker_status(tracking_code, status, message)

    def carrier_webhooks(self, **changes: Any) -> WebhookConfig:
        """The carrier's webhook settings, after `changes`: enabled (bool), url, secret, drop_next and
        duplicate_next (counts of the next events to drop or send twice), retry_delays (seconds)."""
        return self.carrier.webhooks.configure(**changes)

    def carrier_events(self, tracking_code: str | None = None) -> list[SentEvent]:
        """Every tracker Event the carrier made (optionally of one tracking code), oldest first, with how its
        delivery went."""
        return self.carrier.webhooks.events(tracking_code)

    async def _outbox_handler(self, request: web.Request) -> web.Response:
        messages = self.outbox(request.query.get("order_id"))
        return web.json_response({"messages": [m.model_dump(mode="json") for m in messages]})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _pick(override: float | None, default: float) -> float:
    return default if override is None else override
