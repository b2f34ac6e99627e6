"""A 3PL's stock levels against our books: each difference becomes a stock count to the 3PL's figure.

The 3PL holds the goods, so its `on_hand` per SKU is the truth for the warehouse it runs; our books follow it.
One sync is for one provider and the warehouse it runs (a warehouse of kind "3pl" whose `provider` names it).
If two warehouses name the same provider, the 3PL's account cannot tell us which of them holds what: only the
first by code is synced, the others are reported in `not_synced` (give each its own provider account).

Compared are the SKUs booked at that warehouse (a stock row) and those the 3PL lists:
- a SKU where the two differ is counted to the 3PL's figure through the counts mechanism
  (`StockCountStore.count_stock`, reason `3pl_sync`: ledger kind "count", note "count: 3pl_sync", ref
  `3pl_sync:<provider>`): the difference is one ledger row, and a fall below what is reserved releases the
  newest unpicked reservations in the same transaction, as a shelf count does;
- a SKU we book that the 3PL does not list: the 3PL has none of it, so it is counted to 0;
- a SKU the 3PL lists that our catalogue does not know: reported in `unknown_skus`, nothing is changed.
A second run with the same levels changes nothing (equal figures are not counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field, computed_field

from common.db.errors import StoreError
from common.integrations.threepl_api import ThreePLStock
from common.inventory.contracts import StockChange
from common.models import OpsAlert
from common.store import Store

SYNC_REASON = "3pl_sync"
DISCREPANCY_KIND = "3pl_inventory_discrepancy"


def sync_ref(provider: str) -> str:
    """The ledger reference of a sync's counts."""
    return f"{SYNC_REASON}:{provider}"


def alert_subject_id(provider: str) -> str:
    """What a discrepancy alert is filed under in the notification log (in place of an order id)."""
    return f"3pl-sync-{provider}"


class SkuAdjustment(BaseModel):
    """One SKU counted to the 3PL's figure: on hand was `ours_before`, is `theirs` now (`delta` = the change)."""

    sku: str
    ours_before: int
    theirs: int
    delta: int


class InventorySyncSummary(BaseModel):
    """What one sync of a provider did. `warehouse` None: no warehouse names the provider (nothing compared)."""

    provider: str
    warehouse: str | None
    synced_at: datetime
    adjusted: list[SkuAdjustment] = Field(default_factory=list)
    unknown_skus: list[str] = Field(default_factory=list)  # the 3PL stocks them, our catalogue does not know them
    not_synced: list[str] = Field(default_factory=list)  # other warehouses naming the same provider
    problems: list[str] = Field(default_factory=list)  # counts refused (e.g. units packed in parcels), not changed
    released_orders: list[str] = Field(default_factory=list)  # orders whose unpicked reservations a count released
    compared: int = 0  # SKUs compared
    alert_due: bool = False  # the differences are above the alert threshold (set by the sync's activity)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def discrepancy_units(self) -> int:
        return sum(abs(a.delta) for a in self.adjusted)

    def needs_alert(self, threshold: int) -> bool:
        """A discrepancy alert is due when the differences add up to more than `threshold` units."""
        return self.discrepancy_units > threshold


def warehouse_to_sync(warehouses: Mapping[str, str], provider: str) -> tuple[str | None, list[str]]:
    """The warehouse (code -> provider) a sync of `provider` compares, the first by code, and the others that
    name the same provider (not synced)."""
    codes = sorted(code for code, p in warehouses.items() if p == provider)
    return (codes[0], codes[1:]) if codes else (None, [])


def their_levels(levels: Iterable[ThreePLStock], handed_over: Mapping[str, int] | None = None) -> dict[str, int]:
    """The 3PL's on hand per SKU (a SKU listed twice: summed), as our books should show it. `handed_over`: units
    we still hold for parcels the 3PL has; those it no longer counts as committed it shipped, and our books take
    them off when the order hears so (its commit): counting them off now as well would take them twice."""
    theirs: dict[str, int] = {}
    committed: dict[str, int] = {}
    for level in levels:
        theirs[level.sku] = theirs.get(level.sku, 0) + level.on_hand
        committed[level.sku] = committed.get(level.sku, 0) + level.committed
    for sku, held in (handed_over or {}).items():
        shipped_unheard = held - committed.get(sku, 0)
        if shipped_unheard > 0:
            theirs[sku] = theirs.get(sku, 0) + shipped_unheard
    return theirs


@dataclass(frozen=True)
class Comparison:
    """What differs: (sku, ours, theirs) to count, in SKU order; SKUs the 3PL lists that we do not know."""

    differences: list[tuple[str, int, int]] = field(default_factory=list)
    unknown_skus: list[str] = field(default_factory=list)
    compared: int = 0


def compare_levels(ours: Mapping[str, int], theirs: Mapping[str, int], unknown: Iterable[str] = ()) -> Comparison:
    """Pure: our on hand per SKU at the warehouse against the 3PL's. `unknown`: SKUs not in our catalogue
    (reported, never counted, unless we book them, which the catalogue would not allow)."""
    unknown_set = set(unknown) - set(ours)
    skus = sorted((set(ours) | set(theirs)) - unknown_set)
    pairs = [(sku, ours.get(sku, 0), theirs.get(sku, 0)) for sku in skus]
    differences = [(sku, our, their) for sku, our, their in pairs if our != their]
    return Comparison(differences, sorted(unknown_set & set(theirs)), len(skus))


def discrepancy_alert(summary: InventorySyncSummary, occurrence: str) -> OpsAlert:
    """The ops email of a sync whose differences are above the threshold: one per run (`occurrence`)."""
    lines = [
        f"The stock levels of 3PL {summary.provider} differ from our books at {summary.warehouse} by "
        f"{summary.discrepancy_units} units in all ({summary.synced_at:%Y-%m-%d %H:%M} UTC). Our books now follow "
        f"the 3PL (count ledger rows, reason {SYNC_REASON}):",
        "",
    ]
    lines += [f"  {a.sku}: ours {a.ours_before}, the 3PL's {a.theirs} ({a.delta:+d})" for a in summary.adjusted]
    if summary.unknown_skus:
        lines += ["", "Stocked at the 3PL but not in our catalogue: " + ", ".join(summary.unknown_skus)]
    if summary.released_orders:
        lines += ["", "Orders whose reservations were released: " + ", ".join(summary.released_orders)]
    lines += ["", f"History: `fulfill inventory history SKU --warehouse {summary.warehouse}`."]
    return OpsAlert(
        order_id=alert_subject_id(summary.provider),
        kind=DISCREPANCY_KIND,
        subject=f"3PL stock differs: {summary.provider} at {summary.warehouse}, {summary.discrepancy_units} units",
        body="\n".join(lines),
        occurrence=occurrence,
    )


async def sync_inventory(
    store: Store, provider: str, levels: Sequence[ThreePLStock], at: datetime
) -> tuple[InventorySyncSummary, list[StockChange]]:
    """Bring our books at the provider's warehouse to the 3PL's `levels` (see the module's docstring); the
    summary and the stock changes made (for the caller to tell released orders and wake backorders). Each SKU
    is its own count (its own transaction): a refused one is reported in `problems`, the others stand."""
    code, others = warehouse_to_sync(await store.catalog.warehouse_providers(), provider)
    summary = InventorySyncSummary(provider=provider, warehouse=code, synced_at=at, not_synced=others)
    if code is None:
        return summary, []
    theirs = their_levels(levels, await store.threepl.held_units_handed_over(code))
    ours = {level.sku: level.on_hand for level in await store.stock.stock_levels(warehouse=code)}
    unknown = await store.catalog.unknown_skus(sorted(set(theirs) - set(ours)))
    comparison = compare_levels(ours, theirs, unknown)
    summary.unknown_skus, summary.compared = comparison.unknown_skus, comparison.compared
    changes: list[StockChange] = []
    for sku, _ours, counted in comparison.differences:
        try:
            change = await store.counts.count_stock(sku, code, counted, reason=SYNC_REASON, ref=sync_ref(provider))
        except StoreError as err:
            summary.problems.append(f"{sku}: {err}")
            continue
        if change.delta:
            changes.append(change)
            summary.adjusted.append(
                SkuAdjustment(sku=sku, ours_before=change.previous_on_hand, theirs=change.on_hand, delta=change.delta)
            )
        summary.released_orders += [o for o in change.released_orders if o not in summary.released_orders]
    await store.threepl.mark_inventory_synced(provider, at)
    return summary, changes
