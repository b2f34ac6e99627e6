"""Demo catalogue: two warehouses, a handful of products and opening stock, seeded into an empty database
by `make run` / `fulfill dev up` so orders can be placed straight away.

POSTER-A2 starts with no stock on purpose: ordering it shows the backorder path (receive stock later
with `fulfill inventory receive POSTER-A2 5` and the waiting order continues).
"""

from __future__ import annotations

from common.catalog.contracts import ProductSeed, StockSeed, WarehouseSeed
from common.store import Store

WAREHOUSES: list[WarehouseSeed] = [
    # (code, name, country, region)
    ("LDN-1", "London", "GB", "LDN"),
    ("NYC-1", "New York", "US", "NY"),
]

PRODUCTS: list[ProductSeed] = [
    # (sku, name, price_cents, weight_grams)
    ("MUG-RED", "Red mug", 1200, 350),
    ("MUG-BLUE", "Blue mug", 1200, 350),
    ("TEE-M", "T-shirt, size M", 1800, 180),
    ("TEE-L", "T-shirt, size L", 1800, 200),
    ("POSTER-A2", "Poster, A2", 900, 120),
    ("BOOK-ADA", "Ada Lovelace: Notes on the Analytical Engine", 2500, 600),
]

STOCK: list[StockSeed] = [
    # (sku, warehouse, on_hand)
    ("MUG-RED", "LDN-1", 50),
    ("MUG-RED", "NYC-1", 20),
    ("MUG-BLUE", "LDN-1", 10),
    ("MUG-BLUE", "NYC-1", 30),
    ("TEE-M", "LDN-1", 40),
    ("TEE-M", "NYC-1", 40),
    ("TEE-L", "LDN-1", 25),
    ("TEE-L", "NYC-1", 5),
    ("POSTER-A2", "LDN-1", 0),  # backorder demo
    ("BOOK-ADA", "LDN-1", 15),
    ("BOOK-ADA", "NYC-1", 3),
]


async def seed_demo(store: Store) -> bool:
    """Seed the demo catalogue if there are no products yet (one transaction, safe to run from several
    processes at once). Returns True if it seeded."""
    return await store.stock.seed_catalogue(PRODUCTS, WAREHOUSES, STOCK, ref="demo-seed")
