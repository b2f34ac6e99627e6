"""Order keys of orders placed again under their id: room for the placement mark.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

An order that failed for good may be placed again under its id; its second placement keeps its rows apart
from the first one's under the key `<order_id>~<placement>` (common.models.order_key), up to 80 characters
where order ids have 64. SQLite rebuilds each table in batch mode (nothing references these tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("reservations", "backorders", "pick_tasks", "shipments", "notifications")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("order_id", existing_type=sa.String(64), type_=sa.String(80), existing_nullable=False)


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("order_id", existing_type=sa.String(80), type_=sa.String(64), existing_nullable=False)
