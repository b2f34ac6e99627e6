"""`fulfill catalog ...`: the product catalogue and the warehouses, from CSV files. Database only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli._base import out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, table
from common.cli.inventory import _print_import, open_store

catalog_app = CliApp(help="Products and warehouses: list and import from CSV.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@catalog_app.command("import")
@run_async
async def catalog_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with columns sku, name, price (e.g. 12.00), weight (grams), dimensions (LxWxH cm, e.g. "
            "10x8x12; may be empty), and optionally lead_time_days."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Create or update products from a CSV.

    Any bad row: every problem is listed, exit code 2, nothing is written."""
    from common.inventory.importers import parse_products, read_text

    rows = parse_products(read_text(file))
    async with open_store() as store:
        result = await store.catalog.import_products(rows)
    _print_import(result, as_json, "products")


@catalog_app.command("warehouses")
@run_async
async def catalog_warehouses(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with columns code, name, country (ISO-2), and optional region, kind (own or 3pl) and "
            "provider (the 3PL of a 3pl warehouse: shipbob)."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Create or update warehouses from a CSV; all rows or none."""
    from common.inventory.importers import parse_warehouses, read_text

    rows = parse_warehouses(read_text(file))
    async with open_store() as store:
        result = await store.catalog.import_warehouses(rows)
    _print_import(result, as_json, "warehouses")


@catalog_app.command("show")
@run_async
async def catalog_show(as_json: JsonOption = False) -> None:
    """The products and warehouses."""
    async with open_store() as store:
        products = await store.catalog.products()
        warehouses = await store.catalog.warehouses()
    if as_json:
        print_json({"products": products, "warehouses": warehouses})
        return
    shown = table(key("sku"), "name", "price", "weight (g)", key("dimensions (cm)"), "lead time (d)", title="products")
    for p in products:
        dims = "x".join(f"{d / 10:g}" for d in p.dimensions_mm) if p.dimensions_mm else "-"
        lead = "-" if p.lead_time_days is None else str(p.lead_time_days)
        shown.add_row(p.sku, p.name, f"{p.price_cents / 100:.2f}", str(p.weight_grams), dims, lead)
    out.print(shown)
    shown = table(key("code"), "name", key("country"), key("region"), key("kind"), key("3PL"), title="warehouses")
    for w in warehouses:
        shown.add_row(w.code, w.name, w.country, w.region or "-", w.kind.value, w.provider or "-")
    out.print(shown)
