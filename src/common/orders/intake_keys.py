"""Idempotency-Key headers of order intake: a key, per client, stands for one order body for good."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.errors import StoreError


class IdempotencyKeyReused(StoreError):
    """The key came before with another body."""


class IntakeKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, client: str, key: str, request_digest: str, order_id: str) -> bool:
        """Bind `key` to this body (its digest) and order; True if it is new, False if it came before with the
        same body (a retry). IdempotencyKeyReused if it came with another body."""

        async def op(conn: Any) -> bool:
            stmt = insert(conn, t.intake_keys).values(
                client=client, key=key, request_digest=request_digest, order_id=order_id, created_at=utc_now()
            )
            inserted = await conn.execute(stmt.on_conflict_do_nothing(index_elements=["client", "key"]))
            if inserted.rowcount == 1:
                return True
            row = (
                await conn.execute(
                    select(t.intake_keys).where(t.intake_keys.c.client == client, t.intake_keys.c.key == key)
                )
            ).one()
            if row.request_digest != request_digest:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was used before for another request (order {row.order_id}); "
                    "nothing was started: use a new key for a new order"
                )
            return False

        return await self._db.write(op, "claim idempotency key")
