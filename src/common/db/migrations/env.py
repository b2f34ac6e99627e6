"""Alembic environment, shared by `Store.open` and the alembic command line.

`Store.open` passes an open connection (already inside a transaction) in `config.attributes["connection"]`.
From the command line the URL is `config.attributes["url"]`, else FULFILL_DATABASE_URL (the engine's own
setting), else the `sqlalchemy.url` option; an async engine is created for it like the Store does.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from common.db.engine import SQLITE_BEGIN_OPTION, create_engine
from common.db.tables import metadata

# Held for the migration transaction so two processes starting together cannot both create the schema.
# (SQLite gets the same effect from BEGIN IMMEDIATE.)
POSTGRES_MIGRATION_LOCK = 0x46554C46494C4C  # "FULFILL"

config = context.config

# Only the command line configures logging; an application calling Store.open keeps its own.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("FULFILL_DATABASE_URL")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        from common.config import get_settings

        url = get_settings().database_url
    return str(url)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK})
        context.run_migrations()


async def _run_online_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "immediate"})
            async with conn.begin():
                await conn.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
    else:
        asyncio.run(_run_online_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
