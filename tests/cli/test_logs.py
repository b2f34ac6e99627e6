"""Finding 11: a retried activity failure is one log line (the activity, its attempt, the error's type and
message), not a traceback; the traceback is there at DEBUG. Contact details never reach the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from common.logs import ACTIVITY_LOGGER, EngineLogFilter, customer_data, redact
from common.models import Address, Customer

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


def test_redact_masks_the_known_values_of_the_order_whatever_their_case() -> None:
    text = "550 <Bob.Smith@Example.org>: no such user; To +15555550123, or 15555550123, at 1 ELM Road, Leeds LS1 4AP"
    known = customer_data(
        Customer(id="C-1", name="Bob Smith", email="bob.smith@example.org", phone="+15555550123"),
        Address(name="Bob Smith", line1="1 Elm Road", city="Leeds", postal_code="LS1 4AP", country="GB"),
    )
    assert redact(text, *known) == "550 <***>: no such user; To ***, or ***, at ***, *** ***"
    # Without known values only what looks like an e-mail address or an E.164 number goes
    assert redact(text) == "550 <<email>>: no such user; To <phone>, or 15555550123, at 1 ELM Road, Leeds LS1 4AP"
    assert redact("carrier GB: refused", "GB", "", None) == "carrier GB: refused"  # too short to mask safely


def test_customers_and_addresses_show_no_personal_data_in_a_log_line() -> None:
    customer = Customer(id="C-1", name="Bob Smith", email="bob@example.org", phone="+15555550123")
    address = Address(name="Bob Smith", line1="1 Elm Road", city="Leeds", postal_code="LS1 4AP", country="GB")
    shown = f"{customer} {customer!r} {address} {address!r}"
    for value in ("Bob", "bob@", "5550123", "Elm", "Leeds", "LS1"):
        assert value not in shown
    assert "C-1" in shown and "GB" in shown
    # The JSON (payloads, recorded histories) has every field as before
    assert customer.model_dump()["name"] == "Bob Smith" and address.model_dump()["line1"] == "1 Elm Road"
