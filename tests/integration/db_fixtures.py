"""Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL schema per test.

PostgreSQL comes from FULFILL_TEST_POSTGRES_URL (default: the project machine's server). If it cannot be
reached the test is skipped with the reason, except under CI=true, where that is a failure: CI must run
the database tests on both backends.

Use from a test module: `from tests.integration.db_fixtures import BACKENDS, database_url`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def postgres_url() -> str:
    return os.environ.get("FULFILL_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


async def _unreachable_reason(url: str) -> str | None:
    engine = create_async_engine(url, connect_args={"timeout": 5})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()
    return None


@asynccontextmanager
async def postgres_schema(base_url: str | None = None) -> AsyncIterator[str]:
    """A URL whose connections use a new, empty schema (via search_path); the schema is dropped after."""
    base_url = base_url or postgres_url()
    shown = make_url(base_url).render_as_string(hide_password=True)
    reason = await _unreachable_reason(base_url)
    if reason is not None:
        if _in_ci():
            pytest.fail(f"PostgreSQL at {shown} is unreachable and CI=true requires it: {reason}")
        pytest.skip(f"PostgreSQL at {shown} is unreachable ({reason}); set FULFILL_TEST_POSTGRES_URL")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"search_path": schema})
        yield url.render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database for `backend` ("sqlite" or "postgres")."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}"
    elif backend == "postgres":
        async with postgres_schema() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")
