"""Every setting is an environment variable `FULFILL_<NAME>` (docs/configuration.md lists them all).

Defaults are the embedded stack that `make run` starts: everything on 127.0.0.1, data under `var/`,
durations at demo speed (seconds). Production sets the same variables to real endpoints and hours.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.models import PartialShipment


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FULFILL_", extra="ignore")

    # HTTP API (workers/api.py, started by `make run`): bind address, and the largest request body it reads
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # How long an ops action (cancel, hold...) waits for the order to carry it out before answering 202 (under way)
    api_update_wait: float = Field(default=20.0, gt=0)

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "fulfillment"
    temporal_ui_port: int = 8233

    # Temporal over TLS (common.temporal_tls): the system roots, or temporal_tls_ca_file for a private CA; mTLS
    # with a client cert and key (both or neither). A Temporal Cloud API key goes as `authorization: Bearer`.
    # Any file, the server name or the API key turns TLS on (a key must never cross the network in the clear).
    temporal_tls: bool = False
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None  # the name the server's certificate is checked against (and SNI)
    temporal_api_key: str | None = None

    # "production" (the default) refuses to start a long-running process on sandbox endpoints or default secrets
    # (common.production); the embedded stack (`make run`, the tests) says "embedded".
    environment: Literal["production", "embedded"] = "production"

    # Local state of the embedded stack (Temporal SQLite file, database, sandbox data)
    var_dir: Path = Path("var")

    # Payload encryption (common.crypto): master keys as "id:base64,id:base64", newest first; unset, the key file
    # (default <var_dir>/codec-keys.json, which the embedded stack creates at first use). Customers' data keys
    # live in codec_keystore_url (unset: the engine's database); keeping them in a database of their own with
    # short-lived backups keeps an erased customer's key out of old backups.
    codec_keys: str | None = None
    codec_key_file: Path | None = None
    codec_keystore_url: str | None = None
    # How long a process keeps a data key in memory before reading it again: a customer forgotten elsewhere is
    # unreadable in every process within this many seconds
    codec_key_cache_ttl: float = Field(default=60.0, ge=0)

    # Database: SQLite file by default, PostgreSQL with postgresql+asyncpg://user@host/db
    database_url: str = "sqlite+aiosqlite:///var/fulfill.db"

    # Email (any SMTP relay; the default is the sandbox SMTP server). With a username and password the connection
    # is encrypted first, always: implicit TLS (smtp_use_tls) or STARTTLS, required (a relay without it is an
    # error, never a plaintext AUTH). smtp_starttls: STARTTLS without credentials too.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_tls_ca_file: Path | None = None  # a private relay's CA (PEM); unset: the system roots
    email_from: str = "Fulfillment <orders@fulfill.example>"
    ops_email: str = "ops@fulfill.example"

    # SMS through the twilio SDK; twilio_base_url points it at the sandbox (unset it for real Twilio)
    twilio_account_sid: str = "ACsandbox00000000000000000000000000"
    twilio_auth_token: str = "sandbox-token"
    twilio_from_number: str = "+15555550000"
    twilio_base_url: str | None = "http://127.0.0.1:8026"
    # Twilio's status callbacks (delivered, undelivered, failed) come to the engine's HTTP API, signed with
    # twilio_auth_token; unset, the engine never learns what became of an SMS.
    sms_status_callback_url: str | None = "http://127.0.0.1:8080/v1/webhooks/twilio/status"
    # The answer (a TwiML <Message>) to a customer texting HELP or INFO to the sender number; unset, none. STOP and
    # START are answered with an empty <Response/>: Twilio's opt-out handling sends its own confirmation.
    sms_help_reply: str | None = (
        "Order updates from our shop by text. Questions about an order? Reply to any of our order emails. "
        "Reply STOP to unsubscribe, START to resubscribe. Msg&Data rates may apply."
    )

    # Carrier through the `easypost` SDK (the default is the sandbox carrier, which speaks EasyPost's API)
    carrier_api_base: str = "http://127.0.0.1:8027/v2"
    carrier_api_key: str = "sandbox-key"
    carrier_timeout: float = Field(default=15.0, gt=0)
    # Rate shopping among the rates that deliver by the order's promised date: "cheapest", "fastest", or
    # "preferred" (the cheapest of preferred_carriers that meets it, else the cheapest of all that do)
    rate_strategy: Literal["cheapest", "fastest", "preferred"] = "cheapest"
    preferred_carriers: str = ""  # comma-separated carrier names, e.g. "USPS,UPS"
    # EasyPost tracker.updated webhooks are signed with this secret (the webhook's "webhook_secret"). Set, the
    # carrier pushes tracking and polling slows to a safety net every tracking_safety_poll_interval seconds.
    carrier_webhook_secret: str | None = "sandbox-webhook-secret"
    tracking_safety_poll_interval: float = Field(default=6 * 3600, gt=0)

    # The address providers call the HTTP API at (webhooks are signed over the URL as the provider called it),
    # e.g. https://fulfill.example.com behind a proxy; unset, the URL of the request as it arrived.
    api_public_url: str | None = None

    # Email templates: a folder whose files replace the built-in templates of the same name
    # (src/common/messages/templates), read when the worker starts
    email_templates_dir: Path | None = None
    # The brand in the emails' header and footer: its name (unset: the display name of email_from) and colour
    email_brand_name: str | None = None
    email_brand_colour: str = Field(default="#1f4e79", pattern=r"^#[0-9a-fA-F]{6}$")

    # 3PL: a fulfillment provider that holds stock, picks, packs and ships for us, through a ShipBob-shaped API
    # (the default is the sandbox 3PL). threepl_api_base includes the API version, e.g. .../2.0.
    threepl_api_base: str = "http://127.0.0.1:8029/2.0"
    threepl_api_token: str = "sandbox-3pl-token"
    # The 3PL's sales channel our orders are created in (ShipBob's `shipbob_channel_id` header)
    threepl_channel_id: str = "100100"
    # The 3PL's webhooks are signed with this Standard Webhooks secret (`whsec_` + base64 of the key); unset, every
    # webhook is refused. The sandbox 3PL signs with it.
    threepl_webhook_secret: str | None = "whsec_ZnVsZmlsbC1zYW5kYm94LTNwbC13ZWJob29rcy1rZXk="
    threepl_timeout: float = Field(default=15.0, gt=0)
    # Every worker asks each 3PL every this many seconds for the orders it changed since the last pull, for news a
    # lost webhook did not bring (0 disables it). The SLAs: see the order timing policy below.
    threepl_reconcile_interval: float = Field(default=300.0, ge=0)
    # 3PL inventory sync: every provider's stock levels are pulled this often (a Temporal schedule per provider,
    # `threepl-inventory-sync-<provider>`) and on its inventory webhooks; a run whose differences add up to more
    # than threepl_discrepancy_alert_units units emails ops one discrepancy alert.
    threepl_inventory_sync_interval: float = Field(default=900, gt=0)
    threepl_discrepancy_alert_units: int = Field(default=5, ge=0)

    # Sandbox servers started by `make run` and the tests
    sandbox_host: str = "127.0.0.1"
    sandbox_smtp_port: int = 8025
    sandbox_http_port: int = 8026
    sandbox_carrier_port: int = 8027
    # Seconds after label purchase at which the sandbox tracker reaches each status
    sandbox_in_transit_after: float = 3.0
    sandbox_out_for_delivery_after: float = 6.0
    sandbox_delivered_after: float = 9.0
    # Where the sandbox carrier posts its signed tracker.updated events, and the sandbox SMS server its inbound
    # messages (STOP, START, HELP): the engine's HTTP API. Unset, they are not sent.
    sandbox_carrier_webhook_url: str | None = "http://127.0.0.1:8080/v1/webhooks/easypost"
    sandbox_sms_inbound_url: str | None = "http://127.0.0.1:8080/v1/webhooks/twilio/inbound"
    # The sandbox 3PL: its port, where it posts its signed webhooks (unset: nowhere), and how fast it works: an
    # accepted order ships ship_after seconds after it was accepted (or released from a hold), and is delivered
    # deliver_after seconds after it shipped. The stock it starts with, as SKU=units pairs ("MUG-RED=40,MUG-BLUE=5"),
    # for the SKUs it has no level of yet (a restarted sandbox keeps its own levels).
    sandbox_threepl_port: int = 8029
    # The engine's POST /v1/webhooks/3pl/shipbob; make run points it at its own HTTP API, wherever that listens
    sandbox_threepl_webhook_url: str | None = "http://127.0.0.1:8080/v1/webhooks/3pl/shipbob"
    sandbox_threepl_ship_after: float = Field(default=5.0, ge=0)
    sandbox_threepl_deliver_after: float = Field(default=5.0, ge=0)
    sandbox_threepl_stock: str = ""

    # Order timing policy, handed to each order workflow when it is placed (seconds)
    tracking_poll_interval: float = Field(default=2.0, gt=0)
    tracking_timeout: float = Field(default=30 * 24 * 3600, gt=0)
    backorder_recheck_interval: float = Field(default=3600, gt=0)
    backorder_max_wait: float = Field(default=14 * 24 * 3600, gt=0)
    pick_escalate_after: float = Field(default=4 * 3600, gt=0)
    pick_customer_delay_after: float = Field(default=24 * 3600, gt=0)
    delivery_delay_grace: float = Field(default=3600, ge=0)
    delivery_exception_timeout: float = Field(default=7 * 24 * 3600, gt=0)
    partial_shipment: PartialShipment = PartialShipment.WAIT_FOR_ALL
    return_window: float = Field(default=30 * 24 * 3600, ge=0)
    return_transit_timeout: float = Field(default=14 * 24 * 3600, gt=0)
    address_fix_timeout: float = Field(default=7 * 24 * 3600, gt=0)
    failed_wait: float = Field(default=7 * 24 * 3600, gt=0)
    return_receive_timeout: float = Field(default=30 * 24 * 3600, gt=0)
    # A 3PL parcel: the 3PL's SLAs to accept it after submission and to ship it after accepting it (new orders keep
    # them; `fulfill 3pl parcels` flags the late), and how often the order asks the 3PL for news a webhook did not
    # bring.
    threepl_accept_sla: float = Field(default=4 * 3600, gt=0)
    threepl_ship_sla: float = Field(default=48 * 3600, gt=0)
    threepl_poll_interval: float = Field(default=3600, gt=0)

    # Simulated picker (demo only): confirms open pick tasks after this many seconds
    picker_enabled: bool = True
    picker_delay: float = Field(default=3.0, ge=0)

    # Worker tuning. The sticky cache holds this many orders in memory; beyond it the least recently used is
    # evicted and replayed from its history when it next wakes (bounds the worker's memory).
    worker_graceful_shutdown: float = 10.0
    worker_max_cached_workflows: int = Field(default=1000, ge=1)
    # Slots per task kind (unset: the SDK default, 100 each). One Python process runs all of them on one core.
    # Workflow tasks: 20, not 100. A workflow task runs its local activities (DB steps, messages); with too many
    # at once each takes long enough for the SDK to heartbeat it, an extra workflow task per order
    # (docs/performance.md, "Why the worker is tuned as it is").
    worker_max_concurrent_workflow_tasks: int | None = Field(default=20, ge=2)
    # Of the workflow task slots, at most this many run the next task of an order this worker already holds (its
    # sticky queue); the others wait for new orders' first tasks, so a rush of orders is confirmed first
    # (docs/performance.md, "Flash sale"). Unset: no limit.
    worker_sticky_task_slots: int | None = Field(default=10, ge=1)
    worker_max_concurrent_activities: int | None = Field(default=None, ge=1)
    # Local activities: 10, fewer than the workflow tasks that issue them. The SDK's core hands Python the
    # next local activity before any regular one (a biased select): without the cap, tracking polls already
    # started on the server wait behind a stream of local activities until they time out.
    worker_max_concurrent_local_activities: int | None = Field(default=10, ge=1)
    # Task pollers (workflow and activity tasks each): "autoscale" lets the server's backlog hints add pollers
    # (up to 100) while tasks queue up; a number is a fixed maximum. A few fixed pollers leave new orders and
    # tracking polls queued on a worker with free slots.
    worker_task_pollers: Literal["autoscale"] | int = Field(default="autoscale")
    # Worker Deployments (worker versioning, docs/rollouts.md): the worker polls as version
    # <deployment name>.<build id>, and a new version gets work once `temporal worker deployment
    # set-current-version` makes it current. Unset: unversioned, as before. Both or neither.
    worker_deployment_name: str | None = None
    worker_build_id: str | None = None

    # Tracing (OpenTelemetry, common.tracing): unset endpoint = off, no exporter and no tracing interceptor.
    # An OTLP/HTTP (protobuf) collector's base URL, e.g. http://collector:4318: spans go to <it>/v1/traces.
    otel_exporter_otlp_endpoint: str | None = None
    # service.name of each process's spans; the trace view tells the HTTP API from the worker by it
    otel_service_name_api: str = "fulfill-api"
    otel_service_name_worker: str = "fulfill-worker"
    otel_service_name_cli: str = "fulfill-cli"

    # Metrics (docs/operations.md, "Metrics"). The worker's Prometheus endpoint (the Temporal SDK's metrics and
    # the business ones, common.metrics) on host:port/metrics; 0 turns it off (the embedded stack uses 9464).
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # The HTTP API's /metrics (request latencies, webhook events): no API key, as Prometheus scrapes without one
    # and it holds no customer data; false removes the route (e.g. when the API faces the internet).
    api_metrics_enabled: bool = True

    # Order-signal outbox: messages to orders written with the change they report (a count releasing a parcel,
    # a pick confirmed) are delivered at once; every worker also runs a relay that delivers what is still
    # pending (e.g. written while the engine was unreachable) every this many seconds. 0 disables the relay.
    order_signal_relay_interval: float = Field(default=5.0, ge=0)
    # The sweeper: every this many seconds, what orders closed without compensating (terminated) still hold is
    # given back; its first round looks back sweep_lookback seconds. 0 disables it.
    sweep_interval: float = Field(default=300.0, ge=0)
    sweep_lookback: float = Field(default=7 * 24 * 3600, gt=0)

    # Payments (refunds of returns). No provider: every refund is declined and waits for ops, so production
    # never tells a customer about a refund that did not happen. "stripe": the Stripe adapter; stripe_api_base
    # None is real Stripe (the embedded stack points it at the sandbox payments server).
    payments_provider: Literal["stripe"] | None = None
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    # The sandbox payments server (Stripe's Refunds API) and the one API key it accepts
    sandbox_payments_port: int = 8028
    sandbox_payments_api_key: str = "sk_test_sandbox"

    # Codec server (common.http.codec, /codec on the HTTP API): decodes payloads for the Web UI and
    # `temporal --codec-endpoint`, for an API key of scope ops. The Web UI origins a browser may call it from
    # (CORS with credentials), comma-separated, e.g. "https://temporal.example.com"; unset, the embedded Web
    # UI's http://127.0.0.1:<temporal_ui_port> and http://localhost:<temporal_ui_port>.
    codec_cors_origins: str | None = None
    # How long the browser cookie of /codec/login lasts (seconds): an ops person pastes their key again after it
    codec_cookie_max_age: int = Field(default=8 * 3600, ge=60)

    @model_validator(mode="after")
    def _pairs_complete(self) -> Settings:
        # Half a pair is a typo or a forgotten secret: say so at start, not as a TLS or AUTH failure later
        pairs = [
            ("temporal_tls_cert_file", "temporal_tls_key_file", "an mTLS client certificate needs its key"),
            ("smtp_username", "smtp_password", "SMTP AUTH needs both"),
            ("worker_deployment_name", "worker_build_id", "a worker deployment version is a name and a build id"),
        ]
        for first, second, why in pairs:
            if (getattr(self, first) is None) != (getattr(self, second) is None):
                given, missing = (first, second) if getattr(self, first) is not None else (second, first)
                raise ValueError(
                    f"FULFILL_{given.upper()} is set but FULFILL_{missing.upper()} is not: set both "
                    f"FULFILL_{first.upper()} and FULFILL_{second.upper()}, or neither ({why})"
                )
        return self

    @field_validator("sandbox_threepl_stock")
    @classmethod
    def _stock_levels(cls, value: str) -> str:
        parse_stock_levels(value)  # ValueError names the pair that is wrong
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object, info: ValidationInfo) -> object:
        """`FULFILL_TWILIO_BASE_URL=` (empty) means "not set", e.g. real Twilio instead of the sandbox."""
        field = cls.model_fields.get(info.field_name or "")
        if value != "" or field is None or field.is_required():
            return value
        return None if _is_optional(field.annotation) else field.default


def parse_stock_levels(text: str) -> dict[str, int]:
    """The levels of "MUG-RED=40, MUG-BLUE=5": {"MUG-RED": 40, "MUG-BLUE": 5}; ValueError for a pair not SKU=units."""
    levels: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        sku, sep, units = (part.strip() for part in pair.partition("="))
        if not sep or not sku or not units.isdigit():
            raise ValueError(f"{pair!r} is not SKU=units (e.g. MUG-RED=40)")
        levels[sku] = int(units)
    return levels


def _is_optional(annotation: object) -> bool:
    return type(None) in getattr(annotation, "__args__", ())


@lru_cache
def get_settings() -> Settings:
    return Settings()
