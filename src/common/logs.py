"""One logging set-up for every process of the engine."""

from __future__ import annotations

import logging

# Libraries that log every request at INFO: useful when debugging them, noise in the stack's output.
_QUIET = ("twilio.http_client", "twilio.async_http_client", "alembic", "aiosmtpd", "mail.log", "aiohttp.access")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
