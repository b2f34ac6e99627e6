"""Temporal wiring shared by the client, the worker, the dev stack and tests.

One place for the payload converter and the custom search attributes, so every process agrees on them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from typing import Any

import temporalio.api.common.v1
import temporalio.client
from pydantic import TypeAdapter
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateStage
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import PollerBehavior, PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum

from common.config import Settings
from common.temporal_tls import temporal_connect_options


class _TolerantJSONConverter(PydanticJSONPlainPayloadConverter):
    """Pydantic models in and out, as temporalio.contrib.pydantic does, but a field this code does not know is
    ignored when a payload is read: orders run for weeks, so a running workflow meets payloads from newer
    starters (a field added to the order) during a rolling deploy. The intake contract stays strict: unknown
    fields are refused where an order or a request comes in (common.intake, the API), not in history."""

    def from_payload(self, payload: temporalio.api.common.v1.Payload, type_hint: type | None = None) -> Any:
        hint = type_hint if type_hint is not None else Any
        try:
            adapter = _adapter(hint)
        except TypeError:  # an unhashable hint: not cached
            adapter = TypeAdapter(hint)
        return adapter.validate_json(payload.data, extra="ignore")


@lru_cache(maxsize=1024)
def _adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            *(
                _TolerantJSONConverter() if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SKUS = SearchAttributeKey.for_keyword_list("Skus")
CARRIER = SearchAttributeKey.for_keyword("Carrier")
TRACKING_NUMBER = SearchAttributeKey.for_keyword("TrackingNumber")
# True while a pick task is past its SLA: ops filter `PickOverdue=true` (false from the start: see the starter).
PICK_OVERDUE = SearchAttributeKey.for_bool("PickOverdue")
# The providers an order waits for right now, in an outage: `WaitingFor="carrier"` lists the orders it holds up.
WAITING_FOR = SearchAttributeKey.for_keyword_list("WaitingFor")
# True while a parcel at a 3PL is past its acceptance or ship SLA: `ThreePLLate=true` lists those orders.
THREEPL_LATE = SearchAttributeKey.for_bool("ThreePLLate")

# No PII here: search attributes are stored unencrypted and shown to every UI user.
SEARCH_ATTRIBUTES: list[SearchAttributeKey] = [
    ORDER_STATUS,
    CUSTOMER_ID,
    SKUS,
    CARRIER,
    TRACKING_NUMBER,
    PICK_OVERDUE,
    WAITING_FOR,
    THREEPL_LATE,
]


def customer_task_queue(task_queue: str) -> str:
    """The task queue of the customer-facing first step (the order confirmation), beside the engine's own: its
    workers run nothing else, so a confirmation never queues behind the work of the orders placed before it."""
    return f"{task_queue}-customer"


_CLI_TYPE_NAMES = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "TEXT": "Text", "INT": "Int", "BOOL": "Bool"}


def dev_server_search_attribute_args() -> list[str]:
    """`--search-attribute Name=Type` arguments for `temporal server start-dev`."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}={_CLI_TYPE_NAMES[key.indexed_value_type.name]}"]
    return args


async def connect(
    settings: Settings,
    *,
    data_converter: DataConverter,
    lazy: bool = False,
    interceptors: Sequence[temporalio.client.Interceptor] = (),
    runtime: Runtime | None = None,
) -> Client:
    """A client of the engine's namespace. Hand it the one data converter (common.privacy.data_converter, or use
    common.privacy.connect). `lazy`: connect at the first call (a process that must start, and say it is not
    ready, while Temporal is away). `interceptors`: the client's, which its workers use too (tracing).
    `runtime`: one with a metrics endpoint (common.metrics.worker_runtime)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter,
        lazy=lazy,
        interceptors=interceptors,
        runtime=runtime,
        **temporal_connect_options(settings),
    )


async def register_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Add the engine's search attributes the server lacks (a fresh cluster, the time-skipping server, or a
    dev-server file from an older version: `--search-attribute` only registers on a new file). Returns the
    names added."""
    try:
        request = ListSearchAttributesRequest(namespace=namespace)
        existing = await client.operator_service.list_search_attributes(request)
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping server cannot list them
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


def task_pollers(settings: Settings) -> PollerBehavior:
    """The worker's workflow and activity task pollers, from FULFILL_WORKER_TASK_POLLERS."""
    pollers = settings.worker_task_pollers
    if pollers == "autoscale":
        return PollerBehaviorAutoscaling()
    return PollerBehaviorSimpleMaximum(maximum=pollers)


# An Update that lands in a workflow task the server must fail for a reason of its own (UnhandledCommand: an
# event came in while the worker completed a task that also completes the workflow) is aborted unapplied, with
# FAILED_PRECONDITION and this text. Sent again under the same Update id, it is applied once.
_UPDATE_ABORTED = "unexpected workflow task failure"
UPDATE_ATTEMPTS = 10


async def execute_update(
    handle: WorkflowHandle[Any, Any],
    update: Any,
    args: list[Any],
    *,
    id: str | None = None,
    within: float | None = None,
) -> Any:
    """`handle.execute_update`, sent again when the server aborted it in a race with other events; any other
    error, and the last abort, are raised. `update` is a typed reference (`OrderWorkflow.cancel`) or a name.

    With `within` (seconds): once the workflow accepted the Update (its validator passed), wait that long for
    its result, then raise UpdateStillRunning; the workflow carries it out all the same."""
    update_id = id or str(uuid.uuid4())
    for attempt in range(UPDATE_ATTEMPTS):
        try:
            if within is None:
                return await handle.execute_update(update, args=args, id=update_id)
            accepted = await handle.start_update(
                update, args=args, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED
            )
            try:  # the poll of the result gives up after `within`; the Update goes on
                return await accepted.result(rpc_timeout=timedelta(seconds=within))
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                raise UpdateStillRunning(update_id) from None
        except RPCError as err:
            aborted = err.status == RPCStatusCode.FAILED_PRECONDITION and _UPDATE_ABORTED in err.message
            if not aborted or attempt == UPDATE_ATTEMPTS - 1:
                raise
        await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


class UpdateStillRunning(Exception):
    """The workflow accepted the Update and is still carrying it out (e.g. a cancel waiting for the carrier)."""

    def __init__(self, update_id: str) -> None:
        super().__init__(f"update {update_id} accepted and still under way")
        self.update_id = update_id
