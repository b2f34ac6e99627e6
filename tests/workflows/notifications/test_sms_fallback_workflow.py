"""The email fallback workflow on the time-skipping server: an email outage is waited out (the activity retried
until the relay answers, within the day), the outcome is the workflow's result and query, and its id is never
started twice."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from common.notifications.contracts import SmsFallbackRequest, SmsFallbackResult
from workflows.sms_fallback import SmsFallbackWorkflow

REQUEST = SmsFallbackRequest(sms_key="notify:ORD-1:out_for_delivery:sms", order_id="ORD-1")


class FlakyRelay:
    """send_sms_fallback whose email relay is down for the first `down` attempts."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.attempts = 0

    @activity.defn(name="send_sms_fallback")
    async def send(self, request: SmsFallbackRequest) -> SmsFallbackResult:
        self.attempts += 1
        if self.attempts <= self.down:
            raise ApplicationError("email to order ORD-1 failed: 421 try later", type="EmailUnavailable")
        return SmsFallbackResult(outcome="sent", email_key=request.sms_key + ":email-fallback")


async def run(env: WorkflowEnvironment, relay: FlakyRelay, workflow_id: str) -> SmsFallbackResult:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=queue, workflows=[SmsFallbackWorkflow], activities=[relay.send]):
        handle = await env.client.start_workflow(
            SmsFallbackWorkflow.run,
            REQUEST,
            id=workflow_id,
            task_queue=queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        result = await handle.result()
        assert await handle.query(SmsFallbackWorkflow.status) == "sent"
        with pytest.raises(WorkflowAlreadyStartedError):
            await env.client.start_workflow(
                SmsFallbackWorkflow.run,
                REQUEST,
                id=workflow_id,
                task_queue=queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        return result


async def test_an_email_outage_is_waited_out(env: WorkflowEnvironment) -> None:
    relay = FlakyRelay(down=5)
    result = await run(env, relay, f"sms-fallback:{REQUEST.sms_key}")
    assert (result.outcome, relay.attempts) == ("sent", 6)


async def test_a_day_later_it_gives_up_visibly(env: WorkflowEnvironment) -> None:
    relay = FlakyRelay(down=10_000)
    queue = f"q-{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=queue, workflows=[SmsFallbackWorkflow], activities=[relay.send]):
        handle = await env.client.start_workflow(
            SmsFallbackWorkflow.run, REQUEST, id="sms-fallback:x", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    # every 5 minutes at most for a day: a few hundred attempts, not a tight loop
    assert 100 < relay.attempts < timedelta(days=1) // timedelta(minutes=5) + 20
