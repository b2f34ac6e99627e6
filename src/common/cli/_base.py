"""Shared plumbing of the `fulfill` commands: consoles, exit codes, async runner, API connection.

Exit codes: 0 done, 1 refused by the engine (e.g. the order already exists) or the engine did not answer,
2 bad input (nothing changed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowQueryFailedError
from temporalio.service import RPCError

from common.api import FulfillmentApi
from common.config import get_settings
from common.db import StoreError
from common.errors import FulfillmentError, InvalidOrder, OrderAlreadyExists

out = Console()
# soft_wrap: error lines stay whole, for people and for scripts that grep them.
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def run_async(fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command; turn the engine's refusals into a clear message and an exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]
        except typer.Exit:
            raise  # a command's own exit code (click's Exit is a RuntimeError: keep it from the clause below)
        except InvalidOrder as e:
            err.print("[red]error:[/] invalid order, nothing was started:")
            for problem in e.problems:
                err.print(f"  - {problem}", markup=False, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OrderAlreadyExists as e:
            err.print(f"[yellow]{e}[/]")
            raise typer.Exit(EXIT_REFUSED) from None
        except (FulfillmentError, StoreError, ValueError) as e:
            err.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError) as e:
            # Temporal took the request but nothing answered it (e.g. a query needs a worker and none runs)
            err.print(
                f"[red]error:[/] the engine did not answer (is a worker running? `make run`): {_short(e)}",
                highlight=False,
            )
            raise typer.Exit(EXIT_REFUSED) from None
        except (ConnectionError, OSError, RuntimeError) as e:
            err.print(f"[red]error:[/] cannot reach the engine ({e}). Is `make run` (or a worker and Temporal) up?")
            raise typer.Exit(EXIT_REFUSED) from None

    return wrapper


def connect_api() -> Awaitable[FulfillmentApi]:
    return FulfillmentApi.connect(get_settings())


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
