"""The catalogue's records, import rows and refusals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from common.db.errors import StoreError


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    weight_grams: int
    created_at: datetime
    lead_time_days: int | None = None  # supplier lead time; None: the planning default
    dimensions_mm: tuple[int, int, int] | None = None  # length, width, height


class WarehouseKind(StrEnum):
    OWN = "own"  # our staff pick and pack, we buy the label
    THREEPL = "3pl"  # a 3PL (its `provider`) picks, packs and ships from it


@dataclass(frozen=True)
class Warehouse:
    code: str
    name: str
    country: str
    region: str | None
    kind: WarehouseKind = WarehouseKind.OWN
    provider: str | None = None  # the 3PL of a 3pl warehouse


@dataclass(frozen=True)
class ProductImport:
    row: int  # line in the source file, for error messages
    sku: str
    name: str
    price_cents: int
    weight_grams: int
    dimensions_mm: tuple[int, int, int] | None = None
    lead_time_days: int | None = None


@dataclass(frozen=True)
class WarehouseImport:
    row: int
    code: str
    name: str
    country: str
    region: str | None
    kind: WarehouseKind = WarehouseKind.OWN
    provider: str | None = None


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


# Seed rows for `StockStore.seed_catalogue`: (sku, name, price_cents, weight_grams), (code, name, country, region),
# (sku, warehouse, on_hand).
ProductSeed = tuple[str, str, int, int]
WarehouseSeed = tuple[str, str, str, str | None]
StockSeed = tuple[str, str, int]


class UnknownSkuError(StoreError):
    def __init__(self, skus: Sequence[str]) -> None:
        self.skus = sorted(skus)
        listed = ", ".join(repr(s) for s in self.skus)
        noun = "SKU" if len(self.skus) == 1 else "SKUs"
        super().__init__(f"unknown {noun} {listed}: not in the product catalogue")


class UnknownWarehouseError(StoreError):
    def __init__(self, code: str | None, known: Sequence[str]) -> None:
        self.code = code
        self.known = list(known)
        if code is None:
            super().__init__("no warehouses are defined: add one first")
        else:
            super().__init__(f"unknown warehouse {code!r} (known: {', '.join(known) or 'none'})")


class InvalidRows(StoreError):
    """Rows of an import that cannot be written; nothing was written. `problems` lists them all."""

    def __init__(self, problems: Sequence[str], what: str = "imported") -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        listing = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} {noun}, nothing was {what}:{listing}")
