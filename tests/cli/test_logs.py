"""Finding 11: a retried activity failure is one log line (the activity, its attempt, the error's type and
message), not a traceback; the traceback is there at DEBUG. Contact details never reach the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from common.logs import ACTIVITY_LOGGER, EngineLogFilter

DETAILS = {
    "activity_id": "7",
    "activity_type": "buy_label",
    "attempt": 3,
    "workflow_id": "order-ORD-1001",
    "workflow_type": "OrderWorkflow",
}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(EngineLogFilter())
    logger = logging.getLogger(ACTIVITY_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def _fail_an_attempt() -> None:
    try:
        raise ConnectionError("carrier unreachable: 503 from https://carrier.test/labels\nmore detail")
    except ConnectionError:
        # What temporalio's activity worker does for a failed attempt
        logging.getLogger(ACTIVITY_LOGGER).warning(
            "Completing activity as failed (%s)", DETAILS, exc_info=True, extra={"temporal_activity": DETAILS}
        )


def test_a_failed_attempt_is_one_line(log_output: io.StringIO) -> None:
    logging.getLogger(ACTIVITY_LOGGER).setLevel(logging.INFO)
    _fail_an_attempt()
    lines = log_output.getvalue().splitlines()
    assert lines == [
        "temporalio.activity WARNING activity buy_label attempt 3 of order-ORD-1001 failed: "
        "ConnectionError: carrier unreachable: 503 from https://carrier.test/labels"
    ]


def test_the_traceback_is_kept_at_debug(log_output: io.StringIO) -> None:
    logging.getLogger(ACTIVITY_LOGGER).setLevel(logging.DEBUG)
    _fail_an_attempt()
    assert "Traceback (most recent call last)" in log_output.getvalue()


def test_contact_details_are_masked(log_output: io.StringIO) -> None:
    logging.getLogger(ACTIVITY_LOGGER).setLevel(logging.INFO)
    logging.getLogger(ACTIVITY_LOGGER).warning("email to ada.lovelace@example.com and SMS to +44 7700 900123 failed")
    assert log_output.getvalue().strip().endswith("email to <email> and SMS to <phone> failed")


def test_contact_details_are_masked_in_tracebacks_too(log_output: io.StringIO) -> None:
    try:
        raise RuntimeError("550 mailbox ada.lovelace@example.com unavailable")
    except RuntimeError:
        logging.getLogger(f"{ACTIVITY_LOGGER}.smtp").exception("sending failed")  # keeps its traceback
    assert "Traceback" in log_output.getvalue()
    assert "ada.lovelace@example.com" not in log_output.getvalue() and "<email>" in log_output.getvalue()
