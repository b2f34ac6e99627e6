"""Adapters to the outside world (SMTP relay, Twilio, carrier API) that the activities call.

Each adapter raises its own errors; `retryable` tells the activity whether another attempt can help.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider (carrier, 3PL) refused or failed a request; `retryable` says whether another attempt can help,
    `status` and `code` are the provider's HTTP status and error code when it gave them."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class NotificationError(Exception):
    """A customer message could not be sent."""

    retryable = False


__all__ = ["NotificationError", "ProviderError"]
