"""`fulfill warehouse ...`: pick tasks for warehouse staff."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape

from common.cli._base import connect_api, err, out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, stamp, table, time_column
from common.errors import InvalidRequest
from common.models import workflow_id_for

warehouse_app = CliApp(help="Pick tasks for warehouse staff.", no_args_is_help=True)


@warehouse_app.command("picks")
@run_async
async def warehouse_picks(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open pick tasks, oldest first."""
    async with await connect_api() as api:
        tasks = await api.open_picks()
    if as_json:
        print_json([{**asdict(t), "lines": [{"sku": sku, "quantity": qty} for sku, qty in t.lines]} for t in tasks])
        return
    shown = table(key("task"), key("order"), key("warehouse"), "lines", time_column("created (UTC)"))
    for t in tasks:
        lines = "\n".join(f"{sku} x{qty}" for sku, qty in t.lines)
        shown.add_row(t.id, t.order_id, t.warehouse, lines, stamp(t.created_at))
    out.print(shown)


@warehouse_app.command("confirm")
@run_async
async def warehouse_confirm(
    task_id: str,
    short: Annotated[
        list[str] | None,
        typer.Option(
            "--short",
            help="SKU=N: N units of SKU were not on the shelf (repeat per SKU). On hand is corrected and the "
            "order re-reserves them elsewhere or waits for stock.",
        ),
    ] = None,
) -> None:
    """Confirm a pick task: every line picked and packed (or short, with --short)."""
    missing = _parse_short(short or [])
    async with await connect_api() as api:
        task = await api.confirm_pick(task_id, missing or None)
        # The confirmation is recorded either way; its message to the order may still wait for the engine.
        untold = await api.store.signals.order_signals(workflow_id_for(task.order_id), pending_only=True)
    if task.short:
        gone = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(task.short.items()))
        out.print(
            f"pick task {task.id} confirmed short of {gone} (order {task.order_id}); discrepancy recorded", markup=False
        )
    else:
        out.print(f"pick task {task.id} confirmed (order {task.order_id})", markup=False)
    if untold:
        err.print(
            f"[yellow]warning:[/] the engine could not be told now ({escape(untold[-1].last_error or 'pending')}); "
            f"order {escape(task.order_id)} will be told when it is back",
            highlight=False,
        )


def _parse_short(values: list[str]) -> dict[str, int]:
    missing: dict[str, int] = {}
    for raw in values:
        sku, sep, qty = raw.partition("=")
        sku, qty = sku.strip(), qty.strip()
        if not sep or not sku or not qty.isdigit() or int(qty) < 1:
            raise InvalidRequest(f"--short {raw!r}: expected SKU=N with N a whole number of units >= 1")
        if sku in missing:
            raise InvalidRequest(f"--short: {sku} given twice")
        missing[sku] = int(qty)
    return missing


def _parse_received(lines: list[str]) -> list[tuple[str, int, str]]:
    parsed = []
    for raw in lines:
        sku, sep, rest = raw.partition("=")
        qty, sep2, condition = rest.partition(":")
        if not sep or not sep2 or not sku.strip() or not qty.strip().isdigit():
            raise InvalidRequest(f"--line {raw!r}: expected SKU=QTY:resellable or SKU=QTY:damaged")
        parsed.append((sku.strip(), int(qty), condition.strip()))
    return parsed


@warehouse_app.command("receive-return")
@run_async
async def warehouse_receive_return(
    rma_id: str,
    line: Annotated[
        list[str], typer.Option("--line", help="SKU=QTY:resellable or SKU=QTY:damaged (repeat for several).")
    ],
    note: Annotated[str | None, typer.Option("--note", help="Inspection note (kept with a write-off).")] = None,
) -> None:
    """Receive and inspect a returned parcel: resellable units back on hand, damaged ones written off."""
    lines = _parse_received(line)
    async with await connect_api() as api:
        rma = await api.receive_return(rma_id, lines, note)
    found = ", ".join(f"{li.sku} x{li.quantity} {li.condition.value}" for li in rma.received)
    out.print(f"[bold]{escape(rma.rma_id)}[/]  {rma.status.value}  (received {escape(found)})")
