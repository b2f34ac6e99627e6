"""Customers' data keys (the payload codec's inner layer) and the customer each workflow belongs to.

A data key is 32 random bytes, stored only wrapped (AES-256-GCM) by a master codec key; destroying it
(`destroy`) is what makes a forgotten customer's histories unreadable. Keys and workflows are cached in memory
(they never change but for an erasure); `cache=False` reads the database every time (the codec server, which
must stop decoding the moment a customer is forgotten, whichever process forgot them).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from common.crypto.codec import CustomerDataErased, DataKey, PayloadUndecodable, decrypt, encrypt
from common.crypto.keys import KEY_BYTES, KeyRing
from common.db import tables as t
from common.db.database import Database, insert, utc_now

_CACHED = 10_000


class _Lru:
    """At most _CACHED entries, each for `ttl` seconds (None: until evicted)."""

    def __init__(self, ttl: float | None = None) -> None:
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or (self._ttl is not None and time.monotonic() - entry[0] > self._ttl):
            return False, None
        return True, entry[1]

    def remember(self, key: str, value: Any) -> Any:
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > _CACHED:
            self._entries.popitem(last=False)
        return value

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, value) for key, (_, value) in self._entries.items()]


class CustomerKeyStore:
    def __init__(self, db: Database, ring: KeyRing, *, cache: bool = True, key_ttl: float = 60.0) -> None:
        self._db = db
        self._ring = ring
        self._cache = cache
        self._workflows = _Lru()  # workflow id -> customer id, or None (a workflow of no customer): never changes
        # Data keys are read again after key_ttl seconds: a customer forgotten by another process is unreadable
        # here too within that time
        self._keys = _Lru(key_ttl)  # key id -> DataKey
        self._active = _Lru(key_ttl)  # customer id -> DataKey

    async def customer_of(self, workflow_id: str) -> str | None:
        if self._cache and (cached := self._workflows.get(workflow_id))[0]:
            return cached[1]  # type: ignore[no-any-return]
        w = t.workflow_customers
        rows = await self._db.read(select(w.c.customer_id).where(w.c.workflow_id == workflow_id))
        customer = rows[0].customer_id if rows else None
        # A workflow's first payload (its start) registers it before any other process sees it, so a miss here
        # is a workflow of no customer (e.g. a 3PL inventory sync), and stays one
        return self._workflows.remember(workflow_id, customer) if self._cache else customer

    async def register(self, workflow_id: str, customer_id: str) -> None:
        w = t.workflow_customers

        async def op(conn: Any) -> None:
            row = {"workflow_id": workflow_id, "customer_id": customer_id, "created_at": utc_now()}
            await conn.execute(insert(conn, w).values(row).on_conflict_do_nothing(index_elements=[w.c.workflow_id]))

        await self._db.write(op, "register workflow customer")
        if self._cache:
            self._workflows.remember(workflow_id, customer_id)

    async def active_key(self, customer_id: str, *, fresh: bool = False) -> DataKey:
        if self._cache and not fresh and (cached := self._active.get(customer_id))[0]:
            return cached[1]  # type: ignore[no-any-return]
        k = t.customer_keys
        stmt = (
            select(k)
            .where(k.c.customer_id == customer_id, k.c.destroyed_at.is_(None))
            .order_by(k.c.created_at.desc(), k.c.key_id)
            .limit(1)
        )
        rows = await self._db.read(stmt)
        data_key = self._unwrap(rows[0]) if rows else await self._create(customer_id)
        return self._active.remember(customer_id, data_key) if self._cache else data_key

    async def key(self, key_id: str) -> DataKey:
        if self._cache and (cached := self._keys.get(key_id))[0]:
            return cached[1]  # type: ignore[no-any-return]
        k = t.customer_keys
        rows = await self._db.read(select(k).where(k.c.key_id == key_id))
        if not rows:
            raise PayloadUndecodable(f"customer data key {key_id!r} is not in the key store")
        row = rows[0]
        if row.destroyed_at is not None:
            raise CustomerDataErased(row.customer_id, row.destroyed_at.isoformat(timespec="seconds"))
        data_key = self._unwrap(row)
        return self._keys.remember(key_id, data_key) if self._cache else data_key

    async def destroy_all(self, customer_id: str, at: datetime) -> int:
        """Delete the customer's data keys for good (their rows stay, without the key); the number destroyed."""
        k = t.customer_keys

        async def op(conn: Any) -> int:
            stmt = (
                update(k)
                .where(k.c.customer_id == customer_id, k.c.destroyed_at.is_(None))
                .values(wrapped=None, wrapped_by=None, destroyed_at=at)
            )
            return int((await conn.execute(stmt)).rowcount)

        destroyed = await self._db.write(op, "destroy customer data keys")
        self.forget_cached(customer_id)
        return destroyed

    def forget_cached(self, customer_id: str) -> None:
        self._active.drop(customer_id)
        for key_id in [kid for kid, dk in self._keys.items() if dk.customer_id == customer_id]:
            self._keys.drop(key_id)

    async def workflows_of(self, customer_id: str) -> list[str]:
        w = t.workflow_customers
        rows = await self._db.read(
            select(w.c.workflow_id).where(w.c.customer_id == customer_id).order_by(w.c.workflow_id)
        )
        return [r.workflow_id for r in rows]

    async def rewrap(self) -> int:
        """Wrap every live data key under the newest master key (so older master keys can be retired); the
        number rewrapped."""
        k = t.customer_keys
        newest = self._ring.newest
        rows = await self._db.read(select(k).where(k.c.destroyed_at.is_(None), k.c.wrapped_by != newest.id))
        done = 0
        for row in rows:
            secret = self._unwrap(row).secret
            wrapped = encrypt(newest.secret, secret, row.key_id.encode())

            async def op(conn: Any, key_id: str = row.key_id, wrapped: bytes = wrapped) -> int:
                stmt = (
                    update(k)
                    .where(k.c.key_id == key_id, k.c.destroyed_at.is_(None))
                    .values(wrapped=wrapped, wrapped_by=newest.id)
                )
                return int((await conn.execute(stmt)).rowcount)

            done += await self._db.write(op, "rewrap data key")
        return done

    async def wrapped_by_counts(self) -> dict[str, int]:
        """How many live data keys each master key wraps."""
        k = t.customer_keys
        rows = await self._db.read(select(k.c.wrapped_by).where(k.c.destroyed_at.is_(None)))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.wrapped_by] = counts.get(r.wrapped_by, 0) + 1
        return counts

    async def _create(self, customer_id: str) -> DataKey:
        newest = self._ring.newest
        key_id = f"ck_{secrets.token_hex(12)}"
        secret = secrets.token_bytes(KEY_BYTES)
        row = {
            "key_id": key_id,
            "customer_id": customer_id,
            "wrapped": encrypt(newest.secret, secret, key_id.encode()),
            "wrapped_by": newest.id,
            "created_at": utc_now(),
            "destroyed_at": None,
        }

        async def op(conn: Any) -> None:
            await conn.execute(t.customer_keys.insert().values(row))

        # Stored before any payload uses it. Two first uses at once make two keys; both stay readable.
        await self._db.write(op, "create customer data key")
        return DataKey(key_id, customer_id, secret)

    def _unwrap(self, row: Any) -> DataKey:
        master = self._ring.get(row.wrapped_by)
        if master is None and self._ring.reload():
            master = self._ring.get(row.wrapped_by)
        if master is None:
            raise PayloadUndecodable(
                f"customer data key {row.key_id!r} is wrapped by codec key {row.wrapped_by!r}, "
                "which this process does not have"
            )
        return DataKey(row.key_id, row.customer_id, decrypt(master.secret, row.wrapped, row.key_id.encode()))
