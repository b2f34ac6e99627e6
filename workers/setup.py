"""One-shot set-up of a deployment: `python -m workers.setup [--wait SECONDS]`.

Applies the Alembic migrations to FULFILL_DATABASE_URL (and to FULFILL_CODEC_KEYSTORE_URL when the customers'
data keys live in a database of their own), then registers the engine's search attributes on
FULFILL_TEMPORAL_NAMESPACE. Both steps are idempotent: a second run changes nothing and succeeds.

`--wait SECONDS` retries while the database or Temporal does not answer yet (compose and Kubernetes start them
at the same time as this job). A failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from common.config import Settings
from common.db.database import Database
from common.db.engine import head_revision, run_migrations
from common.logs import configure_logging, describe_error
from common.temporal import SEARCH_ATTRIBUTES, register_search_attributes
from common.temporal import connect as temporal_connect

log = logging.getLogger("fulfill.setup")
T = TypeVar("T")

# One attempt to reach a server may take this long (a dropped packet must not eat the whole --wait)
_ATTEMPT_TIMEOUT_S = 10.0
_RETRY_EVERY_S = 2.0
# How long added search attributes may take to be listed
_CONFIRM_WITHIN_S = 30.0
# Temporal answers these while it starts (or, NOT_FOUND, before its namespace is created)
_TRANSIENT_RPC = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.NOT_FOUND)


class SetupError(Exception):
    """A step failed; the message is the one line the operator sees."""


def _is_transient_db_error(err: BaseException) -> bool:
    """The database is not there yet (refused, unknown host, starting up, timed out), as opposed to a wrong
    password, a missing database or a failed migration, which waiting does not fix."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError | TimeoutError):
            return True
        if type(seen).__name__ in ("CannotConnectNowError", "TooManyConnectionsError"):  # asyncpg, PostgreSQL starting
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _is_transient_temporal_error(err: BaseException) -> bool:
    if isinstance(err, RPCError):
        return err.status in _TRANSIENT_RPC
    # The SDK's connect: "Failed client connect: ... tcp connect error ... Connection refused"
    return isinstance(err, TimeoutError) or (isinstance(err, RuntimeError) and "Failed client connect" in str(err))


def _why(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("dns error", "unknown host"),
        ("Name or service not known", "unknown host"),
    ):
        if needle in text:
            return short
    if isinstance(err, TimeoutError):
        return f"no answer within {_ATTEMPT_TIMEOUT_S:.0f}s"
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return f"{err.message} (create the namespace first)"
    cause = getattr(err, "orig", None) or err
    return describe_error(cause).replace("\n", " ")


async def _with_retries(
    attempt: Callable[[], Awaitable[T]],
    transient: Callable[[BaseException], bool],
    what: str,
    deadline: float,
) -> T:
    """`attempt()` until it succeeds, retrying transient errors until `deadline` (time.monotonic())."""
    tries = 0
    while True:
        tries += 1
        try:
            return await asyncio.wait_for(attempt(), timeout=_ATTEMPT_TIMEOUT_S)
        except Exception as err:  # classified below: transient ones are retried, the rest end the set-up
            if not transient(err) or time.monotonic() + _RETRY_EVERY_S > deadline:
                waited = f" (tried {tries} times)" if tries > 1 else ""
                raise SetupError(f"cannot reach {what}: {_why(err)}{waited}") from err
            log.info("%s does not answer yet (%s); retrying", what, _why(err))
            await asyncio.sleep(_RETRY_EVERY_S)


def database_urls(settings: Settings) -> list[str]:
    """The engine's database, and the customer key store's when it has a database of its own."""
    urls = [settings.database_url]
    if settings.codec_keystore_url and settings.codec_keystore_url != settings.database_url:
        urls.append(settings.codec_keystore_url)
    return urls


def _database_name(url: str) -> str:
    """host:port/database of a PostgreSQL URL, the file of a SQLite one: no user (the logs mask what looks like
    an email address, and user@host does) and no password."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite file {u.database}"
    return f"{u.host}:{u.port or 5432}/{u.database}"


async def migrate(url: str, deadline: float) -> None:
    """Wait for the database at `url` to answer, then bring its schema to the newest migration."""
    shown = _database_name(url)
    db = await Database.open(url, migrate=False)
    try:
        await _with_retries(db.ping, _is_transient_db_error, f"the database {shown}", deadline)
        try:
            await run_migrations(db.engine)  # no timeout: a migration of a big table takes what it takes
        except Exception as err:  # a failed migration: its first line, the traceback at debug level
            log.debug("migration failed", exc_info=True)
            raise SetupError(f"migrating the database {shown} failed: {describe_error(err)}") from err
    finally:
        await db.close()
    print(f"database {shown}: migrated to {head_revision()}", flush=True)


async def _listed(client: Client, namespace: str) -> set[str]:
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return set(listed.custom_attributes) | set(listed.system_attributes)


async def register(settings: Settings, deadline: float) -> None:
    """Wait for Temporal and its namespace to answer, then add the engine's search attributes it lacks."""
    where = f"Temporal at {settings.temporal_address}"
    # No payload crosses this client: the plain converter, so the set-up needs no codec keys
    client: Client = await _with_retries(
        lambda: temporal_connect(settings, data_converter=DataConverter.default),
        _is_transient_temporal_error,
        where,
        deadline,
    )
    namespace = settings.temporal_namespace

    async def add() -> list[str]:
        try:
            return await register_search_attributes(client, namespace)
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
            # Another set-up added them in between: what is left now is nothing, or what it did not add
            return await register_search_attributes(client, namespace)

    added = await _with_retries(add, _is_transient_temporal_error, f"namespace {namespace!r} on {where}", deadline)
    # Listed once the server's metadata has them: wait for that, so the first orders started after the set-up
    # find them
    until = max(deadline, time.monotonic() + _CONFIRM_WITHIN_S)
    while missing := {key.name for key in SEARCH_ATTRIBUTES} - await _listed(client, namespace):
        if time.monotonic() > until:
            raise SetupError(f"namespace {namespace!r} on {where} does not list {', '.join(sorted(missing))}")
        await asyncio.sleep(1)
    names = ", ".join(key.name for key in SEARCH_ATTRIBUTES)
    done = f"added {', '.join(added)}" if added else "already registered"
    print(f"temporal {settings.temporal_address} namespace {namespace}: search attributes {names}: {done}", flush=True)


async def setup(settings: Settings, wait: float) -> None:
    deadline = time.monotonic() + wait
    for url in database_urls(settings):
        await migrate(url, deadline)
    await register(settings, deadline)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workers.setup",
        description="Apply the database migrations and register the search attributes on the Temporal namespace "
        "(FULFILL_* settings). Safe to run again.",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying for this long while the database or Temporal does not answer yet (default: 0)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        settings = Settings()
    except ValidationError as err:
        first = err.errors()[0]
        field = "FULFILL_" + "_".join(str(p) for p in first["loc"]).upper() if first["loc"] else "settings"
        print(f"setup failed: {field}: {first['msg']}", file=sys.stderr)
        return 1
    try:
        asyncio.run(setup(settings, args.wait))
    except SetupError as err:
        print(f"setup failed: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # anything else still gets one line (the traceback with FULFILL debug logging)
        log.debug("setup failed", exc_info=True)
        print(f"setup failed: {describe_error(err)}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Straight out, without interpreter finalisation: after failed connects the Temporal SDK's runtime threads
    # can still call into Python while it shuts down and abort the process (exit 134 instead of our 1). Every
    # resource is closed already; the process's one job is done.
    os._exit(code)


if __name__ == "__main__":
    run()
