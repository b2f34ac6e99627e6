"""`fulfill inventory ...`: the real-time stock view, receiving and expected receipts, counts and
adjustments, the stock ledger, forecasts and reorder points, stock imports.

Only `receive` needs the engine (it wakes backordered orders through Temporal); every other command works
on the database alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text
from temporalio.exceptions import TemporalError

from common.catalog.contracts import UnknownSkuError, UnknownWarehouseError
from common.cli._base import connect_api, err, out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, stamp, table, time_column
from common.config import get_settings
from common.inventory import forecast as fc
from common.inventory.contracts import LedgerEntry, LowStockCrossing, StockChange
from common.inventory.planning import StockForecast
from common.store import Store

inventory_app = CliApp(help="Stock: levels, receiving, counts, history, forecasts and imports.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@asynccontextmanager
async def open_store() -> AsyncIterator[Store]:
    """The database alone (no Temporal): for commands that only read or write stock."""
    store = await Store.open(get_settings().database_url)
    try:
        yield store
    finally:
        await store.close()


async def check_known(store: Store, sku: str | None, warehouse: str | None = None) -> None:
    """Refuse a filter that names no SKU or warehouse of the catalogue (exit 2), as every command does, rather
    than answer with an empty table."""
    if sku is not None and await store.catalog.unknown_skus([sku]):
        raise UnknownSkuError([sku])
    if warehouse is not None:
        known = [w.code for w in await store.catalog.warehouses()]
        if warehouse not in known:
            raise UnknownWarehouseError(warehouse, known)


def _parse_date(what: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what}: expected a date like 2025-12-24, got {value!r}") from None


def _cover(days: float | None) -> str:
    return "-" if days is None else f"{days:.1f}"


async def _alert_ops(store: Store, crossings: list[LowStockCrossing]) -> None:
    """Tell the user about new low-stock crossings and email ops about them now (best effort: a crossing
    whose email fails stays pending and is sent by the next alert run)."""
    from common.inventory.alerts import alert_ops_now

    for c in crossings:
        err.print(
            f"[yellow]low stock:[/] {c.sku} @ {c.warehouse}: {c.available} available, reorder point {c.reorder_point}",
            highlight=False,
        )
    settings = get_settings()
    sent, problem = await alert_ops_now(store, settings, crossings)
    if problem is not None:
        err.print(
            f"[yellow]warning:[/] could not email ops ({escape(problem)}); the low-stock alert stays pending",
            highlight=False,
        )
    elif sent:
        err.print(f"ops alerted at {settings.ops_email}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------------------
# The real-time view


@inventory_app.command("show")
@run_async
async def inventory_show(
    sku: Annotated[str | None, typer.Option(help="Only this SKU.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Stock per SKU and warehouse: on hand, reserved, available, incoming, reorder point, days of cover."""
    from common.inventory.planning import stock_forecasts

    async with open_store() as store:
        await check_known(store, sku, warehouse)
        forecasts = await stock_forecasts(store, sku=sku, warehouse=warehouse)
    if as_json:
        print_json(
            [
                {
                    **asdict(f.position),
                    "daily_demand": round(f.plan.mean_daily, 3),
                    "days_of_cover": None if f.plan.days_of_cover is None else round(f.plan.days_of_cover, 1),
                }
                for f in forecasts
            ]
        )
        return
    shown = table(
        key("sku"), key("warehouse"), "on hand", "reserved", "available", "incoming", "reorder point", "days of cover"
    )
    for f in forecasts:
        p = f.position
        low = p.reorder_point is not None and p.available <= p.reorder_point
        incoming = str(p.incoming) + (f" (eta {p.next_eta})" if p.next_eta else "")
        shown.add_row(
            p.sku,
            p.warehouse,
            str(p.on_hand),
            str(p.reserved),
            Text(str(p.available), style="red" if low else ""),
            incoming,
            "-" if p.reorder_point is None else str(p.reorder_point),
            _cover(f.plan.days_of_cover),
        )
    out.print(shown)


# ---------------------------------------------------------------------------------------------------------
# Receiving


# ignore_unknown_options: "-5" reaches our check ("must be positive") instead of "no such option -5".
@inventory_app.command("receive", context_settings={"ignore_unknown_options": True})
@run_async
async def inventory_receive(
    sku: str,
    quantity: Annotated[int, typer.Argument(help="Units received (> 0).")],
    warehouse: Annotated[
        str | None, typer.Option(help="Receiving warehouse (default: the purchase order's, else the first).")
    ] = None,
    po: Annotated[str | None, typer.Option("--po", help="The purchase order this receipt closes.")] = None,
) -> None:
    """Restock a SKU; backordered orders waiting for it retry their reservation."""
    if quantity <= 0:
        raise ValueError(f"quantity must be a positive number of units (got {quantity})")
    async with await connect_api() as api:
        level = await api.receive_stock(sku, quantity, warehouse, po=po)
    closed = f" (purchase order {po} received)" if po else ""
    out.print(
        f"{level.sku} @ {level.warehouse}: on hand {level.on_hand}, available {level.available}{closed}", markup=False
    )


@inventory_app.command("expect")
@run_async
async def inventory_expect(
    sku: str,
    quantity: Annotated[int, typer.Argument(help="Units expected (> 0).")],
    warehouse: Annotated[str, typer.Option(help="Where they arrive.")],
    eta: Annotated[str | None, typer.Option(help="Expected arrival date, YYYY-MM-DD.")] = None,
    po: Annotated[str | None, typer.Option("--po", help="Purchase order id (default: a new PO-... id).")] = None,
    note: Annotated[str, typer.Option(help="Supplier, reference, anything.")] = "",
) -> None:
    """Record an expected receipt (purchase order): shown as incoming until `receive --po ID`."""
    if quantity <= 0:
        raise ValueError(f"quantity must be a positive number of units (got {quantity})")
    due = _parse_date("eta", eta)
    async with open_store() as store:
        order = await store.purchase_orders.expect_receipt(sku, quantity, warehouse, eta=due, po=po, note=note)
    when = f", due {order.eta}" if order.eta else ""
    out.print(
        f"{order.id}: {order.quantity} x {order.sku} expected at {order.warehouse}{when}", markup=False, highlight=False
    )


@inventory_app.command("incoming")
@run_async
async def inventory_incoming(
    sku: Annotated[str | None, typer.Option(help="Only this SKU.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Open purchase orders (expected receipts), soonest first."""
    async with open_store() as store:
        await check_known(store, sku, warehouse)
        orders = await store.purchase_orders.purchase_orders(sku, warehouse)
    if as_json:
        print_json(orders)
        return
    shown = table(key("purchase order"), key("sku"), key("warehouse"), "quantity", key("eta"), "note")
    for o in orders:
        shown.add_row(o.id, o.sku, o.warehouse, str(o.quantity), str(o.eta or "-"), o.note)
    out.print(shown)


@inventory_app.command("cancel-po")
@run_async
async def inventory_cancel_po(po: Annotated[str, typer.Argument(help="Purchase order id.")]) -> None:
    """Cancel an open purchase order: it is no longer incoming."""
    async with open_store() as store:
        order = await store.purchase_orders.cancel_purchase_order(po)
    out.print(f"{order.id}: {order.status}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------------------
# Counts, adjustments, history


def _print_change(change: StockChange, as_json: bool, what: str) -> None:
    if as_json:
        print_json({**asdict(change), "available": change.available})
        return
    sign = f"{change.delta:+d}"
    out.print(
        f"{change.sku} @ {change.warehouse}: {what}, was {change.previous_on_hand} ({sign}); "
        f"on hand {change.on_hand}, reserved {change.reserved}, available {change.available}",
        highlight=False,
    )
    if change.released_orders:
        out.print(
            f"[yellow]released the reservations of {len(change.released_orders)} order(s), newest first; they wait "
            f"for stock again:[/] {escape(', '.join(change.released_orders))}",
            highlight=False,
        )


async def _tell_orders(change: StockChange) -> None:
    """The stock change is recorded, and with it a message to each order it released (the order-signal
    outbox); deliver those now and wake backorders if stock went up. Without the engine, say so instead of
    failing: the change stands, the worker's relay tells the released orders once the engine is back, and
    backordered orders recheck periodically."""
    if not change.released_orders and change.delta <= 0:
        return
    orders = f"orders {', '.join(change.released_orders)}" if change.released_orders else ""
    try:
        async with await connect_api() as api:
            report = await api.after_stock_change(change)
    except (ConnectionError, OSError, RuntimeError, TemporalError) as e:
        later = f"; {orders} will be told when it is back" if orders else ""
        if change.delta > 0:
            later += "; backordered orders recheck for stock periodically"
        err.print(
            f"[yellow]warning:[/] recorded, but the engine is unreachable ({escape(str(e))}){later}", highlight=False
        )
        return
    if not report.ok:
        err.print(
            f"[yellow]warning:[/] recorded, but the engine could not be told now ({escape(report.error or '')}); "
            f"{orders} will be told when it is back",
            highlight=False,
        )


@inventory_app.command("count", context_settings={"ignore_unknown_options": True})
@run_async
async def inventory_count(
    sku: str,
    warehouse: Annotated[str, typer.Option(help="Where the count was taken.")],
    counted: Annotated[int, typer.Option(help="Units physically counted (>= 0).")],
    reason: Annotated[str | None, typer.Option(help="Why it differs (damage, theft, cycle count...).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record a physical count: the difference becomes a "count" ledger row.

    If fewer units are on hand than reserved, the newest orders' reservations are released.

    Those orders are printed: they wait for stock again."""
    if counted < 0:
        raise ValueError(f"counted must be a number of units >= 0 (got {counted})")
    async with open_store() as store:
        change = await store.counts.count_stock(sku, warehouse, counted, reason=reason)
        crossings = await store.stock.low_stock_crossings([sku], pending_only=True)
        _print_change(change, as_json, f"counted {counted}")
        await _alert_ops(store, [c for c in crossings if c.warehouse == warehouse])
    await _tell_orders(change)


@inventory_app.command("adjust", context_settings={"ignore_unknown_options": True})
@run_async
async def inventory_adjust(
    sku: str,
    delta: Annotated[int, typer.Argument(help="Units to add (positive) or remove (negative).")],
    warehouse: Annotated[str, typer.Option(help="Where.")],
    reason: Annotated[str, typer.Option(help="Why (damaged, found, written off...).")],
    as_json: JsonOption = False,
) -> None:
    """Correct on hand by DELTA units with a reason: an "adjustment" ledger row."""
    if delta == 0:
        raise ValueError("delta must not be 0")
    async with open_store() as store:
        change = await store.counts.adjust_stock(sku, warehouse, delta, reason=reason)
        crossings = await store.stock.low_stock_crossings([sku], pending_only=True)
        _print_change(change, as_json, f"adjusted by {delta:+d}")
        await _alert_ops(store, [c for c in crossings if c.warehouse == warehouse])
    await _tell_orders(change)


def _with_balances(entries: list[LedgerEntry], on_hand: dict[str, int]) -> list[tuple[LedgerEntry, int]]:
    """Each entry (newest first) with on hand in its warehouse right after it."""
    balance = dict(on_hand)
    rows = []
    for e in entries:
        after = balance.get(e.warehouse, 0)
        rows.append((e, after))
        balance[e.warehouse] = after - e.delta_on_hand
    return rows


@inventory_app.command("history")
@run_async
async def inventory_history(
    sku: str,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    limit: Annotated[int, typer.Option(help="How many of the latest entries.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Every stock change of a SKU, newest first: kind, units, reference, reason and time."""
    async with open_store() as store:
        entries = await store.stock.stock_history(sku, warehouse, limit=limit)
        levels = {level.warehouse: level.on_hand for level in await store.stock.stock_levels(sku, warehouse)}
    rows = _with_balances(entries, levels)
    if as_json:
        print_json([{**asdict(e), "on_hand_after": after} for e, after in rows])
        return
    shown = table(time_column(), key("warehouse"), key("kind"), "change", "on hand after", key("ref"), "note")
    for e, after in rows:
        shown.add_row(stamp(e.at), e.warehouse, e.kind, _delta(e), str(after), e.ref or "", e.note)
    out.print(shown)


def _delta(entry: LedgerEntry) -> str:
    """ "on hand -2", "reserved +3" or both: one column, so the ids and the note keep their room."""
    parts = [f"on hand {entry.delta_on_hand:+d}"] if entry.delta_on_hand else []
    if entry.delta_reserved:
        parts.append(f"reserved {entry.delta_reserved:+d}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Forecast and reorder points


@inventory_app.command("forecast")
@run_async
async def inventory_forecast(
    sku: Annotated[str | None, typer.Option(help="Only this SKU.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.")] = None,
    service_level: Annotated[
        float, typer.Option(help="Share of replenishment cycles without a stock-out (0-1).")
    ] = fc.DEFAULT_SERVICE_LEVEL,
    days: Annotated[int, typer.Option(help="Days of order history to learn from.", min=1)] = fc.DEFAULT_HISTORY_DAYS,
    alpha: Annotated[
        float, typer.Option(help="EWMA smoothing (histories too short for a model): weight of the latest day (0-1].")
    ] = fc.DEFAULT_ALPHA,
    cover_days: Annotated[
        float, typer.Option(help="Days of demand an order should cover beyond the reorder point.")
    ] = fc.DEFAULT_COVER_DAYS,
    chart_dir: Annotated[Path | None, typer.Option(help="Write one PNG chart per SKU here.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Store the forecast reorder points (for alerts).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Forecast daily demand, safety stock, reorder point and a suggested order quantity per SKU."""
    from common.inventory.planning import on_hand_history, stock_forecasts

    async with open_store() as store:
        await check_known(store, sku, warehouse)
        forecasts = await stock_forecasts(
            store,
            sku=sku,
            warehouse=warehouse,
            days=days,
            service_level=service_level,
            alpha=alpha,
            cover_days=cover_days,
        )
        charts: list[Path] = []
        if chart_dir is not None:
            from common.inventory.charts import chart_file, render_sku_chart

            for s in sorted({f.sku for f in forecasts}):
                mine = [f for f in forecasts if f.sku == s]
                history = {
                    f.warehouse: await on_hand_history(store, s, f.warehouse, f.start, len(f.demand)) for f in mine
                }
                charts.append(render_sku_chart(chart_file(chart_dir, s), mine, history, alpha=alpha))
        crossings: list[LowStockCrossing] = []
        if apply and forecasts:
            crossings = await store.stock.set_reorder_points(
                {(f.sku, f.warehouse): f.plan.reorder_point for f in forecasts}
            )

        if as_json:
            print_json([_forecast_json(f, applied=apply) for f in forecasts])
        else:
            _print_forecasts(forecasts, days=days, alpha=alpha, service_level=service_level, applied=apply)
            for path in charts:
                out.print(f"chart: {path}", markup=False, highlight=False)
            if apply:
                out.print(f"reorder points stored for {len(forecasts)} SKU/warehouse pair(s)")
        await _alert_ops(store, crossings)


def _forecast_json(f: StockForecast, *, applied: bool) -> dict[str, Any]:
    return {
        "sku": f.sku,
        "warehouse": f.warehouse,
        "available": f.position.available,
        "incoming": f.position.incoming,
        "history_days": len(f.demand),
        "demand_model": f.plan.model,
        "demand_per_day": round(f.plan.mean_daily, 3),
        "demand_std_dev": round(f.plan.std_daily, 3),
        "lead_time_days": f.lead_time_days,
        "lead_time_demand": round(f.plan.lead_time_demand, 3),
        "safety_stock": round(f.plan.safety_stock, 3),
        "reorder_point": f.plan.reorder_point,
        "reorder_point_set": f.plan.reorder_point if applied else f.position.reorder_point,
        "days_of_cover": None if f.plan.days_of_cover is None else round(f.plan.days_of_cover, 1),
        "order_quantity": f.plan.order_quantity,
    }


def _print_forecasts(
    forecasts: list[StockForecast], *, days: int, alpha: float, service_level: float, applied: bool
) -> None:
    from common.inventory.charts import demand_span

    z = fc.z_score(service_level)
    span = demand_span(forecasts[0].start, [f.demand for f in forecasts]) if forecasts else "no data"
    shown = table(
        key("sku"),
        key("warehouse"),
        "available (incoming)",
        "demand per day (model)",
        "lead time",
        "safety stock",
        "reorder point (set)",
        "days of cover",
        "order qty",
        title=f"{days}-day window ({span}), alpha {alpha:g}, service level {service_level:g} (z {z:.3f})",
    )
    for f in forecasts:
        current = f.plan.reorder_point if applied else f.position.reorder_point
        shown.add_row(
            f.sku,
            f.warehouse,
            f"{f.position.available}" + (f" (+{f.position.incoming})" if f.position.incoming else ""),
            f"{f.plan.mean_daily:.2f} ± {f.plan.std_daily:.2f} ({f.plan.model})",
            f"{f.lead_time_days} d",
            f"{f.plan.safety_stock:.1f}",
            f"{f.plan.reorder_point} ({'-' if current is None else current})",
            _cover(f.plan.days_of_cover),
            str(f.plan.order_quantity) if f.plan.order_quantity else "-",
        )
    out.print(shown)


@inventory_app.command("reorder-point")
@run_async
async def inventory_reorder_point(
    sku: str,
    warehouse: Annotated[str, typer.Option(help="Which warehouse.")],
    point: Annotated[int | None, typer.Argument(help="Alert when available falls to this many units.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the reorder point (no alerts).")] = False,
) -> None:
    """Set (or --clear) the reorder point of a SKU at a warehouse by hand."""
    if clear == (point is not None):
        raise ValueError("give either a reorder point (a number >= 0) or --clear")
    if point is not None and point < 0:
        raise ValueError(f"reorder point must be >= 0 (got {point})")
    async with open_store() as store:
        crossings = await store.stock.set_reorder_point(sku, warehouse, point)
        out.print(f"{sku} @ {warehouse}: reorder point {'cleared' if point is None else point}", highlight=False)
        await _alert_ops(store, crossings)


# ---------------------------------------------------------------------------------------------------------
# Import


@inventory_app.command("import")
@run_async
async def inventory_import(
    file: Annotated[Path, typer.Argument(help="CSV with columns sku, warehouse, on_hand.")],
    as_json: JsonOption = False,
) -> None:
    """Set on hand per SKU and warehouse from a CSV (each difference an adjustment in the ledger).

    Any bad row: every problem is listed, exit code 2, nothing is written."""
    from common.inventory.importers import parse_stock, read_text

    rows = parse_stock(read_text(file))
    async with open_store() as store:
        result = await store.stock.import_stock(rows, ref=f"import:{file.name}"[:200])
        crossings = await store.stock.low_stock_crossings({r.sku for r in rows}, pending_only=True)
        _print_import(result, as_json, "stock rows")
        keys = {(r.sku, r.warehouse) for r in rows}
        await _alert_ops(store, [c for c in crossings if (c.sku, c.warehouse) in keys])


def _print_import(result: Any, as_json: bool, what: str) -> None:
    if as_json:
        print_json(asdict(result))
    else:
        out.print(
            f"imported {what}: {result.created} new, {result.updated} updated, {result.unchanged} unchanged",
            highlight=False,
        )
