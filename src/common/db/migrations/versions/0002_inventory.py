"""Inventory: ledger kinds count/return, shipment numbers on reservations, reorder points, lead times and
dimensions, purchase orders (incoming stock), low-stock crossings.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-03

SQLite cannot change a CHECK or UNIQUE constraint in place, so stock_ledger and reservations are rebuilt
(batch mode, copying from the 0001 definitions below rather than reflecting). No table references them,
so rebuilding is safe with foreign keys on. Tables that others reference (products, stock_levels) only get
nullable columns, which SQLite adds in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained on purpose: later edits to tables.py must not change what this revision does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OLD_KINDS = "kind IN ('receipt', 'reservation', 'release', 'commit', 'adjustment')"
_NEW_KINDS = "kind IN ('receipt', 'reservation', 'release', 'commit', 'adjustment', 'count', 'return')"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _ledger_0001(kinds: str) -> sa.Table:
    """stock_ledger exactly as 0001 created it (with the given kind check), for SQLite's table rebuild."""
    return sa.Table(
        "stock_ledger",
        sa.MetaData(),
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("delta_on_hand", sa.Integer(), nullable=False),
        sa.Column("delta_reserved", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id", name="pk_stock_ledger"),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name="fk_stock_ledger_sku_products"),
        sa.ForeignKeyConstraint(["warehouse"], ["warehouses.code"], name="fk_stock_ledger_warehouse_warehouses"),
        sa.CheckConstraint(kinds, name="ck_stock_ledger_kind"),
        sa.Index("ix_stock_ledger_sku_warehouse", "sku", "warehouse"),
        sa.Index("ix_stock_ledger_ref", "ref"),
    )


def _reservations_0001() -> sa.Table:
    return sa.Table(
        "reservations",
        sa.MetaData(),
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_reservations"),
        sa.UniqueConstraint("order_id", "sku", "warehouse", name="uq_reservations_order_id_sku_warehouse"),
        sa.ForeignKeyConstraint(
            ["sku", "warehouse"],
            ["stock_levels.sku", "stock_levels.warehouse"],
            name="fk_reservations_sku_warehouse_stock_levels",
        ),
        sa.CheckConstraint("quantity > 0", name="ck_reservations_quantity_positive"),
        sa.CheckConstraint("status IN ('held', 'released', 'committed')", name="ck_reservations_status"),
    )


def upgrade() -> None:
    with op.batch_alter_table("stock_ledger", copy_from=_ledger_0001(_OLD_KINDS)) as batch:
        batch.drop_constraint(op.f("ck_stock_ledger_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_stock_ledger_kind"), sa.text(_NEW_KINDS))

    with op.batch_alter_table("reservations", copy_from=_reservations_0001()) as batch:
        batch.add_column(sa.Column("shipment_no", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint(op.f("uq_reservations_order_id_sku_warehouse"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_reservations_order_id_shipment_no_sku_warehouse"), ["order_id", "shipment_no", "sku", "warehouse"]
        )
        batch.create_index("ix_reservations_sku_warehouse_status", ["sku", "warehouse", "status"])

    op.add_column("products", sa.Column("lead_time_days", sa.Integer(), nullable=True))
    op.add_column("products", sa.Column("length_mm", sa.Integer(), nullable=True))
    op.add_column("products", sa.Column("width_mm", sa.Integer(), nullable=True))
    op.add_column("products", sa.Column("height_mm", sa.Integer(), nullable=True))
    op.add_column("stock_levels", sa.Column("reorder_point", sa.Integer(), nullable=True))

    op.create_table(
        "purchase_orders",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("received_quantity", sa.Integer(), nullable=False),
        sa.Column("eta", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("closed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_orders")),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name=op.f("fk_purchase_orders_sku_products")),
        sa.ForeignKeyConstraint(
            ["warehouse"], ["warehouses.code"], name=op.f("fk_purchase_orders_warehouse_warehouses")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_purchase_orders_quantity_positive")),
        sa.CheckConstraint("received_quantity >= 0", name=op.f("ck_purchase_orders_received_non_negative")),
        sa.CheckConstraint("status IN ('open', 'received', 'cancelled')", name=op.f("ck_purchase_orders_status")),
    )
    op.create_index("ix_purchase_orders_sku_warehouse_status", "purchase_orders", ["sku", "warehouse", "status"])
    op.create_table(
        "low_stock_crossings",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("reorder_point", sa.Integer(), nullable=False),
        _ts("crossed_at"),
        _ts("rearmed_at", nullable=True),
        _ts("alerted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_low_stock_crossings")),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name=op.f("fk_low_stock_crossings_sku_products")),
        sa.ForeignKeyConstraint(
            ["warehouse"], ["warehouses.code"], name=op.f("fk_low_stock_crossings_warehouse_warehouses")
        ),
    )
    op.create_index(
        "ix_low_stock_crossings_sku_warehouse_rearmed_at",
        "low_stock_crossings",
        ["sku", "warehouse", "rearmed_at"],
    )


def downgrade() -> None:
    op.drop_table("low_stock_crossings")
    op.drop_table("purchase_orders")
    op.drop_column("stock_levels", "reorder_point")
    for column in ("height_mm", "width_mm", "length_mm", "lead_time_days"):
        op.drop_column("products", column)
    # Rows that only the new schema allows cannot go back: ledger rows of the new kinds are refused by the
    # old check, and several shipments of one order in one warehouse would break the old unique key.
    with op.batch_alter_table("reservations") as batch:
        batch.drop_index("ix_reservations_sku_warehouse_status")
        batch.drop_constraint(op.f("uq_reservations_order_id_shipment_no_sku_warehouse"), type_="unique")
        batch.create_unique_constraint(op.f("uq_reservations_order_id_sku_warehouse"), ["order_id", "sku", "warehouse"])
        batch.drop_column("shipment_no")
    with op.batch_alter_table("stock_ledger", copy_from=_ledger_0001(_NEW_KINDS)) as batch:
        batch.drop_constraint(op.f("ck_stock_ledger_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_stock_ledger_kind"), sa.text(_OLD_KINDS))
