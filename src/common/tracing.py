"""OpenTelemetry tracing, off unless FULFILL_OTEL_EXPORTER_OTLP_ENDPOINT is set.

Each process calls `configure(settings, service_name)` once at start; from then on every Temporal client made by
common.privacy.connect carries a `TracingInterceptor` (and so does every worker built from such a client: the
SDK reuses a client's interceptors for its workers), and the HTTP API wraps each request in a span
(common.http.tracing). One order's trace then runs from `POST /v1/orders` through StartWorkflow, RunWorkflow and
every StartActivity/RunActivity, local activities included.

Off (the default), nothing is installed: no TracerProvider, no exporter, no interceptor, no middleware.

Spans carry ids only (workflow, run and activity ids, the HTTP route template), never payloads. Exception
messages can quote a provider's error, and with it a customer's address (the reason failures are encrypted in
Temporal): the exporter drops them, keeping the exception's type (ScrubbingExporter).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, Tracer
from temporalio.client import Interceptor

from common.config import Settings

INSTRUMENTATION = "fulfillment-engine"

_provider: TracerProvider | None = None


def configure(settings: Settings, service_name: str, *, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install this process's TracerProvider, exporting to the OTLP endpoint, once; None while tracing is off.
    `exporter` replaces the OTLP one (tests: an in-memory exporter) and turns tracing on by itself."""
    global _provider
    if _provider is not None:
        return _provider
    endpoint = settings.otel_exporter_otlp_endpoint
    if exporter is None and not endpoint:  # empty counts as unset: `FULFILL_..._ENDPOINT=` in a manifest
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # only when on

        assert endpoint
        # An explicit endpoint is the full URL; the OTLP convention is a base URL plus the signal's path
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # Batched in a thread of its own: a span costs the event loop a queue append, not an export
    provider.add_span_processor(BatchSpanProcessor(ScrubbingExporter(exporter)))
    trace.set_tracer_provider(provider)  # also for libraries that trace through the global provider
    _provider = provider
    return provider


def tracer() -> Tracer | None:
    """The engine's tracer, None while tracing is off."""
    return None if _provider is None else _provider.get_tracer(INSTRUMENTATION)


def client_interceptors() -> list[Interceptor]:
    """What a Temporal client needs for tracing: one TracingInterceptor, or nothing while tracing is off. Give
    it to the client only; a worker built from the client picks it up (registering it twice doubles spans)."""
    if (engine_tracer := tracer()) is None:
        return []
    # Imported when on only: it loads the SDK's whole OpenTelemetry integration (~80 ms at every CLI start)
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(engine_tracer)]


def force_flush() -> None:
    """Export the spans still queued: tests, and the HTTP API's shutdown (a worker or a CLI command exiting
    normally flushes by itself; uvicorn's process dies by its signal, skipping exit hooks)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Export what is queued and turn tracing off for clients and apps made from now on (tests). The global
    provider stays: OpenTelemetry sets it once per process."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def _scrubbed(span: ReadableSpan) -> ReadableSpan:
    events = [
        Event(e.name, {k: v for k, v in (e.attributes or {}).items() if k == "exception.type"}, e.timestamp)
        if e.name == "exception"
        else e
        for e in span.events
    ]
    status = span.status
    if status.description:  # "ApplicationError: <message>": the type only
        status = Status(status.status_code, status.description.split(":", 1)[0])
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingExporter(SpanExporter):
    """`inner`, fed spans without exception messages."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
