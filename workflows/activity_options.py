"""Timeouts and retry policies every workflow here uses for its activities: one place, one set of habits.

Short steps run as local activities: a marker in history instead of three events and a workflow-task round
trip each, and no task-queue wait before a customer's message goes out. Their side effects are idempotent by
business key, so re-running one after a crash is safe. Every retry is bounded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy


class ActivityOptions(TypedDict, total=False):
    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy


# DB steps: fail fast, retry a bounded number of times, then the workflow goes to a state ops see (FAILED).
DB_STEP = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=20
    ),
)
# Customer and ops messages: the provider may be down for a while; keep trying for an hour.
MESSAGE_SEND = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=45),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)),
)
# Carrier calls (label purchase as a local activity, tracking polls and voids as regular ones): transient
# failures retry with backoff for up to an hour; an address the carrier rejects, or another refusal, is final.
EXTERNAL_CALL = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=["CarrierAddressError", "CarrierRejected"],
    ),
)
