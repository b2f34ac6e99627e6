"""API keys in the database: created with a random secret that is stored only as its SHA-256, looked up by the
public id the key starts with, revoked for good.

A key reads `fk_<key_id>_<secret>`: the id finds the row, the digest of the whole key must match it."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, select, update

from common.access.contracts import ApiKey, ApiKeyError, CreatedKey, Scope
from common.db import tables as t
from common.db.database import Database, utc_now

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,99}$")
_KEY = re.compile(r"^fk_([a-z0-9]{12})_[A-Za-z0-9_-]{43}$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(r: Row[Any]) -> ApiKey:
    return ApiKey(r.key_id, r.name, frozenset(Scope(s) for s in r.scopes.split(",")), r.created_at, r.revoked_at)


def parse_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    wanted = [s.strip().lower() for s in scopes if s.strip()]
    if not wanted:
        raise ApiKeyError(f"give at least one scope: {', '.join(s.value for s in Scope)}")
    unknown = [s for s in wanted if s not in Scope.__members__.values()]
    if unknown:
        raise ApiKeyError(f"unknown scope {unknown[0]!r}: one of {', '.join(s.value for s in Scope)}")
    return frozenset(Scope(s) for s in wanted)


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, scopes: Iterable[str]) -> CreatedKey:
        """A new key under `name` (unique among keys not revoked) with these scopes."""
        name = name.strip()
        if not _NAME.match(name):
            raise ApiKeyError(
                f"key name {name!r}: 1-100 letters, digits, spaces or . _ : @ -, starting with a letter or digit"
            )
        granted = parse_scopes(scopes)
        key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = f"fk_{key_id}_{secrets.token_urlsafe(32)}"
        now = utc_now()

        async def op(conn: Any) -> None:
            taken = await conn.execute(
                select(t.api_keys.c.key_id).where(t.api_keys.c.name == name, t.api_keys.c.revoked_at.is_(None))
            )
            if taken.first() is not None:
                raise ApiKeyError(f"a key named {name!r} exists already: revoke it first, or choose another name")
            await conn.execute(
                t.api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    secret_sha256=_digest(secret),
                    scopes=",".join(sorted(s.value for s in granted)),
                    created_at=now,
                )
            )

        await self._db.write(op, "create API key")
        return CreatedKey(ApiKey(key_id, name, granted, now), secret)

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The key this secret is, None if it is no key of ours or it was revoked."""
        match = _KEY.match(secret)
        if match is None:
            return None
        rows = await self._db.read(select(t.api_keys).where(t.api_keys.c.key_id == match.group(1)))
        if not rows or rows[0].revoked_at is not None:
            return None
        if not hmac.compare_digest(rows[0].secret_sha256, _digest(secret)):
            return None
        return _key(rows[0])

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = select(t.api_keys).order_by(t.api_keys.c.created_at, t.api_keys.c.key_id)
        if not include_revoked:
            query = query.where(t.api_keys.c.revoked_at.is_(None))
        return [_key(r) for r in await self._db.read(query)]

    async def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the live key with this name or id; its next request is refused (401)."""
        now = utc_now()

        async def op(conn: Any) -> Row[Any]:
            live = t.api_keys.c.revoked_at.is_(None)
            which = (t.api_keys.c.name == name_or_id) | (t.api_keys.c.key_id == name_or_id)
            row = (await conn.execute(select(t.api_keys).where(live, which))).first()
            if row is None:
                raise ApiKeyError(f"no live API key named {name_or_id!r} (`fulfill api-key list` shows them)")
            await conn.execute(update(t.api_keys).where(t.api_keys.c.key_id == row.key_id).values(revoked_at=now))
            return row

        row = await self._db.write(op, "revoke API key")
        revoked = _key(row)
        return ApiKey(revoked.key_id, revoked.name, revoked.scopes, revoked.created_at, now)
