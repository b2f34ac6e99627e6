"""The refusal every store raises for bad input or a state that forbids the change. Kept free of SQLAlchemy so
domain contracts (imported by workflows) can subclass it."""

from __future__ import annotations


class StoreError(Exception):
    """A database operation was refused; the message says why. Nothing was changed."""
