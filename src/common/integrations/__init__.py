"""Adapters to the outside world (SMTP relay, Twilio, carrier API) that the activities call.

Each adapter raises its own errors; `retryable` tells the activity whether another attempt can help.
"""

from __future__ import annotations


class NotificationError(Exception):
    """A customer message could not be sent."""

    retryable = False


__all__ = ["NotificationError"]
