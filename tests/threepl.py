"""A 3PL warehouse and SKUs only it (or a test's own warehouse) stocks, for tests and recorded histories that send
parcels to the sandbox 3PL without sending any other order there."""

from __future__ import annotations

import uuid

from common.catalog.contracts import ProductImport, WarehouseKind
from common.store import Store


async def threepl_warehouse(
    store: Store, code: str, country: str, region: str | None, provider: str = "shipbob"
) -> None:
    name = f"{provider} {code}"
    await store.catalog.upsert_warehouse(code, name, country, region, kind=WarehouseKind.THREEPL, provider=provider)


async def new_sku(store: Store, prefix: str = "TPL") -> str:
    code = f"{prefix}-{uuid.uuid4().hex[:6].upper()}"
    await store.catalog.import_products([ProductImport(row=1, sku=code, name=code, price_cents=1000, weight_grams=300)])
    return code
