"""How the workflows run their activities so that an outage never fails an order.

A step runs as a local activity first (a marker in history, no task-queue round trip), with a few quick
attempts inside the worker. If the provider is still failing after them, the step waits the outage out as a
regular activity retried for as long as it takes (capped backoff; retries are not written to history), and
the workflow shows what it waits for (`ProviderWait`: the order's `waiting_for`, its current details in the
Web UI, the `WaitingFor` search attribute) until the provider answers. Only errors that retrying cannot fix
(a non-retryable ApplicationError, or a type the step lists) are raised.

Messages (customer notices, ops and low-stock alerts) never hold an order up: what cannot go out now waits in
a queue per provider (email, sms) and is sent in the background, in order, while the order goes on
(`Messenger`).

Orders recorded before this behaviour raised instead: both fall-backs sit behind `workflow.patched`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError

with workflow.unsafe.imports_passed_through():
    from common.models import Channel, NotifyRequest, ProviderWait

# Patch ids (docs/changing-workflows.md): orders recorded before them replay the old way.
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

    def first_step_options(self) -> dict[str, Any]:
        """A customer-facing first step as a regular activity on its own task queue: the quick attempts of
        `local_options`, and if no worker of that queue starts it in time, the outage path on the workflow's
        own queue (a timeout to start is never retried, so it cannot run twice)."""
        return {**self.local_options(), "schedule_to_start_timeout": timedelta(seconds=60)}

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

    def provider_of(self, err: BaseException) -> str:
        """Who is not answering: the step's provider, unless the error names another one (a label purchase
        also writes to the database, and the database being down is what the order then waits for)."""
        cause = application_error(err)
        return _PROVIDER_OF_ERROR.get(cause.type or "", self.provider) if cause is not None else self.provider

    def is_permanent(self, err: BaseException) -> bool:
        """Retrying cannot fix it: a non-retryable ApplicationError or a type this step lists."""
        cause = application_error(err)
        if cause is None:
            return False  # a timeout: the provider did not answer in time
        return cause.non_retryable or (cause.type or "") in self.non_retryable


# Error types (the exception's class name, as Temporal reports it) and the provider they come from: the engine's
# adapters raise their own transient errors; an exception from a connection the activity did not wrap is the
# database driver's (SQLAlchemy, asyncpg, aiosqlite), or the socket under it.
_PROVIDER_OF_ERROR = {
    "CarrierTransientError": "carrier",
    "ThreePLTransientError": "3pl",
    "PaymentUnavailable": "payments",
    "EmailUnavailable": "email",
    "SmsUnavailable": "sms",
    **dict.fromkeys(
        (
            "OperationalError",
            "InterfaceError",
            "DBAPIError",
            "DatabaseError",
            "InternalError",
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "ConnectionResetError",
            "ConnectionRefusedError",
            "ConnectionError",
            "OSError",
        ),
        "database",
    ),
}

DATABASE = Step(
    "database",
    timedelta(seconds=30),
    non_retryable=("UnknownSkuError", "UnknownWarehouseError", "ShipmentReleased", "PickConflict", "InvalidRows"),
)
CARRIER = Step("carrier", timedelta(seconds=60), non_retryable=("CarrierAddressError", "CarrierRejected"))
MESSAGES = Step("email", timedelta(seconds=45))  # each message's provider is its lane: see Messenger
PAYMENTS = Step("payments", timedelta(seconds=30), non_retryable=("PaymentDeclined",))
THREEPL = Step("3pl", timedelta(seconds=60), non_retryable=("ThreePLRejected", "UnknownThreePLProvider"))


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
        self,
        fn: StepFn[_Arg, _Result],
        arg: _Arg,
        *,
        step: Step,
        summary: str,
        error: BaseException,
        provider: str | None = None,
    ) -> _Result:
        """The provider is down: retry as a regular activity until it answers, showing what is awaited."""
        provider = provider or step.provider_of(error)
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


# A message narrowed to some of its lanes, the providers it goes through (a customer notice on some of its
# channels; an ops alert has one lane, email).
Narrow = Callable[[Any, list[str]], Any]


@dataclass
class Messenger:
    """Sends a workflow's messages without ever failing or holding up the workflow. Each provider is a lane
    (email, sms): a message goes out at once on every lane where nothing waits before it; its part for a lane
    whose provider is down waits in that lane's queue, with every later message of that lane behind it, and a
    background task per lane sends them in order as soon as the provider is back. So an email outage holds
    back no SMS, and the customer gets each channel's messages in the order they happened. A message that can
    never be sent is noted and dropped."""

    runner: StepRunner
    on_note: Callable[[str], None]
    on_change: Callable[[], None] = lambda: None  # a queue grew or shrank
    queues: dict[str, list[_Message]] = field(default_factory=dict)
    _senders: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _errors: dict[str, BaseException] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    async def send(
        self,
        fn: StepFn[_Arg, Any],
        arg: _Arg,
        *,
        summary: str,
        lanes: Sequence[str],
        narrow: Narrow | None = None,
        task_queue: str | None = None,
    ) -> None:
        """`task_queue`: send it as a regular activity there (the customer task queue), in a workflow task of
        its own, instead of as a local activity inside the workflow's current task."""
        busy = [lane for lane in lanes if self.queues.get(lane)]
        free = [lane for lane in lanes if lane not in busy]
        for lane in busy:
            self._queue(lane, _Message(fn, _narrowed(narrow, arg, [lane]), summary))
        if not free:
            return
        now = _narrowed(narrow, arg, free) if busy else arg
        try:
            if task_queue is not None:
                await workflow.execute_activity_method(
                    fn, now, task_queue=task_queue, summary=summary, **MESSAGES.first_step_options()
                )
                return
            with self.runner.around_local():
                await workflow.execute_local_activity_method(fn, now, summary=summary, **MESSAGES.local_options())
            return
        except (ActivityError, ApplicationError, TimeoutError) as err:
            if not workflow.patched(MESSAGES_NEVER_FAIL):
                raise
            if MESSAGES.is_permanent(err):
                self.on_note(f"{summary}: not sent ({innermost(err)})")
                return
            failed = [lane for lane in _failed_lanes(err) if lane in free] or free
            self.on_note(f"{summary}: waiting for {', '.join(failed)} ({innermost(err)})")
            for lane in failed:
                self._errors[lane] = err
                self._queue(lane, _Message(fn, _narrowed(narrow, now, [lane]), summary))

    async def drained(self) -> None:
        """Every queued message went out (or was given up): before the workflow closes."""
        await workflow.wait_condition(lambda: not self.waiting)

    def _queue(self, lane: str, message: _Message) -> None:
        self.queues.setdefault(lane, []).append(message)
        self.on_change()
        sender = self._senders.get(lane)
        if sender is None or sender.done():
            self._senders[lane] = asyncio.create_task(self._send_queued(lane))

    async def _send_queued(self, lane: str) -> None:
        queue = self.queues[lane]
        while queue:
            message = queue[0]
            error = self._errors.get(lane) or ApplicationError(f"{lane} unavailable")
            try:
                await self.runner.wait_out(
                    message.fn, message.arg, step=MESSAGES, summary=message.summary, error=error, provider=lane
                )
                self.on_note(f"{message.summary}: sent by {lane}")
            except (ActivityError, ApplicationError) as err:
                self.on_note(f"{message.summary}: not sent by {lane} ({innermost(err)})")
            finally:
                queue.pop(0)
                self.on_change()


def _narrowed(narrow: Narrow | None, arg: Any, lanes: list[str]) -> Any:
    return arg if narrow is None else narrow(arg, lanes)


def _failed_lanes(err: BaseException) -> list[str]:
    """The lanes a message activity reported failing (its ApplicationError's details), if it did."""
    cause = application_error(err)
    details = cause.details if cause is not None else ()
    return [str(lane) for lane in details[0]] if details and isinstance(details[0], list) else []


def on_channels(request: NotifyRequest, lanes: list[str]) -> NotifyRequest:
    """A customer notice narrowed to some of its channels (the Messenger's lanes)."""
    return request.model_copy(update={"channels": [Channel(lane) for lane in lanes]})


class _Line(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...


def describe(lines: Sequence[_Line]) -> str:
    """Lines as the timelines and the customer's messages show them: "MUG-RED x1, TEE-M x2"."""
    return ", ".join(f"{line.sku} x{line.quantity}" for line in lines)


async def settle(task: Awaitable[object]) -> None:
    """Wait for a cancelled activity or part to finish cancelling (its outcome no longer matters)."""
    try:
        await task
    except (ActivityError, asyncio.CancelledError):
        pass


def timed_out(err: ActivityError) -> bool:
    """A poll that ran out of time (schedule-to-close), whether by a timeout or a last "unchanged"."""
    return isinstance(err.cause, TimeoutError) or err.retry_state == RetryState.TIMEOUT
