"""A 3PL warehouse and SKUs only it (or a test's own warehouse) stocks, for tests and recorded histories that send
parcels to the sandbox 3PL without sending any other order there."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update

from common.catalog.contracts import ProductImport
from common.db import tables as t
from common.store import Store


async def threepl_warehouse(
    store: Store, code: str, country: str, region: str | None, provider: str = "shipbob"
) -> None:
    await store.catalog.upsert_warehouse(code, f"{provider} {code}", country, region)

    async def as_3pl(conn: Any) -> None:
        await conn.execute(
            update(t.warehouses).where(t.warehouses.c.code == code).values(kind="3pl", provider=provider)
        )

    await store.db.write(as_3pl, f"make {code} a 3PL warehouse")


async def new_sku(store: Store, prefix: str = "TPL") -> str:
    code = f"{prefix}-{uuid.uuid4().hex[:6].upper()}"
    await store.catalog.import_products([ProductImport(row=1, sku=code, name=code, price_cents=1000, weight_grams=300)])
    return code
