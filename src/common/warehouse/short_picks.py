"""What happens on a short pick: the picker could not find some units of a pick task's lines.

A valid shortage names, for some of the task's SKUs, a whole number of units between 1 and the units that line
was to pick. `shortage_problem` says what is wrong with one that is not; the API, the order workflow's
`pick_short` validator and the store all check it here.

What it does to the books, in the one transaction that confirms the task (`PickTaskStore.confirm`):
- the units were never on the shelf: on hand drops by them, with an "adjustment" ledger row naming the task
  (the discrepancy);
- the order's held reservation of them drops with them (`reservation_after_short`), and so does reserved:
  available stays right for everyone else; a line left with nothing is released;
- the task is confirmed with the shortage recorded on its lines, and the order is told: update `pick_short`
  (a PickShortage) through the order-signal outbox.
The order then packs the rest and re-reserves the missing units elsewhere, or waits for them.

Plain logic: workflows may import this module.
"""

from __future__ import annotations

from collections.abc import Mapping


def shortage_problem(task_id: str, ordered: Mapping[str, int], short: Mapping[str, int]) -> str | None:
    """Why `short` (sku -> units not found) is not a valid shortage of the task whose lines are `ordered`
    (sku -> units to pick), or None if it is."""
    if not short:
        return 'say which units are missing, e.g. {"MUG-RED": 1}'
    for sku, units in short.items():
        if sku not in ordered:
            return f"pick task {task_id} has no line for {sku} (it has {', '.join(ordered)})"
        if isinstance(units, bool) or not isinstance(units, int) or not 0 < units <= ordered[sku]:
            return f"pick task {task_id}: short {sku}={units} must be between 1 and the {ordered[sku]} to pick"
    return None


def reservation_after_short(held: int, short: int) -> tuple[int, int]:
    """(units dropped, units kept) of the order's reservation of a SKU that held `held` units, when `short`
    of them were not on the shelf."""
    dropped = min(short, held)
    return dropped, held - dropped
