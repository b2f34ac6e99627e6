"""Which warehouse(s) ship an order: pure functions over a snapshot of available stock.

Preference, for a single warehouse and for split plans alike: a warehouse in the ship-to region (same
country and region), then one in the ship-to country, then the most units available of the order's SKUs,
then the warehouse code (so the choice is deterministic).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

Lines = list[tuple[str, int]]
# warehouse code -> sku -> units available
Availability = Mapping[str, Mapping[str, int]]

# Above this many candidate subsets the split planner stops searching exhaustively and goes greedy.
MAX_EXHAUSTIVE_SUBSETS = 20_000


@dataclass(frozen=True)
class Site:
    code: str
    country: str
    region: str | None


def _norm(value: str | None) -> str | None:
    return value.strip().casefold() if isinstance(value, str) and value.strip() else None


def locality(site: Site, prefer_country: str | None, prefer_region: str | None) -> int:
    """0: in the ship-to region, 1: in the ship-to country, 2: elsewhere (or no preference given)."""
    country = _norm(prefer_country)
    region = _norm(prefer_region)
    same_country = country is not None and _norm(site.country) == country
    if region is not None and _norm(site.region) == region and (country is None or same_country):
        return 0
    return 1 if same_country else 2


def missing(available: Mapping[str, int], items: Sequence[tuple[str, int]]) -> dict[str, int]:
    """sku -> units short when shipping `items` from a warehouse with `available`."""
    return {sku: qty - available.get(sku, 0) for sku, qty in items if available.get(sku, 0) < qty}


def _total(available: Mapping[str, int], items: Sequence[tuple[str, int]]) -> int:
    return sum(max(available.get(sku, 0), 0) for sku, _ in items)


def rank(
    sites: Sequence[Site],
    availability: Availability,
    items: Sequence[tuple[str, int]],
    prefer_country: str | None = None,
    prefer_region: str | None = None,
) -> list[Site]:
    """`sites` best first: locality, then most available of the order's SKUs, then code."""
    return sorted(
        sites,
        key=lambda s: (
            locality(s, prefer_country, prefer_region),
            -_total(availability.get(s.code, {}), items),
            s.code,
        ),
    )


def choose_warehouse(
    sites: Sequence[Site],
    availability: Availability,
    items: Sequence[tuple[str, int]],
    prefer_country: str | None = None,
    prefer_region: str | None = None,
) -> str | None:
    """The best warehouse that can ship every line on its own, or None."""
    for site in rank(sites, availability, items, prefer_country, prefer_region):
        if not missing(availability.get(site.code, {}), items):
            return site.code
    return None


def plan_split(
    sites: Sequence[Site],
    availability: Availability,
    items: Sequence[tuple[str, int]],
    prefer_country: str | None = None,
    prefer_region: str | None = None,
) -> list[tuple[str, Lines]]:
    """Ship `items` from as few warehouses as possible: [(warehouse, [(sku, qty), ...]), ...] in preference
    order, lines sorted by sku. A line may be split between warehouses. One warehouse if one can cover the
    order; [] if all warehouses together cannot.

    Among the smallest sets of warehouses that cover the order, the set with the most warehouses in the
    ship-to region wins, then the most in the ship-to country, then the most units available, then codes.
    Within the set, each line takes units from the most preferred warehouse first.
    """
    wanted = {sku: qty for sku, qty in items}
    ranked = rank(sites, availability, items, prefer_country, prefer_region)
    if not ranked:
        return []
    totals = {sku: sum(max(availability.get(s.code, {}).get(sku, 0), 0) for s in ranked) for sku in wanted}
    if any(totals[sku] < qty for sku, qty in wanted.items()):
        return []

    def covers(subset: Sequence[Site]) -> bool:
        return all(
            sum(max(availability.get(s.code, {}).get(sku, 0), 0) for s in subset) >= qty for sku, qty in wanted.items()
        )

    def score(subset: Sequence[Site]) -> tuple[int, int, int, tuple[str, ...]]:
        places = [locality(s, prefer_country, prefer_region) for s in subset]
        return (
            -places.count(0),
            -places.count(1),
            -sum(_total(availability.get(s.code, {}), items) for s in subset),
            tuple(sorted(s.code for s in subset)),
        )

    # All warehouses together cover the order (checked above), so the search finds a set unless it gives up.
    chosen = _smallest_cover(ranked, covers, score) or _greedy_cover(ranked, availability, wanted)
    return _assign(chosen, availability, wanted)


def _smallest_cover(
    ranked: Sequence[Site],
    covers: Callable[[Sequence[Site]], bool],
    score: Callable[[Sequence[Site]], tuple[int, int, int, tuple[str, ...]]],
) -> Sequence[Site] | None:
    """The best-scoring (lowest) of the smallest subsets of `ranked` that cover the order, or None once more
    than MAX_EXHAUSTIVE_SUBSETS subsets were tried (the best of the size being searched then, if any, wins)."""
    searched = 0
    for size in range(1, len(ranked) + 1):
        best: tuple[tuple[int, int, int, tuple[str, ...]], Sequence[Site]] | None = None
        for subset in combinations(ranked, size):
            searched += 1
            if searched > MAX_EXHAUSTIVE_SUBSETS:
                break
            if covers(subset):
                candidate = (score(subset), subset)
                if best is None or candidate[0] < best[0]:
                    best = candidate
        if best is not None:
            return best[1]
        if searched > MAX_EXHAUSTIVE_SUBSETS:
            return None
    return None


def _greedy_cover(ranked: Sequence[Site], availability: Availability, wanted: Mapping[str, int]) -> list[Site]:
    """Too many warehouses to search every subset: repeatedly take the one covering the most still-needed
    units (ties: preference order)."""
    need = dict(wanted)
    chosen: list[Site] = []
    pool = list(ranked)
    while any(q > 0 for q in need.values()) and pool:

        def gain(site: Site) -> int:
            stock = availability.get(site.code, {})
            return sum(min(max(stock.get(sku, 0), 0), q) for sku, q in need.items())

        site = max(pool, key=lambda s: (gain(s), -pool.index(s)))
        if gain(site) == 0:
            break
        pool.remove(site)
        chosen.append(site)
        stock = availability.get(site.code, {})
        for sku in need:
            need[sku] -= min(max(stock.get(sku, 0), 0), need[sku])
    return chosen


def _assign(chosen: Sequence[Site], availability: Availability, wanted: Mapping[str, int]) -> list[tuple[str, Lines]]:
    need = dict(wanted)
    # Keep the preference order of `chosen` (it came from `rank`, or greedy in that order).
    plan: list[tuple[str, Lines]] = []
    for site in chosen:
        stock = availability.get(site.code, {})
        lines: Lines = []
        for sku in sorted(need):
            take = min(max(stock.get(sku, 0), 0), need[sku])
            if take > 0:
                lines.append((sku, take))
                need[sku] -= take
        if lines:
            plan.append((site.code, lines))
    return plan
