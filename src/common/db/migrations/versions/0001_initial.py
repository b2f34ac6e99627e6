"""Initial schema: catalogue, stock ledger, reservations, backorders, pick tasks, shipments, notifications.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained on purpose: later edits to tables.py must not change what this revision creates.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid on SQLite


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("weight_grams", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_products")),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_products_price_non_negative")),
        sa.CheckConstraint("weight_grams > 0", name=op.f("ck_products_weight_positive")),
    )
    op.create_table(
        "warehouses",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_warehouses")),
    )
    op.create_table(
        "stock_levels",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sku", "warehouse", name=op.f("pk_stock_levels")),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name=op.f("fk_stock_levels_sku_products")),
        sa.ForeignKeyConstraint(["warehouse"], ["warehouses.code"], name=op.f("fk_stock_levels_warehouse_warehouses")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_stock_levels_reserved_non_negative")),
        sa.CheckConstraint("on_hand >= reserved", name=op.f("ck_stock_levels_on_hand_covers_reserved")),
    )
    op.create_table(
        "stock_ledger",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("delta_on_hand", sa.Integer(), nullable=False),
        sa.Column("delta_reserved", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_ledger")),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name=op.f("fk_stock_ledger_sku_products")),
        sa.ForeignKeyConstraint(["warehouse"], ["warehouses.code"], name=op.f("fk_stock_ledger_warehouse_warehouses")),
        sa.CheckConstraint(
            "kind IN ('receipt', 'reservation', 'release', 'commit', 'adjustment')",
            name=op.f("ck_stock_ledger_kind"),
        ),
    )
    op.create_index("ix_stock_ledger_sku_warehouse", "stock_ledger", ["sku", "warehouse"])
    op.create_index("ix_stock_ledger_ref", "stock_ledger", ["ref"])
    op.create_table(
        "reservations",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("order_id", "sku", "warehouse", name=op.f("uq_reservations_order_id_sku_warehouse")),
        sa.ForeignKeyConstraint(
            ["sku", "warehouse"],
            ["stock_levels.sku", "stock_levels.warehouse"],
            name=op.f("fk_reservations_sku_warehouse_stock_levels"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservations_quantity_positive")),
        sa.CheckConstraint("status IN ('held', 'released', 'committed')", name=op.f("ck_reservations_status")),
    )
    op.create_table(
        "backorders",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("skus", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_backorders")),
    )
    op.create_index("ix_backorders_resolved_at_created_at", "backorders", ["resolved_at", "created_at"])
    op.create_table(
        "pick_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("confirmed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pick_tasks")),
        sa.UniqueConstraint("order_id", "attempt", name=op.f("uq_pick_tasks_order_id_attempt")),
        sa.ForeignKeyConstraint(["warehouse"], ["warehouses.code"], name=op.f("fk_pick_tasks_warehouse_warehouses")),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_pick_tasks_attempt_non_negative")),
        sa.CheckConstraint("status IN ('open', 'confirmed', 'cancelled')", name=op.f("ck_pick_tasks_status")),
    )
    op.create_index("ix_pick_tasks_status_created_at", "pick_tasks", ["status", "created_at"])
    op.create_table(
        "shipments",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("carrier_shipment_id", sa.String(200), nullable=False),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("service", sa.String(64), nullable=True),
        sa.Column("rate_cents", sa.Integer(), nullable=True),
        sa.Column("tracking_number", sa.String(200), nullable=True),
        sa.Column("label_url", sa.Text(), nullable=True),
        sa.Column("tracking_url", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shipments")),
        sa.CheckConstraint("status IN ('created', 'purchased', 'voided')", name=op.f("ck_shipments_status")),
    )
    op.create_index("ix_shipments_order_id", "shipments", ["order_id"])
    op.create_table(
        "notifications",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notifications")),
        sa.CheckConstraint("status IN ('sending', 'sent', 'failed')", name=op.f("ck_notifications_status")),
    )
    op.create_index("ix_notifications_order_id", "notifications", ["order_id"])


def downgrade() -> None:
    for table in (
        "notifications",
        "shipments",
        "pick_tasks",
        "backorders",
        "reservations",
        "stock_ledger",
        "stock_levels",
        "warehouses",
        "products",
    ):
        op.drop_table(table)
