"""One logging set-up for every process of the engine.

Temporal's worker logs every failed activity attempt at WARNING with its whole traceback: one carrier fault,
retried, fills the screen. Those records are cut to one line (the activity, its attempt, the error's type and
first line); the traceback is kept at DEBUG. Whatever a log line carries, e-mail addresses and phone numbers
are masked: customers' contact details stay out of the logs. Names and addresses cannot be recognised by a
pattern: the code that has them scrubs them out of provider texts with `redact(text, *known)` before they
become an error message or a log line.
"""

from __future__ import annotations

import logging
import re

from temporalio.service import RPCError

# Libraries that log every request at INFO: useful when debugging them, noise in the stack's output.
_QUIET = ("twilio.http_client", "twilio.async_http_client", "alembic", "aiosmtpd", "mail.log", "aiohttp.access")
ACTIVITY_LOGGER = "temporalio.activity"
_MAX_ERROR = 200

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+\d[\d ()-]{6,}\d")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, EngineLogFilter) for f in handler.filters):
            handler.addFilter(EngineLogFilter())


class EngineLogFilter(logging.Filter):
    """On the output handlers: failed activity attempts in one line, contact details masked (in the message,
    the traceback and the stack)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACTIVITY_LOGGER and record.exc_info and record.levelno >= logging.WARNING:
            _one_line(record)
        message = mask_contacts(record.getMessage())
        if message != record.getMessage():
            record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            # Formatted here, masked, so the handler's formatter prints this text instead of the raw one.
            record.exc_text = mask_contacts(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_contacts(record.stack_info)
        return True


def _one_line(record: logging.LogRecord) -> None:
    error = record.exc_info[1] if record.exc_info else None
    info = getattr(record, "temporal_activity", None) or {}
    where = f"activity {info.get('activity_type', '?')} attempt {info.get('attempt', '?')}"
    if info.get("workflow_id"):
        where += f" of {info['workflow_id']}"
    record.msg, record.args = f"{where} failed: {describe_error(error)}", None
    if not logging.getLogger(ACTIVITY_LOGGER).isEnabledFor(logging.DEBUG):
        record.exc_info, record.exc_text = None, None


def describe_error(error: BaseException | None, limit: int = _MAX_ERROR) -> str:
    """The error's type (a Temporal RPC error's status too) and the first line of its message, cut to
    `limit` characters."""
    if error is None:
        return "unknown error"
    kind = f"RPCError {error.status.name}" if isinstance(error, RPCError) else type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{kind}: {text}" if text else kind


# Shorter known values are left alone: a two-letter region or "1" would mask half a message
_MIN_KNOWN = 3


def redact(text: str, *known: str | None) -> str:
    """`text` fit for a log line or an error message: e-mail addresses and phone numbers masked, and each of the
    `known` values (the customer's name, street, city, postal code... as the caller has them) replaced by "***",
    whatever its case. For provider answers that echo what they were sent: the order's own data is what they
    quote, and a pattern cannot recognise a name or a street. A known phone number is masked with or without its
    "+" (providers write it both ways)."""
    values = set()
    for value in known:
        value = (value or "").strip()
        if len(value) >= _MIN_KNOWN:
            values.add(value)
            if value.startswith("+") and value[1:].isdigit():
                values.add(value[1:])
    for value in sorted(values, key=len, reverse=True):  # the longest first: a street before its city
        text = re.sub(re.escape(value), "***", text, flags=re.IGNORECASE)
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


def mask_contacts(text: str) -> str:
    """`redact` without known values: what the log filter does to every line."""
    return redact(text)


def customer_data(*parts: object) -> list[str]:
    """The values `redact` must not let through for these parts of an order: a Customer's name, email and phone,
    an Address's name, lines, city and postal code (anything with such attributes)."""
    values = []
    for part in parts:
        for field in ("name", "email", "phone", "line1", "line2", "city", "postal_code"):
            value = getattr(part, field, None)
            if isinstance(value, str):
                values.append(value)
    return values
