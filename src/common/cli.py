"""`fulfill`: the command line for order intake, ops and the warehouse.

Exit codes: 0 done, 1 refused by the engine (e.g. the order already exists), 2 bad input (nothing changed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from common.api import FulfillmentApi
from common.config import get_settings
from common.db import StoreError
from common.errors import FulfillmentError, InvalidOrder, OrderAlreadyExists
from common.intake import parse_order
from common.models import OrderStatus

# No locals in tracebacks: they would print customers' personal data.
app = typer.Typer(
    help="Order fulfillment engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
order_app = typer.Typer(help="Place and inspect orders.", no_args_is_help=True)
inventory_app = typer.Typer(help="Stock levels and receiving.", no_args_is_help=True)
warehouse_app = typer.Typer(help="Pick tasks for warehouse staff.", no_args_is_help=True)
dev_app = typer.Typer(help="The embedded stack for development and demos.", no_args_is_help=True)
app.add_typer(order_app, name="order")
app.add_typer(inventory_app, name="inventory")
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(dev_app, name="dev")

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def run_async(fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command; turn the engine's refusals into a clear message and an exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]
        except InvalidOrder as e:
            err.print("[red]error:[/] invalid order, nothing was started:")
            for problem in e.problems:
                err.print(f"  - {problem}", markup=False, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OrderAlreadyExists as e:
            err.print(f"[yellow]{e}[/]")
            raise typer.Exit(EXIT_REFUSED) from None
        except (FulfillmentError, StoreError, ValueError) as e:
            err.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (ConnectionError, OSError, RuntimeError) as e:
            err.print(
                f"[red]error:[/] cannot reach the engine ({e}). Is `make run` (or a worker and Temporal) up?"
            )
            raise typer.Exit(EXIT_REFUSED) from None

    return wrapper


def _api() -> Awaitable[FulfillmentApi]:
    return FulfillmentApi.connect(get_settings())


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# ---------------------------------------------------------------------------------------------- orders


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
    async with await _api() as api:
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
    async with await _api() as api:
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
    async with await _api() as api:
        orders = await api.list_orders(status)
    if as_json:
        _print_json([asdict(o) for o in orders])
        return
    table = Table("order", "status", "customer", "placed (UTC)")
    for o in orders:
        table.add_row(
            o.order_id, o.status, o.customer_id, f"{o.started_at:%Y-%m-%d %H:%M:%S}" if o.started_at else ""
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------- inventory


@inventory_app.command("show")
@run_async
async def inventory_show(
    sku: Annotated[str | None, typer.Option(help="Only this SKU.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stock per SKU and warehouse: on hand, reserved, available."""
    async with await _api() as api:
        levels = await api.stock(sku, warehouse)
    if as_json:
        _print_json([asdict(level) for level in levels])
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
    async with await _api() as api:
        level = await api.receive_stock(sku, quantity, warehouse)
    out.print(f"{level.sku} @ {level.warehouse}: on hand {level.on_hand}, available {level.available}")


# ---------------------------------------------------------------------------------------------- warehouse


@warehouse_app.command("picks")
@run_async
async def warehouse_picks(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open pick tasks, oldest first."""
    async with await _api() as api:
        tasks = await api.open_picks()
    if as_json:
        _print_json([asdict(t) for t in tasks])
        return
    table = Table("task", "order", "warehouse", "lines", "created (UTC)")
    for t in tasks:
        lines = ", ".join(f"{sku} x{qty}" for sku, qty in t.lines)
        table.add_row(t.id, t.order_id, t.warehouse, lines, f"{t.created_at:%Y-%m-%d %H:%M:%S}")
    out.print(table)


@warehouse_app.command("confirm")
@run_async
async def warehouse_confirm(task_id: str) -> None:
    """Confirm a pick task: every line picked and packed."""
    async with await _api() as api:
        task = await api.confirm_pick(task_id)
    out.print(f"pick task {task.id} confirmed (order {task.order_id})")


# ---------------------------------------------------------------------------------------------- outbox


@app.command("outbox")
@run_async
async def outbox(
    order: Annotated[str | None, typer.Option("--order", help="Only messages about this order.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Emails and SMS the sandbox servers received (the demo's customer inboxes)."""
    from common.sandbox import fetch_outbox

    settings = get_settings()
    messages = await fetch_outbox(f"http://{settings.sandbox_host}:{settings.sandbox_http_port}", order)
    if as_json:
        _print_json([m.model_dump(mode="json") for m in messages])
        return
    table = Table("time (UTC)", "channel", "to", "order", "subject / text")
    for m in messages:
        table.add_row(
            f"{m.received_at:%H:%M:%S}", m.channel, m.recipient, m.order_id or "", m.subject or m.body
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------- dev stack


@dev_app.command("up")
def dev_up() -> None:
    """Start Temporal with its Web UI, the sandbox servers, a worker and the simulated picker."""
    from workers.devstack import main

    main()


if __name__ == "__main__":
    app()
