"""`fulfill order ...`: place and inspect orders."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from common.cli._base import connect_api, out, print_json, run_async
from common.errors import InvalidOrder
from common.intake import parse_order
from common.models import OrderStatus

order_app = typer.Typer(help="Place and inspect orders.", no_args_is_help=True)


@order_app.command("place")
@run_async
async def order_place(
    file: Annotated[str, typer.Argument(help="Order JSON file, or - for standard input.")],
) -> None:
    """Validate an order and start its workflow (order-<order_id>)."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()  # noqa: ASYNC240 (before any I/O)
    except OSError as e:
        raise InvalidOrder([f"cannot read {file}: {e.strerror}"]) from None

    parse_order(text)  # fail on bad input before connecting to anything
    async with await connect_api() as api:
        placed = await api.place_order(text)
    out.print(f"placed order [bold]{placed.order_id}[/] (workflow {placed.workflow_id})")
    out.print(f"next: fulfill order status {placed.order_id}")


@order_app.command("status")
@run_async
async def order_status(
    order_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where an order stands: status, tracking and its timeline."""
    async with await connect_api() as api:
        view = await api.order_status(order_id)
    if as_json:
        out.print_json(view.model_dump_json())
        return
    out.print(
        f"[bold]{view.order_id}[/]  {view.status.value}"
        + (f"  (waiting for {view.waiting_for})" if view.waiting_for else "")
    )
    if view.tracking_number:
        out.print(f"tracking: {view.carrier} {view.service} {view.tracking_number}  {view.tracking_url}")
    table = Table("time (UTC)", "status", "note")
    for entry in view.timeline:
        table.add_row(f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.status.value, entry.note)
    out.print(table)


@order_app.command("list")
@run_async
async def order_list(
    status: Annotated[OrderStatus | None, typer.Option(help="Only orders in this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Orders, newest first (from Temporal visibility)."""
    async with await connect_api() as api:
        orders = await api.list_orders(status)
    if as_json:
        print_json([asdict(o) for o in orders])
        return
    table = Table("order", "status", "customer", "placed (UTC)")
    for o in orders:
        table.add_row(
            o.order_id, o.status, o.customer_id, f"{o.started_at:%Y-%m-%d %H:%M:%S}" if o.started_at else ""
        )
    out.print(table)
