"""Returns: RMAs and their lines, the refunds ledger, and the "writeoff" ledger kind (damaged returns).

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-10

SQLite cannot change a CHECK constraint in place, so stock_ledger is rebuilt in batch mode from its 0002
definition below (nothing references it). The new tables are plain creates.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained on purpose: later edits to tables.py must not change what this revision does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OLD_KINDS = "kind IN ('receipt', 'reservation', 'release', 'commit', 'adjustment', 'count', 'return')"
_NEW_KINDS = "kind IN ('receipt', 'reservation', 'release', 'commit', 'adjustment', 'count', 'return', 'writeoff')"
_RMA_STATUSES = (
    "status IN ('REQUESTED', 'IN_TRANSIT', 'RECEIVED', 'REFUND_FAILED', 'REFUNDED', 'EXCHANGED', 'EXPIRED', 'FAILED')"
)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _ledger_0002(kinds: str) -> sa.Table:
    """stock_ledger exactly as 0002 left it (with the given kind check), for SQLite's table rebuild."""
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


def upgrade() -> None:
    with op.batch_alter_table("stock_ledger", copy_from=_ledger_0002(_OLD_KINDS)) as batch:
        batch.drop_constraint(op.f("ck_stock_ledger_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_stock_ledger_kind"), sa.text(_NEW_KINDS))

    op.create_table(
        "rmas",
        sa.Column("rma_id", sa.String(100), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("exchange", sa.Boolean(), nullable=False),
        sa.Column("replacement_order_id", sa.String(80), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("tracking_number", sa.String(200), nullable=True),
        sa.Column("label_url", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("rma_id", name=op.f("pk_rmas")),
        sa.CheckConstraint(_RMA_STATUSES, name=op.f("ck_rmas_status")),
    )
    op.create_index("ix_rmas_order_id", "rmas", ["order_id"])
    op.create_table(
        "rma_lines",
        sa.Column("rma_id", sa.String(100), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("resellable", sa.Integer(), nullable=False),
        sa.Column("damaged", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("rma_id", "sku", name=op.f("pk_rma_lines")),
        sa.ForeignKeyConstraint(["rma_id"], ["rmas.rma_id"], name=op.f("fk_rma_lines_rma_id_rmas")),
        sa.ForeignKeyConstraint(["sku"], ["products.sku"], name=op.f("fk_rma_lines_sku_products")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_rma_lines_quantity_positive")),
        sa.CheckConstraint("resellable >= 0 AND damaged >= 0", name=op.f("ck_rma_lines_inspected_non_negative")),
        sa.CheckConstraint("resellable + damaged <= quantity", name=op.f("ck_rma_lines_inspected_within_authorised")),
    )
    op.create_table(
        "refunds",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=False),
        sa.Column("rma_id", sa.String(100), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_refunds")),
        sa.UniqueConstraint("refund_id", name=op.f("uq_refunds_refund_id")),
        sa.CheckConstraint("amount_cents >= 0", name=op.f("ck_refunds_amount_non_negative")),
        sa.CheckConstraint("status IN ('refunded')", name=op.f("ck_refunds_status")),
    )
    op.create_index("ix_refunds_order_id", "refunds", ["order_id"])


def downgrade() -> None:
    op.drop_table("refunds")
    op.drop_table("rma_lines")
    op.drop_table("rmas")
    # Write-off rows are refused by the old check: they cannot go back.
    with op.batch_alter_table("stock_ledger", copy_from=_ledger_0002(_NEW_KINDS)) as batch:
        batch.drop_constraint(op.f("ck_stock_ledger_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_stock_ledger_kind"), sa.text(_OLD_KINDS))
