"""Shared plumbing of the `fulfill` commands: consoles, exit codes, async runner, settings, API connection.

Exit codes: 0 done, 1 refused by the engine (e.g. the order already exists) or the engine did not answer,
2 bad input (nothing changed).

Settings follow the running stack: `make run` writes the settings it runs with to `<var_dir>/stack.json`
(`write_stack_file`), and every command takes the stack's value for each `FULFILL_*` variable its shell does
not set (`follow_stack`). A `FULFILL_DATABASE_URL` naming another database than the stack's is refused:
the CLI would otherwise read and write one database while the stack's worker uses another.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowQueryFailedError
from temporalio.service import RPCError

from common.api import FulfillmentApi
from common.cli._output import jsonable
from common.config import Settings, get_settings
from common.crypto.keys import key_file
from common.db.errors import StoreError
from common.errors import FulfillmentError, InvalidOrder, OrderAlreadyExists
from common.tracing import configure as configure_tracing

out = Console()
# soft_wrap: error lines stay whole, for people and for scripts that grep them.
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

STACK_FILE = "stack.json"
# What `make run` shares with the CLI (the URL may carry a password: the file is the user's alone)
STACK_SETTINGS = (
    "database_url",
    "temporal_address",
    "temporal_namespace",
    "task_queue",
    "sandbox_host",
    "sandbox_smtp_port",
    "sandbox_http_port",
    "sandbox_carrier_port",
    "sandbox_payments_port",
    "payments_provider",
    "stripe_api_key",
    "stripe_api_base",
    "codec_key_file",
    "codec_keystore_url",
)


class SettingsProblem(Exception):
    """The command cannot run with these settings (the message says which and why); nothing was done."""


class StackMismatch(SettingsProblem):
    """The shell's FULFILL_DATABASE_URL names another database than the running stack's."""


def run_async(fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command with the running stack's settings; turn the engine's refusals into a clear message
    and an exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _prepare_settings()
            return asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]
        except typer.Exit:
            raise  # a command's own exit code (click's Exit is a RuntimeError: keep it from the clause below)
        except SettingsProblem as e:
            err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except InvalidOrder as e:
            err.print("[red]error:[/] invalid order, nothing was started:")
            for problem in e.problems:
                err.print(f"  - {problem}", markup=False, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OrderAlreadyExists as e:
            err.print(f"[yellow]{escape(str(e))}[/]")
            raise typer.Exit(EXIT_REFUSED) from None
        except (FulfillmentError, StoreError, ValueError) as e:
            err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError) as e:
            # Temporal took the request but nothing answered it (e.g. a query needs a worker and none runs)
            err.print(
                f"[red]error:[/] the engine did not answer (is a worker running? `make run`): {escape(_short(e))}",
                highlight=False,
            )
            raise typer.Exit(EXIT_REFUSED) from None
        except (ConnectionError, OSError, RuntimeError) as e:
            err.print(
                f"[red]error:[/] cannot reach the engine ({escape(str(e))}). "
                "Is `make run` (or a worker and Temporal) up?"
            )
            raise typer.Exit(EXIT_REFUSED) from None

    return wrapper


def _prepare_settings() -> None:
    try:
        follow_stack()
        configure_tracing(get_settings(), get_settings().otel_service_name_cli)  # a command's client spans
    except ValidationError as e:  # a FULFILL_* variable that is not a valid setting
        problems = "; ".join(f"FULFILL_{'_'.join(map(str, p['loc'])).upper()}: {p['msg']}" for p in e.errors())
        raise SettingsProblem(f"invalid setting: {problems}") from None


def connect_api() -> Awaitable[FulfillmentApi]:
    return FulfillmentApi.connect(get_settings())


def cli_actor() -> str:
    """Who an ops action from this shell is by, in the order's timeline."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return f"cli:uid-{os.getuid()}"


def print_json(data: Any) -> None:
    """Print `data` as JSON in the one style of every `--json` (see `jsonable`)."""
    out.print_json(json.dumps(jsonable(data)))


def next_step(command: str) -> None:
    """A hint with the command to run next: never wrapped inside the command (copying it must work)."""
    out.print(f"next: {command}", markup=False, highlight=False, soft_wrap=True)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------------------------------------------------
# The running stack's settings


@dataclass(frozen=True)
class RunningStack:
    path: Path
    pid: int
    settings: dict[str, Any]


def stack_file(var_dir: Path) -> Path:
    return var_dir / STACK_FILE


def write_stack_file(settings: Settings, pid: int | None = None) -> Path:
    """`<var_dir>/stack.json`: the settings a running stack uses (STACK_SETTINGS), mode 0600. A SQLite path is
    made absolute, so a CLI started elsewhere still finds the same file."""
    shared = {name: getattr(settings, name) for name in STACK_SETTINGS}
    shared["database_url"] = _absolute_sqlite(settings.database_url)
    shared["codec_key_file"] = str(key_file(settings).resolve())
    if settings.codec_keystore_url:
        shared["codec_keystore_url"] = _absolute_sqlite(settings.codec_keystore_url)
    doc = {
        "pid": os.getpid() if pid is None else pid,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": shared,
    }
    path = stack_file(settings.var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{STACK_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask or an older file said
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def remove_stack_file(settings: Settings, pid: int | None = None) -> None:
    """Remove the stack file if it is this process's (or `pid`'s)."""
    running = read_stack(settings.var_dir)
    if running is not None and running.pid == (os.getpid() if pid is None else pid):
        running.path.unlink(missing_ok=True)


def read_stack(var_dir: Path) -> RunningStack | None:
    """The stack file in `var_dir` if the process that wrote it still runs; None otherwise."""
    path = stack_file(var_dir)
    try:
        doc = json.loads(path.read_text())
        pid, settings = int(doc["pid"]), dict(doc["settings"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        err.print(f"[yellow]warning:[/] ignoring {path}: unreadable ({escape(str(e))})", highlight=False)
        return None
    if not _alive(pid):
        return None  # left behind by a stack that did not stop cleanly
    return RunningStack(path, pid, settings)


def follow_stack() -> RunningStack | None:
    """Point this process's settings at the running stack: each of its settings whose FULFILL_* variable is
    not set here is set from the stack file (as environment variables, so every `get_settings()` of the
    command sees them). StackMismatch if FULFILL_DATABASE_URL is set to another database."""
    running = read_stack(get_settings().var_dir)
    if running is None:
        return None
    present = {name.upper(): name for name in os.environ}
    for name, value in running.settings.items():
        if name not in Settings.model_fields:
            continue
        variable = f"FULFILL_{name.upper()}"
        if variable in present:
            if name == "database_url" and not same_database(os.environ[present[variable]], str(value)):
                raise StackMismatch(
                    f"FULFILL_DATABASE_URL is {hide_password(os.environ[present[variable]])}, but the running "
                    f"stack (make run, pid {running.pid}) uses {hide_password(str(value))}. The CLI follows the "
                    "running stack: unset FULFILL_DATABASE_URL, or stop the stack and `make clean` before "
                    "switching databases."
                )
            continue
        os.environ[variable] = "" if value is None else str(value)  # "" is "unset" for optional settings
    get_settings.cache_clear()
    return running


def same_database(a: str, b: str) -> bool:
    """Whether two database URLs name the same database (SQLite: the same file, relative paths from here)."""
    try:
        ua, ub = make_url(a), make_url(b)
    except ArgumentError:
        return a == b
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        return _sqlite_file(ua.database) == _sqlite_file(ub.database)
    return (ua.host, ua.port, ua.database, ua.username) == (ub.host, ub.port, ub.database, ub.username)


def hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _sqlite_file(database: str | None) -> str:
    if not database or database == ":memory:" or database.startswith("file:"):
        return database or ""
    return str(Path(database).resolve())


def _absolute_sqlite(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() != "sqlite" or _sqlite_file(parsed.database) == (parsed.database or ""):
        return url
    return parsed.set(database=_sqlite_file(parsed.database)).render_as_string(hide_password=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True
