"""The email that stands in for a customer SMS the network did not deliver: one workflow per SMS, id
`sms-fallback:<the SMS's key>`, started by the HTTP API when Twilio's status callback says undelivered or failed
(or by the worker's relay, if the API could not reach Temporal then). The id is never reused
(REJECT_DUPLICATE), so a callback that comes twice starts nothing new; the activity sends through the delivery
log's claim, so the email goes once even if the workflow were started again after its id was forgotten.

Deterministic code only: the activity decides (not needed when the notice's email went out) and sends.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from common.notifications.contracts import SmsFallbackRequest, SmsFallbackResult

SMS_FALLBACK_WORKFLOW_TYPE = "SmsFallbackWorkflow"

# An email outage is waited out (every 5 s at first, then at most every 5 minutes), for a day at most: a
# fallback that late tells the customer nothing the order's next messages do not.
FALLBACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5)
)
FALLBACK_ATTEMPT = timedelta(seconds=45)
FALLBACK_GIVE_UP = timedelta(days=1)


@workflow.defn(name=SMS_FALLBACK_WORKFLOW_TYPE)
class SmsFallbackWorkflow:
    def __init__(self) -> None:
        self._state = "sending the email fallback"

    @workflow.run
    async def run(self, request: SmsFallbackRequest) -> SmsFallbackResult:
        workflow.set_current_details(f"SMS `{request.sms_key}` was not delivered: {self._state}")
        result: SmsFallbackResult = await workflow.execute_activity_method(
            NotificationActivities.send_sms_fallback,
            request,
            start_to_close_timeout=FALLBACK_ATTEMPT,
            schedule_to_close_timeout=FALLBACK_GIVE_UP,
            retry_policy=FALLBACK_RETRY,
            summary=f"email fallback of {request.sms_key}",
        )
        self._state = result.outcome
        workflow.set_current_details(f"SMS `{request.sms_key}` was not delivered; email fallback: {result.outcome}")
        return result

    @workflow.query(description="Where the email fallback stands: sending, or its outcome (sent, not-needed...).")
    def status(self) -> str:
        return self._state
