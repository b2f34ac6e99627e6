"""The 3PLs this engine is configured for, by the provider name a warehouse of kind "3pl" names (warehouses.provider).
One provider for now (ShipBob's API, FULFILL_THREEPL_*); a second is one more entry here."""

from __future__ import annotations

from common.config import Settings
from common.integrations.shipbob import ShipBobClient
from common.integrations.threepl_api import ThreePLError, ThreePLProvider

SHIPBOB = "shipbob"
PROVIDER_NAMES = (SHIPBOB,)


class UnknownThreePLProvider(ThreePLError):
    """A warehouse names a 3PL this engine has no client for."""

    def __init__(self, provider: str, known: list[str]) -> None:
        self.provider = provider
        super().__init__(f"unknown 3PL provider {provider!r} (configured: {', '.join(known) or 'none'})")


def threepl_providers(settings: Settings) -> dict[str, ThreePLProvider]:
    """A client per configured 3PL (close each when done)."""
    return {SHIPBOB: ShipBobClient(settings)}


def provider_for(providers: dict[str, ThreePLProvider], name: str) -> ThreePLProvider:
    try:
        return providers[name]
    except KeyError:
        raise UnknownThreePLProvider(name, sorted(providers)) from None
