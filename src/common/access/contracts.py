"""API keys and their scopes: what a caller of the HTTP API may do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from common.db.errors import StoreError


class Scope(StrEnum):
    INTAKE = "intake"  # place orders (a storefront), and follow the orders it placed
    OPS = "ops"  # act on orders, returns and stock; read everything
    WAREHOUSE = "warehouse"  # pick tasks, returned parcels, stock receipts and counts
    READ = "read"  # read orders, picks and stock


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `secret` is the whole key the caller sends, shown once and never stored."""

    key: ApiKey
    secret: str


class ApiKeyError(StoreError):
    pass
