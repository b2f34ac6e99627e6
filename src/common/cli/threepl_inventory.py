"""`fulfill 3pl sync-inventory`: pull a 3PL's stock levels now and bring our books at its warehouse to them
(each difference a count with reason `3pl_sync`; see `fulfill inventory history SKU`).

`register(app)` adds the command to the `3pl` Typer app (common.cli wires it)."""

from __future__ import annotations

from typing import Annotated

import typer

from common.api.threepl_inventory import require_provider
from common.cli._base import connect_api, out, print_json, run_async
from common.cli._output import key, table
from common.integrations.threepl_providers import SHIPBOB
from common.threepl.inventory_sync import InventorySyncSummary


def print_summary(summary: InventorySyncSummary) -> None:
    if summary.warehouse is None:
        out.print(f"3PL {summary.provider}: no warehouse of ours names it; nothing compared", markup=False)
        return
    head = (
        f"3PL {summary.provider} at {summary.warehouse}: {summary.compared} SKUs compared, "
        f"{len(summary.adjusted)} counted to the 3PL's figure ({summary.discrepancy_units} units)"
    )
    out.print(head, markup=False)
    if summary.adjusted:
        shown = table(key("sku"), "ours before", "the 3PL's", "change")
        for a in summary.adjusted:
            shown.add_row(a.sku, str(a.ours_before), str(a.theirs), f"{a.delta:+d}")
        out.print(shown)
    notes = [
        ("not in our catalogue (not changed)", summary.unknown_skus),
        ("orders whose reservations were released", summary.released_orders),
        ("warehouses naming the same provider (not synced)", summary.not_synced),
        ("refused", summary.problems),
    ]
    for what, items in notes:
        if items:
            out.print(f"{what}: {', '.join(items)}", markup=False)
    if summary.alert_due:
        out.print("ops were emailed a discrepancy alert", markup=False)


def register(app: typer.Typer) -> None:
    """Add `sync-inventory` to `app` (the `fulfill 3pl` sub-app)."""

    @app.command("sync-inventory")
    @run_async
    async def sync_inventory(
        provider: Annotated[str, typer.Option(help="The 3PL whose stock levels to pull.")] = SHIPBOB,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Pull the 3PL's stock levels now; each difference from our books becomes a count (reason 3pl_sync).

        SKUs the 3PL stocks that our catalogue does not know are listed, not changed. Above the alert
        threshold (FULFILL_THREEPL_DISCREPANCY_ALERT_UNITS) ops are emailed."""
        require_provider(provider)  # exit 2 before connecting to anything
        async with await connect_api() as api:
            summary = await api.sync_threepl_inventory(provider)
        if as_json:
            print_json(summary.model_dump(mode="json"))
            return
        print_summary(summary)
