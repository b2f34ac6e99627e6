"""Alembic migration environment for the fulfillment database (applied by `Store.open`)."""
