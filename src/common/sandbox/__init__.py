"""Local servers that speak the real external APIs (SMTP, Twilio Messages, an EasyPost-shaped carrier), so
the engine's real adapters run in the demo and the tests without reaching the internet."""

from common.sandbox.app import SandboxServers
from common.sandbox.carrier import Progression
from common.sandbox.client import fetch_outbox
from common.sandbox.store import OutboxMessage

__all__ = ["OutboxMessage", "Progression", "SandboxServers", "fetch_outbox"]
