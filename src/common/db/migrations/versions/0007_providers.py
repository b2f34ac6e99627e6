"""What the providers tell us back: message delivery statuses, SMS opt-outs, and webhook events seen.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

notifications gain the provider's own word on a message after it was accepted (Twilio's status callback:
delivered, undelivered, failed with its error code; an email bounce), apart from `status`, which is ours
(sending, sent, failed). sms_opt_outs: the numbers that texted STOP (and START again), checked before every
SMS. webhook_events: each provider event id once (the dedup of every webhook: carrier, SMS); shipments are
found by tracking number (a carrier's tracking event names only that).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.add_column(_ts("delivery_updated_at", nullable=True))
    op.create_index("ix_notifications_provider_message_id", "notifications", ["provider_message_id"])
    op.create_index("ix_shipments_tracking_number", "shipments", ["tracking_number"])
    op.create_table(
        "sms_opt_outs",
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("keyword", sa.String(16), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("phone", name="pk_sms_opt_outs"),
    )
    op.create_table(
        "webhook_events",
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("source", "event_id", name="pk_webhook_events"),
    )


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("sms_opt_outs")
    op.drop_index("ix_shipments_tracking_number", table_name="shipments")
    op.drop_index("ix_notifications_provider_message_id", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("delivery_updated_at")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_status")
