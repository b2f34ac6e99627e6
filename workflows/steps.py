"""How the workflows run their activities so that an outage never fails an order.

A step runs as a local activity first (a marker in history, no task-queue round trip), with a few quick
attempts inside the worker. If the provider is still failing after them, the step waits the outage out as a
regular activity retried for as long as it takes (capped backoff; retries are not written to history), and
the workflow shows what it waits for (`ProviderWait`: the order's `waiting_for`, its current details in the
Web UI, the `WaitingFor` search attribute) until the provider answers. Only errors that retrying cannot fix
(a non-retryable ApplicationError, or a type the step lists) are raised.

Messages (customer notices, ops and low-stock alerts) never hold an order up: one that cannot go out now is
queued and sent in the background, in order, while the order goes on (`Messenger`).

Orders recorded before this behaviour raised instead: both fall-backs sit behind `workflow.patched`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from common.models import ProviderWait

# Patch ids (see README "Changing a running workflow"): orders recorded before them replay the old way.
WAIT_OUT_OUTAGES = "wait-out-outages"
MESSAGES_NEVER_FAIL = "messages-never-fail"

_Result = TypeVar("_Result")
_Arg = TypeVar("_Arg")
StepFn = Callable[[Any, _Arg], Awaitable[_Result]]


@dataclass(frozen=True)
class Step:
    """A kind of step: the provider it needs, how long one attempt may take, the errors retrying cannot fix."""

    provider: str  # short name for lists and filters: database, carrier, email, sms, payments
    attempt_timeout: timedelta
    non_retryable: tuple[str, ...] = ()
    # Quick attempts in the worker (1 s, 2 s, 4 s apart) before the step waits the outage out.
    local_attempts: int = 4
    # Other providers the step talks to, told apart by the error type the activity raises.
    providers_by_error: tuple[tuple[str, str], ...] = ()

    def local_options(self) -> dict[str, Any]:
        return {
            "start_to_close_timeout": self.attempt_timeout,
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=10),
                maximum_attempts=self.local_attempts,
                non_retryable_error_types=list(self.non_retryable),
            ),
        }

    def patient_options(self) -> dict[str, Any]:
        """Retried until the provider answers: every 5 s at first, then at most every 5 minutes."""
        return {
            "start_to_close_timeout": self.attempt_timeout,
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=5),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=5),
                non_retryable_error_types=list(self.non_retryable),
            ),
        }

    def is_permanent(self, err: BaseException) -> bool:
        """Retrying cannot fix it: a non-retryable ApplicationError or a type this step lists."""
        cause = application_error(err)
        if cause is None:
            return False  # a timeout: the provider did not answer in time
        return cause.non_retryable or (cause.type or "") in self.non_retryable

    def provider_of(self, err: BaseException) -> str:
        cause = application_error(err)
        by_error = dict(self.providers_by_error)
        return by_error.get(cause.type or "", self.provider) if cause is not None else self.provider


DATABASE = Step(
    "database",
    timedelta(seconds=30),
    non_retryable=("UnknownSkuError", "UnknownWarehouseError", "ShipmentReleased", "PickConflict", "InvalidRows"),
)
CARRIER = Step("carrier", timedelta(seconds=60), non_retryable=("CarrierAddressError", "CarrierRejected"))
MESSAGES = Step(
    "email",
    timedelta(seconds=45),
    providers_by_error=(("EmailUnavailable", "email"), ("SmsUnavailable", "sms")),
)
PAYMENTS = Step("payments", timedelta(seconds=30), non_retryable=("PaymentDeclined",))


def application_error(err: BaseException) -> ApplicationError | None:
    """The ApplicationError behind an activity failure: raised as it is by a local activity, the cause of an
    ActivityError for a regular one."""
    while isinstance(err, ActivityError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, ApplicationError):
        return err
    return None


def innermost(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)


@dataclass
class StepRunner:
    """Runs a workflow's steps (see the module docstring) and keeps the provider waits under way."""

    on_change: Callable[[], None] = lambda: None
    # Runs around each local attempt (the order's search-attribute batching waits for local steps).
    around_local: Callable[[], AbstractContextManager[object]] = nullcontext
    waits: dict[int, ProviderWait] = field(default_factory=dict)
    _next_wait: int = 0

    async def run(self, fn: StepFn[_Arg, _Result], arg: _Arg, *, step: Step, summary: str) -> _Result:
        try:
            with self.around_local():
                return await workflow.execute_local_activity_method(fn, arg, summary=summary, **step.local_options())
        except (ActivityError, ApplicationError, TimeoutError) as err:
            if step.is_permanent(err) or not workflow.patched(WAIT_OUT_OUTAGES):
                raise
            first_error = err
        return await self.wait_out(fn, arg, step=step, summary=summary, error=first_error)

    async def wait_out(
        self, fn: StepFn[_Arg, _Result], arg: _Arg, *, step: Step, summary: str, error: BaseException
    ) -> _Result:
        """The provider is down: retry as a regular activity until it answers, showing what is awaited."""
        provider = step.provider_of(error)
        with self._waiting(ProviderWait(provider=provider, step=summary, since=workflow.now(), error=innermost(error))):
            return await workflow.execute_activity_method(
                fn, arg, summary=f"{summary} (waiting for the {provider})", **step.patient_options()
            )

    @property
    def providers(self) -> list[str]:
        return sorted({w.provider for w in self.waits.values()})

    @contextmanager
    def _waiting(self, wait: ProviderWait) -> Iterator[None]:
        key = self._next_wait
        self._next_wait += 1
        self.waits[key] = wait
        self.on_change()
        try:
            yield
        finally:
            del self.waits[key]
            self.on_change()


@dataclass
class _Message:
    fn: StepFn[Any, Any]
    arg: Any
    summary: str


@dataclass
class Messenger:
    """Sends a workflow's messages without ever failing or holding up the workflow: a message goes out at once
    when nothing is queued before it; one that cannot go out now (its provider is down) waits in the queue,
    with every later one behind it, and a background task sends them in order as soon as the provider is back.
    A message that can never be sent is noted and dropped."""

    runner: StepRunner
    on_note: Callable[[str], None]
    on_change: Callable[[], None] = lambda: None  # the queue grew or shrank
    queue: list[_Message] = field(default_factory=list)
    _sender: asyncio.Task[None] | None = None
    _last_error: BaseException | None = None

    async def send(self, fn: StepFn[_Arg, Any], arg: _Arg, *, summary: str) -> None:
        if not self.queue:
            try:
                with self.runner.around_local():
                    await workflow.execute_local_activity_method(fn, arg, summary=summary, **MESSAGES.local_options())
                return
            except (ActivityError, ApplicationError, TimeoutError) as err:
                if not workflow.patched(MESSAGES_NEVER_FAIL):
                    raise
                if MESSAGES.is_permanent(err):
                    self.on_note(f"{summary}: not sent ({innermost(err)})")
                    return
                self.on_note(f"{summary}: waiting for the {MESSAGES.provider_of(err)} ({innermost(err)})")
                self.queue.append(_Message(fn, arg, summary))
                self._last_error = err
        else:
            self.queue.append(_Message(fn, arg, summary))
        self.on_change()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())

    async def drained(self) -> None:
        """Every queued message went out (or was given up): before the workflow closes."""
        await workflow.wait_condition(lambda: not self.queue)

    async def _send_queued(self) -> None:
        while self.queue:
            message = self.queue[0]
            error = self._last_error or ApplicationError("provider unavailable")
            try:
                await self.runner.wait_out(message.fn, message.arg, step=MESSAGES, summary=message.summary, error=error)
                self.on_note(f"{message.summary}: sent")
            except (ActivityError, ApplicationError) as err:
                self.on_note(f"{message.summary}: not sent ({innermost(err)})")
            finally:
                self.queue.pop(0)
                self.on_change()
