"""The order-signal outbox, and pick tasks a stock change released.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

order_signals: signals and updates for order workflows, written in the transaction of the change they
report (a count releasing a reservation, a pick confirmation) and delivered afterwards. pick_tasks gets a
nullable released_at, which SQLite adds in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained on purpose: later edits to tables.py must not change what this revision does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "order_signals",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("delivered_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        _ts("claimed_until", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_signals")),
        sa.CheckConstraint("kind IN ('signal', 'update')", name=op.f("ck_order_signals_kind")),
    )
    op.create_index("ix_order_signals_delivered_at_id", "order_signals", ["delivered_at", "id"])
    op.create_index("ix_order_signals_workflow_id", "order_signals", ["workflow_id"])
    op.add_column("pick_tasks", _ts("released_at", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pick_tasks") as batch:
        batch.drop_column("released_at")
    op.drop_index("ix_order_signals_workflow_id", table_name="order_signals")
    op.drop_index("ix_order_signals_delivered_at_id", table_name="order_signals")
    op.drop_table("order_signals")
