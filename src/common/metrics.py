"""Every business metric's name, help text and labels, defined once.

Two exporters carry them. The worker's come out of the Temporal SDK's Prometheus endpoint
(`FULFILL_WORKER_METRICS_PORT`), beside the SDK's own `temporal_*` metrics: workflow code records through
`workflow.metric_meter()` (replay-safe: the SDK drops what a replay records, so an order counts once) and
activities through `activity.metric_meter()`. The HTTP API's (request latency, webhook events) come out of
prometheus-client on its `/metrics`.

Labels are closed sets (a status, a channel, a reason kind, a carrier): never an order id, a customer's name,
email, phone or address, nor an error's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from common.config import Settings

# Seconds: a pick takes minutes, a delivery days.
_MINUTES_TO_DAYS = (60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400, 7 * 86400, 14 * 86400)
_CENTS = (200, 400, 600, 800, 1000, 1500, 2000, 3000, 5000, 10000)
_HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    kind: Literal["counter", "histogram"]
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def exported(self) -> str:
        """The name Prometheus sees: counters carry `_total` (the runtime is set up so, see prometheus_config)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


# --- worker (Temporal SDK meter) ---------------------------------------------------------------------------------
ORDERS_PLACED = Metric("fulfill_orders_placed", "Orders placed (order workflows started).", "counter")
ORDERS_SHIPPED = Metric(
    "fulfill_orders_shipped", "Orders whose parcels are with the carrier (first IN_TRANSIT or later).", "counter"
)
ORDERS_DELIVERED = Metric("fulfill_orders_delivered", "Orders delivered (first DELIVERED).", "counter")
ORDERS_CANCELLED = Metric("fulfill_orders_cancelled", "Orders closed CANCELLED.", "counter")
ORDERS_FAILED = Metric(
    "fulfill_orders_failed",
    "Orders that failed; reason: needs_ops (parked for ops) or gave_up (closed FAILED).",
    "counter",
    ("reason",),
)
BACKORDERS = Metric("fulfill_backorders", "Orders that had to wait for stock (first BACKORDERED).", "counter")
DELIVERIES = Metric(
    "fulfill_deliveries", "Delivered orders by promise kept; outcome: on_time or late.", "counter", ("outcome",)
)
PICK_SECONDS = Metric(
    "fulfill_pick_seconds",
    "Seconds from pick task creation to confirmation.",
    "histogram",
    (),
    _MINUTES_TO_DAYS,
)
PLACE_TO_SHIP_SECONDS = Metric(
    "fulfill_place_to_ship_seconds", "Seconds from placement to shipped.", "histogram", (), _MINUTES_TO_DAYS
)
PLACE_TO_DELIVERY_SECONDS = Metric(
    "fulfill_place_to_delivery_seconds", "Seconds from placement to delivered.", "histogram", (), _MINUTES_TO_DAYS
)
LABEL_COST_CENTS = Metric(
    "fulfill_label_cost_cents",
    "Cost of each label bought, in cents.",
    "histogram",
    ("carrier",),
    _CENTS,
)
NOTIFICATIONS = Metric(
    "fulfill_notifications",
    "Customer messages by channel (email, sms); outcome: sent or failed (a failed attempt, retried).",
    "counter",
    ("channel", "outcome"),
)
RETURNS = Metric("fulfill_returns", "Return requests (RMAs) opened.", "counter")
REFUNDS = Metric("fulfill_refunds", "Refunds paid back to the customer.", "counter")
STOCK_OUTS = Metric("fulfill_stock_outs", "Order lines short of stock when their order first waited.", "counter")

WORKER_METRICS = (
    ORDERS_PLACED,
    ORDERS_SHIPPED,
    ORDERS_DELIVERED,
    ORDERS_CANCELLED,
    ORDERS_FAILED,
    BACKORDERS,
    DELIVERIES,
    PICK_SECONDS,
    PLACE_TO_SHIP_SECONDS,
    PLACE_TO_DELIVERY_SECONDS,
    LABEL_COST_CENTS,
    NOTIFICATIONS,
    RETURNS,
    REFUNDS,
    STOCK_OUTS,
)

# --- HTTP API (prometheus-client) ----------------------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Metric(
    "fulfill_http_request_seconds",
    "HTTP API request latency by method, route template and status code.",
    "histogram",
    ("method", "route", "status"),
    _HTTP_SECONDS,
)
WEBHOOK_EVENTS = Metric(
    "fulfill_webhook_events",
    "Provider webhooks received; outcome: verified or refused (bad or missing signature).",
    "counter",
    ("provider", "outcome"),
)

API_METRICS = (HTTP_REQUEST_SECONDS, WEBHOOK_EVENTS)
ALL_METRICS = WORKER_METRICS + API_METRICS

# The Temporal SDK's own metrics that deploy/ (alerts, dashboard) uses, as the worker exports them (counters with
# _total, durations in seconds); tests/integration/test_metrics.py checks a real worker exports each.
SDK_METRICS = (
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_activity_schedule_to_start_latency",
    "temporal_workflow_task_execution_latency",
    "temporal_activity_execution_latency",
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    "temporal_sticky_cache_size",
    "temporal_workflow_completed_total",
)


def known_names() -> set[str]:
    """Every name a Prometheus expression may use: exported names, and a histogram's series."""
    names = set(SDK_METRICS) | {m.exported() for m in ALL_METRICS}
    histograms = [m.name for m in ALL_METRICS if m.kind == "histogram"] + [
        n for n in SDK_METRICS if n.endswith("_latency")
    ]
    return names | {f"{h}_{series}" for h in histograms for series in ("bucket", "count", "sum")}


def bucket_overrides() -> dict[str, list[float]]:
    """The SDK's default buckets suit milliseconds: ours are seconds and cents."""
    return {m.name: list(m.buckets) for m in WORKER_METRICS if m.kind == "histogram"}


def count(meter: MetricMeter, metric: Metric, value: int = 1, **labels: str) -> None:
    meter.create_counter(metric.name, metric.help).add(value, labels or None)


def observe(meter: MetricMeter, metric: Metric, value: float, **labels: str) -> None:
    meter.create_histogram_float(metric.name, metric.help).record(value, labels or None)


def observe_duration(meter: MetricMeter, metric: Metric, duration: timedelta, **labels: str) -> None:
    observe(meter, metric, max(duration.total_seconds(), 0.0), **labels)


def count_in_activity(metric: Metric, value: int = 1, **labels: str) -> None:
    """count() on the running activity's meter; nothing outside one (an activity method called directly)."""
    if activity.in_activity():
        count(activity.metric_meter(), metric, value, **labels)


def worker_runtime(settings: Settings) -> Runtime | None:
    """The Temporal runtime with its Prometheus endpoint, when FULFILL_WORKER_METRICS_PORT is set. Made before the
    client (a client's runtime cannot change), one per process."""
    if not settings.worker_metrics_port:
        return None
    prometheus = PrometheusConfig(
        bind_address=f"{settings.worker_metrics_host}:{settings.worker_metrics_port}",
        counters_total_suffix=True,
        durations_as_seconds=True,  # SDK latencies in seconds, as Prometheus expects
        histogram_bucket_overrides=bucket_overrides(),
    )
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))
