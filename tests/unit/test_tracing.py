"""common.tracing without a server: what is exported of a failure, and that the default installs nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from temporalio.exceptions import ApplicationError

from common.tracing import ScrubbingExporter


def test_a_failures_message_is_not_exported_its_type_is() -> None:
    # A provider's error can quote the address it refused
    inner = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(inner)))
    error = ApplicationError("address 1 Analytical Way, N1 9GU not deliverable", type="AddressRejected")
    try:
        with provider.get_tracer("test").start_as_current_span("RunActivity:buy_label") as span:
            span.set_status(Status(StatusCode.ERROR, f"ApplicationError: {error}"))
            raise error
    except ApplicationError:
        pass
    [exported] = inner.get_finished_spans()
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.status.description == "ApplicationError"
    [event] = exported.events
    assert dict(event.attributes or {}) == {"exception.type": "temporalio.exceptions.ApplicationError"}


def test_by_default_nothing_is_installed() -> None:
    # A fresh interpreter, as a process starts: the global provider is process-wide and set once
    script = textwrap.dedent(
        """
        import os, sys, threading
        from opentelemetry import trace
        from common import tracing
        from common.config import Settings
        from common.http.app import create_app
        from common.http.tracing import RequestSpans

        settings = Settings()
        assert tracing.configure(settings, settings.otel_service_name_worker) is None
        assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        assert tracing.client_interceptors() == []
        assert all(m.cls is not RequestSpans for m in create_app(settings).user_middleware)
        assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" not in sys.modules
        assert [t.name for t in threading.enumerate()] == ["MainThread"], threading.enumerate()
        print("off")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "FULFILL_ENVIRONMENT": "embedded"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stderr
