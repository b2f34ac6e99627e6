"""The catalogue's tables (products, warehouses): its queries and writes, and the connection-level checks
other domains run inside their own transactions (`require_skus`, `resolve_warehouse`, ...). Writes here take no
lock but their own rows'."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.contracts import (
    ImportResult,
    InvalidRows,
    Product,
    ProductImport,
    ProductSeed,
    UnknownSkuError,
    UnknownWarehouseError,
    Warehouse,
    WarehouseImport,
    WarehouseKind,
    WarehouseSeed,
)
from common.db import tables as t
from common.db.database import Database, insert, lock_key, utc_now
from common.db.inputs import require_int, require_text
from common.integrations.threepl_providers import PROVIDER_NAMES

_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _product(r: Row[Any]) -> Product:
    dims = (r.length_mm, r.width_mm, r.height_mm)
    return Product(
        r.sku,
        r.name,
        r.price_cents,
        r.weight_grams,
        r.created_at,
        r.lead_time_days,
        (dims[0], dims[1], dims[2]) if None not in dims else None,
    )


def _warehouse(r: Row[Any]) -> Warehouse:
    return Warehouse(r.code, r.name, r.country, r.region, WarehouseKind(r.kind), r.provider)


def kind_problem(kind: WarehouseKind, provider: str | None) -> str | None:
    """Why a warehouse of this kind cannot have this provider, or None."""
    if kind == WarehouseKind.OWN:
        return None if provider is None else f"provider: {provider!r} is for a 3pl warehouse; this one is own"
    if provider is None:
        return "provider: a 3pl warehouse names its 3PL (" + ", ".join(PROVIDER_NAMES) + ")"
    if provider not in PROVIDER_NAMES:
        return f"provider: unknown 3PL {provider!r} (known: {', '.join(PROVIDER_NAMES)})"
    return None


async def known_skus(conn: AsyncConnection, skus: Iterable[str]) -> set[str]:
    """Those of `skus` that are in the catalogue."""
    wanted = set(skus)
    return set((await conn.execute(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))).scalars())


async def warehouse_codes(conn: AsyncConnection) -> list[str]:
    return list((await conn.execute(select(t.warehouses.c.code).order_by(t.warehouses.c.code))).scalars())


async def require_skus(conn: AsyncConnection, skus: Iterable[str]) -> None:
    wanted = set(skus)
    found = await known_skus(conn, wanted)
    if wanted - found:
        raise UnknownSkuError(sorted(wanted - found))


async def resolve_warehouse(conn: AsyncConnection, code: str | None) -> str:
    """`code` if it is a warehouse; None: the first warehouse by code. UnknownWarehouseError otherwise."""
    codes = await warehouse_codes(conn)
    if code is None and codes:
        return codes[0]
    if code is None or code not in codes:
        raise UnknownWarehouseError(code, codes)
    return code


async def require_warehouse(conn: AsyncConnection, code: str) -> None:
    await resolve_warehouse(conn, code)


async def all_warehouses(conn: AsyncConnection) -> list[Warehouse]:
    return [_warehouse(r) for r in await conn.execute(select(t.warehouses).order_by(t.warehouses.c.code))]


def check_seed(products: Sequence[ProductSeed], warehouses: Sequence[WarehouseSeed]) -> None:
    for sku, name, price_cents, weight_grams in products:
        require_text("sku", sku)
        require_text("name", name)
        require_int(f"price_cents of {sku}", price_cents, minimum=0)
        require_int(f"weight_grams of {sku}", weight_grams, minimum=1)
    for code, _name, country, _region in warehouses:
        if not _COUNTRY.match(country):
            raise ValueError(f"country of {code} must be an ISO-2 code like 'GB', got {country!r}")


async def seed_rows(
    conn: AsyncConnection, products: Sequence[ProductSeed], warehouses: Sequence[WarehouseSeed], now: datetime
) -> bool:
    """Insert the seed warehouses and products, only if there are no products yet (so two processes starting
    together seed once); True if it did. Locking: the "seed-catalogue" advisory lock."""
    await lock_key(conn, "seed-catalogue")
    if (await conn.execute(select(t.products.c.sku).limit(1))).first() is not None:
        return False
    if warehouses:
        await conn.execute(
            insert(conn, t.warehouses).on_conflict_do_nothing(),
            [{"code": c, "name": n, "country": co, "region": r} for c, n, co, r in warehouses],
        )
    if products:
        await conn.execute(
            t.products.insert(),
            [{"sku": s, "name": n, "price_cents": p, "weight_grams": w, "created_at": now} for s, n, p, w in products],
        )
    return True


def _product_row_problems(rows: Sequence[ProductImport]) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for r in rows:
        try:
            require_text("sku", r.sku)
            require_text("name", r.name)
            require_int("price_cents", r.price_cents, minimum=0)
            require_int("weight_grams", r.weight_grams, minimum=1)
            if r.lead_time_days is not None:
                require_int("lead_time_days", r.lead_time_days, minimum=0)
            for d in r.dimensions_mm or ():
                require_int("dimensions", d, minimum=1)
        except ValueError as err:
            problems.append(f"row {r.row}: {err}")
        if r.sku in seen:
            problems.append(f"row {r.row}: sku: {r.sku!r} already on row {seen[r.sku]}")
        seen.setdefault(r.sku, r.row)
    return problems


def _product_values(r: ProductImport) -> dict[str, Any]:
    """The columns an imported row sets: lead time and dimensions only when given."""
    values: dict[str, Any] = {"name": r.name, "price_cents": r.price_cents, "weight_grams": r.weight_grams}
    if r.lead_time_days is not None:
        values["lead_time_days"] = r.lead_time_days
    if r.dimensions_mm is not None:
        values["length_mm"], values["width_mm"], values["height_mm"] = r.dimensions_mm
    return values


def _product_unchanged(old: Product, values: dict[str, Any]) -> bool:
    before: dict[str, Any] = {
        "name": old.name,
        "price_cents": old.price_cents,
        "weight_grams": old.weight_grams,
        "lead_time_days": old.lead_time_days,
    }
    if old.dimensions_mm is not None:
        before["length_mm"], before["width_mm"], before["height_mm"] = old.dimensions_mm
    return all(before.get(k) == v for k, v in values.items())


def _warehouse_row_problems(rows: Sequence[WarehouseImport]) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for r in rows:
        try:
            require_text("code", r.code)
            require_text("name", r.name)
            if not _COUNTRY.match(r.country):
                raise ValueError(f"country: must be an ISO 3166-1 alpha-2 code like 'GB', got {r.country!r}")
            problem = kind_problem(r.kind, r.provider)
            if problem is not None:
                raise ValueError(problem)
        except ValueError as err:
            problems.append(f"row {r.row}: {err}")
        if r.code in seen:
            problems.append(f"row {r.row}: code: {r.code!r} already on row {seen[r.code]}")
        seen.setdefault(r.code, r.row)
    return problems


class CatalogStore:
    """Products and warehouses. Imports write all rows in one transaction, or (InvalidRows listing every bad
    row) none."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def warehouse_providers(self) -> dict[str, str]:
        """code -> 3PL provider of every warehouse a 3PL runs (our own are not in it)."""
        w = t.warehouses
        rows = await self._db.read(select(w.c.code, w.c.provider).where(w.c.provider.is_not(None)))
        return {r.code: r.provider for r in rows}

    async def upsert_product(
        self,
        sku: str,
        name: str,
        price_cents: int,
        weight_grams: int,
        *,
        lead_time_days: int | None = None,
        dimensions_mm: tuple[int, int, int] | None = None,
    ) -> None:
        """Create or update a product; `lead_time_days` and `dimensions_mm` are only changed when given.
        Locking: the product row (its upsert)."""
        require_text("sku", sku)
        require_text("name", name)
        require_int("price_cents", price_cents, minimum=0)
        require_int("weight_grams", weight_grams, minimum=1)
        extra: dict[str, int] = {}
        if lead_time_days is not None:
            extra["lead_time_days"] = require_int("lead_time_days", lead_time_days, minimum=0)
        if dimensions_mm is not None:
            length, width, height = (require_int("dimensions_mm", d, minimum=1) for d in dimensions_mm)
            extra.update(length_mm=length, width_mm=width, height_mm=height)

        async def op(conn: AsyncConnection) -> None:
            ins = insert(conn, t.products).values(
                sku=sku, name=name, price_cents=price_cents, weight_grams=weight_grams, created_at=utc_now(), **extra
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.products.c.sku],
                    set_={
                        "name": ins.excluded.name,
                        "price_cents": ins.excluded.price_cents,
                        "weight_grams": ins.excluded.weight_grams,
                        **{column: getattr(ins.excluded, column) for column in extra},
                    },
                )
            )

        await self._db.write(op, f"upsert product {sku}")

    async def upsert_warehouse(
        self,
        code: str,
        name: str,
        country: str,
        region: str | None,
        *,
        kind: WarehouseKind = WarehouseKind.OWN,
        provider: str | None = None,
    ) -> None:
        """Locking: the warehouse row (its upsert)."""
        require_text("warehouse code", code)
        require_text("warehouse name", name)
        country = country.upper() if isinstance(country, str) else country
        if not isinstance(country, str) or not _COUNTRY.match(country):
            raise ValueError(f"country must be an ISO 3166-1 alpha-2 code like 'GB', got {country!r}")
        problem = kind_problem(WarehouseKind(kind), provider)
        if problem is not None:
            raise ValueError(problem)

        async def op(conn: AsyncConnection) -> None:
            values = {"code": code, "name": name, "country": country, "region": region, "kind": kind.value}
            ins = insert(conn, t.warehouses).values(**values, provider=provider)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.warehouses.c.code],
                    set_={
                        "name": ins.excluded.name,
                        "country": ins.excluded.country,
                        "region": ins.excluded.region,
                        "kind": ins.excluded.kind,
                        "provider": ins.excluded.provider,
                    },
                )
            )

        await self._db.write(op, f"upsert warehouse {code}")

    async def unknown_skus(self, skus: Iterable[str]) -> list[str]:
        """The given skus that are not in the catalogue, sorted."""
        wanted = {skus} if isinstance(skus, str) else set(skus)
        if not wanted:
            return []
        found = {r.sku for r in await self._db.read(select(t.products.c.sku).where(t.products.c.sku.in_(wanted)))}
        return sorted(wanted - found)

    async def products(self) -> list[Product]:
        return [_product(r) for r in await self._db.read(select(t.products).order_by(t.products.c.sku))]

    async def warehouses(self) -> list[Warehouse]:
        return [_warehouse(r) for r in await self._db.read(select(t.warehouses).order_by(t.warehouses.c.code))]

    async def prices(self, skus: Sequence[str]) -> dict[str, int]:
        """sku -> catalogue price in cents, of those of `skus` in the catalogue."""
        rows = await self._db.read(
            select(t.products.c.sku, t.products.c.price_cents).where(t.products.c.sku.in_(list(skus)))
        )
        return {r.sku: r.price_cents for r in rows}

    async def import_products(self, rows: Sequence[ProductImport]) -> ImportResult:
        """Create or update products. Columns not given (lead time, dimensions) keep their stored value.
        Locking: the imported rows."""
        problems = _product_row_problems(rows)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])
        pr = t.products

        async def op(conn: AsyncConnection) -> ImportResult:
            existing = {
                r.sku: _product(r) for r in await conn.execute(select(pr).where(pr.c.sku.in_([x.sku for x in rows])))
            }
            now = utc_now()
            created = updated = unchanged = 0
            for r in rows:
                values = _product_values(r)
                old = existing.get(r.sku)
                if old is None:
                    await conn.execute(pr.insert().values(sku=r.sku, created_at=now, **values))
                    created += 1
                elif _product_unchanged(old, values):
                    unchanged += 1
                else:
                    await conn.execute(update(pr).where(pr.c.sku == r.sku).values(**values))
                    updated += 1
            return ImportResult(created, updated, unchanged)

        return await self._db.write(op, "import products")

    async def import_warehouses(self, rows: Sequence[WarehouseImport]) -> ImportResult:
        """Locking: the imported rows."""
        problems = _warehouse_row_problems(rows)
        if problems:
            raise InvalidRows(problems)
        if not rows:
            raise InvalidRows(["no rows to import"])
        wh = t.warehouses

        async def op(conn: AsyncConnection) -> ImportResult:
            existing = {r.code: _warehouse(r) for r in await conn.execute(select(wh))}
            created = updated = unchanged = 0
            for r in rows:
                new = Warehouse(r.code, r.name, r.country, r.region, r.kind, r.provider)
                old = existing.get(r.code)
                values = {
                    "name": r.name,
                    "country": r.country,
                    "region": r.region,
                    "kind": r.kind.value,
                    "provider": r.provider,
                }
                if old is None:
                    await conn.execute(wh.insert().values(code=r.code, **values))
                    created += 1
                elif old == new:
                    unchanged += 1
                else:
                    await conn.execute(update(wh).where(wh.c.code == r.code).values(**values))
                    updated += 1
            return ImportResult(created, updated, unchanged)

        return await self._db.write(op, "import warehouses")
