"""What a workflow's history says about its cost: events by type, workflow tasks, activities, and where its
wall-clock time went (queues, worker, waiting), read from the server with `fetch_history()`."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

_CLOSING_ACTIVITY_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


def event_name(event: HistoryEvent) -> str:
    return EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


@dataclass
class HistoryStats:
    workflow_id: str
    events: int
    by_type: Counter[str]
    workflow_tasks: int
    activities: Counter[str]  # scheduled, by activity type
    attempts: Counter[str]  # attempts of the last try, by activity type (retries are not history events)
    duration_s: float  # first event to last
    sequence: list[str]  # event types in order, activity events with their activity type
    # Seconds, summed over the history. Queue = scheduled -> started (for a retried activity this includes
    # its retry intervals: the server writes one Started event, for the last attempt).
    wft_queue_s: float = 0.0
    wft_run_s: float = 0.0
    activity_queue_s: dict[str, float] = field(default_factory=dict)
    activity_run_s: dict[str, float] = field(default_factory=dict)
    # The first steps (the confirmation e-mail is the first activity): first workflow task's queue and run,
    # and the first activity from scheduled to closed.
    first_wft_queue_s: float | None = None
    first_wft_run_s: float | None = None
    first_activity_s: float | None = None

    @property
    def waiting_s(self) -> float:
        """Time in neither a workflow task nor an activity: waiting for a signal or a timer."""
        busy = self.wft_queue_s + self.wft_run_s
        busy += sum(self.activity_queue_s.values()) + sum(self.activity_run_s.values())
        return max(0.0, self.duration_s - busy)


def analyse(workflow_id: str, events: Sequence[HistoryEvent]) -> HistoryStats:
    stats = HistoryStats(
        workflow_id=workflow_id,
        events=len(events),
        by_type=Counter(event_name(e) for e in events),
        workflow_tasks=0,
        activities=Counter(),
        attempts=Counter(),
        duration_s=_seconds(events[-1]) - _seconds(events[0]) if events else 0.0,
        sequence=[],
    )
    reader = _Reader(stats, {e.event_id: e for e in events})
    for e in events:
        stats.sequence.append(event_name(e))
        reader.read(e)
    return stats


class _Reader:
    """Adds each event's share to `stats`: the queue and run times of workflow tasks and activities."""

    def __init__(self, stats: HistoryStats, by_id: dict[int, HistoryEvent]) -> None:
        self.stats, self.by_id = stats, by_id
        self.activity_type: dict[int, str] = {}  # scheduled event id -> activity type

    def since(self, e: HistoryEvent, earlier_id: int) -> float | None:
        earlier = self.by_id.get(earlier_id)
        return None if earlier is None else _seconds(e) - _seconds(earlier)

    def read(self, e: HistoryEvent) -> None:
        et, stats = e.event_type, self.stats
        if et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            queued = self.since(e, e.workflow_task_started_event_attributes.scheduled_event_id)
            if queued is not None:
                stats.wft_queue_s += queued
                stats.first_wft_queue_s = queued if stats.first_wft_queue_s is None else stats.first_wft_queue_s
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            stats.workflow_tasks += 1
            ran = self.since(e, e.workflow_task_completed_event_attributes.started_event_id)
            if ran is not None:
                stats.wft_run_s += ran
                stats.first_wft_run_s = ran if stats.first_wft_run_s is None else stats.first_wft_run_s
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            self.activity_type[e.event_id] = name
            stats.activities[name] += 1
            stats.sequence[-1] += f" {name}"
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            self.activity_started(e)
        elif et in _CLOSING_ACTIVITY_EVENTS:
            self.activity_closed(e)

    def activity_started(self, e: HistoryEvent) -> None:
        attrs = e.activity_task_started_event_attributes
        name = self.activity_type.get(attrs.scheduled_event_id, "?")
        self.stats.attempts[name] += attrs.attempt
        queued = self.since(e, attrs.scheduled_event_id)
        if queued is not None:
            _add(self.stats.activity_queue_s, name, queued)

    def activity_closed(self, e: HistoryEvent) -> None:
        attrs = getattr(e, _CLOSING_ACTIVITY_EVENTS[e.event_type])
        name = self.activity_type.get(attrs.scheduled_event_id, "?")
        ran = self.since(e, attrs.started_event_id)
        if ran is not None:
            _add(self.stats.activity_run_s, name, ran)
        whole = self.since(e, attrs.scheduled_event_id)
        if self.stats.first_activity_s is None and whole is not None:
            self.stats.first_activity_s = whole


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


async def fetch_stats(client: Client, workflow_ids: Sequence[str], concurrency: int = 8) -> list[HistoryStats]:
    """Histories of `workflow_ids` from the server (a few at a time: this is not what is measured)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> HistoryStats:
        async with limit:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        return analyse(workflow_id, history.events)

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


def spread_sample(items: Sequence[str], size: int) -> list[str]:
    """Up to `size` items evenly spread over `items` (first, last and between)."""
    if len(items) <= size:
        return list(items)
    step = (len(items) - 1) / (size - 1)
    return [items[round(i * step)] for i in range(size)]


def summarise(stats: Sequence[HistoryStats]) -> dict[str, Any]:
    """Min/median/max of the counts, mean seconds per workflow of each kind of time, and one typical
    history (the one with the median event count) event type by event type."""
    if not stats:
        return {}
    events = [s.events for s in stats]
    by_size = sorted(stats, key=lambda s: s.events)
    typical, smallest = by_size[len(by_size) // 2], by_size[0]
    activity_names = sorted({n for s in stats for n in (*s.activity_queue_s, *s.activity_run_s)})
    n = len(stats)

    def mean_of(values: Sequence[float]) -> float:
        return sum(values) / n

    def p50_p95(values: Sequence[float | None]) -> dict[str, float]:
        present = sorted(v for v in values if v is not None)
        if not present:
            return {}
        return {"p50": present[(len(present) - 1) // 2], "p95": present[math.ceil(0.95 * len(present)) - 1]}

    return {
        "sampled": n,
        "events": {"min": min(events), "median": statistics.median(events), "max": max(events)},
        "events_histogram": dict(sorted(Counter(events).items())),
        "workflow_tasks_median": statistics.median(s.workflow_tasks for s in stats),
        "activities_median": statistics.median(sum(s.activities.values()) for s in stats),
        "mean_seconds_per_workflow": {
            "total": mean_of([s.duration_s for s in stats]),
            "workflow_task_queue": mean_of([s.wft_queue_s for s in stats]),
            "workflow_task_run": mean_of([s.wft_run_s for s in stats]),
            "activity_queue": {a: mean_of([s.activity_queue_s.get(a, 0.0) for s in stats]) for a in activity_names},
            "activity_run": {a: mean_of([s.activity_run_s.get(a, 0.0) for s in stats]) for a in activity_names},
            "waiting_for_signal_or_timer": mean_of([s.waiting_s for s in stats]),
        },
        "first_steps_s": {
            "first_workflow_task_queue": p50_p95([s.first_wft_queue_s for s in stats]),
            "first_workflow_task_run": p50_p95([s.first_wft_run_s for s in stats]),
            "first_activity_scheduled_to_closed": p50_p95([s.first_activity_s for s in stats]),
        },
        "typical": {
            "workflow_id": typical.workflow_id,
            "events": typical.events,
            "workflow_tasks": typical.workflow_tasks,
            "by_type": dict(typical.by_type.most_common()),
            "activities": dict(typical.activities.most_common()),
            "activity_attempts": dict(typical.attempts.most_common()),
            "sequence": typical.sequence,
        },
        "smallest": {"workflow_id": smallest.workflow_id, "by_type": dict(smallest.by_type.most_common())},
    }
