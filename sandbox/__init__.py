"""Local servers that speak the real external APIs (SMTP, Twilio Messages, EasyPost's carrier API, Stripe's
Refunds API), so the engine's real adapters run in the demo and the tests without reaching the internet."""

from sandbox.app import SandboxServers, free_port_settings
from sandbox.carrier import Progression
from sandbox.client import (
    OutageInfo,
    SandboxError,
    SandboxRefused,
    SandboxUnreachable,
    end_outage,
    fetch_outbox,
    list_outages,
    start_outage,
    text_from,
)
from sandbox.outages import SERVICES
from sandbox.store import OutboxMessage

__all__ = [
    "SERVICES",
    "OutageInfo",
    "OutboxMessage",
    "Progression",
    "SandboxError",
    "SandboxRefused",
    "SandboxServers",
    "SandboxUnreachable",
    "end_outage",
    "fetch_outbox",
    "free_port_settings",
    "list_outages",
    "start_outage",
    "text_from",
]
