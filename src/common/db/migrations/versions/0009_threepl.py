"""Third-party logistics (3PL) warehouses beside our own.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

warehouses gain a kind: own (our staff pick, we buy the label; every warehouse so far) or 3pl, with the provider
that picks, packs and ships from it (e.g. shipbob). threepl_parcels keeps each parcel handed to a 3PL under its
reference id, with its state as the 3PL last told us and its tracking number once shipped; threepl_sync_cursors
where each 3PL's next "changes since" pull starts and when its stock was last compared with ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = ("submitted", "accepted", "on_hold", "rejected", "shipped", "delivered", "cancelled")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


_KIND_CHECK = "kind IN ('own', '3pl')"
_PROVIDER_CHECK = "(kind = 'own') = (provider IS NULL)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: rebuilding warehouses would break the stock rows' foreign keys inside the migration's
        # transaction. SQLite adds a column with its CHECK in place.
        op.execute(
            "ALTER TABLE warehouses ADD COLUMN kind VARCHAR(8) DEFAULT 'own' NOT NULL "
            f"CONSTRAINT ck_warehouses_kind CHECK ({_KIND_CHECK})"
        )
        op.execute(
            "ALTER TABLE warehouses ADD COLUMN provider VARCHAR(32) "
            f"CONSTRAINT ck_warehouses_provider CHECK ({_PROVIDER_CHECK})"
        )
    else:
        op.add_column("warehouses", sa.Column("kind", sa.String(8), nullable=False, server_default="own"))
        op.add_column("warehouses", sa.Column("provider", sa.String(32), nullable=True))
        op.create_check_constraint(op.f("ck_warehouses_kind"), "warehouses", _KIND_CHECK)
        op.create_check_constraint(op.f("ck_warehouses_provider"), "warehouses", _PROVIDER_CHECK)
    op.create_table(
        "threepl_parcels",
        sa.Column("reference_id", sa.String(120), nullable=False),
        sa.Column("order_id", sa.String(80), nullable=False),
        sa.Column("shipment_no", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("warehouse", sa.String(32), nullable=False),
        sa.Column("provider_order_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("service", sa.String(64), nullable=True),
        sa.Column("tracking_number", sa.String(200), nullable=True),
        sa.Column("tracking_url", sa.Text(), nullable=True),
        _ts("submitted_at"),
        _ts("accepted_at", nullable=True),
        _ts("shipped_at", nullable=True),
        _ts("delivered_at", nullable=True),
        _ts("provider_updated_at", nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("reference_id", name="pk_threepl_parcels"),
        sa.CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in _STATES) + ")", name=op.f("ck_threepl_parcels_state")
        ),
    )
    op.create_index("ix_threepl_parcels_order_id", "threepl_parcels", ["order_id"])
    op.create_index("ix_threepl_parcels_tracking_number", "threepl_parcels", ["tracking_number"])
    op.create_index("ix_threepl_parcels_provider_state", "threepl_parcels", ["provider", "state"])
    op.create_table(
        "threepl_sync_cursors",
        sa.Column("provider", sa.String(32), nullable=False),
        _ts("orders_since", nullable=True),
        _ts("inventory_synced_at", nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("provider", name="pk_threepl_sync_cursors"),
    )


def downgrade() -> None:
    op.drop_table("threepl_sync_cursors")
    op.drop_index("ix_threepl_parcels_provider_state", table_name="threepl_parcels")
    op.drop_index("ix_threepl_parcels_tracking_number", table_name="threepl_parcels")
    op.drop_index("ix_threepl_parcels_order_id", table_name="threepl_parcels")
    op.drop_table("threepl_parcels")
    with op.batch_alter_table("warehouses") as batch:
        batch.drop_constraint(op.f("ck_warehouses_provider"), type_="check")
        batch.drop_constraint(op.f("ck_warehouses_kind"), type_="check")
        batch.drop_column("provider")
        batch.drop_column("kind")
