"""The email fallback of an SMS that could not be delivered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

notifications gain, for a customer SMS, the address its email fallback goes to (the customer's email, kept at
claim time: the order that sent it may be long closed when Twilio reports it undelivered) and what became of
that fallback: pending (a status callback said undelivered/failed; a workflow is to send it), started, sent,
not-needed (the email of the same notice went out), no-email, refused. The index finds the pending ones (the
worker's relay starts those the HTTP API could not).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("fallback_recipient", sa.String(320), nullable=True))
        batch.add_column(sa.Column("fallback_status", sa.String(16), nullable=True))
    op.create_index("ix_notifications_fallback_status", "notifications", ["fallback_status"])


def downgrade() -> None:
    op.drop_index("ix_notifications_fallback_status", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("fallback_status")
        batch.drop_column("fallback_recipient")
