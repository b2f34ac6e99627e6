"""`fulfill`: the command line for order intake, ops and the warehouse. One module per area.

The `fulfill` script is workers/cli.py: this app, plus the developer's commands where the sandbox is installed."""

from __future__ import annotations

from common.cli._help import CliApp
from common.cli.access import api_key_app
from common.cli.catalog import catalog_app
from common.cli.customers import customer_app
from common.cli.inventory import inventory_app
from common.cli.keys import keys_app
from common.cli.kpi import kpi
from common.cli.notifications import notifications
from common.cli.orders import order_app
from common.cli.threepl_inventory import register as register_inventory_sync
from common.cli.threepl_parcels import register_parcels
from common.cli.warehouse import warehouse_app

# No locals in tracebacks: they would print customers' personal data.
app = CliApp(
    help="Order fulfillment engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(order_app, name="order")
app.add_typer(inventory_app, name="inventory")
app.add_typer(catalog_app, name="catalog")
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(api_key_app, name="api-key")
app.add_typer(customer_app, name="customer")
app.add_typer(keys_app, name="keys")
threepl_app = CliApp(help="Parcels and stock at 3PL warehouses.", no_args_is_help=True)
register_parcels(threepl_app)
register_inventory_sync(threepl_app)
app.add_typer(threepl_app, name="3pl")
app.command("notifications")(notifications)
app.command("kpi")(kpi)


if __name__ == "__main__":
    app()
