"""`fulfill order ...`: place and inspect orders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from common.cli._base import cli_actor, connect_api, next_step, out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, stamp, table, time_column
from common.errors import InvalidOrder, InvalidRequest, OrderAlreadyExists
from common.intake import parse_order
from common.models import DeliveryResolution, OrderStatus, OrderView, ParcelView


def _read_input(file: str) -> str:
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as e:
        raise InvalidRequest(f"cannot read {file}: {e.strerror}") from None


order_app = CliApp(help="Place and inspect orders.", no_args_is_help=True)


@order_app.command("place")
@run_async
async def order_place(
    file: Annotated[str, typer.Argument(help="Order JSON file, or - for standard input.")],
) -> None:
    """Validate an order and start its workflow (order-<order_id>)."""
    try:
        text = _read_input(file)
    except InvalidRequest as e:
        raise InvalidOrder([str(e)]) from None

    parse_order(text)  # fail on bad input before connecting to anything
    async with await connect_api() as api:
        placed = await api.place_order(text)
    if not placed.created:
        raise OrderAlreadyExists(
            f"order {placed.order_id} already exists (workflow {placed.workflow_id}), placed before with this same "
            "content; nothing new was started"
        )
    out.print(f"placed order [bold]{escape(placed.order_id)}[/] (workflow {escape(placed.workflow_id)})")
    next_step(f"fulfill order status {placed.order_id}")


@order_app.command("status")
@run_async
async def order_status(
    order_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where an order stands: status, its parcels with their tracking, and its timeline.

    With --json, every parcel is under "shipments", each with its warehouse, pick task and tracking."""
    async with await connect_api() as api:
        view = await api.order_status(order_id)
    if as_json:
        print_json(view.model_dump(exclude=_LAST_PARCEL))
        return
    out.print(
        f"[bold]{escape(view.order_id)}[/]  {escape(_status_text(view))}"
        + (f"  (waiting for {escape(view.waiting_for)})" if view.waiting_for else ""),
        highlight=False,
    )
    for wait in view.provider_waits:
        out.print(
            f"[yellow]the {escape(wait.provider)} is not answering[/] since {stamp(wait.since)} UTC "
            f"({escape(wait.step)}): {escape(wait.error)}; it carries on by itself once it is back",
            highlight=False,
        )
    if view.messages_waiting:
        out.print(f"{view.messages_waiting} message(s) to the customer or ops waiting to go out", highlight=False)
    _print_parcels(view)
    if view.backordered:
        out.print(
            "waiting for stock: " + ", ".join(f"{li.sku} x{li.quantity}" for li in view.backordered), markup=False
        )
    timeline = table(time_column(), key("status"), "note")
    for entry in view.timeline:
        timeline.add_row(stamp(entry.at), entry.status.value, entry.note)
    out.print(timeline)


# The view's top-level copy of the parcel that moved last: --json gives every parcel under "shipments" instead.
_LAST_PARCEL = {
    "warehouse",
    "pick_task_id",
    "carrier",
    "service",
    "tracking_number",
    "tracking_url",
    "estimated_delivery",
}


def _status_text(view: OrderView) -> str:
    """The order's status, and what ended it when the status alone does not say: a return settled by an
    exchange leaves the order RETURN_RECEIVED (a refund ends it REFUNDED)."""
    exchanged = [r for r in view.returns if r.status == "EXCHANGED"]
    if view.status == OrderStatus.RETURN_RECEIVED and exchanged:
        replacement = exchanged[-1].replacement_order_id
        return f"{view.status.value} (exchanged: replacement order {replacement})"
    return view.status.value


def _from(p: ParcelView) -> str:
    """The warehouse, and the 3PL that runs it (late: past the 3PL's SLA)."""
    if p.fulfilled_by is None:
        return p.warehouse
    return f"{p.warehouse} ({p.fulfilled_by}{', LATE' if p.late_at_3pl else ''})"


def _print_parcels(view: OrderView) -> None:
    if len(view.shipments) > 1:
        parcels = table(key("parcel"), key("from"), "lines", "status", "tracking")
        for p in view.shipments:
            lines = "\n".join(f"{li.sku} x{li.quantity}" for li in p.lines)
            status = p.status.value + (f" ({p.outcome})" if p.outcome else "")
            tracking = f"{p.carrier} {p.tracking_number}" if p.tracking_number else ""
            parcels.add_row(str(p.shipment_no), _from(p), lines, status, tracking)
        out.print(parcels)
    elif view.shipments and view.shipments[0].fulfilled_by is not None:
        out.print(f"from: {_from(view.shipments[0])}", markup=False)
    if len(view.shipments) <= 1 and view.tracking_number:
        # soft_wrap: the tracking URL stays whole, to copy or click
        out.print(
            f"tracking: {view.carrier} {view.service} {view.tracking_number}  {view.tracking_url}",
            markup=False,
            soft_wrap=True,
        )


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
        print_json(orders)
        return
    shown = table(key("order"), key("status"), key("customer"), time_column("placed (UTC)"))
    for o in orders:
        shown.add_row(o.order_id, o.status, o.customer_id, stamp(o.started_at) if o.started_at else "")
    out.print(shown)


def _print_outcome(view: OrderView) -> None:
    last = view.timeline[-1] if view.timeline else None
    out.print(
        f"[bold]{escape(view.order_id)}[/]  {escape(_status_text(view))}" + (f"  ({escape(last.note)})" if last else "")
    )


@order_app.command("cancel")
@run_async
async def order_cancel(
    order_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in the timeline and to the customer).")],
) -> None:
    """Cancel an order: releases stock, cancels the pick, voids the label. Refused once shipped."""
    async with await connect_api() as api:
        _print_outcome(await api.cancel_order(order_id, reason, by=cli_actor()))


@order_app.command("retry")
@run_async
async def order_retry(
    order_id: str,
    note: Annotated[str | None, typer.Option("--note", help="What ops fixed (shown in the timeline).")] = None,
) -> None:
    """Retry what failed and waits for ops (the order is FAILED): the step runs again where it stopped."""
    async with await connect_api() as api:
        _print_outcome(await api.retry_order(order_id, note, by=cli_actor()))


@order_app.command("hold")
@run_async
async def order_hold(
    order_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why the order is held (shown to ops).")],
) -> None:
    """Stop an order at its next step until `fulfill order release`."""
    async with await connect_api() as api:
        _print_outcome(await api.hold_order(order_id, reason, by=cli_actor()))


@order_app.command("release")
@run_async
async def order_release(order_id: str) -> None:
    """Release an order on hold: it resumes where it stopped."""
    async with await connect_api() as api:
        _print_outcome(await api.release_order(order_id, by=cli_actor()))


@order_app.command("update-address")
@run_async
async def order_update_address(
    order_id: str,
    file: Annotated[str, typer.Argument(help="Address JSON (the ship_to object of an order), or - for stdin.")],
) -> None:
    """Correct the ship-to address of an order (e.g. one the carrier rejected: ADDRESS_INVALID)."""
    text = _read_input(file)
    try:
        address = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequest(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    async with await connect_api() as api:
        _print_outcome(await api.update_address(order_id, address, by=cli_actor()))


@order_app.command("resolve")
@run_async
async def order_resolve(
    order_id: str,
    action: Annotated[DeliveryResolution, typer.Option("--action", help="What to do about the delivery exception.")],
    note: Annotated[str | None, typer.Option("--note", help="Why (shown in the timeline).")] = None,
    shipment: Annotated[
        int | None, typer.Option("--shipment", help="Which parcel, when several are in exception (default: first).")
    ] = None,
) -> None:
    """Decide an order in DELIVERY_EXCEPTION: reship the parcel's goods as a new parcel, or refund it."""
    async with await connect_api() as api:
        _print_outcome(
            await api.resolve_delivery_exception(order_id, action.value, note, shipment=shipment, by=cli_actor())
        )


# ------------------------------------------------------------------------------------------ returns


def _parse_return_lines(lines: list[str]) -> list[tuple[str, int]]:
    parsed = []
    for raw in lines:
        sku, sep, qty = raw.partition("=")
        if not sep or not sku.strip() or not qty.strip().isdigit():
            raise InvalidRequest(f"--line {raw!r}: expected SKU=QTY, e.g. MUG-RED=1")
        parsed.append((sku.strip(), int(qty)))
    return parsed


@order_app.command("return")
@run_async
async def order_return(
    order_id: str,
    line: Annotated[list[str], typer.Option("--line", help="SKU=QTY to return (repeat for several lines).")],
    reason: Annotated[
        str,
        typer.Option(help="damaged, wrong_item, not_as_described, no_longer_needed or other."),
    ],
    exchange: Annotated[
        bool, typer.Option("--exchange", help="Send a replacement instead of a refund (damaged or wrong_item).")
    ] = False,
    note: Annotated[str | None, typer.Option("--note", help="Shown to ops in the timeline.")] = None,
) -> None:
    """Request a return (RMA) of delivered units, inside the return window: a return label goes to the customer."""
    lines = _parse_return_lines(line)
    async with await connect_api() as api:
        view = await api.request_return(order_id, lines, reason, exchange=exchange, note=note, by=cli_actor())
    rma = view.returns[-1]
    out.print(f"[bold]{escape(rma.rma_id)}[/] accepted for order {escape(view.order_id)} ({view.status.value})")
    if rma.replacement_order_id:
        out.print(f"replacement order: {rma.replacement_order_id}", markup=False)
    next_step(f"fulfill warehouse receive-return {rma.rma_id} --line SKU=QTY:resellable|damaged")


@order_app.command("returns")
@run_async
async def order_returns(
    order_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The returns (RMAs) of an order: status, lines, tracking, refund."""
    async with await connect_api() as api:
        view = await api.order_status(order_id)
    if as_json:
        print_json(view.returns)
        return
    # One free-text column (lines, reason, exchange, note) leaves the ids their whole width at 80 columns.
    shown = table(key("RMA"), key("status"), "refund", key("tracking"), "lines, reason, note")
    for r in view.returns:
        refund = f"{r.refund_cents / 100:.2f}" if r.refund_cents is not None else ""
        details = [", ".join(f"{li.sku} x{li.quantity}" for li in r.lines), r.reason.replace("_", " ")]
        if r.exchange:
            details.append(f"exchange: order {r.replacement_order_id}")
        if r.note:
            details.append(r.note)
        shown.add_row(r.rma_id, r.status, refund, r.tracking_number or "", "; ".join(details))
    out.print(shown)


@order_app.command("retry-refund")
@run_async
async def order_retry_refund(
    rma_id: str,
    description: Annotated[str, typer.Option("--description", help="What ops did (shown in the timeline).")],
) -> None:
    """Retry the refund of an RMA that failed and waits for ops (REFUND_FAILED)."""
    async with await connect_api() as api:
        rma = await api.retry_refund(rma_id, description)
    out.print(f"[bold]{escape(rma.rma_id)}[/]  {rma.status.value}" + (f"  ({escape(rma.note)})" if rma.note else ""))
