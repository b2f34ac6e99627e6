"""`fulfill inventory ...`: stock levels and receiving."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from common.cli._base import connect_api, out, print_json, run_async

inventory_app = typer.Typer(help="Stock levels and receiving.", no_args_is_help=True)


@inventory_app.command("show")
@run_async
async def inventory_show(
    sku: Annotated[str | None, typer.Option(help="Only this SKU.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stock per SKU and warehouse: on hand, reserved, available."""
    async with await connect_api() as api:
        levels = await api.stock(sku, warehouse)
    if as_json:
        print_json([asdict(level) for level in levels])
        return
    table = Table("sku", "warehouse", "on hand", "reserved", "available")
    for level in levels:
        table.add_row(
            level.sku, level.warehouse, str(level.on_hand), str(level.reserved), str(level.available)
        )
    out.print(table)


# ignore_unknown_options: "-5" reaches our check ("must be positive") instead of "no such option -5".
@inventory_app.command("receive", context_settings={"ignore_unknown_options": True})
@run_async
async def inventory_receive(
    sku: str,
    quantity: Annotated[int, typer.Argument(help="Units received (> 0).")],
    warehouse: Annotated[str | None, typer.Option(help="Receiving warehouse (default: the first).")] = None,
) -> None:
    """Restock a SKU; backordered orders waiting for it retry their reservation."""
    if quantity <= 0:
        raise ValueError(f"quantity must be a positive number of units (got {quantity})")
    async with await connect_api() as api:
        level = await api.receive_stock(sku, quantity, warehouse)
    out.print(f"{level.sku} @ {level.warehouse}: on hand {level.on_hand}, available {level.available}")
