"""Customers' data keys, for payload encryption and the right to erasure.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

customer_keys: each customer's data key(s), wrapped by a master codec key; a forgotten customer's rows keep
their id with the wrapped key gone (crypto-shredding). workflow_customers: the customer each workflow's payloads
belong to, learnt from the workflow's input when it started.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "customer_keys",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("wrapped_by", sa.String(64), nullable=True),
        _ts("created_at"),
        _ts("destroyed_at", nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_customer_keys"),
    )
    op.create_index("ix_customer_keys_customer_id", "customer_keys", ["customer_id"])
    op.create_table(
        "workflow_customers",
        sa.Column("workflow_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_workflow_customers"),
    )
    op.create_index("ix_workflow_customers_customer_id", "workflow_customers", ["customer_id"])


def downgrade() -> None:
    op.drop_table("workflow_customers")
    op.drop_table("customer_keys")
